"""Exact counts, deterministic ties, nested masks and the density ladder of magnitude pruning."""

import jax.numpy as jnp
import numpy as np
import pytest

from lth.sparsity import ablations, masks as M, pruning, structured
from lth.config.schema import PruningConfig
from lth.sparsity.pruning import expected_density, n_to_prune, prune


def params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "fc1": {"kernel": rng.normal(size=(30, 20)).astype(np.float32), "bias": rng.normal(size=20).astype(np.float32)},
        "fc2": {"kernel": rng.normal(size=(20, 10)).astype(np.float32), "bias": rng.normal(size=10).astype(np.float32)},
        "head": {"kernel": rng.normal(size=(10, 5)).astype(np.float32), "bias": rng.normal(size=5).astype(np.float32)},
    }


PATHS = ["fc1/kernel", "fc2/kernel", "head/kernel"]


def alive(mask, path):
    return int(np.asarray(M.flatten(mask)[path]).sum())


def test_prunable_paths_select_kernels_not_biases():
    assert M.prunable_paths(params(), ["kernel$"]) == PATHS
    assert M.prunable_paths(params(), ["kernel$"], exclude=["^head"]) == PATHS[:2]


def test_n_to_prune_rounds_half_up():
    assert n_to_prune(0.2, 10) == 2 and n_to_prune(0.25, 10) == 3 and n_to_prune(0.2, 3) == 1 and n_to_prune(0.5, 1) == 1


def test_global_prunes_exact_count_of_smallest_weights():
    p = params()
    m = M.ones_like(p)
    new = prune(p, m, PruningConfig(fraction=0.2, scope="global"), PATHS)
    total = 600 + 200 + 50
    assert sum(alive(new, q) for q in PATHS) == total - n_to_prune(0.2, total)
    # Every pruned weight is no larger in magnitude than every surviving one.
    flat_w, flat_m = M.flatten(p), M.flatten(new)
    mags = np.concatenate([np.abs(flat_w[q]).ravel() for q in PATHS])
    keep = np.concatenate([np.asarray(flat_m[q]).ravel() for q in PATHS])
    assert mags[~keep].max() <= mags[keep].min()
    # Biases are never touched.
    for q in ("fc1/bias", "fc2/bias", "head/bias"):
        assert np.asarray(flat_m[q]).all()


def test_layerwise_prunes_each_tensor_by_its_own_fraction():
    p, m = params(), M.ones_like(params())
    new = prune(p, m, PruningConfig(fraction=0.2, scope="layerwise", fractions={"head": 0.1}), PATHS)
    assert alive(new, "fc1/kernel") == 600 - 120
    assert alive(new, "fc2/kernel") == 200 - 40
    assert alive(new, "head/kernel") == 50 - 5


def test_per_tensor_fraction_in_global_scope_is_pruned_on_its_own():
    p, m = params(), M.ones_like(params())
    new = prune(p, m, PruningConfig(fraction=0.2, scope="global", fractions={"head": 0.5}), PATHS)
    assert alive(new, "head/kernel") == 25
    assert alive(new, "fc1/kernel") + alive(new, "fc2/kernel") == 800 - 160


def test_ties_are_broken_deterministically_by_position():
    p = {"a": {"kernel": np.ones((4, 5), np.float32)}, "b": {"kernel": np.ones((10,), np.float32)}}
    m = M.ones_like(p)
    new = prune(p, m, PruningConfig(fraction=0.4, scope="global"), ["a/kernel", "b/kernel"])
    flat = M.flatten(new)
    # 12 of 30 equal weights go: the first 12 in path order, row-major.
    assert np.asarray(flat["a/kernel"]).ravel().tolist() == [False] * 12 + [True] * 8
    assert np.asarray(flat["b/kernel"]).all()
    again = prune(p, m, PruningConfig(fraction=0.4, scope="global"), ["a/kernel", "b/kernel"])
    assert all(np.array_equal(x, y) for x, y in zip(M.flatten(new).values(), M.flatten(again).values()))


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_masks_nest_and_follow_the_density_ladder(scope):
    p = params(1)
    m = M.ones_like(p)
    cfg = PruningConfig(fraction=0.2, scope=scope)
    counts = {q: np.size(M.flatten(p)[q]) for q in PATHS}
    for level in range(1, 9):
        # New magnitudes each level (as after training); pruned weights are zero as in training.
        w = M.apply_mask(params(100 + level), m)
        new = prune(w, m, cfg, PATHS)
        assert M.is_subset(new, m)
        if scope == "layerwise":
            counts = {q: c - n_to_prune(0.2, c) for q, c in counts.items()}
            assert {q: alive(new, q) for q in PATHS} == counts
        m = new
        assert M.density(m, PATHS) == pytest.approx(expected_density(level, 0.2), abs=3 / 850 + 1e-9)


def test_already_pruned_weights_are_not_counted_again():
    p = params()
    m = M.ones_like(p)
    cfg = PruningConfig(fraction=0.5, scope="global")
    m1 = prune(p, m, cfg, PATHS)
    # Even with the pruned weights set to huge values, they stay pruned and 50% of the rest goes.
    loud = {k: {kk: np.where(np.asarray(M.flatten(m1)[f"{k}/{kk}"]), vv, 1e9) if kk == "kernel" else vv
                for kk, vv in v.items()} for k, v in p.items()}
    m2 = prune(loud, m1, cfg, PATHS)
    assert M.is_subset(m2, m1)
    assert sum(alive(m2, q) for q in PATHS) == 425 - n_to_prune(0.5, 425)


def test_apply_mask_gives_exact_zeros():
    p = params()
    m = prune(p, M.ones_like(p), PruningConfig(fraction=0.5, scope="global"), PATHS)
    out = M.apply_mask({k: {kk: jnp.asarray(vv) for kk, vv in v.items()} for k, v in p.items()}, m)
    for q in PATHS:
        w, keep = np.asarray(M.flatten(out)[q]), np.asarray(M.flatten(m)[q])
        assert (w[~keep] == 0).all() and not np.signbit(w[~keep]).any()
        assert np.array_equal(w[keep], M.flatten(p)[q][keep])


# -- methods' pruning steps: one-shot, structured units, ablations (lth.sparsity.pruning, lth.sparsity.structured, lth.sparsity.ablations)
def _tree(rng, shapes):
    return M.unflatten({p: rng.normal(size=s).astype(np.float32) for p, s in shapes.items()})


MLP = {"fc0/kernel": (6, 5), "fc0/bias": (5,), "fc1/kernel": (5, 4), "fc1/bias": (4,), "head/kernel": (4, 3), "head/bias": (3,)}
KERNELS = ["fc0/kernel", "fc1/kernel", "head/kernel"]


# -- one-shot ----------------------------------------------------------------------------------
@pytest.mark.parametrize("scope", ["global", "layerwise"])
@pytest.mark.parametrize("target", [0.1, 0.37, 0.5])
def test_oneshot_reaches_the_target_density_in_one_step(scope, target):
    rng = np.random.default_rng(0)
    params = _tree(rng, MLP)
    cfg = PruningConfig(schedule="oneshot", target_density=target, scope=scope)
    mask = pruning.prune(params, M.ones_like(params), cfg, KERNELS)
    flat = M.flatten(mask)
    if scope == "global":
        total = sum(np.prod(MLP[p]) for p in KERNELS)
        assert sum(int(np.asarray(flat[p]).sum()) for p in KERNELS) == total - pruning.n_to_prune(1 - target, total)
    else:
        for p in KERNELS:
            n = int(np.prod(MLP[p]))
            assert int(np.asarray(flat[p]).sum()) == n - pruning.n_to_prune(1 - target, n)
    # the survivors are the largest magnitudes
    w = np.concatenate([np.abs(np.asarray(M.flatten(params)[p])).ravel() for p in KERNELS])
    keep = np.concatenate([np.asarray(flat[p]).ravel() for p in KERNELS])
    if scope == "global":
        assert w[keep].min() >= w[~keep].max()


# -- structured --------------------------------------------------------------------------------
def test_neuron_granularity_removes_whole_units_with_their_bias():
    rng = np.random.default_rng(1)
    params = _tree(rng, MLP)
    flat = M.flatten(params)
    cfg = PruningConfig(granularity="neuron", fraction=0.4, scope="layerwise")
    paths = structured.unit_paths(KERNELS, MLP, "neuron")
    assert paths == ["fc0/kernel", "fc1/kernel"]  # the output layer's units are the classes
    mask = M.flatten(pruning.prune(params, M.ones_like(params), cfg, paths))
    for p, units in (("fc0/kernel", 5), ("fc1/kernel", 4)):
        m = np.asarray(mask[p])
        col_alive = m.all(axis=0)
        assert np.array_equal(col_alive, m.any(axis=0))  # whole columns, nothing partial
        assert int((~col_alive).sum()) == pruning.n_to_prune(0.4, units)
        l1 = np.abs(np.asarray(flat[p])).sum(axis=0)
        assert l1[col_alive].min() >= l1[~col_alive].max()  # Li et al.: the smallest L1 norms go
        bias = np.asarray(mask[p.replace("kernel", "bias")])
        assert np.array_equal(bias, col_alive)
    assert np.asarray(mask["head/kernel"]).all() and np.asarray(mask["head/bias"]).all()


def test_channel_granularity_removes_filters_and_their_batchnorm_channel():
    rng = np.random.default_rng(2)
    shapes = {"conv1/kernel": (3, 3, 2, 6), "bn1/scale": (6,), "bn1/bias": (6,), "block0/shortcut_conv/kernel": (1, 1, 6, 4),
              "block0/shortcut_bn/scale": (4,), "block0/shortcut_bn/bias": (4,), "fc0/kernel": (4, 3), "head/kernel": (3, 2)}
    params = _tree(rng, shapes)
    kernels = [p for p in shapes if p.endswith("kernel")]
    paths = structured.unit_paths(sorted(kernels), shapes, "channel")
    assert paths == ["block0/shortcut_conv/kernel", "conv1/kernel"]
    cfg = PruningConfig(granularity="channel", fraction=0.5, scope="global")
    mask = M.flatten(pruning.prune(params, M.ones_like(params), cfg, paths))
    dead = sum(structured.dead_units(mask[p]) for p in paths)
    assert dead == pruning.n_to_prune(0.5, 10)
    for k, bn in (("conv1/kernel", "bn1"), ("block0/shortcut_conv/kernel", "block0/shortcut_bn")):
        alive = np.asarray(mask[k]).reshape(-1, shapes[k][-1]).all(axis=0)
        assert np.array_equal(alive, np.asarray(mask[k]).reshape(-1, shapes[k][-1]).any(axis=0))
        assert np.array_equal(np.asarray(mask[f"{bn}/scale"]), alive) and np.array_equal(np.asarray(mask[f"{bn}/bias"]), alive)
    assert np.asarray(mask["fc0/kernel"]).all()  # channel granularity prunes convolutions only
    # a second step works on the remaining units and keeps the first step's removals
    mask2 = M.flatten(pruning.prune(params, M.unflatten(mask), cfg, paths))
    assert M.is_subset(M.unflatten(mask2), M.unflatten(mask))
    assert sum(structured.dead_units(mask2[p]) for p in paths) == dead + pruning.n_to_prune(0.5, 10 - dead)


# -- ablations ---------------------------------------------------------------------------------
def test_shuffle_ablation_keeps_every_tensor_count_within_the_previous_mask():
    rng = np.random.default_rng(3)
    params = _tree(rng, MLP)
    cfg = PruningConfig(fraction=0.5, scope="global")
    m1 = pruning.prune(params, M.ones_like(params), cfg, KERNELS)
    m2 = pruning.prune(params, m1, cfg, KERNELS)
    shuffled = ablations.shuffle_within(m2, m1, KERNELS, np.random.default_rng(0))
    assert M.is_subset(shuffled, m1)
    for p in KERNELS:
        assert int(np.asarray(M.flatten(shuffled)[p]).sum()) == int(np.asarray(M.flatten(m2)[p]).sum())
    assert any(not np.array_equal(M.flatten(shuffled)[p], M.flatten(m2)[p]) for p in KERNELS)


def test_invert_ablation_keeps_the_lowest_scores_at_the_same_counts():
    rng = np.random.default_rng(4)
    params = _tree(rng, MLP)
    cfg = PruningConfig(fraction=0.3, scope="layerwise")
    scores = pruning.magnitudes(params)
    normal = M.flatten(pruning.prune_scores(scores, M.ones_like(params), cfg, KERNELS))
    inverted = M.flatten(pruning.prune_scores(ablations.ABLATIONS["invert"].scores(scores), M.ones_like(params), cfg, KERNELS))
    for p in KERNELS:
        assert np.asarray(inverted[p]).sum() == np.asarray(normal[p]).sum()
        w = np.abs(np.asarray(M.flatten(params)[p])).ravel()
        inv = np.asarray(inverted[p]).ravel()
        assert w[inv].max() <= w[~inv].min()


def test_ties_are_broken_by_position_for_every_granularity():
    params = M.unflatten({"fc0/kernel": np.ones((2, 4), np.float32), "head/kernel": np.ones((4, 2), np.float32)})
    w = pruning.prune(params, M.ones_like(params), PruningConfig(fraction=0.5, scope="global"), ["fc0/kernel"])
    assert np.array_equal(np.asarray(M.flatten(w)["fc0/kernel"]).ravel(), [False] * 4 + [True] * 4)
    u = pruning.prune(params, M.ones_like(params), PruningConfig(fraction=0.5, granularity="neuron"), ["fc0/kernel"])
    assert np.array_equal(np.asarray(M.flatten(u)["fc0/kernel"]).all(axis=0), [False, False, True, True])
