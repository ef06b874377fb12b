#!/usr/bin/env python
"""One table of accuracy per density across lottery runs: the tickets of each run and the controls
trained beside them, mean ± std over replicates, as Markdown.

    python scripts/compare_runs.py --by rewind.mode runs/mnist1d_rewinding
    python scripts/compare_runs.py --by rewind.mode --metric early_stop_test_accuracy runs/a runs/b
    python scripts/compare_runs.py --by rewind.mode --controls-from weights runs/mnist1d_rewinding
    python scripts/compare_runs.py --rows density --by pruning.method,pruning.schedule runs/frankle2021_pai_mnist1d

Each argument is a run directory or a folder searched for them (any folder holding results.csv and
config.yaml). `--by` names the config key that labels a run's columns (`rewind.mode`, `seed`,
`pruning.scope`, or several joined by commas); rows are levels, with the tickets' density of the
first run, or with `--rows density` densities (tickets only).
"""

from __future__ import annotations

import argparse
import os
import sys

import pandas as pd
import yaml


def find_runs(paths: list[str]) -> list[str]:
    runs = []
    for p in paths:
        for d, _, files in os.walk(p):
            if "results.csv" in files and "config.yaml" in files:
                runs.append(d)
    return sorted(set(runs))


def label(run: str, key: str) -> str:
    """The run's value of config key `key`, or of several comma-separated keys joined by `/`."""
    with open(os.path.join(run, "config.yaml")) as f:
        config = yaml.safe_load(f)
    values = []
    for k in key.split(","):
        value = config
        for part in k.strip().split("."):
            value = value[part]
        values.append(str(value))
    return "/".join(values)


def table(runs: list[str], by: str, metric: str, controls_from: str | None, rows: str = "level") -> pd.DataFrame:
    if rows == "density":
        return density_table(runs, by, metric)
    cols, density, seen = {}, None, {}
    for run in runs:
        name = label(run, by)
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:  # two runs with the same value of --by
            name = f"{name}#{seen[name]}"
        df = pd.read_csv(os.path.join(run, "results.csv"))
        g = df.groupby(["kind", "level"])[metric]
        stats = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=0)})
        if density is None:
            density = df[df.kind == "ticket"].groupby("level").density.mean()
        kinds = ["ticket"] + sorted(k for k in df.kind.unique() if k != "ticket")
        for kind in kinds:
            if kind != "ticket" and controls_from not in (None, name):
                continue
            s = stats.loc[kind]
            head = f"{kind} ({name})"
            cols[head] = {lv: f"{100 * m:.2f} ± {100 * sd:.2f}" for lv, (m, sd) in s.iterrows()}
    order = [c for c in cols if c.startswith("ticket")] + [c for c in cols if not c.startswith("ticket")]
    out = pd.DataFrame(cols)[order]  # tickets first, then the controls
    out.insert(0, "density %", [f"{100 * density.get(lv, float('nan')):.1f}" for lv in out.index])
    out.index.name = "level"
    return out.fillna("-")


def density_table(runs: list[str], by: str, metric: str) -> pd.DataFrame:
    """Rows by density (%) instead of level: runs that reach their densities by
    different routes (IMP levels, one-shot runs, gradual pruning) side by side. Tickets only."""
    cols, keys = {}, []

    def key(d: float) -> float:
        """Densities within 0.05 points share a row (IMP's 17,187 of 275,000 weights and a one-shot
        run's round(0.0625 × 275,000) = 17,188 are both 6.25%)."""
        for k in keys:
            if abs(k - d) < 0.05:
                return k
        keys.append(round(d, 2))
        return keys[-1]

    for run in runs:
        df = pd.read_csv(os.path.join(run, "results.csv"))
        df = df[df.kind == "ticket"].assign(d=lambda x: (100 * x.groupby("level").density.transform("mean")).map(key))
        cells = {d: f"{100 * g[metric].mean():.2f} ± {100 * g[metric].std(ddof=0):.2f}" for d, g in df.groupby("d")}
        base, k = label(run, by), 1
        name = base
        while set(cols.get(name, {})) & set(cells) - {100.0}:  # runs of one label share a column (one-shot
            k += 1                                            # runs, one per density) unless they collide
            name = f"{base}#{k}"
        col = cols.setdefault(name, {})
        for d, cell in cells.items():
            col.setdefault(d, cell)  # the dense level: the first run's
    out = pd.DataFrame(cols).sort_index(ascending=False)
    out.index = [f"{d:g}" for d in out.index]
    out.index.name = "density %"
    return out.fillna("-")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="run directories or folders holding them")
    ap.add_argument("--by", default="rewind.mode", help="config key that labels each run (default: rewind.mode)")
    ap.add_argument("--metric", default="test_accuracy", help="results.csv column (default: test_accuracy, the final one)")
    ap.add_argument("--controls-from", default=None, help="show only this run's controls (a value of --by)")
    ap.add_argument("--rows", choices=("level", "density"), default="level",
                    help="one row per level (default) or per density, merging runs that reach a density by other routes")
    args = ap.parse_args(argv)
    runs = find_runs(args.paths)
    if not runs:
        print(f"no run directories (results.csv + config.yaml) under {args.paths}", file=sys.stderr)
        return 2
    t = table(runs, args.by, args.metric, args.controls_from, args.rows)
    print(f"{args.metric}, % (mean ± std over replicates), {len(runs)} run(s), columns by {args.by}\n")
    print(markdown(t.reset_index()))
    return 0


def markdown(df: pd.DataFrame) -> str:
    """A pipe table (pandas' to_markdown needs the optional tabulate package)."""
    rows = [[str(c) for c in df.columns]] + [[str(v) for v in r] for r in df.itertuples(index=False)]
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("---" for _ in df.columns) + "|")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
