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

This module holds the loop (`run`, `_run_levels`, `_train_level`, `_level_groups`); the step plan and the
checks before any writing are `lth.lottery.plan`, reading and writing levels on disk
`lth.lottery.level_io`, and the summaries and lines it prints `lth.lottery.summaries`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Callable

import jax
import numpy as np
import pandas as pd

from lth.sparsity import ablations, budget, dynamic, dynamic_patterns, gradual, masks as M, methods, pruning, ste
from lth.runs import checkpoints, results, writer
from lth.lottery import controls as C, members, pretrained, rewind
from lth.train import data_order
from lth.runs import interrupt, progress as progress_mod
from lth.config import method_settings, targets
from lth.models import custom as custom_model
from lth.lottery import replicates as REP, shared_dense
from lth.train import sharding
from lth.sparsity import level_counts, patterns, structured
from lth.config.schema import Config, ConfigError, to_dict
from lth.config.durations import to_steps
from lth.runs.run_dir import RunDir, write_atomic
from lth.train.trainer import replicate_keys, stacked_density, train_level
from lth.lottery.level_io import (  # noqa: F401  (restore_members: also read from here)
    _check_tables,
    _finished_beyond,
    _host_members,
    _member_result,
    _read_done,
    _Sources,
    _write_members,
    _write_tables,
    restore_members,
)
from lth.lottery.plan import Plan, make_plan, prepare  # noqa: F401  (make_plan, prepare: also read from here)
from lth.lottery.summaries import (  # noqa: F401  (LogProgress: also read from here)
    LogProgress,
    _counts,
    _flat_summary,
    _kind_summary,
    _level_line,
    _level_summary,
    _progress,
    _pruning_line,
)


@dataclasses.dataclass
class Outcome:
    run_dir: str
    results: pd.DataFrame
    summary: pd.DataFrame


def run(cfg: Config, *, echo: Callable[[str], None] = print, model=None, data=None,
        reports: Callable[[Any, str, Callable[[str], None]], None] | None = None) -> Outcome:
    """Run (or continue) the lottery experiment `cfg`; returns its directory and tables. `model`
    (a Flax module) and `data` (arrays): a researcher's own, in place of `cfg`'s (`lth.user_components`).
    `reports(logger, run_dir, echo)`: what the caller wants logged to the W&B summary run of the finished
    run, when W&B is on (`lth.analysis.reports.lottery`: ticket metrics and figures; `lth.api.run` and
    `experiments/lottery.py` pass it); the loop itself draws nothing."""
    from lth.config.schema import resolve

    supplied = targets.Supplied(model=model, data=data)
    cfg = targets.describe(resolve(cfg), supplied)  # the model's, dataset's and optimizer's own defaults (lth.config.defaults)
    dataset, plan, trainer = prepare(cfg, supplied)
    keys = replicate_keys(cfg.seed, cfg.replicates)
    variables = trainer.init_variables(keys["init"])
    inputs, notes = targets.inputs(supplied), []
    if cfg.init.checkpoint is not None:
        # Loaded and checked against the model before anything is written.
        loaded = pretrained.load(cfg.init.checkpoint, cfg.init.replicate, cfg.model)
        variables, notes = pretrained.apply(variables, loaded, cfg.init.reinit_patterns,
                                            setting=f"init.checkpoint={cfg.init.checkpoint!r}")
        inputs["init_checkpoint"] = pretrained.content_hash(cfg.init.checkpoint)
    one_params = jax.tree.map(lambda x: x[0], variables["params"])
    cfg = custom_model.with_head(cfg, trainer.model, one_params, dataset.input_shape, dataset.num_classes)
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
    if plan.dynamic is not None:  # dynamic sparse training: a random mask at the target density from step 0
        trainer.mask_update = dynamic_patterns.from_config(cfg.pruning, one_params, prune_paths, plan.dynamic)
        ones = dynamic.initial_masks(trainer.mask_update, ones, cfg.seed, range(cfg.replicates))
    states0 = trainer.create_states(variables, ones)
    if cfg.pruning.method == "magnitude_ste":  # dense weights, mask m(w) recomputed every step (lth.sparsity.ste)
        trainer.ste = ste.from_config(cfg.pruning, {p: np.shape(M.flatten(one_params)[p]) for p in paths})
        states0 = trainer.ste.initial(states0)

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
    flat = M.flatten(one_params)
    level_counts.check(cfg.pruning, flat, paths, cfg.levels)  # a distribution's densities can be spread: before training
    if cfg.pruning.granularity == "weight":
        return paths
    if cfg.pruning.granularity in patterns.PATTERNS:  # n:m, block: the tensors with >= 2 axes, shapes checked
        p = cfg.pruning
        return patterns.pattern_paths(paths, {q: np.shape(flat[q]) for q in paths}, p.granularity, p.n_m, p.block)
    out = structured.unit_paths(paths, {p: np.shape(flat[p]) for p in paths}, cfg.pruning.granularity, cfg.pruning.head)
    if not out:
        kinds = {"neuron": "dense (2-D) kernels", "channel": "convolution kernels"}[cfg.pruning.granularity]
        raise ConfigError(f"pruning.granularity={cfg.pruning.granularity}: none of the prunable tensors {paths} are "
                          f"{kinds} outside the output layer; use pruning.granularity=weight or the other granularity")
    return out


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
            units = ctx.prune_paths if cfg.pruning.granularity != "weight" else None  # whole units, n:m groups, blocks
            masks = M.stack([control.mask(m, paths, C.control_rng(cfg.seed, r, kind, level), units, cfg.pruning)
                             for r, m in zip(ids, M.unstack(masks, len(ids)))])
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
    logger = WandbLogger(mode=wb.mode if writer.primary() else "disabled", project=wb.project, entity=wb.entity, group=wb.group or label, tags=wb.tags,
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
            writer.barrier(f"lth level {level}")  # what process 0 wrote is on disk for all (lth.runs.writer)
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
        logger.log_results(df, table)  # only when this invocation trained something (`logger.records`)
        if logger.records:
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
    logger.start_level(level, float(first.mean()), members=[(g.kind, g.size) for g in groups], firsts=[g.first for g in groups])
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
        signum = writer.stop_requested()  # several processes stop at the same boundary
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
    if trainer.ste is not None:  # the network trained is m(w) ⊙ w: the level's final weights
        states = trainer.ste.finalize(states)
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
