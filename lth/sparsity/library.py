"""Magnitude masks and iterative magnitude pruning as pure functions over a params pytree.

The library face of lth's pruning engine (`lth.sparsity.pruning`) for a researcher's own JAX code:
no lth `Config`, no trainer; params are any pytree (nested dicts, Flax `FrozenDict`, lists), masks
are boolean pytrees of the same structure (True = kept).

Which tensors are prunable is decided by regular expressions searched (`re.search`) in each leaf's
`/`-joined path (`"fc1/kernel"`); the default `PRUNABLE = (r"(^|/)kernel$",)` selects every dense
and convolution kernel. Other leaves (biases, norms, embeddings unless selected) get all-True masks.

- `magnitude_masks(params, density, scope=...)` keeps the largest |θ|:
  `global` scope ranks every prunable weight against one threshold and keeps
  K = N − round((1 − d)·N) of the N prunable weights (round half up, lth's `n_to_prune`);
  `layerwise` keeps K_l = N_l − round((1 − d)·N_l) in each tensor l. `density` may also be a pytree
  of per-tensor densities (e.g. `sparsity.erk(params, 0.1)`), which implies layerwise.
- `imp(train_fn, params, levels=L, fraction=p)` is iterative magnitude pruning with weight
  rewinding (Frankle & Carbin 2019; Frankle et al. 2020): θ_0 = train_fn(θ, 𝟙), then for each level
  ℓ = 1..L, m_ℓ removes round(p · alive) of the alive weights of m_{ℓ−1} (per group, lowest
  |θ_{ℓ−1}| first), and θ_ℓ = train_fn(m_ℓ ⊙ θ_rewind, m_ℓ). Masks are nested (m_ℓ ⊆ m_{ℓ−1}).

Counts are exact and ties deterministic: a stable sort over the tensors in the pytree's leaf order,
then row-major position (`lth.sparsity.pruning.remove_lowest`); the same scores give the same mask.
Runs on the host in numpy (once per pruning step: exact, not fast).
"""

from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lth.sparsity.pruning import n_to_prune, remove_lowest
from lth.sparsity.scores import _path_str

PyTree = Any
PRUNABLE = (r"(^|/)kernel$",)
SCOPES = ("global", "layerwise")


def leaves_with_paths(tree: PyTree) -> tuple[list[str], list[Any], Any]:
    """(paths, leaves, treedef) of a pytree, leaves in JAX's order, paths `/`-joined."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [_path_str(k) for k, _ in flat], [v for _, v in flat], treedef


def check_prunable(prunable: str | Sequence[str]) -> tuple[str, ...]:
    """`prunable` as a tuple of compiled-checked regular expressions (a clear error otherwise)."""
    pats = (prunable,) if isinstance(prunable, str) else tuple(prunable)
    for p in pats:
        if not isinstance(p, str):
            raise TypeError(f"prunable must be regular expressions (str), got {p!r}")
        try:
            re.compile(p)
        except re.error as e:
            raise ValueError(f"prunable: {p!r} is not a regular expression ({e})") from None
    return pats


def is_prunable(path: str, prunable: Sequence[str]) -> bool:
    return any(re.search(p, path) for p in prunable)


def prunable_index(params: PyTree, prunable: str | Sequence[str]) -> list[int]:
    """Leaf indices (JAX order) of the prunable tensors; a clear error when there are none."""
    pats = check_prunable(prunable)
    paths, _, _ = leaves_with_paths(params)
    idx = [i for i, p in enumerate(paths) if is_prunable(p, pats)]
    if not idx:
        raise ValueError(f"prunable={list(pats)} matches no parameter; the paths are {paths}")
    return idx


def _check_density(name: str, d) -> float:
    if isinstance(d, bool) or not isinstance(d, (int, float, np.floating, np.integer)) or not 0.0 <= float(d) <= 1.0:
        raise ValueError(f"{name}={d!r}: must be a number in [0, 1] (the fraction of prunable weights kept)")
    return float(d)


def _prune(scores: list[np.ndarray], alive: list[np.ndarray], groups: list[list[int]], keep: list[int]) -> list[np.ndarray]:
    """`alive` with, in each group of tensor indices, the lowest-scored alive weights removed until
    `keep[g]` remain (lth's exact-count, position-stable engine)."""
    out = [a.copy() for a in alive]
    for g, k in zip(groups, keep):
        a = [alive[i].ravel() for i in g]
        n = int(sum(x.sum() for x in a)) - int(k)
        if n < 0:
            raise ValueError(f"cannot keep {k} weights: only {n + k} are alive")
        new = remove_lowest([scores[i].ravel() for i in g], a, n)
        for i, x in zip(g, new):
            out[i] = x.reshape(alive[i].shape)
    return out


def _alive(mask: PyTree | None, leaves: list[Any], treedef) -> list[np.ndarray]:
    if mask is None:
        return [np.ones(np.shape(v), bool) for v in leaves]
    if jax.tree.structure(mask) != treedef:
        raise ValueError(f"mask has structure {jax.tree.structure(mask)}, params {treedef}: they must match")
    return [np.asarray(m) != 0 for m in jax.tree.leaves(mask)]


def magnitude_masks(params: PyTree, density, *, scope: str = "global", prunable: str | Sequence[str] = PRUNABLE,
                    mask: PyTree | None = None) -> PyTree:
    """Boolean masks keeping the largest-magnitude prunable weights (see the module docstring).

    `density`: the fraction of the prunable weights kept, a number in [0, 1] (exactly
    N − round((1 − density)·N) weights per group), or a pytree like `params` of per-tensor
    densities (`erk`'s output; non-prunable entries are ignored), which prunes layerwise.
    `scope`: `global` (one threshold over all prunable tensors) or `layerwise` (each tensor alone).
    `mask`: an existing mask to prune further (only its kept weights can be kept).
    """
    if scope not in SCOPES:
        raise ValueError(f"scope={scope!r}: allowed {SCOPES}")
    idx = prunable_index(params, prunable)
    _, leaves, treedef = leaves_with_paths(params)
    if isinstance(density, (int, float, np.floating, np.integer)) and not isinstance(density, bool):
        dens = {i: _check_density("density", density) for i in idx}
        groups = [[i] for i in idx] if scope == "layerwise" else [idx]
    else:
        if jax.tree.structure(density) != treedef:
            raise ValueError(f"density: a number in [0, 1] or a pytree like params ({treedef}); got {density!r}")
        per = jax.tree.leaves(density)
        dens = {i: _check_density(f"density[{i}]", float(per[i])) for i in idx}
        groups = [[i] for i in idx]
    alive = _alive(mask, leaves, treedef)
    keep = []
    for g in groups:
        n = sum(int(np.size(leaves[i])) for i in g)
        keep.append(n - n_to_prune(1.0 - dens[g[0]], n))
    scores = [np.abs(np.asarray(v, np.float64)) for v in leaves]
    new = _prune(scores, alive, groups, keep)
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(m) for m in new])


class IMPResult(NamedTuple):
    """What `imp` returns: `masks[ℓ]` and `params[ℓ]` (the trained, masked weights) of every level
    ℓ = 0..levels (level 0 dense)."""

    masks: list
    params: list

    @property
    def final_params(self) -> PyTree:
        return self.params[-1]


def imp(train_fn: Callable[[PyTree, PyTree], PyTree], params: PyTree, *, levels: int, fraction: float,
        rewind_to: PyTree | None = None, scope: str = "global", prunable: str | Sequence[str] = PRUNABLE) -> IMPResult:
    """Iterative magnitude pruning with rewinding around the user's `train_fn(params, masks) ->
    trained params` (which should keep pruned weights at 0, e.g. with `sparsity.masked`).

    Level 0 trains `params` densely; each level ℓ ≥ 1 removes round(`fraction` · alive) of the alive
    prunable weights (per `scope` group) with the lowest |θ| of level ℓ−1's trained weights, then
    trains m_ℓ ⊙ `rewind_to` (default: `params`, i.e. θ_0, Frankle & Carbin's reset; pass the weights
    of an early step for rewinding, Frankle et al. 2020). Returned params are masked (m ⊙ θ).
    """
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 0:
        raise ValueError(f"levels={levels!r}: must be an int >= 0")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)) or not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction={fraction!r}: must be a number in (0, 1) (the share of the alive weights each level removes)")
    if scope not in SCOPES:
        raise ValueError(f"scope={scope!r}: allowed {SCOPES}")
    if not callable(train_fn):
        raise TypeError(f"train_fn must be callable train_fn(params, masks) -> params, got {train_fn!r}")
    idx = prunable_index(params, prunable)
    rewind = params if rewind_to is None else rewind_to
    _, leaves, treedef = leaves_with_paths(params)
    if jax.tree.structure(rewind) != treedef:
        raise ValueError(f"rewind_to has structure {jax.tree.structure(rewind)}, params {treedef}: they must match")
    groups = [[i] for i in idx] if scope == "layerwise" else [idx]
    alive = [np.ones(np.shape(v), bool) for v in leaves]
    masks_out, params_out = [], []
    start = params
    for level in range(levels + 1):
        m = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in alive])
        trained = train_fn(start, m)
        trained = jax.tree.map(lambda p, k: jnp.where(k, p, jnp.zeros_like(p)), trained, m)
        masks_out.append(m)
        params_out.append(trained)
        if level == levels:
            break
        counts = [int(sum(alive[i].sum() for i in g)) for g in groups]
        keep = [c - n_to_prune(float(fraction), c) for c in counts]
        scores = [np.abs(np.asarray(v, np.float64)) for v in jax.tree.leaves(trained)]
        alive = _prune(scores, alive, groups, keep)
        start = jax.tree_util.tree_unflatten(
            treedef, [jnp.where(a, r, jnp.zeros_like(r)) for a, r in zip(alive, jax.tree.leaves(rewind))])
    return IMPResult(masks_out, params_out)
