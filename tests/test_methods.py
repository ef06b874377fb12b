"""Pruning methods, schedules, granularities and ablations (lth.sparsity.methods, lth.sparsity.pruning,
lth.sparsity.structured, lth.sparsity.ablations): exact counts, whole units, kept densities, refusals, and a small
end-to-end run of every method."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pandas as pd
import pytest

from conftest import assert_refused_before_writing, small_config
from lth.sparsity import masks as M, pruning
from lth.config.schema import GradualConfig, ModelConfig, PruningConfig, TrainConfig


# -- refusals ----------------------------------------------------------------------------------
@pytest.mark.parametrize("changes, pruning_changes, words", [
    ({}, dict(method="nonsense"), ["pruning.method", "synflow", "magnitude_at_init"]),
    ({}, dict(schedule="sometimes"), ["pruning.schedule", "oneshot", "gradual"]),
    ({}, dict(granularity="row"), ["pruning.granularity", "neuron", "channel"]),
    ({}, dict(ablation="flip"), ["pruning.ablation", "shuffle_layerwise", "invert"]),
    ({"levels": 1}, dict(schedule="oneshot"), ["pruning.target_density", "oneshot"]),
    ({"levels": 1}, dict(schedule="oneshot", target_density=1.0), ["pruning.target_density", "(0, 1)"]),
    ({"levels": 3}, dict(schedule="oneshot", target_density=0.1), ["levels=3", "levels=1"]),
    ({"levels": 2}, dict(schedule="gradual", target_density=0.1), ["levels=2", "levels=0"]),
    ({"levels": 0}, dict(schedule="gradual", target_density=0.1, method="snip"), ["pruning.method", "gradual"]),
    ({"levels": 0}, dict(schedule="gradual", target_density=0.5, gradual=GradualConfig(initial_density=0.4)),
     ["pruning.gradual.initial_density"]),
    ({"levels": 0}, dict(schedule="gradual", target_density=0.2, gradual=GradualConfig(every="0it")), ["pruning.gradual.every"]),
    ({"levels": 0}, dict(schedule="gradual", target_density=0.2, gradual=GradualConfig(end="5xx")), ["pruning.gradual.end"]),
    ({}, dict(target_density=0.3), ["pruning.target_density", "iterative"]),
    ({}, dict(ablation="shuffle_layerwise", granularity="neuron"), ["shuffle_layerwise", "granularity"]),
    ({}, dict(score_batches=0), ["pruning.score_batches"]),
    ({}, dict(synflow_rounds=0), ["pruning.synflow_rounds"]),
    ({}, dict(grasp_temperature=0.0), ["pruning.grasp_temperature"]),
    ({}, dict(granularity="channel"), ["pruning.granularity=channel", "convolution"]),  # an MLP has no convolution
    ({"levels": 0}, dict(schedule="gradual", target_density=0.2, gradual=GradualConfig(begin="90it", end="100it")),
     ["pruning.gradual.end", "train.duration (100 steps)"]),  # the final density must be trained
])
def test_bad_pruning_settings_are_refused_before_anything_is_written(tmp_path, changes, pruning_changes, words):
    assert_refused_before_writing(tmp_path, changes, pruning_changes, words)


# -- end to end --------------------------------------------------------------------------------
def _run(tmp_path, **pruning_changes):
    from lth.lottery import levels as lottery

    levels = pruning_changes.pop("levels", 2)
    cfg = small_config(tmp_path, levels=levels, model=ModelConfig(name="mlp", widths=[32, 32]),
                       train=TrainConfig(duration="40it", batch_size=100, eval_every="20it"))
    cfg = dataclasses.replace(cfg, pruning=dataclasses.replace(cfg.pruning, **pruning_changes))
    out = lottery.run(cfg, echo=lambda s: None)
    return out, pd.read_csv(os.path.join(out.run_dir, "results.csv"))


METHODS = ["magnitude", "random", "snip", "grasp", "synflow", "magnitude_at_init"]


@pytest.mark.slow  # ~55 s; each method is unit-tested and the one-shot / neuron runs go end to end by default
def test_every_method_end_to_end(tmp_path):
    """Each method, 2 levels of 50% (global): the exact density ladder, distinct masks, and for the
    pruning-at-init methods a level-2 mask that is the one-shot prune of the dense θk to IMP's
    level-2 count (checked exactly for magnitude_at_init), not a pruning of level 1's mask."""
    from lth.runs import checkpoints

    total = 40 * 32 + 32 * 32 + 32 * 10
    masks = {}
    for method in METHODS:
        out, df = _run(tmp_path / method, method=method, fraction=0.5, scope="global", synflow_rounds=5)
        for level, group in df.groupby("level"):
            alive = total
            for _ in range(level):
                alive -= pruning.n_to_prune(0.5, alive)
            assert np.allclose(group.density, alive / total), (method, level, group.density.tolist())
        assert np.isfinite(df.train_loss).all() and df.test_accuracy.notna().all(), method
        masks[method] = M.flatten(checkpoints.restore(os.path.join(out.run_dir, "level_02", "mask"), None))
        if method == "magnitude_at_init":
            saved = checkpoints.restore(os.path.join(out.run_dir, "rewind"), None)
            cfg = PruningConfig(fraction=0.5, scope="global")
            for r in range(2):
                theta = M.unflatten({p: np.asarray(v)[r] for p, v in M.flatten(saved["params"]).items()})
                paths = M.prunable_paths(theta, ["kernel$"])
                ones = M.ones_like(theta)
                want = pruning.prune_to(pruning.magnitudes(theta), ones, cfg, paths, pruning.ladder_counts(ones, cfg, paths, 2))
                for p, w in M.flatten(want).items():
                    assert np.array_equal(masks[method][p][r], np.asarray(w)), p
    for a in METHODS:
        for b in METHODS:
            if a < b:
                assert any(not np.array_equal(masks[a][p], masks[b][p]) for p in masks[a]), (a, b)


def test_oneshot_and_reinit_ablation_end_to_end(tmp_path):
    _, df = _run(tmp_path / "oneshot", schedule="oneshot", target_density=0.1, levels=1)
    assert df[df.level == 1].density.tolist() == pytest.approx([0.1] * 2, abs=2e-3)
    _, d = _run(tmp_path / "reinit", method="snip", ablation="reinit", fraction=0.5, levels=1)  # (shuffle, invert: test_pruning)
    assert d[d.level == 1].density.tolist() == pytest.approx([0.5] * 2, abs=1e-3)


def test_neuron_granularity_end_to_end(tmp_path):
    from lth.runs import checkpoints

    out, df = _run(tmp_path, granularity="neuron", fraction=0.5, scope="layerwise", levels=1)
    mask = M.flatten(checkpoints.restore(os.path.join(out.run_dir, "level_01", "mask"), None))
    for p in ("fc1/kernel", "fc2/kernel"):
        m = np.asarray(mask[p])  # stacked (R, in, out)
        assert np.array_equal(m.all(axis=1), m.any(axis=1)) and (m.all(axis=1).sum(axis=1) == 16).all()
        assert np.array_equal(np.asarray(mask[p.replace("kernel", "bias")]), m.all(axis=1))
    # FLOPs (MACs per example): dense 40·32 + 32·32 + 32·10; after removing half the units of fc1
    # and fc2, fc1 keeps 40·16, fc2 16·16 (its inputs from fc1's dead units are dead too), head 16·10
    assert df[df.level == 0].flops.tolist() == [2624, 2624]
    assert df[df.level == 1].flops.tolist() == [40 * 16 + 16 * 16 + 16 * 10] * 2
    assert df[df.level == 1].flops_fraction.tolist() == pytest.approx([1056 / 2624] * 2)
    final = M.flatten(checkpoints.restore(os.path.join(out.run_dir, "level_01", "final"), None)["params"])
    assert (np.asarray(final["fc1/bias"])[~np.asarray(mask["fc1/bias"])] == 0).all()  # removed units stay removed
    # a branch of the structured ticket (its masks, biases and all, read from disk) reproduces it
    from lth.lottery import branch
    from lth.config.schema import BranchConfig

    cfg = dataclasses.replace(out_cfg(out), branch=BranchConfig(source=out.run_dir, levels=[1]),
                              paths=dataclasses.replace(out_cfg(out).paths, runs_dir=str(tmp_path / "branches")))
    res = branch.run(cfg, echo=lambda _: None)
    src = df[df.level == 1].sort_values("replicate")
    got = res.results.sort_values("replicate")
    for col in ("density", "test_accuracy", "test_loss"):
        np.testing.assert_array_equal(got[col].to_numpy(), src[col].to_numpy(), err_msg=col)


def out_cfg(out):
    """The config a finished run was made with (its config.yaml)."""
    from omegaconf import OmegaConf

    from lth.config.schema import from_dict

    return from_dict(OmegaConf.to_container(OmegaConf.load(os.path.join(out.run_dir, "config.yaml"))))


def test_gradual_end_to_end_ends_at_the_target_and_early_stops_after_pruning(tmp_path):
    from lth.runs import checkpoints
    from lth.config.schema import GradualConfig

    out, df = _run(tmp_path, schedule="gradual", target_density=0.2, levels=0,
                   gradual=GradualConfig(begin="0it", end="30it", every="5it"))
    total = 40 * 32 + 32 * 32 + 32 * 10  # global: one group of every kernel
    assert df.density.tolist() == pytest.approx([int(0.2 * total + 0.5) / total] * 2, abs=1e-12)
    assert (df.early_stop_step == 40).all()  # of the evaluations at 20 and 40, only 40 saw the final mask
    final = M.flatten(checkpoints.restore(os.path.join(out.run_dir, "level_00", "final"), None)["params"])
    mask = M.flatten(checkpoints.restore(os.path.join(out.run_dir, "level_00", "mask"), None))
    for p in ("fc1/kernel", "fc2/kernel", "head/kernel"):
        assert (np.asarray(final[p])[~np.asarray(mask[p])] == 0).all()
