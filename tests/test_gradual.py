"""Gradual magnitude pruning (lth.sparsity.gradual): the cubic schedule, its update steps, exact counts, the
mask update, and the update inside the trainer's compiled loop (scan and Python-loop paths,
vmapped and looped replicates)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth.sparsity import masks as M
from lth.config.schema import ModelConfig, OptimizerConfig, PruningConfig
from lth.sparsity.gradual import GradualPruning, round_half_up
from lth.models import build_model
from lth.train.optim import make_optimizer, make_schedule
from lth.train.trainer import Trainer, replicate_keys

from conftest import make_tiny_dataset


def cubic(t, begin, end, d_i, d_f):
    """The schedule written out: s_t = s_f + (s_i - s_f)(1 - (t - t0)/(nΔt))^3, in densities."""
    s_i, s_f = 1 - d_i, 1 - d_f
    if t <= begin:
        return d_i
    if t >= end:
        return d_f
    return 1 - (s_f + (s_i - s_f) * (1 - (t - begin) / (end - begin)) ** 3)


def test_cubic_schedule_values():
    g = GradualPruning(((("w",), 0.1),), begin=100, end=500, every=50, initial_density=0.9)
    for t in (0, 99, 100, 101, 250, 300, 499, 500, 501, 10_000):
        want = cubic(t, 100, 500, 0.9, 0.1)
        assert g.density_at(t) == pytest.approx(want, abs=1e-12), t
        assert isinstance(g.density_at(t), float)
        assert float(jax.jit(g.density_at)(jnp.int32(t))) == pytest.approx(want, abs=1e-6), t
    assert g.density_at(100) == 0.9 and g.density_at(500) == pytest.approx(0.1, abs=1e-15)
    assert g.density_at(300) == pytest.approx(0.1 + 0.8 * 0.5**3)  # halfway: 1/8 of the way left
    assert g.density_at(300, final_density=0.5) == pytest.approx(0.5 + 0.4 * 0.5**3)  # another group's
    one_shot = GradualPruning(((("w",), 0.3),), begin=7, end=7, every=5)
    assert [one_shot.density_at(t) for t in (6, 7, 8)] == pytest.approx([1.0, 0.3, 0.3])
    assert one_shot.update_steps() == [7]


def test_update_steps_reach_end_even_off_the_grid():
    g = GradualPruning(((("w",), 0.2),), begin=10, end=45, every=10)
    assert g.update_steps() == [10, 20, 30, 40, 45]
    assert GradualPruning(((("w",), 0.2),), begin=10, end=40, every=10).update_steps() == [10, 20, 30, 40]
    ts = jnp.arange(0, 60, dtype=jnp.int32)
    traced = np.asarray(jax.jit(jax.vmap(g.is_update))(ts))
    assert np.flatnonzero(traced).tolist() == [10, 20, 30, 40, 45]
    assert [bool(g.is_update(t)) for t in (9, 10, 45, 46, 50)] == [False, True, True, False, False]


def test_keep_counts_are_exact_and_piecewise_constant():
    g = GradualPruning(((("a",), 0.2), (("b",), 0.5)), begin=10, end=45, every=10)
    sizes = [266_000, 1_001]
    for u in g.update_steps():
        want = tuple(int(math.floor(cubic(u, 10, 45, 1.0, d) * n + 0.5)) for d, n in zip((0.2, 0.5), sizes))
        assert g.keep_counts(u, sizes) == want
    assert g.keep_counts(0, sizes) == tuple(sizes)  # before begin: d_i
    assert g.keep_counts(25, sizes) == g.keep_counts(20, sizes)  # between updates: the last one's
    assert g.keep_counts(44, sizes) == g.keep_counts(40, sizes)
    assert g.keep_counts(1000, sizes) == (round_half_up(0.2 * 266_000), round_half_up(0.5 * 1_001))  # 501: half up
    traced = np.asarray(jax.jit(jax.vmap(lambda t: g.keep_counts(t, sizes)))(jnp.arange(60, dtype=jnp.int32)))
    assert traced.tolist() == [list(g.keep_counts(t, sizes)) for t in range(60)]


def reference_update(params, mask, groups_and_counts):
    """numpy: per group keep the `k` largest |w| among alive weights, ties kept last-first in
    (path, row-major) order, i.e. remove the smallest with a stable ascending sort."""
    fw, fm = M.flatten(params), M.flatten(mask)
    out = {p: np.asarray(m, bool).copy() for p, m in fm.items()}
    for paths, k in groups_and_counts:
        paths = sorted(paths)
        s = np.concatenate([np.abs(np.asarray(fw[p], np.float64)).ravel() for p in paths])
        alive = np.concatenate([np.asarray(fm[p], bool).ravel() for p in paths])
        idx = np.flatnonzero(alive)
        order = np.argsort(s[idx], kind="stable")
        alive[idx[order[: max(idx.size - k, 0)]]] = False
        start = 0
        for p in paths:
            out[p] = alive[start:start + fm[p].size].reshape(fm[p].shape)
            start += fm[p].size
    return out


def random_tree(seed=0):
    rng = np.random.default_rng(seed)
    params = {"a": {"kernel": rng.normal(size=(12, 10)).astype(np.float32), "bias": rng.normal(size=10).astype(np.float32)},
              "b": {"kernel": rng.normal(size=(10, 6)).astype(np.float32)},
              "c": {"kernel": rng.normal(size=(6, 3)).astype(np.float32)}}
    mask = jax.tree.map(lambda x: rng.random(x.shape) < 0.8, params)
    mask["a"]["bias"] = np.ones(10, bool)
    return params, mask


@pytest.mark.parametrize("scope,ties", [("global", False), ("layerwise", False), ("global", True)])
def test_update_mask_keeps_exact_counts_of_alive_weights(scope, ties):
    params, mask = random_tree()
    if ties:  # magnitudes in steps of 0.5: most weights tie with many others, at every threshold
        params = jax.tree.map(lambda x: np.round(x * 2) / 2, params)
    g = GradualPruning.build(["a/kernel", "b/kernel", "c/kernel"], 0.3, scope=scope, densities={"^c/": 0.6},
                             begin=0, end=20, every=5)
    assert dict(g.groups) == ({("a/kernel", "b/kernel"): 0.3, ("c/kernel",): 0.6} if scope == "global" else
                              {("a/kernel",): 0.3, ("b/kernel",): 0.3, ("c/kernel",): 0.6})
    update = jax.jit(g.update_mask)
    old = jax.tree.map(lambda m: np.ones_like(m), mask)  # the schedule's own masks: alive >= counts
    old["b"]["kernel"][0] = False  # a weight pruned before: never revived
    for t in g.update_steps():
        counts = g.keep_counts(t, g.group_sizes(params))
        new = update(params, old, jnp.int32(t))
        flat_new, flat_old = M.flatten(jax.device_get(new)), M.flatten(old)
        for (paths, _), k in zip(g.groups, counts):
            alive = sum(int(flat_old[p].sum()) for p in paths)
            assert sum(int(flat_new[p].sum()) for p in paths) == min(k, alive), (t, paths)
            assert k <= alive or t == 0, (t, paths)  # only the first update finds fewer alive than d_t N
        assert M.is_subset(new, old)
        assert np.array_equal(flat_new["a/bias"], flat_old["a/bias"])  # in no group: untouched
        want = reference_update(params, old, [(paths, k) for (paths, _), k in zip(g.groups, counts)])
        for p in flat_new:
            assert np.array_equal(flat_new[p], want[p]), (t, p)
        assert jax.tree.structure(new) == jax.tree.structure(old)
        assert all(x.dtype == bool for x in jax.tree.leaves(new))
        old = jax.device_get(new)


def test_update_mask_breaks_ties_by_path_then_row_major_position():
    # Every weight has |w| = 1: the kept ones are the last k in (path, row-major) order.
    params = {"b": {"kernel": -np.ones((2, 3), np.float32)}, "a": {"kernel": np.ones((2, 2), np.float32)}}
    mask = jax.tree.map(lambda x: np.ones(x.shape, bool), params)
    g = GradualPruning(((("b/kernel", "a/kernel"), 0.0),), begin=0, end=10, every=1)
    update = jax.jit(g.update_mask)
    assert [g.keep_counts(t, [10])[0] for t in range(8)] == [10, 7, 5, 3, 2, 1, 1, 0]
    for t in range(8):
        k = g.keep_counts(t, [10])[0]
        new = M.flatten(jax.device_get(update(params, mask, jnp.int32(t))))
        flat = np.concatenate([new["a/kernel"].ravel(), new["b/kernel"].ravel()])  # path order: a, then b
        assert flat.tolist() == [False] * (10 - k) + [True] * k, k
    # A dead weight of the largest magnitude stays dead; a larger weight beats position, a
    # smaller one loses to it; among the equal rest the last in order is kept.
    params["a"]["kernel"][0, 0] = 5.0
    params["b"]["kernel"][1, 2] = 0.5
    mask["a"]["kernel"][1, 1] = False
    params["a"]["kernel"][1, 1] = 9.0
    new = M.flatten(jax.device_get(GradualPruning(((("a/kernel", "b/kernel"), 0.2),), 0, 0, 1).update_mask(params, mask, 0)))
    assert new["a/kernel"].tolist() == [[True, False], [False, False]] and new["b/kernel"].tolist() == [[False] * 3, [False, True, False]]


def test_update_mask_agrees_with_lth_pruning():
    """The in-loop update and the host-side `lth.sparsity.pruning.prune` pick the same weights for the same count."""
    from lth.sparsity.pruning import prune

    params, mask = random_tree(3)
    paths = ["a/kernel", "b/kernel", "c/kernel"]
    alive = sum(int(M.flatten(mask)[p].sum()) for p in paths)
    n = sum(M.flatten(mask)[p].size for p in paths)
    k = alive // 3
    host = M.flatten(prune(params, mask, PruningConfig(fraction=(alive - k) / alive, scope="global"), paths))
    d = k / n
    g = GradualPruning(((tuple(paths), d),), begin=0, end=0, every=1)
    assert g.keep_counts(0, [n]) == (k,)
    dev = M.flatten(jax.device_get(g.update_mask(params, mask, 0)))
    for p in paths:
        assert np.array_equal(np.asarray(host[p], bool), dev[p]), p


def test_final_density_zero_prunes_the_whole_group():
    params, mask = random_tree(2)
    g = GradualPruning(((("a/kernel", "c/kernel"), 0.0),), begin=0, end=4, every=2)
    new = M.flatten(jax.device_get(g.update_mask(params, jax.tree.map(np.ones_like, mask), 4)))
    assert not new["a/kernel"].any() and not new["c/kernel"].any() and new["b/kernel"].all()


def test_fewer_alive_than_the_count_keeps_them_all():
    params, mask = random_tree(1)
    mask["b"]["kernel"][:] = False
    mask["b"]["kernel"][0, :2] = True
    g = GradualPruning(((("b/kernel",), 0.5),), begin=0, end=0, every=1)
    new = M.flatten(jax.device_get(g.update_mask(params, mask, 0)))
    assert np.array_equal(new["b/kernel"], mask["b"]["kernel"])


def test_invalid_schedules_are_refused():
    with pytest.raises(ValueError, match="begin <= end"):
        GradualPruning(((("w",), 0.2),), begin=10, end=5, every=1)
    with pytest.raises(ValueError, match="every"):
        GradualPruning(((("w",), 0.2),), begin=0, end=5, every=0)
    with pytest.raises(ValueError, match="only shrinks"):
        GradualPruning(((("w",), 0.9),), begin=0, end=5, every=1, initial_density=0.5)
    with pytest.raises(ValueError, match="more than one group"):
        GradualPruning(((("w",), 0.2), (("w",), 0.3)), begin=0, end=5, every=1)
    with pytest.raises(KeyError, match="nope"):
        GradualPruning(((("nope",), 0.2),), begin=0, end=5, every=1).update_mask(*random_tree(), 0)


# -- in the trainer ----------------------------------------------------------------------------
PATHS = ["fc1/kernel", "fc2/kernel", "head/kernel"]
SCHEDULE = GradualPruning.build(PATHS, 0.2, densities={"^head/": 0.5}, begin=10, end=45, every=10)


def make_trainer(ds, **kw):
    opt = OptimizerConfig(name="momentum", lr=0.05, momentum=0.9)
    model = build_model(ModelConfig(name="mlp", widths=[32, 16]), ds.num_classes)
    return Trainer(model, ds, make_optimizer(opt), make_schedule(opt, total_steps=60, steps_per_epoch=12),
                   batch_size=50, eval_batch_size=64, mask_update=SCHEDULE, **kw)


def dense_states(tr, replicates=2):
    keys = replicate_keys(0, replicates)
    v = tr.init_variables(keys["init"])
    return tr.create_states(v, jax.vmap(M.ones_like)(v["params"])), keys


def group_alive(mask, r):
    flat = M.flatten(jax.tree.map(lambda x: np.asarray(x)[r], jax.device_get(mask)))
    return tuple(sum(int(flat[p].sum()) for p in paths) for paths, _ in SCHEDULE.groups)


STEPS = 55  # updates at 10, 20, 30, 40 and 45 (end - begin not a multiple of every); crosses epochs


@pytest.fixture(scope="module")
def reference():
    """Steps 0 .. STEPS-1 of two replicates in one scanned call, replicates vmapped (the default
    for dense models): (trainer, initial states, keys, final states, metrics)."""
    tr = make_trainer(make_tiny_dataset())
    assert tr.scan and tr.replicates_as == "vmap"
    s0, keys = dense_states(tr)
    s, metrics = tr.run(s0, keys, 0, STEPS)
    return tr, s0, keys, s, metrics


def test_trainer_prunes_on_schedule_inside_the_compiled_loop(reference):
    tr, s0, keys, one, metrics = reference
    # The update is a conditional on the loop's step, unbatched under vmap (a batched predicate
    # would turn it into a select that recomputes the mask every step).
    step = jax.make_jaxpr(lambda s, i, k, t: tr._step_impl(s, i, k, tr.x_train, tr.y_train, t))(
        s0, jnp.zeros((2, 50), jnp.int32), keys["aug"], jnp.int32(3))
    assert [e.primitive.name for e in step.eqns].count("cond") == 1
    sizes = SCHEDULE.group_sizes(jax.tree.map(lambda x: x[0], s0.params))
    total = sum(sizes)
    assert set(metrics) == {"loss", "accuracy", "lr", "density"} and metrics["density"].shape == (STEPS, 2)
    for t in range(STEPS):  # at each update step, the density of the new mask: exact counts
        if t in SCHEDULE.update_steps():
            want = np.float32(sum(SCHEDULE.keep_counts(t, sizes))) / np.float32(total)
            assert np.all(metrics["density"][t] == want), t
        else:
            assert np.isnan(metrics["density"][t]).all(), t
    assert metrics["density"][10, 0] == 1.0 and metrics["density"][45, 0] < metrics["density"][40, 0]

    # The same run in calls of 5 steps: the counts read off the masks themselves after steps 4,
    # 9, 14 (the update at 10), ..., 44 (the one at 40), 49 (the one at 45: the final density).
    s, prev = s0, s0.mask
    for start in range(0, STEPS, 5):
        s, _ = tr.run(s, keys, start, 5)
        for r in range(2):
            assert group_alive(s.mask, r) == SCHEDULE.keep_counts(start + 4, sizes), (start, r)
        assert M.is_subset(s.mask, prev)
        prev = s.mask
    for r in range(2):
        assert group_alive(s.mask, r) == (round_half_up(0.2 * sizes[0]), round_half_up(0.5 * sizes[1]))
    final = {"params": jax.device_get(one.params), "mask": jax.device_get(one.mask)}
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(jax.device_get(
        {"params": s.params, "mask": s.mask}))))  # chunking changes nothing
    fp, fm = M.flatten(final["params"]), M.flatten(final["mask"])
    for p in PATHS:
        assert (fp[p][~fm[p]] == 0).all() and (fp[p][fm[p]] != 0).all()  # pruned exactly 0, survivors trained
    assert fm["fc1/bias"].all()
    assert not np.array_equal(fm["fc1/kernel"][0], fm["fc1/kernel"][1])  # replicates pruned their own weights


@pytest.mark.parametrize("variant", [{"scan": False}, {"replicates_as": "loop"}], ids=["python-loop", "lax-map"])
def test_trainer_paths_agree_with_gradual_pruning(reference, variant):
    """Scan vs Python loop of compiled steps, vmap vs lax.map over replicates: the same masks and
    densities, weights equal up to float reassociation (as without pruning, tests/test_train.py)."""
    _, s0, keys, ref, ref_metrics = reference
    tr = make_trainer(make_tiny_dataset(), **variant)  # same initial states (their optimizer is the same)
    s, metrics = tr.run(s0, keys, 0, STEPS)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(jax.device_get(ref.mask)), jax.tree.leaves(jax.device_get(s.mask))))
    np.testing.assert_array_equal(ref_metrics["density"], metrics["density"])  # NaNs in the same places
    for a, b in zip(jax.tree.leaves(jax.device_get(ref.params)), jax.tree.leaves(jax.device_get(s.params))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ref_metrics["loss"], metrics["loss"], rtol=1e-4)


def test_mask_update_needs_a_masked_trainer(tiny_dataset):
    with pytest.raises(ValueError, match="masked=True"):
        make_trainer(tiny_dataset, masked=False)
