"""`pruning.granularity=n:m|block` (issue 28, `lth.sparsity.patterns`): masks against their
definitions (every group of m keeps exactly n, the top scores; whole blocks by their score sums),
IMP walking down to N:M in a real run with its random control, and the refusals."""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest

import lth
from lth.config.schema import ConfigError, PruningConfig, TrainConfig, validate
from lth.runs import checkpoints
from lth.sparsity import masks as M, patterns, pruning

from conftest import small_config


def _groups(a, m):
    """(…, groups, m): the groups of m consecutive entries along axis −2, by brute force."""
    a = np.moveaxis(np.asarray(a), -2, -1)
    return a.reshape(*a.shape[:-1], a.shape[-1] // m, m).reshape(-1, m)


@pytest.mark.parametrize("shape", [(8, 6), (3, 3, 12, 5)])  # Dense (in, out), conv HWIO
@pytest.mark.parametrize("n,m", [(2, 4), (1, 3)])
def test_n_m_keeps_exactly_the_top_n_of_every_group_along_the_input_axis(shape, n, m):
    if shape[-2] % m:
        shape = (*shape[:-2], m * 4, shape[-1])
    s = np.random.default_rng(0).normal(size=shape)
    mask = patterns.n_m_mask(s, n, m)
    assert mask.shape == s.shape and mask.dtype == bool
    gm, gs = _groups(mask, m), _groups(s, m)
    assert (gm.sum(axis=1) == n).all()
    for keep, sc in zip(gm, gs):  # the kept are the n largest of their group
        assert set(np.flatnonzero(keep)) == set(np.argsort(-sc)[:n])
    np.testing.assert_array_equal(np.asarray(patterns.n_m_mask(jnp.asarray(s, jnp.float32), n, m)), mask)  # JAX, same


def test_n_m_ties_by_position_and_only_alive_weights_kept():
    s = np.ones((8, 2))
    mask = patterns.n_m_mask(s, 2, 4)
    np.testing.assert_array_equal(mask[:, 0], [1, 1, 0, 0, 1, 1, 0, 0])  # equal scores: the earlier kept
    alive = np.zeros((8, 2), bool)
    alive[[1, 3, 5, 6, 7], :] = True
    s = np.arange(16.0).reshape(8, 2)[::-1]  # earlier rows score higher, but rows 0, 2, 4 are dead
    mask = patterns.n_m_mask(s, 2, 4, alive=alive)
    np.testing.assert_array_equal(mask[:, 1], [0, 1, 0, 1, 0, 1, 1, 0])
    assert not (mask & ~alive).any()


def test_block_mask_keeps_whole_blocks_with_the_highest_sums():
    rng = np.random.default_rng(1)
    s = rng.random((2, 8, 6))
    mask = patterns.block_mask(s, (2, 3), 0.25)
    tiles = mask.reshape(2, 4, 2, 2, 3).transpose(0, 1, 3, 2, 4).reshape(-1, 6)  # one row per block
    assert set(tiles.sum(axis=1)) <= {0, 6}  # all or nothing
    kept = tiles.all(axis=1)
    assert kept.sum() == 4  # round_half_up(0.25 · 16 blocks)
    sums = s.reshape(2, 4, 2, 2, 3).transpose(0, 1, 3, 2, 4).reshape(-1, 6).sum(axis=1)
    assert set(np.flatnonzero(kept)) == set(np.argsort(-sums)[:4])
    np.testing.assert_array_equal(np.asarray(patterns.block_mask(jnp.asarray(s, jnp.float32), (2, 3), 0.25)), mask)


def test_block_pruning_step_counts_blocks_per_tensor():
    shapes = {"a/kernel": (8, 8), "b/kernel": (3, 3, 4, 8)}
    cfg = PruningConfig(granularity="block", block=[2, 4], fraction=0.5, scope="layerwise")
    paths = sorted(shapes)
    rng = np.random.default_rng(2)
    scores = M.unflatten({p: rng.random(s) for p, s in shapes.items()})
    mask = pruning.prune_scores(scores, M.unflatten({p: np.ones(s, bool) for p, s in shapes.items()}), cfg, paths)
    for p, s in shapes.items():
        m = np.asarray(M.flatten(mask)[p])
        alive = patterns.block_alive(m, (2, 4))
        assert alive.sum() == alive.size // 2  # half the blocks of each tensor
        np.testing.assert_array_equal(patterns.expand_blocks(alive, s, (2, 4)), m)  # whole blocks only


def test_level_n_walks_down_to_n_and_stays():
    assert [patterns.level_n(2, 4, "iterative", 0.2, ell) for ell in range(5)] == [4, 3, 2, 2, 2]
    assert [patterns.level_n(1, 4, "iterative", 0.5, ell) for ell in range(4)] == [4, 2, 1, 1]
    assert [patterns.level_n(1, 8, "linear", 0.25, ell) for ell in range(6)] == [8, 6, 4, 2, 1, 1]
    assert patterns.level_n(2, 4, "oneshot", 0.2, 1) == 2


def _on_disk(run_dir, level, kind="ticket"):
    sub = "" if kind == "ticket" else os.path.join("controls", kind)
    tree = checkpoints.restore(os.path.join(run_dir, f"level_{level:02d}", sub, "mask"), None)
    return {p: np.asarray(v) for p, v in M.flatten(tree).items() if p.endswith("kernel")}


def test_imp_with_n_m_over_two_levels_is_exact_nested_and_its_control_random_n_m(tmp_path):
    """1:4 with fraction 0.5: level 1 keeps 2 of every 4 input weights, level 2 one, within level
    1's; the random_prune control draws its own N:M masks with the same per-group counts."""
    cfg = small_config(tmp_path, levels=2, replicates=1, controls=["random_prune"],
                       pruning=PruningConfig(granularity="n:m", n_m=[1, 4], fraction=0.5),
                       train=TrainConfig(duration="30it", batch_size=100, eval_every="30it"))
    run = lth.run(cfg, echo=lambda _: None)
    prev = None
    for level, n in ((1, 2), (2, 1)):
        ticket, control = _on_disk(run.path, level), _on_disk(run.path, level, "random_prune")
        for p, m in ticket.items():
            assert (_groups(m[0], 4).sum(axis=1) == n).all(), (level, p)
            assert (_groups(control[p][0], 4).sum(axis=1) == n).all(), (level, p)
            if prev is not None:
                assert not (m & ~prev[p]).any()  # nested
        assert any(not np.array_equal(control[p], ticket[p]) for p in ticket)
        prev = ticket
    assert run.results.query("kind == 'ticket'").density.round(6).tolist() == [1.0, 0.5, 0.25]


def test_oneshot_block_run_keeps_whole_blocks(tmp_path):
    cfg = small_config(tmp_path, levels=1, replicates=1,
                       pruning=PruningConfig(granularity="block", block=[4, 2], schedule="oneshot", target_density=0.25,
                                             scope="layerwise"),
                       train=TrainConfig(duration="30it", batch_size=100, eval_every="30it"))
    run = lth.run(cfg, echo=lambda _: None)
    for p, m in _on_disk(run.path, 1).items():
        alive = patterns.block_alive(m[0], (4, 2))
        assert alive.sum() == int(np.floor(0.25 * alive.size + 0.5)), p
        np.testing.assert_array_equal(patterns.expand_blocks(alive, m[0].shape, (4, 2)), m[0])


@pytest.mark.parametrize("changes,levels,match", [
    (dict(granularity="n:m", n_m=[0, 4]), 2, r"pruning.n_m=\[0, 4\]: must be two integers"),
    (dict(granularity="n:m", n_m=[4, 4]), 2, "0 < n < m"),
    (dict(n_m=[1, 4]), 2, "is for pruning.granularity=n:m"),
    (dict(granularity="block", block=[0, 4]), 2, "pruning.block"),
    (dict(granularity="n:m", scope="global"), 2, "pruning.scope=global"),
    (dict(granularity="n:m", method="synflow"), 2, "pruning.method=synflow with pruning.granularity=n:m"),
    (dict(granularity="n:m", schedule="oneshot", target_density=0.3), 1, "pruning.target_density=0.3"),
    (dict(granularity="n:m", distribution="erk"), 2, "pruning.granularity=n:m with pruning.distribution=erk"),
])
def test_pattern_refusals_name_the_setting(tmp_path, changes, levels, match):
    with pytest.raises(ConfigError, match=match):
        validate(small_config(tmp_path, levels=levels, pruning=PruningConfig(**changes)))


def test_oneshot_n_m_needs_no_target_density(tmp_path):
    validate(small_config(tmp_path, levels=1, pruning=PruningConfig(granularity="n:m", schedule="oneshot")))


def test_a_tensor_whose_axis_does_not_divide_is_named_before_training(tmp_path):
    cfg = small_config(tmp_path, levels=1, pruning=PruningConfig(granularity="block", block=[4, 4]))  # head: (64, 10)
    with pytest.raises(ConfigError, match=r"tensor head/kernel has shape \(64, 10\).*pruning.exclude"):
        lth.run(cfg, echo=lambda _: None)
    assert not os.path.exists(tmp_path / "runs") or not any((tmp_path / "runs").rglob("results.csv"))
    cfg = small_config(tmp_path, levels=1, model=small_config(tmp_path).model.__class__(name="mlp", widths=[64, 30]),
                       pruning=PruningConfig(granularity="n:m", n_m=[2, 4]))  # head's input axis: 30
    with pytest.raises(ConfigError, match=r"head/kernel has shape \(30, 10\).*not divisible by m=4"):
        lth.run(cfg, echo=lambda _: None)


def test_the_mask_functions_run_under_jit_with_alive_masks():
    """What dynamic sparse training needs: both patterns inside a compiled function, JAX in and out."""
    import jax

    rng = np.random.default_rng(3)
    s, alive = rng.normal(size=(3, 3, 8, 8)), rng.random((3, 3, 8, 8)) < 0.9
    alive[..., 0:4, :] = True
    got = jax.jit(lambda x, a: patterns.n_m_mask(x, 1, 4, alive=a))(jnp.asarray(s, jnp.float32), jnp.asarray(alive))
    np.testing.assert_array_equal(np.asarray(got), patterns.n_m_mask(s, 1, 4, alive=alive))
    got = jax.jit(lambda x, a: patterns.block_mask(x, (2, 2), 0.5, alive=a))(jnp.asarray(s, jnp.float32), jnp.asarray(alive))
    want = patterns.block_mask(s, (2, 2), 0.5, alive=alive)
    np.testing.assert_array_equal(np.asarray(got), want)
    assert patterns.block_alive(want, (2, 2)).sum() == 72  # half of 3·3·4·4 blocks
