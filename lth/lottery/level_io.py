"""A lottery run's levels on disk: reading a finished level's members back (`restore_members`, `_read_done`, the
`_Sources` a level starts from), writing a level's members and result rows (`_write_members`,
`_member_result`), and the run's tables (`_write_tables`, `_check_tables`; `_finished_beyond`: levels an
earlier run finished beyond the ones asked for). The level loop (`lth.lottery.levels`) decides what to
train; this module only moves results between memory and the run directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np
import pandas as pd

from lth.sparsity import dynamic, flops, masks as M
from lth.sparsity.gradual import GradualPruning
from lth.runs import checkpoints, results, writer
from lth.lottery import controls as C, members
from lth.lottery import replicates as REP
from lth.sparsity import structured
from lth.runs.run_dir import RunDir, write_atomic, write_json
from lth.train.trainer import stacked_density
from lth.lottery.summaries import _kind_summary, _level_summary


class _Sources:
    """What later levels start from, read from disk only when a level has something to train: the
    states at the rewind point and each finished level's ticket mask and final weights (all the
    replicates on disk; level 0 and the rewind point from `rd0`, the shared dense level)."""

    def __init__(self, rd: RunDir, rd0: RunDir, template):
        self.rd, self.rd0, self.template = rd, rd0, template
        self.saved = None  # host tree of the states at the rewind point
        self.levels: dict[int, dict[str, Any]] = {}  # level -> {"mask", "params", "batch_stats"}

    def rewind_point(self):
        if self.saved is None:
            n = REP.count(_read_result(self.rd0, 0, "ticket"))
            self.saved = checkpoints.restore(self.rd0.file("rewind"), REP.template(_one(self.template), n))
        return self.saved

    def level(self, level: int) -> dict[str, Any]:
        if level not in self.levels:
            self.levels = {level: restore_members(self.rd0 if level == 0 else self.rd, level, "ticket", self.template)}
        return self.levels[level]

    def keep(self, level: int, members: dict[str, Any]) -> None:
        self.levels = {level: members}


def _one(template):
    """One member's tree of a stacked template."""
    return jax.tree.map(lambda x: np.asarray(x)[0], template)


def restore_members(rd: RunDir, level: int, kind: str, template) -> dict[str, Any]:
    """{"mask", "params", "batch_stats"} (stacked, host) of a finished level's members of one kind:
    all the replicates it holds (`template`: stacked states of any number of members)."""
    d = rd.member_dir(level, kind)
    t = REP.template(_one(template), REP.count(_read_result(rd, level, kind)))
    mask = checkpoints.restore(os.path.join(d, "mask"), jax.tree.map(lambda p: np.zeros(np.shape(p), bool), t["params"]))
    final = checkpoints.restore(os.path.join(d, "final"), {"params": t["params"], "batch_stats": t["batch_stats"]})
    return {"mask": mask, **final}


def _host_members(host) -> dict[str, Any]:
    return {"mask": host.mask, "params": host.params, "batch_stats": host.batch_stats}


def _finished_beyond(rd: RunDir, levels: int, replicates: int, rows: list, summary: dict) -> int:
    """Add to `rows` and `summary` the levels after `levels` finished on disk by an earlier run with
    more levels (a re-run with fewer levels must not drop them from the tables); returns how many."""
    level = levels + 1
    while rd.level_done(level, "ticket"):
        done = {kind: REP.view(_read_result(rd, level, kind), replicates, _kind_summary)
                for kind in ["ticket", *C.CONTROLS] if rd.level_done(level, kind)}
        rows.extend(r for kind in done for r in done[kind]["rows"])
        summary["levels"][str(level)] = _level_summary(done)
        level += 1
    return level - levels - 1


def _read_done(rd: RunDir, level: int, kind: str, echo) -> dict[str, Any] | None:
    """A finished level's result.json (its "done" mark), or None when the level is not done. One
    that does not parse (a disk fault: lth writes it atomically) is reported and moved aside to
    `result.json.corrupt-<time>`, and the level counts as not done, so it is trained again."""
    if not rd.level_done(level, kind):
        return None
    try:
        res = _read_result(rd, level, kind)
        if not isinstance(res, dict) or not isinstance(res.get("rows"), list) or "summary" not in res:
            raise ValueError("rows or summary missing")
        return res
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        import time

        path = os.path.join(rd.member_dir(level, kind), "result.json")
        aside = f"{path}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
        if writer.primary():  # the other processes of a multi-process run only read (lth.runs.writer)
            os.replace(path, aside)
        echo(f"level {level} ({kind}): {path} is corrupt ({e}); moved to {aside}, the level is trained again")
        return None


def _read_result(rd: RunDir, level: int, kind: str) -> dict[str, Any]:
    with open(os.path.join(rd.member_dir(level, kind), "result.json")) as f:
        return json.load(f)


def _member_result(level: int, kind: str, host, hist, ctx, start: int, end: int, *, first: int = 0) -> dict[str, Any]:
    """One kind's result.json for a trained level (replicates `first`, `first` + 1, ...)."""
    paths = ctx.paths
    dens = stacked_density(host.mask, paths)
    n = len(dens)
    level_rows = results.level_rows(level, kind, dens, _pruned_part(hist, ctx, level), start=start, end=end, first=first,
                                    flops=flops.member_flops(ctx.trainer.model, ctx.trainer.dataset.input_shape, host))
    dyn = getattr(ctx.trainer, "mask_update", None)
    if isinstance(dyn, dynamic.DynamicSparse):  # results.csv's mask_turnover: against the starting mask
        start_masks = dynamic.initial_masks(dyn, host.mask, ctx.cfg.seed, range(first, first + n))
        for row, m0, m in zip(level_rows, M.unstack(start_masks, n), M.unstack(host.mask, n)):
            row["mask_turnover"] = dyn.turnover(m0, m)
    per_tensor = {p: [M.tensor_densities(m, [p])[p] for m in M.unstack(host.mask, n)] for p in paths}
    result = {
        "rows": level_rows, "summary": _kind_summary(level_rows, per_tensor),
        "history": {"eval_steps": hist.eval_steps, "evals": [{k2: v.tolist() for k2, v in e.items()} for e in hist.evals]},
    }
    if ctx.cfg.pruning.granularity in ("neuron", "channel"):
        reports = [structured.report(m, ctx.prune_paths) for m in M.unstack(host.mask, n)]
        result["summary"]["structured"] = {key: {p: [r[key][p] for r in reports] for p in reports[0][key]}
                                           for key in ("alive_units", "dead_batchnorm_channels")}
    return result


def _write_members(d: str, members_, result: dict[str, Any], suffix: str = "") -> None:
    """Write one kind's mask, final weights ({"mask", "params", "batch_stats"}), then result.json
    (each name + `suffix`) into `d`."""
    checkpoints.save(os.path.join(d, "mask" + suffix), members_["mask"])
    checkpoints.save(os.path.join(d, "final" + suffix), {"params": members_["params"], "batch_stats": members_["batch_stats"]})
    write_json(os.path.join(d, "result.json" + suffix), result)


def _pruned_part(hist, ctx, level: int):
    """The history early stopping looks at: all of it, except under gradual pruning, where only the
    evaluations from the end of pruning on count (earlier ones saw a denser network)."""
    gradual_plan = getattr(ctx.trainer, "mask_update", None)
    if level != 0 or not isinstance(gradual_plan, GradualPruning):  # dynamic training: one density throughout
        return hist
    keep = [i for i, s in enumerate(hist.eval_steps) if s >= gradual_plan.end]
    return dataclasses.replace(hist, eval_steps=[hist.eval_steps[i] for i in keep], evals=[hist.evals[i] for i in keep])


def _check_tables(rd: RunDir, echo) -> None:
    """results.csv and summary.json are rebuilt from the levels' files at every level; one that
    no longer reads (a disk fault, an editor) is reported here, before it is rebuilt."""
    for name, read in (("results.csv", pd.read_csv), ("summary.json", lambda p: json.load(open(p)))):
        path = rd.file(name)
        if os.path.exists(path):
            try:
                read(path)
            except Exception as e:  # noqa: BLE001 - any failure to read is what is reported
                echo(f"{path} does not read ({type(e).__name__}: {e}); it is rebuilt from the levels' files")


def _write_tables(rd: RunDir, rows, summary) -> None:
    df = results.to_frame(rows)
    write_atomic(rd.file("results.csv"), df.to_csv(index=False))
    table = results.summarize(df)
    summary = dict(summary)
    summary["outcome"] = json.loads(table.reset_index().to_json(orient="records"))
    write_json(rd.file("summary.json"), summary)
