"""Controls: what makes a ticket a ticket (Frankle & Carbin 2019; Frankle et al. 2020).

At every level L >= 1, with the ticket's mask m (replicate r) and the weights θ_src the ticket
starts from (θk under weight rewinding, the previous level's final weights under `lr`/`finetune`
rewinding, see `lth.lottery.rewind`), a control is a network trained beside the ticket from the same step,
with the same schedule and the same data order, that differs in one thing:

- `reinit` (random reinitialisation): mask m, weights m ⊙ θ0' with θ0' drawn fresh from the
  model's initialiser with the control's own key; a fresh optimizer state.
- `random_prune` (random pruning, layer-wise): a mask m' drawn uniformly among the masks with
  exactly the ticket's number of survivors in every prunable tensor,
  |m'_t| = |m_t| for each tensor t; weights m' ⊙ θ_src; the ticket's optimizer-state rule.
- `random_prune_global`: m' uniform among the masks with the ticket's total number of survivors
  over all prunable tensors, Σ_t |m'_t| = Σ_t |m_t| (per-tensor densities vary); weights as above.

Under structured pruning (`pruning.granularity=neuron|channel`, `lth.sparsity.structured`) the ticket's
items are whole units, so are the random controls': `random_prune` keeps uniformly random whole
units, exactly the ticket's number of alive units in every pruned kernel (`random_prune_global`:
the ticket's total over them), and each removed unit takes its own bias and BatchNorm channel
with it (not the ticket's). A feed-forward network then has the ticket's effective FLOPs
(`lth.sparsity.flops`: a layer's cost depends only on its alive units and its input's); where a residual
addition merges channels (ResNets) the random units of two branches need not line up, and the
control's effective FLOPs may differ from the ticket's.

Under `pruning.granularity=n:m` (`lth.sparsity.patterns`) both random controls draw uniformly random
N:M masks with the ticket's count in every group of m (the pattern fixes each group's count, so
per-tensor and total counts are the ticket's too); under `block` they keep uniformly random whole
blocks, the ticket's number per tensor (`random_prune`) or in total (`random_prune_global`).

Tensors that are not prunable keep all-True masks. The control of replicate r at level L draws
from `control_key(seed, r, name, L)` alone, so it is the same whether it is trained with the
tickets or later on its own, and whatever other controls are listed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from lth.sparsity import masks as M, patterns, structured
from lth.sparsity.draws import control_key, control_rng, fresh_weights  # noqa: F401  (the draws: lth.sparsity.draws)

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Control:
    """One control. `mask_scope`: `None` (the ticket's mask), `tensor` (random, the ticket's
    per-tensor counts) or `global` (random, the ticket's total count). `fresh_weights`: weights
    drawn from the initialiser (else the ticket's starting weights)."""

    name: str
    mask_scope: str | None
    fresh_weights: bool

    def mask(self, ticket_mask: PyTree, paths: list[str], rng: np.random.Generator,
             unit_paths: list[str] | None = None, pruning: Any = None) -> PyTree:
        """This control's mask for one replicate, from the ticket's (host) mask. `unit_paths`:
        under structured granularity, the kernels whose whole units the ticket pruned (then a
        random control draws units of those, `random_units`), under n:m or block granularity the
        kernels the pattern applies to (`pruning`: the run's pruning section, for the pattern);
        None under weight granularity."""
        if self.mask_scope is None:
            return jax.tree.map(lambda m: np.asarray(m, bool), ticket_mask)
        if unit_paths is not None and pruning is not None and pruning.granularity in patterns.PATTERNS:
            flat = {p: np.asarray(m, bool) for p, m in M.flatten(ticket_mask).items()}
            if pruning.granularity == "n:m":
                flat.update(patterns.random_n_m(flat, unit_paths, rng, pruning.n_m[1]))
            else:
                flat.update(patterns.random_blocks(flat, unit_paths, rng, pruning.block, per_tensor=self.mask_scope == "tensor"))
            return M.unflatten(flat)
        if unit_paths is not None:
            return random_units(ticket_mask, unit_paths, rng, per_tensor=self.mask_scope == "tensor")
        return random_mask(ticket_mask, paths, rng, per_tensor=self.mask_scope == "tensor")


CONTROLS: dict[str, Control] = {
    "reinit": Control("reinit", mask_scope=None, fresh_weights=True),
    "random_prune": Control("random_prune", mask_scope="tensor", fresh_weights=False),
    "random_prune_global": Control("random_prune_global", mask_scope="global", fresh_weights=False),
}


def exact_keep(size: int, alive: int, rng: np.random.Generator) -> np.ndarray:
    """A flat boolean vector of `size` with exactly `alive` True entries at uniformly random positions."""
    keep = np.zeros(size, bool)
    keep[rng.choice(size, size=alive, replace=False)] = True
    return keep


def random_mask(mask: PyTree, paths: list[str], rng: np.random.Generator, *, per_tensor: bool) -> PyTree:
    """A uniformly random mask with exactly the survivors of `mask` per prunable tensor
    (`per_tensor`) or over all of them together; other tensors all-True."""
    flat = {p: np.asarray(m, bool) for p, m in M.flatten(mask).items()}
    out = dict(flat)
    groups = [[p] for p in paths] if per_tensor else [list(paths)]
    for group in groups:
        sizes = [flat[p].size for p in group]
        alive = int(sum(flat[p].sum() for p in group))
        keep = exact_keep(sum(sizes), alive, rng)
        start = 0
        for p, n in zip(group, sizes):
            out[p] = keep[start:start + n].reshape(flat[p].shape)
            start += n
    return M.unflatten(out)


def random_units(mask: PyTree, unit_paths: list[str], rng: np.random.Generator, *, per_tensor: bool) -> PyTree:
    """A mask of uniformly random whole units: in each kernel of `unit_paths` (`per_tensor`), or
    over all of them together, exactly as many alive units as `mask` has there; a kept unit's
    slice W[..., j] and its companions (bias, BatchNorm scale and bias: `structured.companions`)
    all True, a removed unit's all False. Every other leaf keeps `mask`'s value."""
    flat = {p: np.asarray(m, bool) for p, m in M.flatten(mask).items()}
    out = dict(flat)
    groups = [[p] for p in unit_paths] if per_tensor else [list(unit_paths)]
    for group in groups:
        sizes = [flat[p].shape[-1] for p in group]
        alive = int(sum(structured.unit_alive(flat[p]).sum() for p in group))
        keep = exact_keep(sum(sizes), alive, rng)
        start = 0
        for p, n in zip(group, sizes):
            units = keep[start:start + n]
            out[p] = np.broadcast_to(units, flat[p].shape).copy()
            for c in structured.companions(p, flat):
                out[c] = units.copy()
            start += n
    return M.unflatten(out)


def shuffle_layerwise(mask: PyTree, paths: list[str], rng: np.random.Generator) -> PyTree:
    """Each prunable tensor's mask randomly permuted (the ablation of branches and pruning
    methods): the same per-tensor density, a random layout. Same law as `random_mask(per_tensor)`."""
    flat = {p: np.asarray(m, bool) for p, m in M.flatten(mask).items()}
    for p in paths:
        flat[p] = rng.permutation(flat[p].ravel()).reshape(flat[p].shape)
    return M.unflatten(flat)


