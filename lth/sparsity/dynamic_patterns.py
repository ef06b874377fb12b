"""Dynamic sparse training under N:M and block patterns (`pruning.schedule=dynamic`,
`pruning.method=rigl|set|static`, `pruning.granularity=n:m|block`): the masks move, the pattern stays.

The schedule (update steps {begin + jΔt < end}, the drop fraction f_t, grown weights at exactly 0
with their optimizer moments reset, `mask_turnover`) is `lth.sparsity.dynamic`'s; what changes is
what a mask may be. As in `lth.sparsity.patterns`, only the prunable tensors with >= 2 axes
(kernels) follow the pattern, biases stay dense, and the shapes must divide (checked before any work
by `lth.sparsity.patterns.pattern_paths`).

N:M (`pruning.n_m=[n, m]`): the input axis (−2) is cut into groups of m consecutive weights, as
`lth.sparsity.patterns.n_m_mask` and `lth.sparsity.n_of_m` cut it. A tensor of N weights keeps
K_l = n·N/m (density n/m, so `pruning.target_density` must be n/m and the distribution uniform).

- static, and every method's starting mask: a uniformly random N:M mask, n kept in every group
  (the n largest of per-weight random keys drawn from the replicate's mask key).
- set / rigl, at an update step t, per tensor:
      d    = round_half_up(f_t · K_l)                    (as `lth.sparsity.dynamic`)
      drop: the d active weights of smallest |w|, tensor-wide (of equal |w| the earlier go first)
      grow: every group regrows exactly as many as it lost, among its own inactive weights (the
            just-dropped included): at random (set, key = the step's grow key) or the largest
            |∇_w L| of the current batch's dense gradient (rigl); of equal scores the earlier
            weight (`n_m_mask`'s rule)
  so every group keeps exactly n and the tensor exactly K_l after every update.

Block (`pruning.block=[r, c]`): the last two axes are tiled by r × c blocks (`patterns.block_mask`'s
tiling); blocks are the units. A tensor of B blocks keeps K_l = round_half_up(d · B) whole blocks,
d = `pruning.target_density` (uniform distribution). static and the starting masks: K_l blocks
drawn at random. set / rigl: d = round_half_up(f_t · K_l) active blocks with the smallest
magnitude Σ|w| over the block are dropped (of equal ones the earlier go first), and d blocks grown
among the inactive ones (the just-dropped included): at random (set) or by the largest growth score
Σ|g| over the block (rigl; of equal ones the later, as `lth.sparsity.dynamic` grows single
weights), so exactly K_l blocks stay. Here `counts` holds block counts, not weight counts.

All selections are exact and deterministic under `jit` and `vmap` (`_keep_largest`, stable sorts
within a group).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lth.sparsity import dynamic, masks as M, patterns
from lth.sparsity.dynamic import DynamicSparse, _random_key
from lth.sparsity.gradual import _keep_largest, _magnitude_key, _path, round_half_up

PyTree = Any
_TOP = np.iinfo(np.int32).max  # the key of a weight an N:M group keeps whatever it scores


def _group_keys(scores: jax.Array, kept: jax.Array) -> jax.Array:
    """Int32 keys for `patterns.n_m_mask`: kept weights above every candidate, candidates by their
    non-negative int32 `scores` (capped below the kept ones' key)."""
    return jnp.where(kept, jnp.int32(_TOP), jnp.minimum(scores, jnp.int32(_TOP - 1)))


@dataclasses.dataclass(frozen=True)
class PatternDynamicSparse(DynamicSparse):
    """`DynamicSparse` whose masks are N:M or whole blocks (module docstring).

    Attributes (besides `DynamicSparse`'s):
      granularity: `n:m` or `block`.
      n_m: (n, m) of `n:m`.
      block: (rows, cols) of `block`.
      counts: per tensor, K_l in weights (`n:m`) or in blocks (`block`).
    """

    granularity: str = "n:m"
    n_m: tuple[int, int] = (2, 4)
    block: tuple[int, int] = (4, 4)

    def __post_init__(self):
        super().__post_init__()
        if self.granularity not in patterns.PATTERNS:
            raise ValueError(f"dynamic sparse training: granularity={self.granularity!r} must be one of "
                             f"{', '.join(patterns.PATTERNS)}")
        object.__setattr__(self, "n_m", tuple(int(v) for v in self.n_m))
        object.__setattr__(self, "block", tuple(int(v) for v in self.block))
        if not 0 < self.n_m[0] < self.n_m[1]:
            raise ValueError(f"dynamic sparse training: n_m={list(self.n_m)} needs 0 < n < m")

    @classmethod
    def build(cls, shapes: Mapping[str, Sequence[int]], density: float, *, granularity: str = "n:m",
              n_m: Sequence[int] = (2, 4), block: Sequence[int] = (4, 4), **kw) -> "PatternDynamicSparse":
        """K_l of the tensors `shapes` (path -> shape): n·N/m weights (`n:m`, `density` must be
        n/m) or round_half_up(`density` · blocks) blocks; ValueError for a shape that does not divide."""
        n, m = (int(v) for v in n_m)
        r, c = (int(v) for v in block)
        counts = {}
        for p, shape in shapes.items():
            shape = tuple(int(s) for s in shape)
            if granularity == "n:m":
                if len(shape) < 2 or shape[-2] % m:
                    raise ValueError(f"pruning.n_m={[n, m]}: tensor {p} of shape {shape} needs >= 2 axes and its input "
                                     f"axis (-2) divisible by m={m}")
                if abs(float(density) - n / m) > 1e-9:
                    raise ValueError(f"density {density} with n_m={[n, m]}: an N:M mask has density n/m = {n / m:g}")
                counts[p] = n * int(np.prod(shape)) // m
            else:
                if len(shape) < 2 or shape[-2] % r or shape[-1] % c:
                    raise ValueError(f"pruning.block={[r, c]}: tensor {p} of shape {shape} needs >= 2 axes, its last "
                                     "two divisible by the block")
                counts[p] = round_half_up(float(density) * (int(np.prod(shape)) // (r * c)))
        return cls(tuple(counts.items()), granularity=granularity, n_m=(n, m), block=(r, c), **kw)

    def _units(self, shape) -> int:
        return int(np.prod(shape)) // (1 if self.granularity == "n:m" else self.block[0] * self.block[1])

    def _check(self, flat: Mapping[str, Any], what: str) -> None:
        missing = [p for p in self.paths if p not in flat]
        if missing:
            raise KeyError(f"dynamic sparse training: no {what} at {missing} (have {sorted(flat)})")
        for p, k in self.counts:
            if k > self._units(np.shape(flat[p])):
                raise ValueError(f"dynamic sparse training: {p} keeps {k} of {self._units(np.shape(flat[p]))} units")

    # -- masks ----------------------------------------------------------------------------------
    def _random_mask(self, key: jax.Array, shape, k: int) -> jax.Array:
        """A uniformly random pattern mask (boolean) of `shape` keeping K_l = `k`."""
        if self.granularity == "n:m":
            keys = _random_key(key, shape, jnp.ones(shape, bool)).reshape(shape)
            return patterns.n_m_mask(keys, *self.n_m)
        nb = self._units(shape)
        kept = _keep_largest([_random_key(key, (nb,), jnp.ones((nb,), bool))], k)[0]
        return patterns.expand_blocks(kept, shape, self.block)

    def initial_mask(self, mask: PyTree, key: jax.Array) -> PyTree:
        """`mask` with each tensor of `paths` replaced by a random pattern mask at K_l (tensor i
        with `fold_in(key, i)`); jit-able."""
        flat = M.flatten(mask)
        self._check(flat, "mask")
        new = dict(flat)
        for i, (p, k) in enumerate(self.counts):
            old = jnp.asarray(flat[p])
            new[p] = self._random_mask(jax.random.fold_in(key, i), old.shape, k).astype(old.dtype)
        return jax.tree_util.tree_map_with_path(lambda kp, m: new[_path(kp)], mask)

    def _move_n_m(self, w, alive, g, key, k: int, d):
        """The N:M tensor's new mask: drop the d smallest |w| actives tensor-wide, refill every group
        to n among its inactive weights by `g` (rigl) or at random (set)."""
        kept = _keep_largest([_magnitude_key(w, alive)], k - d)[0].reshape(alive.shape)
        if self.method == "rigl":
            score = jax.lax.bitcast_convert_type(jnp.abs(jnp.asarray(g).astype(jnp.float32)), jnp.int32)
        else:
            score = _random_key(key, alive.shape, jnp.ones(alive.shape, bool)).reshape(alive.shape)
        return patterns.n_m_mask(_group_keys(score, kept), *self.n_m)

    def _move_blocks(self, w, alive, g, key, k: int, d):
        """The block tensor's new mask: drop the d active blocks of smallest Σ|w|, grow d of the
        others by Σ|g| (rigl) or at random (set)."""
        b_alive = patterns.block_alive(alive, self.block)
        b_mag = patterns.block_scores(jnp.abs(jnp.asarray(w).astype(jnp.float32)), alive, self.block)
        kept = _keep_largest([_magnitude_key(b_mag, b_alive)], k - d)[0]
        if self.method == "rigl":
            ones = jnp.ones(alive.shape, bool)
            score = _magnitude_key(patterns.block_scores(jnp.abs(jnp.asarray(g).astype(jnp.float32)), ones, self.block), ~kept)
        else:
            score = _random_key(key, kept.shape, ~kept)
        grown = _keep_largest([score], d)[0]
        return patterns.expand_blocks(kept | grown, alive.shape, self.block)

    def update_mask(self, params: PyTree, mask: PyTree, grads: PyTree, key: jax.Array, t) -> PyTree:
        """The mask after the update at step `t` (one replicate's trees; jit-able; module docstring)."""
        flat_w, flat_m, flat_g = M.flatten(params), M.flatten(mask), M.flatten(grads)
        self._check(flat_m, "mask")
        self._check(flat_w, "parameter")
        drops = self.drop_counts(t)
        move = self._move_n_m if self.granularity == "n:m" else self._move_blocks
        new = dict(flat_m)
        for i, (p, k) in enumerate(self.counts):
            old = jnp.asarray(flat_m[p])
            new[p] = move(flat_w[p], old.astype(bool), flat_g[p], jax.random.fold_in(key, i), k, drops[i]).astype(old.dtype)
        return jax.tree_util.tree_map_with_path(lambda kp, m: new[_path(kp)], mask)


def from_config(pruning: Any, params: PyTree, paths: Sequence[str], steps: tuple[int, int, int]) -> DynamicSparse:
    """The dynamic sparse training of a `PruningConfig` (`lth.sparsity.dynamic.from_config` for
    single weights, a `PatternDynamicSparse` on the pattern's tensors of `paths` for n:m and block);
    what cannot be built is a `ConfigError`."""
    if pruning.granularity not in patterns.PATTERNS:
        return dynamic.from_config(pruning, params, paths, steps)
    from lth.config.errors import ConfigError

    flat = M.flatten(params)
    shapes = {p: tuple(np.shape(flat[p])) for p in paths}
    on = patterns.pattern_paths(list(paths), shapes, pruning.granularity, pruning.n_m, pruning.block)
    begin, end, every = steps
    d = pruning.dynamic
    try:
        return PatternDynamicSparse.build({p: shapes[p] for p in on}, float(pruning.target_density),
                                          granularity=pruning.granularity, n_m=pruning.n_m, block=pruning.block,
                                          method=pruning.method, begin=begin, end=end, every=every,
                                          drop_fraction=float(d.drop_fraction), drop_decay=d.drop_decay)
    except ValueError as e:
        raise ConfigError(f"pruning.method={pruning.method} with pruning.granularity={pruning.granularity}: {e}") from None


__all__ = ["PatternDynamicSparse", "from_config"]
