"""The plan of a lottery run and its preparation: the step counts of a level (`Plan`, `make_plan`: steps per
epoch, the rewind step, evaluation and logging intervals, gradual pruning's and dynamic sparse training's steps), and `prepare(cfg)`:
everything that can fail on bad input (validation, the model, the data, the plan, the trainer), done
before anything is written. The level loop (`lth.lottery.levels`), compression and the instability
analysis prepare their runs here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from lth.sparsity import gradual
from lth.config import targets
from lth.sparsity import custom_scores
from lth.config.schema import Config, ConfigError, data_dir, validate
from lth.config.durations import to_steps
from lth.train.optim import make_optimizer, make_schedule
from lth.train.trainer import Trainer


@dataclasses.dataclass(frozen=True)
class Plan:
    """The run's durations in steps, fixed once the dataset (hence steps per epoch) is known."""

    total_steps: int
    rewind_step: int
    eval_every: int
    log_every: int
    steps_per_epoch: int
    gradual: tuple[int, int, int] | None = None  # (begin, end, every) of gradual pruning
    dynamic: tuple[int, int, int] | None = None  # (begin, end, every) of dynamic sparse training

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("gradual", "dynamic"):
            if d[key] is None:
                d.pop(key)  # the hash of every run without them stays as it was
            else:
                d[key] = list(d[key])
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
    # (straight-through pruning, method=magnitude_ste, recomputes its mask every step: no update steps)
    moving = cfg.pruning.schedule == "dynamic" and cfg.pruning.method != "magnitude_ste"
    dynamic = _dynamic_steps(cfg, spe, total) if moving else None
    return Plan(total, k, max(1, eval_every), max(1, log_every), spe, gradual, dynamic)


def _dynamic_steps(cfg: Config, spe: int, total: int) -> tuple[int, int, int]:
    """(begin, end, every) of dynamic sparse training in steps; `end` defaults to 3/4 of training.
    The mask moves at begin + jΔt < end, so begin < end <= train.duration."""
    d = cfg.pruning.dynamic
    begin = to_steps(d.begin, spe, setting="pruning.dynamic.begin")
    end = to_steps(d.end, spe, setting="pruning.dynamic.end") if d.end is not None else (3 * total) // 4
    if not begin < end <= total:
        raise ConfigError(
            f"pruning.dynamic.begin={d.begin!r} (step {begin}) and pruning.dynamic.end={d.end!r} (step {end}): dynamic "
            f"sparse training needs begin < end <= train.duration ({total} steps)")
    every = to_steps(d.every, spe, setting="pruning.dynamic.every")
    if every < 1:
        raise ConfigError(f"pruning.dynamic.every={d.every!r} is {every} steps: must be at least one step")
    return begin, end, every


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


def _augmenter(cfg: Config):
    if cfg.dataset.crop is not None:  # ImageNet: random-resized or centre crops (lth.data.imagenet_augment)
        from lth.data.imagenet_augment import augmenter

        return augmenter(cfg.dataset.crop, cfg.dataset.augment)
    if not cfg.dataset.augment:
        return None
    from lth.data.augment import random_crop_flip

    return random_crop_flip


def prepare(cfg: Config, supplied: targets.Supplied = targets.Supplied()):
    """Everything that can fail on bad input, done before anything is written: validation, the
    model name, the data, the step plan, the model's parameters and the prunable tensors. A
    researcher's own model, data or score function (`supplied`, or `_target_`s) is imported here."""
    validate(cfg)
    from lth.data import load_dataset
    from lth.models import build_model, check_fits_data

    targets.check(cfg, supplied)
    if cfg.pruning.method == "custom":
        custom_scores.score_function(cfg)  # imports, or names what does not
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
                      shuffle=cfg.dataset.shuffle, drop_last=cfg.train.drop_last, unroll=cfg.train.unroll)
    return dataset, plan, trainer
