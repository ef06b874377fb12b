"""What a lottery run says about itself: the parameter counts and per-kind and per-level summaries written to
summary.json and W&B (`_kind_summary`, `_level_summary`, `_flat_summary`), the lines it prints
(`_level_line`, `_pruning_line`) and its progress bar or log lines (`_progress`, `LogProgress`).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from lth.sparsity import masks as M
from lth.runs import results
from lth.config.schema import Config
from lth.lottery.plan import Plan


def _counts(params, paths) -> dict[str, Any]:
    flat = M.flatten(params)
    return {
        "total_parameters": int(sum(np.size(v) for v in flat.values())),
        "prunable_weights": int(sum(np.size(flat[p]) for p in paths)),
        "tensor_sizes": {p: int(np.size(flat[p])) for p in paths},  # the prunable tensors
    }


def _pruning_line(cfg: Config, plan: Plan) -> str:
    """How this run prunes, in words, for the run's first line."""
    p = cfg.pruning
    gran = {"weight": "", "n:m": f" ({p.n_m[0]}:{p.n_m[1]})", "block": f" ({p.block[0]}x{p.block[1]} blocks)"}.get(
        p.granularity, f" ({p.granularity}s)")
    what = (f"{p.method} ({p.score_fn})" if p.score_fn else p.method) + gran + f", {p.scope}"
    if p.distribution != "uniform":
        what += f", {p.distribution} distribution"
    if p.schedule == "gradual":
        begin, end, every = plan.gradual
        what += f", gradual to density {p.target_density} over steps {begin}..{end} every {every}"
    elif p.schedule == "dynamic":
        if p.method == "magnitude_ste":
            what += f", dynamic at density {p.target_density}" + (f", SR-STE decay {p.ste_decay:g}" if p.ste_decay else "")
        else:
            begin, end, every = plan.dynamic
            d = p.dynamic
            what = (f"{p.method}{gran} dynamic sparse training at density {p.target_density} ({p.distribution} per tensor)" +
                    ("" if p.method == "static" else f", mask moved every {every} steps over {begin}..{end - 1}, drop fraction "
                     f"{d.drop_fraction:g} ({d.drop_decay})"))
    elif p.schedule == "oneshot":
        what += f", one shot to density {p.target_density}"
    else:
        what += f", {p.fraction:g} per level" + (" of the dense count (linear)" if p.schedule == "linear" else "")
        if p.fractions:
            what += " (" + ", ".join(f"{pattern}: {frac:g}" for pattern, frac in p.fractions.items()) + ")"
    return what + (f", ablation {p.ablation}" if p.ablation != "none" else "")


def _kind_summary(rows, per_tensor) -> dict[str, Any]:
    mean = lambda key: float(np.mean([r[key] for r in rows]))
    return {
        "density": mean("density"), "flops_fraction": mean("flops_fraction"), "test_accuracy": mean("test_accuracy"),
        "test_accuracy_std": float(np.std([r["test_accuracy"] for r in rows])),
        "early_stop_step": mean("early_stop_step"), "early_stop_test_accuracy": mean("early_stop_test_accuracy"),
        "min_val_loss": mean("min_val_loss"), "seconds": rows[0]["seconds"], "tensor_densities": per_tensor,
        **({"mask_turnover": mean("mask_turnover")} if all("mask_turnover" in r for r in rows) else {}),
    }


def _level_summary(done: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ticket's summary, plus per control its accuracy and the ticket-minus-control gap."""
    out = dict(done["ticket"]["summary"])
    ctl = {kind: results.compare_to_control(done["ticket"]["rows"], r["rows"]) for kind, r in done.items() if kind != "ticket"}
    if ctl:
        out["controls"] = ctl
    return out


def _flat_summary(lsum: dict[str, Any]) -> dict[str, Any]:
    """A level's summary for W&B: scalars only, controls as `<kind>/<metric>`."""
    out = {k: v for k, v in lsum.items() if k not in ("tensor_densities", "controls", "structured")}
    for kind, c in lsum.get("controls", {}).items():
        out.update({f"{kind}/{k}": v for k, v in c.items()})
    return out


def _level_line(level, s, seconds) -> str:
    es = (f"early stop at {s['early_stop_step']:.0f} ({100 * s['early_stop_test_accuracy']:.2f})"
          if np.isfinite(s["early_stop_step"]) else "no early stop (no validation data)")
    line = (f"level {level:2d}: density {100 * s['density']:6.2f}%  test acc {100 * s['test_accuracy']:.2f} "
            f"± {100 * s['test_accuracy_std']:.2f}  {es}  {seconds:.1f}s")
    for kind, c in s.get("controls", {}).items():
        line += (f"\n          {kind}: test acc {100 * c['test_accuracy']:.2f}  ticket gap {100 * c['gap']:+.2f} (final), "
                 f"{100 * c['es_gap']:+.2f} (early stop)  ticket beats it: {results.yes_no(c.get('beats'), 'n/a (no early stop)')}")
    return line


def _progress(cfg: Config, *, total: int, desc: str, stream=None):
    """Progress of one level: tqdm bars on a terminal; in a log file (a SLURM job's), where a bar
    would be one ever-growing line, a plain line every `LogProgress.every` seconds."""
    if not cfg.logger.progress:
        return None
    stream = stream or sys.stderr
    if not (hasattr(stream, "isatty") and stream.isatty()):
        return LogProgress(total=total, desc=desc, stream=stream)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, file=stream, dynamic_ncols=True)


class LogProgress:
    """The part of tqdm's interface `train_level` uses, writing whole lines: `desc: n/total steps
    (pct), steps/s, postfix` at most every `every` seconds, and once at the end."""

    every = 60.0

    def __init__(self, *, total: int, desc: str, stream, clock=None):
        import time

        self.total, self.desc, self.stream, self.n, self.postfix = total, desc, stream, 0, ""
        self.clock = clock or time.monotonic
        self.start = self.last = self.clock()

    def update(self, n: int) -> None:
        self.n += n
        if self.clock() - self.last >= self.every:
            self._line()

    def set_postfix(self, values: dict) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        self._line()

    def _line(self) -> None:
        self.last = now = self.clock()
        rate = self.n / max(now - self.start, 1e-9)
        pct = 100 * self.n / self.total if self.total else 100.0
        line = f"{self.desc}: {self.n}/{self.total} steps ({pct:.0f}%), {rate:.1f} steps/s"
        print(line + (f", {self.postfix}" if self.postfix else ""), file=self.stream, flush=True)
