"""Paper-style figures of a run's tables: pure functions of pandas DataFrames, each returning a
matplotlib `Figure`, so notebooks, `scripts/figures.py` and W&B draw the same pictures.

    function                                   the paper figure it mirrors
    accuracy_vs_density(results, "early_stop") Frankle & Carbin 2019, Fig. 1 (right) and 4b: test
                                               accuracy at the early-stop iteration against the
                                               percent of weights remaining
    accuracy_vs_density(results, "final")      Frankle & Carbin 2019, Fig. 4c: test accuracy at the
                                               end of training
    early_stop_vs_density(results)             Frankle & Carbin 2019, Fig. 1 (left) and 4a: the
                                               early-stop iteration (minimum validation loss)
    accuracy_vs_iteration(history, levels)     Frankle & Carbin 2019, Fig. 3: test accuracy as
                                               training proceeds, tickets and reinitialised controls
    barrier_vs_point(instability)              Frankle et al. 2020 (linear mode connectivity), Fig. 3:
                                               the error barrier (instability) against the rewind
                                               iteration k, with the 2% stability threshold
    interpolation_curves(curves)               Frankle et al. 2020, Fig. 2: test error along the
                                               linear path between two copies trained from θk
    accuracy_vs_compression(results_by_mode)   Renda et al. 2020: accuracy change against the
                                               compression ratio, one line per rewinding mode
    draw_run(run_or_dir, out_dir)              every figure that applies to a run, as PNG and PDF

Conventions, as in the papers: densities are the percent of prunable weights remaining on a log
axis that decreases from left to right (ticks at the run's own densities: 100, 51.3, 21.1, 7.0,
...); lines are means over replicates with min/max error bars (shaded bands for curves); tickets
are solid lines, controls (`reinit`, `random_prune`, ...) dashed. Accuracies and errors are drawn
in percent.

Inputs are the run's tables (`lth.load_run`): `results` (results.csv), `history` (the long
evaluation history: level, kind, replicate, step, test_accuracy, ...), `instability`
(instability.csv) and `curves` (curves.csv). Figures are made without pyplot (no global state,
Agg when saved); in a notebook a returned Figure displays itself.
"""

from __future__ import annotations

import math
import os
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


# -- helpers ------------------------------------------------------------------------------------

def _new_axes(ax=None, figsize=FIGSIZE):
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _kind_style(kind: str, i: int = 0) -> dict[str, Any]:
    if kind in KIND_STYLES:
        return dict(KIND_STYLES[kind])
    return {"color": f"C{5 + i % 5}", "linestyle": "--", "marker": "D", "label": kind}


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
    kept one. F&C's LeNet ticks 100, 51.3, 21.1, 7.0, 3.6, 1.9 are such a subset of its ladder."""
    v = sorted({float(x) for x in values if np.isfinite(x) and x > 0}, reverse=True)
    if len(v) <= 2:
        return v
    r = max(ratio, (v[0] / v[-1]) ** (1 / max(1, most - 1)))
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


# -- Frankle & Carbin 2019 -----------------------------------------------------------------------

ACCURACY_COLUMNS = {"early_stop": "early_stop_test_accuracy", "final": "test_accuracy"}


def accuracy_vs_density(results: pd.DataFrame, which: str = "early_stop", *, kinds: Sequence[str] | None = None,
                        dense_line: bool = True, title: str | None = None, ax=None) -> Figure:
    """Test accuracy (%) against the percent of weights remaining: at the early-stop iteration
    (`which="early_stop"`, F&C Fig. 1 right / 4b) or at the end of training (`"final"`, Fig. 4c).
    One line per kind (tickets solid, controls dashed), mean over replicates with min/max bars;
    a dotted line at the dense network's mean."""
    if which not in ACCURACY_COLUMNS:
        raise ValueError(f"which={which!r}: one of {sorted(ACCURACY_COLUMNS)}")
    col = ACCURACY_COLUMNS[which]
    df = results.dropna(subset=[col])
    if df.empty:
        raise ValueError(f"no {col} values (early stopping needs validation data: dataset.val_size > 0); "
                         "draw which='final' instead" if which == "early_stop" else f"no {col} values")
    fig, ax = _new_axes(ax)
    for i, kind in enumerate(_kinds(df, kinds)):
        s = _stats(df[df.kind == kind], ["level"], col)
        _errorbar(ax, 100 * s.density * _dodge(i), s, 100, _kind_style(kind, i))
    dense = df[(df.kind.isin(SOLID_KINDS)) & (df.level == 0)][col]
    if dense_line and len(dense):
        ax.axhline(100 * dense.mean(), color="0.45", linestyle=":", linewidth=1, label="dense network (mean)")
    _density_axis(ax, df.density)
    when = "at early stop (minimum validation loss)" if which == "early_stop" else "at the end of training"
    ax.set_ylabel(f"Test accuracy {when} (%)")
    return _finish(fig, ax, title, _replicate_note(df.groupby(["level", "kind"]).replicate.nunique()))


def early_stop_vs_density(results: pd.DataFrame, *, kinds: Sequence[str] | None = None, title: str | None = None,
                          ax=None) -> Figure:
    """The early-stop iteration (step of minimum validation loss) against the percent of weights
    remaining (F&C Fig. 1 left / 4a): tickets solid, controls dashed, min/max bars."""
    df = results.dropna(subset=["early_stop_step"])
    if df.empty:
        raise ValueError("no early_stop_step values (early stopping needs validation data: dataset.val_size > 0)")
    fig, ax = _new_axes(ax)
    for i, kind in enumerate(_kinds(df, kinds)):
        s = _stats(df[df.kind == kind], ["level"], "early_stop_step")
        _errorbar(ax, 100 * s.density * _dodge(i), s, 1, _kind_style(kind, i))
    _density_axis(ax, df.density)
    ax.set_ylabel("Early-stop iteration (minimum validation loss)")
    ax.set_ylim(bottom=0)
    return _finish(fig, ax, title, _replicate_note(df.groupby(["level", "kind"]).replicate.nunique()))


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
    # Zoom in on the plateau as F&C do: the first evaluations (far below it) may leave the axis.
    lines = [ln.get_ydata() for ln in ax.get_lines()]
    if lines:
        plateau = np.concatenate([y[len(y) // 10:] for y in lines if len(y)])
        if plateau.size:
            lo, hi = np.nanmin(plateau), np.nanmax(np.concatenate(lines))
            ax.set_ylim(max(np.nanmin(np.concatenate(lines)), lo - 0.25 * (hi - lo)) - 0.05 * (hi - lo),
                        hi + 0.08 * (hi - lo))
    note = _replicate_note(reps, "band")
    return _finish(fig, ax, title, "weights remaining" + (f"\n({note})" if note else ""), outside=True)


# -- Frankle et al. 2020: linear mode connectivity ------------------------------------------------

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


# -- Renda et al. 2020 ---------------------------------------------------------------------------

def _by_mode(results_by_mode, by: str) -> pd.DataFrame:
    if isinstance(results_by_mode, Mapping):
        parts = [df.assign(**{by: mode}) for mode, df in results_by_mode.items()]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if by not in results_by_mode:
        raise ValueError(f"no {by!r} column: pass a results DataFrame with one (lth.load_runs) or a dict mode -> results")
    return results_by_mode


def accuracy_vs_compression(results_by_mode, *, by: str = "rewind.mode", relative: bool = True,
                            which: str = "final", title: str | None = None, ax=None) -> Figure:
    """Renda et al. 2020: the tickets' test accuracy against the compression ratio (1/density, log
    scale), one line per rewinding mode (or any other `by` column): with `relative`, minus the
    dense network's accuracy (each mode's level 0, else the mean of all level-0 rows) in
    percentage points, with a line at 0. Mean over replicates with min/max bars.

    `results_by_mode`: a results DataFrame with a `by` column (several runs concatenated, as
    `lth.load_runs` gives them) or a dict {mode: results}."""
    col = ACCURACY_COLUMNS[which]
    df = _by_mode(results_by_mode, by)
    df = df[df.kind.isin(SOLID_KINDS)].dropna(subset=[col])
    if df.empty:
        raise ValueError(f"no ticket rows with {col}")
    dense_all = df[df.level == 0][col]
    fig, ax = _new_axes(ax)
    modes = list(dict.fromkeys(df[by]))
    order = [m for m in MODE_STYLES if m in modes] + [m for m in modes if m not in MODE_STYLES]
    for i, mode in enumerate(order):
        d = df[df[by] == mode]
        base = d[d.level == 0][col]
        ref = base.mean() if len(base) else dense_all.mean() if len(dense_all) else np.nan
        if relative and not np.isfinite(ref):
            raise ValueError(f"{by}={mode}: no dense (level 0) accuracy to compare with")
        s = _stats(d.assign(y=d[col] - (ref if relative else 0.0)), ["level"], "y")
        if relative:
            s = s[s.level > 0] if (s.level > 0).any() else s
        style = {"linestyle": "-", **MODE_STYLES.get(mode, {"color": f"C{5 + i % 5}", "marker": "D", "label": str(mode)})}
        _errorbar(ax, _dodge(i) / s.density, s, 100, style)
    dens = df[df.level > 0].density if relative and (df.level > 0).any() else df.density
    ticks = [1 / d for d in spread_ticks(dens.to_numpy(), most=9, ratio=1.5)]
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:.3g}" for t in ticks])
    ax.set_xlabel("Compression ratio (1 / fraction of weights remaining, log scale)")
    if relative:
        ax.axhline(0, color="0.35", linestyle="--", linewidth=1, label="dense network")
        ax.set_ylabel(f"Δ {'final' if which == 'final' else 'early-stop'} test accuracy vs dense (% points)")
    else:
        ax.set_ylabel(f"Test accuracy ({'final' if which == 'final' else 'early stop'}, %)")
    note = _replicate_note(df.groupby([by, "level"]).replicate.nunique())
    name = "rewinding mode" if by == "rewind.mode" else by
    return _finish(fig, ax, title, f"{name} ({note})" if note else name)


# -- a run's figures --------------------------------------------------------------------------

def run_title(config: Mapping[str, Any] | None, path: str | None = None, *, instability: bool = False) -> str:
    """A figure title from a run's config: model and dataset, then how it pruned and rewound
    (or, for an instability run, which mask the copies trained under)."""
    if not config:
        return os.path.basename(os.path.normpath(path)) if path else ""
    get = lambda key: _get(config, key)
    parts = [f"{get('model.name')} on {get('dataset.name')}"]
    if instability:
        level = get("instability.level")
        parts.append("linear mode connectivity" + ("" if level is None else f" of IMP level {level}'s mask"))
        return ", ".join(parts)
    method, scope, schedule = get("pruning.method"), get("pruning.scope"), get("pruning.schedule")
    if schedule == "iterative":
        what = "IMP" if method in (None, "magnitude") else f"iterative {method}"
        parts.append(f"{what} {scope} {100 * float(get('pruning.fraction') or 0):g}%/level")
    elif method:
        parts.append(f"{method} {scope} {schedule}")
    mode = get("rewind.mode")
    if mode:
        label = MODE_STYLES.get(mode, {}).get("label", f"{mode} rewinding")
        parts.append(label if mode == "finetune" else f"{label} to {get('rewind.point')}")
    return ", ".join(str(x) for x in parts if x)


def _get(config: Mapping[str, Any], key: str, default=None):
    value: Any = config
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return default
        value = value[part]
    return value


def run_figures(run, *, title: str | None = None) -> dict[str, Figure]:
    """Every figure that applies to a loaded run (`lth.load_run`), by file name: the lottery
    figures when it has results (the early-stop ones only with validation data, accuracy vs
    iteration with its history), the instability ones when it has instability tables."""
    res = getattr(run, "results", None)
    if title is None:
        lottery = res is not None and len(res) > 0
        title = run_title(getattr(run, "config", None), getattr(run, "path", None), instability=not lottery)
    figs: dict[str, Figure] = {}
    if res is not None and len(res) and res.density.nunique() >= 2:
        if "early_stop_test_accuracy" in res and res.early_stop_test_accuracy.notna().any():
            figs["accuracy_vs_density_early_stop"] = accuracy_vs_density(res, "early_stop", title=title)
            figs["early_stop_vs_density"] = early_stop_vs_density(res, title=title)
        figs["accuracy_vs_density_final"] = accuracy_vs_density(res, "final", title=title)
    hist = getattr(run, "history", None)
    if hist is not None and len(hist) and "test_accuracy" in hist:
        figs["accuracy_vs_iteration"] = accuracy_vs_iteration(hist, results=res, title=title)
    inst = getattr(run, "instability", None)
    if inst is not None and len(inst):
        figs["barrier_vs_point"] = barrier_vs_point(inst, title=title)
    curves = getattr(run, "curves", None)
    if curves is not None and len(curves):
        figs["interpolation_curves"] = interpolation_curves(curves, title=title)
    return figs


def save(fig: Figure, out_dir: str, name: str, *, formats: Sequence[str] = ("png", "pdf"), dpi: int = 150) -> list[str]:
    """Write `fig` as `out_dir/name.<format>` for each format; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for fmt in formats:
        path = os.path.join(out_dir, f"{name}.{fmt}")
        # No creation date in a PDF: committed figures change only when their data does.
        fig.savefig(path, dpi=dpi, metadata={"CreationDate": None} if fmt == "pdf" else None)
        paths.append(path)
    return paths


def draw_run(run, out_dir: str, *, title: str | None = None, formats: Sequence[str] = ("png", "pdf"),
             dpi: int = 150) -> list[str]:
    """Draw every figure that applies to a run (a run directory, or a loaded run from
    `lth.load_run`) into `out_dir` as PNG and PDF; returns the files written."""
    if isinstance(run, (str, os.PathLike)):
        run = load(str(run))
    paths = []
    for name, fig in run_figures(run, title=title).items():
        paths += save(fig, out_dir, name, formats=formats, dpi=dpi)
    return paths


def load(path: str):
    """A run's tables: `lth.load_run`, or for an instability run (instability.csv, curves.csv,
    config.yaml; no results.csv) the same `Run` with empty results and history.
    FileNotFoundError when `path` is neither."""
    from lth.runs import reading as api

    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path) and not api.is_run_dir(path) and os.path.isfile(os.path.join(path, "instability.csv")):
        import yaml

        config = {}
        if os.path.isfile(os.path.join(path, "config.yaml")):
            with open(os.path.join(path, "config.yaml")) as f:
                config = yaml.safe_load(f) or {}
        read = lambda name: pd.read_csv(os.path.join(path, name)) if os.path.isfile(os.path.join(path, name)) else None
        return api.Run(pd.DataFrame(columns=["level", "replicate", "kind", "density"]), pd.DataFrame(), config, {}, path,
                       read("instability.csv"), read("curves.csv"))
    return api.load_run(path)
