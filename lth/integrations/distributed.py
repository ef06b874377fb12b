"""Multi-host runs: when to call `jax.distributed.initialize()`.

A run spread over several processes (several GPU nodes under SLURM, a TPU slice) must connect its
processes before JAX first touches a device; then `jax.devices()` lists every process's devices
and `jax.local_devices()` this process's. The entry points (`experiments/common.py:run_or_exit`)
call `maybe_initialize()` before any work:

- `LTH_DISTRIBUTED=1` (or `true`): initialize, letting JAX detect the cluster (SLURM, Open MPI,
  TPU pods, or `JAX_COORDINATOR_ADDRESS`/`JAX_NUM_PROCESSES`/`JAX_PROCESS_ID` set by hand);
- `LTH_DISTRIBUTED=0` (or `false`): never (e.g. several independent tasks in one allocation);
- unset: initialize when SLURM started this process as one task of several in one job step
  (`SLURM_NTASKS` > 1 with the step's `SLURM_STEP_NODELIST`, `SLURM_PROCID`, `SLURM_LOCALID`:
  what `srun` and the submitit launcher's `nodes`/`tasks_per_node` set; the preset
  `hydra/launcher=slurm_multinode` starts such jobs). JAX then takes one process per GPU
  (`local_device_ids=[SLURM_LOCALID]`), so `tasks_per_node` should equal `gpus_per_node`.

Deciding (`wanted`) imports nothing; only `maybe_initialize` imports JAX, and only to initialize.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional

ENV = "LTH_DISTRIBUTED"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
_SLURM_STEP = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
_initialized = False


def wanted(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether this process is one of several of a multi-host run (see the module's docstring)."""
    env = os.environ if environ is None else environ
    flag = env.get(ENV)
    if flag is not None:
        value = flag.strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        from lth.config.schema import ConfigError

        raise ConfigError(f"{ENV}={flag!r}: expected 1 (initialize jax.distributed), 0 (never) or unset "
                          "(initialize when SLURM started this process as one of several tasks)")
    if not all(k in env for k in _SLURM_STEP):
        return False
    try:
        return int(env["SLURM_NTASKS"]) > 1
    except ValueError:
        return False


def is_primary(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether this process is the first of its run (the one that records sweep jobs): always in a
    single-process run; in a multi-host run started by SLURM, task 0 (`SLURM_PROCID`)."""
    env = os.environ if environ is None else environ
    try:
        if not wanted(env):
            return True
    except ValueError:  # a bad LTH_DISTRIBUTED (ConfigError) is reported by maybe_initialize
        return True
    return env.get("SLURM_PROCID", env.get("JAX_PROCESS_ID", "0")) == "0"


def maybe_initialize(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Call `jax.distributed.initialize()` (once per process) when `wanted`; True if it did now or
    before. JAX detects the coordinator, process count and id from the cluster's environment."""
    global _initialized
    if _initialized:
        return True
    if not wanted(environ):
        return False
    import jax

    jax.distributed.initialize()
    _initialized = True
    return True
