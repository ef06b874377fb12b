"""Weights & Biases logging of a lottery run.

One W&B run per level (job_type `level`), all in one group per experiment (the run directory's
name, so an experiment's levels sit together and extend together), plus one `summary` run per
experiment (its id is the run hash's: a re-run, an extension to more levels or replicates, updates
it rather than adding one; offline, each invocation writes a directory that `wandb sync` uploads
into that one run) holding the results table (a `wandb.Table`), accuracy-vs-density summaries and the
run's figures (`lth.analysis.figures`, as `wandb.Image`s under `figures/`) and the ticket metrics
(`lth.analysis.metrics`: tables under `metrics/`, the headline numbers in the run's summary).

Logged per level: training loss/accuracy/learning rate (mean over windows of `log_every` steps),
validation and test loss/accuracy at every evaluation, each as the mean over replicates and per
replicate (`..._r0`, `..._r1`), against the training step; and the level's summary (density,
final and early-stop accuracy, early-stop step, winning ticket). Controls trained beside the
tickets log the same metrics under their name (`reinit/test/accuracy`, `reinit/train/loss_r0`),
and the level summary gains each control's accuracy and the ticket-minus-control gap
(`reinit/gap`). `mode` is `offline` by default
(written under the run directory, `wandb sync`-able later, no account needed), `online` or
`disabled`. A run is always finished, with a failing exit code when training raised.

Every W&B run has an id fixed by the experiment (`lth.integrations.wandb_ids`) and is opened with
`resume="allow"`, so an interrupted and resumed level continues its own run: `<run id>-L01` (with
the members it trains when a later invocation adds replicates or controls to a finished level), and
its history is logged against the training step, so the resumed part starts after the checkpoint
it resumed from. Offline, each invocation writes a folder of its own that `wandb sync` uploads into
that one run. The summary run's history continues across invocations (its next step is kept in
`wandb/lth-steps.json` in the run directory). A command that trains nothing (a re-run of a finished
run) records nothing: no run is opened (under a sweep agent, whose run judges the job, the summary
is still logged).

The summary run's summary also holds the numbers a sweep optimises (`lth.integrations.sweep_objective`:
`sweep/final_test_accuracy`, `sweep/sparsest_matching_density`), and the run ends by logging two
artifacts to it (`lth.integrations.artifacts`): `results` (results.csv, summary.json) and `masks` (masks.npz).

Under a W&B sweep agent (`wandb agent` sets `WANDB_SWEEP_ID` and the run id it created,
`WANDB_RUN_ID`, in the environment of the command it starts) the sweep judges the run the agent
made, and W&B gives that id to every `wandb.init` in the process (it ignores an `id=` argument
in a sweep). So under an agent the agent's run *is* the summary run (its id, not
`<hash>-summary`), and there are no separate level runs: each level's curves go to the same run
under `level_NN/` (`level_01/test/accuracy`, against its own step `level_01/step`, declared with
`define_metric`), and the level's summary into the run's summary under the same prefix.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from lth.integrations import wandb_ids


def agent_run_id() -> Optional[str]:
    """The id of the run a W&B sweep agent started this process for, or None outside an agent."""
    if os.environ.get("WANDB_SWEEP_ID") and os.environ.get("WANDB_RUN_ID"):
        return os.environ["WANDB_RUN_ID"]
    return None


def side_run(cfg: Any, rd: Any, job_type: str):
    """A W&B run of its own for a job beside a lottery run (compress, export): named after and
    written into its run directory `rd`, the whole config plus the directory and hash as its
    config; None when `logger.wandb.mode=disabled`."""
    wb = cfg.logger.wandb
    if wb.mode == "disabled":
        return None
    import wandb

    from lth.config.schema import to_dict

    return wandb.init(mode=wb.mode, project=wb.project, entity=wb.entity, group=wb.group or os.path.basename(rd.path),
                      name=os.path.basename(rd.path), job_type=job_type, tags=wb.tags, dir=rd.path,
                      config={**to_dict(cfg), "run_dir": rd.path, "run_hash": rd.hash},
                      settings=wandb.Settings(silent=True, console="off"), reinit="create_new")


class WandbLogger:
    def __init__(self, *, mode: str, project: str, entity: Optional[str], group: str, tags: list[str],
                 config: dict[str, Any], directory: str, log_every: int, label: str, run_id: Optional[str] = None):
        self.mode, self.project, self.entity, self.group = mode, project, entity, group
        self.tags, self.config, self.dir, self.log_every, self.label = list(tags), config, directory, max(1, log_every), label
        self.run_id = run_id  # the experiment's id (its hash): the summary run is `<run_id>-summary`
        self.run = None
        self.summary_run = None  # the invocation's `summary` run, open from the results on until `finish`
        self.enabled = mode != "disabled"
        self.members: list[tuple[str, int]] = []  # (kind, count) along the member axis of the metrics
        self.agent_run = agent_run_id() if self.enabled else None  # under a sweep agent: its run is the summary run
        self.prefix = ""  # under an agent, `level_NN/` before every level metric
        self.trained = False  # a level was started in this invocation: only then is anything recorded
        self._step = 0  # the summary run's next history step (continued across invocations)

    @property
    def records(self) -> bool:
        """Whether this invocation records the results: W&B is on and a level was trained (or a sweep
        agent's run waits for them)."""
        return self.enabled and (self.trained or self.agent_run is not None)

    # -- lifecycle ----------------------------------------------------------------------------
    def _init(self, name: str, job_type: str, extra: dict[str, Any], run_id: Optional[str] = None):
        if not self.enabled:
            return None
        import wandb

        os.makedirs(self.dir, exist_ok=True)
        resume = {"id": run_id, "resume": "allow"} if run_id else {}
        return wandb.init(
            mode=self.mode, project=self.project, entity=self.entity, group=self.group, name=name,
            job_type=job_type, tags=self.tags, dir=self.dir, config={**self.config, **extra},
            settings=wandb.Settings(silent=True, console="off"), reinit="create_new", **resume,
        )

    def start_level(self, level: int, density: float, members: Optional[list[tuple[str, int]]] = None,
                    firsts: Optional[list[int]] = None) -> None:
        """A W&B run for one level (its id: `lth.integrations.wandb_ids.level_id`); `members` names the
        slices of the member axis (default: all tickets), `firsts` each slice's first replicate
        (default: 0)."""
        self.members = list(members or [])
        self.trained = True
        if self.agent_run:  # one run under an agent: the level's metrics go to it, under level_NN/
            self._close_level()
            run = self._summary()
            if run is not None:
                self.prefix = f"level_{level:02d}/"
                run.define_metric(f"{self.prefix}step")
                run.define_metric(f"{self.prefix}*", step_metric=f"{self.prefix}step")
                run.summary.update({f"{self.prefix}density": density})
            self.run = run
            return
        self.finish()
        run_id = wandb_ids.level_id(self.run_id, level, self.members, firsts) if self.run_id else None
        self.run = self._init(f"{self.label}-L{level:02d}", "level", {"level": level, "density": density}, run_id=run_id)

    def _close_level(self, failed: bool = False) -> None:
        """Finish the open level run (under an agent, the level run is the summary run: left open)."""
        run, self.run = self.run, None
        if run is not None and run is not self.summary_run:
            run.finish(exit_code=1 if failed else 0)

    def _log_level(self, data: dict[str, Any], step: int) -> None:
        if self.prefix:
            self.run.log({f"{self.prefix}{k}": v for k, v in data.items()} | {f"{self.prefix}step": step})
        else:
            self.run.log(data, step=step)

    def finish(self, failed: bool = False) -> None:
        """Finish the open level run and the summary run, if any."""
        self._close_level(failed)
        run, self.summary_run = self.summary_run, None
        if run is not None:
            run.finish(exit_code=1 if failed else 0)

    def _summary(self):
        """The experiment's `summary` run (opened on first use; `finish` closes it), so the
        results, figures and metrics share one W&B run, across invocations too."""
        if self.summary_run is None:
            self._close_level() if self.agent_run else self.finish()
            run_id = self.agent_run or (f"{self.run_id}-summary" if self.run_id else None)
            self.summary_run = self._init(f"{self.label}-summary", "summary", {}, run_id=run_id)
            if self.summary_run is not None and not self.agent_run:
                self._step = wandb_ids.next_step(self.dir, self.summary_run)
        return self.summary_run

    def _log_summary(self, data: dict[str, Any]) -> None:
        """One history row of the summary run, at the step after the last one any invocation logged
        (under an agent, at the agent run's own next step)."""
        run = self._summary()
        if self.agent_run:
            run.log(data)
            return
        run.log(data, step=self._step)
        self._step += 1
        wandb_ids.save_step(self.dir, run.id, self._step)

    # -- metrics ------------------------------------------------------------------------------
    def _parts(self, n: int):
        """(prefix, slice) per kind along a member axis of length n; tickets have no prefix."""
        if not self.members:
            return [("", slice(0, n))]
        out, start = [], 0
        for kind, size in self.members:
            out.append(("" if kind == "ticket" else f"{kind}/", slice(start, start + size)))
            start += size
        return out

    def log_train(self, start: int, metrics: dict[str, np.ndarray]) -> None:
        """Per-step metrics (n, members) of steps start..start+n-1, logged as window means."""
        if self.run is None:
            return
        first = next(iter(metrics.values()))
        n = len(first)
        for lo in range(0, n, self.log_every):
            hi = min(n, lo + self.log_every)
            data = {}
            for prefix, sl in self._parts(first.shape[1]):
                for k, v in metrics.items():
                    w = v[lo:hi, sl].mean(axis=0)  # (R,)
                    data[f"{prefix}train/{k}"] = float(w.mean())
                    if k != "lr":
                        data.update({f"{prefix}train/{k}_r{r}": float(x) for r, x in enumerate(w)})
            self._log_level(data, int(start + hi))

    def log_eval(self, step: int, metrics: dict[str, np.ndarray]) -> None:
        if self.run is None:
            return
        data = {}
        for prefix, sl in self._parts(len(next(iter(metrics.values())))):
            for k, v in metrics.items():
                v = np.asarray(v)[sl]
                data[f"{prefix}{k}"] = float(np.mean(v))
                data.update({f"{prefix}{k}_r{r}": float(x) for r, x in enumerate(v)})
        self._log_level(data, int(step))

    def end_level(self, summary: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update({f"{self.prefix}{k}": v for k, v in summary.items()})
        self.prefix = ""
        self._close_level() if self.agent_run else self.finish()

    def log_results(self, results, summary_table) -> None:
        """The results table and per-level outcomes, in the `summary` run of the group (left open
        for the figures; `finish` closes it)."""
        if not self.records:
            return
        import pandas as pd
        import wandb

        run = self._summary()
        t = summary_table.reset_index()
        # W&B tables take None, not pandas' NA (the dense level has no winning-ticket verdict).
        levels = t.astype(object).where(t.notna(), None)
        self._log_summary({"results": wandb.Table(dataframe=results), "levels": wandb.Table(dataframe=levels)})
        from lth.integrations import sweep_objective

        run.summary.update(sweep_objective.objectives(summary_table))
        for _, row in t.iterrows():
            gaps = {c: float(row[c]) for c in t.columns if (c.startswith("gap_") or c.endswith("_acc")) and pd.notna(row[c])}
            self._log_summary({"level": int(row.level), "density": float(row.density), "test_accuracy": float(row.test_acc),
                     "early_stop_test_accuracy": float(row.es_test_acc), "early_stop_step": float(row.es_step), **gaps})

    def log_metrics(self, metrics, headline: dict[str, Any]) -> None:
        """The ticket metrics (`lth.analysis.metrics`) in the summary run: a `wandb.Table` per table
        (`metrics/levels`, `metrics/tensors`, `metrics/overlap`) and the headline numbers
        (`sparsest_matching_density`, `sparsest_winning_level`, ...) in the run's summary."""
        if not self.records:
            return
        import wandb

        run = self._summary()
        # W&B tables take None, not pandas' NA or NaN.
        self._log_summary({f"metrics/{name}": wandb.Table(dataframe=frame.astype(object).where(frame.notna(), None))
                 for name, frame in metrics.items()})
        run.summary.update({k: v for k, v in headline.items() if v is not None})

    def log_figures(self, figures) -> None:
        """Figures (PNG paths or matplotlib Figures, as a list or a {name: figure} dict) as
        `wandb.Image`s in the summary run, under `figures/<name>` (a path's file name without
        its extension; PDFs and other non-images are left out)."""
        if not self.records:
            return
        import wandb

        items = figures.items() if isinstance(figures, dict) else [(None, f) for f in figures]
        images = {}
        for i, (name, fig) in enumerate(items):
            if isinstance(fig, (str, os.PathLike)):
                if os.path.splitext(str(fig))[1].lower() not in (".png", ".jpg", ".jpeg"):
                    continue
                name = name or os.path.splitext(os.path.basename(str(fig)))[0]
                images[f"figures/{name}"] = wandb.Image(str(fig))
            else:
                label = fig.axes[0].get_title() if getattr(fig, "axes", None) else ""
                images[f"figures/{name or label or i}"] = wandb.Image(fig)
        if images:
            self._log_summary(images)

    def log_artifacts(self, run_dir: str) -> None:
        """The run's `results` and `masks` artifacts (`lth.integrations.artifacts`: results.csv and summary.json;
        masks.npz) in the summary run, named `<run id>-results` and `<run id>-masks`."""
        if not self.records:
            return
        import tempfile

        import wandb

        from lth.integrations import artifacts

        run = self._summary()
        name = self.run_id or os.path.basename(run_dir)
        results = wandb.Artifact(f"{name}-results", type="results",
                                 description="results.csv and summary.json of the lottery run (lth.integrations.artifacts)")
        for f in artifacts.RESULT_FILES:
            results.add_file(os.path.join(run_dir, f), name=f)
        run.log_artifact(results)
        with tempfile.TemporaryDirectory() as tmp:  # add_file copies the file into W&B's staging area
            path = os.path.join(tmp, "masks.npz")
            keys = artifacts.write_masks_npz(run_dir, path)
            masks = wandb.Artifact(f"{name}-masks", type="masks", metadata={"keys": keys},
                                   description="every mask of the lottery run, level_NN/<kind>/<tensor> (lth.integrations.artifacts)")
            masks.add_file(path, name="masks.npz")
            run.log_artifact(masks)
