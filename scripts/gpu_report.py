#!/usr/bin/env python
"""The results table of `scripts/gpu_bench.sh`: reads the JSON records the benchmarks wrote into a
folder and prints Markdown, one table per benchmark and the speed goals, each met or not.

    python scripts/gpu_report.py bench-out/records > results.md
"""

from __future__ import annotations

import glob
import json
import os
import sys

GOALS = {
    "scaling": "8 vmapped LeNet-300-100 replicates >= 6x the throughput of one (Adam, batch 60)",
    "figure": "whole Frankle & Carbin LeNet-300-100 figure (5 replicates x 21 levels x 50,000 it, eval every 100 it) <= 10 min",
    "lmc": "one LMC ResNet-20 level (63,000 it, batch 128, crop + flip) <= 5 min",
    "pipeline": "full data pipeline >= 0.9x a fixed pre-made batch (ResNet-20)",
    "masked": "masked training >= 0.95x dense",
}


def load(folder: str) -> dict[str, dict]:
    recs = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(path) as f:
            recs[os.path.splitext(os.path.basename(path))[0]] = json.load(f)
    return recs


def table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def verdict(ok) -> str:
    return "not measured" if ok is None else ("met" if ok else "NOT met")


def variant_of(rec: dict) -> str:
    """What a protocol record changed from its preset, in words: overrides of speed settings."""
    words = []
    for o in rec.get("overrides", []):
        k, _, v = o.partition("=")
        if k in ("train.dtype", "train.unroll", "train.replicates_as"):
            words.append(o)
    gpu_flags = [f for f in rec.get("xla_flags", "").split() if f.startswith("--xla_gpu")]
    if gpu_flags:
        words.append("XLA_FLAGS=" + " ".join(gpu_flags))
    return ", ".join(words)


def dtype_comparison(recs: dict) -> None:
    """float32 vs bfloat16 on the same preset, seeds and data: speed and test accuracy per level."""
    a, b = recs.get("lmc"), recs.get("lmc-bf16")
    if not (a and b):
        return
    print(f"**Mixed precision, same run** ({a['preset']}, {a['replicates']} replicates, {a['data']}): "
          f"`train.dtype=bfloat16` against float32\n")
    rows = []
    for ra, rb in zip(a["rows"], b["rows"]):
        acc = lambda r: f"{100 * r['test_accuracy']:.2f}%" if r.get("test_accuracy") is not None else ""
        rows.append([ra["level"], ra["steps"], f"{ra['steps_per_s']:.0f}", f"{rb['steps_per_s']:.0f}",
                     f"{rb['steps_per_s'] / ra['steps_per_s']:.2f}x", acc(ra), acc(rb)])
    print(table(["level", "steps", "float32 steps/s", "bfloat16 steps/s", "speed-up", "float32 test acc", "bfloat16 test acc"], rows))
    print()


PUBLISHED = {"openlth_resnet20_cifar10": ("OpenLTH's published dense ResNet-20", 0.917)}


def reproductions(recs: dict) -> None:
    """The reproductions that ran (their numbers against the papers') and those that did not fit."""
    reps = {k: v for k, v in recs.items() if v.get("bench") == "repro"}
    if not reps:
        return
    print("**CIFAR-10 reproductions** (`scripts/bench_repro.py`; instability: the paper calls a point stable when the "
          "error barrier is below 2%)\n")
    rows = []
    for key, r in reps.items():
        what = f"{r['preset']} {' '.join(o for o in r['overrides'] if not o.startswith(('replicates', 'train.dtype')))}"
        if r.get("skipped"):
            rows.append([key, what, r["dtype"], "skipped", f"needs ~{r['needs_s'] / 60:.1f} min "
                         f"({r['member_steps']} member-steps at {r['rate_member_steps_per_s']:.0f}/s), {r['left_s']:.0f} s were left"])
            continue
        wall = f"{r['wall_s'] / 60:.1f} min"
        if r["kind"] == "instability":
            for p in r["rows"]:
                rows.append([key, what, r["dtype"], wall,
                             f"k = {p['point']}: barrier {100 * p['barrier_mean']:.2f}% ({'stable' if p['stable'] else 'unstable'}), "
                             f"end errors {100 * p['error_start']:.2f}% / {100 * p['error_end']:.2f}%, {p['replicates']} replicate(s)"])
        else:
            ref = PUBLISHED.get(r["preset"])
            for lv in r["rows"]:
                vs = f" (vs {ref[0]} {100 * ref[1]:.1f}%)" if ref and lv["level"] == 0 else ""
                rows.append([key, what, r["dtype"], wall, f"level {lv['level']} ({100 * lv['density']:.1f}% of weights): "
                             f"test accuracy {100 * lv['test_accuracy_mean']:.2f}%{vs}, replicates "
                             + ", ".join(f"{100 * a:.2f}%" for a in lv["test_accuracy"])])
    print(table(["stage", "run", "dtype", "wall", "result"], rows))
    print()


def main() -> None:
    recs = load(sys.argv[1] if len(sys.argv) > 1 else "bench-out/records")
    if not recs:
        sys.exit("no records found")
    dev = next(iter(recs.values()))
    print(f"Device: **{dev['device']}** ({dev['backend']})\n")
    goals: dict[str, list[tuple]] = {}  # goal -> [(met or None, what was measured), ...]

    for key in sorted(k for k in recs if k == "masked" or k.startswith("masked-")):
        m = recs[key]
        how = f"loop unrolled {m['unroll']} steps, permutations {m['perms']}" if m.get("unroll", 1) != 1 else "loop not unrolled"
        print(f"**LeNet-300-100, masked vs dense and R replicates** ({m['data']}, {m['optimizer']}, batch {m['batch_size']}, "
              f"{m['steps']} steps per call, {how}; `scripts/bench_masked.py`, record `{key}`)\n")
        print(table(["R", "dense steps/s", "masked steps/s", "masked/dense", "replicate-steps/s", "vs R=1",
                     "dense TFLOP/s", "masked TFLOP/s"],
                    [[r["replicates"], f"{r['dense_steps_per_s']:.0f}", f"{r['masked_steps_per_s']:.0f}",
                      f"{r['masked_over_dense']:.3f}", f"{r['replicate_steps_per_s']:.0f}", f"{r['scaling']:.2f}x",
                      f"{r['dense_tflops']:.3f}", f"{r['masked_tflops']:.3f}"] for r in m["rows"]]))
        print()
        label = "" if key == "masked" else f" ({key})"
        r8 = [r for r in m["rows"] if r["replicates"] == 8 and r["scaling_base_replicates"] == 1]
        goals.setdefault("scaling", []).append((r8[0]["scaling"] >= 6 if r8 else None,
                                                 f"{r8[0]['scaling']:.2f}x{label}" if r8 else ""))
        worst = min(r["masked_over_dense"] for r in m["rows"])
        goals.setdefault("masked", []).append((worst >= 0.95, f"worst {worst:.3f} (LeNet){label}"))

    loops = {k: v for k, v in recs.items() if k.startswith("loop-")}
    if loops:
        any_ = next(iter(loops.values()))
        print(f"**The compiled loop** (LeNet-300-100, R={any_['rows'][0]['replicates']}, calls of {any_['chunk']} steps as in "
              f"the figure protocol, metrics fetched after each call)\n")
        print(table(["permutations", "steps per loop iteration", "masked steps/s", "dense steps/s"],
                    [[v["perms"], v["unroll"], f"{v['rows'][0]['masked_steps_per_s']:.0f}",
                      f"{v['rows'][0]['dense_steps_per_s']:.0f}"] for v in loops.values()]))
        print()

    p = recs.get("pipeline")
    if p:
        print(f"**ResNet-20 data pipeline** ({p['data']}, batch {p['batch_size']}, crop + flip; `scripts/bench_pipeline.py`)\n")
        print(table(["R", "fixed batch images/s", "full pipeline images/s", "pipeline/fixed"],
                    [[r["replicates"], f"{r['fixed_images_per_s']:.0f}", f"{r['pipeline_images_per_s']:.0f}",
                      f"{r['pipeline_over_fixed']:.3f}"] for r in p["rows"]]))
        print()
        pv = recs.get("pipeline-vmap")
        if pv:
            print("Baseline in the same run: the replicates as one vmapped program (grouped convolutions): "
                  + ", ".join(f"R={r['replicates']} {r['pipeline_images_per_s']:.0f} images/s" for r in pv["rows"]) + "\n")
        worst = min(r["pipeline_over_fixed"] for r in p["rows"])
        goals["pipeline"] = [(worst >= 0.9, f"worst {worst:.3f}")]

    protocols = sorted((k for k in recs if k.startswith(("figure", "lmc")) and recs[k].get("bench") != "repro"),
                       key=lambda k: (not k.startswith("figure"), k))
    for key in protocols:
        f = recs[key]
        goal, limit = ("figure", 600) if key.startswith("figure") else ("lmc", 300)
        variant = variant_of(f)
        print(f"**Preset {f['preset']}** ({f['data']}, {f['replicates']} replicates, {f['total_steps']} steps per level"
              + (f", scaled to {f['full_steps']}" if f["full_steps"] != f["total_steps"] else "")
              + (f", {variant}" if variant else "") + f"; `scripts/bench_protocol.py`, record `{key}`)\n")
        print(table(["level", "density", "steps", "wall s", "training + eval s", "steps/s", "wall s at full length", "test accuracy"],
                    [[r["level"], f"{r['density']:.3f}", r["steps"], f"{r['wall_s']:.1f}", f"{r['train_s']:.1f}",
                      f"{r['steps_per_s']:.0f}", f"{r['wall_s_full']:.1f}",
                      f"{100 * r['test_accuracy']:.2f}%" if r.get("test_accuracy") is not None else ""] for r in f["rows"]]))
        print()
        tag = f", {variant}" if variant else ""
        if goal == "figure":
            print(f"Extrapolated: {f['seconds_per_level']:.1f} s per level, level 0 {f['seconds_level0']:.1f} s; "
                  f"{f['figure_levels']} levels = {f['figure_seconds']:.0f} s ({f['figure_seconds'] / 60:.1f} min)\n")
            goals.setdefault(goal, []).append((f["figure_seconds"] <= limit,
                                               f"{f['figure_seconds'] / 60:.1f} min with {f['replicates']} replicates{tag}"))
        else:
            print(f"Extrapolated: one {f['full_steps']}-iteration level = {f['seconds_per_level']:.0f} s "
                  f"({f['seconds_per_level'] / 60:.1f} min) with {f['replicates']} replicates\n")
            goals.setdefault(goal, []).append((f["seconds_per_level"] <= limit,
                                               f"{f['seconds_per_level'] / 60:.1f} min with {f['replicates']} replicate(s){tag}"))
    dtype_comparison(recs)
    reproductions(recs)

    rows = [[text, measured, verdict(ok)] for k, text in GOALS.items() for ok, measured in goals.get(k) or [(None, "")]]
    print("**Goals**\n")
    print(table(["goal", "measured", "status"], rows))


if __name__ == "__main__":
    main()
