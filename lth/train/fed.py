"""Batches fed from the host to the devices that train on them: every global batch split over the
devices of all processes (data parallel), and members split over devices, each process reading
only the examples its own devices train on.

Why: data parallel over several processes used to put the whole training set on every device and
let each device slice its part of the batch there; that does not scale (ImageNet fits no device)
and does not work at all for a training set streamed from disk (`dataset.stream=true`). Here each
step's indices (R, B) are computed on the host exactly as in a one-process run
(`lth.train.streamed.Prefetcher`: the trainer's own permutations, so the same batches in the same
order), and

- `devices.shard=batch` (`run_batch`): each process takes only its columns of the indices, those
  its devices hold under the batch sharding `P(None, "batch")` (B / P of them for P processes: its
  devices' slices in mesh order), reads those examples from its host copy (host arrays, or a
  `StreamedRows` read from disk), and `jax.make_array_from_process_local_data` makes the global
  (R, B, ...) batch of every process's block. The compiled step is the trainer's own step on a
  given batch (`lth.train.streamed.step_functions`, with the in-memory data-parallel constraint
  splitting it over the devices); XLA all-reduces the gradients. States are replicated global
  arrays during a call; over several processes they are host arrays between calls, as
  `lth.train.multiprocess` hands them back. (A last partial batch that does not split over the
  devices, `drop_last=false`, is fed whole to every process; its computation is still split.)
- `devices.shard=members` (`run_members`, a streamed set): each of this process's devices gets the
  batches of its own members, read for them alone, and runs the one-device step on them (one plain
  call per device, as `lth.train.per_device`), so a member computes exactly what a one-device
  streamed run computes.

`wanted` says when `Trainer.run` comes here: every streamed run, and in-memory data parallel over
several processes (whose training set then stays in host memory, never on the devices). One
process's in-memory data parallel keeps the set on its devices (`Trainer.run`'s scanned call).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from lth.train import multiprocess
from lth.train.per_device import _shard_on
from lth.train.streamed import Prefetcher, compiled, host_data, run_one_device, stack_metrics, step_functions


def wanted(trainer) -> bool:
    """Whether `Trainer.run` feeds batches from the host (this module) instead of gathering them
    from a training set on the devices."""
    return trainer.streamed or (trainer.scan and trainer.batch_sharding is not None and jax.process_count() > 1)


def run(trainer, states, keys: dict, start: int, n: int):
    """`Trainer.run` with batches fed from the host: steps start .. start+n-1 of all replicates.
    Returns (states, per-step metrics as numpy arrays of shape (n, R))."""
    if trainer.scan and trainer.member_mesh is not None:
        return run_members(trainer, states, keys, start, n)
    if trainer.scan and trainer.batch_sharding is not None:
        return run_batch(trainer, states, keys, start, n)
    return run_one_device(trainer, states, keys, start, n)


def local_columns(sharding, shape: tuple) -> tuple[int, int]:
    """The columns lo .. hi-1 (axis 1) of an array of `shape` held by this process's devices under
    `sharding` (a contiguous block: the mesh orders devices process by process)."""
    cols = [ix[1] for ix in sharding.addressable_devices_indices_map(shape).values()]
    lo = min(c.start or 0 for c in cols)
    hi = max(shape[1] if c.stop is None else c.stop for c in cols)
    return lo, hi


def batch_feed(trainer, source=None):
    """The feeding function of data parallel: `feed(idx, step) -> (x, y, step)` global arrays, x and
    y (R, B, ...) split on B over the batch mesh, each process reading only its own columns of `idx`
    from `source` ((x, y) host arrays or `StreamedRows`; default the trainer's `host_data`)."""
    x_src, y_src = source or host_data(trainer)
    mesh = trainer.batch_sharding.mesh
    split, whole = NamedSharding(mesh, P(None, "batch")), NamedSharding(mesh, P())

    def feed(idx, step):
        R, B = idx.shape
        sharding = split if B % mesh.devices.size == 0 else whole
        lo, hi = local_columns(sharding, (R, B))
        local = idx[:, lo:hi]
        x = jax.make_array_from_process_local_data(sharding, np.asarray(x_src[local]), (R, B, *x_src.shape[1:]))
        y = jax.make_array_from_process_local_data(sharding, np.asarray(y_src[local]), (R, B))
        return x, y, jax.device_put(np.int32(step), whole)

    return feed


def run_batch(trainer, states, keys: dict, start: int, n: int):
    """Data parallel on batches fed per process (`batch_feed`)."""
    whole = NamedSharding(trainer.batch_sharding.mesh, P())
    fns = trainer.__dict__.setdefault("_fed_fns", {})
    if whole not in fns:  # the step of all replicates, its states and metrics replicated on the mesh
        fns[whole] = jax.jit(step_functions(trainer)[0], out_shardings=whole)
    step_all, aug = fns[whole], keys["aug"]
    many = jax.process_count() > 1
    if many:  # host arrays in (every process holds the same), global arrays during the call
        states, aug = multiprocess.to_global((states, aug), whole)
    rows = []
    for _, (x, y, s) in Prefetcher(trainer, keys["data"], start, n, batch_feed(trainer)):
        states, m = step_all(states, aug, x, y, s)
        rows.append(m)
    if many:
        return multiprocess.to_host(states), stack_metrics(multiprocess.to_host(rows))
    return states, stack_metrics(rows)


def run_members(trainer, states, keys: dict, start: int, n: int):
    """Members split over devices, each device fed the batches of its own members only."""
    split = NamedSharding(trainer.member_mesh, P("members"))
    R = keys["data"].shape[0]
    devs = [d for d in trainer.member_mesh.devices.flat if d.process_index == jax.process_index()]
    blocks = [split.devices_indices_map((R,))[d][0] for d in devs]
    x_src, y_src = host_data(trainer)

    def feed(idx, step):
        return [(jax.device_put(x_src[idx[b]], d), jax.device_put(y_src[idx[b]], d), jax.device_put(np.int32(step), d))
                for d, b in zip(devs, blocks)]

    step_all = compiled(trainer)[0]
    parts = [[jax.tree.map(lambda a: _shard_on(a, d, split), t) for t in (states, keys["aug"])] for d in devs]
    rows = [[] for _ in devs]
    for _, batches in Prefetcher(trainer, keys["data"], start, n, feed):
        for part, row, (x, y, s) in zip(parts, rows, batches):  # dispatched asynchronously: side by side
            part[0], m = step_all(part[0], part[1], x, y, s)
            row.append(m)
    states = trainer._assemble([p[0] for p in parts])
    return states, trainer._gather_members([stack_metrics(r) for r in rows], axis=1)
