"""N:M and block sparsity (`pruning.granularity=n:m|block`): the patterns hardware runs, exact counts.

Both apply to the prunable tensors with at least two axes (Dense kernels (in, out), convolution
kernels HWIO); prunable tensors with fewer (biases) are left dense under these granularities.

- N:M (`pruning.n_m=[n, m]`, NVIDIA's 2:4): the input axis (−2) is cut into groups of m consecutive
  weights, W[..., g·m:(g+1)·m, j], and every group keeps exactly n of them: the n highest scores
  among its alive weights, ties broken by position (the earlier weight is kept). Needs the input
  axis divisible by m.
- block (`pruning.block=[r, c]`): the last two axes are tiled by r × c blocks,
  W[..., i·r:(i+1)·r, j·c:(j+1)·c]; a block is kept or removed whole. Its score is the sum of its
  alive weights' scores (with magnitude scores Σ|θ|, the block's L1 norm; a signed score such as
  GraSP's keeps its sign rather than being made absolute, as `lth.sparsity.structured` does for
  units), and an exact number of blocks is kept, ties by block position (row-major over the
  leading axes, then the block grid). Needs both axes divisible by the block's sides.

In a lottery run (`lth.sparsity.level_counts`) blocks are the items of the ordinary pruning step
(`lth.sparsity.pruning`: scope, `pruning.fractions` and the schedules count blocks as they count
weights or units). Under N:M every group of m is pruned the way lth prunes a layer, floored at n:
level ℓ keeps n_ℓ of every m,

    iterative: n_ℓ = max(n, n_{ℓ−1} − round_half_up(f · n_{ℓ−1})),  n_0 = m
    linear:    n_ℓ = max(n, m − floor(min(1, ℓ·f) · m))
    one-shot:  n_1 = n

(f = `pruning.fraction`), so IMP walks down to n:m and stays there (2:4 with f = 0.2: 3:4, 2:4,
2:4, ...); magnitude IMP prunes within the previous level's survivors (masks nested), the methods
scored at initialisation prune the dense network to n_ℓ per group.

The mask functions are pure and take numpy or JAX arrays (numpy in, numpy out: the host's exact
float64 pruning step; JAX in, JAX out: usable under `jit` by dynamic sparse training).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

PATTERNS = ("n:m", "block")


def _xp(x):
    return jnp if isinstance(x, jax.Array) else np


def _argsort(xp, a, axis=-1):
    return jnp.argsort(a, axis=axis, stable=True) if xp is jnp else np.argsort(a, axis=axis, kind="stable")


def _groups_last(xp, a, m: int):
    """`a` with its axis −2 moved last and cut into groups of m: shape (..., out, G, m)."""
    s = xp.moveaxis(a, -2, -1)
    return s.reshape(*s.shape[:-1], s.shape[-1] // m, m)


def n_m_mask(scores: Any, n: int, m: int, alive: Optional[Any] = None) -> Any:
    """Boolean mask of `scores`' shape keeping, in every group of `m` consecutive entries along axis
    −2, the `n` highest-scored alive ones (ties by position). `alive` (default all): entries that may
    be kept; a group with fewer than `n` alive keeps them all (the host's pruning step checks)."""
    xp = _xp(scores)
    if np.ndim(scores) < 2 or np.shape(scores)[-2] % m:
        raise ValueError(f"n_m_mask: scores of shape {tuple(np.shape(scores))} need >= 2 axes and axis -2 divisible by m={m}")
    g = _groups_last(xp, xp.asarray(scores), m)
    a = _groups_last(xp, xp.ones(np.shape(scores), bool) if alive is None else xp.asarray(alive, bool), m)
    g = g.astype(xp.float64 if xp is np else jnp.float32) if g.dtype == bool else g
    order = _argsort(xp, -g)  # highest first, earlier first among ties
    order = xp.take_along_axis(order, _argsort(xp, ~xp.take_along_axis(a, order, axis=-1)), axis=-1)  # alive first
    rank = _argsort(xp, order)
    keep = (rank < n) & a
    s = keep.reshape(*keep.shape[:-2], -1)
    return xp.moveaxis(s, -1, -2)


def _tiles(xp, a, block: Sequence[int]):
    """`a` (..., R, C) as (..., R/r, C/c, r·c): one row per block, in block order."""
    r, c = block
    *lead, R, C = a.shape
    t = a.reshape(*lead, R // r, r, C // c, c)
    t = xp.moveaxis(t, -3, -2)  # (..., R/r, C/c, r, c)
    return t.reshape(*lead, R // r, C // c, r * c)


def block_scores(scores: Any, mask: Any, block: Sequence[int]) -> Any:
    """Per block (flat, in block order), the sum of its alive weights' scores."""
    xp = _xp(scores)
    s = xp.where(xp.asarray(mask, bool), xp.asarray(scores), 0)
    return _tiles(xp, s, block).sum(axis=-1).reshape(-1)


def block_alive(mask: Any, block: Sequence[int]) -> Any:
    """Per block (flat, in block order), whether any of its weights is alive."""
    xp = _xp(mask)
    return _tiles(xp, xp.asarray(mask, bool), block).any(axis=-1).reshape(-1)


def expand_blocks(kept: Any, shape: Sequence[int], block: Sequence[int]) -> Any:
    """The weight mask of `shape` whose blocks are `kept` (flat, in block order)."""
    xp = _xp(kept)
    r, c = block
    *lead, R, C = shape
    k = xp.asarray(kept, bool).reshape(*lead, R // r, C // c, 1, 1)
    k = xp.broadcast_to(k, (*lead, R // r, C // c, r, c))
    return xp.moveaxis(k, -2, -3).reshape(tuple(shape))


def block_mask(scores: Any, block: Sequence[int], density: Optional[float] = None, *, keep: Optional[int] = None,
               alive: Optional[Any] = None) -> Any:
    """Boolean mask keeping exactly `keep` whole blocks (or round_half_up(`density` · blocks)) of
    `scores`' last two axes: the alive blocks with the highest score sums, ties by block position."""
    xp = _xp(scores)
    shape = tuple(np.shape(scores))
    if len(shape) < 2 or shape[-2] % block[0] or shape[-1] % block[1]:
        raise ValueError(f"block_mask: scores of shape {shape} need >= 2 axes divisible by the block {tuple(block)}")
    alive = xp.ones(shape, bool) if alive is None else xp.asarray(alive, bool)
    if keep is None:
        if density is None:
            raise ValueError("block_mask: give density or keep")
        keep = int(math.floor(float(density) * (np.prod(shape) // (block[0] * block[1])) + 0.5))
    bs, ba = block_scores(scores, alive, block), block_alive(alive, block)
    order = _argsort(xp, -bs)
    order = order[_argsort(xp, ~ba[order])]  # alive blocks first
    kept = (_argsort(xp, order) < keep) & ba
    return expand_blocks(kept, shape, block) & alive


def level_n(n: int, m: int, schedule: str, fraction: float, level: int) -> int:
    """n_ℓ, how many of every m weights level `level` keeps (the module docstring's equations)."""
    if level <= 0:
        return m
    if schedule in ("oneshot", "gradual"):
        return n
    if schedule == "linear":
        return max(n, m - min(m, int(math.floor(min(1.0, level * float(fraction)) * m))))
    k = m
    for _ in range(level):
        k = max(n, k - int(math.floor(float(fraction) * k + 0.5)))
    return k


def pattern_paths(paths: list[str], shapes: dict[str, tuple[int, ...]], granularity: str, n_m: Sequence[int],
                  block: Sequence[int]) -> list[str]:
    """The prunable tensors a pattern applies to (those with >= 2 axes); raises `ConfigError`
    naming the tensor, its shape and the setting when an axis does not divide, or when none fits."""
    from lth.config.errors import ConfigError

    out = [p for p in paths if len(shapes[p]) >= 2]
    for p in out:
        shape = tuple(shapes[p])
        if granularity == "n:m" and shape[-2] % n_m[1]:
            raise ConfigError(f"pruning.granularity=n:m with pruning.n_m={list(n_m)}: tensor {p} has shape {shape}, its input "
                              f"axis (-2, {shape[-2]}) is not divisible by m={n_m[1]}; leave it out (pruning.exclude) or choose m")
        if granularity == "block" and (shape[-2] % block[0] or shape[-1] % block[1]):
            raise ConfigError(f"pruning.granularity=block with pruning.block={list(block)}: tensor {p} has shape {shape}, its "
                              f"last two axes {shape[-2:]} are not divisible by the block; leave it out (pruning.exclude) "
                              "or choose the block")
    if not out:
        raise ConfigError(f"pruning.granularity={granularity}: none of the prunable tensors {paths} has two or more axes")
    return out


def random_n_m(mask: dict[str, np.ndarray], paths: list[str], rng: np.random.Generator, m: int) -> dict[str, np.ndarray]:
    """Flat mask leaves of `paths` drawn uniformly among the N:M masks with, in every group of m, as
    many alive weights as `mask` has there (the random control of an N:M ticket)."""
    out = {}
    for p in paths:
        a = np.asarray(mask[p], bool)
        counts = _groups_last(np, a, m).sum(axis=-1, keepdims=True)
        u = rng.random(a.shape)
        rank = _argsort(np, _argsort(np, -_groups_last(np, u, m)))
        keep = rank < counts
        out[p] = np.moveaxis(keep.reshape(*keep.shape[:-2], -1), -1, -2)
    return out


def random_blocks(mask: dict[str, np.ndarray], paths: list[str], rng: np.random.Generator, block: Sequence[int], *,
                  per_tensor: bool) -> dict[str, np.ndarray]:
    """Flat mask leaves of `paths` with uniformly random whole blocks: exactly `mask`'s alive
    blocks in each tensor (`per_tensor`) or over all of them together."""
    out = {}
    for group in ([[p] for p in paths] if per_tensor else [list(paths)]):
        alive = [block_alive(np.asarray(mask[p], bool), block) for p in group]
        total = sum(a.size for a in alive)
        keep = np.zeros(total, bool)
        keep[rng.choice(total, size=int(sum(a.sum() for a in alive)), replace=False)] = True
        start = 0
        for p, a in zip(group, alive):
            out[p] = expand_blocks(keep[start:start + a.size], np.shape(mask[p]), block)
            start += a.size
    return out
