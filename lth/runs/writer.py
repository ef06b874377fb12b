"""One writer: in a run spread over several processes, only process 0 writes files.

Every process of a multi-process run (`lth.integrations.distributed`, `python -m lth.launch`) runs
the same program on the same host values (members trained elsewhere are gathered back to every
process after each compiled call: `lth.train.multiprocess`), so every process could write the same
files. Process 0 alone does: the run directory, its lock, config.yaml, each level's masks, weights
and result.json, the tables, the in-level checkpoints and W&B. The others read what process 0 wrote
(a shared filesystem, as on a cluster) and skip every write through `primary()`.

`set_process` is called once, by `lth.integrations.distributed.maybe_initialize` after
`jax.distributed.initialize()`; until then (and in every single-process run) this process is the
writer and nothing here touches JAX. Orbax, when it sees several processes, makes every save and
restore a collective of all of them; lth's checkpoints are host arrays written by one process, so
`orbax_options` makes each process's orbax calls its own (`active_processes` = this process).
"""

from __future__ import annotations

from typing import Any, Optional

_process, _count = 0, 1


def set_process(index: int, count: int) -> None:
    """Record this process's index among `count` (process 0 writes)."""
    global _process, _count
    _process, _count = int(index), int(count)


def primary() -> bool:
    """Whether this process writes the run's files (always in a single-process run)."""
    return _process == 0


def processes() -> int:
    return _count


def orbax_options() -> dict[str, Any]:
    """Keyword arguments for orbax's checkpointers: none in a single-process run; with several
    processes, `multiprocessing_options` making this process's calls its own (no barrier with the
    others, which never save)."""
    if _count == 1:
        return {}
    import orbax.checkpoint as ocp

    return {"multiprocessing_options": ocp.options.MultiprocessingOptions(primary_host=_process,
                                                                          active_processes={_process})}


def barrier(name: str) -> None:
    """Wait until every process gets here (a no-op with one process): the others then read what
    process 0 has written."""
    if _count > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def stop_requested() -> Optional[int]:
    """`lth.runs.interrupt.requested()`, agreed by all processes: a signal received by any of them
    counts for all (every process calls this at the same boundary, so all checkpoint and stop there
    together, and a re-launch resumes them from the same step)."""
    from lth.runs import interrupt

    signum = interrupt.requested()
    if _count == 1:
        return signum
    import numpy as np
    from jax.experimental import multihost_utils

    every = np.asarray(multihost_utils.process_allgather(np.asarray(signum or 0, np.int32)))
    got = [int(s) for s in every.ravel() if s]
    if got and signum is None:
        interrupt._handler(got[0], None)  # as if this process had received it
    return interrupt.requested()
