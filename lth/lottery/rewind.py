"""Rewinding modes: where the survivors of a pruning step start their next training.

With rewind point k, total steps T, the level-L mask m and θ_{L-1} the previous level's final
weights, every mode retrains the T - k steps k .. T-1 (equal budgets, the same data order):

- `weights` (Frankle & Carbin 2019 with k = 0; Frankle et al. 2020 with k > 0):
      θ ← m ⊙ θk,  step ← k (so lr_t = schedule(t) from t = k on),  BatchNorm statistics ← those of k.
- `lr`, learning-rate rewinding (Renda et al. 2020; `rewind.point=0it` is their full LR rewinding):
      θ ← m ⊙ θ_{L-1},  step ← k (lr_t = schedule(t) again from t = k),  BatchNorm statistics of θ_{L-1}.
- `finetune` (Han et al. 2015, as Renda et al. compare it):
      θ ← m ⊙ θ_{L-1},  lr_t = schedule(T - 1) for every step (the schedule's final rate),
      BatchNorm statistics of θ_{L-1}; the step counter still runs k .. T-1 (so does the data order).

With `rewind.keep` patterns, `weights` mode takes the matching parameters (a task head) from θ_{L-1}
instead of θk.
In every mode the optimizer state (momentum, Adam moments) is either a fresh one (`reset`, as
OpenLTH does) or the one saved at step k (`rewound`), per `rewind.optimizer_state`.

The modes are data (`MODES`): the level loop asks a mode which weights a level starts from and
which learning-rate function it trains with, and `restart` builds the states.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from lth.sparsity.masks import apply_mask, flatten, unflatten
from lth.train.train_state import TrainState

PyTree = Any


@dataclasses.dataclass(frozen=True)
class RewindMode:
    """One rewinding mode. `weights_from`: `rewind` (θk) or `final` (the previous level's final
    weights); `final_lr`: train at the schedule's final learning rate instead of the schedule."""

    name: str
    weights_from: str
    final_lr: bool

    def lr_fn(self, schedule: Callable, total_steps: int, finetune_lr: float | None = None) -> Callable:
        """The learning-rate function of levels >= 1: the schedule itself, or for `finetune` the
        constant schedule(T - 1), or `finetune_lr` when given (`rewind.finetune_lr`). Build it once
        per run: it is a static part of the train state."""
        if not self.final_lr:
            return schedule
        if finetune_lr is not None:
            return optax.constant_schedule(float(finetune_lr))
        return optax.constant_schedule(float(schedule(max(0, total_steps - 1))))


MODES: dict[str, RewindMode] = {
    "weights": RewindMode("weights", weights_from="rewind", final_lr=False),
    "lr": RewindMode("lr", weights_from="final", final_lr=False),
    "finetune": RewindMode("finetune", weights_from="final", final_lr=True),
}


def snapshot(states: TrainState) -> dict[str, PyTree]:
    """What is kept of (stacked) states at the rewind point, as a plain tree for checkpoints."""
    return {"params": states.params, "batch_stats": states.batch_stats, "opt_state": states.opt_state, "step": states.step}


def restart(template: TrainState, weights: PyTree, batch_stats: PyTree, saved: dict[str, PyTree], masks: PyTree, *,
            optimizer_state: str, lr_fn: Callable | None = None) -> TrainState:
    """Stacked states that start a level: params mask ⊙ `weights`, the given BatchNorm statistics,
    step k (`saved["step"]`), and a fresh (`reset`) or the saved (`rewound`) optimizer state.
    `template` supplies the static parts (model, optimizer); `lr_fn` replaces its schedule."""
    lr_fn = lr_fn or template.lr_fn

    def one(params, bstats, opt_state, step, mask):
        params = apply_mask(params, mask)
        fresh = template.tx.init(params)
        return TrainState(
            step=jnp.asarray(step, jnp.int32), apply_fn=template.apply_fn, params=params, tx=template.tx,
            opt_state=opt_state if optimizer_state == "rewound" else fresh, mask=mask,
            batch_stats=bstats, lr_fn=lr_fn,
        )

    return jax.jit(jax.vmap(one))(weights, batch_stats, saved["opt_state"], saved["step"], masks)


def rewind_weights(template: TrainState, saved: dict[str, PyTree], masks: PyTree, *, optimizer_state: str) -> TrainState:
    """Weight rewinding: stacked states with weights mask ⊙ θk, step k, BatchNorm statistics of k,
    and a fresh (`reset`) or the saved (`rewound`) optimizer state."""
    return restart(template, saved["params"], saved["batch_stats"], saved, masks, optimizer_state=optimizer_state)


def start_weights(mode: RewindMode, saved: dict[str, PyTree], final: dict[str, PyTree] | None,
                  keep: list[str] | tuple[str, ...] = ()) -> dict[str, PyTree]:
    """The weights and BatchNorm statistics a level starts from under `mode`: those of the rewind
    point (`saved`) or the previous level's final ones (`final`, {"params", "batch_stats"}). Under
    rewinding, the leaves whose path matches a pattern of `keep` (`rewind.keep`, e.g. `^head/`)
    take their `final` values: Chen et al.'s release rewinds the encoder and keeps the trained
    classifier."""
    src = saved if mode.weights_from == "rewind" else final
    out = {"params": src["params"], "batch_stats": src["batch_stats"]}
    if keep and mode.weights_from == "rewind":
        out = {k: _kept(out[k], final[k], keep) for k in out}
    return out


def _kept(rewound: PyTree, final: PyTree, keep) -> PyTree:
    """`rewound` with the leaves whose `/`-joined path matches a pattern of `keep` taken from `final`."""
    flat, last = flatten(rewound), flatten(final)
    if not flat:
        return rewound
    return unflatten({p: last[p] if any(re.search(k, p) for k in keep) else v for p, v in flat.items()})
