"""Multi-host runs: when to call `jax.distributed.initialize()`.

A run spread over several processes (several GPU nodes under SLURM, a TPU slice) must connect its
processes before JAX first touches a device; then `jax.devices()` lists every process's devices
and `jax.local_devices()` this process's. The entry points (`experiments/common.py:run_or_exit`)
call `maybe_initialize()` before any work:

- `LTH_DISTRIBUTED=1` (or `true`): initialize, from `LTH_COORDINATOR` (host:port),
  `LTH_NUM_PROCESSES` and `LTH_PROCESS_ID` when set (`python -m lth.launch` sets them:
  `lth.integrations.launch`), else letting JAX detect the cluster (SLURM, Open MPI, TPU pods);
- `LTH_DISTRIBUTED=0` (or `false`): never (e.g. several independent tasks in one allocation);
- unset: initialize when SLURM started this process as one task of several in one job step
  (`SLURM_NTASKS` > 1 with the step's `SLURM_STEP_NODELIST`, `SLURM_PROCID`, `SLURM_LOCALID`:
  what `srun` and the submitit launcher's `nodes`/`tasks_per_node` set; the preset
  `hydra/launcher=slurm_multinode` starts such jobs). JAX then takes one process per GPU
  (`local_device_ids=[SLURM_LOCALID]`), so `tasks_per_node` should equal `gpus_per_node`.

On the CPU, the processes exchange arrays over gloo (`jax_cpu_collectives_implementation`): how
`python -m lth.launch --processes N` rehearses a multi-node job on one machine. After initializing,
`lth.runs.writer` learns this process's index: only process 0 writes the run's files.

Deciding (`wanted`) imports nothing; only `maybe_initialize` imports JAX, and only to initialize.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping, Optional

ENV = "LTH_DISTRIBUTED"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
EXPLICIT = ("LTH_COORDINATOR", "LTH_NUM_PROCESSES", "LTH_PROCESS_ID")
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
    return env.get("SLURM_PROCID", env.get("LTH_PROCESS_ID", env.get("JAX_PROCESS_ID", "0"))) == "0"


def local_device_ids(environ: Optional[Mapping[str, str]] = None) -> Optional[list[int]]:
    """The GPUs this process uses, from `LTH_LOCAL_DEVICES`: unset, JAX's choice (under SLURM the
    GPU of `SLURM_LOCALID`: one process per GPU); `all`, every GPU of the node (one process per
    node: `hydra/launcher=slurm_multinode_node`), counted from `SLURM_GPUS_ON_NODE` or
    `CUDA_VISIBLE_DEVICES`; or a list `0,1,2,3`."""
    env = os.environ if environ is None else environ
    value = env.get("LTH_LOCAL_DEVICES", "").strip()
    if not value:
        return None
    from lth.config.schema import ConfigError

    if value == "all":
        n = env.get("SLURM_GPUS_ON_NODE", "").split("(")[0]
        if not n.isdigit() and env.get("CUDA_VISIBLE_DEVICES"):
            n = str(len(env["CUDA_VISIBLE_DEVICES"].split(",")))
        if not n.isdigit():
            raise ConfigError("LTH_LOCAL_DEVICES=all: neither SLURM_GPUS_ON_NODE nor CUDA_VISIBLE_DEVICES says how many "
                              "GPUs this node has; list them (LTH_LOCAL_DEVICES=0,1,2,3)")
        return list(range(int(n)))
    try:
        return [int(x) for x in value.split(",")]
    except ValueError:
        raise ConfigError(f"LTH_LOCAL_DEVICES={value!r}: expected all or a list of GPU ids such as 0,1,2,3") from None


def initialized() -> bool:
    """Whether this process joined a multi-process job (`maybe_initialize`)."""
    return _initialized


def exit_now(code: int) -> None:
    """In a multi-process job, end this process at once with status `code`: a normal exit would
    wait (minutes) for the other processes at JAX's shutdown barrier, while they wait for this one
    in a collective; whoever started the job (`python -m lth.launch`, SLURM) stops them. Nothing
    in a single-process run."""
    if _initialized:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def maybe_initialize(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Call `jax.distributed.initialize()` (once per process) when `wanted`; True if it did now or
    before. The coordinator, process count and id: `EXPLICIT`'s variables when set, else what JAX
    detects from the cluster's environment."""
    global _initialized
    if _initialized:
        return True
    env = os.environ if environ is None else environ
    if not wanted(env):
        return False
    import jax

    from lth.runs import writer

    given = [k for k in EXPLICIT if env.get(k)]
    if 0 < len(given) < len(EXPLICIT):
        from lth.config.schema import ConfigError

        raise ConfigError(f"{', '.join(given)} set without {', '.join(k for k in EXPLICIT if k not in given)}: "
                          f"set all of {', '.join(EXPLICIT)} (python -m lth.launch does) or none (cluster detection)")
    if "jax_cpu_collectives_implementation" in jax.config.values:  # the CPU's collectives between processes
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    local = local_device_ids(env)
    extra = {} if local is None else {"local_device_ids": local}
    if given:
        jax.distributed.initialize(coordinator_address=env["LTH_COORDINATOR"], num_processes=int(env["LTH_NUM_PROCESSES"]),
                                   process_id=int(env["LTH_PROCESS_ID"]), **extra)
    else:
        jax.distributed.initialize(**extra)
    writer.set_process(jax.process_index(), jax.process_count())
    _initialized = True
    return True
