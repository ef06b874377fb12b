"""Data orders across levels (`train.data_order`): which batches a level trains on.

Replicate r's batches are a function of its data key d_r and augmentation key a_r (`lth.train`:
epoch e's permutation is `permutation(fold_in(d_r, e))`, step t's augmentation `fold_in(a_r, t)`).
A level L trains with

- `fixed` (the default):   d_r^L = d_r,               a_r^L = a_r
  (every level sees the dense run's batches from its start step on: levels differ in their masks
  and starting weights only);
- `per_level` (OpenLTH's default, where the order is left unseeded and so differs per level):
  d_r^L = fold_in(d_r, L), a_r^L = fold_in(a_r, L) for L >= 1, and level 0 as `fixed`
  (seeded here, so a run is still reproducible).

The orders are data (`ORDERS`); the level loop asks the run's order for a level's keys.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax


def _fixed(keys: dict[str, jax.Array], level: int) -> dict[str, jax.Array]:
    return keys


def _per_level(keys: dict[str, jax.Array], level: int) -> dict[str, jax.Array]:
    if level == 0:
        return keys
    out = dict(keys)
    for name in ("data", "aug"):
        out[name] = jax.vmap(lambda k: jax.random.fold_in(k, level))(keys[name])
    return out


@dataclasses.dataclass(frozen=True)
class DataOrder:
    """One data order: `level_keys(keys, level)` gives the replicates' keys of a level."""

    name: str
    level_keys: Callable[[dict[str, jax.Array], int], dict[str, jax.Array]]


ORDERS: dict[str, DataOrder] = {"fixed": DataOrder("fixed", _fixed), "per_level": DataOrder("per_level", _per_level)}
