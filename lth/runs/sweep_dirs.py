"""A sweep's folder on disk: its job records (`jobs/<n>.json`) and the run directories of its finished jobs.

Read by `lth.runs.reading` (a sweep's folder given where runs are expected) and by the sweep
tools above it (`lth.integrations.sweeps`, `lth.integrations.sweep_callbacks`).
"""

from __future__ import annotations

import json
import os
from typing import Any

DONE = "done"


def read_jobs(sweep_dir: str) -> list[dict[str, Any]]:
    """The job records of a sweep (`<sweep_dir>/jobs/*.json`), by job number; an unreadable record
    becomes a job with status `unreadable` (reported, not skipped)."""
    folder = os.path.join(sweep_dir, "jobs")
    if not os.path.isdir(folder):
        return []
    out = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".json"):
            continue
        path = os.path.join(folder, name)
        try:
            with open(path) as f:
                out.append(json.load(f))
        except (OSError, ValueError) as e:
            out.append({"job": name[:-5], "overrides": [], "status": "unreadable", "error": f"{path}: {e}"})
    return sorted(out, key=lambda r: int(r["job"]) if str(r["job"]).isdigit() else 10**9)


def is_sweep_dir(path: str) -> bool:
    """A folder written by a Hydra multirun of lth: it holds `jobs/*.json` job records."""
    jobs = os.path.join(path, "jobs")
    return os.path.isdir(jobs) and any(n.endswith(".json") for n in os.listdir(jobs))


def run_dirs(sweep_dir: str) -> list[str]:
    """The run directories of a sweep's finished jobs (status `done`), in job order, each once."""
    out: list[str] = []
    for r in read_jobs(sweep_dir):
        d = r.get("run_dir")
        if r.get("status") == "done" and d and is_run_dir(d) and d not in out:
            out.append(d)
    return out


def is_run_dir(path: str) -> bool:
    """A lottery run or a branch (results.csv), an instability analysis (instability.csv) or a
    compression (report.csv)."""
    return any(os.path.isfile(os.path.join(path, f)) for f in ("results.csv", "instability.csv", "report.csv"))


IN_PROGRESS = "in progress: re-run the command to resume"


def is_unfinished_run(path: str) -> bool:
    """A lottery run started but with no level finished yet (interrupted, or still training): its
    config.yaml beside its lock file, summary.json or a level_NN/ folder, and no results.csv (a
    Hydra `.hydra/` folder has a config.yaml and none of these)."""
    if is_run_dir(path) or not os.path.isfile(os.path.join(path, "config.yaml")):
        return False
    return any(n in (".lock", "summary.json") or n.startswith("level_") for n in os.listdir(path))
