#!/usr/bin/env python
"""One table across all jobs of a Hydra sweep, their overrides as columns.

    python scripts/sweep_summary.py runs/multirun/2026-11-27_04-05-06
    python scripts/sweep_summary.py runs/multirun/2026-11-27_04-05-06 --csv sweep.csv --all-overrides

Per job (from `<sweep dir>/jobs/<n>.json`, which every multirun of lth writes): its number, status
(`done`, `refused`, `failed`, `interrupted`, or `running` for a job still going or killed
outright), the overrides that differ between jobs (`--all-overrides`: every override), and, read
from its run directory, the final level's tickets: level, density, test accuracy (mean and std
over replicates, %), early-stop test accuracy and the dense level 0's test accuracy; the run
directory or the error. `--csv` writes the table (accuracies as fractions, every column) too.
The whole results of the finished jobs, every level, are `lth.load_runs(SWEEP_DIR)`.
Exit status 1 when a job did not finish, 2 when SWEEP_DIR is not a sweep's folder.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep_dir", help="a sweep's folder: runs/multirun/<date>_<time> (hydra.sweep.dir)")
    ap.add_argument("--csv", metavar="PATH", help="also write the table as CSV to PATH")
    ap.add_argument("--all-overrides", action="store_true", help="a column for every override, not only those that vary")
    args = ap.parse_args(argv)

    import pandas as pd

    from lth.integrations.sweeps import sweep_table

    try:
        table = sweep_table(args.sweep_dir, all_overrides=args.all_overrides)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.csv:
        os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
        table.to_csv(args.csv, index=False)
    shown = table.copy()
    for c in ("test_accuracy", "test_accuracy_std", "early_stop_test_accuracy", "dense_test_accuracy"):
        shown[c] = (100 * shown[c]).round(2)
    shown["density"] = (100 * shown["density"]).round(2)
    for c in ("level", "replicates"):
        shown[c] = shown[c].astype("object").where(shown[c].notna(), "-")
    shown["where"] = [r or e for r, e in zip(shown.pop("run_dir"), shown.pop("error"))]
    shown = shown.rename(columns={"test_accuracy": "test acc %", "test_accuracy_std": "± std",
                                  "early_stop_test_accuracy": "early-stop acc %", "dense_test_accuracy": "dense acc %",
                                  "density": "density %"})
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 250,
                           "display.max_colwidth", 80):
        print(shown.to_string(index=False, na_rep="-"))
    done = int((table["status"] == "done").sum())
    print(f"\n{done} of {len(table)} jobs done" + (f"; table written to {args.csv}" if args.csv else ""))
    return 0 if done == len(table) else 1


if __name__ == "__main__":
    sys.exit(main())
