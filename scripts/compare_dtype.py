#!/usr/bin/env python
"""Mixed precision against float32: the same config trained once per `train.dtype`, in one process.

Composes the config as `experiments/lottery.py [experiment=PRESET] OVERRIDES` would (`levels=0` unless
the overrides say otherwise), runs `lth.lottery.levels.run` on it with `train.dtype=float32` and
then with `train.dtype=bfloat16` (each in its own temporary runs folder, W&B off), and prints a
markdown table: per dtype and level, the training steps, steps/s of training (with its periodic
evaluation, the level's `seconds` in summary.json), the level's wall time (level 0's includes
loading the data and compiling), each replicate's final test accuracy and their mean; then
bfloat16's speed-up and accuracy difference at the last level. Level 0's seconds include compiling
the programs: with `levels=1`, level 1 (rewound to the preset's rewind point, same programs) gives
the throughput. bfloat16 pays off on accelerators (tensor cores); on a CPU it is usually slower.

    python scripts/compare_dtype.py --preset lmc_resnet20_cifar10 --synthetic train.duration=2000it levels=1
    python scripts/compare_dtype.py --preset lth_lenet_mnist train.duration=2000it replicates=2
    python scripts/compare_dtype.py --synthetic --synthetic-sizes 600 200 model=conv2 dataset=cifar10 train.duration=10it

`--synthetic` replaces the dataset by random data of its shape (`scripts/bench_protocol.py`): for
speed only, the accuracies are then chance. `--json PATH` also writes the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

DTYPES = ("float32", "bfloat16")


def run_once(base: list[str], dtype: str, runs: str) -> list[dict]:
    """Train the composed config with `train.dtype=dtype` under `runs`; one row per level."""
    import pandas as pd

    from lth.api import compose
    from lth.lottery import levels as lottery

    cfg = compose([*base, f"paths.runs_dir={runs}", f"train.dtype={dtype}"])
    marks = [time.perf_counter()]

    def echo(line: str) -> None:
        print(f"  [{dtype}] {line}", flush=True)
        if line.startswith("level"):
            marks.append(time.perf_counter())

    outcome = lottery.run(cfg, echo=echo)
    with open(os.path.join(outcome.run_dir, "summary.json")) as f:
        summary = json.load(f)
    results = pd.read_csv(os.path.join(outcome.run_dir, "results.csv"))
    T, k = summary["plan"]["total_steps"], summary["plan"]["rewind_step"]
    walls = [b - a for a, b in zip(marks, marks[1:])]
    rows = []
    for level in sorted(int(L) for L in summary["levels"]):
        lv = summary["levels"][str(level)]
        steps = T if level == 0 else T - k
        mine = results[(results.level == level) & (results.kind == "ticket")].sort_values("replicate")
        acc = [float(a) for a in mine.test_accuracy]
        rows.append({"dtype": dtype, "level": level, "steps": steps, "train_s": lv["seconds"],
                     "steps_per_s": steps / lv["seconds"], "wall_s": walls[level] if level < len(walls) else float("nan"),
                     "test_accuracy": acc, "mean_test_accuracy": sum(acc) / len(acc)})
    return rows


def table(rows: list[dict]) -> str:
    """The markdown table of `rows` and a last line comparing the dtypes at the last level."""
    lines = ["| dtype | level | steps | steps/s | train + eval s | wall s | test accuracy per replicate | mean |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        accs = ", ".join(f"{a:.4f}" for a in r["test_accuracy"])
        lines.append(f"| {r['dtype']} | {r['level']} | {r['steps']} | {r['steps_per_s']:.2f} | {r['train_s']:.1f} | "
                     f"{r['wall_s']:.1f} | {accs} | {r['mean_test_accuracy']:.4f} |")
    last = {r["dtype"]: r for r in rows if r["level"] == max(x["level"] for x in rows)}
    if set(DTYPES) <= set(last):
        f, b = last["float32"], last["bfloat16"]
        lines.append(f"\nbfloat16 / float32 at level {f['level']}: {b['steps_per_s'] / f['steps_per_s']:.2f}x steps/s, "
                     f"mean test accuracy {100 * (b['mean_test_accuracy'] - f['mean_test_accuracy']):+.2f} points")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", help="an experiment preset (conf/experiment/NAME.yaml); none: the overrides alone")
    ap.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES, help="in this order (default: both)")
    ap.add_argument("--synthetic", action="store_true", help="random data of the dataset's shape (speed only)")
    ap.add_argument("--synthetic-sizes", type=int, nargs=2, metavar=("TRAIN", "TEST"),
                    help="with --synthetic: examples before the validation split and test examples")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. train.duration=2000it replicates=3")
    args = ap.parse_args(argv)

    from bench_common import device_line, write_record
    from bench_protocol import use_synthetic_data

    from lth.api import compose

    base = ([f"experiment={args.preset}"] if args.preset else []) + [
        "levels=0", "logger=none", "logger.progress=false", *args.overrides]
    what = f"real {compose(base).dataset.name}"
    if args.synthetic:
        what = use_synthetic_data(compose(base), args.synthetic_sizes)
    print(f"{device_line()}; {' '.join(base)}; data: {what}", flush=True)
    rows = []
    for dtype in args.dtypes:
        runs = tempfile.mkdtemp(prefix=f"lth-dtype-{dtype}-")
        try:
            rows += run_once(base, dtype, runs)
        finally:
            shutil.rmtree(runs, ignore_errors=True)
    print(table(rows), flush=True)
    write_record(args.json, "compare_dtype", rows, config=base, data=what)
    return rows


if __name__ == "__main__":
    main()
