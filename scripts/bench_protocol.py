#!/usr/bin/env python
"""Benchmark: a paper's protocol through the real driver, timed level by level and extrapolated.

Composes an experiment preset exactly as `experiments/lottery.py experiment=NAME` does (plus any
Hydra overrides given after the options), runs `lth.lottery.levels.run` on it for `--levels` pruning
levels (all replicates, evaluation, pruning, rewinding and checkpoints included; W&B off), and
prints each level's wall time and the extrapolated wall time of the whole figure:

    figure = level 0 + (figure_levels - 1) x mean(levels >= 1)

Level 0 includes loading the data and compiling; later levels reuse the compiled programs. With
`--full-steps T` the measured levels ran a shortened `train.duration` and each level's time is
scaled linearly to T training steps (evaluation and checkpoint costs scale with it or are small);
level 0's loading and compiling are counted once, not scaled.
`--synthetic` replaces the dataset by random pixels of the same shape and sizes (the throughput
does not depend on the pixels; the full CIFAR-10 file is too large to carry to a lent GPU).

    python scripts/bench_protocol.py --preset lth_lenet_mnist --levels 1 --figure-levels 21
    python scripts/bench_protocol.py --preset lmc_resnet20_cifar10 --levels 1 --figure-levels 1 \\
        --full-steps 63000 --synthetic train.duration=2000it
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_common import device_line, random_dataset, timed_levels, write_record  # noqa: E402

# (example shape, training examples before the validation split, test examples) of the built-in datasets.
SHAPES = {"mnist": ((28, 28, 1), 60000, 10000), "fashion_mnist": ((28, 28, 1), 60000, 10000),
          "cifar10": ((32, 32, 3), 50000, 10000), "mnist1d": ((40,), 4000, 1000)}


def compose(preset: str, overrides: list[str]):
    """The `Config` that `experiments/lottery.py experiment=<preset> <overrides>` would run."""
    from lth.api import compose as compose_overrides

    return compose_overrides([f"experiment={preset}", *overrides])


def use_synthetic_data(cfg, sizes: list[int] | None = None) -> str:
    """Make the driver load random data of `cfg.dataset`'s shape instead of the files, with the
    real dataset's sizes or `sizes` = [train before the validation split, test]."""
    import lth.data

    if cfg.dataset.name not in SHAPES:
        raise SystemExit(f"--synthetic knows the shapes of {sorted(SHAPES)}, not {cfg.dataset.name!r}")
    shape, n, n_test = SHAPES[cfg.dataset.name]
    if sizes:
        n, n_test = sizes
    val = cfg.dataset.val_size
    lth.data.load_dataset = lambda dcfg, data_dir, **_: random_dataset(shape, n - val, val, n_test)
    return f"random {cfg.dataset.name}-shaped data ({n - val} train / {val} val / {n_test} test)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", required=True, help="an experiment preset (conf/experiment/NAME.yaml)")
    ap.add_argument("--levels", type=int, default=1, help="pruning levels to run after level 0")
    ap.add_argument("--figure-levels", type=int, default=21, help="levels (0..N-1) of the figure to extrapolate to")
    ap.add_argument("--full-steps", type=int, default=0, help="scale each level to this many training steps")
    ap.add_argument("--synthetic", action="store_true", help="random data of the dataset's shape")
    ap.add_argument("--synthetic-sizes", type=int, nargs=2, metavar=("TRAIN", "TEST"),
                    help="with --synthetic: examples before the validation split and test examples (default: the real ones)")
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    ap.add_argument("--keep", help="keep the run directory under this folder (default: a temporary one, removed)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. replicates=5 train.duration=2000it")
    args = ap.parse_args()

    runs = args.keep or tempfile.mkdtemp(prefix="lth-bench-")
    cfg = compose(args.preset, [f"levels={args.levels}", "logger=none", "logger.progress=false",
                                f"paths.runs_dir={runs}", *args.overrides])
    what = use_synthetic_data(cfg, args.synthetic_sizes) if args.synthetic else f"real {cfg.dataset.name}"
    print(f"{device_line()}, preset {args.preset} {' '.join(args.overrides)}, data: {what}, "
          f"{cfg.replicates} replicate(s), levels 0..{args.levels}", flush=True)
    try:
        _, summary, rows = timed_levels(cfg, echo=lambda line: print(line, flush=True))
    finally:
        if not args.keep:
            shutil.rmtree(runs, ignore_errors=True)
    plan = summary["plan"]
    T, k = plan["total_steps"], plan["rewind_step"]
    for r in rows:
        full = (args.full_steps if r["level"] == 0 else args.full_steps - k) if args.full_steps else r["steps"]
        r["wall_s_full"] = r["wall_s"] * full / r["steps"]
        print(f"level {r['level']}: {r['steps']} steps, {r['wall_s']:8.1f} s wall ({r['train_s']:.1f} s training + evaluation, "
              f"{r['steps_per_s']:.1f} steps/s)" + (f", {r['wall_s_full']:8.1f} s at {full} steps" if full != r["steps"] else ""))
    if len(rows) > 1:
        # Level 0's extra cost (loading, compiling) is what it took beyond a later level's rate; at
        # full length it is that extra plus a later level's time for level 0's T steps.
        per_level = sum(r["wall_s_full"] for r in rows[1:]) / (len(rows) - 1)
        rate = sum(r["wall_s"] / r["steps"] for r in rows[1:]) / (len(rows) - 1)  # wall seconds per step
        first = rows[0]["wall_s"] - rate * T + per_level * (args.full_steps or T) / ((args.full_steps or T) - k)
    else:
        per_level = first = rows[0]["wall_s_full"]
    figure = first + (args.figure_levels - 1) * per_level
    print(f"{args.preset}: {per_level:.1f} s per level after the first, {first:.1f} s for level 0 (with loading and "
          f"compiling); {args.figure_levels} levels: {figure:.0f} s = {figure / 60:.1f} min", flush=True)
    write_record(args.json, "protocol", rows, preset=args.preset, overrides=args.overrides, data=what,
                 replicates=cfg.replicates, total_steps=T, rewind_step=k, full_steps=args.full_steps or T,
                 figure_levels=args.figure_levels, seconds_per_level=per_level, seconds_level0=first, figure_seconds=figure)


if __name__ == "__main__":
    main()
