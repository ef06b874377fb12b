"""A Hydra sweep's folder read back: one row per job, its overrides as columns.

A multirun (`python experiments/lottery.py -m ...`) writes `<sweep dir>/jobs/<n>.json` per job
(`experiments/common.py:record_job`: its overrides, status and run directory or error) beside
Hydra's `multirun.yaml`; the runs themselves live in their content-hashed run directories.
`sweep_table(sweep_dir)` joins the two: per job, its number, status, one column per override key
(`pruning.fraction`, `seed`, ...), the run directory, and the final level's ticket outcome read
from the run (`lth.api.load_run`): level, density, test accuracy (mean and std over replicates),
early-stop test accuracy, and the dense level 0's test accuracy. `scripts/sweep_summary.py` prints
it; `lth.load_runs(sweep_dir)` reads every finished job's results (`lth.api.find_runs`).
"""

from __future__ import annotations

import math
import os
from typing import Any

import pandas as pd

from lth.runs.sweep_dirs import is_sweep_dir, read_jobs, run_dirs  # noqa: F401  (one place; names kept here)

OUTCOME_COLUMNS = ["level", "density", "test_accuracy", "test_accuracy_std", "early_stop_test_accuracy",
                   "dense_test_accuracy", "replicates"]


def parse_override(text: str) -> tuple[str, str]:
    """`key=value` (also `+key=value`, `~key`) -> (key, value), as Hydra writes it in the job record."""
    key, _, value = text.partition("=")
    return key.lstrip("+~"), value


def sweep_table(sweep_dir: str, *, all_overrides: bool = False) -> pd.DataFrame:
    """One row per job of the sweep in `sweep_dir`: `job`, `status`, the overrides (by default only
    those that differ between jobs; `all_overrides=True`: every one), `run_dir` (or `error`), and
    the final level's ticket outcome (`OUTCOME_COLUMNS`; empty for a job that did not finish).
    FileNotFoundError when `sweep_dir` holds no job records."""
    if not os.path.isdir(sweep_dir):
        raise FileNotFoundError(f"{sweep_dir}: no such directory (expected a sweep folder, runs/multirun/<date>_<time>)")
    jobs = read_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"{sweep_dir}: no job records (jobs/*.json): not the folder of an lth multirun")
    parsed = [dict(parse_override(o) for o in r.get("overrides", [])) for r in jobs]
    keys: list[str] = []
    for p in parsed:
        keys.extend(k for k in p if k not in keys)
    if not all_overrides and len(jobs) > 1:
        keys = [k for k in keys if len({p.get(k) for p in parsed}) > 1]
    rows = []
    for r, p in zip(jobs, parsed):
        row: dict[str, Any] = {"job": r.get("job"), "status": r.get("status")}
        row.update({k: p.get(k) for k in keys})
        row.update(_outcome(r))
        rows.append(row)
    df = pd.DataFrame(rows)
    for c in ("level", "replicates"):  # integers, empty where a job has no results
        df[c] = df[c].astype("Int64")
    return df


def _outcome(record: dict) -> dict[str, Any]:
    """The final level's ticket outcome of a job's run, or its error."""
    out: dict[str, Any] = {c: math.nan for c in OUTCOME_COLUMNS}
    out["run_dir"] = record.get("run_dir") or ""
    out["error"] = (record.get("error") or "").splitlines()[0] if record.get("error") else ""
    d = record.get("run_dir")
    if record.get("status") != "done" or not d:
        return out
    from lth.runs.reading import load_run

    try:
        results = load_run(d).results
    except (FileNotFoundError, ValueError) as e:
        out["error"] = f"{d}: {e}"
        return out
    if results is None or results.empty or "level" not in results:
        return out  # an instability analysis or a compression: no lottery levels
    tickets = results[results["kind"] == "ticket"] if "kind" in results else results
    last = tickets[tickets["level"] == tickets["level"].max()]
    dense = tickets[tickets["level"] == 0]
    out.update(level=int(last["level"].iloc[0]), density=float(last["density"].mean()),
               test_accuracy=float(last["test_accuracy"].mean()),
               test_accuracy_std=float(last["test_accuracy"].std(ddof=0)), replicates=int(len(last)),
               early_stop_test_accuracy=float(last["early_stop_test_accuracy"].mean())
               if "early_stop_test_accuracy" in last else math.nan,
               dense_test_accuracy=float(dense["test_accuracy"].mean()) if len(dense) else math.nan)
    return out
