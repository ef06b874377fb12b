"""Masks: boolean pytrees with the structure of the params.

A mask leaf is True where a weight is alive. Tensors that are not prunable (biases, BatchNorm
scales, anything the pruning patterns do not select) have all-True masks, so `apply_mask` is one
`tree_map` over the whole tree. Which tensors are prunable is decided by regular expressions
searched in `/`-joined parameter paths (big_vision's convention), e.g. `kernel$` selects every
dense and convolution weight and no bias.

These functions take one replicate's tree; stacked trees (leading replicate axis) go through
`jax.vmap` or `unstack`.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

PyTree = Any


def flatten(tree: PyTree) -> dict[str, Any]:
    """`{"fc1/kernel": leaf, ...}` for a nested dict (or Flax FrozenDict) of params, sorted by path."""
    flat = traverse_util.flatten_dict(tree, sep="/")
    return dict(sorted(flat.items()))


def unflatten(flat: dict[str, Any]) -> PyTree:
    return traverse_util.unflatten_dict(flat, sep="/")


def names(path: str, head: str | None = None) -> tuple[str, ...]:
    """The names a pattern is searched in: `path`, and for a tensor of the output layer `head`
    (`pruning.head`, e.g. `out`) the same path under lth's name for that layer (`head/kernel`)."""
    if head and head != "head" and (path == head or path.startswith(head + "/")):
        return (path, "head" + path[len(head):])
    return (path,)


def matches(pattern: str, path: str, head: str | None = None) -> bool:
    """Whether regular expression `pattern` is found in `path` or its head alias (`names`)."""
    return any(re.search(pattern, n) for n in names(path, head))


def prunable_paths(params: PyTree, prunable: Iterable[str], exclude: Iterable[str] = (), head: str | None = None) -> list[str]:
    """Paths of the tensors that pruning may touch: matched by a `prunable` pattern and by no
    `exclude` pattern (`re.search`; `head` as in `names`)."""
    return [
        path
        for path in flatten(params)
        if any(matches(p, path, head) for p in prunable) and not any(matches(p, path, head) for p in exclude)
    ]


def ones_like(params: PyTree) -> PyTree:
    """The dense mask: every weight alive."""
    return jax.tree.map(lambda p: jnp.ones(jnp.shape(p), dtype=bool), params)


def ones_like_np(tree: PyTree) -> PyTree:
    """The dense mask as host numpy booleans (for counting)."""
    return jax.tree.map(lambda p: np.ones(np.shape(p), dtype=bool), tree)


def apply_mask(params: PyTree, mask: PyTree) -> PyTree:
    """`mask ⊙ params`, with pruned weights exactly 0 (`where`, not a multiply: no -0.0, no NaN*0)."""
    return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, mask)


def count(mask: PyTree, paths: Iterable[str]) -> tuple[int, int]:
    """(alive, total) weights over the tensors at `paths`."""
    flat = flatten(mask)
    alive = sum(int(np.asarray(flat[p]).sum()) for p in paths)
    total = sum(int(np.asarray(flat[p]).size) for p in paths)
    return alive, total


def density(mask: PyTree, paths: Iterable[str]) -> float:
    """Fraction of the weights at `paths` still alive."""
    alive, total = count(mask, list(paths))
    return alive / total if total else 1.0


def tensor_densities(mask: PyTree, paths: Iterable[str]) -> dict[str, float]:
    flat = flatten(mask)
    return {p: float(np.asarray(flat[p]).mean()) for p in paths}


def is_subset(new: PyTree, old: PyTree) -> bool:
    """True when every weight alive in `new` is alive in `old` (masks only ever shrink)."""
    return all(bool(np.all(~np.asarray(n) | np.asarray(o))) for n, o in zip(jax.tree.leaves(new), jax.tree.leaves(old)))


def unstack(tree: PyTree, n: int) -> list[PyTree]:
    """Split a tree stacked on a leading replicate axis into `n` trees (as numpy)."""
    host = jax.device_get(tree)
    return [jax.tree.map(lambda x: x[i], host) for i in range(n)]


def stack(trees: list[PyTree]) -> PyTree:
    """Inverse of `unstack`: stack `n` trees on a new leading axis."""
    return jax.tree.map(lambda *xs: np.stack(xs), *trees)
