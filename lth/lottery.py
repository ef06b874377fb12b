"""Iterative magnitude pruning with rewinding: one lottery-ticket run, level by level.

Level 0 trains the dense network from θ0 (a random initialisation, or pre-trained weights:
`lth.pretrained`) to the end, keeping the states at the rewind point k. Level L >= 1 prunes a
fraction of the remaining weights of level L-1's final weights (a subset of its mask), restarts
the survivors as the rewinding mode says (`lth.rewind`: θk and step k, or the final weights with
the LR schedule restarted or at its final rate) and trains steps k .. T-1 again, together with
the controls listed in `controls` (`lth.controls`), all members in one compiled program
(`lth.members`).

The loop is handed the mode, the controls and the starting point as data; it only decides what
is left to train. Every level writes each kind's mask, final weights and result rows before the
next starts, so an interrupted run loses at most the level in progress; re-running the same command
skips what is done, and adding a control trains just the missing members.

`run(cfg)` is the whole experiment; `experiments/lottery.py` is its Hydra front end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from lth import ablations, checkpoints, controls as C, flops, gradual, masks as M, members, methods, pretrained, pruning, results, rewind
from lth import structured
from lth.config import Config, ConfigError, data_dir, to_dict, validate
from lth.durations import to_steps
from lth.optim import make_optimizer, make_schedule
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


def prepare(cfg: Config):
    """Everything that can fail on bad input, done before anything is written: validation, the
    model name, the data, the step plan, the model's parameters and the prunable tensors."""
    validate(cfg)
    from lth.data import load_dataset
    from lth.models import build_model, check_fits_data

    build_model(cfg.model, num_classes=2)  # an unknown model name fails here, before the data loads
    dataset = load_dataset(cfg.dataset, data_dir(cfg))
    if cfg.dataset.augment and len(dataset.input_shape) != 3:
        raise ConfigError(
            f"dataset.augment=true: random crop + flip needs images (height, width, channels), but dataset "
            f"{dataset.name!r} has examples of shape {dataset.input_shape}; set dataset.augment=false"
        )
    plan = make_plan(cfg, dataset.num_train)
    model = build_model(cfg.model, dataset.num_classes)
    check_fits_data(cfg.model, model, dataset, dtype=cfg.train.dtype)
    if cfg.train.dtype != "float32":
        model = model.clone(dtype=jnp.dtype(cfg.train.dtype))
    lr_fn = make_schedule(cfg.optimizer, total_steps=plan.total_steps, steps_per_epoch=plan.steps_per_epoch)
    trainer = Trainer(model, dataset, make_optimizer(cfg.optimizer), lr_fn, batch_size=cfg.train.batch_size,
                      eval_batch_size=cfg.train.eval_batch_size, augment=_augmenter(cfg),
                      replicates_as=None if cfg.train.replicates_as == "auto" else cfg.train.replicates_as)
    return dataset, plan, trainer


def run(cfg: Config, *, echo: Callable[[str], None] = print) -> Outcome:
    """Run (or continue) the lottery experiment `cfg`; returns its directory and tables."""
    dataset, plan, trainer = prepare(cfg)
    keys = replicate_keys(cfg.seed, cfg.replicates)
    variables = trainer.init_variables(keys["init"])
    inputs, notes = {}, []
    if cfg.init.checkpoint is not None:
        # Loaded and checked against the model before anything is written.
        loaded = pretrained.load(cfg.init.checkpoint, cfg.init.replicate, cfg.model)
        variables, notes = pretrained.apply(variables, loaded, cfg.init.reinit_patterns,
                                            setting=f"init.checkpoint={cfg.init.checkpoint!r}")
        inputs["init_checkpoint"] = pretrained.content_hash(cfg.init.checkpoint)
    one_params = jax.tree.map(lambda x: x[0], variables["params"])
    paths = M.prunable_paths(one_params, cfg.pruning.prunable, cfg.pruning.exclude)
    if not paths:
        names = ", ".join(M.flatten(one_params))
        raise ConfigError(f"pruning.prunable={cfg.pruning.prunable} (exclude={cfg.pruning.exclude}) selects no parameter; parameters: {names}")
    prune_paths = _prune_paths(cfg, one_params, paths)
    if plan.gradual is not None:
        begin, end, every = plan.gradual
        trainer.mask_update = gradual.GradualPruning(
            tuple((tuple(g), 1.0 - frac) for g, frac in pruning.groups(paths, cfg.pruning)), begin=begin, end=end,
            every=every, initial_density=cfg.pruning.gradual.initial_density)
    ones = jax.vmap(M.ones_like)(variables["params"])
    states0 = trainer.create_states(variables, ones)

    rd = RunDir.for_config(cfg, plan.as_dict(), inputs or None)
    rd.create()
    lock = rd.lock()
    try:
        for note in notes:
            echo(f"init.checkpoint: {note}")
        ctx = methods.Context(cfg, trainer, keys["data"], paths, prune_paths)
        return _run_levels(cfg, rd, plan, dataset, trainer, keys, states0, ctx, one_params, echo, inputs)
    finally:
        lock.close()


def _prune_paths(cfg: Config, one_params, paths: list[str]) -> list[str]:
    """The prunable tensors a pruning step ranks: all of `paths`, or under structured granularity
    those whose units it removes (`lth.structured`); none is a configuration error."""
    if cfg.pruning.granularity == "weight":
        return paths
    flat = M.flatten(one_params)
    out = structured.unit_paths(paths, {p: np.shape(flat[p]) for p in paths}, cfg.pruning.granularity)
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
    states at the rewind point and each finished level's ticket mask and final weights."""

    def __init__(self, rd: RunDir, template):
        self.rd, self.template = rd, template
        self.saved = None  # host tree of the states at the rewind point
        self.levels: dict[int, dict[str, Any]] = {}  # level -> {"mask", "params", "batch_stats"}

    def rewind_point(self):
        if self.saved is None:
            self.saved = checkpoints.restore(self.rd.file("rewind"), self.template)
        return self.saved

    def level(self, level: int) -> dict[str, Any]:
        if level not in self.levels:
            self.levels = {level: restore_members(self.rd, level, "ticket", self.template)}
        return self.levels[level]

    def keep(self, level: int, host) -> None:
        self.levels = {level: {"mask": host.mask, "params": host.params, "batch_stats": host.batch_stats}}


def restore_members(rd: RunDir, level: int, kind: str, template) -> dict[str, Any]:
    """{"mask", "params", "batch_stats"} (stacked, host) of a finished level's members of one kind."""
    d = rd.member_dir(level, kind)
    mask = checkpoints.restore(os.path.join(d, "mask"), jax.tree.map(lambda p: np.zeros(np.shape(p), bool), template["params"]))
    final = checkpoints.restore(os.path.join(d, "final"), {"params": template["params"], "batch_stats": template["batch_stats"]})
    return {"mask": mask, **final}


def _level_groups(cfg, level, todo, sources, trainer, states0, ctx, lr_fn) -> list[members.Group]:
    """The members a level still has to train, as groups of stacked states at their start."""
    if level == 0:
        return [members.Group("ticket", states0)]
    R, mode, paths = cfg.replicates, rewind.MODES[cfg.rewind.mode], ctx.paths
    saved = sources.rewind_point()
    prev = sources.level(level - 1) if (mode.weights_from == "final" or "ticket" in todo) else None
    if "ticket" in todo:
        ticket_mask = methods.next_masks(methods.METHODS[cfg.pruning.method], ctx, level, prev["mask"], prev, saved)
    else:
        ticket_mask = restore_members(sources.rd, level, "ticket", sources.template)["mask"]
    start = rewind.start_weights(mode, saved, prev)
    groups = []
    for kind in todo:
        if kind == "ticket":
            masks, weights, opt = ticket_mask, start, cfg.rewind.optimizer_state
            if ablations.ABLATIONS[cfg.pruning.ablation].fresh_weights:
                weights, opt = C.fresh_weights(trainer, cfg.seed, R, "ablation:reinit", level), "reset"
        else:
            control = C.CONTROLS[kind]
            masks = M.stack([control.mask(m, paths, C.control_rng(cfg.seed, r, kind, level))
                             for r, m in enumerate(M.unstack(ticket_mask, R))])
            weights, opt = start, cfg.rewind.optimizer_state
            if control.fresh_weights:
                weights, opt = C.fresh_weights(trainer, cfg.seed, R, kind, level), "reset"
        st = rewind.restart(states0, weights["params"], weights["batch_stats"], saved, masks, optimizer_state=opt, lr_fn=lr_fn)
        groups.append(members.Group(kind, st))
    return groups


def _run_levels(cfg, rd, plan, dataset, trainer, keys, states0, ctx, one_params, echo, inputs) -> Outcome:
    from omegaconf import OmegaConf

    R, paths = cfg.replicates, ctx.paths
    write_atomic(rd.file("config.yaml"), OmegaConf.to_yaml(OmegaConf.create(to_dict(cfg))))
    summary = {"run_dir": rd.path, "hash": rd.hash, "config": to_dict(cfg), "plan": plan.as_dict(), "inputs": inputs,
               "dataset": {"name": dataset.name, "train": int(dataset.num_train), "val": int(len(dataset.x_val)),
                           "test": int(len(dataset.x_test)), "num_classes": int(dataset.num_classes),
                           **({"info": dataset.info} if dataset.info else {})},
               "parameters": _counts(one_params, paths), "levels": {}}
    label = f"{cfg.name}-{rd.hash}" if cfg.name != "default" else os.path.basename(rd.path)
    from lth.logging.wandb_logger import WandbLogger

    wb = cfg.logger.wandb
    logger = WandbLogger(mode=wb.mode, project=wb.project, entity=wb.entity, group=wb.group or label, tags=wb.tags,
                         config={**to_dict(cfg), "run_hash": rd.hash, "run_dir": rd.path, "plan": plan.as_dict()},
                         directory=rd.path, log_every=plan.log_every, label=label)
    rows: list[dict] = []
    template = jax.device_get(rewind.snapshot(states0))
    sources = _Sources(rd, template)
    T, k = plan.total_steps, plan.rewind_step
    mode = rewind.MODES[cfg.rewind.mode]
    lr_fn = mode.lr_fn(states0.lr_fn, T)  # levels >= 1; built once (a static part of the states)
    ctl = f", controls {', '.join(cfg.controls)}" if cfg.controls else ""
    echo(f"run {rd.path}\n  {cfg.model.name} on {dataset.name} ({dataset.num_train} train / {len(dataset.x_val)} val / "
         f"{len(dataset.x_test)} test), {summary['parameters']['prunable_weights']:,} prunable weights, "
         f"{R} replicate(s), levels 0..{cfg.levels}, {T} steps per level, {_pruning_line(cfg, plan)}, "
         f"{cfg.rewind.mode} rewinding to step {k}{ctl}")
    try:
        for level in range(cfg.levels + 1):
            kinds = ["ticket"] + (list(cfg.controls) if level > 0 else [])
            todo = [kind for kind in kinds if not rd.level_done(level, kind)]
            done = {kind: _read_result(rd, level, kind) for kind in kinds if kind not in todo}
            if todo:
                groups = _level_groups(cfg, level, todo, sources, trainer, states0, ctx, lr_fn)
                states, member_keys = members.stack(groups, keys)
                start = 0 if level == 0 else k
                dens = stacked_density(states.mask, paths)
                logger.start_level(level, float(dens[:R].mean()), members=[(g.kind, g.size) for g in groups])
                extra = [g.kind for g in groups if g.kind != "ticket"]
                desc = f"level {level} ({100 * dens[:R].mean():.1f}%)" + (f" + {', '.join(extra)}" if extra else "")
                progress = _progress(cfg, total=T - start, desc=desc)
                try:
                    states, hist, captured = train_level(
                        trainer, states, member_keys, start=start, end=T, eval_every=plan.eval_every,
                        capture_at=k if level == 0 else None, on_eval=logger.log_eval, on_train=logger.log_train,
                        progress=progress)
                finally:
                    if progress is not None:
                        progress.close()
                if level == 0:
                    sources.saved = jax.device_get(rewind.snapshot(captured))
                    checkpoints.save(rd.file("rewind"), sources.saved)
                for g, sl in zip(groups, members.slices(groups)):
                    host = jax.device_get(members.take(states, sl))
                    done[g.kind] = _save_members(rd, level, g.kind, host, hist.select(sl), ctx, start, T)
                    if g.kind == "ticket":
                        sources.keep(level, host)
                seconds = hist.seconds
            else:
                seconds = None
            lsum = _level_summary(done)
            level_rows = [r for kind in kinds for r in done[kind]["rows"]]
            rows.extend(level_rows)
            summary["levels"][str(level)] = lsum
            if todo:
                logger.end_level(_flat_summary(lsum))
                echo(_level_line(level, lsum, seconds))
            else:
                echo(f"level {level:2d}: done already (density {lsum['density']:.4f}), skipped")
            _write_tables(rd, rows, summary)
        kept = _finished_beyond(rd, cfg.levels, rows, summary)
        if kept:
            echo(f"levels {cfg.levels + 1}..{cfg.levels + kept}: finished in an earlier run, kept in the tables")
        df = results.to_frame(rows)
        table = results.summarize(df)
        _write_tables(rd, rows, summary)
        logger.log_results(df, table)
        if logger.enabled:
            _log_ticket_metrics(logger, rd.path, echo)
            _log_figures(logger, rd.path, echo)
        logger.finish()
    except BaseException:
        logger.finish(failed=True)
        raise
    return Outcome(rd.path, df, table)


def _log_ticket_metrics(logger, run_dir: str, echo) -> None:
    """The finished run's ticket metrics (`lth.metrics`) into its W&B summary run; a failure there
    is reported, not raised: the run's tables are already written."""
    from lth import metrics

    try:
        m = metrics.ticket_metrics(run_dir)
        logger.log_metrics(m, metrics.headline(m))
    except Exception as e:  # noqa: BLE001
        echo(f"ticket metrics not logged to W&B ({type(e).__name__}: {e})")


def _log_figures(logger, run_dir: str, echo) -> None:
    """The run's figures (`lth.figures.draw_run` of its tables) as images in its W&B summary run;
    a failure there is reported, not raised: the run's tables are already written."""
    import tempfile

    try:
        from lth import figures

        with tempfile.TemporaryDirectory() as tmp:  # W&B copies each image when it is logged
            logger.log_figures(figures.draw_run(run_dir, tmp, formats=("png",)))
    except Exception as e:  # noqa: BLE001
        echo(f"figures not logged to W&B ({type(e).__name__}: {e})")


def _finished_beyond(rd: RunDir, levels: int, rows: list, summary: dict) -> int:
    """Add to `rows` and `summary` the levels after `levels` finished on disk by an earlier run with
    more levels (a re-run with fewer levels must not drop them from the tables); returns how many."""
    level = levels + 1
    while rd.level_done(level, "ticket"):
        done = {kind: _read_result(rd, level, kind) for kind in ["ticket", *C.CONTROLS] if rd.level_done(level, kind)}
        rows.extend(r for kind in done for r in done[kind]["rows"])
        summary["levels"][str(level)] = _level_summary(done)
        level += 1
    return level - levels - 1


def _pruning_line(cfg: Config, plan: Plan) -> str:
    """How this run prunes, in words, for the run's first line."""
    p = cfg.pruning
    what = p.method + (f" ({p.granularity}s)" if p.granularity != "weight" else "") + f", {p.scope}"
    if p.schedule == "gradual":
        begin, end, every = plan.gradual
        what += f", gradual to density {p.target_density} over steps {begin}..{end} every {every}"
    elif p.schedule == "oneshot":
        what += f", one shot to density {p.target_density}"
    else:
        what += f", {p.fraction:g} per level"
        if p.fractions:
            what += " (" + ", ".join(f"{pattern}: {frac:g}" for pattern, frac in p.fractions.items()) + ")"
    return what + (f", ablation {p.ablation}" if p.ablation != "none" else "")


def _read_result(rd: RunDir, level: int, kind: str) -> dict[str, Any]:
    with open(os.path.join(rd.member_dir(level, kind), "result.json")) as f:
        return json.load(f)


def _save_members(rd: RunDir, level: int, kind: str, host, hist, ctx, start: int, end: int) -> dict[str, Any]:
    """Write one kind's mask, final weights and result.json for a trained level; returns the result."""
    paths = ctx.paths
    d = rd.member_dir(level, kind)
    checkpoints.save(os.path.join(d, "mask"), host.mask)
    checkpoints.save(os.path.join(d, "final"), {"params": host.params, "batch_stats": host.batch_stats})
    dens = stacked_density(host.mask, paths)
    n = len(dens)
    level_rows = results.level_rows(level, kind, dens, _pruned_part(hist, ctx, level), start=start, end=end,
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
    write_json(os.path.join(d, "result.json"), result)
    return result


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
        line += f"\n          {kind}: test acc {100 * c['test_accuracy']:.2f}  ticket gap {100 * c['gap']:+.2f}"
    return line


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
