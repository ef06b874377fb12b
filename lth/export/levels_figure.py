"""Accuracy against measured CPU time and model bytes, for every level of a run's tickets beside
its controls: the ticket literature's accuracy-vs-sparsity curves in the units deployment cares
about (issue 29).

Why a separate step and not part of the level loop: exporting and timing every level takes
minutes and draws with matplotlib, which the lottery loop never imports. `export_levels(source)`
exports each finished level of each member kind (the ticket and the run's controls) with
`lth.export.export.run` (its run directories go beside the source, as `experiments/export.py`'s)
and returns one row per exported network: kind, level, density (nonzero weights of the masked
network over the dense one's), test accuracy (of the exported model, equal to the masked one's),
its onnxruntime latency at batch 1 and time per batch of 256 (ms), its bytes (float32, or int8
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
            echo(f"  {kind} level {level}: density {100 * rows[-1]['density']:.1f}%, accuracy "
                 f"{100 * rows[-1]['accuracy']:.2f}%, {rows[-1]['ms_per_256']:.2f} ms per 256, {rows[-1]['bytes']:,} bytes")
    return pd.DataFrame(rows)


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
    axes[0].set_xlabel(f"time per batch of 256 in {RUNTIME} (ms, CPU)")
    axes[1].set_xlabel("model bytes (float32 weights of the exported network)")
    axes[1].set_xscale("log")
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
