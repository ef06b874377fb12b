"""`masked(tx, masks)`: any optax optimizer, with pruned weights and their state held at exactly 0.

With m the boolean mask (True = kept), g the incoming gradient, θ the params and S the inner
optimizer's state, one step of `masked(tx, m)` is

    ĝ = m ⊙ g                          (pruned gradients never enter the moments; NaN-safe `where`)
    u, S' = tx.update(ĝ, S, m ⊙ θ)      (weight decay, trust ratios, ... see the sparse network)
    û = m ⊙ u + (1 − m) ⊙ (−θ)          (kept weights move as `tx` says; a pruned weight is set to 0)
    S'' = S' with every leaf of every params-shaped subtree multiplied by m

so after `optax.apply_updates` the pruned weights are exactly 0 (θ + (−θ) = 0 in IEEE arithmetic:
params that were not masked beforehand become sparse at the first step) and stay 0 whatever the
optimizer (momentum, Nesterov, Adam's moments, AdamW's decay, LAMB, Lion, chains with clipping).
Without `params` in `update`, û = m ⊙ u (weights already 0 stay 0). "Params-shaped subtree" means
a subtree of the state with the params' pytree structure; its leaves whose shape equals the
mask's are re-zeroed (momenta, Adam's μ and ν), others (Adafactor's factored row/column
statistics, counts) are left alone: they cannot hold per-weight values.

The state is the inner optimizer's own (no wrapper), so a new mask (`masked(tx, new_masks)`)
continues from the same state. lth's trainer does the same masking (`lth.train.train_state`);
`optax.masked` is something else (a static per-leaf switch, e.g. no weight decay on biases).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

PyTree = Any


def _bool_masks(masks: PyTree) -> PyTree:
    """Masks as boolean arrays; 0/1 numbers accepted, anything else refused (when concrete)."""
    def conv(m):
        m = jnp.asarray(m)
        if m.dtype == jnp.bool_:
            return m
        try:
            host = np.asarray(m)
        except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
            return m != 0  # traced: cannot check the values here
        if not np.isin(host, (0, 1)).all():
            bad = host[~np.isin(host, (0, 1))].ravel()[:3].tolist()
            raise ValueError(f"masked: a mask must be booleans or 0/1 numbers; found values {bad}")
        return m != 0
    return jax.tree.map(conv, masks)


def _check_structure(tree: PyTree, masks: PyTree, what: str) -> None:
    if jax.tree.structure(tree) != jax.tree.structure(masks):
        raise ValueError(f"masked: the masks' structure {jax.tree.structure(masks)} differs from the "
                         f"{what}' {jax.tree.structure(tree)}; masks need one leaf per parameter")
    for t, m in zip(jax.tree.leaves(tree), jax.tree.leaves(masks)):
        if np.shape(t) != np.shape(m):
            raise ValueError(f"masked: a mask of shape {np.shape(m)} for a {what} leaf of shape {np.shape(t)}")


def _zero(x, m):
    return jnp.where(m, x, jnp.zeros_like(x))


def zero_state(state: PyTree, masks: PyTree) -> PyTree:
    """`state` with every params-shaped subtree's mask-shaped leaves zeroed where `masks` is False."""
    treedef = jax.tree.structure(masks)

    def params_like(x) -> bool:
        return jax.tree.structure(x) == treedef

    def fix(x):
        if not params_like(x):
            return x
        return jax.tree.map(lambda v, m: _zero(v, m) if hasattr(v, "shape") and v.shape == m.shape else v, x, masks)

    return jax.tree.map(fix, state, is_leaf=params_like)


def masked(tx: optax.GradientTransformation, masks: PyTree) -> optax.GradientTransformation:
    """`tx` made mask-aware: pruned weights (mask False/0) and their optimizer state stay exactly 0
    (the module docstring's equations). `masks` has the params' structure, booleans or 0/1."""
    if not hasattr(tx, "init") or not hasattr(tx, "update"):
        raise TypeError(f"masked: tx must be an optax GradientTransformation, got {tx!r}")
    m = _bool_masks(masks)

    def init(params):
        _check_structure(params, m, "params")
        return zero_state(tx.init(jax.tree.map(_zero, params, m)), m)

    def update(updates, state, params=None, **extra):
        _check_structure(updates, m, "updates")
        g = jax.tree.map(_zero, updates, m)
        p = None if params is None else jax.tree.map(_zero, params, m)
        u, state = tx.update(g, state, p, **extra)
        if params is None:
            u = jax.tree.map(_zero, u, m)
        else:
            u = jax.tree.map(lambda ui, th, mi: jnp.where(mi, ui, -th).astype(ui.dtype), u, params, m)
        return u, zero_state(state, m)

    if isinstance(tx, optax.GradientTransformationExtraArgs):
        return optax.GradientTransformationExtraArgs(init, update)
    return optax.GradientTransformation(lambda p: init(p), lambda u, s, p=None: update(u, s, p))
