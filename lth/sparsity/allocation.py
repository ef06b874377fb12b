"""How a target density is spread over the prunable tensors: `pruning.distribution`.

For prunable tensors l = 1..L with N_l weights and an overall density d (N = Σ N_l):

    uniform:  d_l = d for every tensor (the scope then says whether counts are per tensor or global)
    erk, er:  d_l = ε · r_l, RigL's Erdős–Rényi(-Kernel) (`lth.sparsity.distributions`), Σ d_l N_l = d N
    custom:   d_l = densities[first pattern matching l]; the unmatched tensors U share what is left,
              d_u = (d N − Σ_{l∉U} d_l N_l) / Σ_{u∈U} N_u   (an error unless that lies in [0, 1])

Each tensor then keeps exactly K_l = round_half_up(d_l · N_l) weights (`keep_counts`), so the
overall density is d up to L / (2N) of rounding. Used by dynamic sparse training
(`lth.sparsity.dynamic`), one-shot pruning and pruning at initialisation.
"""

from __future__ import annotations

import math
import re
from typing import Mapping, Optional, Sequence

import numpy as np

from lth.sparsity.distributions import erk_densities

DISTRIBUTIONS = ("uniform", "erk", "er", "custom")


def tensor_densities(distribution: str, shapes: Mapping[str, Sequence[int]], density: float,
                     densities: Optional[Mapping[str, float]] = None) -> dict[str, float]:
    """d_l for each path of `shapes` (path -> tensor shape, the prunable tensors) at overall
    `density`, as the module docstring defines them."""
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"pruning.distribution={distribution!r}: must be one of {', '.join(DISTRIBUTIONS)}")
    if not 0.0 < float(density) <= 1.0:
        raise ValueError(f"density={density!r}: must lie in (0, 1]")
    paths = sorted(shapes)
    if not paths:
        return {}
    if distribution == "uniform":
        return {p: float(density) for p in paths}
    if distribution in ("erk", "er"):
        d = erk_densities([tuple(shapes[p]) for p in paths], float(density), kernel=distribution == "erk")
        return dict(zip(paths, (float(x) for x in d)))
    sizes = {p: float(np.prod(shapes[p], dtype=np.float64)) for p in paths}
    out: dict[str, float] = {}
    for p in paths:
        own = next((float(v) for pat, v in (densities or {}).items() if re.search(pat, p)), None)
        if own is not None:
            out[p] = own
    rest = [p for p in paths if p not in out]
    if rest:
        left = float(density) * sum(sizes.values()) - sum(out[p] * sizes[p] for p in out)
        share = left / sum(sizes[p] for p in rest)
        if not -1e-12 <= share <= 1.0 + 1e-12:
            raise ValueError(
                f"pruning.densities={dict(densities or {})} with pruning.target_density={density}: the tensors no pattern "
                f"matches ({', '.join(rest)}) would need density {share:.4g}; it must lie in [0, 1]")
        out.update({p: min(max(share, 0.0), 1.0) for p in rest})
    return out


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def keep_counts(shapes: Mapping[str, Sequence[int]], densities: Mapping[str, float]) -> dict[str, int]:
    """K_l = round_half_up(d_l · N_l): the exact number of weights each tensor keeps."""
    return {p: round_half_up(float(densities[p]) * int(np.prod(shapes[p], dtype=np.int64))) for p in shapes}


__all__ = ["DISTRIBUTIONS", "keep_counts", "tensor_densities"]
