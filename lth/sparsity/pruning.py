"""The pruning step: the next mask from scores, an exact count, ties broken by position.

A pruning step removes, among the alive prunable items (single weights, or whole units under
structured granularity: `lth.sparsity.structured`), those with the lowest scores (`lth.sparsity.methods` says which
scores: |θ| of the final weights for IMP, SNIP's, GraSP's, ...):
- `global` scope ranks every prunable item against one threshold (Frankle et al. 2020, Renda
  et al. 2020);
- `layerwise` scope prunes each tensor by its own fraction (Frankle & Carbin 2019);
- `module` scope prunes the prunable tensors of one layer (its kernel and, when prunable, its bias)
  against one threshold, as the MNIST-1D lottery notebook's per-layer parameter vector.
Tensors matched by a pattern in `pruning.fractions` are pruned by that fraction on their own in
either scope (e.g. the output layer at half the rate). Under a non-uniform `pruning.distribution`
(ERK, ER, custom: `lth.sparsity.allocation`) and under N:M granularity every tensor is its own group,
with the count `lth.sparsity.level_counts` gives it; blocks (`pruning.granularity=block`,
`lth.sparsity.patterns`) are items like units, and N:M steps keep n_ℓ in every group of m.

The fraction is `pruning.fraction` of the remaining items per level (`iterative`), or
1 - `pruning.target_density` once (`oneshot`). Counts are exact: `round(fraction * remaining)`
items go (half rounds up), and ties are broken by position (a stable sort over tensors in path
order, then row-major position or unit index), so the same scores always give the same mask. The
new mask is always a subset of the old one. Runs on the host in numpy: it happens once per level
and must be exact, not fast.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from lth.sparsity import masks as M, patterns, structured
from lth.config import method_settings
from lth.config.schema import PruningConfig

PyTree = Any


def n_to_prune(fraction: float, remaining: int) -> int:
    """round(fraction * remaining), half up: the exact number a level removes."""
    return min(remaining, int(math.floor(fraction * remaining + 0.5)))


def tensor_fraction(path: str, cfg: PruningConfig) -> float | None:
    """The per-tensor fraction set by the first matching `pruning.fractions` pattern, if any."""
    for pattern, frac in cfg.fractions.items():
        if M.matches(pattern, path, cfg.head):
            return float(frac)
    return None


def step_fraction(cfg: PruningConfig) -> float:
    """The fraction of the remaining items one pruning step removes from tensors without a
    per-tensor fraction: `fraction` (iterative) or 1 - `target_density` (one-shot)."""
    if cfg.schedule in ("oneshot", "gradual"):
        if cfg.target_density is None and cfg.granularity == "n:m":  # n:m one-shot: n/m
            return 1.0 - cfg.n_m[0] / cfg.n_m[1]
        return 1.0 - float(cfg.target_density)
    return float(cfg.fraction)


def groups(paths: list[str], cfg: PruningConfig) -> list[tuple[list[str], float]]:
    """The groups that share one threshold, with their fraction: each tensor with a per-tensor
    fraction alone; under layerwise scope every tensor alone; under module scope the tensors of
    one module (`fc1/kernel` and `fc1/bias`: the path up to its last `/`) together, in the order of
    their first tensor; under global scope the rest together."""
    out, shared, modules = [], [], {}
    scope = method_settings.scope(cfg)  # null: the method's own (lth.config.method_settings); erk, n:m: layerwise
    for p in paths:
        frac = tensor_fraction(p, cfg)
        if frac is not None:
            out.append(([p], frac))
        elif scope == "layerwise":
            out.append(([p], step_fraction(cfg)))
        elif scope == "module":
            module = p.rsplit("/", 1)[0] if "/" in p else p
            if module not in modules:
                modules[module] = ([], step_fraction(cfg))
                out.append(modules[module])
            modules[module][0].append(p)
        else:
            shared.append(p)
    if shared:
        out.append((shared, step_fraction(cfg)))
    return out


def _items(flat_scores, flat_mask, path, cfg):
    """(scores, alive) of the prunable items of one tensor, 1-D in tie-break order."""
    if cfg.granularity in ("weight", "n:m"):
        return (np.asarray(flat_scores[path], np.float64).ravel(), np.asarray(flat_mask[path], bool).ravel())
    if cfg.granularity == "block":
        s, m = np.asarray(flat_scores[path], np.float64), np.asarray(flat_mask[path], bool)
        return patterns.block_scores(s, m, cfg.block), patterns.block_alive(m, cfg.block)
    return structured.unit_scores(flat_scores[path], flat_mask[path]), structured.unit_alive(flat_mask[path])


def remove_lowest(scores: list[np.ndarray], alive: list[np.ndarray], n: int) -> list[np.ndarray]:
    """Kill the `n` alive items with the lowest scores across the 1-D arrays (concatenated in
    order; a stable sort breaks ties by position); returns the new alive arrays."""
    keep = np.concatenate(alive).copy()
    s = np.concatenate(scores)
    idx = np.flatnonzero(keep)
    if n > idx.size:
        raise ValueError(f"cannot remove {n} of {idx.size} alive items")
    order = np.argsort(s[idx], kind="stable")
    keep[idx[order[:n]]] = False
    out, start = [], 0
    for a in alive:
        out.append(keep[start:start + a.size])
        start += a.size
    return out


def alive_counts(mask: PyTree, cfg: PruningConfig, paths: list[str]) -> list[int]:
    """Alive items (weights or units) per group of `groups(paths, cfg)`."""
    flat = M.flatten(mask)
    return [int(sum(_items(flat, flat, p, cfg)[1].sum() for p in g)) for g, _ in groups(paths, cfg)]


def target_counts(mask: PyTree, cfg: PruningConfig, paths: list[str]) -> list[int]:
    """Items each group keeps after one pruning step from `mask`: alive - round(fraction * alive)."""
    return [a - n_to_prune(frac, a) for a, (_, frac) in zip(alive_counts(mask, cfg, paths), groups(paths, cfg))]


def ladder_counts(mask: PyTree, cfg: PruningConfig, paths: list[str], steps: int) -> list[int]:
    """Items each group keeps after `steps` pruning steps from `mask` (the counts IMP reaches at
    level `steps` from the dense mask): alive <- alive - round(fraction * alive), `steps` times."""
    counts = alive_counts(mask, cfg, paths)
    for _ in range(steps):
        counts = [a - n_to_prune(frac, a) for a, (_, frac) in zip(counts, groups(paths, cfg))]
    return counts


def prune_to(scores: PyTree, mask: PyTree, cfg: PruningConfig, paths: list[str], keep: list[int]) -> PyTree:
    """`mask` with, in each group of `groups(paths, cfg)`, the lowest-scored alive items removed
    until `keep[i]` remain. Scores have the params' structure (only prunable paths are read).
    Under structured granularity a removed unit takes its bias and BatchNorm channel with it."""
    flat_s, flat_m = M.flatten(scores), M.flatten(mask)
    new = {p: np.asarray(m, dtype=bool) for p, m in flat_m.items()}
    for (group, _), k in zip(groups(paths, cfg), keep):
        items = [_items(flat_s, flat_m, p, cfg) for p in group]
        alive = [a for _, a in items]
        n = int(sum(a.sum() for a in alive)) - int(k)
        if n < 0:
            raise ValueError(f"group {group} has {n + k} alive items, fewer than the {k} to keep")
        if cfg.granularity == "n:m":  # one tensor per group: n_ℓ = k·m / size of every m
            new[group[0]] = _n_m_step(flat_s[group[0]], new[group[0]], int(k), cfg.n_m[1])
            continue
        kept = remove_lowest([s for s, _ in items], alive, n)
        for p, a in zip(group, kept):
            if cfg.granularity == "weight":
                new[p] = a.reshape(np.shape(flat_m[p]))
            elif cfg.granularity == "block":
                new[p] = new[p] & patterns.expand_blocks(a, np.shape(flat_m[p]), cfg.block)
            else:
                new.update(structured.remove_units(new, p, a))
    return M.unflatten(new)


def _n_m_step(scores, mask: np.ndarray, keep: int, m: int) -> np.ndarray:
    """One tensor's N:M pruning step: `keep` weights in all, the same number in every group of m."""
    groups_ = mask.size // m
    if keep % groups_:
        raise ValueError(f"n:m: {keep} weights to keep is not a whole number per group of {m} ({groups_} groups)")
    n = keep // groups_
    short = patterns._groups_last(np, mask, m).sum(axis=-1).min()
    if short < n:
        raise ValueError(f"n:m: a group of {m} has {short} alive weights, fewer than the {n} to keep")
    return patterns.n_m_mask(np.asarray(scores, np.float64), n, m, alive=mask)


def prune_scores(scores: PyTree, mask: PyTree, cfg: PruningConfig, paths: list[str]) -> PyTree:
    """One pruning step: the next mask, a subset of `mask`, with the lowest-scored alive items of
    the prunable tensors `paths` removed, per `cfg.scope`, `cfg.fractions` and `cfg.granularity`."""
    return prune_to(scores, mask, cfg, paths, target_counts(mask, cfg, paths))


def prune(params: PyTree, mask: PyTree, cfg: PruningConfig, paths: list[str]) -> PyTree:
    """Magnitude pruning of one replicate: `prune_scores` with scores |params|."""
    return prune_scores(magnitudes(params), mask, cfg, paths)


def magnitudes(params: PyTree) -> PyTree:
    """|θ| as float64 numpy (the host-side magnitude scores)."""
    return M.unflatten({p: np.abs(np.asarray(v, np.float64)) for p, v in M.flatten(params).items()})


def expected_density(level: int, fraction: float) -> float:
    """(1 - p)^L: the density the ladder reaches after L levels (up to rounding)."""
    return (1.0 - fraction) ** level
