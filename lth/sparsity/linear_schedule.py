"""The linear sparsity schedule (`pruning.schedule=linear`): the MNIST-1D lottery notebook's.

Greydanus (2020)'s notebook prunes over 100 rounds with `sparsity_schedule = np.linspace(0, 1, 100)`
and, per layer, drops `int(sparsity * n)` of the layer's n parameters. Here, with Δ the group's
fraction (`pruning.fraction`, or its `pruning.fractions` entry) and n_g the number of items of group
g in the *dense* network, level L keeps

    s_L = min(1, L · Δ),        keep_{g,L} = n_g - floor(s_L · n_g),

so the sparsity grows by Δ of the dense count per level (not of the remaining count, as the
iterative schedule), and the notebook's 100 rounds are levels 0..99 with Δ = 1/99: L · (1/99) is,
in float64, exactly `np.linspace(0, 1, 100)[L]` for every L (so the counts, floor included, are the
notebook's). The schedule depends on the level only, not on `levels`, so raising `levels` extends a
run. The scores decide which items go (`lth.sparsity.methods`); pruned items stay pruned, as their final
weights are 0 (the notebook's pruned parameters score |0| too).
"""

from __future__ import annotations

import math


def sparsity(level: int, fraction: float) -> float:
    """s_L = min(1, L · Δ)."""
    return min(1.0, level * float(fraction))


def keep_counts(totals: list[int], level: int, fractions: list[float]) -> list[int]:
    """Items each group keeps at `level`: n_g - floor(s_L · n_g), with each group's own Δ."""
    return [n - min(n, int(math.floor(sparsity(level, f) * n))) for n, f in zip(totals, fractions)]
