"""Exact counts, deterministic ties, nested masks and the density ladder of magnitude pruning."""

import jax.numpy as jnp
import numpy as np
import pytest

from lth import masks as M
from lth.config import PruningConfig
from lth.pruning import expected_density, n_to_prune, prune


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
