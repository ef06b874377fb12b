"""Results are data: one tidy row per level x replicate x kind, and per-level outcomes.

`results.csv` is what plots, notebooks and W&B read. `kind` is `ticket` for the IMP network and
the control's name for the controls trained beside it (`reinit`, `random_prune`,
`random_prune_global`; `lth.controls`), `branch` in a branch's table (`lth.branch`).

Definitions (DESIGN.md §1):
- early-stop step: the step of minimum validation loss; early-stop accuracy: test accuracy there.
  Without validation data (`dataset.val_size=0`) both are NaN and the winning-ticket verdict is NA.
- winning ticket (Frankle & Carbin 2019): early-stop test accuracy >= the dense network's, reached
  in no more steps (compared on means over replicates).
- matching (Frankle et al. 2020): final test accuracy within one standard deviation (across
  replicates) of the dense network's, or within `tolerance` when that is larger; with one dense
  replicate (no spread) and no tolerance, undefined (n/a), never a silent standard deviation of 0.
- against a control (paired by replicate: control r is trained beside ticket r): the gap is the
  mean over replicates of ticket − control final test accuracy (`gap`, with `es_gap` for the
  early-stop accuracy); the ticket is winning against the control when that gap is > 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

COLUMNS = [
    "level", "replicate", "kind", "density", "test_accuracy", "test_loss", "val_accuracy", "val_loss",
    "train_loss", "early_stop_step", "early_stop_test_accuracy", "early_stop_val_accuracy", "min_val_loss",
    "start_step", "end_step", "steps", "seconds", "flops", "flops_fraction", "status", "diverged_step",
]


def level_rows(level: int, kind: str, densities: np.ndarray, history, *, start: int, end: int,
               flops: list | None = None, first: int = 0) -> list[dict[str, Any]]:
    """The rows of one trained level (replicates `first`, `first` + 1, ...) from its `LevelHistory`,
    with each replicate's `lth.flops.FlopReport` (`flops`: effective MACs per example, and their
    fraction of the dense network's) when given."""
    last = history.evals[-1]
    es = history.early_stop()
    train_loss = history.train["loss"]
    diverged = getattr(history, "diverged", None)
    rows = []
    for r in range(len(densities)):
        get = lambda key: float(last[key][r]) if key in last else float("nan")
        rows.append({
            "level": level, "replicate": first + r, "kind": kind, "density": float(densities[r]),
            "test_accuracy": get("test/accuracy"), "test_loss": get("test/loss"),
            "val_accuracy": get("val/accuracy"), "val_loss": get("val/loss"),
            "train_loss": float(train_loss[-1, r]) if train_loss.size else float("nan"),
            "early_stop_step": int(es["early_stop_step"][r]) if np.isfinite(es["early_stop_step"][r]) else float("nan"),
            "early_stop_test_accuracy": float(es["early_stop_test_accuracy"][r]),
            "early_stop_val_accuracy": float(es["early_stop_val_accuracy"][r]),
            "min_val_loss": float(es["min_val_loss"][r]),
            "start_step": start, "end_step": end, "steps": end - start,
            "seconds": round(history.seconds, 3),
            "flops": int(flops[r].effective) if flops else float("nan"),
            "flops_fraction": flops[r].effective / flops[r].dense if flops else float("nan"),
            # `diverged`: the loss stopped being finite at `diverged_step`; the member was stopped there
            # (lth.train.train_level) and its accuracies are those of its last finite state.
            "status": "diverged" if diverged is not None and diverged[r] >= 0 else "ok",
            "diverged_step": int(diverged[r]) if diverged is not None and diverged[r] >= 0 else float("nan"),
        })
    return rows


def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=COLUMNS)
    if "status" not in df:  # rows written before divergence was recorded: every member trained to the end
        df["status"], df["diverged_step"] = "ok", float("nan")
    df["status"] = df["status"].fillna("ok")
    extra = [c for c in df.columns if c not in COLUMNS]
    return df[[c for c in COLUMNS if c in df.columns] + extra].sort_values(["level", "kind", "replicate"], kind="stable").reset_index(drop=True)


def compare_to_control(ticket_rows: list[dict[str, Any]], control_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One level's control against its tickets, paired by replicate: the control's density and
    accuracies, the ticket-minus-control gaps (mean and std over replicates) and whether the
    ticket is winning against it (gap > 0)."""
    t = {r["replicate"]: r for r in ticket_rows}
    c = {r["replicate"]: r for r in control_rows}
    reps = sorted(set(t) & set(c))
    diff = np.array([t[r]["test_accuracy"] - c[r]["test_accuracy"] for r in reps])
    es_diff = np.array([t[r]["early_stop_test_accuracy"] - c[r]["early_stop_test_accuracy"] for r in reps])
    acc = np.array([c[r]["test_accuracy"] for r in reps])
    return {
        "density": float(np.mean([c[r]["density"] for r in reps])),
        "test_accuracy": float(acc.mean()), "test_accuracy_std": float(acc.std()),
        "early_stop_test_accuracy": float(np.mean([c[r]["early_stop_test_accuracy"] for r in reps])),
        "gap": float(diff.mean()), "gap_std": float(diff.std()), "es_gap": float(es_diff.mean()),
        "winning": bool(diff.mean() > 0), "replicates": len(reps),
    }


def summarize(df: pd.DataFrame, *, kind: str = "ticket", tolerance: float = 0.0) -> pd.DataFrame:
    """Per level (one kind): density, mean and std of final and early-stop test accuracy, mean
    early-stop step, and whether the level is a winning ticket / matching. For the tickets, each
    control in `df` adds its mean final test accuracy (`<control>_acc`), the paired gap
    (`gap_<control>`) and whether the ticket wins against it (`wins_<control>`)."""
    t = df[df.kind == kind]
    g = t.groupby("level")
    out = pd.DataFrame({
        "density": g.density.mean(),
        "test_acc": g.test_accuracy.mean(),
        "test_acc_std": g.test_accuracy.std(ddof=0),
        "es_step": g.early_stop_step.mean(),
        "es_test_acc": g.early_stop_test_accuracy.mean(),
        "replicates": g.replicate.count(),
    })
    if "status" in t and (t.status == "diverged").any():
        out["diverged"] = (t.status == "diverged").groupby(t.level).sum()
    if 0 in out.index:
        dense = out.loc[0]
        win = (out.es_test_acc >= dense.es_test_acc) & (out.es_step <= dense.es_step)
        # Without validation data there is no early-stopping point, hence no verdict (NA, "n/a").
        win = win.astype("boolean").mask(out.es_test_acc.isna() | pd.isna(dense.es_test_acc))
        match = out.test_acc >= dense.test_acc - max(float(dense.test_acc_std), tolerance)
        # One dense replicate has no spread to compare within: no verdict (n/a) unless a tolerance is given.
        single = int(dense.replicates) < 2 and tolerance <= 0
        # Undefined for the dense network itself (pandas' nullable boolean holds the NA).
        out["winning_ticket"] = win.astype("boolean").mask(out.index == 0)
        out["matching"] = match.astype("boolean").mask((out.index == 0) | single)
    if kind == "ticket":
        for control in [k for k in dict.fromkeys(df.kind) if k != "ticket"]:
            _add_control_columns(out, df, control)
    return out


def _add_control_columns(out: pd.DataFrame, df: pd.DataFrame, control: str) -> None:
    """`<control>_acc`, `gap_<control>` and `wins_<control>` per level of the tickets' table `out`
    (NaN / NA where the control has no rows, as at the dense level)."""
    cols = {}
    for level in out.index:
        rows = lambda k: df[(df.level == level) & (df.kind == k)].to_dict("records")
        c = rows(control)
        if c:
            cmp = compare_to_control(rows("ticket"), c)
            cols[level] = (cmp["test_accuracy"], cmp["gap"], cmp["winning"])
    idx = out.index
    out[f"{control}_acc"] = [cols[lv][0] if lv in cols else np.nan for lv in idx]
    out[f"gap_{control}"] = [cols[lv][1] if lv in cols else np.nan for lv in idx]
    out[f"wins_{control}"] = pd.array([cols[lv][2] if lv in cols else pd.NA for lv in idx], dtype="boolean")


def format_summary(summary: pd.DataFrame) -> str:
    """The per-level table printed at the end of a run."""
    s = summary.copy()
    s["density"] = (100 * s.density).map("{:.1f}%".format)
    s["test_acc"] = [f"{100 * m:.2f} ± {100 * sd:.2f}" for m, sd in zip(summary.test_acc, summary.test_acc_std)]
    s["es_test_acc"] = [("n/a" if pd.isna(v) else f"{100 * v:.2f}") for v in summary.es_test_acc]
    s["es_step"] = [("n/a" if pd.isna(v) else f"{v:.0f}") for v in summary.es_step]
    s = s.drop(columns=["test_acc_std"])
    for c in s.columns:
        if c.endswith("_acc") and c not in ("test_acc", "es_test_acc"):
            s[c] = [("-" if pd.isna(v) else f"{100 * v:.2f}") for v in summary[c]]
        elif c.startswith("gap_"):
            s[c] = [("-" if pd.isna(v) else f"{100 * v:+.2f}") for v in summary[c]]
    for c in [c for c in s.columns if c in ("winning_ticket", "matching") or c.startswith("wins_")]:
        if c in s:  # "-": not compared (the dense level itself, no control); "n/a": undefined
            s[c] = [("-" if pd.isna(v) and (lv == 0 or c != "winning_ticket") else "n/a" if pd.isna(v) else
                     ("yes" if v else "no")) for lv, v in zip(summary.index, summary[c])]
    s = s.rename(columns={"test_acc": "test acc % (final)", "es_step": "early-stop step", "es_test_acc": "early-stop acc %",
                          "winning_ticket": "winning ticket"})
    return s.to_string()
