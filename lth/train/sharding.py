"""Several local devices: members split over them, or every batch split over them.

A level trains M members (replicates x kinds) stacked on a leading axis, each independent of the
others (`lth.lottery.members`). With more than one device (GPUs of a node, TPU cores, or CPU devices made
with `XLA_FLAGS=--xla_force_host_platform_device_count=N`), `devices.shard` says how they share
the work, through `jax.sharding` (GSPMD partitions the same compiled step; no code path changes):

- `members` (default): the member axis is split over d devices, d the largest divisor of M that is
  at most the number of devices in use (M = 6 on 4 devices: 3), so each device trains M/d whole
  networks and no communication is needed. The step runs under `shard_map`: each device runs the
  one-device program on its M/d members, so results are those of a one-device run up to the
  rounding of a batched product of M/d instead of M members (`lth.lottery.members`).
- `batch` (data parallel, for models too large to hold M copies of on one device): the states are
  replicated and every member's batch of B examples is split over d devices, d the largest divisor
  of B at most the device count; XLA sums the gradients over devices (an all-reduce per step).

In one process the in-memory training data is replicated on every device; a streamed training set
(`dataset.stream=true`), and data parallel over several processes, feed each device its part of
every batch from the host instead (`lth.train.fed`). Single-device runs and the CPU's per-step Python
loop for convolutional models (`Trainer.scan=False`) are left as they are (`placement` -> None).

A run started as several processes (`jax.distributed`: `lth.integrations.distributed`,
`python -m lth.launch`) splits the same way over the devices of all processes, the same number on
each (`lth.train.multiprocess`: members block-wise by process, gathered back after every compiled
call; batches split over all devices with states replicated); `devices.count` counts the devices
of each process. When the count does not split (M = 3 over 2 processes), every process trains all
members itself, the same ones, and only process 0 writes (`lth.runs.writer`).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lth.train import multiprocess


def largest_divisor(n: int, most: int) -> int:
    """The largest d <= `most` dividing `n` (at least 1)."""
    return max(d for d in range(1, max(1, min(n, most)) + 1) if n % d == 0)


def local_devices(count: int = 0) -> list:
    """The first `count` local devices (0: all)."""
    devs = jax.local_devices()
    if count > len(devs):
        from lth.config.schema import ConfigError

        raise ConfigError(f"devices.count={count}: only {len(devs)} local device(s) ({devs[0].platform})")
    return devs[:count] if count else devs


def placement(devices_cfg, trainer) -> Optional[Callable[[Any, dict], tuple[Any, dict]]]:
    """`place(states, keys) -> (states, keys)` putting a level's stacked states and per-member keys
    on the devices as `devices_cfg` (`lth.config.schema.DevicesConfig`) says, or None with one device."""
    devs = local_devices(devices_cfg.count)
    trainer.batch_sharding = trainer.member_mesh = None
    if multiprocess.processes() > 1:
        return _over_processes(devices_cfg, trainer)
    if len(devs) < 2 or not trainer.scan:
        return None
    if devices_cfg.shard == "batch":
        d = largest_divisor(trainer.batch_size, len(devs))
        if d < 2:
            return None
        mesh = Mesh(devs[:d], ("batch",))
        trainer.batch_sharding = NamedSharding(mesh, P("batch"))
        everywhere = NamedSharding(mesh, P())
        return lambda states, keys: (jax.device_put(states, everywhere), jax.device_put(keys, everywhere))
    trainer.batch_sharding = None

    def place(states, keys):
        m = int(jax.tree.leaves(states.params)[0].shape[0])
        d = largest_divisor(m, len(devs))
        if d < 2:
            trainer.member_mesh = None
            return states, keys
        mesh = Mesh(devs[:d], ("members",))
        trainer.member_mesh = mesh
        split = NamedSharding(mesh, P("members"))
        return jax.device_put(states, split), jax.device_put(keys, split)

    return place


def _over_processes(devices_cfg, trainer) -> Optional[Callable]:
    """`placement` over the devices of several processes (`lth.train.multiprocess`): the states stay
    host arrays between compiled calls, so the placing function leaves them as they are."""
    keep = lambda states, keys: (states, keys)
    if not trainer.scan:
        return keep
    if devices_cfg.shard == "batch":
        devs = multiprocess.mesh_devices(trainer.batch_size, devices_cfg.count)
        if devs is not None:
            trainer.batch_sharding = NamedSharding(Mesh(devs, ("batch",)), P("batch"))
        return keep

    def place(states, keys):
        devs = multiprocess.mesh_devices(int(jax.tree.leaves(states.params)[0].shape[0]), devices_cfg.count)
        trainer.member_mesh = None if devs is None else Mesh(devs, ("members",))
        return states, keys

    return place
