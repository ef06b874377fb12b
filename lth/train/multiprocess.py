"""One run over the devices of several processes (`jax.distributed`): the devices, and arrays in and out.

Every process runs the same lottery loop on the same host values; only `Trainer.run` and
`Trainer.evaluate` (`lth.train.trainer`, `lth.train.evaluation`) spread work over processes, and
they hand back plain host arrays holding every member, so that the rest (pruning, results,
checkpoints, written by process 0 alone: `lth.runs.writer`) is the single-process code:

- `devices.shard=members`: each process trains its block of members on its own devices (one plain
  one-device call per device: `lth.train.per_device`), then every process gets all members back
  (`gather`, an all-gather over processes). A member computes exactly what it computes in a
  one-process run, bit for bit.
- `devices.shard=batch`: each global batch (the one-process batch: same indices, same order) is fed
  from the host, each process reading only its own slice of it, the columns its devices hold, and
  making the global batch of every process's slice (`lth.train.fed`); the states are made global
  arrays replicated on every device of the mesh (`to_global`), each device computes the gradient
  of its slice and XLA all-reduces the sum (over gloo on the CPU); the states come back to the host
  (`to_host`). The training set stays in host memory (or on disk: `dataset.stream=true`), never on
  the devices.

`mesh_devices` picks the same number of devices on every process (so that every process does the
same share), process by process: the member axis and the batch split block-wise by process.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import numpy as np


def processes() -> int:
    return jax.process_count()


def mesh_devices(n: int, count: int = 0) -> Optional[list]:
    """The devices over which to split `n` (members or examples) with several processes: the largest
    d dividing `n` that is a multiple of the process count P with d / P at most the devices of each
    process (`count` of them, 0: all), as d / P devices of process 0, then of process 1, ...; None
    when no such d >= 2 exists (every process then does all the work itself)."""
    P = jax.process_count()
    per = {}
    for d in jax.devices():
        per.setdefault(d.process_index, []).append(d)
    local = min(len(v) for v in per.values())
    local = min(local, count) if count else local
    best = max((d for d in range(P, P * local + 1, P) if n % d == 0), default=0)
    if best < 2:
        return None
    k = best // P
    return [d for p in sorted(per) for d in sorted(per[p], key=lambda d: d.id)[:k]]


def gather(local: Any, axis: int = 0) -> Any:
    """Every process's `local` (a pytree of host arrays, equal shapes), concatenated on `axis` in
    process order: the same full arrays on every process."""
    from jax.experimental import multihost_utils

    local = jax.tree.map(np.asarray, jax.device_get(local))
    if jax.process_count() == 1:
        return local
    every = multihost_utils.process_allgather(local, tiled=False)  # (P, ...) per leaf
    return jax.tree.map(lambda x: np.concatenate(list(np.asarray(x)), axis=axis), every)


def to_global(tree: Any, sharding) -> Any:
    """Host (or local) arrays, the same on every process, as global arrays with `sharding`."""
    return jax.tree.map(lambda x: jax.device_put(np.asarray(x), sharding), jax.device_get(tree))


def to_host(tree: Any) -> Any:
    """Global arrays back as host arrays, whole on every process."""
    from jax.experimental import multihost_utils

    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.asarray(x)
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(one, tree)
