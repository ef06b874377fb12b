"""Figures against the density (or the compression ratio 1/density) of a run's levels.

    accuracy_vs_density(results, "early_stop"|"final")  Frankle & Carbin 2019, Fig. 1 right, 4b, 4c
    early_stop_vs_density(results)                      Frankle & Carbin 2019, Fig. 1 left, 4a
    accuracy_vs_compression(results_by_mode)            Renda et al. 2020: accuracy (minus the dense
                                                        network's) against 1/density, per rewinding mode

Each point is a level: the mean over replicates with min/max bars (`lth.analysis.figure_parts`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from lth.analysis.figure_parts import (ACCURACY_COLUMNS, MODE_STYLES, SOLID_KINDS, _density_axis, _dodge, _errorbar,
                                       _finish, _kind_style, _kinds, _new_axes, _replicate_note, _stats, spread_ticks)


def accuracy_vs_density(results: pd.DataFrame, which: str = "early_stop", *, kinds: Sequence[str] | None = None,
                        dense_line: bool = True, title: str | None = None, labels: Mapping[str, str] | None = None,
                        ax=None) -> Figure:
    """Test accuracy (%) against the percent of weights remaining: at the early-stop iteration
    (`which="early_stop"`, F&C Fig. 1 right / 4b) or at the end of training (`"final"`, Fig. 4c).
    One line per kind (tickets solid, controls dashed), mean over replicates with min/max bars;
    a dotted line at the dense network's mean. `labels`: legend text per kind, over the defaults
    (`figures.kind_labels(config)` says how a run's tickets were made: rewound, LR rewinding, ...)."""
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
        _errorbar(ax, 100 * s.density * _dodge(i), s, 100, _kind_style(kind, i, labels))
    dense = df[(df.kind.isin(SOLID_KINDS)) & (df.level == 0)][col]
    if dense_line and len(dense):
        ax.axhline(100 * dense.mean(), color="0.45", linestyle=":", linewidth=1, label="dense network (mean)")
    _density_axis(ax, df.density)
    when = "at early stop (minimum validation loss)" if which == "early_stop" else "at the end of training"
    ax.set_ylabel(f"Test accuracy {when} (%)")
    return _finish(fig, ax, title, _replicate_note(df.groupby(["level", "kind"]).replicate.nunique()))


def early_stop_vs_density(results: pd.DataFrame, *, kinds: Sequence[str] | None = None, title: str | None = None,
                          labels: Mapping[str, str] | None = None, ax=None) -> Figure:
    """The early-stop iteration (step of minimum validation loss) against the percent of weights
    remaining (F&C Fig. 1 left / 4a): tickets solid, controls dashed, min/max bars. `labels`: as
    for `accuracy_vs_density`."""
    df = results.dropna(subset=["early_stop_step"])
    if df.empty:
        raise ValueError("no early_stop_step values (early stopping needs validation data: dataset.val_size > 0)")
    fig, ax = _new_axes(ax)
    for i, kind in enumerate(_kinds(df, kinds)):
        s = _stats(df[df.kind == kind], ["level"], "early_stop_step")
        _errorbar(ax, 100 * s.density * _dodge(i), s, 1, _kind_style(kind, i, labels))
    _density_axis(ax, df.density)
    ax.set_ylabel("Early-stop iteration (minimum validation loss)")
    ax.set_ylim(bottom=0)
    return _finish(fig, ax, title, _replicate_note(df.groupby(["level", "kind"]).replicate.nunique()))


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
