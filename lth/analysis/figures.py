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

Modules: `lth.analysis.figure_parts` (styles, the density axis, error bars, legends: what every
figure shares), `lth.analysis.figures_density` (figures against the density or compression:
F&C Fig. 1 and 4, Renda et al.), `lth.analysis.figures_curves` (curves over training and along
interpolation paths: F&C Fig. 3, Frankle et al. 2020 Fig. 2 and 3), and this module, a run's
figures (`run_figures`, `draw_run`, `save`, `load`), which re-exports every figure.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import pandas as pd
from matplotlib.figure import Figure

# The figures and their parts, importable from here (`figures.accuracy_vs_density`, ...).
from lth.analysis.figure_parts import (  # noqa: F401
    ACCURACY_COLUMNS, FIGSIZE, KIND_STYLES, MODE_STYLES, SHORT_LABELS, SOLID_KINDS, STABLE, percent_label, spread_ticks)
from lth.analysis.figures_curves import (  # noqa: F401
    accuracy_vs_iteration, barrier_vs_point, interpolation_curves, spread_levels)
from lth.analysis.figures_density import accuracy_vs_compression, accuracy_vs_density, early_stop_vs_density  # noqa: F401


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
    if get("branch.source"):  # a branch: which levels, under which mask, from which weights
        levels = ", ".join(str(x) for x in get("branch.levels") or [])
        parts.append(f"branch of level(s) {levels}: {get('branch.mask') or 'ticket'} mask, "
                     f"{get('branch.weights') or 'rewind'} weights")
    return ", ".join(str(x) for x in parts if x)


# How a run's tickets were made (`rewind.mode`), for the legend: what was run, not one fixed text.
HOW_BY_MODE = {"weights": "rewound", "lr": "learning-rate rewinding", "finetune": "fine-tuned"}


def kind_labels(config: Mapping[str, Any] | None) -> dict[str, str]:
    """Legend texts per kind from a run's config: the tickets' says how they were pruned and
    trained again ("ticket (IMP, learning-rate rewinding)"); {} without a config (the defaults of
    `KIND_STYLES`)."""
    if not config:
        return {}
    get = lambda key: _get(config, key)
    method, schedule = get("pruning.method") or "magnitude", get("pruning.schedule") or "iterative"
    if schedule == "iterative":
        what = "IMP" if method == "magnitude" else f"iterative {method}"
    else:
        what = f"{method}, {schedule}"
    mode = get("rewind.mode") or "weights"
    return {"ticket": f"ticket ({what}, {HOW_BY_MODE.get(mode, mode + ' rewinding')})"}


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
    labels = kind_labels(getattr(run, "config", None))
    if res is not None and len(res) and res.density.nunique() >= 2:
        if "early_stop_test_accuracy" in res and res.early_stop_test_accuracy.notna().any():
            figs["accuracy_vs_density_early_stop"] = accuracy_vs_density(res, "early_stop", title=title, labels=labels)
            figs["early_stop_vs_density"] = early_stop_vs_density(res, title=title, labels=labels)
        figs["accuracy_vs_density_final"] = accuracy_vs_density(res, "final", title=title, labels=labels)
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
