"""Controls trained beside the tickets by the level loop (lth.lottery.members, lth.lottery): every member
from the ticket's step, each control differing from the ticket in its one thing, controls trained
with the tickets giving what they give trained apart, extended runs training only missing members,
and W&B recording each kind apart."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from lth.lottery import levels as lottery
from lth.sparsity import masks as M
from lth.runs import results
from lth.config.schema import ConfigError, PruningConfig, RewindConfig, TrainConfig
from lth.runs.run_dir import RunDir

from conftest import mnist1d_config
from test_rewind_modes import assert_trees_equal, masked, on_disk, spy  # noqa: F401 (fixture)

ALL = ["reinit", "random_prune", "random_prune_global"]


def test_controls_start_beside_the_ticket_as_defined(tmp_path, spy):
    """Level 1 trains tickets + the three controls as one stacked program (8 members), all from
    step k, each control differing from the ticket in exactly its one thing."""
    cfg = mnist1d_config(tmp_path, controls=list(ALL), rewind=RewindConfig(point="20it", optimizer_state="rewound"),
                         pruning=PruningConfig(fraction=0.5, scope="layerwise"))
    out = lottery.run(cfg, echo=lambda _: None)
    start = spy[1]["states"]
    assert jax.tree.leaves(start.params)[0].shape[0] == 8 and (np.asarray(start.step) == 20).all()
    group = {kind: M.unstack(jax.tree.map(lambda x: x[2 * i: 2 * i + 2], start), 2) for i, kind in enumerate(["ticket"] + ALL)}
    saved = on_disk(out.run_dir, "rewind")
    theta_k = M.unstack(saved["params"], 2)
    opt_k = M.unstack(saved["opt_state"], 2)
    theta_0 = M.unstack(jax.device_get(spy[0]["states"].params), 2)
    paths = M.prunable_paths(theta_0[0], ["kernel$"])
    for r in range(2):
        ticket, reinit, rp, rpg = (group[k][r] for k in ["ticket"] + ALL)
        tc = {p: int(np.asarray(v).sum()) for p, v in M.flatten(ticket.mask).items() if p in paths}
        # reinit: the ticket's mask, fresh weights of the same initialiser, fresh optimizer state.
        assert_trees_equal(reinit.mask, ticket.mask)
        for p in paths:
            w, w0 = M.flatten(reinit.params)[p], M.flatten(theta_0[r])[p]
            alive = np.asarray(M.flatten(reinit.mask)[p], bool)
            assert not np.allclose(w[alive], w0[alive])
            assert (w[~alive] == 0).all()
            assert np.std(w[alive]) == pytest.approx(np.std(w0), rel=0.15)  # same initialiser's scale
        assert all(not np.asarray(x).any() for x in jax.tree.leaves(reinit.opt_state.inner_state) if np.ndim(x) > 1)
        # The others follow rewind.optimizer_state (here: rewound to the state saved at k).
        assert_trees_equal(ticket.opt_state, opt_k[r])
        assert_trees_equal(rp.opt_state, opt_k[r])
        # random_prune: the ticket's count in every tensor, weights θk.
        rc = {p: int(np.asarray(v).sum()) for p, v in M.flatten(rp.mask).items() if p in paths}
        assert rc == tc and not np.array_equal(M.flatten(rp.mask)[paths[0]], M.flatten(ticket.mask)[paths[0]])
        assert_trees_equal(rp.params, masked(theta_k[r], rp.mask))
        # random_prune_global: the ticket's total count, weights θk.
        gc = {p: int(np.asarray(v).sum()) for p, v in M.flatten(rpg.mask).items() if p in paths}
        assert sum(gc.values()) == sum(tc.values()) and gc != tc
        assert_trees_equal(rpg.params, masked(theta_k[r], rpg.mask))
    # Every control trains on its ticket's batches: member i of each kind has replicate i's data and
    # augmentation keys (and the replicates' keys differ, so this is not true of any keys).
    keys = spy[1]["keys"]
    for name in ("data", "aug"):
        k = np.asarray(keys[name])
        assert k.shape[0] == 8 and not np.array_equal(k[0], k[1])
        for i, kind in enumerate(ALL, start=1):
            np.testing.assert_array_equal(k[2 * i: 2 * i + 2], k[0:2], err_msg=f"{kind}'s {name} keys")
    # Results: every kind's rows at every level >= 1 with the ticket's densities (global: same total).
    df = out.results
    t = df[(df.level == 1) & (df.kind == "ticket")].set_index("replicate")
    for kind in ALL:
        c = df[(df.level == 1) & (df.kind == kind)].set_index("replicate")
        assert len(c) == 2 and np.array_equal(c.density.to_numpy(), t.density.to_numpy())
        assert (c.start_step == 20).all() and (c.end_step == 80).all()
    assert set(df[df.level == 0].kind) == {"ticket"}
    s = json.load(open(os.path.join(out.run_dir, "summary.json")))["levels"]["1"]
    for kind in ALL:
        gap = (t.test_accuracy - df[(df.level == 1) & (df.kind == kind)].set_index("replicate").test_accuracy).mean()
        assert s["controls"][kind]["gap"] == pytest.approx(gap, abs=1e-12)
        assert s["controls"][kind]["beats"] == table_beats(df, kind)
    per_tensor = {k: json.load(open(os.path.join(RunDir(out.run_dir, "").member_dir(1, k), "result.json")))["summary"]["tensor_densities"]
                  for k in ("ticket", "random_prune")}
    assert per_tensor["ticket"] == per_tensor["random_prune"]
    table = out.summary
    assert {"reinit_acc", "gap_reinit", "es_gap_reinit", "beats_reinit", "gap_random_prune_global"} <= set(table.columns)
    assert table.loc[1, "gap_reinit"] == pytest.approx(s["controls"]["reinit"]["gap"])
    printed = results.format_summary(table)
    assert "reinit gap %" in printed and f"{100 * table.loc[1, 'gap_reinit']:+.2f}" in printed
    assert "beats reinit" in printed and "winning (vs dense)" in printed


def table_beats(df, kind):
    """The beats verdict at level 1 by hand (lth.runs.results): es gap > larger population std, step no later."""
    t, c = (df[(df.level == 1) & (df.kind == k)].sort_values("replicate") for k in ("ticket", kind))
    te, ce = t.early_stop_test_accuracy.to_numpy(), c.early_stop_test_accuracy.to_numpy()
    return bool((te - ce).mean() > max(te.std(), ce.std()) and t.early_stop_step.mean() <= c.early_stop_step.mean())


@pytest.mark.parametrize("replicates_as", [pytest.param("loop", marks=pytest.mark.slow), "vmap"])  # loop: 40 s here
def test_controls_together_equal_controls_trained_later_alone(tmp_path, spy, replicates_as):
    """A run with both controls from the start and a run extended with one control, then the
    other, give the same rows; each extension trains only the members it lacks (2 = the new
    control's replicates), leaving what is done untouched. With members looped inside the step
    the rows are identical bit for bit; vmapped (6 members against 2), matrix products of another
    batch size round differently: the same to 1e-5."""
    base = dict(levels=2, rewind=RewindConfig(point="20it"),
                train=TrainConfig(duration="80it", batch_size=100, eval_every="20it", replicates_as=replicates_as))
    together = lottery.run(mnist1d_config(tmp_path / "a", controls=["reinit", "random_prune"], **base), echo=lambda _: None)
    cfg = mnist1d_config(tmp_path / "b", **base)
    alone = lottery.run(cfg, echo=lambda _: None)
    ticket_result = os.path.join(RunDir(alone.run_dir, "").level_dir(2), "result.json")
    before = open(ticket_result).read()
    n0 = len(spy)
    lines = []
    lottery.run(dataclasses.replace(cfg, controls=["random_prune"]), echo=lines.append)
    later = lottery.run(dataclasses.replace(cfg, controls=["random_prune", "reinit"]), echo=lambda _: None)
    assert later.run_dir == alone.run_dir  # controls are not part of the run's identity
    # reinit draws afresh at every level: its level-1 and level-2 weights differ where both are alive.
    r1, r2 = (M.flatten(jax.tree.map(lambda x: x[2:4], spy[i]["states"].params))["fc1/kernel"] for i in (1, 2))
    both = (r1 != 0) & (r2 != 0)
    assert both.any() and not np.allclose(r1[both], r2[both])
    members = [jax.tree.leaves(c["states"].params)[0].shape[0] for c in spy[n0:]]
    assert members == [2, 2, 2, 2]  # levels 1 and 2, one new control each time
    assert open(ticket_result).read() == before
    assert sum("done already" in line for line in lines) == 1  # level 0
    cols = ["level", "replicate", "kind", "density", "test_accuracy", "test_loss", "val_loss", "train_loss",
            "early_stop_step", "early_stop_test_accuracy"]
    a = together.results[cols].sort_values(["level", "kind", "replicate"]).reset_index(drop=True)
    b = later.results[cols].sort_values(["level", "kind", "replicate"]).reset_index(drop=True)
    assert len(a) == 2 + 2 * 3 * 2
    import pandas as pd

    pd.testing.assert_frame_equal(a, b, check_exact=replicates_as == "loop", rtol=1e-5)


def test_bad_controls_are_refused_before_anything_is_written(tmp_path):
    for controls, match in ((["shuffle"], r"controls\[0\]='shuffle' is not one of reinit, random_prune"),
                            (["reinit", "reinit"], "listed twice")):
        with pytest.raises(ConfigError, match=match):
            lottery.run(mnist1d_config(tmp_path, controls=controls), echo=lambda _: None)
    assert not os.path.exists(tmp_path / "runs")



@pytest.mark.slow  # ~20 s of W&B offline runs
def test_wandb_records_each_kind_apart_and_the_gaps(tmp_path):
    """Offline W&B, read back: the level-1 run logs the tickets unprefixed and each control under
    its name, per replicate, equal to results.csv; the level summary and the summary run hold the
    ticket-minus-control gap."""
    import glob

    from test_lottery import wandb_records

    cfg = mnist1d_config(tmp_path, controls=["reinit"])
    cfg.logger.wandb.mode = "offline"
    out = lottery.run(cfg, echo=lambda _: None)
    df = out.results
    runs = {}
    for f in sorted(glob.glob(os.path.join(out.run_dir, "wandb", "offline-run-*", "*.wandb"))):
        recs = wandb_records(f)
        run = next(r["run"] for r in recs if r["type"] == "run")
        runs[run["display_name"][-3:]] = [r for r in recs if r["type"] in ("history", "summary")]
    level1 = [r["history"]["item"] for r in runs["L01"] if r["type"] == "history"]
    last = [h for h in level1 if "test/accuracy" in h][-1]
    for kind, prefix in (("ticket", ""), ("reinit", "reinit/")):
        rows = df[(df.level == 1) & (df.kind == kind)].sort_values("replicate")
        for r, acc in enumerate(rows.test_accuracy):
            assert last[f"{prefix}test/accuracy_r{r}"] == pytest.approx(acc, abs=1e-7)
    assert any("reinit/train/loss" in h for h in level1)
    summary = {}
    for r in runs["L01"]:
        if r["type"] == "summary":
            summary.update(r["summary"].get("update", {}))
    gap = out.summary.loc[1, "gap_reinit"]
    assert summary["reinit/gap"] == pytest.approx(gap) and summary["reinit/beats"] == bool(out.summary.loc[1, "beats_reinit"])
    per_level = {h["level"]: h for h in (r["history"]["item"] for r in runs["ary"] if r["type"] == "history") if "level" in h}
    assert per_level[1]["gap_reinit"] == pytest.approx(gap)
