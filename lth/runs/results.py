"""Results are data: one tidy row per level x replicate x kind, and per-level outcomes.

`results.csv` is what plots, notebooks and W&B read. `kind` is `ticket` for the IMP network and
the control's name for the controls trained beside it (`reinit`, `random_prune`,
`random_prune_global`; `lth.lottery.controls`), `branch` in a branch's table (`lth.lottery.branch`).

Definitions (DESIGN.md §1):
- early-stop step: the step of minimum validation loss; early-stop accuracy: test accuracy there.
  Without validation data (`dataset.val_size=0`) both are NaN and the winning-ticket verdict is NA.
- winning ticket (Frankle & Carbin 2019): early-stop test accuracy >= the dense network's, reached
  in no more steps (compared on means over replicates).
- matching (Frankle et al. 2020): final test accuracy within one standard deviation (across
  replicates) of the dense network's, or within `tolerance` when that is larger; with one dense
  replicate (no spread) and no tolerance, undefined (n/a), never a silent standard deviation of 0.
- against a control (paired by replicate: control r is trained beside ticket r, means over the
  replicates present on both sides): `gap` / `es_gap` are the mean ticket − control final /
  early-stop test accuracy. The ticket *beats* the control (`beats`, `beats_<control>`) with the
  winning-ticket rule's quantities, applied to the control instead of the dense network, and the
  spread across replicates: its mean early-stop accuracy exceeds the control's by more than the
  larger population std (ddof=0) of the two sides' early-stop accuracies,
      es_gap > max(std(ticket es acc), std(control es acc)),
  and its mean early-stop step is no later than the control's. With one replicate (std 0) that is
  es_gap > 0. A tie or a gap within the spread is not a win. Without validation data (no early
  stop) there is no verdict (NA, "n/a"); the final-accuracy gap is still given. Verdicts are
  recomputed from results.csv, so old runs are judged by this rule too.
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
    with each replicate's `lth.sparsity.flops.FlopReport` (`flops`: effective MACs per example, and their
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
            # (lth.train.trainer.train_level) and its accuracies are those of its last finite state.
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
    """One level's control against its tickets, paired by replicate: the control's density,
    accuracies and early-stop step, the ticket-minus-control gaps (final: mean and std over
    replicates; early stop: mean, and the margin it must exceed) and whether the ticket beats the
    control (module docstring; None without early-stopping points)."""
    t = {r["replicate"]: r for r in ticket_rows}
    c = {r["replicate"]: r for r in control_rows}
    reps = sorted(set(t) & set(c))
    col = lambda rows, key: np.array([float(rows[r].get(key, np.nan)) for r in reps])
    diff = col(t, "test_accuracy") - col(c, "test_accuracy")
    t_es, c_es = col(t, "early_stop_test_accuracy"), col(c, "early_stop_test_accuracy")
    t_step, c_step = col(t, "early_stop_step"), col(c, "early_stop_step")
    acc = col(c, "test_accuracy")
    es_gap, margin = float(np.mean(t_es - c_es)), float(max(t_es.std(), c_es.std()))
    es_step_gap = float(t_step.mean() - c_step.mean())
    judged = np.isfinite([es_gap, margin, es_step_gap]).all()
    return {
        "density": float(np.mean([c[r]["density"] for r in reps])),
        "test_accuracy": float(acc.mean()), "test_accuracy_std": float(acc.std()),
        "early_stop_test_accuracy": float(c_es.mean()), "early_stop_test_accuracy_std": float(c_es.std()),
        "early_stop_step": float(c_step.mean()),
        "gap": float(diff.mean()), "gap_std": float(diff.std()), "es_gap": es_gap, "es_margin": margin,
        "es_step_gap": es_step_gap,
        "beats": bool(es_gap > margin and es_step_gap <= 0) if judged else None, "replicates": len(reps),
    }


def summarize(df: pd.DataFrame, *, kind: str = "ticket", tolerance: float = 0.0) -> pd.DataFrame:
    """Per level (one kind): density, mean and std of final and early-stop test accuracy, mean
    early-stop step, and whether the level is a winning ticket (against the dense network) /
    matching. For the tickets, each control in `df` adds its mean final test accuracy
    (`<control>_acc`), the paired final and early-stop gaps (`gap_<control>`, `es_gap_<control>`)
    and whether the ticket beats it (`beats_<control>`, module docstring)."""
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
    """`<control>_acc`, `gap_<control>`, `es_gap_<control>` and `beats_<control>` per level of the
    tickets' table `out` (NaN / NA where the control has no rows, as at the dense level)."""
    cols = {}
    for level in out.index:
        rows = lambda k: df[(df.level == level) & (df.kind == k)].to_dict("records")
        c = rows(control)
        if c:
            cmp = compare_to_control(rows("ticket"), c)
            cols[level] = (cmp["test_accuracy"], cmp["gap"], cmp["es_gap"], pd.NA if cmp["beats"] is None else cmp["beats"])
    get = lambda i: [cols[lv][i] if lv in cols else np.nan for lv in out.index]
    out[f"{control}_acc"], out[f"gap_{control}"], out[f"es_gap_{control}"] = get(0), get(1), get(2)
    out[f"beats_{control}"] = pd.array([cols[lv][3] if lv in cols else pd.NA for lv in out.index], dtype="boolean")


def beside_source(summary: pd.DataFrame, branch_rows: pd.DataFrame, source: pd.DataFrame) -> pd.DataFrame:
    """A branch's per-level table (`summarize(rows, kind="branch")`) with its source run's tickets
    at the same level and replicates beside it: `source_test_acc` ± `source_test_acc_std`
    (population std, as `test_acc_std`), `source_es_test_acc`, and the branch-minus-source gaps
    `gap_source` / `es_gap_source` (final / early-stop accuracy, mean over paired replicates;
    NaN where the source has no such ticket)."""
    out = summary.copy()
    names = ("source_test_acc", "source_test_acc_std", "source_es_test_acc", "gap_source", "es_gap_source")
    cols: dict[str, list[float]] = {n: [] for n in names}
    tickets = source[source.kind == "ticket"]
    for level in out.index:
        b = branch_rows[branch_rows.level == level]
        pair = b.merge(tickets[tickets.level == level], on="replicate", suffixes=("", "_src"))
        if pair.empty:
            for n in names:
                cols[n].append(np.nan)
            continue
        src, src_es = pair.test_accuracy_src, pair.early_stop_test_accuracy_src
        cols["source_test_acc"].append(float(src.mean()))
        cols["source_test_acc_std"].append(float(src.std(ddof=0)))
        cols["source_es_test_acc"].append(float(src_es.mean()))
        cols["gap_source"].append(float((pair.test_accuracy - src).mean()))
        cols["es_gap_source"].append(float((pair.early_stop_test_accuracy - src_es).mean()))
    for n in names:
        out[n] = cols[n]
    return out


def _pm(mean, std) -> list[str]:
    return [("-" if pd.isna(m) else f"{100 * m:.2f} ± {100 * sd:.2f}") for m, sd in zip(mean, std)]


def format_summary(summary: pd.DataFrame) -> str:
    """The per-level table printed at the end of a lottery run or a branch (`verdict_legend` says
    what each column compares): accuracies in percent, mean ± population std over replicates."""
    s = summary.copy()
    s["density"] = (100 * s.density).map("{:.1f}%".format)
    s["test_acc"] = _pm(summary.test_acc, summary.test_acc_std)
    s["es_test_acc"] = [("n/a" if pd.isna(v) else f"{100 * v:.2f}") for v in summary.es_test_acc]
    s["es_step"] = [("n/a" if pd.isna(v) else f"{v:.0f}") for v in summary.es_step]
    s = s.drop(columns=["test_acc_std"])
    names = {"test_acc": "test acc % (final)", "es_step": "early-stop step", "es_test_acc": "early-stop acc %",
             "winning_ticket": "winning (vs dense)", "source_test_acc": "source ticket acc % (final)",
             "source_es_test_acc": "source ticket early-stop acc %"}
    if "source_test_acc" in s:  # a branch (`beside_source`)
        s["source_test_acc"] = _pm(summary.source_test_acc, summary.source_test_acc_std)
        s["source_es_test_acc"] = [("-" if pd.isna(v) else f"{100 * v:.2f}") for v in summary.source_es_test_acc]
        s = s.drop(columns=["source_test_acc_std"])
    for c in s.columns:
        if c.endswith("_acc") and c not in ("test_acc", "es_test_acc", "source_test_acc", "source_es_test_acc"):
            s[c] = [("-" if pd.isna(v) else f"{100 * v:.2f}") for v in summary[c]]
            names[c] = f"{c[:-len('_acc')]} acc %"
        elif c.startswith(("gap_", "es_gap_")):
            s[c] = [("-" if pd.isna(v) else f"{100 * v:+.2f}") for v in summary[c]]
            names[c] = f"{c.split('gap_', 1)[1]} {'es ' if c.startswith('es_') else ''}gap %"
        elif c.startswith("beats_"):
            names[c] = f"beats {c[len('beats_'):]}"
    for c in [c for c in s.columns if c in ("winning_ticket", "matching") or c.startswith("beats_")]:
        # "-": not compared (the dense level itself, a level without the control); "n/a": undefined (no early stop)
        if c.startswith("beats_"):
            none = ["-" if pd.isna(g) else "n/a" for g in summary[f"gap_{c[len('beats_'):]}"]]
        else:
            none = ["-" if lv == 0 or c != "winning_ticket" else "n/a" for lv in summary.index]
        s[c] = [yes_no(v, n) for v, n in zip(summary[c], none)]
    return s.rename(columns=names).to_string()


def yes_no(verdict, none: str = "n/a") -> str:
    """A verdict (bool, or None / NA when undefined) as printed."""
    return none if verdict is None or pd.isna(verdict) else ("yes" if verdict else "no")


def verdict_legend(summary: pd.DataFrame) -> str:
    """What the verdict columns of `format_summary(summary)` compare, one line each."""
    lines = ["accuracies: mean ± population std (ddof=0) over replicates"]
    if "winning_ticket" in summary.columns:
        lines.append("winning (vs dense): mean early-stop test accuracy >= the dense network's and mean early-stop step "
                     "<= its (Frankle & Carbin 2019); it says nothing about the controls")
    if "source_test_acc" in summary.columns:
        lines.append("source ticket: the source run's ticket at the same level, same replicates; source gap / es gap: "
                     "branch - source ticket in final / early-stop accuracy, mean over paired replicates")
    controls = [c[len("beats_"):] for c in summary.columns if c.startswith("beats_")]
    if controls:
        lines.append(f"beats <control> ({', '.join(controls)}): the ticket's mean early-stop accuracy exceeds the "
                     "control's by more than the larger population std of the two across replicates, and its mean "
                     "early-stop step is <= the control's; <control> acc: final; gap / es gap: ticket - control in final / "
                     "early-stop accuracy, mean over paired replicates")
    return "\n".join(lines)
