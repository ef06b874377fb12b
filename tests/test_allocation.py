"""`pruning.distribution=uniform|erk|er|custom` (issue 28): per-tensor densities against their
formulas, computed here by hand, and lottery runs that keep exactly those counts per tensor."""

from __future__ import annotations

import os

import numpy as np
import pytest

import lth
from lth.config.schema import ConfigError, PruningConfig, TrainConfig, validate
from lth.runs import checkpoints
from lth.sparsity import allocation, level_counts, masks as M, pruning

from conftest import small_config

# MNIST-1D's MLP of `small_config`: 40 inputs, widths [64, 64], 10 classes
SHAPES = {"fc1/kernel": (40, 64), "fc2/kernel": (64, 64), "head/kernel": (64, 10)}


def test_erk_densities_of_an_mlp_are_the_formula_by_hand():
    d = 0.1
    N = {p: np.prod(s) for p, s in SHAPES.items()}
    r = {p: sum(s) / np.prod(s) for p, s in SHAPES.items()}  # ERK: (n_in + n_out) / (n_in · n_out) for 2-D
    eps = d * sum(N.values()) / sum(r[p] * N[p] for p in SHAPES)
    assert max(eps * r[p] for p in SHAPES) < 1  # no dense layer at 10%
    got = allocation.tensor_densities("erk", SHAPES, d)
    for p in SHAPES:
        assert got[p] == pytest.approx(eps * r[p], rel=1e-12)
    assert got["head/kernel"] > got["fc1/kernel"] > got["fc2/kernel"]  # small layers denser
    kept = allocation.keep_counts(SHAPES, got)
    assert kept == {p: int(np.floor(eps * r[p] * N[p] + 0.5)) for p in SHAPES}
    assert abs(sum(kept.values()) - d * sum(N.values())) <= len(SHAPES) / 2


def test_a_layer_where_eps_r_exceeds_one_is_dense_and_the_budget_re_solved():
    shapes = {"big/kernel": (1000, 1000), "small/kernel": (10, 10)}
    d = 0.5
    # first solve: eps = d N / Σ r N; the small layer's eps · r = 0.2 · 247.5 > 1
    eps0 = d * 1_000_100 / (0.002 * 1e6 + 0.2 * 100)
    assert eps0 * 0.2 > 1
    eps = (d * 1_000_100 - 100) / (0.002 * 1e6)  # small layer dense, the rest re-solved
    got = allocation.tensor_densities("erk", shapes, d)
    assert got["small/kernel"] == 1.0
    assert got["big/kernel"] == pytest.approx(eps * 0.002, rel=1e-12)
    assert got["big/kernel"] * 1e6 + 100 == pytest.approx(d * 1_000_100)


def test_er_ignores_the_spatial_dims_and_custom_shares_what_is_left():
    shapes = {"conv/kernel": (3, 3, 8, 16), "head/kernel": (16, 10)}
    er = allocation.tensor_densities("er", shapes, 0.2)
    n = {p: np.prod(s) for p, s in shapes.items()}
    r = {"conv/kernel": (8 + 16) / (8 * 16), "head/kernel": (16 + 10) / (16 * 10)}
    eps = 0.2 * sum(n.values()) / sum(r[p] * n[p] for p in shapes)
    assert er == pytest.approx({p: eps * r[p] for p in shapes})
    custom = allocation.tensor_densities("custom", SHAPES, 0.1, {"head": 0.5})
    rest = (0.1 * (2560 + 4096 + 640) - 0.5 * 640) / (2560 + 4096)
    assert custom == pytest.approx({"fc1/kernel": rest, "fc2/kernel": rest, "head/kernel": 0.5})


def _mask(shapes):
    return M.unflatten({p: np.ones(s, bool) for p, s in shapes.items()})


@pytest.mark.parametrize("schedule,scope", [("iterative", "global"), ("iterative", "layerwise"), ("linear", "module")])
def test_uniform_counts_are_the_ladder_of_before(schedule, scope):
    """The default distribution leaves the counts exactly as lth.sparsity.pruning's ladder (and the
    linear schedule's) give them: the per-level counts route through level_counts unchanged."""
    from lth.sparsity import linear_schedule

    cfg = PruningConfig(fraction=0.2, scope=scope, schedule=schedule)
    paths = sorted(SHAPES)
    for level in range(4):
        got = level_counts.keep_counts(cfg, _mask(SHAPES), paths, level, level)
        if schedule == "linear":
            fr = [f for _, f in pruning.groups(paths, cfg)]
            want = linear_schedule.keep_counts(pruning.alive_counts(_mask(SHAPES), cfg, paths), level, fr)
        else:
            want = pruning.ladder_counts(_mask(SHAPES), cfg, paths, level)
        assert got == want


def test_erk_imp_levels_respread_the_density_and_nest():
    """Iterative IMP under ERK: level ℓ keeps round_half_up(d_l((1 − f)^ℓ) · N_l) in tensor l,
    within the previous level's mask."""
    cfg = PruningConfig(fraction=0.5, distribution="erk")
    paths = sorted(SHAPES)
    rng = np.random.default_rng(0)
    mask = _mask(SHAPES)
    for level in (1, 2, 3):
        keep = level_counts.keep_counts(cfg, mask, paths, level, 1)
        want = allocation.keep_counts(SHAPES, allocation.tensor_densities("erk", SHAPES, 0.5 ** level))
        assert keep == [want[p] for p in paths]
        scores = M.unflatten({p: rng.random(s) for p, s in SHAPES.items()})
        new = pruning.prune_to(scores, mask, cfg, paths, keep)
        assert M.is_subset(new, mask)
        assert {p: int(np.asarray(v).sum()) for p, v in M.flatten(new).items()} == want
        mask = new


def _tensor_counts(run_dir, level, kind="ticket"):
    sub = "" if kind == "ticket" else os.path.join("controls", kind)
    tree = checkpoints.restore(os.path.join(run_dir, f"level_{level:02d}", sub, "mask"), None)
    return {p: np.asarray(v).reshape(np.shape(v)[0], -1).sum(axis=1).tolist() for p, v in M.flatten(tree).items()
            if p.endswith("kernel")}


def test_oneshot_erk_run_keeps_exact_counts_per_tensor(tmp_path):
    cfg = small_config(tmp_path, levels=1, replicates=2, controls=["random_prune"],
                       pruning=PruningConfig(schedule="oneshot", target_density=0.1, distribution="erk"),
                       train=TrainConfig(duration="30it", batch_size=100, eval_every="30it"))
    run = lth.run(cfg, echo=lambda _: None)
    want = allocation.keep_counts(SHAPES, allocation.tensor_densities("erk", SHAPES, 0.1))
    for kind in ("ticket", "random_prune"):
        assert _tensor_counts(run.path, 1, kind) == {p: [k, k] for p, k in want.items()}
    assert "erk" in run.summary["config"]["pruning"]["distribution"]


def test_snip_at_init_with_er_prunes_the_dense_network_to_each_levels_counts(tmp_path):
    cfg = small_config(tmp_path, levels=2, replicates=1,
                       pruning=PruningConfig(method="snip", fraction=0.5, distribution="er"),
                       train=TrainConfig(duration="30it", batch_size=100, eval_every="30it"))
    run = lth.run(cfg, echo=lambda _: None)
    for level in (1, 2):
        want = allocation.keep_counts(SHAPES, allocation.tensor_densities("er", SHAPES, 0.5 ** level))
        assert _tensor_counts(run.path, level) == {p: [k] for p, k in want.items()}


@pytest.mark.parametrize("changes,match", [
    (dict(distribution="erk", scope="global"), "pruning.scope=global"),
    (dict(distribution="erk", fractions={"head": 0.1}), "pruning.fractions"),
    (dict(distribution="erk", granularity="channel"), "pruning.granularity=channel with pruning.distribution=erk"),
    (dict(distribution="custom", densities={"head": 0.5}), "pruning.schedule=iterative with pruning.distribution=custom"),
    (dict(distribution="er", schedule="gradual", target_density=0.1), "pruning.schedule=gradual with"),
    (dict(distribution="erk", schedule="linear", fraction=0.5), "reaches density 0"),
])
def test_distribution_refusals_name_the_setting(tmp_path, changes, match):
    cfg = small_config(tmp_path, levels=0 if changes.get("schedule") == "gradual" else 2,
                       pruning=PruningConfig(**{"scope": None, **changes}))
    with pytest.raises(ConfigError, match=match):
        validate(cfg)


def test_custom_oneshot_and_erk_iterative_validate(tmp_path):
    validate(small_config(tmp_path, levels=1, pruning=PruningConfig(schedule="oneshot", target_density=0.1,
                                                                    distribution="custom", densities={"head": 0.5})))
    validate(small_config(tmp_path, levels=3, pruning=PruningConfig(distribution="erk", fraction=0.2)))


@pytest.mark.parametrize("pruning_cfg,match", [
    (PruningConfig(distribution="er", prunable=["kernel$", "bias$"]), "ER needs"),
    (PruningConfig(schedule="oneshot", target_density=0.05, distribution="custom", densities={"fc": 0.9}),
     "would need density"),
])
def test_a_distribution_that_cannot_be_spread_is_refused_before_training(tmp_path, pruning_cfg, match):
    cfg = small_config(tmp_path, levels=1, pruning=pruning_cfg)
    with pytest.raises(ConfigError, match=match):
        lth.run(cfg, echo=lambda _: None)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("level_00"))  # nothing trained
