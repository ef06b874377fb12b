#!/usr/bin/env python
"""One reproduction of a paper's CIFAR-10 result on a lent GPU, run only if it fits the time left
(issue 32), with its numbers as a JSON record for `scripts/gpu_report.py`.

    python scripts/bench_repro.py --kind instability --preset lmc_resnet20_cifar10 --left 300 \\
        --rate-from bench-out/records/lmc.json --json bench-out/records/inst-0.json \\
        --keep bench-out/runs replicates=1 "instability.points=[0it]"
    python scripts/bench_repro.py --kind lottery --preset openlth_resnet20_cifar10 --left 300 \\
        --rate-from bench-out/records/lmc.json --json bench-out/records/level0.json levels=0 replicates=1

Before it starts, it counts the member-steps the run needs (a member = one network trained in the
compiled step):

    instability, R replicates, rewind points k_i:  R * max k_i + sum_i 2R (T - k_i)
    lottery, levels 0..L, rewind step k:           R * (T + L (T - k))

and extrapolates its wall time from the member-steps per second a `bench_protocol.py` record
measured (its pruned levels: compiled, with evaluation), plus `--overhead` seconds (loading,
compiling, the instability path's evaluations). A run that would not end within `--left` seconds
is not started: its record says `skipped` with the time it needs, so the table can state it.
Instability points are not part of a run's hash: stages that each analyse one point share one run
directory, and a later stage reads the earlier points back instead of training them again.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import device_line, timed_levels, write_record  # noqa: E402
from bench_protocol import SHAPES, compose, use_synthetic_data  # noqa: E402


def member_steps(cfg, kind: str, n_train: int | None = None) -> tuple[int, int]:
    """(member-steps the run trains, T) for `cfg` (resolved), on its dataset's real size or `n_train`."""
    from lth.lottery.plan import make_plan

    n_train = n_train or SHAPES[cfg.dataset.name][1]
    plan = make_plan(cfg, n_train - cfg.dataset.val_size)
    T, R = plan.total_steps, cfg.replicates
    if kind == "instability":
        from lth.analysis.instability import point_steps

        ks = [k for _, k in point_steps(cfg, plan.steps_per_epoch, T)]
        return R * max(ks) + sum(2 * R * (T - k) for k in ks), T
    return R * (T + cfg.levels * (T - plan.rewind_step)), T


def measured_rate(record_path: str) -> float:
    """Member-steps per wall second of a `bench_protocol.py` record (its levels after the first)."""
    with open(record_path) as f:
        rec = json.load(f)
    rows = [r for r in rec["rows"] if r["level"] >= 1] or rec["rows"]
    return sum(rec["replicates"] * r["steps"] for r in rows) / sum(r["wall_s"] for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", required=True, choices=["instability", "lottery"])
    ap.add_argument("--preset", required=True)
    ap.add_argument("--left", type=float, default=None, help="seconds left for this run (default: no limit)")
    ap.add_argument("--rate-from", help="a bench_protocol.py record to extrapolate the wall time from")
    ap.add_argument("--rate", type=float, help="member-steps/s to assume when --rate-from is not there (an earlier call's)")
    ap.add_argument("--overhead", type=float, default=60.0, help="seconds added to the extrapolation")
    ap.add_argument("--synthetic", action="store_true", help="random data of the dataset's shape (a smoke test)")
    ap.add_argument("--synthetic-sizes", type=int, nargs=2, metavar=("TRAIN", "TEST"))
    ap.add_argument("--json", help="write the record here")
    ap.add_argument("--keep", help="runs folder to keep (default: a temporary one, removed)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    runs = args.keep or tempfile.mkdtemp(prefix="lth-repro-")
    cfg = compose(args.preset, ["logger=none", "logger.progress=false", f"paths.runs_dir={runs}", *args.overrides])
    from lth.config.schema import resolve

    cfg = resolve(cfg)
    steps, T = member_steps(cfg, args.kind, args.synthetic_sizes[0] if args.synthetic and args.synthetic_sizes else None)
    info = dict(kind=args.kind, preset=args.preset, overrides=args.overrides, replicates=cfg.replicates,
                total_steps=T, member_steps=steps, dtype=cfg.train.dtype)
    measured = bool(args.rate_from and os.path.isfile(args.rate_from))
    if measured or args.rate:
        rate = measured_rate(args.rate_from) if measured else args.rate
        source = os.path.basename(args.rate_from) if measured else "--rate"
        need = steps / rate + args.overhead
        info.update(rate_member_steps_per_s=rate, rate_from=source, needs_s=need)
        print(f"{args.preset} ({args.kind}): {steps} member-steps at {rate:.0f}/s ({source}) "
              f"+ {args.overhead:.0f} s = about {need:.0f} s", flush=True)
        if args.left is not None and need > args.left:
            print(f"skipped: needs about {need:.0f} s ({need / 60:.1f} min), {args.left:.0f} s left", flush=True)
            write_record(args.json, "repro", [], skipped=True, left_s=args.left, **info)
            return
    what = use_synthetic_data(cfg, args.synthetic_sizes) if args.synthetic else f"real {cfg.dataset.name}"
    print(f"{device_line()}, {what}", flush=True)
    t0 = time.perf_counter()
    try:
        if args.kind == "instability":
            from lth.analysis import instability

            outcome = instability.run(cfg, echo=lambda s: print(s, flush=True))
            run_dir = outcome.run_dir
            rows = instability.summarize(outcome.table)
            ends = outcome.table.groupby("step")[["error_start", "error_end"]].mean()
            for r in rows:
                r["error_start"], r["error_end"] = (float(ends.loc[r["step"], c]) for c in ("error_start", "error_end"))
        else:
            run_dir, _, levels = timed_levels(cfg, echo=lambda s: print(s, flush=True))
            rows = [{"level": r["level"], "density": float(r["density"]), "test_accuracy": r["test_accuracies"],
                     "test_accuracy_mean": float(sum(r["test_accuracies"]) / len(r["test_accuracies"]))} for r in levels]
        wall = time.perf_counter() - t0
        print(f"{args.preset} ({args.kind}): {wall:.0f} s wall; {json.dumps(rows)}", flush=True)
        write_record(args.json, "repro", rows, skipped=False, wall_s=wall, data=what,
                     run_dir=os.path.relpath(run_dir, runs), **info)
    finally:
        if not args.keep:
            shutil.rmtree(runs, ignore_errors=True)


if __name__ == "__main__":
    main()
