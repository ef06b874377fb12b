"""Settings of the pruning methods and rewinding modes that depend on one another: the scope a
method prunes in when none is given, the checks of `rewind.keep`, `rewind.finetune_lr` and GraSP's
options, and the warnings a run prints before it trains.

- Scope. SNIP, GraSP and SynFlow rank every weight of the network against one threshold in their
  papers (Lee et al. 2019, Wang et al. 2020, Tanaka et al. 2020): how many weights each layer keeps
  is their output. Under `layerwise` (or `module`) scope each tensor is held to IMP's per-layer
  count, and the method only picks which weights of a tensor go. So `pruning.scope: null` (the
  default, and `conf/pruning/layerwise.yaml`'s) means `global` for these three and `layerwise` for
  the others; an explicit non-global scope with them is honoured, with a warning. A non-uniform
  `pruning.distribution` or N:M granularity sets every tensor's count itself: `layerwise`.
- Fine-tuning (`rewind.mode=finetune`) trains at schedule(T - 1), the schedule's final rate: under a
  linear or cosine decay that is ~0 (the BERT preset's: 2.4e-8), and the network barely moves.
  `rewind.finetune_lr` sets a constant rate instead; without it the run warns.

Kept apart from `lth.config` (the schema) so the schema's module stays a schema.
"""

from __future__ import annotations

import re
from typing import Any, Callable

GLOBAL_BY_DEFAULT = ("snip", "grasp", "synflow")  # methods whose papers prune globally
DECAYING_TO_ZERO = ("linear", "cosine")  # schedules whose final rate is ~0
GRASP_WEIGHTS = ("prunable", "all")


def scope(pruning: Any) -> str:
    """The scope a `PruningConfig` prunes in: its own, or when null the method's default."""
    if pruning.scope is not None:
        return pruning.scope
    if pruning.distribution != "uniform" or pruning.granularity == "n:m":  # per-tensor counts (lth.sparsity.level_counts)
        return "layerwise"
    return "global" if pruning.method in GLOBAL_BY_DEFAULT else "layerwise"


def validate(cfg: Any) -> None:
    """Checks of `rewind.keep`, `rewind.finetune_lr` and GraSP's options (`lth.config.schema.validate`
    calls this); raises `ConfigError` naming the setting, its value and what is allowed."""
    from lth.config.errors import ConfigError

    r, p = cfg.rewind, cfg.pruning
    for pattern in r.keep:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ConfigError(f"rewind.keep: {pattern!r} is not a valid regular expression ({e})") from None
    if r.keep and r.mode != "weights":
        raise ConfigError(f"rewind.keep={list(r.keep)!r} is for rewind.mode=weights (it keeps those parameters' final values "
                          f"where the others are rewound); rewind.mode={r.mode} starts every parameter from its final value already")
    if r.finetune_lr is not None:
        if r.mode != "finetune":
            raise ConfigError(f"rewind.finetune_lr={r.finetune_lr!r} is the learning rate of rewind.mode=finetune, "
                              f"not of rewind.mode={r.mode}; leave it out")
        if not r.finetune_lr > 0:
            raise ConfigError(f"rewind.finetune_lr={r.finetune_lr!r}: the fine-tuning learning rate must be > 0 "
                              "(or null: the schedule's final rate)")
    if p.grasp_weights not in GRASP_WEIGHTS:
        raise ConfigError(f"pruning.grasp_weights={p.grasp_weights!r} is not one of {', '.join(GRASP_WEIGHTS)}")
    if p.grasp_samples_per_class is not None and p.grasp_samples_per_class < 1:
        raise ConfigError(f"pruning.grasp_samples_per_class={p.grasp_samples_per_class!r}: must be >= 1 "
                          "(examples of each class per GraSP batch; null: score_batches training batches)")


def before_training(cfg: Any, trainer: Any, total_steps: int) -> list[str]:
    """Checks that need the data, then what a run should say before it trains: a pruning-at-
    initialisation method held to per-layer counts, and fine-tuning at a final learning rate of ~0
    (`trainer`: the run's, with its data and LR schedule; `total_steps`: T). Raises `ConfigError`
    when GraSP's class-balanced data cannot be drawn."""
    p, r = cfg.pruning, cfg.rewind
    if p.method == "grasp" and p.grasp_samples_per_class is not None:
        _check_class_balance(p.grasp_samples_per_class, trainer)
    return warnings(cfg, trainer.lr_fn, total_steps)


def _check_class_balance(per_class: int, trainer: Any) -> None:
    import numpy as np

    from lth.config.errors import ConfigError

    classes = int(trainer.dataset.num_classes)
    counts = np.bincount(np.asarray(trainer.y_train), minlength=classes)
    if counts.min() < per_class:
        raise ConfigError(f"pruning.grasp_samples_per_class={per_class}: class {int(counts.argmin())} has only "
                          f"{int(counts.min())} training examples; lower it")
    if per_class * classes % 2:
        raise ConfigError(f"pruning.grasp_samples_per_class={per_class}: GraSP splits the {per_class} x {classes} "
                          "class-balanced examples into two halves, so their number must be even")


def warnings(cfg: Any, schedule: Callable, total_steps: int) -> list[str]:
    """The warnings of `before_training` (`schedule`: the LR schedule of the run)."""
    out = []
    p, r = cfg.pruning, cfg.rewind
    if p.method in GLOBAL_BY_DEFAULT and scope(p) != "global" and p.distribution == "uniform" and p.granularity != "n:m":
        out.append(f"pruning.scope={scope(p)} with pruning.method={p.method}: every tensor keeps IMP's per-layer count, so "
                   f"{p.method} only chooses which weights of a tensor go, not how many each layer keeps (the allocation "
                   "the method exists for; its paper prunes globally). Leave pruning.scope unset (or global) for the paper's method")
    if r.mode == "finetune" and r.finetune_lr is None and cfg.optimizer.schedule.name in DECAYING_TO_ZERO:
        final = float(schedule(max(0, total_steps - 1)))
        out.append(f"rewind.mode=finetune trains at the schedule's final learning rate, schedule(T-1) = {final:.3g} under "
                   f"optimizer.schedule.name={cfg.optimizer.schedule.name}: the weights barely move; set rewind.finetune_lr "
                   f"(a constant rate, e.g. optimizer.lr={cfg.optimizer.lr:g})")
    return out
