"""Iterative magnitude pruning with rewinding: one lottery-ticket run, level by level.

Level 0 trains the dense network from θ0 (a random initialisation, or pre-trained weights:
`lth.lottery.pretrained`) to the end, keeping the states at the rewind point k. Level L >= 1 prunes a
fraction of the remaining weights of level L-1's final weights (a subset of its mask), restarts
the survivors as the rewinding mode says (`lth.lottery.rewind`: θk and step k, or the final weights with
the LR schedule restarted or at its final rate) and trains steps k .. T-1 again, together with
the controls listed in `controls` (`lth.lottery.controls`), all members in one compiled program
(`lth.lottery.members`).

The loop is handed the mode, the controls and the starting point as data; it only decides what
is left to train. Every level writes each kind's mask, final weights and result rows before the
next starts, and the level in progress is checkpointed as it trains (`lth.runs.progress`), so re-running
the command of a killed run skips the finished levels and resumes the one in progress from its last
checkpoint (SIGTERM and SIGINT checkpoint first: `lth.runs.interrupt`); adding a control trains just the
missing members.

`run(cfg)` is the whole experiment; `experiments/lottery.py` is its Hydra front end. The loop writes
and returns results; it draws no figures and computes no ticket metrics: whoever runs it asks for
those (`run(cfg, reports=lth.analysis.reports.lottery)`, as `lth.api.run` and the entry point do).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from lth.sparsity import ablations, budget, flops, gradual, masks as M, methods, pruning
from lth.runs import checkpoints, results
from lth.lottery import controls as C, members, pretrained, rewind
from lth.train import data_order
from lth.runs import interrupt, progress as progress_mod
from lth.config import method_settings, user_components
from lth.lottery import replicates as REP, shared_dense
from lth.train import sharding
from lth.sparsity import structured
from lth.config.schema import Config, ConfigError, data_dir, to_dict, validate
from lth.config.durations import to_steps
from lth.train.optim import make_optimizer, make_schedule
from lth.runs.run_dir import RunDir, write_atomic, write_json
from lth.train.trainer import Trainer, replicate_keys, stacked_density, train_level


@dataclasses.dataclass(frozen=True)
class Plan:
    """The run's durations in steps, fixed once the dataset (hence steps per epoch) is known."""

    total_steps: int
    rewind_step: int
    eval_every: int
    log_every: int
    steps_per_epoch: int
    gradual: tuple[int, int, int] | None = None  # (begin, end, every) of gradual pruning

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["gradual"] is None:
            d.pop("gradual")  # the hash of every run without gradual pruning stays as it was
        else:
            d["gradual"] = list(d["gradual"])
        return d


def make_plan(cfg: Config, num_train: int) -> Plan:
    spe = num_train // cfg.train.batch_size
    if spe >= 1 and not cfg.train.drop_last:  # a last, smaller batch per epoch (lth.train)
        spe = -(-num_train // cfg.train.batch_size)
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
    gradual = _gradual_steps(cfg, spe, total) if cfg.pruning.schedule == "gradual" else None
    return Plan(total, k, max(1, eval_every), max(1, log_every), spe, gradual)


def _gradual_steps(cfg: Config, spe: int, total: int) -> tuple[int, int, int]:
    """(begin, end, every) of gradual pruning in steps; `end` defaults to 3/4 of training and
    `every` to a tenth of end - begin. The last update must come before training ends."""
    g = cfg.pruning.gradual
    begin = to_steps(g.begin, spe, setting="pruning.gradual.begin")
    end = to_steps(g.end, spe, setting="pruning.gradual.end") if g.end is not None else (3 * total) // 4
    if not begin < end < total:
        raise ConfigError(
            f"pruning.gradual.begin={g.begin!r} (step {begin}) and pruning.gradual.end={g.end!r} (step {end}): gradual "
            f"pruning needs begin < end < train.duration ({total} steps), so that the final density is trained")
    every = to_steps(g.every, spe, setting="pruning.gradual.every") if g.every is not None else max(1, (end - begin) // 10)
    return begin, end, every


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


def prepare(cfg: Config, supplied: user_components.Supplied = user_components.Supplied()):
    """Everything that can fail on bad input, done before anything is written: validation, the
    model name, the data, the step plan, the model's parameters and the prunable tensors. A
    researcher's own model, data or score function (`supplied`, or `_target_`s) is imported here."""
    validate(cfg)
    from lth.data import load_dataset
    from lth.models import build_model, check_fits_data

    user_components.check(cfg, supplied)
    if cfg.pruning.method == "custom":
        user_components.score_function(cfg)  # imports, or names what does not
    build_model(cfg.model, num_classes=2, obj=supplied.model)  # an unknown model name fails here, before the data loads
    dataset = load_dataset(cfg.dataset, data_dir(cfg), arrays=supplied.data)
    if cfg.dataset.augment and len(dataset.input_shape) != 3:
        raise ConfigError(
            f"dataset.augment=true: random crop + flip needs images (height, width, channels), but dataset "
            f"{dataset.name!r} has examples of shape {dataset.input_shape}; set dataset.augment=false"
        )
    plan = make_plan(cfg, dataset.num_train)
    model = build_model(cfg.model, dataset.num_classes, obj=supplied.model)
    check_fits_data(cfg.model, model, dataset, dtype=cfg.train.dtype)
    if cfg.train.dtype != "float32":
        model = model.clone(dtype=jnp.dtype(cfg.train.dtype))
    lr_fn = make_schedule(cfg.optimizer, total_steps=plan.total_steps, steps_per_epoch=plan.steps_per_epoch)
    trainer = Trainer(model, dataset, make_optimizer(cfg.optimizer), lr_fn, batch_size=cfg.train.batch_size,
                      eval_batch_size=cfg.train.eval_batch_size, augment=_augmenter(cfg),
                      replicates_as=None if cfg.train.replicates_as == "auto" else cfg.train.replicates_as,
                      shuffle=cfg.dataset.shuffle, drop_last=cfg.train.drop_last)
    return dataset, plan, trainer


def run(cfg: Config, *, echo: Callable[[str], None] = print, model=None, data=None,
        reports: Callable[[Any, str, Callable[[str], None]], None] | None = None) -> Outcome:
    """Run (or continue) the lottery experiment `cfg`; returns its directory and tables. `model`
    (a Flax module) and `data` (arrays): a researcher's own, in place of `cfg`'s (`lth.config.user_components`).
    `reports(logger, run_dir, echo)`: what the caller wants logged to the W&B summary run of the finished
    run, when W&B is on (`lth.analysis.reports.lottery`: ticket metrics and figures; `lth.api.run` and
    `experiments/lottery.py` pass it); the loop itself draws nothing."""
    from lth.config.schema import resolve

    supplied = user_components.Supplied(model=model, data=data)
    cfg = user_components.describe(resolve(cfg), supplied)  # the model's, dataset's and optimizer's own defaults (lth.config.defaults)
    sharding.check_single_process()
    dataset, plan, trainer = prepare(cfg, supplied)
    keys = replicate_keys(cfg.seed, cfg.replicates)
    variables = trainer.init_variables(keys["init"])
    inputs, notes = user_components.inputs(supplied), []
    if cfg.init.checkpoint is not None:
        # Loaded and checked against the model before anything is written.
        loaded = pretrained.load(cfg.init.checkpoint, cfg.init.replicate, cfg.model)
        variables, notes = pretrained.apply(variables, loaded, cfg.init.reinit_patterns,
                                            setting=f"init.checkpoint={cfg.init.checkpoint!r}")
        inputs["init_checkpoint"] = pretrained.content_hash(cfg.init.checkpoint)
    one_params = jax.tree.map(lambda x: x[0], variables["params"])
    cfg = user_components.with_head(cfg, trainer.model, one_params, dataset.input_shape, dataset.num_classes)
    paths = M.prunable_paths(one_params, cfg.pruning.prunable, cfg.pruning.exclude, cfg.pruning.head)
    if not paths:
        names = ", ".join(M.flatten(one_params))
        raise ConfigError(f"pruning.prunable={cfg.pruning.prunable} (exclude={cfg.pruning.exclude}) selects no parameter; parameters: {names}")
    prune_paths = _prune_paths(cfg, one_params, paths)
    # A budget (lth.sparsity.budget) is checked from the exact pruning counts now: over it, nothing is trained or written.
    budget_report = budget.enforce(cfg, one_params, paths, trainer.model, jax.tree.map(lambda x: x[0], variables),
                                   dataset.input_shape)
    if budget_report is not None:
        echo(budget.line(budget_report))
    for line in method_settings.before_training(cfg, trainer, plan.total_steps):
        echo(f"warning: {line}")
    if plan.gradual is not None:
        begin, end, every = plan.gradual
        trainer.mask_update = gradual.GradualPruning(
            tuple((tuple(g), 1.0 - frac) for g, frac in pruning.groups(paths, cfg.pruning)), begin=begin, end=end,
            every=every, initial_density=cfg.pruning.gradual.initial_density)
    ones = jax.vmap(M.ones_like)(variables["params"])
    states0 = trainer.create_states(variables, ones)

    # The replicate count is not part of the name: more replicates extend the run (lth.lottery.replicates).
    rd = RunDir.for_config(cfg, plan.as_dict(), inputs or None, replicates=False)
    rd.adopt_legacy(cfg, plan.as_dict(), inputs or None, echo)
    rd.create()
    lock = rd.lock()
    try:
        REP.recover(rd.path)
        rd0 = shared_dense.for_run(cfg, plan.as_dict(), inputs or None, rd)  # where level 0 lives
        for note in notes:
            echo(f"init.checkpoint: {note}")
        ctx = methods.Context(cfg, trainer, keys["data"], paths, prune_paths)
        with interrupt.handling():  # SIGTERM / SIGINT: checkpoint the level in progress, then stop
            return _run_levels(cfg, rd, rd0, plan, dataset, trainer, keys, states0, ctx, one_params, echo, inputs,
                                   reports)
    finally:
        lock.close()


def _prune_paths(cfg: Config, one_params, paths: list[str]) -> list[str]:
    """The prunable tensors a pruning step ranks: all of `paths`, or under structured granularity
    those whose units it removes (`lth.sparsity.structured`); none is a configuration error."""
    if cfg.pruning.granularity == "weight":
        return paths
    flat = M.flatten(one_params)
    out = structured.unit_paths(paths, {p: np.shape(flat[p]) for p in paths}, cfg.pruning.granularity, cfg.pruning.head)
    if not out:
        kinds = {"neuron": "dense (2-D) kernels", "channel": "convolution kernels"}[cfg.pruning.granularity]
        raise ConfigError(f"pruning.granularity={cfg.pruning.granularity}: none of the prunable tensors {paths} are "
                          f"{kinds} outside the output layer; use pruning.granularity=weight or the other granularity")
    return out


def _counts(params, paths) -> dict[str, Any]:
    flat = M.flatten(params)
    return {
        "total_parameters": int(sum(np.size(v) for v in flat.values())),
        "prunable_weights": int(sum(np.size(flat[p]) for p in paths)),
        "tensor_sizes": {p: int(np.size(flat[p])) for p in paths},  # the prunable tensors
    }


class _Sources:
    """What later levels start from, read from disk only when a level has something to train: the
    states at the rewind point and each finished level's ticket mask and final weights (all the
    replicates on disk; level 0 and the rewind point from `rd0`, the shared dense level)."""

    def __init__(self, rd: RunDir, rd0: RunDir, template):
        self.rd, self.rd0, self.template = rd, rd0, template
        self.saved = None  # host tree of the states at the rewind point
        self.levels: dict[int, dict[str, Any]] = {}  # level -> {"mask", "params", "batch_stats"}

    def rewind_point(self):
        if self.saved is None:
            n = REP.count(_read_result(self.rd0, 0, "ticket"))
            self.saved = checkpoints.restore(self.rd0.file("rewind"), REP.template(_one(self.template), n))
        return self.saved

    def level(self, level: int) -> dict[str, Any]:
        if level not in self.levels:
            self.levels = {level: restore_members(self.rd0 if level == 0 else self.rd, level, "ticket", self.template)}
        return self.levels[level]

    def keep(self, level: int, members: dict[str, Any]) -> None:
        self.levels = {level: members}


def _one(template):
    """One member's tree of a stacked template."""
    return jax.tree.map(lambda x: np.asarray(x)[0], template)


def restore_members(rd: RunDir, level: int, kind: str, template) -> dict[str, Any]:
    """{"mask", "params", "batch_stats"} (stacked, host) of a finished level's members of one kind:
    all the replicates it holds (`template`: stacked states of any number of members)."""
    d = rd.member_dir(level, kind)
    t = REP.template(_one(template), REP.count(_read_result(rd, level, kind)))
    mask = checkpoints.restore(os.path.join(d, "mask"), jax.tree.map(lambda p: np.zeros(np.shape(p), bool), t["params"]))
    final = checkpoints.restore(os.path.join(d, "final"), {"params": t["params"], "batch_stats": t["batch_stats"]})
    return {"mask": mask, **final}


def _host_members(host) -> dict[str, Any]:
    return {"mask": host.mask, "params": host.params, "batch_stats": host.batch_stats}


def _level_groups(cfg, level, todo, sources, trainer, states0, ctx, lr_fn) -> list[members.Group]:
    """The members a level still has to train, as groups of stacked states at their start: per
    kind, the replicates `todo[kind]` (a range: all of them, or the new ones of an extended run)."""
    take = lambda tree, lo, hi: members.take(tree, slice(lo, hi))
    if level == 0:
        rr = todo["ticket"]
        return [members.Group("ticket", take(states0, rr.start, rr.stop), first=rr.start)]
    mode, paths = rewind.MODES[cfg.rewind.mode], ctx.paths
    lo, hi = min(r.start for r in todo.values()), max(r.stop for r in todo.values())
    saved = take(sources.rewind_point(), lo, hi)
    prev = take(sources.level(level - 1), lo, hi) if (mode.weights_from == "final" or "ticket" in todo or cfg.rewind.keep) else None
    # the ticket masks of replicates lo .. hi-1: those finished on disk, the others computed now
    t = todo.get("ticket", range(hi, hi))
    ticket_mask = None
    if t.start > lo:
        ticket_mask = take(restore_members(sources.rd, level, "ticket", sources.template)["mask"], lo, t.start)
    if len(t):
        sub = lambda tree: take(tree, t.start - lo, t.stop - lo)
        tctx = dataclasses.replace(ctx, data_keys=ctx.data_keys[t.start:t.stop], replicates=tuple(t))
        new = methods.next_masks(methods.method_of(cfg), tctx, level, sub(prev["mask"]), sub(prev), sub(saved))
        ticket_mask = new if ticket_mask is None else REP.concat(ticket_mask, new)
    start = rewind.start_weights(mode, saved, prev, cfg.rewind.keep)
    groups = []
    for kind, rr in todo.items():
        ids, part = list(rr), (lambda tree: take(tree, rr.start - lo, rr.stop - lo))
        masks, weights, opt = part(ticket_mask), part(start), cfg.rewind.optimizer_state
        if kind == "ticket":
            if ablations.ABLATIONS[cfg.pruning.ablation].fresh_weights:
                weights, opt = C.fresh_weights(trainer, cfg.seed, ids, "ablation:reinit", level), "reset"
        else:
            control = C.CONTROLS[kind]
            units = ctx.prune_paths if cfg.pruning.granularity != "weight" else None  # whole units
            masks = M.stack([control.mask(m, paths, C.control_rng(cfg.seed, r, kind, level), units) for r, m in zip(ids, M.unstack(masks, len(ids)))])
            if control.fresh_weights:
                weights, opt = C.fresh_weights(trainer, cfg.seed, ids, kind, level), "reset"
        st = rewind.restart(take(states0, rr.start, rr.stop), weights["params"], weights["batch_stats"], part(saved), masks,
                            optimizer_state=opt, lr_fn=lr_fn)
        groups.append(members.Group(kind, st, first=rr.start))
    return groups


def _run_levels(cfg, rd, rd0, plan, dataset, trainer, keys, states0, ctx, one_params, echo, inputs,
                reports=None) -> Outcome:
    from omegaconf import OmegaConf

    R, paths = cfg.replicates, ctx.paths
    write_atomic(rd.file("config.yaml"), OmegaConf.to_yaml(OmegaConf.create(to_dict(cfg))))
    summary = {"run_dir": rd.path, "hash": rd.hash, "config": to_dict(cfg), "plan": plan.as_dict(), "inputs": inputs,
               "dataset": {"name": dataset.name, "train": int(dataset.num_train), "val": int(len(dataset.x_val)),
                           "test": int(len(dataset.x_test)), "num_classes": int(dataset.num_classes),
                           **({"info": dataset.info} if dataset.info else {})},
               "parameters": _counts(one_params, paths), "levels": {}}
    if rd0.path != rd.path:
        summary["dense_level"] = rd0.path  # level 0 and the rewind point, shared (lth.lottery.shared_dense)
    label = f"{cfg.name}-{rd.hash}" if cfg.name != "default" else os.path.basename(rd.path)
    from lth.integrations.wandb_logger import WandbLogger

    wb = cfg.logger.wandb
    logger = WandbLogger(mode=wb.mode, project=wb.project, entity=wb.entity, group=wb.group or label, tags=wb.tags,
                         config={**to_dict(cfg), "run_hash": rd.hash, "run_dir": rd.path, "plan": plan.as_dict()},
                         directory=rd.path, log_every=plan.log_every, label=label, run_id=f"lth-{rd.hash}")
    rows: list[dict] = []
    _check_tables(rd, echo)
    template = jax.device_get(rewind.snapshot(states0))
    sources = _Sources(rd, rd0, template)
    T, k = plan.total_steps, plan.rewind_step
    mode = rewind.MODES[cfg.rewind.mode]
    lr_fn = mode.lr_fn(states0.lr_fn, T, cfg.rewind.finetune_lr)  # levels >= 1; built once (a static part of the states)
    ctl = f", controls {', '.join(cfg.controls)}" if cfg.controls else ""
    echo(f"run {rd.path}\n  {cfg.model.name} on {dataset.name} ({dataset.num_train} train / {len(dataset.x_val)} val / "
         f"{len(dataset.x_test)} test), {summary['parameters']['prunable_weights']:,} prunable weights, "
         f"{R} replicate(s), levels 0..{cfg.levels}, {T} steps per level, {_pruning_line(cfg, plan)}, "
         f"{cfg.rewind.mode} rewinding to step {k}{ctl}")
    try:
        for level in range(cfg.levels + 1):
            if interrupt.requested() is not None:  # a signal between levels: the finished ones are written
                interrupt.stop(f"before level {level} (levels 0..{level - 1} are finished)")
            lrd = rd0 if level == 0 else rd  # level 0 may be the shared dense level
            kinds = ["ticket"] + (list(cfg.controls) if level > 0 else [])
            with shared_dense.holding(rd0, rd, echo) if level == 0 else contextlib.nullcontext():
                if level == 0:
                    REP.recover(rd0.path)
                on_disk = {kind: _read_done(lrd, level, kind, echo) for kind in kinds}
                have = {kind: REP.count(res) for kind, res in on_disk.items()}
                todo = {kind: range(have[kind], R) for kind in kinds if have[kind] < R}
                if todo:
                    trained, seconds = _train_level(cfg, lrd, level, todo, on_disk, sources, trainer, states0, ctx, lr_fn,
                                                    keys, plan, logger, echo)
                    on_disk.update(trained)
            done = {kind: REP.view(res, R, _kind_summary) for kind, res in on_disk.items()}
            if lrd is not rd:  # a shared dense level: every tensor dense, listed by this run's prunable tensors
                done["ticket"] = {**done["ticket"], "summary": {**done["ticket"]["summary"], "tensor_densities": {
                    p: [1.0] * REP.count(done["ticket"]) for p in paths}}}
            lsum = _level_summary(done)
            level_rows = [r for kind in kinds for r in done[kind]["rows"]]
            rows.extend(level_rows)
            summary["levels"][str(level)] = lsum
            if todo:
                logger.end_level(_flat_summary(lsum))
                partial = [f"{kind} {r.start}..{r.stop - 1}" for kind, r in todo.items() if r.start > 0]
                echo(_level_line(level, lsum, seconds) + (f"\n          trained now: replicates {', '.join(partial)}; the "
                                                          "others were on disk" if partial else ""))
            else:
                echo(f"level {level:2d}: done already (density {lsum['density']:.4f}), skipped")
            _write_tables(rd, rows, summary)
        kept = _finished_beyond(rd, cfg.levels, R, rows, summary)
        if kept:
            echo(f"levels {cfg.levels + 1}..{cfg.levels + kept}: finished in an earlier run, kept in the tables")
        df = results.to_frame(rows)
        table = results.summarize(df)
        _write_tables(rd, rows, summary)
        logger.log_results(df, table)
        if logger.enabled:
            if reports is not None:  # the caller's (lth.analysis.reports.lottery: ticket metrics, figures)
                reports(logger, rd.path, echo)
            _log_artifacts(logger, rd.path, echo)
        logger.finish()
    except BaseException:
        logger.finish(failed=True)
        raise
    return Outcome(rd.path, df, table)


def _train_level(cfg, lrd, level, todo, on_disk, sources, trainer, states0, ctx, lr_fn, keys, plan, logger, echo=print):
    """Train a level's missing members (`todo`: kind -> replicates), write them (appended to the
    replicates on disk when the run is extended: `lth.lottery.replicates`); returns their results (kind ->
    result.json) and the training's seconds."""
    T, k, paths = plan.total_steps, plan.rewind_step, ctx.paths
    groups = _level_groups(cfg, level, todo, sources, trainer, states0, ctx, lr_fn)
    states, member_keys = members.stack(groups, data_order.ORDERS[cfg.train.data_order].level_keys(keys, level))
    start = 0 if level == 0 else k
    dens = stacked_density(states.mask, paths)
    first = dens[:groups[0].size]
    logger.start_level(level, float(first.mean()), members=[(g.kind, g.size) for g in groups])
    extra = [g.kind for g in groups if g.kind != "ticket"]
    desc = f"level {level} ({100 * first.mean():.1f}%)" + (f" + {', '.join(extra)}" if extra else "")
    ckpt = progress_mod.LevelCheckpoints(
        os.path.join(lrd.level_dir(level), "progress"),
        {"level": level, "start": start, "end": T, "members": [[g.kind, g.first, g.size] for g in groups]},
        keep=cfg.checkpoint.keep, min_seconds=cfg.checkpoint.min_seconds, echo=echo)
    every = _checkpoint_steps(cfg, plan, start)
    resume = ckpt.latest(states, states if level == 0 else None)
    progress = _progress(cfg, total=T - start, desc=desc)
    if resume is not None:
        stopped = int((resume.diverged >= 0).sum())
        echo(f"level {level}: resuming from the checkpoint at step {resume.step} of {T}" +
             (f" ({stopped} member(s) stopped by divergence)" if stopped else ""))
        if progress is not None:
            progress.update(resume.step - start)

    def on_boundary(step, lvl):
        signum = interrupt.requested()
        if step < T and (signum is not None or ckpt.due(step, every is None or step in every)):
            ckpt.save(step, lvl.states, lvl.captured, lvl.history.eval_steps, lvl.history.evals, lvl.train_so_far(),
                      lvl.diverged)
        if signum is not None and step < T:  # at T the level's own files are written first
            ckpt.finish()
            interrupt.stop(f"at level {level}, step {step} of {T} (checkpoint saved in {ckpt.dir})")

    try:
        states, hist, captured = train_level(
            trainer, states, member_keys, start=start, end=T, eval_every=plan.eval_every,
            capture_at=k if level == 0 else None, on_eval=logger.log_eval, on_train=logger.log_train,
            progress=progress, extra_boundaries=tuple(sorted(every or ())), resume=resume,
            on_boundary=on_boundary,
            place=sharding.placement(cfg.devices, trainer))
    finally:
        ckpt.finish()  # a checkpoint being written in the background is completed, whatever happened
        if progress is not None:
            progress.close()
    out, replace = {}, {}
    rewind_new = jax.device_get(rewind.snapshot(captured)) if level == 0 else None
    for g, sl in zip(groups, members.slices(groups)):
        host = jax.device_get(members.take(states, sl))
        result = _member_result(level, g.kind, host, hist.select(sl), ctx, start, T, first=g.first)
        d = lrd.member_dir(level, g.kind)
        if on_disk.get(g.kind) is None:  # a first write: files, then result.json (the level's "done" mark)
            if rewind_new is not None:
                checkpoints.save(lrd.file("rewind"), rewind_new)
                sources.saved = rewind_new
            full = _host_members(host)
            _write_members(d, full, result)
        else:  # more replicates: old ++ new beside the old files, then one atomic swap
            full = REP.concat(restore_members(lrd, level, g.kind, sources.template), _host_members(host))
            result = REP.merge_results(on_disk[g.kind], result, _kind_summary)
            rel = os.path.relpath(d, lrd.path)
            _write_members(d, full, result, suffix=".new")
            replace.update({os.path.join(rel, f + ".new"): os.path.join(rel, f) for f in ("mask", "final", "result.json")})
            if rewind_new is not None:
                merged = REP.concat(sources.rewind_point(), rewind_new)
                checkpoints.save(lrd.file("rewind.new"), merged)
                replace["rewind.new"] = "rewind"
                sources.saved = merged
        out[g.kind] = result
        if g.kind == "ticket":
            sources.keep(level, full)
    if replace:
        REP.commit(lrd.path, replace)
    ckpt.clear()  # the level's own files are its end-of-level checkpoint
    diverged = [f"{g.kind} {g.first + int(i)} at step {hist.diverged[sl][i]}" for g, sl in zip(groups, members.slices(groups))
                for i in np.flatnonzero(hist.diverged[sl] >= 0)]
    if diverged:
        echo(f"level {level}: diverged (loss not finite), stopped at their last finite state: {'; '.join(diverged)}")
    return out, hist.seconds


def _checkpoint_steps(cfg: Config, plan: Plan, start: int) -> set[int] | None:
    """The boundaries after which a level in progress may be checkpointed (`checkpoint.every`):
    None for every boundary (`eval`), else the multiples of the duration in (start, end), which also
    end compiled calls (`train_level(extra_boundaries=...)`); `off`: none."""
    every = cfg.checkpoint.every
    if every == "eval":
        return None
    if every == "off":
        return set()
    n = max(1, to_steps(every, plan.steps_per_epoch, setting="checkpoint.every"))
    return set(range((start // n + 1) * n, plan.total_steps, n))


def _log_artifacts(logger, run_dir: str, echo) -> None:
    """The run's `results` and `masks` artifacts (`lth.integrations.artifacts`) in its W&B summary run; a
    failure there is reported, not raised: the run's tables are already written."""
    try:
        logger.log_artifacts(run_dir)
    except Exception as e:  # noqa: BLE001
        echo(f"artifacts not logged to W&B ({type(e).__name__}: {e})")


def _finished_beyond(rd: RunDir, levels: int, replicates: int, rows: list, summary: dict) -> int:
    """Add to `rows` and `summary` the levels after `levels` finished on disk by an earlier run with
    more levels (a re-run with fewer levels must not drop them from the tables); returns how many."""
    level = levels + 1
    while rd.level_done(level, "ticket"):
        done = {kind: REP.view(_read_result(rd, level, kind), replicates, _kind_summary)
                for kind in ["ticket", *C.CONTROLS] if rd.level_done(level, kind)}
        rows.extend(r for kind in done for r in done[kind]["rows"])
        summary["levels"][str(level)] = _level_summary(done)
        level += 1
    return level - levels - 1


def _pruning_line(cfg: Config, plan: Plan) -> str:
    """How this run prunes, in words, for the run's first line."""
    p = cfg.pruning
    what = (f"{p.method} ({p.score_fn})" if p.score_fn else p.method) + (f" ({p.granularity}s)" if p.granularity != "weight" else "") + f", {p.scope}"
    if p.schedule == "gradual":
        begin, end, every = plan.gradual
        what += f", gradual to density {p.target_density} over steps {begin}..{end} every {every}"
    elif p.schedule == "oneshot":
        what += f", one shot to density {p.target_density}"
    else:
        what += f", {p.fraction:g} per level" + (" of the dense count (linear)" if p.schedule == "linear" else "")
        if p.fractions:
            what += " (" + ", ".join(f"{pattern}: {frac:g}" for pattern, frac in p.fractions.items()) + ")"
    return what + (f", ablation {p.ablation}" if p.ablation != "none" else "")


def _read_done(rd: RunDir, level: int, kind: str, echo) -> dict[str, Any] | None:
    """A finished level's result.json (its "done" mark), or None when the level is not done. One
    that does not parse (a disk fault: lth writes it atomically) is reported and moved aside to
    `result.json.corrupt-<time>`, and the level counts as not done, so it is trained again."""
    if not rd.level_done(level, kind):
        return None
    try:
        res = _read_result(rd, level, kind)
        if not isinstance(res, dict) or not isinstance(res.get("rows"), list) or "summary" not in res:
            raise ValueError("rows or summary missing")
        return res
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        import time

        path = os.path.join(rd.member_dir(level, kind), "result.json")
        aside = f"{path}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(path, aside)
        echo(f"level {level} ({kind}): {path} is corrupt ({e}); moved to {aside}, the level is trained again")
        return None


def _read_result(rd: RunDir, level: int, kind: str) -> dict[str, Any]:
    with open(os.path.join(rd.member_dir(level, kind), "result.json")) as f:
        return json.load(f)


def _member_result(level: int, kind: str, host, hist, ctx, start: int, end: int, *, first: int = 0) -> dict[str, Any]:
    """One kind's result.json for a trained level (replicates `first`, `first` + 1, ...)."""
    paths = ctx.paths
    dens = stacked_density(host.mask, paths)
    n = len(dens)
    level_rows = results.level_rows(level, kind, dens, _pruned_part(hist, ctx, level), start=start, end=end, first=first,
                                    flops=flops.member_flops(ctx.trainer.model, ctx.trainer.dataset.input_shape, host))
    per_tensor = {p: [M.tensor_densities(m, [p])[p] for m in M.unstack(host.mask, n)] for p in paths}
    result = {
        "rows": level_rows, "summary": _kind_summary(level_rows, per_tensor),
        "history": {"eval_steps": hist.eval_steps, "evals": [{k2: v.tolist() for k2, v in e.items()} for e in hist.evals]},
    }
    if ctx.cfg.pruning.granularity != "weight":
        reports = [structured.report(m, ctx.prune_paths) for m in M.unstack(host.mask, n)]
        result["summary"]["structured"] = {key: {p: [r[key][p] for r in reports] for p in reports[0][key]}
                                           for key in ("alive_units", "dead_batchnorm_channels")}
    return result


def _write_members(d: str, members_, result: dict[str, Any], suffix: str = "") -> None:
    """Write one kind's mask, final weights ({"mask", "params", "batch_stats"}), then result.json
    (each name + `suffix`) into `d`."""
    checkpoints.save(os.path.join(d, "mask" + suffix), members_["mask"])
    checkpoints.save(os.path.join(d, "final" + suffix), {"params": members_["params"], "batch_stats": members_["batch_stats"]})
    write_json(os.path.join(d, "result.json" + suffix), result)


def _pruned_part(hist, ctx, level: int):
    """The history early stopping looks at: all of it, except under gradual pruning, where only the
    evaluations from the end of pruning on count (earlier ones saw a denser network)."""
    gradual_plan = getattr(ctx.trainer, "mask_update", None)
    if level != 0 or gradual_plan is None:
        return hist
    keep = [i for i, s in enumerate(hist.eval_steps) if s >= gradual_plan.end]
    return dataclasses.replace(hist, eval_steps=[hist.eval_steps[i] for i in keep], evals=[hist.evals[i] for i in keep])


def _kind_summary(rows, per_tensor) -> dict[str, Any]:
    mean = lambda key: float(np.mean([r[key] for r in rows]))
    return {
        "density": mean("density"), "flops_fraction": mean("flops_fraction"), "test_accuracy": mean("test_accuracy"),
        "test_accuracy_std": float(np.std([r["test_accuracy"] for r in rows])),
        "early_stop_step": mean("early_stop_step"), "early_stop_test_accuracy": mean("early_stop_test_accuracy"),
        "min_val_loss": mean("min_val_loss"), "seconds": rows[0]["seconds"], "tensor_densities": per_tensor,
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


def _check_tables(rd: RunDir, echo) -> None:
    """results.csv and summary.json are rebuilt from the levels' files at every level; one that
    no longer reads (a disk fault, an editor) is reported here, before it is rebuilt."""
    for name, read in (("results.csv", pd.read_csv), ("summary.json", lambda p: json.load(open(p)))):
        path = rd.file(name)
        if os.path.exists(path):
            try:
                read(path)
            except Exception as e:  # noqa: BLE001 - any failure to read is what is reported
                echo(f"{path} does not read ({type(e).__name__}: {e}); it is rebuilt from the levels' files")


def _write_tables(rd: RunDir, rows, summary) -> None:
    df = results.to_frame(rows)
    write_atomic(rd.file("results.csv"), df.to_csv(index=False))
    table = results.summarize(df)
    summary = dict(summary)
    summary["outcome"] = json.loads(table.reset_index().to_json(orient="records"))
    write_json(rd.file("summary.json"), summary)


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
