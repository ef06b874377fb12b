"""Ticket metrics of a finished run: what a level's tickets (and controls) cost and how good they are.

`ticket_metrics(run_or_dir)` returns three tables; `headline(...)` the few numbers a run is quoted
by. `scripts/ticket_report.py RUN_DIR` prints them; a lottery run logs them to its W&B summary run.

`levels`: one row per level x kind (`ticket`, each control, `branch`), over the replicates:
- density: fraction of the prunable weights alive (mean over replicates); remaining_weights: that
  many prunable weights (density x prunable_weights of summary.json, per replicate, mean).
- flops, flops_fraction: forward-pass multiply-accumulates per example with pruned weights skipped
  (dead units cascading), and their fraction of the dense network's (`lth.sparsity.flops`), mean.
- test_acc, es_test_acc: final and early-stop test accuracy, mean, std (population, ddof=0, as the
  matching rule uses), min and max; es_step: mean early-stop step (step of minimum validation loss).
- speedup: the dense network's mean early-stop step / this level's (> 1: stops earlier). Steps are
  counted as the winning-ticket rule counts them (absolute training steps, from 0). NaN without
  validation data, where there is no early stop.
- matching, winning: `lth.runs.results.summarize`'s verdicts (matching: final test accuracy within one
  std of the dense network's; winning: early-stop accuracy >= the dense network's in no more
  steps). A control is judged against the dense *ticket* (level 0 of `ticket`), as the tickets are.
- gap, gap_std, es_gap, es_margin, ticket_beats (control rows): ticket minus control final test
  accuracy, paired by replicate (mean, std), the same for early-stop accuracy (mean), the larger
  population std of the two sides' early-stop accuracies, and whether the ticket beats the control
  (es_gap > es_margin and a mean early-stop step no later than the control's; NA without early
  stop) (`lth.runs.results.compare_to_control`).

`tensors`: one row per level x kind x prunable tensor: size, density (mean, min and max over
replicates) and remaining weights (mean), from summary.json's `tensor_densities` (tickets) and each
control's result.json.

`overlap`: one row per level x kind, from the mask checkpoints (`level_NN/mask` of the tickets or
a branch, `level_NN/controls/<kind>/mask`); NaN where a mask is not on disk (trimmed results). The Jaccard
index of two masks A, B over the prunable weights is |A ∩ B| / |A ∪ B| (1: the same weights alive).
- jaccard_previous (mean, min over replicates): replicate r's mask against replicate r's mask of
  the previous level of the same kind (the ticket's for a control at level 1, whose parent is the
  dense network). Nested IMP masks give exactly density_L / density_{L-1}.
- jaccard_ticket (controls): the control's mask against its ticket's at the same level, per
  replicate, mean (1 for `reinit`, about chance for a random mask).
- jaccard_replicates: mean over pairs of replicates r < s at the level: do seeds find the same
  weights? jaccard_replicates_random: what two independent uniformly random masks with the same
  per-tensor counts would give in expectation, sum_t n_t a_t b_t / sum_t n_t (a_t + b_t - a_t b_t)
  (tensor t of size n_t, densities a_t and b_t), mean over the same pairs.

`headline`: the dense network's final accuracy and early-stop step, the sparsest matching level
(lowest density whose tickets are matching) and the sparsest winning ticket, their densities and
accuracies, and each control's sparsest matching level. None where there is none.
"""

from __future__ import annotations

import json
import os
from itertools import combinations
from typing import Any, Optional, Union

import numpy as np
import pandas as pd

from lth.runs import results as R

STATS = ("mean", "std", "min", "max")


# -- the levels table ------------------------------------------------------------------------------

def level_metrics(df: pd.DataFrame, prunable_weights: Optional[int] = None) -> pd.DataFrame:
    """The `levels` table (module docstring) of a results table `df` (results.csv's columns)."""
    if df.empty:
        return pd.DataFrame()
    kinds = list(dict.fromkeys(["ticket", *sorted(set(df.kind) - {"ticket"})] if "ticket" in set(df.kind) else sorted(set(df.kind))))
    ref = df[(df.kind == "ticket") & (df.level == 0)]
    ticket_table = R.summarize(df, kind="ticket") if "ticket" in kinds else None
    frames = []
    for kind in kinds:
        k = df[df.kind == kind]
        own_dense = (k.level == 0).any()
        if own_dense or ref.empty:
            verdicts = R.summarize(df if kind == "ticket" else k, kind=kind)
            dense_es = k[k.level == 0].early_stop_step.mean() if own_dense else np.nan
        else:  # a control judged against the dense ticket
            verdicts = R.summarize(pd.concat([ref.assign(kind=kind), k]), kind=kind).drop(index=0)
            dense_es = ref.early_stop_step.mean()
        g = k.groupby("level")
        out = pd.DataFrame({"kind": kind, "replicates": g.replicate.count(), "density": g.density.mean()})
        if prunable_weights:
            out["remaining_weights"] = g.density.apply(lambda d: float(np.mean(np.round(d * prunable_weights))))
        else:
            out["remaining_weights"] = np.nan
        for col in ("flops", "flops_fraction"):
            out[col] = g[col].mean() if col in k else np.nan
        for name, col in (("test_acc", "test_accuracy"), ("es_test_acc", "early_stop_test_accuracy")):
            for stat in STATS:
                v = g[col].std(ddof=0) if stat == "std" else g[col].agg(stat)
                out[name if stat == "mean" else f"{name}_{stat}"] = v
        out["es_step"] = g.early_stop_step.mean()
        out["speedup"] = dense_es / out.es_step
        for col, src in (("matching", "matching"), ("winning", "winning_ticket")):
            out[col] = verdicts[src].reindex(out.index) if src in verdicts else pd.array([pd.NA] * len(out), dtype="boolean")
        out["gap"], out["gap_std"], out["es_gap"], out["es_margin"] = np.nan, np.nan, np.nan, np.nan
        out["ticket_beats"] = pd.array([pd.NA] * len(out), dtype="boolean")
        if kind != "ticket" and ticket_table is not None and f"gap_{kind}" in ticket_table:
            out["gap"] = ticket_table[f"gap_{kind}"].reindex(out.index)
            out["ticket_beats"] = ticket_table[f"beats_{kind}"].reindex(out.index).astype("boolean")
            tickets = df[df.kind == "ticket"]
            for level in out.index:
                t, c = tickets[tickets.level == level], k[k.level == level]
                if len(t) and len(c):
                    cmp = R.compare_to_control(t.to_dict("records"), c.to_dict("records"))
                    out.loc[level, ["gap_std", "es_gap", "es_margin"]] = cmp["gap_std"], cmp["es_gap"], cmp["es_margin"]
        frames.append(out.reset_index())
    levels = pd.concat(frames, ignore_index=True)
    order = {k: i for i, k in enumerate(kinds)}
    levels = levels.sort_values(["level", "kind"], key=lambda s: s.map(order) if s.name == "kind" else s, kind="stable")
    return levels.reset_index(drop=True)


def headline(metrics_or_run: Any) -> dict[str, Any]:
    """The headline numbers (module docstring) from `ticket_metrics`'s dict, a `Run` or a run directory."""
    m = metrics_or_run if isinstance(metrics_or_run, dict) and "levels" in metrics_or_run else ticket_metrics(metrics_or_run, overlap=False)
    lv = m["levels"]
    out: dict[str, Any] = {}
    if lv.empty:
        return out
    main = "ticket" if (lv.kind == "ticket").any() else lv.kind.iloc[0]
    t = lv[lv.kind == main].set_index("level")
    dense = t.loc[0] if 0 in t.index else None
    out["last_level"] = int(t.index.max())
    out["sparsest_density"] = float(t.density.min())
    out["dense_test_accuracy"] = None if dense is None else float(dense.test_acc)
    out["dense_early_stop_step"] = None if dense is None or pd.isna(dense.es_step) else float(dense.es_step)
    for what, col, acc in (("matching", "matching", "test_acc"), ("winning", "winning", "es_test_acc")):
        best = _sparsest(t, col)
        out[f"sparsest_{what}_level"] = None if best is None else int(best)
        out[f"sparsest_{what}_density"] = None if best is None else float(t.loc[best, "density"])
        out[f"sparsest_{what}_{'test_accuracy' if acc == 'test_acc' else 'early_stop_test_accuracy'}"] = (
            None if best is None else float(t.loc[best, acc]))
    for kind in [k for k in dict.fromkeys(lv.kind) if k != main]:
        c = lv[lv.kind == kind].set_index("level")
        best = _sparsest(c, "matching")
        out[f"{kind}_sparsest_matching_level"] = None if best is None else int(best)
        out[f"{kind}_sparsest_matching_density"] = None if best is None else float(c.loc[best, "density"])
    return out


def _sparsest(t: pd.DataFrame, col: str) -> Optional[int]:
    """The level of lowest density where `col` is True (None when nowhere)."""
    yes = t[t[col].fillna(False).astype(bool)]
    if yes.empty:
        return None
    return int(yes.density.idxmin())


# -- per tensor ------------------------------------------------------------------------------------

def tensor_metrics(run) -> pd.DataFrame:
    """The `tensors` table (module docstring) of a `lth.api.Run`."""
    from lth.runs.reading import result_files

    sizes = (run.summary.get("parameters") or {}).get("tensor_sizes") or {}
    found: dict[tuple[int, str], dict[str, list[float]]] = {}
    for level, s in (run.summary.get("levels") or {}).items():
        if isinstance(s, dict) and s.get("tensor_densities"):
            found[(int(level), "ticket")] = s["tensor_densities"]
    for level, kind, f in result_files(run.path):
        if (level, kind) in found:
            continue
        with open(f) as fh:
            td = (json.load(fh).get("summary") or {}).get("tensor_densities")
        if td:
            found[(level, kind)] = td
    rows = []
    for (level, kind), td in found.items():
        for path, dens in td.items():
            d = np.asarray(dens, dtype=float)
            n = sizes.get(path)
            rows.append({"level": level, "kind": kind, "tensor": path, "size": n if n is not None else np.nan,
                         "density": d.mean(), "density_min": d.min(), "density_max": d.max(),
                         "remaining_weights": float(np.mean(np.round(d * n))) if n is not None else np.nan})
    if not rows:
        return pd.DataFrame(columns=["level", "kind", "tensor", "size", "density", "density_min", "density_max", "remaining_weights"])
    out = pd.DataFrame(rows)
    return out.sort_values(["level", "kind", "tensor"], key=_ticket_first, kind="stable").reset_index(drop=True)


def _ticket_first(s: pd.Series) -> pd.Series:
    return s.map(lambda k: (0, k) if k == "ticket" else (1, k)) if s.name == "kind" else s


# -- mask overlap ----------------------------------------------------------------------------------

def jaccard(a, b, paths: Optional[list[str]] = None) -> float:
    """|A ∩ B| / |A ∪ B| of two masks (boolean arrays, or pytrees / {path: array} dicts of them,
    restricted to `paths` when given); NaN when both are empty."""
    a, b = _vector(a, paths), _vector(b, paths)
    if a.shape != b.shape:
        raise ValueError(f"jaccard: masks of different shapes {a.shape} and {b.shape}")
    union = int(np.count_nonzero(a | b))
    return float(np.count_nonzero(a & b) / union) if union else float("nan")


def _vector(mask, paths: Optional[list[str]]) -> np.ndarray:
    if isinstance(mask, dict):
        flat = _flatten(mask)
        keys = paths if paths is not None else sorted(flat)
        return np.concatenate([np.asarray(flat[p], bool).ravel() for p in keys]) if keys else np.zeros(0, bool)
    return np.asarray(mask, bool).ravel()


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def random_jaccard(a: dict[str, float], b: dict[str, float], sizes: dict[str, int]) -> float:
    """The expected Jaccard index of two independent uniformly random masks with per-tensor
    densities `a` and `b` (tensor sizes `sizes`): sum n a b / sum n (a + b - a b)."""
    inter = sum(sizes[p] * a[p] * b[p] for p in sizes)
    union = sum(sizes[p] * (a[p] + b[p] - a[p] * b[p]) for p in sizes)
    return float(inter / union) if union else float("nan")


def _load_masks(path: str, prunable: Optional[list[str]], pruning: dict) -> Optional[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """(replicates x prunable weights) boolean matrix and per-tensor masks of one mask checkpoint,
    or None when there is none. The prunable tensors are `prunable`, else those the config's
    `pruning.prunable` / `pruning.exclude` patterns select."""
    if not os.path.isfile(os.path.join(path, "_CHECKPOINT_METADATA")):
        return None
    import re

    from lth.runs import checkpoints

    flat = _flatten(checkpoints.restore(path, None))
    if prunable is None:
        inc, exc = pruning.get("prunable", ["kernel$"]), pruning.get("exclude", [])
        prunable = [p for p in sorted(flat) if any(re.search(x, p) for x in inc) and not any(re.search(x, p) for x in exc)]
    paths = [p for p in prunable if p in flat]
    per = {p: np.asarray(flat[p], bool) for p in paths}
    n = next(iter(per.values())).shape[0] if per else 0
    return np.concatenate([per[p].reshape(n, -1) for p in paths], axis=1), per


def overlap_metrics(run, kinds_levels: Optional[list[tuple[int, str]]] = None, *, read: bool = True) -> pd.DataFrame:
    """The `overlap` table (module docstring) of a `lth.api.Run`, read from its mask checkpoints
    (all NaN with `read=False`)."""
    sizes = (run.summary.get("parameters") or {}).get("tensor_sizes") or {}
    prunable = sorted(sizes) or None
    if kinds_levels is None:
        df = run.results
        kinds_levels = list(dict.fromkeys((int(lv), str(k)) for lv, k in zip(df.level, df.kind)))
    cache: dict[tuple[int, str], Any] = {}

    def masks(level: int, kind: str):
        if not read:
            return None
        if (level, kind) not in cache:
            d = os.path.join(run.path, f"level_{level:02d}")
            cache[(level, kind)] = _load_masks(os.path.join(d, "mask") if kind in ("ticket", "branch") else
                                               os.path.join(d, "controls", kind, "mask"), prunable,
                                               (run.config or {}).get("pruning") or {})
        return cache[(level, kind)]

    rows = []
    for level, kind in sorted(kinds_levels, key=lambda x: (x[0], x[1] != "ticket", x[1])):
        row = {"level": level, "kind": kind, "jaccard_previous": np.nan, "jaccard_previous_min": np.nan,
               "jaccard_ticket": np.nan, "jaccard_replicates": np.nan, "jaccard_replicates_random": np.nan}
        cur = masks(level, kind)
        if cur is not None:
            m, per = cur
            if level > 0:
                prev = masks(level - 1, kind) if (level - 1, kind) in kinds_levels else masks(level - 1, "ticket")
                if prev is not None and prev[0].shape == m.shape:
                    j = [jaccard(m[r], prev[0][r]) for r in range(len(m))]
                    row["jaccard_previous"], row["jaccard_previous_min"] = float(np.mean(j)), float(np.min(j))
            if kind not in ("ticket", "branch"):
                t = masks(level, "ticket")
                if t is not None and t[0].shape == m.shape:
                    row["jaccard_ticket"] = float(np.mean([jaccard(m[r], t[0][r]) for r in range(len(m))]))
            pairs = list(combinations(range(len(m)), 2))
            if pairs:
                row["jaccard_replicates"] = float(np.mean([jaccard(m[r], m[s]) for r, s in pairs]))
                n = {p: int(per[p][0].size) for p in per}
                dens = [{p: float(per[p][r].mean()) for p in per} for r in range(len(m))]
                row["jaccard_replicates_random"] = float(np.mean([random_jaccard(dens[r], dens[s], n) for r, s in pairs]))
        rows.append(row)
    return pd.DataFrame(rows, columns=["level", "kind", "jaccard_previous", "jaccard_previous_min", "jaccard_ticket",
                                       "jaccard_replicates", "jaccard_replicates_random"])


# -- everything ------------------------------------------------------------------------------------

def ticket_metrics(run_or_dir: Union[str, os.PathLike, Any], *, overlap: bool = True) -> dict[str, pd.DataFrame]:
    """{"levels", "tensors", "overlap"} (module docstring) of a finished run (a `lth.api.Run` or its
    directory); `overlap=False` skips reading the mask checkpoints (NaN columns)."""
    from lth.runs.reading import Run, load_run

    run = run_or_dir if isinstance(run_or_dir, Run) else load_run(run_or_dir)
    prunable = (run.summary.get("parameters") or {}).get("prunable_weights")
    levels = level_metrics(run.results, prunable)
    pairs = list(zip(levels.level.astype(int), levels.kind)) if len(levels) else []
    return {"levels": levels, "tensors": tensor_metrics(run), "overlap": overlap_metrics(run, pairs, read=overlap)}


def format_levels(levels: pd.DataFrame) -> str:
    """The `levels` table for a terminal: percentages, verdicts as yes/no/-."""
    if levels.empty:
        return "(no levels)"
    s = pd.DataFrame({"level": levels.level, "kind": levels.kind, "n": levels.replicates,
                      "density %": (100 * levels.density).map("{:.2f}".format)})
    s["weights"] = levels.remaining_weights.map(lambda v: "-" if pd.isna(v) else f"{v:,.0f}")
    s["flops %"] = (100 * levels.flops_fraction).map(lambda v: "-" if pd.isna(v) else f"{v:.2f}")
    for name, col in (("test acc %", "test_acc"), ("es acc %", "es_test_acc")):
        s[name] = [("n/a" if pd.isna(m) else f"{100 * m:.2f} ± {100 * sd:.2f}")
                   for m, sd in zip(levels[col], levels[f"{col}_std"])]
        s[name.replace("%", "min..max")] = [("n/a" if pd.isna(lo) else f"{100 * lo:.2f}..{100 * hi:.2f}")
                                            for lo, hi in zip(levels[f"{col}_min"], levels[f"{col}_max"])]
    s["es step"] = levels.es_step.map(lambda v: "n/a" if pd.isna(v) else f"{v:.0f}")
    s["speed-up"] = levels.speedup.map(lambda v: "n/a" if pd.isna(v) else f"{v:.2f}x")
    for name, col in (("matching", "matching"), ("winning (vs dense)", "winning")):
        s[name] = [("-" if pd.isna(v) else "yes" if v else "no") for v in levels[col]]
    s["gap %"] = [("" if pd.isna(v) else f"{100 * v:+.2f} ± {100 * sd:.2f}") for v, sd in zip(levels.gap, levels.gap_std)]
    s["es gap % / margin"] = [("" if pd.isna(v) else f"{100 * v:+.2f} / {100 * m:.2f}") for v, m in zip(levels.es_gap, levels.es_margin)]
    s["ticket beats it"] = [("" if pd.isna(g) else "n/a" if pd.isna(v) else "yes" if v else "no")
                            for g, v in zip(levels.gap, levels.ticket_beats)]
    return s.to_string(index=False)


def format_headline(h: dict[str, Any]) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}%"

    lines = []
    if h.get("dense_test_accuracy") is not None:
        es = h.get("dense_early_stop_step")
        lines.append(f"dense: test accuracy {pct(h['dense_test_accuracy'])}, early stop at "
                     f"{'n/a (no validation data)' if es is None else f'step {es:.0f}'}")
    for what, acc in (("matching", "test_accuracy"), ("winning", "early_stop_test_accuracy")):
        lv = h.get(f"sparsest_{what}_level")
        label = "sparsest matching level" if what == "matching" else "sparsest winning ticket"
        if lv is None:
            lines.append(f"{label}: none")
        else:
            lines.append(f"{label}: level {lv}, density {pct(h[f'sparsest_{what}_density'])}, "
                         f"{'test' if what == 'matching' else 'early-stop'} accuracy {pct(h[f'sparsest_{what}_{acc}'])}")
    for k in h:
        if k.endswith("_sparsest_matching_level"):
            kind = k[: -len("_sparsest_matching_level")]
            lv = h[k]
            lines.append(f"{kind}: sparsest matching level " + ("none" if lv is None else
                                                                 f"{lv}, density {pct(h[f'{kind}_sparsest_matching_density'])}"))
    return "\n".join(lines)
