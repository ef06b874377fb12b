#!/usr/bin/env python
"""Accuracy against measured CPU time and model bytes for every level of a lottery run's tickets
and controls (issue 29, `lth.export.levels_figure`): each finished level of each kind is exported
to ONNX and timed (`experiments/export.py`'s run directories, beside the source), then drawn.

    python scripts/export_figure.py RUN_DIR [--out results/figures/NAME/accuracy_time_bytes.png]
        [--points results/NAME/points.csv] [--repeats 20] [--kinds ticket random_prune] [--title TEXT]
    python scripts/export_figure.py --from-points results/NAME/points.csv --out PNG   # redraw only

Writes the PNG and `points.csv` (default: beside the PNG; one row per exported network: kind,
level, density, accuracy, latency at batch 1, ms per batch of 256, bytes, widths). `--from-points`
redraws a figure from such a table without exporting anything (`make figures` does this for the
committed figure).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pandas as pd  # noqa: E402

from lth.export import levels_figure  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", nargs="?", help="a lottery run directory")
    ap.add_argument("--from-points", default=None, help="redraw from this points.csv instead of exporting")
    ap.add_argument("--points", default=None, help="where to write points.csv (default: beside the PNG)")
    ap.add_argument("--out", default=None, help="the PNG (default: <source>/figures/accuracy_time_bytes.png)")
    ap.add_argument("--repeats", type=int, default=20, help="timed calls per measurement (the median is used)")
    ap.add_argument("--kinds", nargs="+", default=None, help="member kinds (default: the ticket and every control)")
    ap.add_argument("--title", default="")
    args = ap.parse_args()
    if args.from_points:
        if not args.out:
            ap.error("--from-points needs --out PNG")
        print(f"figure: {levels_figure.draw(pd.read_csv(args.from_points), args.out, title=args.title)}")
        return
    if not args.source:
        ap.error("name a lottery run directory (or --from-points CSV)")
    out = args.out or os.path.join(args.source, "figures", "accuracy_time_bytes.png")
    points = levels_figure.export_levels(args.source, kinds=args.kinds, repeats=args.repeats).drop(columns=["run_dir"])
    csv = args.points or os.path.join(os.path.dirname(os.path.abspath(out)), "points.csv")
    os.makedirs(os.path.dirname(os.path.abspath(csv)), exist_ok=True)
    points.to_csv(csv, index=False)
    print(points.drop(columns=["widths"]).to_string(index=False))
    print(f"points: {csv}")
    print(f"figure: {levels_figure.draw(points, out, title=args.title)}")


if __name__ == "__main__":
    main()
