"""Accuracy against measured CPU time and model bytes, for every level of a run's tickets beside
its controls: the ticket literature's accuracy-vs-sparsity curves in the units deployment cares
about (issue 29).

Why a separate step and not part of the level loop: exporting and timing every level takes
minutes and draws with matplotlib, which the lottery loop never imports. `export_levels(source)`
exports each finished level of each member kind (the ticket and the run's controls) with
`lth.export.export.run` (its run directories go beside the source, as `experiments/export.py`'s)
and returns one row per exported network: kind, level, density (nonzero weights of the masked
network over the dense one's), test accuracy (of the exported model, equal to the masked one's),
its onnxruntime latency at batch 1 and time per batch of 256 (ms; measured again for all
levels together, interleaved, one thread, fastest of 50 rounds: `interleaved_times`), its bytes (float32, or int8
codes), and the dense network's time per batch on the same machine. `draw(points, path)` draws
accuracy against the time per batch of 256 and against bytes, one line per kind, each level
labelled by its exported network's parameters as a share of the dense network's (for a channel
ticket the weight density undersells the shrinking: a removed filter takes the next layer's
inputs with it); `scripts/export_figure.py` does both.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import pandas as pd

RUNTIME = "onnxruntime"


def export_levels(source: str, *, kinds: list[str] | None = None, fmt: str = "onnx", repeats: int = 20,
                  runs_dir: str | None = None, echo: Callable[[str], None] = print) -> pd.DataFrame:
    """Export and time every finished level of each kind of the lottery run `source` (see the
    module docstring); `kinds` defaults to the ticket and every control the run trained."""
    from lth.config.schema import ExportConfig
    from lth.export import export
    from lth.lottery.branch import source_config, source_summary
    from lth.runs.run_dir import RunDir

    src, summary = source_summary(source, setting="export.source")
    base = source_config(src, setting="export.source")
    rd = RunDir(src, summary["hash"])
    kinds = kinds or ["ticket"] + list(summary["config"].get("controls", []))
    levels = sorted(int(k) for k in summary.get("levels", {}))
    paths = dataclasses.replace(base.paths, runs_dir=runs_dir or os.path.dirname(src))
    rows = []
    for kind in kinds:
        for level in levels:
            if not os.path.isdir(os.path.join(rd.member_dir(level, kind), "final")):
                continue  # a control has no level 0, say
            cfg = dataclasses.replace(base, paths=paths, export=ExportConfig(source=src, level=level, kind=kind, format=fmt,
                                                                             repeats=repeats))
            s = export.run(cfg, echo=lambda _: None).summary
            rows.append(point(s, kind))
            echo(f"  {kind} level {level} exported: density {100 * rows[-1]['density']:.1f}%, accuracy "
                 f"{100 * rows[-1]['accuracy']:.2f}%, {rows[-1]['ms_per_256']:.2f} ms per 256, {rows[-1]['bytes']:,} bytes")
    points = pd.DataFrame(rows)
    if not points.empty:
        points = interleaved_times(points, max(repeats, 50))
    return points


def interleaved_times(points: pd.DataFrame, rounds: int) -> pd.DataFrame:
    """`points` with `latency_batch_1_ms` and `ms_per_256` measured again, all models together:
    in each of `rounds` rounds every exported `model.onnx` is run once at batch 1 and once at
    batch 256, and each figure is the fastest of its rounds (the run the other processes disturbed
    least; medians still moved 2x between equal networks at a load average of 13). Why: on a shared CPU the load drifts
    over the minutes the exports take (the same dense network measured 64 to 151 ms per batch of
    256 across one figure's exports), and interleaving gives every model the same conditions; one
    onnxruntime thread, because a thread pool that waits for a busy core's other thread turns
    every other process's load into the model's time. The exports' own figures stay as `*_export`."""
    import time

    import numpy as np

    from lth.export import onnx_graph

    sessions = [onnx_graph.session(os.path.join(d, "model.onnx"), threads=1) for d in points.run_dir]
    rng = np.random.default_rng(0)
    shape = [int(d) for d in sessions[0].get_inputs()[0].shape[1:]]
    xs = {b: rng.normal(size=(b, *shape)).astype(np.float32) for b in (1, 256)}
    times = {b: [[] for _ in sessions] for b in xs}
    for r in range(rounds + 3):  # 3 warm-up rounds, not counted
        for i, sess in enumerate(sessions):
            name = sess.get_inputs()[0].name
            for b, x in xs.items():
                t = time.perf_counter()
                sess.run(None, {name: x})
                if r >= 3:
                    times[b][i].append(time.perf_counter() - t)
    out = points.rename(columns={"latency_batch_1_ms": "latency_batch_1_ms_export", "ms_per_256": "ms_per_256_export"})
    out["latency_batch_1_ms"] = [1e3 * float(np.min(t)) for t in times[1]]
    out["ms_per_256"] = [1e3 * float(np.min(t)) for t in times[256]]
    return out


def point(summary: dict, kind: str) -> dict:
    """One exported network's row from its export summary.json."""
    import json

    report = pd.read_csv(os.path.join(summary["run_dir"], "report.csv"))
    r = report[report.runtime == RUNTIME].set_index("network")
    return {"kind": kind, "level": summary["level"],
            "density": summary["nonzero_parameters"]["masked"] / summary["parameters"]["dense"],
            "accuracy": summary["test_accuracy_exported"],
            "latency_batch_1_ms": float(r.loc["exported", "latency_batch_1_ms"]),
            "ms_per_256": 256e3 / float(r.loc["exported", "throughput_batch_256"]),
            "dense_ms_per_256": 256e3 / float(r.loc["dense", "throughput_batch_256"]),
            "bytes": int(summary["bytes"]["exported"]), "file_bytes": int(summary["file_bytes"]),
            "parameters": int(summary["parameters"]["exported"]),
            "parameter_fraction": summary["parameters"]["exported"] / summary["parameters"]["dense"],
            "widths": json.dumps(summary["widths_exported"]), "run_dir": summary["run_dir"]}


def draw(points: pd.DataFrame, path: str, *, title: str = "") -> str:
    """Accuracy against onnxruntime time per batch of 256 (left) and against model bytes (right),
    one line per kind in level order, each point labelled with its share of the dense parameters;
written to `path`."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if points.empty:
        raise ValueError("no exported levels to draw")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for kind, g in points.groupby("kind", sort=False):
        g = g.sort_values("level")
        style = {"marker": "o" if kind == "ticket" else "s", "ls": "-" if kind == "ticket" else "--"}
        for ax, x in zip(axes, ("ms_per_256", "bytes")):
            ax.plot(g[x], 100 * g["accuracy"], label=kind.replace("_", " "), **style)
            for _, r in g.iterrows():
                ax.annotate(f"{100 * r['parameter_fraction']:.0f}%", (r[x], 100 * r["accuracy"]), textcoords="offset points",
                            xytext=(4, 4), fontsize=7)
    axes[0].set_xlabel(f"time per batch of 256 in {RUNTIME}, 1 thread (ms, CPU)")
    axes[1].set_xlabel("model size (MB = 10^6 bytes, the exported network's weights)")
    axes[1].xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1e6:g}"))
    for ax in axes:
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(title="labels: % of the dense parameters", fontsize=8, title_fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
