"""Per-tensor densities: Erdős–Rényi (ER) and Erdős–Rényi-Kernel (ERK), as RigL defines them.

Evci et al. 2020 ("Rigging the Lottery", `rigl/sparse_utils.py: get_sparsities_erdos_renyi`) give
each prunable tensor l with N_l weights a density proportional to a raw score r_l:

    ERK:  r_l = (Σ_i s_i) / (Π_i s_i)      over all dims s of the kernel (h + w + n_in + n_out) / (h·w·n_in·n_out)
    ER:   r_l = (n_in + n_out) / (n_in · n_out)   with n_in, n_out its two last dims (spatial dims ignored)

    d_l = ε · r_l,   ε = (d · N − Σ_{l∈D} N_l) / Σ_{l∉D} r_l · N_l

so that the kept count Σ_l d_l N_l equals d · N, N the total prunable weights. D is the set of
dense tensors: while the largest ε·r_l exceeds 1, the tensors with that largest r_l are made dense
(d_l = 1) and ε is solved again for the rest (RigL's loop). Small layers come out denser than large
ones. (RigL counts the budget from floor((1 − d)·N_l) zeros per tensor; here it is the real number
d·N, so Σ d_l N_l = d·N up to float rounding.)

`erk(params, density)` returns a pytree like `params` of Python floats: d_l for prunable tensors,
1.0 elsewhere; feed it to `magnitude_masks(params, density=...)` for per-tensor exact counts.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

from lth.sparsity.library import PRUNABLE, leaves_with_paths, prunable_index

PyTree = Any


def raw_score(shape: Sequence[int], kernel: bool = True) -> float:
    """r_l: (Σ dims)/(Π dims) for ERK (`kernel=True`), (n_in + n_out)/(n_in·n_out) of the two
    last dims for ER."""
    shape = tuple(int(s) for s in shape)
    if any(s < 1 for s in shape) or not shape:
        raise ValueError(f"erk: a prunable tensor has shape {shape}; need at least one dim, all >= 1")
    if kernel:
        return float(sum(shape)) / float(np.prod(shape, dtype=np.float64))
    if len(shape) < 2:
        raise ValueError(f"er (kernel=False): a prunable tensor has shape {shape}; ER needs (..., n_in, n_out)")
    n_in, n_out = shape[-2:]
    return (n_in + n_out) / (n_in * n_out)


def erk_densities(shapes: Sequence[Sequence[int]], density: float, kernel: bool = True, power: float = 1.0) -> list[float]:
    """d_l for tensors of `shapes` at overall `density` (the module docstring's equations);
    `power` raises r_l to a power (RigL's `erk_power_scale`, 1.0 = the paper's ERK; ER ignores it)."""
    if isinstance(density, bool) or not isinstance(density, (int, float, np.floating)) or not 0.0 < float(density) <= 1.0:
        raise ValueError(f"density={density!r}: must be a number in (0, 1]")
    sizes = [float(np.prod(s, dtype=np.float64)) for s in shapes]
    raw = [raw_score(s, kernel) ** (power if kernel else 1.0) for s in shapes]
    total = sum(sizes)
    dense: set[int] = set()
    while True:
        rest = [i for i in range(len(shapes)) if i not in dense]
        if not rest:  # every tensor dense: only possible at density 1
            return [1.0] * len(shapes)
        budget = float(density) * total - sum(sizes[i] for i in dense)
        eps = budget / sum(raw[i] * sizes[i] for i in rest)
        top = max(raw[i] for i in rest)
        if eps * top > 1.0:
            dense |= {i for i in rest if raw[i] == top}
            continue
        return [1.0 if i in dense else eps * raw[i] for i in range(len(shapes))]


def erk(params: PyTree, density: float, *, prunable: str | Sequence[str] = PRUNABLE, kernel: bool = True,
        power: float = 1.0) -> PyTree:
    """Per-tensor densities of ERK (`kernel=True`) or ER (`kernel=False`) at overall `density` of
    the prunable tensors, a pytree like `params` of floats (1.0 for dense and non-prunable ones)."""
    idx = prunable_index(params, prunable)
    _, leaves, treedef = leaves_with_paths(params)
    d = erk_densities([np.shape(leaves[i]) for i in idx], density, kernel=kernel, power=power)
    out = [1.0] * len(leaves)
    for i, v in zip(idx, d):
        out[i] = float(v)
    return jax.tree_util.tree_unflatten(treedef, out)


def er(params: PyTree, density: float, *, prunable: str | Sequence[str] = PRUNABLE) -> PyTree:
    """Erdős–Rényi per-tensor densities: `erk(..., kernel=False)`."""
    return erk(params, density, prunable=prunable, kernel=False)
