"""Dynamic sparse training under N:M and block patterns (lth.sparsity.dynamic_patterns): exact group and
block counts after every update, drop = the smallest-|w| actives, RigL regrowing each group by the
largest |g|, SET's key-dependent choice, grown weights and their moments zero, the static N:M mask
fixed in the trainer, the configuration's refusals and one short MNIST-1D run ending at an exact 2:4."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from conftest import assert_refused_before_writing, make_tiny_dataset, small_config
from lth.config.schema import DynamicConfig, ModelConfig, OptimizerConfig, PruningConfig, TrainConfig
from lth.models import build_model
from lth.sparsity import dynamic, masks as M
from lth.sparsity.dynamic_patterns import PatternDynamicSparse
from lth.train.optim import make_optimizer, make_schedule
from lth.train.trainer import Trainer, replicate_keys

SHAPES = {"a/kernel": (8, 12), "b/kernel": (12, 6)}


def tree(seed=0):
    rng = np.random.default_rng(seed)
    out = {k.split("/")[0]: {"kernel": jnp.asarray(rng.normal(size=s), jnp.float32)} for k, s in SHAPES.items()}
    out["b"]["bias"] = jnp.asarray(rng.normal(size=6), jnp.float32)
    return out


def make(method="rigl", granularity="n:m", density=0.5, **kw):
    return PatternDynamicSparse.build(SHAPES, density, **{"granularity": granularity, "n_m": (2, 4), "block": (2, 3),
                                                         "method": method, "begin": 0, "end": 100, "every": 10, **kw})


def groups(x, m=4):
    """(..., in, out) -> (out, in/m, m): the N:M groups along the input axis."""
    x = np.moveaxis(np.asarray(x), -2, -1)
    return x.reshape(*x.shape[:-1], x.shape[-1] // m, m)


def blocks(x, r=2, c=3):
    """(R, C) -> (R/r, C/c, r·c): one row per block."""
    x = np.asarray(x)
    return x.reshape(x.shape[0] // r, r, x.shape[1] // c, c).swapaxes(1, 2).reshape(x.shape[0] // r, x.shape[1] // c, r * c)


def first_update(d, seed=3):
    params = tree()
    old = d.initial_mask(jax.tree.map(lambda p: jnp.ones(p.shape, bool), params), jax.random.PRNGKey(seed))
    g = tree(7)
    new = jax.jit(d.update_mask)(params, old, g, jax.random.PRNGKey(0), jnp.int32(20))
    return params, old, g, new


def kept_after_drop(w, old, k, d):
    """The d active weights (or units) of smallest |w| dropped, of equal ones the earlier (numpy, stable sort)."""
    w, old = np.abs(np.asarray(w)).ravel(), np.asarray(old, bool).ravel()
    act = np.flatnonzero(old)
    kept = np.zeros_like(old)
    kept[act[np.argsort(w[act], kind="stable")][len(act) - (k - d):]] = True
    return kept


# -- N:M ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["rigl", "set"])
def test_every_group_keeps_exactly_n_after_each_update(method):
    d = make(method)
    params = tree()
    mask = d.initial_mask(jax.tree.map(lambda p: jnp.ones(p.shape, bool), params), jax.random.PRNGKey(1))
    start, update = mask, jax.jit(d.update_mask)
    for i, t in enumerate(d.update_steps()):
        for p in SHAPES:
            assert (groups(M.flatten(mask)[p]).sum(-1) == 2).all(), (t, p)
        mask = update(params, mask, tree(100 + i), jax.random.PRNGKey(i), jnp.int32(t))
        params = tree(200 + i)
        assert np.asarray(mask["b"]["bias"]).all()  # biases stay dense
    assert all((groups(M.flatten(mask)[p]).sum(-1) == 2).all() for p in SHAPES)
    assert dict(d.counts) == {p: np.prod(s) // 2 for p, s in SHAPES.items()}
    assert 0.2 < d.turnover(start, mask) <= 1


def test_n_m_rigl_drops_the_smallest_actives_and_regrows_each_group_by_the_largest_gradients():
    d = make("rigl")
    params, old, g, new = first_update(d)
    fw, fo, fg, fn = (M.flatten(x) for x in (params, old, g, new))
    for i, (p, k) in enumerate(d.counts):
        drop = d.drop_counts(20)[i]
        assert drop > 0
        kept = kept_after_drop(fw[p], fo[p], k, drop).reshape(SHAPES[p])
        n = np.asarray(fn[p])
        assert (n | ~kept).all()  # every survivor of the drop stays
        lost = 2 - groups(kept).sum(-1)
        grown = groups(n & ~kept)
        np.testing.assert_array_equal(grown.sum(-1), lost)  # each group regrows what it lost, in place
        assert (lost > 0).sum() >= 2
        # within a group, the grown ones are the largest |g| among its candidates (after the drop)
        cand, score = groups(~kept), groups(np.abs(np.asarray(fg[p])))
        for idx in zip(*np.nonzero(lost)):
            c = np.flatnonzero(cand[idx])
            want = c[np.argsort(-score[idx][c], kind="stable")][:lost[idx]]
            assert sorted(np.flatnonzero(grown[idx]).tolist()) == sorted(want.tolist()), (p, idx)


def test_n_m_set_grows_in_the_same_groups_with_a_key_dependent_choice():
    d = make("set", drop_fraction=0.5)
    params = tree()
    old = d.initial_mask(jax.tree.map(lambda p: jnp.ones(p.shape, bool), params), jax.random.PRNGKey(5))
    update = jax.jit(d.update_mask)
    a, b, a2 = (update(params, old, tree(9), jax.random.PRNGKey(k), jnp.int32(0)) for k in (1, 2, 1))
    fw, fo = M.flatten(params), M.flatten(old)
    differs = False
    for i, (p, k) in enumerate(d.counts):
        kept = kept_after_drop(fw[p], fo[p], k, d.drop_counts(0)[i]).reshape(SHAPES[p])
        na, nb = (np.asarray(M.flatten(x)[p]) for x in (a, b))
        for n in (na, nb):
            assert (n | ~kept).all()
            np.testing.assert_array_equal(groups(n & ~kept).sum(-1), 2 - groups(kept).sum(-1))
        differs |= not np.array_equal(na, nb)
        np.testing.assert_array_equal(na, np.asarray(M.flatten(a2)[p]))
    assert differs  # another key, other weights grown


# -- blocks ------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["rigl", "set"])
def test_block_counts_exact_and_rigl_moves_blocks_by_their_sums(method):
    d = make(method, "block", density=0.4)
    assert dict(d.counts) == {"a/kernel": 6, "b/kernel": 5}  # round_half_up(0.4 · 16), (0.4 · 12)
    params, old, g, new = first_update(d)
    fw, fo, fg, fn = (M.flatten(x) for x in (params, old, g, new))
    for i, (p, k) in enumerate(d.counts):
        for m in (fo[p], fn[p]):
            b = blocks(m)
            assert ((b.sum(-1) == 0) | (b.sum(-1) == 6)).all() and int(b.all(-1).sum()) == k, p  # whole blocks, K_l
        drop = d.drop_counts(20)[i]
        kept = kept_after_drop(blocks(np.abs(np.asarray(fw[p])) * np.asarray(fo[p])).sum(-1), blocks(fo[p]).all(-1), k, drop)
        nb = blocks(fn[p]).all(-1).ravel()
        assert (nb | ~kept).all() and int((nb & ~kept).sum()) == drop
        if method == "rigl":  # the d largest Σ|g| among the blocks left (of equal sums the later)
            gs = blocks(np.abs(np.asarray(fg[p]))).sum(-1).ravel()
            c = np.flatnonzero(~kept)
            assert sorted(np.flatnonzero(nb & ~kept).tolist()) == sorted(c[np.argsort(gs[c], kind="stable")][len(c) - drop:].tolist())


# -- in the trainer: grown weights and moments zero, static fixed, rigl exact --------------------
def pattern_trainer(method, opt=dict(name="adam", lr=1e-2), **kw):
    ds = make_tiny_dataset()
    o = OptimizerConfig(**opt)
    model = build_model(ModelConfig(name="mlp", widths=[32, 16]), ds.num_classes)
    shapes = {"fc1/kernel": (20, 32), "fc2/kernel": (32, 16), "head/kernel": (16, 4)}
    d = PatternDynamicSparse.build(shapes, 0.5, method=method, begin=5, end=40, every=10, **kw)
    tr = Trainer(model, ds, make_optimizer(o), make_schedule(o, total_steps=50, steps_per_epoch=12),
                 batch_size=50, eval_batch_size=64, mask_update=d)
    keys = replicate_keys(0, 2)
    v = tr.init_variables(keys["init"])
    return tr, d, v, tr.create_states(v, dynamic.initial_masks(d, jax.vmap(M.ones_like)(v["params"]), 0, [0, 1])), keys


@pytest.mark.parametrize("granularity", ["n:m", "block"])
def test_grown_weights_and_their_moments_start_at_zero(granularity):
    tr, d, v, s0, _ = pattern_trainer("rigl", dict(name="adam", lr=1e-3), granularity=granularity, block=(4, 4))
    s = jax.tree.map(lambda x: x[0], s0)
    one = jax.tree.map(lambda x: x[0], v["params"])
    s = s.replace(params=one, opt_state=jax.tree.map(jnp.ones_like, s.opt_state))  # what the update zeroes shows
    g = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(1), p.shape), one)
    new, _ = jax.jit(lambda s, g: d.update(s, g, 5, jax.random.PRNGKey(0)))(s, g)
    fo, fn, fp = M.flatten(s.mask), M.flatten(new.mask), M.flatten(new.params)
    both = {p: np.asarray(fn[p]) & np.asarray(fo[p]) for p in fo}
    for p in d.paths:
        grown = np.asarray(fn[p]) & ~np.asarray(fo[p])
        assert grown.sum() > 0 and (np.asarray(fp[p])[grown] == 0).all() and (np.asarray(fp[p])[~np.asarray(fn[p])] == 0).all()
        assert (np.asarray(fp[p])[both[p]] != 0).all()
    found = 0
    for leaf in jax.tree.leaves(new.opt_state, is_leaf=lambda x: isinstance(x, dict) and "fc1" in x):
        if isinstance(leaf, dict) and "fc1" in leaf:  # Adam's mu and nu
            for p, m in M.flatten(leaf).items():
                assert (np.asarray(m)[~both[p]] == 0).all() and (np.asarray(m)[both[p]] == 1).all(), p
            found += 1
    assert found == 2


def test_static_n_m_mask_is_fixed_and_rigl_stays_exact_in_the_compiled_loop():
    tr, d, _, s0, keys = pattern_trainer("static")
    s, _ = tr.run(s0, keys, 0, 30)
    for a, b in zip(jax.tree.leaves(jax.device_get(s0.mask)), jax.tree.leaves(jax.device_get(s.mask))):
        np.testing.assert_array_equal(a, b)
    m0 = [jax.tree.map(lambda x: np.asarray(x)[r], s0.mask) for r in range(2)]
    assert all((groups(M.flatten(m)[p]).sum(-1) == 2).all() for m in m0 for p in d.paths)
    assert not np.array_equal(M.flatten(m0[0])["fc1/kernel"], M.flatten(m0[1])["fc1/kernel"])  # random per replicate
    tr, d, _, s0, keys = pattern_trainer("rigl")
    s, metrics = tr.run(s0, keys, 0, 50)
    assert np.isfinite(metrics["density"][[5, 15, 25, 35]]).all()
    for r in range(2):
        m, start = (M.flatten(jax.tree.map(lambda x: np.asarray(x)[r], t)) for t in (s.mask, s0.mask))
        assert all((groups(m[p]).sum(-1) == 2).all() for p in d.paths)
        assert d.turnover(start, m) > 0.05


# -- configuration and a run -------------------------------------------------------------------
def dyn(**kw):
    return dict(schedule="dynamic", method="rigl", target_density=0.5, scope=None, granularity="n:m", **kw)


@pytest.mark.parametrize("pruning_changes, words", [
    (dyn() | dict(target_density=0.3), ["pruning.target_density=0.3", "n/m = 0.5"]),
    (dyn() | dict(target_density=None), ["pruning.target_density=None", "pruning.target_density=0.5"]),
    (dyn() | dict(distribution="erk"), ["pruning.granularity=n:m", "pruning.distribution=erk", "granularity=weight"]),
    (dyn() | dict(n_m=[2, 3], target_density=2 / 3), ["fc1/kernel", "not divisible by m=3"]),
    (dyn() | dict(granularity="block", block=[3, 4], target_density=0.3), ["pruning.block=[3, 4]", "fc1/kernel"]),
    (dyn() | dict(granularity="block", scope="global", target_density=0.3), ["pruning.scope='global'"]),
    (dyn() | dict(granularity="block", method="magnitude_ste", target_density=0.3), ["pruning.granularity='block'"]),
])
def test_bad_pattern_settings_are_refused_before_anything_is_written(tmp_path, pruning_changes, words):
    assert_refused_before_writing(tmp_path, {"levels": 0}, pruning_changes, words)


@pytest.mark.slow  # ~33 s; the in-loop 2:4 exactness is also tested without training a run
def test_rigl_2_4_on_mnist1d_ends_with_an_exact_2_4_mask(tmp_path):
    from lth.lottery import levels as lottery
    from lth.runs import checkpoints
    from lth.runs.run_dir import RunDir

    cfg = small_config(tmp_path, levels=0, replicates=1, model=ModelConfig(name="mlp", widths=[32, 32]),
                       train=TrainConfig(duration="300it", batch_size=100, eval_every="100it"),
                       pruning=PruningConfig(schedule="dynamic", method="rigl", target_density=0.5, granularity="n:m",
                                             n_m=[2, 4], dynamic=DynamicConfig(every="50it")))
    lines = []
    out = lottery.run(cfg, echo=lines.append)
    df = pd.read_csv(os.path.join(out.run_dir, "results.csv"))
    assert any("rigl (2:4) dynamic sparse training at density 0.5" in line for line in lines), lines
    mask = checkpoints.restore(os.path.join(RunDir(out.run_dir, "").member_dir(0, "ticket"), "mask"), None)
    flat = {p: np.asarray(v)[0] for p, v in M.flatten(mask).items()}
    kernels = [p for p, v in flat.items() if v.ndim == 2 and not v.all()]
    assert "fc1/kernel" in kernels and "fc2/kernel" in kernels
    for p in kernels:
        assert (groups(flat[p]).sum(-1) == 2).all(), p
    assert df.density.tolist() == [0.5] and df.mask_turnover.iloc[0] > 0.05
    assert df.test_accuracy.iloc[0] > 0.2  # chance: 0.1
