"""The budget of the per-layer search (lth.sparsity.budget): exact counts before training, the refusal of an
over-budget run before anything is written, and (slow) the Optuna preset on a tiny run: every
trial's result within the budget, the best trial too."""

import dataclasses
import glob
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import yaml
from flax import linen as nn

from lth.sparsity import budget, masks as M, pruning
from lth.config.schema import BudgetConfig, Config, ConfigError, PruningConfig, validate

from conftest import small_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLP = {"fc1": {"kernel": np.zeros((40, 64)), "bias": np.zeros(64)}, "fc2": {"kernel": np.zeros((64, 64)), "bias": np.zeros(64)},
       "head": {"kernel": np.zeros((64, 10)), "bias": np.zeros(10)}}
PATHS = ["fc1/kernel", "fc2/kernel", "head/kernel"]


def keep(n, fraction, levels):
    """Weights a tensor of n keeps after `levels` steps of round-half-up pruning, by hand."""
    for _ in range(levels):
        n -= int(np.floor(fraction * n + 0.5))
    return n


def test_counts_are_exact_per_layer():
    """Layer-wise with per-layer fractions, 2 levels: fc1 2560 -> 1024 -> 410 (0.6 of the remaining,
    half up), fc2 4096 -> 3277 -> 2622 (0.2), head 640 -> 576 -> 518 (0.1); FLOPs with the given
    positions (a dense layer has 1; 3 for fc2 here) weigh each kernel by them."""
    cfg = Config(levels=2, pruning=PruningConfig(scope="layerwise", fraction=0.2, fractions={"fc1": 0.6, "head": 0.1}))
    assert [keep(2560, 0.6, 2), keep(4096, 0.2, 2), keep(640, 0.1, 2)] == [410, 2622, 518]
    layers = [("fc1/kernel", 1, 2560), ("fc2/kernel", 3, 4096), ("head/kernel", 1, 640)]
    rep = budget.report(cfg, MLP, PATHS, layers)
    assert rep.tensors == {"fc1/kernel": 410, "fc2/kernel": 2622, "head/kernel": 518}
    assert (rep.weights, rep.weights_dense) == (410 + 2622 + 518, 2560 + 4096 + 640)
    assert (rep.flops, rep.flops_dense) == (410 + 3 * 2622 + 518, 2560 + 3 * 4096 + 640)
    # the rule: feasible up to the budget itself, over it refused (OverBudget is a ConfigError)
    budget.check(dataclasses.replace(cfg, budget=BudgetConfig(weights=rep.weights / rep.weights_dense)), rep)
    with pytest.raises(ConfigError, match=r"over budget at level 2: weights 3,550 of 7,296 \(0.4866\) > budget.weights=0.48"):
        budget.check(dataclasses.replace(cfg, budget=BudgetConfig(weights=0.48)), rep)
    with pytest.raises(budget.OverBudget, match="FLOPs 8,794 of 15,488") as e:
        budget.check(dataclasses.replace(cfg, budget=BudgetConfig(flops=0.5, weights=0.48)), rep)
    # the objective of an infeasible trial: minus the larger excess (FLOPs 0.5678 - 0.5 here)
    assert budget.infeasible_objective(e.value) == pytest.approx(-(8794 / 15488 - 0.5))


def test_linear_schedule_counts_from_the_dense_count():
    """Linear, Δ = 0.3, level 3: each tensor keeps n - floor(0.9 n): 256, 410, 64."""
    cfg = Config(levels=3, pruning=PruningConfig(scope="layerwise", fraction=0.3, schedule="linear"))
    assert budget.report(cfg, MLP, PATHS).tensors == {"fc1/kernel": 256, "fc2/kernel": 410, "head/kernel": 64}


def test_a_shared_threshold_is_bounded_where_survivors_cost_most():
    """Global scope: the group keeps 7296 - round(0.5 * 7296) = 3648 in all, placed first in the
    tensor with most positions (fc2: 4096 >= 3648), so the FLOPs bound is 3648 * 5 there."""
    cfg = Config(levels=1, pruning=PruningConfig(scope="global", fraction=0.5))
    rep = budget.report(cfg, MLP, PATHS, [("fc1/kernel", 1, 2560), ("fc2/kernel", 5, 4096), ("head/kernel", 1, 640)])
    assert rep.weights == 3648 and rep.tensors == {"fc2/kernel": 3648, "fc1/kernel": 0, "head/kernel": 0}
    assert rep.flops == 5 * 3648


class TinyConvNet(nn.Module):
    """Two convolutions (output positions 8x8, then 4x4) and a dense head: kernels whose weights cost
    different FLOPs."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(4, (3, 3), name="conv1")(x))
        x = nn.relu(nn.Conv(8, (3, 3), strides=2, name="conv2")(x))
        return nn.Dense(10, name="head")(x.reshape((x.shape[0], -1)))


def test_bound_holds_for_a_pruned_convnet():
    """A convnet (positions differ per layer), global 80% one level: the report's weights equal a
    real pruning step's count and its FLOPs bound is >= lth.sparsity.flops's count of the pruned mask, for
    random scores; layer-wise, the FLOPs are exact."""
    from lth.sparsity.flops import count_flops

    model = TinyConvNet()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    params = jax.device_get(variables["params"])
    paths = M.prunable_paths(params, ["kernel$"], [])
    layers = budget.layer_positions(model, variables, (8, 8, 3))
    assert [(k, pos) for k, pos, _ in layers] == [("conv1/kernel", 64), ("conv2/kernel", 16), ("head/kernel", 1)]
    ones = jax.tree.map(lambda p: np.ones(np.shape(p), bool), params)
    rng = np.random.default_rng(0)
    for scope in ("global", "layerwise"):
        cfg = Config(levels=1, pruning=PruningConfig(scope=scope, fraction=0.8))
        rep = budget.report(cfg, params, paths, layers)
        scores = jax.tree.map(lambda p: rng.random(np.shape(p)), params)
        mask = pruning.prune_scores(scores, ones, cfg.pruning, paths)
        flops = count_flops(model, variables, mask, (8, 8, 3))
        assert rep.weights == sum(int(np.sum(M.flatten(mask)[p])) for p in paths)
        assert rep.flops_dense == flops.dense
        assert rep.flops >= flops.unstructured if scope == "global" else rep.flops == flops.unstructured


def test_budget_settings_are_checked():
    for bad, match in ((dict(budget=BudgetConfig(flops=0.0)), "budget.flops=0.0"),
                       (dict(budget=BudgetConfig(weights=1.5)), "budget.weights=1.5"),
                       (dict(budget=BudgetConfig(weights=0.5), pruning=PruningConfig(granularity="neuron")),
                        "pruning.granularity='neuron'"),
                       (dict(budget=BudgetConfig(flops=0.5), levels=0,
                             pruning=PruningConfig(schedule="gradual", target_density=0.1)), "pruning.schedule='gradual'")):
        with pytest.raises(ConfigError, match=match):
            validate(dataclasses.replace(Config(), **bad))


def test_an_over_budget_run_is_refused_before_anything_is_written(tmp_path):
    """small_config: global 20% per level, 2 levels -> density 0.64 > budget.weights 0.6: refused,
    no run directory; the same with budget.flops=0.6."""
    from lth.lottery import levels as lottery

    for b in (BudgetConfig(weights=0.6), BudgetConfig(flops=0.6)):
        with pytest.raises(budget.OverBudget, match=r"4,670 of 7,296 .*\(0.6401\) > budget"):
            lottery.run(small_config(tmp_path, budget=b), echo=lambda _: None)
        assert not os.path.exists(tmp_path / "runs")


def exact_fraction(fractions: dict[str, float], sizes: dict[str, int]) -> float:
    """Kept / dense weights (= MACs for an MLP's dense layers) of one level, by hand."""
    return sum(keep(sizes[k], fractions[k], 1) for k in sizes) / sum(sizes.values())


@pytest.mark.slow
def test_optuna_search_respects_the_budget(tmp_path):
    """`+search=layer_rates_flops` on a tiny MLP, 4 TPE trials (seed 0), budget.flops=0.2: some
    trials sampled over it (not trained, objective minus the excess), the others trained, each
    within the budget by its results.csv; the best trial's fractions are within it and its value
    is an accuracy; the study is in its SQLite database."""
    budget_flops = 0.2
    env = {**os.environ, "PYTHONPATH": ROOT, "WANDB_MODE": "disabled"}
    cmd = [sys.executable, os.path.join(ROOT, "experiments", "lottery.py"), "-m", "+search=layer_rates_flops",
           "model.widths=[32,32]", "train.duration=40it", "train.eval_every=20it", "replicates=1", "dataset.val_size=500",
           "logger.wandb.mode=disabled", "logger.progress=false", f"paths.runs_dir={tmp_path / 'runs'}",
           f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra.sweeper.n_trials=4", f"budget.flops={budget_flops}",
           f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}"]  # a study that a re-run continues
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    sizes = {"fc1": 40 * 32, "fc2": 32 * 32, "head": 32 * 10}
    jobs = [json.load(open(f)) for f in sorted(glob.glob(str(tmp_path / "sweep" / "jobs" / "*.json")))]
    assert len(jobs) == 4
    trained = infeasible = 0
    for job in jobs:
        fr = {o.split("=")[0].rsplit(".", 1)[1]: float(o.split("=")[1]) for o in job["overrides"] if o.startswith("pruning.fractions.")}
        assert sorted(fr) == sorted(sizes)
        if exact_fraction(fr, sizes) > budget_flops:
            assert job.get("run_dir") is None  # refused before training: no run directory
            assert f"infeasible, objective {budget_flops - exact_fraction(fr, sizes):.4f}" in p.stderr
            infeasible += 1
        else:
            df = pd.read_csv(os.path.join(job["run_dir"], "results.csv"))
            last = df[df.level == 1]
            assert (last.density <= budget_flops).all() and (last.flops_fraction <= budget_flops).all()
            assert last.density.iloc[0] == pytest.approx(exact_fraction(fr, sizes))
            trained += 1
    assert trained >= 1 and infeasible >= 1  # the seed-0 draws straddle the budget (else the test shows nothing)
    assert p.stderr.count("infeasible, objective -") == infeasible
    best = yaml.safe_load(open(tmp_path / "sweep" / "optimization_results.yaml"))
    fr = {k.rsplit(".", 1)[1]: v for k, v in best["best_params"].items()}
    assert exact_fraction(fr, sizes) <= budget_flops and best["best_value"] > 0.1
    # the study in its database (optuna 2.10 under SQLAlchemy 1.4: pyproject pins sqlalchemy<2)
    import optuna

    study = optuna.load_study(study_name="layer_rates_flops", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    values = sorted(t.value for t in study.trials)
    assert len(values) == 4 and values[-1] == best["best_value"] and sum(v < 0 for v in values) == infeasible
