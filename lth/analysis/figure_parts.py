"""What every figure of `lth.analysis.figures` shares: styles, the density axis, error bars, legends.

Conventions, as in the papers: a density axis is the percent of prunable weights remaining on a
log scale decreasing from left to right, ticked at the run's own densities (`spread_ticks`,
labelled by `percent_label`: 100, 51.3, 7.0, 0.05); series are means over replicates with min/max
error bars, tickets solid (`SOLID_KINDS`), controls dashed (`KIND_STYLES`); series at the same
densities are dodged by a small factor so that their bars do not hide each other.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

STABLE = 0.02  # Frankle et al. 2020: stable at k when the error barrier is below 2%

KIND_STYLES: dict[str, dict[str, Any]] = {
    "ticket": {"color": "C0", "linestyle": "-", "marker": "o", "label": "ticket (IMP, rewound)"},
    "branch": {"color": "C4", "linestyle": "-", "marker": "o", "label": "branch"},
    "reinit": {"color": "C1", "linestyle": "--", "marker": "s", "label": "random reinitialisation"},
    "random_prune": {"color": "C2", "linestyle": "--", "marker": "^", "label": "random pruning (layer-wise)"},
    "random_prune_global": {"color": "C3", "linestyle": "--", "marker": "v", "label": "random pruning (global)"},
}
MODE_STYLES: dict[str, dict[str, Any]] = {
    "weights": {"color": "C0", "marker": "o", "label": "weight rewinding"},
    "lr": {"color": "C3", "marker": "s", "label": "learning-rate rewinding"},
    "finetune": {"color": "C2", "marker": "^", "label": "fine-tuning"},
}
SHORT_LABELS = {"reinit": "reinit", "random_prune": "random pruning", "random_prune_global": "random pruning (global)"}
SOLID_KINDS = ("ticket", "branch")
FIGSIZE = (6.4, 4.4)
ACCURACY_COLUMNS = {"early_stop": "early_stop_test_accuracy", "final": "test_accuracy"}


def _new_axes(ax=None, figsize=FIGSIZE):
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _kind_style(kind: str, i: int = 0, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    style = dict(KIND_STYLES[kind]) if kind in KIND_STYLES else {"color": f"C{5 + i % 5}", "linestyle": "--",
                                                                  "marker": "D", "label": kind}
    if labels and kind in labels:
        style["label"] = labels[kind]
    return style


def _kinds(df: pd.DataFrame, kinds: Sequence[str] | None) -> list[str]:
    present = list(dict.fromkeys(df["kind"]))
    if kinds is not None:
        return [k for k in kinds if k in present]
    order = [k for k in KIND_STYLES if k in present]
    return order + [k for k in present if k not in order]


def percent_label(density: float) -> str:
    """A density as F&C's tick labels write it: 100, 51.3, 7.0, 0.9, 0.05 (percent)."""
    p = 100 * float(density)
    if p >= 99.95:
        return "100"
    if p >= 0.095:
        return f"{p:.1f}"
    return f"{p:.2g}"


def spread_ticks(values: Iterable[float], *, most: int = 8, ratio: float = 1.7) -> list[float]:
    """A readable subset of positive `values` for a log axis: the largest first, then each next
    value at least `ratio` (or the ratio that leaves `most` ticks over the span) below the last
    kept one (or a sixth of the axis, when that is less). F&C's LeNet ticks 100, 51.3, 21.1, 7.0, 3.6, 1.9 are such a subset of its ladder."""
    v = sorted({float(x) for x in values if np.isfinite(x) and x > 0}, reverse=True)
    if len(v) <= 2:
        return v
    span = v[0] / v[-1]
    # `ratio` keeps labels apart on a long ladder; on a short axis (a 3-level run: 100..51.2) a
    # sixth of the axis is room enough, so every density of a short run gets its label.
    r = max(min(ratio, span ** (1 / 6)), span ** (1 / max(1, most - 1)))
    out = [v[0]]
    for x in v[1:]:
        if out[-1] / x >= r * 0.999:
            out.append(x)
    if out[-1] != v[-1] and out[-1] / v[-1] >= r ** 0.6:  # the sparsest too, when it has room
        out.append(v[-1])
    return out


def _density_axis(ax, densities: Iterable[float]) -> None:
    """x: percent of weights remaining, log scale, decreasing from left to right."""
    d = np.array([x for x in densities if np.isfinite(x) and x > 0], float)
    ticks = spread_ticks(d)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator([100 * t for t in ticks]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([percent_label(t) for t in ticks])
    hi, lo = 100 * d.max(), 100 * d.min()
    pad = max(1.05, (hi / lo) ** 0.04)  # room for the markers and the dodged series
    ax.set_xlim(hi * pad, lo / pad)  # inverted: 100% on the left
    ax.set_xlabel("Percent of weights remaining (log scale)")


def _dodge(i: int) -> float:
    """A small horizontal offset (a factor on a log axis) of series i, so that the error bars of
    series at the same densities do not hide each other: 1, 1.015, 0.985, 1.03, ..."""
    return 1.0 if i == 0 else 1.0 + 0.015 * ((i + 1) // 2) * (1 if i % 2 else -1)


def _replicate_note(n: Iterable[int], what: str = "bars") -> str:
    n = sorted({int(x) for x in n})
    if not n:
        return ""
    reps = str(n[0]) if len(n) == 1 else f"{n[0]}-{n[-1]}"
    if n[-1] == 1:
        return "one replicate"
    return f"mean of {reps} replicates, {what}: min-max"


def _stats(df: pd.DataFrame, keys: list[str], col: str) -> pd.DataFrame:
    g = df.groupby(keys, sort=True)
    out = pd.DataFrame({"density": g["density"].mean(), "mean": g[col].mean(), "min": g[col].min(),
                        "max": g[col].max(), "n": g[col].count()})
    return out[out.n > 0].reset_index()


def _errorbar(ax, x, s: pd.DataFrame, scale: float, style: dict[str, Any], **kw):
    f = lambda v: np.asarray(v, dtype=float)
    yerr = np.vstack([scale * f(s["mean"] - s["min"]), scale * f(s["max"] - s["mean"])])
    c = ax.errorbar(f(x), scale * f(s["mean"]), yerr=yerr, capsize=2.5, elinewidth=0.9, markersize=3.5, linewidth=1.5,
                    **{**style, **kw})
    return c.lines[0]


def _finish(fig, ax, title: str | None, legend_title: str | None = None, loc: str = "best",
            outside: bool = False) -> Figure:
    if title:
        ax.set_title(title, fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    if handles and outside:  # beside the axes (many lines): nothing of the data hidden
        ax.legend(title=legend_title or None, fontsize=8, title_fontsize=8, loc="upper left",
                  bbox_to_anchor=(1.02, 1.0), borderaxespad=0, frameon=False, alignment="left")
    elif handles:
        ax.legend(title=legend_title or None, fontsize=8, title_fontsize=8, loc=loc, framealpha=0.85, alignment="left")
    ax.grid(True, which="major", alpha=0.3)
    return fig
