"""Members: the networks one level trains together in one compiled program.

A level trains groups of R members each, one group per kind: the tickets (`ticket`) and each
control of `lth.lottery.controls`. Their stacked train states are concatenated along the leading member
axis (tickets first, then the controls in the order given), so on an accelerator replicates ×
kinds are one vmapped axis, not sequential runs. Member i of every group uses replicate i's data
and augmentation keys: a control sees exactly the batches of its ticket. Because each member's
computation depends only on its own state and keys, training members together gives the same
result as training each group alone: bit for bit when members are looped inside the step
(`train.replicates_as=loop`), to float rounding when vmapped (a batched matrix product of another
size rounds differently).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from lth.train.train_state import TrainState

PyTree = Any


@dataclasses.dataclass
class Group:
    """Members of one kind: the stacked states of replicates `first`, `first` + 1, ... (a run
    extended to more replicates trains only the new ones)."""

    kind: str
    states: TrainState
    first: int = 0

    @property
    def size(self) -> int:
        return int(jax.tree.leaves(self.states.params)[0].shape[0])


def stack(groups: list[Group], keys: dict[str, jax.Array]) -> tuple[TrainState, dict[str, jax.Array]]:
    """All groups' states as one stacked state, and the matching per-member keys (each group reuses
    its replicates' keys: rows `first` .. `first` + size of each key array)."""
    if len(groups) == 1:
        states = groups[0].states
    else:
        states = jax.tree.map(lambda *xs: jnp.concatenate(xs), *[g.states for g in groups])
    member_keys = {name: jnp.concatenate([k[g.first: g.first + g.size] for g in groups]) for name, k in keys.items()}
    return states, member_keys


def slices(groups: list[Group]) -> list[slice]:
    """Each group's slice of the member axis."""
    out, start = [], 0
    for g in groups:
        out.append(slice(start, start + g.size))
        start += g.size
    return out


def take(tree: PyTree, sl: slice) -> PyTree:
    """One group's part of a stacked tree."""
    return jax.tree.map(lambda x: x[sl], tree)
