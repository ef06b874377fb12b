#!/usr/bin/env python
"""Accuracy against measured CPU time and model bytes for every level of a lottery run's tickets
and controls (issue 29, `lth.export.levels_figure`): each finished level of each kind is exported
to ONNX and timed (`experiments/export.py`'s run directories, beside the source), then drawn.

    python scripts/export_figure.py RUN_DIR [--out results/figures/NAME/accuracy_time_bytes.png]
        [--repeats 20] [--kinds ticket random_prune] [--title TEXT]

Writes the PNG and, beside it, `points.csv` (one row per exported network: kind, level, density,
accuracy, latency at batch 1, ms per batch of 256, bytes, widths, the export's run directory).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lth.export import levels_figure  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", help="a lottery run directory")
    ap.add_argument("--out", default=None, help="the PNG (default: <source>/figures/accuracy_time_bytes.png)")
    ap.add_argument("--repeats", type=int, default=20, help="timed calls per measurement (the median is used)")
    ap.add_argument("--kinds", nargs="+", default=None, help="member kinds (default: the ticket and every control)")
    ap.add_argument("--title", default="")
    args = ap.parse_args()
    out = args.out or os.path.join(args.source, "figures", "accuracy_time_bytes.png")
    points = levels_figure.export_levels(args.source, kinds=args.kinds, repeats=args.repeats)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    points.drop(columns=["run_dir"]).to_csv(os.path.join(os.path.dirname(os.path.abspath(out)), "points.csv"), index=False)
    print(points.drop(columns=["run_dir", "widths"]).to_string(index=False))
    print(f"figure: {levels_figure.draw(points, out, title=args.title)}")


if __name__ == "__main__":
    main()
