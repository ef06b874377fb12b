#!/usr/bin/env python
"""The ticket metrics of a finished run (`lth.analysis.metrics`), as tables on the terminal.

    python scripts/ticket_report.py runs/<run>
    python scripts/ticket_report.py runs/<run> --csv reports/<run>     # also levels.csv, tensors.csv, overlap.csv

Prints the headline (the dense network, the sparsest matching level, the sparsest winning ticket,
each control's sparsest matching level), then per level and kind: density, remaining weights,
FLOPs, final and early-stop accuracy (mean ± std, min..max), early-stop step and speed-up over the
dense network, the verdicts and the ticket-minus-control gaps; per-tensor densities; mask overlap
(Jaccard indices; NaN where the masks are not on disk). A directory that is not a run: exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", help="a run directory (results.csv, summary.json, level_NN/), or a trimmed copy of one")
    ap.add_argument("--csv", metavar="DIR", help="also write levels.csv, tensors.csv, overlap.csv and headline.json to DIR")
    ap.add_argument("--no-overlap", action="store_true", help="do not read the mask checkpoints (faster on big models)")
    args = ap.parse_args(argv)

    import pandas as pd

    from lth.analysis import metrics

    try:
        m = metrics.ticket_metrics(args.run_dir, overlap=not args.no_overlap)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    h = metrics.headline(m)
    print(f"run: {os.path.abspath(args.run_dir)}\n")
    print(metrics.format_headline(h))
    with pd.option_context("display.width", 250, "display.max_columns", 50, "display.max_rows", 10_000,
                           "display.float_format", "{:.4f}".format):
        print("\nper level and kind (accuracies in %, mean ± std over replicates; gaps: ticket - control)")
        print(metrics.format_levels(m["levels"]))
        if len(m["tensors"]):
            print("\nper tensor (density: mean over replicates)")
            t = m["tensors"].pivot_table(index=["level", "kind"], columns="tensor", values="density", sort=False)
            print(t.to_string())
        ov = m["overlap"]
        if ov.drop(columns=["level", "kind"]).isna().all().all():
            print("\nmask overlap: no mask checkpoints on disk (trimmed results, or --no-overlap)")
        else:
            print("\nmask overlap (Jaccard |A∩B|/|A∪B| over prunable weights; NaN: masks not on disk)")
            print(ov.to_string(index=False))
    if args.csv:
        import json

        os.makedirs(args.csv, exist_ok=True)
        for name, df in m.items():
            df.to_csv(os.path.join(args.csv, f"{name}.csv"), index=False)
        with open(os.path.join(args.csv, "headline.json"), "w") as f:
            json.dump(h, f, indent=2)
        print(f"\ntables: {os.path.abspath(args.csv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
