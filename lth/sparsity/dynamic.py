"""Dynamic sparse training (`pruning.schedule=dynamic`): a mask at a fixed density that moves.

Each prunable tensor l of N_l weights keeps exactly K_l = round_half_up(d_l N_l) of them, d_l the
tensor's density under `pruning.distribution` (`lth.sparsity.allocation`). The starting mask
keeps K_l weights of each tensor drawn at random (`initial_mask`, from the replicate's key
`mask_key(seed, r)`). The mask is then updated at the steps

    {begin + j Δt : begin + j Δt < end}

*before* that step's gradient update. At an update step t, in each tensor:

    f_t = f_0 / 2 · (1 + cos(π t / end))    (drop_decay=cosine, RigL's: the global step over `end`)
    f_t = f_0                                (drop_decay=constant)
    d   = round_half_up(f_t K_l)             (exact, computed on the host in float64)
    drop: the d active weights of smallest |w|          (of equal |w|, the earlier ones go first)
    grow: d of the weights inactive after the drop       (a just-dropped weight may come back)
          set  (Mocanu et al. 2018): at random, key = fold_in(step key, salt)
          rigl (Evci et al. 2020):   the largest |∇_w L| of the current batch's dense gradient
                                     (of equal |g|, the later ones)

so the count stays exactly K_l. A grown weight that was not in the old mask starts at exactly 0,
and every params-shaped subtree of the optimizer state (momentum, Adam's μ and ν) is zeroed
wherever the weight is not kept by both masks: grown weights start with no history, dropped ones
keep none (`lth.sparsity.optax_masked.zero_state`). `static` never updates (the papers' fixed
random mask). Selections use `lth.sparsity.gradual._keep_largest` (bisection, no sort), so ties
are deterministic and the counts exact under `jit` and `vmap`.

The update runs inside the compiled step (`lth.train.steps`): the step computes the dense
gradient once, and on an update step (a `lax.cond` on the loop's step) `update` moves the mask from
(params, gradient, key); the masked gradient step then uses the new mask. `turnover` is the
fraction of the final mask's kept weights that the starting mask did not keep (results.csv's
`mask_turnover`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lth.sparsity import allocation, draws, masks as M
from lth.sparsity.gradual import _keep_largest, _magnitude_key, _path, round_half_up
from lth.sparsity.optax_masked import zero_state

PyTree = Any
METHODS = ("set", "rigl", "static")
DROP_DECAYS = ("cosine", "constant")
_SET_SALT = 0x534554  # fold_in constant of SET's grow key (from the step key)


def mask_key(seed: int, replicate: int) -> jax.Array:
    """The key of replicate `replicate`'s starting mask (a function of (seed, replicate) alone)."""
    return draws.control_key(seed, replicate, "dynamic_mask", 0)


def grow_key(step_key: jax.Array) -> jax.Array:
    """SET's key at a step, folded from the step's key."""
    return jax.random.fold_in(step_key, _SET_SALT)


def _random_key(key, shape, candidates) -> jax.Array:
    """Uniform random non-negative int32 keys (-1 where not a candidate), flattened."""
    bits = jax.random.bits(key, shape, dtype=jnp.uint32) >> 1
    return jnp.where(candidates, bits.astype(jnp.int32), -1).ravel()


@dataclasses.dataclass(frozen=True)
class DynamicSparse:
    """Per-tensor exact counts and the drop/grow rule (module docstring).

    Attributes:
      counts: `((path, K_l), ...)`, sorted by path: the tensors that move and what each keeps.
      method: `set`, `rigl` or `static`.
      begin, end, every: the update steps {begin + jΔt < end}.
      drop_fraction: f_0, in (0, 1).
      drop_decay: `cosine` or `constant`.
    """

    counts: tuple[tuple[str, int], ...]
    method: str
    begin: int
    end: int
    every: int
    drop_fraction: float = 0.3
    drop_decay: str = "cosine"
    uses_gradients = True  # the trainer's step hands `update` the dense gradient (lth.train.steps)

    def __post_init__(self):
        object.__setattr__(self, "counts", tuple(sorted((str(p), int(k)) for p, k in self.counts)))
        if self.method not in METHODS:
            raise ValueError(f"dynamic sparse training: method={self.method!r} must be one of {', '.join(METHODS)}")
        if self.drop_decay not in DROP_DECAYS:
            raise ValueError(f"dynamic sparse training: drop_decay={self.drop_decay!r} must be one of {', '.join(DROP_DECAYS)}")
        if not 0 <= self.begin < self.end:
            raise ValueError(f"dynamic sparse training: need 0 <= begin < end, got begin={self.begin}, end={self.end}")
        if self.every < 1:
            raise ValueError(f"dynamic sparse training: every={self.every} must be >= 1")
        if not 0.0 < self.drop_fraction < 1.0:
            raise ValueError(f"dynamic sparse training: drop_fraction={self.drop_fraction} must lie in (0, 1)")
        if any(k < 0 for _, k in self.counts):
            raise ValueError(f"dynamic sparse training: negative counts {self.counts}")

    @classmethod
    def build(cls, shapes: Mapping[str, Sequence[int]], density: float, *, distribution: str = "uniform",
              densities: Optional[Mapping[str, float]] = None, **kw) -> "DynamicSparse":
        """K_l of the tensors `shapes` (path -> shape) at overall `density` under `distribution`."""
        d = allocation.tensor_densities(distribution, shapes, density, densities)
        return cls(tuple(allocation.keep_counts(shapes, d).items()), **kw)

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(p for p, _ in self.counts)

    @property
    def moves(self) -> bool:
        """Whether the mask ever changes (False for `static`)."""
        return self.method != "static"

    # -- the schedule ---------------------------------------------------------------------------
    def update_steps(self) -> list[int]:
        """{begin + jΔt < end} (none for `static`)."""
        return list(range(self.begin, self.end, self.every)) if self.moves else []

    def is_update(self, t):
        """Whether the mask moves before step `t`'s gradient update (jnp bool; `t` may be traced)."""
        t = jnp.asarray(t)
        return jnp.asarray(self.moves) & (t >= self.begin) & (t < self.end) & ((t - self.begin) % self.every == 0)

    def drop_fraction_at(self, t: int) -> float:
        """f_t (float64, on the host)."""
        if self.drop_decay == "constant":
            return float(self.drop_fraction)
        return self.drop_fraction / 2.0 * (1.0 + math.cos(math.pi * min(int(t), self.end) / self.end))

    def drop_counts(self, t):
        """d per tensor (in `paths` order) at update step `t`: round_half_up(f_t K_l). A Python int
        gives a tuple, a traced one an int32 array looked up in the host-computed table (at a step
        that is no update step: the last update step's counts)."""
        steps = self.update_steps() or [self.begin]
        table = np.asarray([[round_half_up(self.drop_fraction_at(u) * k) for _, k in self.counts] for u in steps], np.int64)
        if isinstance(t, (int, np.integer)):
            return tuple(int(c) for c in table[max(int(np.searchsorted(steps, int(t), side="right")) - 1, 0)])
        row = jnp.maximum(jnp.searchsorted(jnp.asarray(steps, jnp.int32), jnp.asarray(t, jnp.int32), side="right") - 1, 0)
        return jnp.asarray(table, jnp.int32)[row]

    # -- masks ----------------------------------------------------------------------------------
    def _check(self, flat: Mapping[str, Any], what: str) -> None:
        missing = [p for p in self.paths if p not in flat]
        if missing:
            raise KeyError(f"dynamic sparse training: no {what} at {missing} (have {sorted(flat)})")
        for p, k in self.counts:
            if k > int(np.prod(np.shape(flat[p]))):
                raise ValueError(f"dynamic sparse training: {p} keeps {k} of {int(np.prod(np.shape(flat[p])))} weights")

    def initial_mask(self, mask: PyTree, key: jax.Array) -> PyTree:
        """`mask` (one replicate's, e.g. all ones) with each tensor of `paths` replaced by K_l of its
        weights drawn at random (tensor i with `fold_in(key, i)`); jit-able."""
        flat = M.flatten(mask)
        self._check(flat, "mask")
        new = dict(flat)
        for i, (p, k) in enumerate(self.counts):
            old = jnp.asarray(flat[p])
            keys = _random_key(jax.random.fold_in(key, i), old.shape, jnp.ones(old.shape, bool))
            new[p] = _keep_largest([keys], k)[0].reshape(old.shape).astype(old.dtype)
        return jax.tree_util.tree_map_with_path(lambda kp, m: new[_path(kp)], mask)

    def update_mask(self, params: PyTree, mask: PyTree, grads: PyTree, key: jax.Array, t) -> PyTree:
        """The mask after the update at step `t` (one replicate's trees; jit-able): per tensor, drop
        the d smallest |w| of the active weights, grow d among the rest (module docstring). `grads`
        is used by `rigl`, `key` by `set`."""
        flat_w, flat_m, flat_g = M.flatten(params), M.flatten(mask), M.flatten(grads)
        self._check(flat_m, "mask")
        self._check(flat_w, "parameter")
        drops = self.drop_counts(t)
        new = dict(flat_m)
        for i, (p, k) in enumerate(self.counts):
            old = jnp.asarray(flat_m[p])
            alive = old.astype(bool)
            kept = _keep_largest([_magnitude_key(flat_w[p], alive)], k - drops[i])[0].reshape(old.shape)
            if self.method == "rigl":
                score = _magnitude_key(flat_g[p], ~kept)
            else:
                score = _random_key(jax.random.fold_in(key, i), old.shape, ~kept)
            grown = _keep_largest([score], drops[i])[0].reshape(old.shape)
            new[p] = (kept | grown).astype(old.dtype)
        return jax.tree_util.tree_map_with_path(lambda kp, m: new[_path(kp)], mask)

    def update(self, state, grads: PyTree, t, key: jax.Array):
        """One replicate's train state (anything with `params`, `mask`, `opt_state` and `replace`)
        after the update at step `t`: the new mask, params kept only where both masks keep them
        (grown weights exactly 0), the optimizer state zeroed everywhere else. Returns (state, the
        new mask's density over `paths`)."""
        mask = self.update_mask(state.params, state.mask, grads, key, t)
        both = jax.tree.map(lambda p, o, n: jnp.asarray(o).astype(bool) & jnp.asarray(n).astype(bool), state.params,
                            state.mask, mask)
        params = M.apply_mask(state.params, both)
        return state.replace(mask=mask, params=params, opt_state=zero_state(state.opt_state, both)), self.density(mask)

    def density(self, mask: PyTree):
        """Kept fraction over `paths` of one replicate's mask (jnp float32)."""
        flat = M.flatten(mask)
        alive = sum(jnp.sum(jnp.asarray(flat[p]).astype(jnp.int32)) for p in self.paths)
        total = sum(int(np.prod(np.shape(flat[p]))) for p in self.paths)
        return alive.astype(jnp.float32) / jnp.float32(total)

    def turnover(self, start: PyTree, final: PyTree) -> float:
        """The fraction of `final`'s kept weights (over `paths`) that `start` did not keep."""
        fs, ff = M.flatten(jax.device_get(start)), M.flatten(jax.device_get(final))
        kept = sum(int(np.asarray(ff[p]).astype(bool).sum()) for p in self.paths)
        new = sum(int((np.asarray(ff[p]).astype(bool) & ~np.asarray(fs[p]).astype(bool)).sum()) for p in self.paths)
        return new / kept if kept else 0.0


def from_config(pruning: Any, params: PyTree, paths: Sequence[str], steps: tuple[int, int, int]) -> DynamicSparse:
    """The `DynamicSparse` of a `PruningConfig` over one replicate's `params` and the prunable
    `paths`, with (begin, end, every) in steps (`lth.lottery.plan`)."""
    flat = M.flatten(params)
    begin, end, every = steps
    dyn = pruning.dynamic
    return DynamicSparse.build({p: tuple(np.shape(flat[p])) for p in paths}, float(pruning.target_density),
                               distribution=pruning.distribution, densities=dict(pruning.densities), method=pruning.method,
                               begin=begin, end=end, every=every, drop_fraction=float(dyn.drop_fraction),
                               drop_decay=dyn.drop_decay)


def initial_masks(dyn: DynamicSparse, masks: PyTree, seed: int, replicates: Sequence[int]) -> PyTree:
    """Stacked starting masks of `replicates` (replicate r from `mask_key(seed, r)`), from stacked
    `masks` (one per replicate, e.g. all ones)."""
    keys = jnp.stack([mask_key(seed, r) for r in replicates])
    return jax.jit(jax.vmap(dyn.initial_mask))(masks, keys)


__all__ = ["DynamicSparse", "METHODS", "from_config", "grow_key", "initial_masks", "mask_key"]
