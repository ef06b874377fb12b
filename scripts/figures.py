#!/usr/bin/env python
"""Every paper-style figure of lottery and instability runs (`lth.analysis.figures`), as PNG and PDF.

    python scripts/figures.py runs/lenet_300_100-mnist-9e9f66a28003 --out figures
    python scripts/figures.py results/*/ --out results/figures          # what `make figures` runs
    python scripts/figures.py runs/rewinding_modes --out figs --title "ResNet-20, CIFAR-10"

Each argument is a run directory (results.csv, or instability.csv, with config.yaml; a trimmed
copy with history.csv and no checkpoints will do), a sweep folder (`runs/multirun/<date>/<time>`,
whose `jobs/*.json` name its runs, wherever they are) or a folder searched for both. A run's figures
go to `OUT/<run directory's name>/`: accuracy and early-stop iteration against density and
accuracy against iteration (lottery runs), the error barrier against the rewind point and the
interpolation curves (instability runs). Runs of one model and dataset that differ in
`rewind.mode` also get the Renda et al. figure, accuracy against compression per mode, in
`OUT/compare_<model>_<dataset>/`. The out folder itself is skipped when a glob names it. Every
other path that is not drawn (missing, a Deep Compression folder, a folder with no run, an
unreadable run) is skipped with one line on stderr naming it and saying why. Prints every file
written; exit code 0 if anything was drawn, 2 if nothing was.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

RUN_FILES = ("results.csv", "instability.csv")


def is_run(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, f)) for f in RUN_FILES)


def _inside(path: str, folder_real: str) -> bool:
    real = os.path.realpath(path)
    return real == folder_real or real.startswith(folder_real + os.sep)


def _not_drawn(path: str) -> str | None:
    """Why a directory that holds no lottery or instability tables is not drawn (None if it is no
    kind of lth output)."""
    from lth.runs import sweep_dirs

    if os.path.isfile(os.path.join(path, "report.csv")):
        return "a Deep Compression folder (report.csv): no figures are drawn for it"
    if sweep_dirs.is_unfinished_run(path):
        return f"a run with no finished level: {sweep_dirs.IN_PROGRESS}"
    return None


def find_runs(args: list[str], out: str) -> tuple[list[str], list[str]]:
    """The run directories named by `args`, and one line per path skipped saying why.

    An argument is a run directory, a sweep folder (`runs/multirun/<date>/<time>`, with
    `jobs/*.json`: its finished jobs' runs, wherever they are) or a folder searched for both.
    A compression folder, a folder with no run in or below it, a missing path: skipped, with the
    reason. The out folder is skipped without a word (a glob over `results/*/` names it)."""
    from lth.runs import sweep_dirs

    out_real = os.path.realpath(out)
    runs, skipped = [], []
    for arg in args:
        if _inside(arg, out_real):
            continue
        if not os.path.isdir(arg):
            skipped.append(f"{arg}: skipped, no such directory")
            continue
        if is_run(arg):
            runs.append(arg)
            continue
        why = _not_drawn(arg)
        if why:
            skipped.append(f"{arg}: skipped, {why}")
            continue
        if sweep_dirs.is_sweep_dir(arg):
            found = [d for d in sweep_dirs.run_dirs(arg) if is_run(d)]
            if not found:
                skipped.append(f"{arg}: skipped, a sweep folder with no finished lottery or instability run "
                               f"(jobs/*.json name none with status done)")
            runs.extend(found)
            continue
        found, others = [], []
        for d, _, files in sorted(os.walk(arg)):
            if _inside(d, out_real):
                continue
            if any(f in files for f in RUN_FILES):
                found.append(d)
            elif sweep_dirs.is_sweep_dir(d):
                found.extend(r for r in sweep_dirs.run_dirs(d) if is_run(r))
            elif _not_drawn(d):
                others.append(f"{d}: skipped, {_not_drawn(d)}")
        skipped.extend(others)
        if not found and not others:
            skipped.append(f"{arg}: skipped, not a run directory (no {' or '.join(RUN_FILES)} in it or below it, "
                           f"and no sweep folder)")
        runs.extend(found)
    seen, unique = set(), []
    for r in runs:
        if os.path.realpath(r) not in seen:
            seen.add(os.path.realpath(r))
            unique.append(r)
    return unique, skipped


def _names(runs: list[str]) -> dict[str, str]:
    """A folder name per run: the directory's name, made unique by its parent's where needed."""
    names, taken = {}, {}
    for r in runs:
        base = os.path.basename(os.path.normpath(r))
        if base in taken:
            base = f"{os.path.basename(os.path.dirname(os.path.normpath(r)))}_{base}"
        taken[base] = r
        names[r] = base
    return names


# Settings that may differ between the runs of one rewinding-mode comparison.
NOT_COMPARED = ("rewind", "name", "paths", "logger", "levels", "controls", "branch", "instability", "compress")


def compare_groups(loaded: dict[str, object]) -> dict[str, tuple[str, dict[str, object]]]:
    """Runs with results grouped by (model, dataset) and every other setting but the rewinding
    (`NOT_COMPARED`), kept where they differ in `rewind.mode`:
    {folder name: (title, {line label: results})}. The label is the mode, with the rewind point
    when one mode appears more than once."""
    from lth.analysis.figures import _get

    import json

    groups: dict[tuple, list] = {}
    for path, run in loaded.items():
        if run.results is None or not len(run.results) or not run.config:
            continue
        # Only runs that differ in nothing but their rewinding are one comparison.
        same = {k: v for k, v in run.config.items() if k not in NOT_COMPARED}
        key = (_get(run.config, "model.name"), _get(run.config, "dataset.name"), json.dumps(same, sort_keys=True, default=str))
        groups.setdefault(key, []).append(run)
    out = {}
    for (model, dataset, _), runs in groups.items():
        modes = [_get(r.config, "rewind.mode") for r in runs]
        if len(set(modes)) < 2:
            continue
        lines = {}
        for r, mode in zip(runs, modes):
            label = mode if modes.count(mode) == 1 else f"{mode}, k={_get(r.config, 'rewind.point')}"
            while label in lines:
                label += "'"
            lines[label] = r.results
        out[f"compare_{model}_{dataset}"] = (f"{model} on {dataset}: rewinding modes", lines)
    return out


def instability_groups(loaded: dict[str, object]) -> dict[str, tuple[str, object]]:
    """Instability runs grouped by (model, dataset), kept where there are several (e.g. the dense
    network and an IMP subnetwork): {folder name: (title, their instability tables together)}."""
    import pandas as pd

    from lth.analysis.figures import _get

    groups: dict[tuple, list] = {}
    for run in loaded.values():
        if getattr(run, "instability", None) is not None and len(run.instability) and run.config:
            groups.setdefault((_get(run.config, "model.name"), _get(run.config, "dataset.name")), []).append(run.instability)
    return {f"compare_{m}_{d}": (f"{m} on {d}: linear mode connectivity", pd.concat(tables, ignore_index=True))
            for (m, d), tables in groups.items() if len(tables) > 1}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories or folders holding them")
    p.add_argument("--out", required=True, help="folder for the figures (one subfolder per run)")
    p.add_argument("--title", default=None, help="title of every figure (default: from each run's config)")
    p.add_argument("--formats", default="png,pdf", help="comma-separated file formats (default png,pdf)")
    p.add_argument("--dpi", type=int, default=150)
    args = p.parse_args(argv)
    runs, skipped = find_runs(args.runs, args.out)
    for line in skipped:
        print(f"figures.py: {line}", file=sys.stderr)
    if not runs:
        print("figures.py: nothing to draw: no lottery or instability run in " + " ".join(args.runs), file=sys.stderr)
        return 2

    from lth.analysis import figures

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    loaded = {}
    for r in runs:
        try:
            loaded[r] = figures.load(r)
        except (OSError, ValueError) as e:
            print(f"figures.py: {r}: skipped, unreadable: {e}", file=sys.stderr)
    written = []
    names = _names(runs)
    for r, run in loaded.items():
        paths = figures.draw_run(run, os.path.join(args.out, names[r]), title=args.title, formats=formats, dpi=args.dpi)
        if not paths:
            print(f"figures.py: {r}: nothing to draw (fewer than two densities and no history or instability tables)", file=sys.stderr)
        written += paths
    for name, (title, lines) in compare_groups(loaded).items():
        fig = figures.accuracy_vs_compression(lines, title=args.title or title)
        written += figures.save(fig, os.path.join(args.out, name), "accuracy_vs_compression", formats=formats, dpi=args.dpi)
    for name, (title, table) in instability_groups(loaded).items():
        fig = figures.barrier_vs_point(table, title=args.title or title)
        written += figures.save(fig, os.path.join(args.out, name), "barrier_vs_point", formats=formats, dpi=args.dpi)
    for path in written:
        print(path)
    if not written:
        print("figures.py: nothing was drawn", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
