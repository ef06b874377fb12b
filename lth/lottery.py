"""Iterative magnitude pruning with rewinding: one lottery-ticket run, level by level.

Level 0 trains the dense network from θ0 to the end, keeping the states at the rewind point k.
Level L >= 1 prunes a fraction of the remaining weights of level L-1's final weights (a subset of
its mask), rewinds the survivors to θk (and the step to k) and trains to the end again. Every
level writes its mask, final weights and result rows before the next starts, so an interrupted run
loses at most the level in progress, and re-running the same command skips what is done.

`run(cfg)` is the whole experiment; `experiments/lottery.py` is its Hydra front end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any, Callable, Optional

import jax
import numpy as np
import pandas as pd

from lth import checkpoints, masks as M, pruning, results
from lth.config import Config, ConfigError, data_dir, to_dict, validate
from lth.durations import to_steps
from lth.optim import make_optimizer, make_schedule
from lth.rewind import rewind_weights, snapshot
from lth.run_dir import RunDir, write_atomic, write_json
from lth.train import Trainer, replicate_keys, stacked_density, train_level


@dataclasses.dataclass(frozen=True)
class Plan:
    """The run's durations in steps, fixed once the dataset (hence steps per epoch) is known."""

    total_steps: int
    rewind_step: int
    eval_every: int
    log_every: int
    steps_per_epoch: int

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def make_plan(cfg: Config, num_train: int) -> Plan:
    spe = num_train // cfg.train.batch_size
    if spe < 1:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} is larger than the training set ({num_train} examples)")
    total = to_steps(cfg.train.duration, spe, setting="train.duration")
    if total < 1:
        raise ConfigError(f"train.duration={cfg.train.duration!r}: training must last at least one step")
    k = to_steps(cfg.rewind.point, spe, setting="rewind.point")
    if k >= total:
        raise ConfigError(
            f"rewind.point={cfg.rewind.point!r} is step {k}, not before the end of training "
            f"(train.duration={cfg.train.duration!r} = {total} steps): the rewind point must be < {total} steps"
        )
    eval_every = to_steps(cfg.train.eval_every, spe, setting="train.eval_every")
    log_every = to_steps(cfg.logger.wandb.log_every, spe, setting="logger.wandb.log_every")
    return Plan(total, k, max(1, eval_every), max(1, log_every), spe)


@dataclasses.dataclass
class Outcome:
    run_dir: str
    results: pd.DataFrame
    summary: pd.DataFrame


def _augmenter(cfg: Config):
    if not cfg.dataset.augment:
        return None
    from lth.data.augment import random_crop_flip

    return random_crop_flip


def prepare(cfg: Config):
    """Everything that can fail on bad input, done before anything is written: validation, the
    model name, the data, the step plan, the model's parameters and the prunable tensors."""
    validate(cfg)
    from lth.data import load_dataset
    from lth.models import build_model

    build_model(cfg.model, num_classes=2)  # an unknown model name fails here, before the data loads
    dataset = load_dataset(cfg.dataset, data_dir(cfg))
    if cfg.dataset.augment and len(dataset.input_shape) != 3:
        raise ConfigError(
            f"dataset.augment=true: random crop + flip needs images (height, width, channels), but dataset "
            f"{dataset.name!r} has examples of shape {dataset.input_shape}; set dataset.augment=false"
        )
    plan = make_plan(cfg, dataset.num_train)
    model = build_model(cfg.model, dataset.num_classes)
    lr_fn = make_schedule(cfg.optimizer, total_steps=plan.total_steps, steps_per_epoch=plan.steps_per_epoch)
    trainer = Trainer(model, dataset, make_optimizer(cfg.optimizer), lr_fn, batch_size=cfg.train.batch_size,
                      eval_batch_size=cfg.train.eval_batch_size, augment=_augmenter(cfg))
    return dataset, plan, trainer


def run(cfg: Config, *, echo: Callable[[str], None] = print) -> Outcome:
    """Run (or continue) the lottery experiment `cfg`; returns its directory and tables."""
    dataset, plan, trainer = prepare(cfg)
    keys = replicate_keys(cfg.seed, cfg.replicates)
    variables = trainer.init_variables(keys["init"])
    one_params = jax.tree.map(lambda x: x[0], variables["params"])
    paths = M.prunable_paths(one_params, cfg.pruning.prunable, cfg.pruning.exclude)
    if not paths:
        names = ", ".join(M.flatten(one_params))
        raise ConfigError(f"pruning.prunable={cfg.pruning.prunable} (exclude={cfg.pruning.exclude}) selects no parameter; parameters: {names}")
    ones = jax.vmap(M.ones_like)(variables["params"])
    states0 = trainer.create_states(variables, ones)

    rd = RunDir.for_config(cfg, plan.as_dict())
    rd.create()
    lock = rd.lock()
    try:
        return _run_levels(cfg, rd, plan, dataset, trainer, keys, states0, paths, one_params, echo)
    finally:
        lock.close()


def _counts(params, paths) -> dict[str, Any]:
    flat = M.flatten(params)
    return {
        "total_parameters": int(sum(np.size(v) for v in flat.values())),
        "prunable_weights": int(sum(np.size(flat[p]) for p in paths)),
        "tensor_sizes": {p: int(np.size(flat[p])) for p in paths},  # the prunable tensors
    }


def _run_levels(cfg, rd, plan, dataset, trainer, keys, states0, paths, one_params, echo) -> Outcome:
    from omegaconf import OmegaConf

    R = cfg.replicates
    write_atomic(rd.file("config.yaml"), OmegaConf.to_yaml(OmegaConf.create(to_dict(cfg))))
    summary = {"run_dir": rd.path, "hash": rd.hash, "config": to_dict(cfg), "plan": plan.as_dict(),
               "dataset": {"name": dataset.name, "train": int(dataset.num_train), "val": int(len(dataset.x_val)),
                           "test": int(len(dataset.x_test)), "num_classes": int(dataset.num_classes)},
               "parameters": _counts(one_params, paths), "levels": {}}
    label = f"{cfg.name}-{rd.hash}" if cfg.name != "default" else os.path.basename(rd.path)
    from lth.logging.wandb_logger import WandbLogger

    wb = cfg.logger.wandb
    logger = WandbLogger(mode=wb.mode, project=wb.project, entity=wb.entity, group=wb.group or label, tags=wb.tags,
                         config={**to_dict(cfg), "run_hash": rd.hash, "run_dir": rd.path, "plan": plan.as_dict()},
                         directory=rd.path, log_every=plan.log_every, label=label)
    rows: list[dict] = []
    rewind_saved = None  # host tree of the states at the rewind point
    prev = None  # (mask, final params) of the last finished level, stacked, host
    state_template = jax.device_get(snapshot(states0))
    T, k = plan.total_steps, plan.rewind_step
    echo(f"run {rd.path}\n  {cfg.model.name} on {dataset.name} ({dataset.num_train} train / {len(dataset.x_val)} val / "
         f"{len(dataset.x_test)} test), {summary['parameters']['prunable_weights']:,} prunable weights, "
         f"{R} replicate(s), levels 0..{cfg.levels}, {T} steps per level, rewind to step {k}")
    try:
        for level in range(cfg.levels + 1):
            ldir = rd.level_dir(level)
            if rd.level_done(level):
                with open(os.path.join(ldir, "result.json")) as f:
                    done = json.load(f)
                rows.extend(done["rows"])
                summary["levels"][str(level)] = done["summary"]
                prev = None  # loaded lazily below, only if a later level needs training
                echo(f"level {level:2d}: done already (density {done['summary']['density']:.4f}), skipped")
                continue
            if level == 0:
                states, start = states0, 0
            else:
                # Continuing a run: the previous level's mask and weights and the rewind point
                # come back from disk.
                prev = prev or _restore_level(rd, level - 1, state_template)
                if rewind_saved is None:
                    rewind_saved = checkpoints.restore(rd.file("rewind"), state_template)
                mask_prev, final_prev = prev
                new_masks = [pruning.prune(p, m, cfg.pruning, paths)
                             for p, m in zip(M.unstack(final_prev, R), M.unstack(mask_prev, R))]
                states = rewind_weights(states0, rewind_saved, M.stack(new_masks), optimizer_state=cfg.rewind.optimizer_state)
                start = k
            dens = stacked_density(states.mask, paths)
            logger.start_level(level, float(dens.mean()))
            desc = f"level {level} ({100 * dens.mean():.1f}%)"
            progress = _progress(cfg, total=T - start, desc=desc)
            try:
                states, hist, captured = train_level(
                    trainer, states, keys, start=start, end=T, eval_every=plan.eval_every,
                    capture_at=k if level == 0 else None, on_eval=logger.log_eval, on_train=logger.log_train,
                    progress=progress)
            finally:
                if progress is not None:
                    progress.close()
            host = jax.device_get(states)
            checkpoints.save(os.path.join(ldir, "mask"), host.mask)
            checkpoints.save(os.path.join(ldir, "final"), {"params": host.params, "batch_stats": host.batch_stats})
            if level == 0:
                rewind_saved = jax.device_get(snapshot(captured))
                checkpoints.save(rd.file("rewind"), rewind_saved)
            level_rows = results.level_rows(level, "ticket", dens, hist, start=start, end=T)
            per_tensor = {p: [M.tensor_densities(m, [p])[p] for m in M.unstack(host.mask, R)] for p in paths}
            lsum = _level_summary(level_rows, per_tensor)
            write_json(os.path.join(ldir, "result.json"), {
                "rows": level_rows, "summary": lsum,
                "history": {"eval_steps": hist.eval_steps, "evals": [{k2: v.tolist() for k2, v in e.items()} for e in hist.evals]},
            })
            rows.extend(level_rows)
            summary["levels"][str(level)] = lsum
            prev = (host.mask, host.params)
            logger.end_level({k2: v for k2, v in lsum.items() if k2 != "tensor_densities"})
            echo(_level_line(level, lsum, hist.seconds))
            _write_tables(rd, rows, summary)
        df = results.to_frame(rows)
        table = results.summarize(df)
        _write_tables(rd, rows, summary)
        logger.log_results(df, table)
    except BaseException:
        logger.finish(failed=True)
        raise
    return Outcome(rd.path, df, table)


def _restore_level(rd: RunDir, level: int, template) -> tuple[Any, Any]:
    """(stacked mask, stacked final params) of a finished level, from its checkpoints."""
    ldir = rd.level_dir(level)
    mask = checkpoints.restore(os.path.join(ldir, "mask"), jax.tree.map(lambda p: np.zeros(np.shape(p), bool), template["params"]))
    final = checkpoints.restore(os.path.join(ldir, "final"), {"params": template["params"], "batch_stats": template["batch_stats"]})
    return mask, final["params"]


def _level_summary(rows, per_tensor) -> dict[str, Any]:
    mean = lambda key: float(np.mean([r[key] for r in rows]))
    return {
        "density": mean("density"), "test_accuracy": mean("test_accuracy"),
        "test_accuracy_std": float(np.std([r["test_accuracy"] for r in rows])),
        "early_stop_step": mean("early_stop_step"), "early_stop_test_accuracy": mean("early_stop_test_accuracy"),
        "min_val_loss": mean("min_val_loss"), "seconds": rows[0]["seconds"], "tensor_densities": per_tensor,
    }


def _level_line(level, s, seconds) -> str:
    return (f"level {level:2d}: density {100 * s['density']:6.2f}%  test acc {100 * s['test_accuracy']:.2f} "
            f"± {100 * s['test_accuracy_std']:.2f}  early stop at {s['early_stop_step']:.0f} "
            f"({100 * s['early_stop_test_accuracy']:.2f})  {seconds:.1f}s")


def _write_tables(rd: RunDir, rows, summary) -> None:
    df = results.to_frame(rows)
    write_atomic(rd.file("results.csv"), df.to_csv(index=False))
    table = results.summarize(df)
    summary = dict(summary)
    summary["outcome"] = json.loads(table.reset_index().to_json(orient="records"))
    write_json(rd.file("summary.json"), summary)


def _progress(cfg: Config, *, total: int, desc: str):
    if not cfg.logger.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, file=sys.stderr, dynamic_ncols=True)
