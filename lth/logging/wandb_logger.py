"""Weights & Biases logging of a lottery run.

One W&B run per level (job_type `level`), all in one group per experiment (the run directory's
name, so an experiment's levels sit together and extend together), plus one `summary` run per
invocation holding the results table (a `wandb.Table`) and accuracy-vs-density summaries.

Logged per level: training loss/accuracy/learning rate (mean over windows of `log_every` steps),
validation and test loss/accuracy at every evaluation, each as the mean over replicates and per
replicate (`..._r0`, `..._r1`), against the training step; and the level's summary (density,
final and early-stop accuracy, early-stop step, winning ticket). `mode` is `offline` by default
(written under the run directory, `wandb sync`-able later, no account needed), `online` or
`disabled`. A run is always finished, with a failing exit code when training raised.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np


class WandbLogger:
    def __init__(self, *, mode: str, project: str, entity: Optional[str], group: str, tags: list[str],
                 config: dict[str, Any], directory: str, log_every: int, label: str):
        self.mode, self.project, self.entity, self.group = mode, project, entity, group
        self.tags, self.config, self.dir, self.log_every, self.label = list(tags), config, directory, max(1, log_every), label
        self.run = None
        self.enabled = mode != "disabled"

    # -- lifecycle ----------------------------------------------------------------------------
    def _init(self, name: str, job_type: str, extra: dict[str, Any]):
        if not self.enabled:
            return None
        import wandb

        os.makedirs(self.dir, exist_ok=True)
        return wandb.init(
            mode=self.mode, project=self.project, entity=self.entity, group=self.group, name=name,
            job_type=job_type, tags=self.tags, dir=self.dir, config={**self.config, **extra},
            settings=wandb.Settings(silent=True, console="off"), reinit="create_new",
        )

    def start_level(self, level: int, density: float) -> None:
        self.finish()
        self.run = self._init(f"{self.label}-L{level:02d}", "level", {"level": level, "density": density})

    def finish(self, failed: bool = False) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1 if failed else 0)
            self.run = None

    # -- metrics ------------------------------------------------------------------------------
    def log_train(self, start: int, metrics: dict[str, np.ndarray]) -> None:
        """Per-step metrics (n, R) of steps start..start+n-1, logged as window means."""
        if self.run is None:
            return
        n = len(next(iter(metrics.values())))
        for lo in range(0, n, self.log_every):
            hi = min(n, lo + self.log_every)
            data = {}
            for k, v in metrics.items():
                w = v[lo:hi].mean(axis=0)  # (R,)
                data[f"train/{k}"] = float(w.mean())
                if k != "lr":
                    data.update({f"train/{k}_r{r}": float(x) for r, x in enumerate(w)})
            self.run.log(data, step=int(start + hi))

    def log_eval(self, step: int, metrics: dict[str, np.ndarray]) -> None:
        if self.run is None:
            return
        data = {}
        for k, v in metrics.items():
            data[k] = float(np.mean(v))
            data.update({f"{k}_r{r}": float(x) for r, x in enumerate(v)})
        self.run.log(data, step=int(step))

    def end_level(self, summary: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(summary)
        self.finish()

    def log_results(self, results, summary_table) -> None:
        """The results table and per-level outcomes, in a `summary` run of the group."""
        if not self.enabled:
            return
        import wandb

        run = self._init(f"{self.label}-summary", "summary", {})
        try:
            t = summary_table.reset_index()
            # W&B tables take None, not pandas' NA (the dense level has no winning-ticket verdict).
            levels = t.astype(object).where(t.notna(), None)
            run.log({"results": wandb.Table(dataframe=results), "levels": wandb.Table(dataframe=levels)})
            for _, row in t.iterrows():
                run.log({"level": int(row.level), "density": float(row.density), "test_accuracy": float(row.test_acc),
                         "early_stop_test_accuracy": float(row.es_test_acc), "early_stop_step": float(row.es_step)})
        finally:
            run.finish()
