"""Oracles for the lottery loop through its public entry points, and exact checks of the rules a
silent bug would corrupt: the winning-ticket and matching verdicts, early stopping, tie-breaking,
weight decay and the learning-rate schedules.

Each test states the behaviour it pins; the deliberate bugs they were written against are named in
the comments (e.g. "rewinding to θ0 instead of θk")."""

from __future__ import annotations

import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from lth.runs import checkpoints, results
from lth.lottery import levels as lottery
from lth.sparsity import masks as M
from lth.config.schema import (
    BranchConfig,
    Config,
    ConfigError,
    DatasetConfig,
    InitConfig,
    ModelConfig,
    OptimizerConfig,
    PruningConfig,
    RewindConfig,
    ScheduleConfig,
    TrainConfig,
)
from lth.train.optim import make_optimizer, make_schedule
from lth.sparsity.pruning import prune
from lth.runs.run_dir import RunDir
from lth.train.trainer import LevelHistory

from conftest import mnist1d_config, small_config


def level_dir(run_dir, level):
    return RunDir(run_dir, "").level_dir(level)


def restore_final(run_dir, level, like):
    return checkpoints.restore(os.path.join(level_dir(run_dir, level), "final"), like)


# -- rewinding through the driver ------------------------------------------------------------------

def test_nothing_pruned_and_state_rewound_level_1_replays_level_0_from_k(tmp_path):
    """With every per-tensor fraction 0 and the optimizer state rewound, level 1 starts from
    exactly the state level 0 had at step k (weights θk, step k so the step schedule, momentum) and
    sees the same batches: its final weights and results equal level 0's bit for bit.
    Catches: rewinding to θ0, to step 0, or to a fresh optimizer state."""
    cfg = mnist1d_config(tmp_path, pruning=PruningConfig(fraction=0.2, scope="global", fractions={".*": 0.0}),
                         rewind=RewindConfig(point="20it", optimizer_state="rewound"))
    out = lottery.run(cfg, echo=lambda _: None)
    df = out.results
    l0, l1 = df[df.level == 0].reset_index(drop=True), df[df.level == 1].reset_index(drop=True)
    assert (l1.density == 1.0).all() and (l1.start_step == 20).all() and (l0.start_step == 0).all()
    for col in ("test_accuracy", "test_loss", "val_accuracy", "val_loss", "train_loss"):
        np.testing.assert_array_equal(l0[col].to_numpy(), l1[col].to_numpy(), err_msg=col)
    f0 = restore_final(out.run_dir, 0, None)
    f1 = restore_final(out.run_dir, 1, None)
    for a, b in zip(jax.tree.leaves(f0["params"]), jax.tree.leaves(f1["params"])):
        np.testing.assert_array_equal(a, b)


def test_reset_optimizer_state_does_not_replay_level_0(tmp_path):
    """The control of the oracle above: with the optimizer state reset (momentum 0 at k) the same
    run does differ, so the oracle can tell the two apart."""
    cfg = mnist1d_config(tmp_path, pruning=PruningConfig(fraction=0.2, scope="global", fractions={".*": 0.0}),
                         rewind=RewindConfig(point="20it", optimizer_state="reset"))
    df = lottery.run(cfg, echo=lambda _: None).results
    assert not np.array_equal(df[df.level == 0].test_loss.to_numpy(), df[df.level == 1].test_loss.to_numpy())


def test_extending_a_run_prunes_the_last_finished_level(tmp_path):
    """levels=2 then levels=3 in the same run directory: level 3 is on the ladder (0.8^3 of the
    prunable weights) and its mask, read from disk, is a subset of level 2's.
    Catches: an extension that restores level 0 instead of level L-1."""
    cfg = mnist1d_config(tmp_path, levels=2)
    first = lottery.run(cfg, echo=lambda _: None)
    lines = []
    second = lottery.run(dataclasses.replace(cfg, levels=3), echo=lines.append)
    assert second.run_dir == first.run_dir
    assert sum("done already" in line for line in lines) == 3
    s = second.summary
    assert list(s.index) == [0, 1, 2, 3]
    m2 = checkpoints.restore(os.path.join(level_dir(second.run_dir, 2), "mask"), None)
    m3 = checkpoints.restore(os.path.join(level_dir(second.run_dir, 3), "mask"), None)
    for a, b in zip(jax.tree.leaves(m2), jax.tree.leaves(m3)):
        a, b = np.asarray(a, bool), np.asarray(b, bool)
        assert not (b & ~a).any()  # subset
    kernels = [(np.asarray(a, bool), np.asarray(b, bool)) for (p, a), b in
               zip(jax.tree_util.tree_flatten_with_path(m2)[0], jax.tree.leaves(m3)) if "kernel" in jax.tree_util.keystr(p)]
    total = sum(a[0].size for a, _ in kernels)  # per replicate
    alive2 = sum(a[0].sum() for a, _ in kernels)
    alive3 = sum(b[0].sum() for _, b in kernels)
    assert alive3 == alive2 - math.floor(0.2 * alive2 + 0.5)
    assert abs(alive3 / total - 0.8**3) < 2e-3
    # And the level-3 rows say the same density.
    assert s.loc[3, "density"] == pytest.approx(alive3 / total, abs=1e-6)


# -- verdicts ------------------------------------------------------------------------------------

def _table(levels: dict[int, list[tuple[float, float, int]]]) -> pd.DataFrame:
    """Rows (level, replicate) from {level: [(final acc, early-stop acc, early-stop step), ...]}."""
    rows = []
    for level, reps in levels.items():
        for r, (acc, es_acc, es_step) in enumerate(reps):
            rows.append({"level": level, "replicate": r, "kind": "ticket", "density": 0.8**level, "test_accuracy": acc,
                         "early_stop_test_accuracy": es_acc, "early_stop_step": es_step})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("es_acc,es_step,win", [
    (0.95, 400, True),    # same accuracy, same step: a winning ticket (>= and <=)
    (0.96, 300, True),    # better and earlier
    (0.96, 500, False),   # better but later: not a ticket (AND, not OR)
    (0.94, 300, False),   # earlier but worse
])
def test_winning_ticket_needs_both_accuracy_and_speed(es_acc, es_step, win):
    df = _table({0: [(0.9, 0.95, 400), (0.9, 0.95, 400)], 1: [(0.9, es_acc, es_step), (0.9, es_acc, es_step)]})
    s = results.summarize(df)
    assert bool(s.loc[1, "winning_ticket"]) is win
    assert pd.isna(s.loc[0, "winning_ticket"]) and pd.isna(s.loc[0, "matching"])  # undefined for the dense level


@pytest.mark.parametrize("acc,tolerance,match", [
    (0.9101, 0.0, True),    # above the dense mean
    (0.9000, 0.0, True),    # exactly one (population) std below: 0.91 - 0.01
    (0.8999, 0.0, False),   # just more than one std below
    (0.8999, 0.02, True),   # a stated tolerance larger than the std
    (0.8899, 0.02, False),
])
def test_matching_is_within_one_std_of_dense_or_a_tolerance(acc, tolerance, match):
    """Dense accuracies 0.90 and 0.92: mean 0.91, population std 0.01 (not the sample std 0.0141,
    with which 0.8999 would match). Catches: matching at 10x the std."""
    df = _table({0: [(0.90, 0.9, 100), (0.92, 0.9, 100)], 1: [(acc, 0.9, 100), (acc, 0.9, 100)]})
    s = results.summarize(df, tolerance=tolerance)
    assert s.loc[0, "test_acc_std"] == pytest.approx(0.01)
    assert bool(s.loc[1, "matching"]) is match


def test_early_stop_is_the_first_of_tied_minima():
    """Validation loss [0.5, 0.3, 0.4, 0.3] at steps 100..400: replicate 0 stops at 200 (the first
    minimum), replicate 1 (minimum only at 400) at 400; the early-stop accuracy is the test accuracy
    there. Catches: the last minimum instead of the first."""
    h = LevelHistory()
    vals = [[0.5, 0.6], [0.3, 0.5], [0.4, 0.4], [0.3, 0.2]]
    for i, v in enumerate(vals):
        h.eval_steps.append(100 * (i + 1))
        h.evals.append({"val/loss": np.array(v), "val/accuracy": np.array([0.1 * i, 0.2 * i]),
                        "test/accuracy": np.array([0.5 + 0.1 * i, 0.6 + 0.1 * i])})
    es = h.early_stop()
    np.testing.assert_array_equal(es["early_stop_step"], [200, 400])
    np.testing.assert_allclose(es["early_stop_test_accuracy"], [0.6, 0.9])
    np.testing.assert_allclose(es["min_val_loss"], [0.3, 0.2])


def test_no_early_stop_without_validation():
    """Without validation data there is no early-stopping point: NaN, not the last evaluation
    presented as one."""
    h = LevelHistory(eval_steps=[50, 100], evals=[{"test/accuracy": np.array([0.3])}, {"test/accuracy": np.array([0.4])}])
    es = h.early_stop()
    for key in ("early_stop_step", "early_stop_test_accuracy", "early_stop_val_accuracy", "min_val_loss"):
        assert np.isnan(es[key][0]), key


# -- ties ----------------------------------------------------------------------------------------

def test_ties_among_mixed_magnitudes_go_by_position():
    """|w| = [3, 1, 2, 1, 5, 1, 1, 4] (three ties at 1 around other values), prune 3 of 8
    (round(0.375 x 8)): the first three 1s by position go, the fourth stays. Across two tensors,
    the tensor whose path sorts first loses its tied weights first.
    Catches: an unstable sort (which orders ties arbitrarily) and ordering by value only."""
    w = np.array([3.0, -1.0, 2.0, 1.0, 5.0, -1.0, 1.0, 4.0], np.float32)
    mask = prune({"a": {"kernel": w}}, {"a": {"kernel": np.ones(8, bool)}}, PruningConfig(fraction=0.375, scope="global"),
                 ["a/kernel"])
    np.testing.assert_array_equal(np.asarray(mask["a"]["kernel"]), [1, 0, 1, 0, 1, 0, 1, 1])
    params = {"b": {"kernel": np.array([2.0, 1.0, 7.0], np.float32)}, "a": {"kernel": np.array([1.0, 9.0, 1.0], np.float32)}}
    ones = jax.tree.map(lambda x: np.ones(x.shape, bool), params)
    mask = prune(params, ones, PruningConfig(fraction=0.5, scope="global"), ["a/kernel", "b/kernel"])  # 3 of 6
    np.testing.assert_array_equal(np.asarray(mask["a"]["kernel"]), [0, 1, 0])
    np.testing.assert_array_equal(np.asarray(mask["b"]["kernel"]), [1, 0, 1])


# -- weight decay and schedules, one step against hand-written formulas ---------------------------

P0, G = np.array([1.0, -2.0, 0.5], np.float32), np.array([0.3, 0.1, -0.2], np.float32)


def one_step(cfg: OptimizerConfig, steps: int = 1) -> np.ndarray:
    tx = make_optimizer(cfg)
    p, state = jnp.asarray(P0), tx.init(jnp.asarray(P0))
    for _ in range(steps):
        u, state = tx.update(jnp.asarray(G), state, p)
        p = p + u
    return np.asarray(p)


@pytest.mark.parametrize("name,momentum,nesterov", [("sgd", 0.0, False), ("momentum", 0.9, False), ("momentum", 0.9, True)])
def test_weight_decay_is_coupled_l2_for_sgd_and_momentum(name, momentum, nesterov):
    """PyTorch's SGD: d = g + wd·p; buf = d (first step); p -= lr·buf, or lr·(d + m·buf) for
    Nesterov. Two steps, so the momentum buffer matters."""
    lr, wd = 0.1, 0.01
    cfg = OptimizerConfig(name=name, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=wd)
    p, buf = P0.astype(np.float64), None
    for _ in range(2):
        d = G + wd * p
        buf = d if buf is None else momentum * buf + d
        p = p - lr * ((d + momentum * buf) if nesterov else buf)
    np.testing.assert_allclose(one_step(cfg, 2), p, rtol=1e-6)


def test_weight_decay_is_coupled_for_adam_and_decoupled_for_adamw():
    lr, wd, b1, b2, eps = 0.01, 0.1, 0.9, 0.999, 1e-8

    def adam(d):  # one Adam step from zero moments: m̂ = d, v̂ = d²
        m, v = (1 - b1) * d / (1 - b1), (1 - b2) * d**2 / (1 - b2)
        return -lr * m / (np.sqrt(v) + eps)

    coupled = P0 + adam(G + wd * P0)
    decoupled = P0 + adam(G) - lr * wd * P0
    np.testing.assert_allclose(one_step(OptimizerConfig(name="adam", lr=lr, weight_decay=wd)), coupled, rtol=1e-5)
    np.testing.assert_allclose(one_step(OptimizerConfig(name="adamw", lr=lr, weight_decay=wd)), decoupled, rtol=1e-5)
    assert not np.allclose(coupled, decoupled)


def test_step_and_cosine_schedules_follow_their_formulas():
    """step: lr·γ^(milestones <= t) (PyTorch MultiStepLR); cosine: lr·(1 + cos(π t / T)) / 2."""
    step = make_schedule(OptimizerConfig(lr=0.1, schedule=ScheduleConfig(name="step", milestones=["30it", "2ep"], gamma=0.1)),
                         total_steps=100, steps_per_epoch=25)
    for t, want in [(0, 0.1), (29, 0.1), (30, 0.01), (49, 0.01), (50, 0.001), (99, 0.001)]:
        assert float(step(t)) == pytest.approx(want, rel=1e-6), t
    cos = make_schedule(OptimizerConfig(lr=0.2, schedule=ScheduleConfig(name="cosine")), total_steps=80, steps_per_epoch=10)
    for t in (0, 1, 20, 40, 79, 80):
        assert float(cos(t)) == pytest.approx(0.2 * (1 + math.cos(math.pi * t / 80)) / 2, rel=1e-5, abs=1e-7), t
    warm = make_schedule(OptimizerConfig(lr=0.2, schedule=ScheduleConfig(name="cosine", warmup="10it")), total_steps=80,
                         steps_per_epoch=10)
    assert float(warm(5)) == pytest.approx(0.1) and float(warm(40)) == pytest.approx(float(cos(40)))


def test_inv_schedule_follows_caffes_formula():
    """inv (Caffe's lr_policy): lr·(1 + γ t)^(-power); lenet_solver's 0.01, 1e-4, 0.75 by default."""
    inv = make_schedule(OptimizerConfig(lr=0.01, schedule=ScheduleConfig(name="inv")), total_steps=10_000, steps_per_epoch=859)
    for t in (0, 1, 500, 5000, 9999, 10_000):
        assert float(inv(t)) == pytest.approx(0.01 * (1 + 1e-4 * t) ** -0.75, rel=1e-6), t
    assert float(inv(10_000)) == pytest.approx(0.01 * 2 ** -0.75, rel=1e-6)
    other = make_schedule(OptimizerConfig(lr=0.1, schedule=ScheduleConfig(name="inv", inv_gamma=0.01, inv_power=0.5)),
                          total_steps=100, steps_per_epoch=10)
    for t in (0, 7, 99):
        assert float(other(t)) == pytest.approx(0.1 * (1 + 0.01 * t) ** -0.5, rel=1e-6), t


# -- every refusal of validate() -----------------------------------------------------------------

BAD = [
    ("levels", dict(levels=-1)),
    ("replicates", dict(replicates=0)),
    ("pruning.fraction", dict(pruning=PruningConfig(fraction=0.0))),
    ("pruning.fraction", dict(pruning=PruningConfig(fraction=1.0))),
    ("pruning.fractions", dict(pruning=PruningConfig(fractions={"head": 1.0}))),
    ("pruning.fractions", dict(pruning=PruningConfig(fractions={"head": -0.1}))),
    ("pruning.scope", dict(pruning=PruningConfig(scope="per_neuron"))),
    ("pruning.prunable", dict(pruning=PruningConfig(prunable=["(unclosed"]))),
    ("pruning.exclude", dict(pruning=PruningConfig(exclude=["[z-a]"]))),
    ("pruning.fractions", dict(pruning=PruningConfig(fractions={"*bad": 0.1}))),
    ("rewind.optimizer_state", dict(rewind=RewindConfig(optimizer_state="kept"))),
    ("rewind.point", dict(rewind=RewindConfig(point="soon"))),
    ("rewind.mode", dict(rewind=RewindConfig(mode="restart"))),
    ("controls[1]", dict(controls=["reinit", "random"])),
    ("init.replicate", dict(init=InitConfig(replicate=-1))),
    ("init.reinit_patterns", dict(init=InitConfig(reinit_patterns=["(head"]))),
    ("init.checkpoint", dict(init=InitConfig(checkpoint="/nonexistent/final"))),
    ("branch.weights", dict(branch=BranchConfig(weights="best"))),
    ("branch.mask", dict(branch=BranchConfig(mask="invert"))),
    ("train.replicates_as", dict(train=TrainConfig(replicates_as="pmap"))),
    ("optimizer.name", dict(optimizer=OptimizerConfig(name="lion"))),
    ("optimizer.lr", dict(optimizer=OptimizerConfig(lr=0.0))),
    ("optimizer.lr", dict(optimizer=OptimizerConfig(lr=-0.1))),
    ("optimizer.momentum", dict(optimizer=OptimizerConfig(momentum=1.0))),
    ("optimizer.weight_decay", dict(optimizer=OptimizerConfig(weight_decay=-1e-4))),
    ("optimizer.schedule.name", dict(optimizer=OptimizerConfig(schedule=ScheduleConfig(name="poly")))),
    ("optimizer.schedule.milestones", dict(optimizer=OptimizerConfig(schedule=ScheduleConfig(name="step")))),
    ("optimizer.schedule.milestones[0]", dict(optimizer=OptimizerConfig(schedule=ScheduleConfig(name="step", milestones=["x"])))),
    ("optimizer.schedule.warmup", dict(optimizer=OptimizerConfig(schedule=ScheduleConfig(warmup="-")))),
    ("optimizer.schedule.inv_gamma", dict(optimizer=OptimizerConfig(schedule=ScheduleConfig(name="inv", inv_gamma=-1e-4)))),
    ("optimizer.schedule.inv_power", dict(optimizer=OptimizerConfig(schedule=ScheduleConfig(name="inv", inv_power=-0.75)))),
    ("train.duration", dict(train=TrainConfig(duration="0it"))),
    ("train.duration", dict(train=TrainConfig(duration="ten"))),
    ("train.eval_every", dict(train=TrainConfig(eval_every="0it"))),
    ("train.batch_size", dict(train=TrainConfig(batch_size=0))),
    ("train.eval_batch_size", dict(train=TrainConfig(eval_batch_size=0))),
    ("dataset.source", dict(dataset=DatasetConfig(source="web"))),
    ("dataset.val_size", dict(dataset=DatasetConfig(val_size=-1))),
    ("dataset.image_size", dict(dataset=DatasetConfig(image_size=0))),
    ("model.init", dict(model=ModelConfig(init="zeros"))),
    ("model.bn_scale_init", dict(model=ModelConfig(bn_scale_init="half"))),
    ("model.width_multiplier", dict(model=ModelConfig(width_multiplier=0))),
    ("model.widths", dict(model=ModelConfig(widths=[10, 0]))),
]


@pytest.mark.parametrize("setting,change", BAD, ids=[f"{s}-{i}" for i, (s, _) in enumerate(BAD)])
def test_every_refusal_names_its_setting_and_writes_nothing(tmp_path, setting, change):
    cfg = mnist1d_config(tmp_path, **change)
    with pytest.raises(ConfigError) as e:
        lottery.run(cfg, echo=lambda _: None)
    assert str(e.value).startswith(setting) or f"{setting}=" in str(e.value) or f"{setting}:" in str(e.value), str(e.value)
    assert not os.path.exists(tmp_path / "runs")


@pytest.mark.parametrize("mode", ["verbose", ""])
def test_a_bad_wandb_mode_is_refused(tmp_path, mode):
    cfg = mnist1d_config(tmp_path)
    cfg.logger.wandb.mode = mode
    with pytest.raises(ConfigError, match="logger.wandb.mode"):
        lottery.run(cfg, echo=lambda _: None)
    assert not os.path.exists(tmp_path / "runs")


# -- the run's identity --------------------------------------------------------------------------

def test_the_run_hash_covers_the_resolved_step_counts():
    """The same settings whose durations resolve to other step counts (a dataset of another size)
    are another run. Catches: a hash that ignores the resolved steps."""
    from lth.runs.run_dir import content_hash

    cfg = Config()
    plan = {"total_steps": 100, "rewind_step": 0, "eval_every": 10, "log_every": 10, "steps_per_epoch": 50}
    other = {**plan, "total_steps": 120, "steps_per_epoch": 60}
    assert content_hash(cfg, plan) != content_hash(cfg, other)
    assert content_hash(cfg, plan) != content_hash(cfg, {**plan, "rewind_step": 5})


# -- result rows and the printed summary ----------------------------------------------------------

def _history(with_val: bool) -> LevelHistory:
    h = LevelHistory(seconds=12.34567)
    for step, acc, vloss in ((50, [0.5, 0.6], [0.9, 0.7]), (100, [0.7, 0.8], [0.8, 0.75])):
        ev = {"test/accuracy": np.array(acc), "test/loss": np.array([1.0 - a for a in acc])}
        if with_val:
            ev.update({"val/accuracy": np.array([a - 0.1 for a in acc]), "val/loss": np.array(vloss)})
        h.eval_steps.append(step)
        h.evals.append(ev)
    h.train = {"loss": np.array([[2.0, 3.0], [1.5, 2.5]]), "accuracy": np.zeros((2, 2)), "lr": np.zeros((2, 2))}
    return h


def test_level_rows_take_the_last_evaluation_and_the_early_stop():
    rows = results.level_rows(3, "ticket", np.array([0.5, 0.25]), _history(True), start=20, end=100)
    assert [r["replicate"] for r in rows] == [0, 1]
    r0, r1 = rows
    assert (r0["level"], r0["kind"], r0["density"], r1["density"]) == (3, "ticket", 0.5, 0.25)
    assert (r0["test_accuracy"], r1["test_accuracy"]) == (0.7, 0.8)  # the last evaluation, not an earlier one
    assert r0["test_loss"] == pytest.approx(0.3) and r1["val_accuracy"] == pytest.approx(0.7)
    assert (r0["val_loss"], r1["val_loss"]) == (0.8, 0.75)
    assert (r0["train_loss"], r1["train_loss"]) == (1.5, 2.5)  # the last step's
    assert (r0["early_stop_step"], r1["early_stop_step"]) == (100, 50)
    assert (r0["early_stop_test_accuracy"], r1["early_stop_test_accuracy"]) == (0.7, 0.6)
    assert r1["early_stop_val_accuracy"] == pytest.approx(0.5) and r1["min_val_loss"] == 0.7
    assert (r0["start_step"], r0["end_step"], r0["steps"], r0["seconds"]) == (20, 100, 80, 12.346)
    assert list(results.to_frame(rows).columns[:len(results.COLUMNS)]) == results.COLUMNS


def test_level_rows_without_validation_have_nan_there():
    rows = results.level_rows(0, "ticket", np.array([1.0, 1.0]), _history(False), start=0, end=100)
    for r in rows:
        assert math.isnan(r["val_accuracy"]) and math.isnan(r["val_loss"]) and math.isnan(r["min_val_loss"])
        assert math.isnan(r["early_stop_step"]) and math.isnan(r["early_stop_test_accuracy"])
    assert rows[1]["test_accuracy"] == 0.8
    # no early stop, no winning-ticket verdict ("n/a"); matching (final accuracy) is still judged
    df = results.to_frame(rows + [dict(r, level=1, test_accuracy=r["test_accuracy"] + 0.01) for r in rows])
    table = results.summarize(df)
    assert pd.isna(table.loc[1, "winning_ticket"]) and bool(table.loc[1, "matching"])
    text = results.format_summary(table)
    assert text.splitlines()[-1].split()[-5:] == ["n/a", "n/a", "2", "n/a", "yes"]


def test_summary_prints_percentages_and_verdicts():
    df = _table({0: [(0.90, 0.95, 400), (0.92, 0.95, 400)], 1: [(0.91, 0.96, 300), (0.91, 0.96, 300)],
                 2: [(0.80, 0.90, 500), (0.80, 0.90, 500)]})
    text = results.format_summary(results.summarize(df))
    lines = text.splitlines()
    assert lines[0].split() == ["density", "test", "acc", "%", "(final)", "early-stop", "step", "early-stop", "acc", "%",
                                "replicates", "winning", "(vs", "dense)", "matching"]
    assert lines[1].split() == ["level"]
    assert lines[2].split() == ["0", "100.0%", "91.00", "±", "1.00", "400", "95.00", "2", "-", "-"]
    assert lines[3].split() == ["1", "80.0%", "91.00", "±", "0.00", "300", "96.00", "2", "yes", "yes"]
    assert lines[4].split() == ["2", "64.0%", "80.00", "±", "0.00", "500", "90.00", "2", "no", "no"]


def test_is_subset():
    old = {"a": np.array([True, True, False]), "b": np.array([True])}
    assert M.is_subset({"a": np.array([True, False, False]), "b": np.array([False])}, old)
    assert M.is_subset(old, old)
    assert not M.is_subset({"a": np.array([True, False, True]), "b": np.array([True])}, old)
    assert not M.is_subset({"a": np.array([False, False, False]), "b": np.array([True])}, {"a": old["a"], "b": np.array([False])})


def test_a_level_without_training_steps_has_no_train_loss_and_empty_tables_keep_the_columns():
    h = _history(True)
    h.train = {"loss": np.zeros((0, 0)), "accuracy": np.zeros((0, 0)), "lr": np.zeros((0, 0))}
    rows = results.level_rows(1, "ticket", np.array([0.8, 0.8]), h, start=100, end=100)
    assert all(math.isnan(r["train_loss"]) for r in rows) and rows[0]["steps"] == 0
    empty = results.to_frame([])
    assert list(empty.columns) == results.COLUMNS and len(empty) == 0


def test_verdict_columns_are_nullable_booleans_and_need_the_dense_level():
    s = results.summarize(_table({0: [(0.9, 0.95, 400)], 1: [(0.9, 0.96, 300)]}))
    assert str(s["winning_ticket"].dtype) == "boolean" and str(s["matching"].dtype) == "boolean"
    dense_only = results.summarize(_table({0: [(0.9, 0.95, 400), (0.91, 0.95, 400)]}))
    assert "winning_ticket" in dense_only and pd.isna(dense_only.loc[0, "winning_ticket"])
    no_dense = results.summarize(_table({1: [(0.9, 0.95, 400)], 2: [(0.8, 0.9, 500)]}))  # nothing to compare with
    assert "winning_ticket" not in no_dense and "matching" not in no_dense


def test_masks_given_as_numbers_come_back_boolean_and_density_of_nothing_is_one():
    w = {"a": {"kernel": np.array([3.0, 1.0, 2.0, 4.0], np.float32)}}
    w["a"]["bias"] = np.zeros(2, np.float32)
    given = {"a": {"kernel": np.array([1.0, 1.0, 0.0, 1.0], np.float32), "bias": np.ones(2, np.float32)}}
    mask = prune(w, given, PruningConfig(fraction=0.34, scope="global"), ["a/kernel"])
    out = np.asarray(mask["a"]["kernel"])
    assert out.dtype == bool and out.tolist() == [True, False, False, True]  # 1 of the 3 alive goes: the 1.0
    assert np.asarray(mask["a"]["bias"]).dtype == bool and np.asarray(mask["a"]["bias"]).all()  # not prunable: kept
    assert M.density(mask, []) == 1.0 and M.density(mask, ["a/kernel"]) == 0.5


def test_flatten_reads_frozen_dicts_too():
    import flax

    tree = {"a": {"kernel": np.ones(2), "sub": {"bias": np.zeros(1)}}}
    assert list(M.flatten(flax.core.freeze(tree))) == list(M.flatten(tree)) == ["a/kernel", "a/sub/bias"]


def test_rewinding_keeps_the_model_and_the_saved_batchnorm_statistics():
    """Stacked states for the next level carry the template's model function and schedule, and the
    BatchNorm statistics saved at the rewind point, not fresh ones."""
    from lth.lottery.rewind import rewind_weights, snapshot
    from lth.train.trainer import Trainer, replicate_keys

    from conftest import make_tiny_dataset

    ds = make_tiny_dataset()
    opt = OptimizerConfig(name="sgd", lr=0.1)
    tr = Trainer(build_model_mlp(), ds, make_optimizer(opt), make_schedule(opt, total_steps=5, steps_per_epoch=12), batch_size=50)
    keys = replicate_keys(0, 2)
    v = tr.init_variables(keys["init"])
    states = tr.create_states(v, jax.vmap(M.ones_like)(v["params"]))
    saved = jax.device_get(snapshot(states))
    saved["batch_stats"] = {"bn": {"mean": np.arange(6, dtype=np.float32).reshape(2, 3)}}
    saved["step"] = np.array([7, 7], np.int64)  # as a checkpoint may hold it
    out = rewind_weights(states, saved, states.mask, optimizer_state="reset")
    assert out.apply_fn is states.apply_fn and out.lr_fn is states.lr_fn and out.tx is states.tx
    assert out.step.dtype == jnp.int32 and out.step.tolist() == [7, 7]
    np.testing.assert_array_equal(np.asarray(out.batch_stats["bn"]["mean"]), saved["batch_stats"]["bn"]["mean"])


def build_model_mlp():
    from lth.models import build_model

    return build_model(ModelConfig(name="mlp", widths=[8]), 4)


# -- tickets against their controls -----------------------------------------------------------------

def _rows(kind, accs, es_accs, density=0.5):
    return [{"level": 1, "replicate": r, "kind": kind, "density": density, "test_accuracy": a,
             "early_stop_test_accuracy": e, "early_stop_step": 100} for r, (a, e) in enumerate(zip(accs, es_accs))]


def test_control_gap_is_paired_by_replicate():
    """gap = mean over replicates of ticket − control (paired: rows may come in any order), its
    population std, the early-stop gap; the ticket beats the control only when the early-stop gap
    exceeds the larger early-stop std (tests/test_control_verdicts.py)."""
    ticket = _rows("ticket", [0.90, 0.80], [0.88, 0.70])
    control = list(reversed(_rows("reinit", [0.85, 0.81], [0.80, 0.72], density=0.25)))
    c = results.compare_to_control(ticket, control)
    assert c["gap"] == pytest.approx(((0.90 - 0.85) + (0.80 - 0.81)) / 2)
    assert c["gap_std"] == pytest.approx(np.std([0.05, -0.01]))
    assert c["es_gap"] == pytest.approx(((0.88 - 0.80) + (0.70 - 0.72)) / 2)
    assert c["test_accuracy"] == pytest.approx(0.83) and c["test_accuracy_std"] == pytest.approx(0.02)
    assert c["early_stop_test_accuracy"] == pytest.approx(0.76) and c["density"] == 0.25
    assert c["es_margin"] == pytest.approx(0.09)  # the ticket's std of (0.88, 0.70) > the control's of (0.80, 0.72)
    assert c["beats"] is False and c["replicates"] == 2  # +0.03 is within the spread
    tie = results.compare_to_control(ticket, _rows("reinit", [0.90, 0.80], [0.88, 0.70]))
    assert tie["gap"] == 0 and tie["es_gap"] == 0 and tie["beats"] is False
    extra = results.compare_to_control(ticket[:1], control)  # only replicates present on both sides
    assert extra["replicates"] == 1 and extra["gap"] == pytest.approx(0.05)


def test_summary_table_has_each_controls_accuracy_gap_and_verdict_per_level():
    df = pd.DataFrame(_rows("ticket", [0.9, 0.9], [0.9, 0.9], 1.0) + [
        {**r, "level": 1} for r in _rows("ticket", [0.90, 0.80], [0.88, 0.70])] + _rows("reinit", [0.95, 0.90], [0.9, 0.9])
        + _rows("random_prune", [0.80, 0.70], [0.8, 0.7]))
    df.loc[:1, "level"] = 0
    t = results.summarize(df)
    assert list(t.index) == [0, 1]
    assert t.loc[1, "reinit_acc"] == pytest.approx(0.925) and t.loc[1, "gap_reinit"] == pytest.approx(-0.075)
    assert t.loc[1, "random_prune_acc"] == pytest.approx(0.75) and t.loc[1, "gap_random_prune"] == pytest.approx(0.10)
    assert bool(t.loc[1, "beats_random_prune"]) is False  # es gap +0.04 is within the ticket's std 0.09
    assert bool(t.loc[1, "beats_reinit"]) is False
    assert pd.isna(t.loc[0, "gap_reinit"]) and pd.isna(t.loc[0, "beats_reinit"]) and str(t["beats_reinit"].dtype) == "boolean"
    printed = results.format_summary(t)
    assert "-7.50" in printed and "+10.00" in printed and "92.50" in printed
    assert "gap_reinit" not in results.summarize(df[df.kind == "ticket"]).columns
    assert "gap_reinit" not in results.summarize(df, kind="reinit").columns


def test_diverged_members_are_marked_in_their_rows_and_counted_per_level():
    h = _history(True)
    assert [r["status"] for r in results.level_rows(1, "ticket", np.array([0.8, 0.8]), h, start=0, end=100)] == ["ok", "ok"]
    h.diverged = np.array([-1, 37])
    rows = results.level_rows(1, "ticket", np.array([0.8, 0.8]), h, start=0, end=100)
    assert [r["status"] for r in rows] == ["ok", "diverged"]
    assert math.isnan(rows[0]["diverged_step"]) and rows[1]["diverged_step"] == 37
    h.diverged = np.array([0, -1])  # step 0 is a step: diverged at the first update
    rows0 = results.level_rows(0, "ticket", np.array([1.0, 1.0]), h, start=0, end=100)
    assert [r["status"] for r in rows0] == ["diverged", "ok"] and rows0[0]["diverged_step"] == 0
    s = results.summarize(results.to_frame(rows0 + rows))
    assert list(s["diverged"]) == [1, 1]
    clean = results.summarize(results.to_frame(results.level_rows(0, "ticket", np.ones(2), _history(True), start=0, end=100)))
    assert "diverged" not in clean  # the column appears only when a member diverged
    old = [{k: v for k, v in r.items() if k not in ("status", "diverged_step")} for r in rows]  # rows written before
    df = results.to_frame(old)
    assert list(df.status) == ["ok", "ok"] and df.diverged_step.isna().all()
