"""The train state: Flax's `TrainState` plus the mask, BatchNorm statistics and the LR schedule.

The masked update (`apply_masked_gradients`) zeroes the gradient of pruned weights, runs the optax
update with the learning rate of the state's step, and re-applies the mask afterwards, so pruned
weights stay exactly 0 under momentum, Adam moments and weight decay alike. (`optax.masked` is
static and per leaf: the right tool for "no weight decay on biases", not for pruning masks.)
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state

from lth.sparsity.masks import apply_mask

PyTree = Any


def with_learning_rate(opt_state, lr):
    """`opt_state` of an `optax.inject_hyperparams` optimizer with its learning rate set to `lr`."""
    old = opt_state.hyperparams["learning_rate"]
    return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": jnp.asarray(lr, dtype=old.dtype)})


def learning_rate(opt_state) -> jax.Array:
    return opt_state.hyperparams["learning_rate"]


class TrainState(train_state.TrainState):
    """One replicate's training state; R replicates are R of these stacked on a leading axis."""

    mask: PyTree = None
    batch_stats: PyTree = struct.field(default_factory=dict)
    lr_fn: Callable[[jax.Array], jax.Array] = struct.field(pytree_node=False, default=None)

    @classmethod
    def create_masked(cls, *, apply_fn, params, tx, lr_fn, mask, batch_stats=None) -> "TrainState":
        params = apply_mask(params, mask)
        return cls(
            step=jnp.asarray(0, dtype=jnp.int32),
            apply_fn=apply_fn,
            params=params,
            tx=tx,
            opt_state=tx.init(params),
            mask=mask,
            batch_stats=batch_stats if batch_stats is not None else {},
            lr_fn=lr_fn,
        )

    def apply_masked_gradients(self, grads: PyTree, *, masked: bool = True, **changes) -> "TrainState":
        """One optimizer step at lr = schedule(step). `masked=False` is the dense baseline the
        benchmark compares against (same code, no mask operations)."""
        if masked:
            grads = apply_mask(grads, self.mask)
        opt_state = with_learning_rate(self.opt_state, self.lr_fn(self.step))
        updates, opt_state = self.tx.update(grads, opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        if masked:
            params = apply_mask(params, self.mask)
        return self.replace(step=self.step + 1, params=params, opt_state=opt_state, **changes)

    def fresh_opt_state(self) -> PyTree:
        return self.tx.init(self.params)
