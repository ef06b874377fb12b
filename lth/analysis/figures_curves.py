"""Curves: accuracy over training, and the error along the linear path between two trained copies.

    accuracy_vs_iteration(history, levels)  Frankle & Carbin 2019, Fig. 3: test accuracy against the
                                            iteration at a few densities, tickets and controls
    barrier_vs_point(instability)           Frankle et al. 2020, Fig. 3: the error barrier
                                            max_α E(α) - (E(0) + E(1)) / 2, E(α) the test error of
                                            (1-α)W₁ + αW₂ (`lth.analysis.instability`), against the
                                            rewind iteration k, with the 2% stability threshold
    interpolation_curves(curves)            Frankle et al. 2020, Fig. 2: test error along that path

Lines are means over replicates with shaded min/max bands (bars for the barrier).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from lth.analysis.figure_parts import (FIGSIZE, SHORT_LABELS, SOLID_KINDS, STABLE, _errorbar, _finish, _new_axes,
                                       _replicate_note, percent_label, spread_ticks)


def spread_levels(densities: Mapping[int, float], n: int = 4) -> list[int]:
    """`n` levels spread evenly in log density from the densest to the sparsest (F&C Fig. 3 shows
    100, 51.3, 21.1, 7.0, 3.6, 1.9)."""
    items = sorted(densities.items(), key=lambda kv: -kv[1])
    if len(items) <= n:
        return [lv for lv, _ in items]
    hi, lo = math.log(items[0][1]), math.log(items[-1][1])
    chosen: list[int] = []
    for t in np.linspace(hi, lo, n):
        lv = min(items, key=lambda kv: abs(math.log(kv[1]) - t))[0]
        if lv not in chosen:
            chosen.append(lv)
    return chosen


def _level_densities(history: pd.DataFrame, results: pd.DataFrame | None) -> dict[int, float]:
    src = results if results is not None and "density" in results else history if "density" in history else None
    if src is None:
        return {}
    t = src[src.kind.isin(SOLID_KINDS)] if src.kind.isin(SOLID_KINDS).any() else src
    return {int(lv): float(d) for lv, d in t.groupby("level").density.mean().items()}


def accuracy_vs_iteration(history: pd.DataFrame, levels_or_densities: Sequence[int | float] | None = None, *,
                          results: pd.DataFrame | None = None, controls: Sequence[str] = ("reinit",),
                          metric: str = "test_accuracy", title: str | None = None, ax=None) -> Figure:
    """Test accuracy (%) against the training iteration at chosen sparsities (F&C Fig. 3): one
    colour per level, the ticket solid and each control in `controls` dashed in the same colour,
    mean over replicates with a shaded min/max band.

    `levels_or_densities`: ints are levels, floats densities (fractions; the nearest level is
    drawn); None picks 4 levels spread over the run's densities. Densities come from `results`
    (or a `density` column of `history`); without them lines are labelled by level."""
    if history is None or history.empty:
        raise ValueError("no evaluation history")
    dens = _level_densities(history, results)
    levels_present = sorted(int(x) for x in history.level.unique())
    if levels_or_densities is None:
        chosen = spread_levels({lv: dens.get(lv, 0.8 ** lv) for lv in levels_present})
    else:
        chosen = []
        for v in levels_or_densities:
            if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                lv = int(v)
            else:
                if not dens:
                    raise ValueError(f"density {v} asked for, but no densities known: pass results=")
                lv = min(dens, key=lambda k: abs(math.log(dens[k]) - math.log(float(v))))
            if lv not in levels_present:
                raise ValueError(f"level {lv} has no history (levels {levels_present})")
            if lv not in chosen:
                chosen.append(lv)
    fig, ax = _new_axes(ax, figsize=(8.2, 4.4))
    solid = history[history.kind.isin(SOLID_KINDS)]
    scale = 100 if "accuracy" in metric else 1
    reps = set()
    for i, lv in enumerate(chosen):
        color = f"C{i % 10}"
        name = f"{percent_label(dens[lv])}%" if lv in dens else f"level {lv}"
        for kind in [k for k in dict.fromkeys(solid.kind)] + [c for c in controls]:
            h = history[(history.level == lv) & (history.kind == kind)].dropna(subset=[metric])
            if h.empty:
                continue
            g = h.groupby("step")[metric]
            steps, mean, lo, hi = g.mean().index.to_numpy(), g.mean().to_numpy(), g.min().to_numpy(), g.max().to_numpy()
            reps |= set(h.groupby("step").replicate.nunique())
            is_solid = kind in SOLID_KINDS
            if is_solid:
                label = f"{name} " + ("dense" if lv == 0 and dens.get(lv, 1) >= 0.9995 else kind)
            else:
                label = f"{name} {SHORT_LABELS.get(kind, kind)}"
            ax.plot(steps, scale * mean, color=color, linestyle="-" if is_solid else "--", linewidth=1.4, label=label,
                    marker="o" if len(steps) < 8 else None, markersize=3)  # a few evaluations: show each
            ax.fill_between(steps, scale * lo, scale * hi, color=color, alpha=0.18 if is_solid else 0.08, linewidth=0)
    ax.set_xlabel("Training iteration")
    split, what = metric.partition("_")[::2]
    ax.set_ylabel(f"{split.capitalize()} {what}" + (" (%)" if scale == 100 else ""))
    ax.set_xlim(left=0)
    # Every evaluation shows, the first one included (far below the plateau early in training).
    lines = [np.asarray(ln.get_ydata(), float) for ln in ax.get_lines()]
    ys = np.concatenate(lines) if lines else np.array([])
    ys = ys[np.isfinite(ys)]
    if ys.size:
        lo, hi = float(ys.min()), float(ys.max())
        pad = 0.05 * (hi - lo) if hi > lo else 0.5
        ax.set_ylim(min(lo - pad, ax.get_ylim()[0]), max(hi + pad, ax.get_ylim()[1]))
    note = _replicate_note(reps, "band")
    return _finish(fig, ax, title, "weights remaining" + (f"\n({note})" if note else ""), outside=True)


def _step_label(s: float) -> str:
    s = int(s)
    if s >= 1000 and s % 100 == 0:
        return f"{s / 1000:g}K"
    return str(s)


def _line_label(level: int, density: float) -> str:
    if level < 0 or density >= 0.9995:
        return "dense network" if level <= 0 else f"level {level} (100%)"
    return f"IMP level {level} ({percent_label(density)}% weights)"


def barrier_vs_point(instability: pd.DataFrame, *, title: str | None = None, ax=None) -> Figure:
    """The error barrier (instability, %) against the rewind iteration k (Frankle et al. 2020,
    Fig. 3): mean over replicates with min/max bars, one line per source level (the dense
    network and/or IMP subnetworks), a dashed line at the 2% stability threshold. The x axis is
    symmetric-log so that k = 0 shows."""
    if instability is None or instability.empty:
        raise ValueError("no instability rows")
    df = instability.copy()
    if "level" not in df:
        df["level"] = -1
    if "density" not in df:
        df["density"] = 1.0
    fig, ax = _new_axes(ax)
    groups = list(df.groupby("level", sort=True))
    for i, (level, d) in enumerate(groups):
        g = d.groupby("step").barrier
        s = pd.DataFrame({"mean": g.mean(), "min": g.min(), "max": g.max()}).reset_index()
        style = {"color": f"C{i % 10}", "marker": "o", "linestyle": "-",
                 "label": _line_label(int(level), float(d.density.mean()))}
        _errorbar(ax, s.step, s, 100, style)
    steps = sorted(df.step.unique())
    positive = [s for s in steps if s > 0]
    linthresh = min(positive) if positive else 1
    ax.set_xscale("symlog", linthresh=linthresh, linscale=0.6)
    ticks = ([0] if 0 in steps else []) + spread_ticks(positive, most=9, ratio=1.8)[::-1]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([_step_label(t) for t in ticks])
    top = max(steps) if steps else 1
    ax.set_xlim(-0.15 * linthresh if 0 in steps else linthresh / 1.3, top * 1.3)
    ax.axhline(100 * STABLE, color="0.35", linestyle="--", linewidth=1, label="stability threshold (2%)")
    ax.set_xlabel("Rewind iteration k (symmetric log scale)")
    ax.set_ylabel("Error barrier / instability (%)")
    lo, hi = min(0.0, 100 * float(df.barrier.min())), ax.get_ylim()[1]
    ax.set_ylim(lo - 0.03 * (hi - lo), hi)
    return _finish(fig, ax, title, _replicate_note(df.groupby(["level", "step"]).replicate.nunique()))


def _curve_axes(ax, d: pd.DataFrame, cmap_name: str = "viridis") -> None:
    import matplotlib

    cmap = matplotlib.colormaps[cmap_name]
    points = d.groupby("point").step.first().sort_values()
    n = len(points)
    for i, (point, step) in enumerate(points.items()):
        c = d[d.point == point]
        g = c.groupby("alpha").test_error
        color = cmap(0.9 * i / max(1, n - 1))
        label = f"k = {_step_label(step)}" + ("" if str(point) in (str(step), f"{step}it") else f" ({point})")
        ax.plot(g.mean().index, 100 * g.mean(), color=color, linewidth=1.5, label=label)
        ax.fill_between(g.mean().index, 100 * g.min(), 100 * g.max(), color=color, alpha=0.12, linewidth=0)
    ax.set_xlabel("Interpolation α  ((1-α)·W₁ + α·W₂)")
    ax.set_xlim(0, 1)
    ax.grid(True, alpha=0.3)


def interpolation_curves(curves: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Test error (%) along the linear path between the two copies, against α, one line per
    rewind point (mean over replicates, shaded min/max; Frankle et al. 2020, Fig. 2). A `level`
    column with several levels gives one panel per level."""
    if curves is None or curves.empty:
        raise ValueError("no interpolation curves")
    levels = sorted(curves.level.unique()) if "level" in curves else [None]
    cols = min(3, len(levels))
    rows = math.ceil(len(levels) / cols)
    fig = Figure(figsize=(7.6 if cols == 1 else 5.6 * cols, FIGSIZE[1] if rows == 1 else 3.6 * rows),
                 layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for ax, level in zip(axes.flat, levels):
        d = curves if level is None else curves[curves.level == level]
        _curve_axes(ax, d)
        if level is not None:
            dens = d.density.mean() if "density" in d else float("nan")
            ax.set_title(_line_label(int(level), dens), fontsize=9)
        reps = d.groupby(["point", "alpha"]).replicate.nunique()
        note = _replicate_note(reps, "band")
        ax.legend(title="rewind iteration" + (f"\n({note})" if note else ""), fontsize=8, title_fontsize=8,
                  loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, frameon=False, alignment="left")
    for ax in axes.flat[len(levels):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("Test error (%)")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
