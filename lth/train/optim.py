"""Optimizers and learning-rate schedules, from optax.

The schedule is a function of the *train state's* step, not of the optimizer's own counter: the
optimizer is wrapped in `optax.inject_hyperparams` and the train step writes
`learning_rate = schedule(state.step)` into its state before each update. So rewinding the step to
k rewinds the schedule to k, also when the optimizer state itself is reset (as OpenLTH does).

Weight decay follows PyTorch's conventions, which the papers used: for `sgd`/`momentum`/`adam` it
is L2 added to the gradient before the optimizer (`torch.optim.SGD(weight_decay=...)`), for `adamw`
it is decoupled (`torch.optim.AdamW`).
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from lth.config import defaults
from lth.config.schema import OptimizerConfig
from lth.config.durations import to_steps


def make_schedule(cfg: OptimizerConfig, *, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
    """The learning rate as a function of the step.

    `step`: lr × gamma^(number of milestones <= step), PyTorch's MultiStepLR, so with milestones
    [32000it, 48000it] the update at step 32000 is the first at lr/10. `cosine`: cosine decay to 0
    at `total_steps`. `linear`: linear decay to 0 at `total_steps` (BERT fine-tuning). `inv`: Caffe's policy lr × (1 + inv_gamma × step)^(-inv_power) (optax has
    none; Caffe's lenet_solver: 1e-4, 0.75). A `warmup` ramps linearly from 0 to the schedule's
    value first.
    """
    cfg = defaults.fill(cfg, "optimizer")  # the optimizer's own lr (conf/optimizer)
    s = cfg.schedule
    warmup = to_steps(s.warmup, steps_per_epoch, setting="optimizer.schedule.warmup")
    if s.name == "constant":
        main = optax.constant_schedule(cfg.lr)
    elif s.name == "step":
        bounds = sorted(
            to_steps(m, steps_per_epoch, setting=f"optimizer.schedule.milestones[{i}]") for i, m in enumerate(s.milestones)
        )
        pieces = [optax.constant_schedule(cfg.lr * s.gamma**i) for i in range(len(bounds) + 1)]
        main = optax.join_schedules(pieces, bounds)
    elif s.name == "cosine":
        main = optax.cosine_decay_schedule(cfg.lr, decay_steps=max(1, total_steps))
    elif s.name == "linear":  # BERT fine-tuning (Hugging Face's linear schedule)
        main = optax.linear_schedule(cfg.lr, 0.0, max(1, total_steps))
    elif s.name == "inv":
        lr, inv_gamma, inv_power = float(cfg.lr), float(s.inv_gamma), float(s.inv_power)

        def main(step):
            return lr * (1.0 + inv_gamma * jnp.asarray(step, jnp.float32)) ** (-inv_power)
    else:  # validated earlier; kept for direct library use
        raise ValueError(f"optimizer.schedule.name={s.name!r}")
    if warmup > 0:
        ramp = optax.linear_schedule(0.0, cfg.lr, warmup)
        # After the warmup the main schedule continues at the absolute step (not step - warmup).
        return lambda step: jnp.where(step < warmup, ramp(step), main(step))
    return main


def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
    """An optax optimizer whose `learning_rate` hyperparameter the train step sets every update."""
    cfg = defaults.fill(cfg, "optimizer")  # the optimizer's own lr, momentum, weight decay (conf/optimizer)

    def build(learning_rate):
        if cfg.name in ("sgd", "momentum"):
            momentum = cfg.momentum or 0.0
            core = optax.sgd(learning_rate, momentum=momentum or None, nesterov=cfg.nesterov)
        elif cfg.name == "adam":
            core = optax.adam(learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
        elif cfg.name == "adamw":
            return optax.adamw(learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
        else:
            raise ValueError(f"optimizer.name={cfg.name!r}")
        if cfg.weight_decay:
            return optax.chain(optax.add_decayed_weights(cfg.weight_decay), core)
        return core

    return optax.inject_hyperparams(build)(learning_rate=cfg.lr)
