#!/usr/bin/env python
"""One table of sparse networks at given densities, whatever made them: dynamic sparse training
(static, SET, RigL, STE), gradual pruning, one-shot and IMP levels, as Markdown.

Every run under the folders (a folder holding results.csv and config.yaml) contributes its tickets
whose density lies within `--tol` of a requested density (an IMP level near it, a dynamic or
gradual run's final mask), grouped by schedule, method and distribution. Cells are the final test
accuracy, mean ± std over replicates (n), and for dynamic runs the mean mask turnover.

    python scripts/sparse_table.py --densities 0.1 0.05 runs/evci_rigl_mnist1d runs/zhu_gupta_gradual_mnist1d runs/frankle2021_pai_mnist1d
"""

from __future__ import annotations

import argparse
import os

import pandas as pd
import yaml

from compare_runs import find_runs  # (scripts/ is on sys.path when a script runs)


def label(cfg: dict) -> str:
    p = cfg["pruning"]
    if p["schedule"] == "iterative":
        what = f"IMP ({p.get('scope') or 'layerwise'}, {p['fraction']:g} per level)"
    elif p["schedule"] == "gradual":
        what = f"gradual magnitude ({p.get('scope') or 'layerwise'})"
    elif p["schedule"] == "dynamic":
        what = {"rigl": "RigL", "set": "SET", "static": "static", "magnitude_ste": "STE"}.get(p["method"], p["method"])
        if p["method"] == "magnitude_ste" and p.get("ste_decay"):
            what = "SR-STE"
    else:
        what = f"{p['method']} {p['schedule']}"
    dist = p.get("distribution", "uniform")
    return what + ("" if dist == "uniform" else f", {dist.upper()}")


def table(folders: list[str], densities: list[float], tol: float, metric: str) -> pd.DataFrame:
    rows = []
    for d in find_runs(folders):
        with open(os.path.join(d, "config.yaml")) as f:
            cfg = yaml.safe_load(f)
        r = pd.read_csv(os.path.join(d, "results.csv"))
        r = r[r["kind"] == "ticket"]
        for want in densities:
            near = r[(r["density"] - want).abs() <= tol]
            if len(near):  # the one level nearest the density (an IMP run has many)
                lvl = near.assign(gap=(near["density"] - want).abs()).sort_values("gap")["level"].iloc[0]
                near = near[near["level"] == lvl]
                for _, x in near.iterrows():
                    rows.append({"network": label(cfg), "density": want, "acc": 100 * x[metric],
                                 "turnover": x.get("mask_turnover", float("nan"))})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    g = df.groupby(["network", "density"])
    cell = g["acc"].agg(["mean", "std", "count"]).join(g["turnover"].mean())
    out = {}
    for (net, dens), c in cell.iterrows():
        s = f"{c['mean']:.1f} ± {0 if pd.isna(c['std']) else c['std']:.1f} ({int(c['count'])})"
        if not pd.isna(c["turnover"]):
            s += f", turnover {c['turnover']:.2f}"
        out.setdefault(net, {})[f"{100 * (1 - dens):g}% sparse"] = s
    t = pd.DataFrame(out).T.sort_index()
    return t[sorted(t.columns, key=lambda c: float(c.split("%")[0]))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--densities", type=float, nargs="+", default=[0.1, 0.05])
    ap.add_argument("--tol", type=float, default=2e-3, help="how far a ticket's density may lie from a requested one")
    ap.add_argument("--metric", default="test_accuracy")
    args = ap.parse_args()
    t = table(args.folders, args.densities, args.tol, args.metric)
    print(f"{args.metric}, % (mean ± std over replicates (n))\n")
    if t.empty:
        print("(no tickets at these densities)")
        return
    cols = list(t.columns)
    print("| network | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
    for net, row in t.iterrows():
        print(f"| {net} | " + " | ".join("" if pd.isna(row[c]) else row[c] for c in cols) + " |")


if __name__ == "__main__":
    main()
