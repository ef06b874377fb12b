"""Magnitude pruning: the next level's mask from this level's final weights.

Each level removes a fraction of the *remaining* prunable weights, those of smallest magnitude:
- `global` scope ranks every prunable weight against one threshold (Frankle et al. 2020, Renda
  et al. 2020);
- `layerwise` scope prunes each tensor by its own fraction (Frankle & Carbin 2019).
Tensors matched by a pattern in `pruning.fractions` are pruned by that fraction on their own in
either scope (e.g. the output layer at half the rate).

Counts are exact: `round(fraction * remaining)` weights go (half rounds up), and ties at the
threshold are broken by position (a stable sort over tensors in path order, then row-major
position), so the same weights always give the same mask. Runs on the host in numpy: it happens
once per level and must be exact, not fast.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from lth import masks as M
from lth.config import PruningConfig

PyTree = Any


def n_to_prune(fraction: float, remaining: int) -> int:
    """round(fraction * remaining), half up: the exact number a level removes."""
    return min(remaining, int(math.floor(fraction * remaining + 0.5)))


def tensor_fraction(path: str, cfg: PruningConfig) -> float | None:
    """The per-tensor fraction set by the first matching `pruning.fractions` pattern, if any."""
    for pattern, frac in cfg.fractions.items():
        if re.search(pattern, path):
            return float(frac)
    return None


def _prune_group(weights: dict[str, np.ndarray], alive: dict[str, np.ndarray], fraction: float) -> dict[str, np.ndarray]:
    """Remove `n_to_prune(fraction, alive)` of the smallest alive weights across `weights`
    (path-sorted, then row-major: the stable tie-break)."""
    paths = sorted(weights)
    if not paths:
        return {}
    scores = np.concatenate([np.abs(np.asarray(weights[p], dtype=np.float64)).ravel() for p in paths])
    keep = np.concatenate([np.asarray(alive[p], dtype=bool).ravel() for p in paths])
    alive_idx = np.flatnonzero(keep)
    k = n_to_prune(fraction, alive_idx.size)
    order = np.argsort(scores[alive_idx], kind="stable")
    keep[alive_idx[order[:k]]] = False
    out, start = {}, 0
    for p in paths:
        size = np.asarray(alive[p]).size
        out[p] = keep[start : start + size].reshape(np.shape(alive[p]))
        start += size
    return out


def prune(params: PyTree, mask: PyTree, cfg: PruningConfig, paths: list[str]) -> PyTree:
    """The next mask for one replicate: a subset of `mask` with the smallest-magnitude alive
    weights of the prunable tensors `paths` removed, per `cfg.scope` and `cfg.fractions`."""
    flat_w, flat_m = M.flatten(params), M.flatten(mask)
    new = {p: np.asarray(m, dtype=bool) for p, m in flat_m.items()}
    shared = []
    for p in paths:
        frac = tensor_fraction(p, cfg)
        if frac is not None:
            new.update(_prune_group({p: flat_w[p]}, {p: flat_m[p]}, frac))
        elif cfg.scope == "layerwise":
            new.update(_prune_group({p: flat_w[p]}, {p: flat_m[p]}, cfg.fraction))
        else:
            shared.append(p)
    if shared:
        new.update(_prune_group({p: flat_w[p] for p in shared}, {p: flat_m[p] for p in shared}, cfg.fraction))
    return M.unflatten(new)


def expected_density(level: int, fraction: float) -> float:
    """(1 - p)^L: the density the ladder reaches after L levels (up to rounding)."""
    return (1.0 - fraction) ** level
