"""Rewinding: where the survivors of a pruning step start their next training.

Weight rewinding (Frankle & Carbin 2019 with k = 0; Frankle et al. 2020 with k > 0): the weights
become mask ⊙ θk, BatchNorm statistics and the step counter (hence the LR schedule and the data
order) go back to those at step k, and the optimizer state is either a fresh one (`reset`, as
OpenLTH does) or the one saved at step k (`rewound`), per `rewind.optimizer_state`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from lth.masks import apply_mask
from lth.train_state import TrainState

PyTree = Any


def snapshot(states: TrainState) -> dict[str, PyTree]:
    """What is kept of (stacked) states at the rewind point, as a plain tree for checkpoints."""
    return {"params": states.params, "batch_stats": states.batch_stats, "opt_state": states.opt_state, "step": states.step}


def rewind_weights(template: TrainState, saved: dict[str, PyTree], masks: PyTree, *, optimizer_state: str) -> TrainState:
    """Stacked states for the next level: weights mask ⊙ θk, step k, BatchNorm statistics of step
    k, and a fresh (`reset`) or the saved (`rewound`) optimizer state. `template` supplies the
    static parts (model, optimizer, schedule)."""

    def one(params, batch_stats, opt_state, step, mask):
        params = apply_mask(params, mask)
        fresh = template.tx.init(params)
        return TrainState(
            step=jnp.asarray(step, jnp.int32), apply_fn=template.apply_fn, params=params, tx=template.tx,
            opt_state=opt_state if optimizer_state == "rewound" else fresh, mask=mask,
            batch_stats=batch_stats, lr_fn=template.lr_fn,
        )

    return jax.jit(jax.vmap(one))(saved["params"], saved["batch_stats"], saved["opt_state"], saved["step"], masks)
