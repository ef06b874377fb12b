"""Straight-through magnitude pruning (`pruning.method=magnitude_ste`), optionally with SR-STE's decay.

One training run (level 0) at a fixed density d. The dense weights w are kept and trained; every
step the forward pass uses the masked weights

    w̃ = m(w) ⊙ w,   m(w) = 1 on the K_l largest |w| of each prunable tensor l, 0 elsewhere,

with K_l = round_half_up(d_l N_l) from `pruning.distribution` (`lth.sparsity.allocation`:
`tensor_densities`, `keep_counts`), or one shared count round_half_up(d N) over all prunable
tensors for `pruning.scope=global` with the uniform distribution, or, for `pruning.granularity=n:m`,
the n largest |w| of every m consecutive weights along the input axis (`lth.sparsity.n_m.n_of_m`).
The top-k selection is `lth.sparsity.gradual._keep_largest`: exact counts, no sort, of equal
magnitudes the later weights kept (deterministic). Weights outside the prunable tensors are never
masked.

The mask's gradient is taken as the identity (the straight-through estimator, Bengio et al. 2013;
jaxpruner's `SteMagnitudePruning`): the dense w takes w̃'s gradient, at every position,

    ∂L/∂w := ∂L/∂w̃   (dense: a pruned weight gets the gradient it would have if it were kept),

and SR-STE (Zhou et al. 2021, "Learning N:M Fine-grained Structured Sparse Neural Networks from
Scratch", eq. 5) adds a decay of the pruned weights, λ_W = `pruning.ste_decay` (0: plain STE; the
paper uses 2e-4):

    g = ∂L/∂w̃ + λ_W (1 − m(w)) ⊙ w.

The optimizer (any optax rule u, at the state's learning rate) then updates the dense weights,
w ← w + u(g), and the mask is recomputed from the new weights, so `state.mask` is always m(w) of
`state.params` (the initial state's mask is m(w₀)): a weight pruned at one step comes back when
its magnitude climbs into the top K_l. Evaluation uses m(w) ⊙ w, the results' density is the
mask's, and the level's saved final weights are m(w_T) ⊙ w_T with mask m(w_T) (`finalize`).

The trainer's hook (`lth.train.steps.Steps._train_step`, `lth.train.evaluation`) is `Trainer.ste`,
an `SteMagnitude` or None (then nothing changes).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lth.sparsity import allocation, masks as M
from lth.sparsity.gradual import _keep_largest, _magnitude_key, _path, round_half_up
from lth.sparsity.n_m import n_of_m

PyTree = Any


@dataclasses.dataclass(frozen=True)
class SteMagnitude:
    """m(w) and the straight-through update.

    Attributes:
      groups: `((paths, count), ...)`: the `/`-joined parameter paths of each group share one
        magnitude ranking and keep exactly `count` weights (one path per group unless the scope is
        global). Empty when `n_m` is set.
      decay: λ_W, SR-STE's decay of the pruned weights (0: plain STE).
      n_m: `(n, m)` for N:M masks on `n_m_paths` instead of the groups' counts.
      n_m_paths: the prunable paths of an N:M mask.
    """

    groups: tuple[tuple[tuple[str, ...], int], ...] = ()
    decay: float = 0.0
    n_m: Optional[tuple[int, int]] = None
    n_m_paths: tuple[str, ...] = ()

    def __post_init__(self):
        if not float(self.decay) >= 0.0:
            raise ValueError(f"pruning.ste_decay={self.decay!r}: SR-STE's decay must be >= 0")
        seen = [p for paths, _ in self.groups for p in paths] + list(self.n_m_paths)
        if len(set(seen)) != len(seen):
            raise ValueError(f"straight-through pruning: a path in more than one group ({seen})")

    @classmethod
    def build(cls, shapes: Mapping[str, Sequence[int]], density: float, *, distribution: str = "uniform",
              densities: Optional[Mapping[str, float]] = None, scope: str = "layerwise", decay: float = 0.0,
              n_m: Optional[Sequence[int]] = None) -> "SteMagnitude":
        """The groups for the prunable tensors `shapes` (path -> dense shape) at overall `density`,
        as the module docstring says; ValueError names what cannot be built."""
        if n_m is not None:
            n, m = (int(v) for v in n_m)
            for p, shape in sorted(shapes.items()):
                axis = -2 if len(shape) >= 2 else 0
                if not 0 <= n <= m or shape[axis] % m:
                    raise ValueError(f"pruning.n_m={[n, m]}: tensor {p} of shape {tuple(shape)} has {shape[axis]} weights "
                                     f"along its input axis, not a multiple of m={m} (or n is not in 0..m)")
            return cls((), float(decay), (n, m), tuple(sorted(shapes)))
        if scope not in ("layerwise", "global"):
            raise ValueError(f"pruning.scope={scope!r}: straight-through pruning ranks per tensor (layerwise) or over "
                             "all prunable tensors (global)")
        if scope == "global" and distribution == "uniform":
            total = sum(int(np.prod(s, dtype=np.int64)) for s in shapes.values())
            return cls(((tuple(sorted(shapes)), round_half_up(float(density) * total)),), float(decay))
        counts = allocation.keep_counts(shapes, allocation.tensor_densities(distribution, shapes, density, densities))
        return cls(tuple(((p,), int(counts[p])) for p in sorted(shapes)), float(decay))

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(sorted([p for paths, _ in self.groups for p in paths] + list(self.n_m_paths)))

    # -- the mask -------------------------------------------------------------------------------
    def mask(self, params: PyTree, like: Optional[PyTree] = None) -> PyTree:
        """m(w) of one replicate's `params` (jit-able), with the structure and dtype of `like`
        (a mask; default: boolean, the structure of `params`). Leaves outside the groups: all kept."""
        like = M.ones_like(params) if like is None else like
        flat = M.flatten(params)
        missing = [p for p in self.paths if p not in flat]
        if missing:
            raise KeyError(f"straight-through pruning: no parameter at {missing} (have {sorted(flat)})")
        new: dict[str, jax.Array] = {}
        for paths, count in self.groups:
            keys = [_magnitude_key(flat[p], jnp.ones(jnp.shape(flat[p]), bool)) for p in paths]
            for p, keep in zip(paths, _keep_largest(keys, count)):
                new[p] = keep.reshape(jnp.shape(flat[p]))
        if self.n_m is not None:
            for p in self.n_m_paths:
                new[p] = n_of_m(jnp.abs(jnp.asarray(flat[p]).astype(jnp.float32)), *self.n_m)
        return jax.tree_util.tree_map_with_path(
            lambda kp, old: new[_path(kp)].astype(old.dtype) if _path(kp) in new else jnp.ones_like(old), like)

    def forward(self, params: PyTree, mask: PyTree) -> PyTree:
        """w̃ = m ⊙ w, the weights the forward pass uses (pruned entries exactly 0). The loss is
        differentiated at w̃, so its gradient is ∂L/∂w̃ at every position: the straight-through one."""
        return M.apply_mask(params, mask)

    def gradients(self, grads: PyTree, params: PyTree, mask: PyTree) -> PyTree:
        """g = ∂L/∂w̃ + λ_W (1 − m) ⊙ w (SR-STE); the gradients themselves when λ_W = 0."""
        if self.decay == 0.0:
            return grads
        lam = self.decay
        return jax.tree.map(lambda g, w, m: g + jnp.where(m, jnp.zeros_like(w), lam * w).astype(g.dtype), grads, params, mask)

    def apply_gradients(self, state, grads: PyTree, **changes):
        """One step of a `lth.train.train_state.TrainState` whose params are the dense w and whose
        mask is m(w): the optimizer's update of w with `gradients(...)` (no mask on the update),
        then the new mask m(w) of the updated weights."""
        g = self.gradients(grads, state.params, state.mask)
        state = state.apply_masked_gradients(g, masked=False, **changes)
        return state.replace(mask=self.mask(state.params, state.mask))

    # -- stacked states -------------------------------------------------------------------------
    def initial(self, states):
        """Stacked states (replicates on the leading axis) with their mask set to m(w₀), weights
        left dense."""
        return states.replace(mask=jax.vmap(self.mask)(states.params, states.mask))

    def finalize(self, states):
        """Stacked states as the network they are: params m(w) ⊙ w (their mask is m(w) already)."""
        return states.replace(params=M.apply_mask(states.params, states.mask))

    def density(self, mask: PyTree):
        """Kept fraction over the pruned tensors of one replicate's mask (jnp float32)."""
        flat = M.flatten(mask)
        kept = sum(jnp.sum(jnp.asarray(flat[p]).astype(jnp.int32)) for p in self.paths)
        return kept.astype(jnp.float32) / jnp.float32(sum(int(np.prod(np.shape(flat[p]))) for p in self.paths))


def from_config(pruning, shapes: Mapping[str, Sequence[int]]) -> SteMagnitude:
    """The `SteMagnitude` of a `PruningConfig` (`method=magnitude_ste`) for the prunable tensors
    `shapes`; what cannot be built is a `ConfigError`."""
    from lth.config import method_settings
    from lth.config.errors import ConfigError

    n_m = list(pruning.n_m) if pruning.granularity == "n:m" else None
    try:
        return SteMagnitude.build(shapes, float(pruning.target_density), distribution=pruning.distribution,
                                  densities=dict(pruning.densities), scope=method_settings.scope(pruning),
                                  decay=float(pruning.ste_decay), n_m=n_m)
    except ValueError as e:
        raise ConfigError(f"pruning.method=magnitude_ste: {e}") from None


__all__ = ["SteMagnitude", "from_config"]
