"""The end of a Hydra multirun: one table of every job's status, and the sweep's exit status.

`experiments/common.py` records each job of a sweep in `<sweep dir>/jobs/<n>.json` (its overrides,
status and run directory or error) and lets a failed or refused job return, so that one bad job
does not stop the others, on any launcher (basic, joblib, submitit). Hydra then calls
`SweepSummary.on_multirun_end` in the launching process (registered under `hydra.callbacks` in
`conf/config.yaml`): it prints the table and exits with status 1 when a job did not finish (status
other than `done`), so that a script or a CI job running the sweep sees the failure.

Imported by Hydra in every process of a sweep (and of a single run, where it does nothing): the
standard library and Hydra's `Callback` base only, no JAX or pandas.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from lth.runs.sweep_dirs import DONE, read_jobs  # noqa: F401  (read here, and by the sweep tools)


def status_table(jobs: list[dict[str, Any]]) -> str:
    """A plain-text table: job number, status, the overrides that differ between jobs (those all
    jobs share are listed once above it), and the run directory (done) or the error."""
    shared = set.intersection(*(set(r.get("overrides", [])) for r in jobs)) if len(jobs) > 1 else set()
    lines = [f"shared overrides: {' '.join(o for o in jobs[0].get('overrides', []) if o in shared)}"] if shared else []
    rows = [("job", "status", "overrides", "run directory / error")]
    for r in jobs:
        where = r.get("run_dir") or r.get("error") or ""
        own = [o for o in r.get("overrides", []) if o not in shared]
        rows.append((str(r.get("job", "?")), str(r.get("status", "?")), " ".join(own) or "-",
                     where.splitlines()[0] if where else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3] for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def summarize(sweep_dir: str, out=None) -> int:
    """Print the sweep's job table to `out` (stdout) and return the number of jobs not `done`."""
    out = out or sys.stdout
    jobs = read_jobs(sweep_dir)
    if not jobs:
        print(f"\n[sweep {sweep_dir}] no job records (jobs/*.json)", file=out)
        return 0
    bad = [r for r in jobs if r.get("status") != DONE]
    print(f"\n[sweep {sweep_dir}] {len(jobs) - len(bad)} of {len(jobs)} jobs done", file=out)
    print(status_table(jobs), file=out)
    return len(bad)


def set_aside(sweep_dir: str) -> str | None:
    """Move an earlier sweep's `jobs/` in `sweep_dir` to `jobs.<n>/` (the first free n); returns the
    new path, or None when there was nothing to move."""
    jobs = os.path.join(sweep_dir, "jobs")
    if not os.path.isdir(jobs):
        return None
    n = 1
    while os.path.exists(f"{jobs}.{n}"):
        n += 1
    os.rename(jobs, f"{jobs}.{n}")
    return f"{jobs}.{n}"


try:  # a Hydra Callback when Hydra is installed (it is a dependency; the guard keeps the module importable alone)
    from hydra.experimental.callback import Callback as _Base
except ImportError:  # pragma: no cover
    _Base = object


class SweepSummary(_Base):
    """Hydra callback: at the end of a multirun, the job-status table; exit status 1 if a job
    failed, was refused, interrupted or left `running` (killed outright)."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        """A sweep folder named by hand and used again (`hydra.sweep.dir=runs/multirun/NAME`): the
        earlier sweep's records move to `jobs.<n>/` (kept), so this sweep's table is its own."""
        set_aside(str(config.hydra.sweep.dir))

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = str(config.hydra.sweep.dir)
        failed = summarize(sweep_dir)
        if failed:
            print(f"[sweep {sweep_dir}] {failed} job(s) did not finish; re-running the same command "
                  "re-runs them (finished runs are skipped)", file=sys.stderr)
            sys.stdout.flush()
            raise SystemExit(1)
