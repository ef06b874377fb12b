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
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

DTYPES = ("float32", "bfloat16")


def run_once(base: list[str], dtype: str, runs: str) -> list[dict]:
    """Train the composed config with `train.dtype=dtype` under `runs`; one row per level
    (`bench_common.timed_levels`), with `dtype` and each replicate's test accuracy."""
    from bench_common import timed_levels

    from lth.api import compose

    cfg = compose([*base, f"paths.runs_dir={runs}", f"train.dtype={dtype}"])
    _, _, levels = timed_levels(cfg, echo=lambda line: print(f"  [{dtype}] {line}", flush=True))
    return [{"dtype": dtype, "level": r["level"], "steps": r["steps"], "train_s": r["train_s"], "steps_per_s": r["steps_per_s"],
             "wall_s": r["wall_s"], "test_accuracy": r["test_accuracies"],
             "mean_test_accuracy": sum(r["test_accuracies"]) / len(r["test_accuracies"])} for r in levels]


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
