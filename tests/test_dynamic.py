"""Dynamic sparse training (lth.sparsity.dynamic, pruning.schedule=dynamic): exact per-tensor counts,
drop by magnitude, RigL's and SET's growth, grown weights and their optimizer moments zero, the
cosine drop fraction, ties, ERK, the static mask, mask_turnover, the update inside the trainer's
compiled loop, the configuration's refusals and one short MNIST-1D run."""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from conftest import assert_refused_before_writing, make_tiny_dataset, small_config
from lth.config.schema import DynamicConfig, ModelConfig, OptimizerConfig, PruningConfig, TrainConfig
from lth.models import build_model
from lth.sparsity import allocation, dynamic, masks as M
from lth.sparsity.dynamic import DynamicSparse
from lth.sparsity.gradual import round_half_up
from lth.train.optim import make_optimizer, make_schedule
from lth.train.trainer import Trainer, replicate_keys

SHAPES = {"a/kernel": (20, 30), "b/kernel": (30, 7)}


def tree(seed=0, shapes=SHAPES):
    """Random params ({"a": {"kernel"}, "b": {"kernel", "bias"}}) with distinct magnitudes."""
    rng = np.random.default_rng(seed)
    out = {k.split("/")[0]: {"kernel": jnp.asarray(rng.normal(size=s), jnp.float32)} for k, s in shapes.items()}
    out["b"]["bias"] = jnp.asarray(rng.normal(size=7), jnp.float32)
    return out


def ones(params):
    return jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)


def make(method="rigl", density=0.2, **kw):
    return DynamicSparse.build(SHAPES, density, **{"method": method, "begin": 0, "end": 100, "every": 10, **kw})


def alive(mask):
    return {p: int(np.asarray(v).sum()) for p, v in M.flatten(mask).items()}


def reference(w, old, g, k, d):
    """The update written with stable sorts (numpy): drop the d smallest |w| of the actives (earlier
    first of equal ones), grow the d largest |g| of the rest (later first of equal ones)."""
    w, old, g = np.abs(np.asarray(w)).ravel(), np.asarray(old).ravel(), np.abs(np.asarray(g)).ravel()
    act = np.flatnonzero(old)
    order = act[np.argsort(w[act], kind="stable")]
    kept = np.zeros_like(old)
    kept[order[len(act) - (k - d):]] = True
    cand = np.flatnonzero(~kept)
    grown = cand[np.argsort(g[cand], kind="stable")][len(cand) - d:]
    new = kept.copy()
    new[grown] = True
    return kept, new


# -- the schedule ------------------------------------------------------------------------------
def test_update_steps_and_cosine_drop_fraction():
    d = make(begin=10, end=95, every=20, drop_fraction=0.4)
    assert d.update_steps() == [10, 30, 50, 70, 90]
    assert np.flatnonzero(np.asarray(jax.jit(jax.vmap(d.is_update))(jnp.arange(120)))).tolist() == [10, 30, 50, 70, 90]
    for t in (0, 10, 47, 90, 95):
        assert d.drop_fraction_at(t) == pytest.approx(0.4 / 2 * (1 + math.cos(math.pi * t / 95)), abs=1e-15)
    assert d.drop_fraction_at(0) == 0.4 and d.drop_fraction_at(95) == pytest.approx(0.0, abs=1e-15)
    k = dict(d.counts)
    for t in d.update_steps():
        want = tuple(round_half_up(d.drop_fraction_at(t) * k[p]) for p in d.paths)
        assert d.drop_counts(t) == want
        assert tuple(np.asarray(jax.jit(d.drop_counts)(jnp.int32(t))).tolist()) == want
    const = make(drop_decay="constant", drop_fraction=0.3)
    assert {const.drop_fraction_at(t) for t in const.update_steps()} == {0.3}
    assert const.drop_counts(90) == tuple(round_half_up(0.3 * k) for _, k in const.counts)
    assert make(method="static").update_steps() == [] and not bool(make(method="static").is_update(0))


def test_counts_follow_the_distribution_erk_exact_to_rounding():
    shapes = {"fc1/kernel": (40, 64), "fc2/kernel": (64, 64), "head/kernel": (64, 10)}
    d = DynamicSparse.build(shapes, 0.1, distribution="erk", method="rigl", begin=0, end=10, every=1)
    dens = allocation.tensor_densities("erk", shapes, 0.1)
    n = {p: int(np.prod(s)) for p, s in shapes.items()}
    assert dict(d.counts) == {p: round_half_up(dens[p] * n[p]) for p in shapes}
    assert abs(sum(dict(d.counts).values()) / sum(n.values()) - 0.1) <= len(shapes) / (2 * sum(n.values()))
    assert dens["head/kernel"] > dens["fc2/kernel"]  # ERK: the small layer denser
    m = d.initial_mask(ones(jax.tree.map(jnp.zeros, M.unflatten(shapes), is_leaf=lambda x: isinstance(x, tuple))),
                       jax.random.PRNGKey(0))
    assert alive(m) == dict(d.counts)


# -- the mask update ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["rigl", "set"])
def test_counts_exact_after_each_update_and_the_mask_moves(method):
    d = make(method)
    params = tree()
    mask = d.initial_mask(ones(params), jax.random.PRNGKey(1))
    assert alive(mask) == {**dict(d.counts), "b/bias": 7}
    update = jax.jit(d.update_mask)
    start = mask
    for i, t in enumerate(d.update_steps()):
        g = tree(100 + i)
        new = update(params, mask, g, jax.random.PRNGKey(i), jnp.int32(t))
        assert alive(new) == {**dict(d.counts), "b/bias": 7}, t
        changed = sum(int((np.asarray(a) & ~np.asarray(b)).sum()) for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(mask)))
        assert 0 < changed <= sum(d.drop_counts(t)), t
        mask, params = new, tree(200 + i)
    assert 0 < d.turnover(start, mask) <= 1


def test_rigl_drops_the_smallest_actives_and_grows_the_largest_gradients():
    d = make("rigl")
    params = tree()
    old = d.initial_mask(ones(params), jax.random.PRNGKey(3))
    g = tree(7)
    new = jax.jit(d.update_mask)(params, old, g, jax.random.PRNGKey(0), jnp.int32(20))
    fw, fo, fg, fn = (M.flatten(x) for x in (params, old, g, new))
    for i, (p, k) in enumerate(d.counts):
        kept, want = reference(fw[p], fo[p], fg[p], k, d.drop_counts(20)[i])
        np.testing.assert_array_equal(np.asarray(fn[p]).ravel(), want)
        assert (np.asarray(fo[p]).ravel() | ~kept).all()  # the kept ones were all active
        assert int(kept.sum()) == k - d.drop_counts(20)[i]
    np.testing.assert_array_equal(fn["b/bias"], fo["b/bias"])


def test_ties_are_broken_by_position_deterministically():
    """All |w| equal: the earliest actives are dropped; all |g| equal: the latest candidates grow."""
    d = DynamicSparse((("w", 6),), method="rigl", begin=0, end=10, every=5, drop_fraction=0.5, drop_decay="constant")
    old = {"w": jnp.asarray([1, 0, 1, 1, 0, 1, 1, 0, 1, 0, 0, 0], bool)}
    w = {"w": jnp.where(old["w"], 2.0, 0.0)}
    g = {"w": jnp.ones(12)}
    new = np.asarray(jax.jit(d.update_mask)(w, old, g, jax.random.PRNGKey(0), jnp.int32(5))["w"])
    # drop 3 of the actives [0, 2, 3, 5, 6, 8]: 0, 2, 3 go; grow 3 among the other 9: 9, 10, 11
    assert np.flatnonzero(new).tolist() == [5, 6, 8, 9, 10, 11]
    again = np.asarray(d.update_mask(w, old, g, jax.random.PRNGKey(0), 5)["w"])  # eager, a Python step
    np.testing.assert_array_equal(new, again)


def test_set_grows_only_among_inactives_with_the_right_count_and_a_key_dependent_choice():
    d = make("set", density=0.3)
    params = tree()
    old = d.initial_mask(ones(params), jax.random.PRNGKey(5))
    g = tree(9)
    update = jax.jit(d.update_mask)
    a, b, a2 = (update(params, old, g, jax.random.PRNGKey(k), jnp.int32(0)) for k in (1, 2, 1))
    fw, fo = M.flatten(params), M.flatten(old)
    for i, (p, k) in enumerate(d.counts):
        kept, _ = reference(fw[p], fo[p], fw[p], k, d.drop_counts(0)[i])
        na, nb = (np.asarray(M.flatten(x)[p]).ravel() for x in (a, b))
        for n in (na, nb):
            assert (n | ~kept).all() and int((n & ~kept).sum()) == d.drop_counts(0)[i]  # kept stay, d grown elsewhere
        assert not np.array_equal(na, nb)  # another key, other weights grown
        np.testing.assert_array_equal(na, np.asarray(M.flatten(a2)[p]).ravel())  # the same key, the same
    # the grown ones do not follow |g| (SET ignores the gradient) nor |w|
    assert not all(np.array_equal(np.asarray(M.flatten(a)[p]).ravel(), reference(fw[p], fo[p], M.flatten(g)[p], k,
                                                                                 d.drop_counts(0)[i])[1])
                   for i, (p, k) in enumerate(d.counts))


@pytest.mark.parametrize("opt", [dict(name="adam", lr=1e-3), dict(name="momentum", lr=0.1, momentum=0.9)],
                         ids=["adam", "momentum"])
def test_grown_weights_and_their_moments_start_at_zero(opt):
    """On the trainer's own state: grown weights exactly 0, every moment of a weight not kept by
    both masks 0 (grown and dropped), the others untouched."""
    ds = make_tiny_dataset(features=20, classes=7)
    tr = Trainer(build_model(ModelConfig(name="mlp", widths=[30]), ds.num_classes), ds,
                 make_optimizer(OptimizerConfig(**opt)), lambda s: 0.1, batch_size=50)
    keys = replicate_keys(0, 1)
    v = tr.init_variables(keys["init"])
    one = jax.tree.map(lambda x: x[0], v["params"])
    d = DynamicSparse.build({"fc1/kernel": (20, 30), "head/kernel": (30, 7)}, 0.3, method="rigl", begin=0, end=50, every=10)
    masks = dynamic.initial_masks(d, jax.vmap(M.ones_like)(v["params"]), 0, [0])
    s = jax.tree.map(lambda x: x[0], tr.create_states(v, masks))
    # weights off the mask nonzero (the dense draw) and moments 1 everywhere: what the update zeroes shows
    s = s.replace(params=one, opt_state=jax.tree.map(jnp.ones_like, s.opt_state))
    g = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(1), p.shape), one)
    new, density = jax.jit(lambda s, g: d.update(s, g, 0, jax.random.PRNGKey(0)))(s, g)
    assert float(density) == pytest.approx(sum(dict(d.counts).values()) / (600 + 210))
    fo, fn, fp = M.flatten(s.mask), M.flatten(new.mask), M.flatten(new.params)
    grown = {p: np.asarray(fn[p]) & ~np.asarray(fo[p]) for p in d.paths}
    both = {p: np.asarray(fn[p]) & np.asarray(fo[p]) for p in fo}
    assert all(grown[p].sum() > 0 for p in d.paths)
    for p in d.paths:
        assert (np.asarray(fp[p])[grown[p]] == 0).all() and (np.asarray(fp[p])[~np.asarray(fn[p])] == 0).all()
        np.testing.assert_array_equal(np.asarray(fp[p])[both[p]], np.asarray(M.flatten(one)[p])[both[p]])
        assert (np.asarray(fp[p])[both[p]] != 0).all()
    found = 0
    for leaf in jax.tree.leaves(new.opt_state, is_leaf=lambda x: isinstance(x, dict) and "fc1" in x):
        if isinstance(leaf, dict) and "fc1" in leaf:  # a params-shaped subtree: momentum, Adam's mu and nu
            for p, m in M.flatten(leaf).items():
                assert (np.asarray(m)[~both[p]] == 0).all() and (np.asarray(m)[both[p]] == 1).all(), p
            found += 1
    assert found == (2 if opt["name"] == "adam" else 1)


def test_turnover_is_the_fraction_of_final_weights_not_kept_at_the_start():
    d = DynamicSparse((("w", 4),), method="set", begin=0, end=10, every=5)
    start = {"w": np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)}
    final = {"w": np.array([1, 0, 1, 0, 0, 1, 1, 0], bool)}
    assert d.turnover(start, final) == 0.5 and d.turnover(start, start) == 0.0


# -- in the trainer ----------------------------------------------------------------------------
def dyn_trainer(method, **kw):
    ds = make_tiny_dataset()
    opt = OptimizerConfig(name="adam", lr=1e-2)
    model = build_model(ModelConfig(name="mlp", widths=[32, 16]), ds.num_classes)
    shapes = {"fc1/kernel": (20, 32), "fc2/kernel": (32, 16), "head/kernel": (16, 4)}
    d = DynamicSparse.build(shapes, 0.25, method=method, begin=5, end=40, every=10)
    tr = Trainer(model, ds, make_optimizer(opt), make_schedule(opt, total_steps=50, steps_per_epoch=12),
                 batch_size=50, eval_batch_size=64, mask_update=d, **kw)
    keys = replicate_keys(0, 2)
    v = tr.init_variables(keys["init"])
    return tr, d, tr.create_states(v, dynamic.initial_masks(d, jax.vmap(M.ones_like)(v["params"]), 0, [0, 1])), keys


@pytest.fixture(scope="module")
def rigl_run():
    tr, d, s0, keys = dyn_trainer("rigl")
    s, metrics = tr.run(s0, keys, 0, 50)
    return tr, d, s0, keys, s, metrics


def test_trainer_moves_the_mask_on_schedule_inside_the_compiled_loop(rigl_run):
    tr, d, s0, keys, s, metrics = rigl_run
    step = jax.make_jaxpr(lambda s, i, k, t: tr._step_impl(s, i, k, tr.x_train, tr.y_train, t))(
        s0, jnp.zeros((2, 50), jnp.int32), keys["aug"], jnp.int32(3))
    assert [e.primitive.name for e in step.eqns].count("cond") == 1  # unbatched predicate: a conditional
    want = np.float32(sum(k for _, k in d.counts)) / np.float32(sum(20 * 32 + 32 * 16 + 16 * 4 for _ in [0]))
    for t in range(50):
        if t in (5, 15, 25, 35):
            assert (metrics["density"][t] == want).all(), t
        else:
            assert np.isnan(metrics["density"][t]).all(), t
    for r in range(2):
        m, m0 = (jax.tree.map(lambda x: np.asarray(x)[r], t) for t in (s.mask, s0.mask))
        assert {p: n for p, n in alive(m).items() if p in d.paths} == dict(d.counts)
        assert d.turnover(m0, m) > 0.05
        fp = M.flatten(jax.tree.map(lambda x: np.asarray(x)[r], s.params))
        assert all((fp[p][~M.flatten(m)[p]] == 0).all() for p in d.paths)


@pytest.mark.parametrize("variant", [{"scan": False}, {"replicates_as": "loop"}], ids=["python-loop", "lax-map"])
def test_trainer_paths_agree(rigl_run, variant):
    _, _, s0, keys, ref, ref_metrics = rigl_run
    tr, *_ = dyn_trainer("rigl", **variant)
    s, metrics = tr.run(s0, keys, 0, 50)
    for a, b in zip(jax.tree.leaves(jax.device_get(ref.mask)), jax.tree.leaves(jax.device_get(s.mask))):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ref_metrics["density"], metrics["density"])


def test_static_and_set_in_the_trainer():
    tr, d, s0, keys = dyn_trainer("static")
    s, metrics = tr.run(s0, keys, 0, 30)
    for a, b in zip(jax.tree.leaves(jax.device_get(s0.mask)), jax.tree.leaves(jax.device_get(s.mask))):
        np.testing.assert_array_equal(a, b)  # static: the starting mask, unchanged
    assert "density" not in metrics  # the plain masked step
    tr, d, s0, keys = dyn_trainer("set")
    s, _ = tr.run(s0, keys, 0, 30)
    m = [jax.tree.map(lambda x: np.asarray(x)[r], s.mask) for r in range(2)]
    assert all({p: n for p, n in alive(x).items() if p in d.paths} == dict(d.counts) for x in m)
    assert d.turnover(jax.tree.map(lambda x: np.asarray(x)[0], s0.mask), m[0]) > 0


# -- configuration -----------------------------------------------------------------------------
@pytest.mark.parametrize("changes, pruning_changes, words", [
    ({"levels": 0}, dict(method="rigl", scope=None), ["pruning.method='rigl'", "pruning.schedule=dynamic"]),
    ({"levels": 0}, dict(method="set", schedule="gradual", target_density=0.1, scope=None), ["pruning.schedule=gradual"]),
    ({"levels": 0}, dict(schedule="dynamic", target_density=0.1, scope=None), ["pruning.method='magnitude'", "rigl, set, static"]),
    ({"levels": 1}, dict(schedule="dynamic", method="rigl", target_density=0.1, scope=None), ["levels=1", "levels=0"]),
    ({"levels": 0}, dict(schedule="dynamic", method="rigl", scope=None), ["pruning.target_density=None", "(0, 1)"]),
    ({"levels": 0}, dict(schedule="dynamic", method="rigl", target_density=1.0, scope=None), ["pruning.target_density=1.0"]),
    ({"levels": 0}, dict(schedule="dynamic", method="set", target_density=0.1, scope="global"), ["pruning.scope='global'"]),
    ({"levels": 0}, dict(schedule="dynamic", method="set", target_density=0.1, scope=None, granularity="neuron"),
     ["pruning.granularity='neuron'"]),
    ({"levels": 0}, dict(schedule="dynamic", method="rigl", target_density=0.1, scope=None, dynamic=DynamicConfig(every="0it")),
     ["pruning.dynamic.every='0it'"]),
    ({"levels": 0}, dict(schedule="dynamic", method="rigl", target_density=0.1, scope=None,
                         dynamic=DynamicConfig(drop_fraction=1.0)), ["pruning.dynamic.drop_fraction=1.0", "(0, 1)"]),
    ({"levels": 0}, dict(schedule="dynamic", method="rigl", target_density=0.1, scope=None,
                         dynamic=DynamicConfig(drop_decay="linear")), ["pruning.dynamic.drop_decay='linear'", "cosine, constant"]),
    ({"levels": 0}, dict(schedule="dynamic", method="rigl", target_density=0.1, scope=None,
                         dynamic=DynamicConfig(begin="60it", end="50it")), ["pruning.dynamic.begin='60it'", "begin < end"]),
    ({"levels": 0}, dict(schedule="dynamic", method="rigl", target_density=0.1, scope=None,
                         dynamic=DynamicConfig(end="200it")), ["pruning.dynamic.end='200it'", "train.duration (100 steps)"]),
])
def test_bad_dynamic_settings_are_refused_before_anything_is_written(tmp_path, changes, pruning_changes, words):
    assert_refused_before_writing(tmp_path, changes, pruning_changes, words)


@pytest.mark.parametrize("method", ["rigl", pytest.param("static", marks=pytest.mark.slow)])
def test_dynamic_end_to_end_on_mnist1d(tmp_path, method):
    """200 steps on MNIST-1D: the exact ERK density, results.csv's mask_turnover that of the final
    mask against the starting one: RigL's moved, static's not (turnover 0; also in the trainer
    test above)."""
    from lth.lottery import levels as lottery
    from lth.runs import checkpoints
    from lth.runs.run_dir import RunDir

    def run(method):
        cfg = small_config(tmp_path, levels=0, replicates=1, model=ModelConfig(name="mlp", widths=[32, 32]),
                           train=TrainConfig(duration="200it", batch_size=100, eval_every="100it"),
                           pruning=PruningConfig(schedule="dynamic", method=method, target_density=0.1, distribution="erk",
                                                 dynamic=DynamicConfig(every="25it")))
        out = lottery.run(cfg, echo=lambda s: None)
        return out, pd.read_csv(os.path.join(out.run_dir, "results.csv"))

    shapes = {"fc1/kernel": (40, 32), "fc2/kernel": (32, 32), "head/kernel": (32, 10)}
    d = DynamicSparse.build(shapes, 0.1, distribution="erk", method="rigl", begin=0, end=150, every=25)
    out, df = run(method)
    assert df.density.tolist() == [sum(k for _, k in d.counts) / sum(np.prod(s) for s in shapes.values())]
    mask = checkpoints.restore(os.path.join(RunDir(out.run_dir, "").member_dir(0, "ticket"), "mask"), None)
    one = jax.tree.map(lambda x: np.asarray(x)[0], mask)
    start = jax.tree.map(lambda x: np.asarray(x)[0], dynamic.initial_masks(d, jax.tree.map(np.ones_like, mask), 0, [0]))
    assert {p: n for p, n in alive(one).items() if p in shapes} == dict(d.counts)
    final = M.flatten(checkpoints.restore(os.path.join(RunDir(out.run_dir, "").member_dir(0, "ticket"), "final"), None)["params"])
    assert all((np.asarray(final[p])[0][~M.flatten(one)[p]] == 0).all() for p in shapes)
    assert df.mask_turnover.iloc[0] == pytest.approx(d.turnover(start, one), abs=1e-12)
    if method == "static":
        assert df.mask_turnover.iloc[0] == 0.0
    else:
        assert df.mask_turnover.iloc[0] > 0.05 and df.test_accuracy.iloc[0] > 0.2
