"""Ablations of a pruning method (Frankle et al. 2021, "Pruning neural networks at initialization:
why are we missing the mark?"), `pruning.ablation`: does a method find more than per-layer densities?

With m the mask a method gives at level L, m_{L-1} the previous one and s the method's scores:
- `shuffle_layerwise`: m' = π_t(m) per prunable tensor t, the tensor's survivors placed uniformly
  at random among its positions alive in m_{L-1} (all of them at level 1), so |m'_t| = |m_t| for
  every tensor and m' ⊆ m_{L-1};
- `invert`: keep the lowest scores instead, s' = −s (the same exact counts per group);
- `reinit`: keep m, train from fresh weights m ⊙ θ0' drawn from the initialiser (the level loop
  does this: `fresh_weights`) with a fresh optimizer state.
Each keeps every tensor's number of survivors exactly. Random draws come from
(seed, replicate, "ablation:<name>", level) alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from lth.sparsity import masks as M
from lth.sparsity.draws import control_rng

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Ablation:
    """One ablation: `invert_scores`, `shuffle` (the mask, per tensor) and `fresh_weights`."""

    name: str
    invert_scores: bool = False
    shuffle: bool = False
    fresh_weights: bool = False

    def scores(self, s: PyTree) -> PyTree:
        """The scores the pruning step ranks: s, or −s."""
        return jax.tree.map(lambda x: -np.asarray(x, np.float64), s) if self.invert_scores else s

    def mask(self, new: PyTree, prev: PyTree, paths: list[str], cfg, replicate: int, level: int) -> PyTree:
        """The mask the level trains: `new`, or its per-tensor shuffle within `prev`'s survivors."""
        if not self.shuffle:
            return new
        return shuffle_within(new, prev, paths, control_rng(cfg.seed, replicate, f"ablation:{self.name}", level))


ABLATIONS: dict[str, Ablation] = {
    "none": Ablation("none"),
    "shuffle_layerwise": Ablation("shuffle_layerwise", shuffle=True),
    "invert": Ablation("invert", invert_scores=True),
    "reinit": Ablation("reinit", fresh_weights=True),
}


def shuffle_within(new: PyTree, prev: PyTree, paths: list[str], rng: np.random.Generator) -> PyTree:
    """Each tensor of `paths`: as many survivors as in `new`, at uniformly random positions among
    those alive in `prev`; other tensors as in `new`."""
    flat_n, flat_p = M.flatten(new), M.flatten(prev)
    out = {p: np.asarray(m, bool) for p, m in flat_n.items()}
    for p in paths:
        n = np.asarray(flat_n[p], bool)
        alive = np.flatnonzero(np.asarray(flat_p[p], bool).ravel())
        keep = np.zeros(n.size, bool)
        keep[rng.choice(alive, size=int(n.sum()), replace=False)] = True
        out[p] = keep.reshape(n.shape)
    return M.unflatten(out)
