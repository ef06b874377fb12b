"""`python -m lth.launch --processes N -- SCRIPT [ARGS...]`: one distributed job of N local processes.

Starts N copies of `python SCRIPT ARGS...` on this machine that form one `jax.distributed` job
(`lth.integrations.distributed`: `LTH_DISTRIBUTED=1` and the coordinator, process count and id in
`LTH_COORDINATOR`, `LTH_NUM_PROCESSES`, `LTH_PROCESS_ID`; on the CPU the processes talk over gloo).
It rehearses on a laptop, and in tests, what a multi-node job does on a cluster (there SLURM starts
the processes: `hydra/launcher=slurm_multinode`, `slurm_multinode_gpus`):

    python -m lth.launch --processes 2 -- experiments/lottery.py devices.shard=members

Process 0's output is shown; the others' standard output is not (it repeats process 0's), their
errors are. When a process fails, the others are stopped (a process waiting for a failed one in a
collective may wait forever; on the CPU gloo fails it as soon as the peer's socket closes):
SIGTERM, then SIGKILL after 5 s; and the launcher exits with the
failed process's status (128 + N for a process killed by signal N, as a shell reports it; a process
killed from outside is named before the peers that then failed in a collective with it). SIGTERM
or SIGINT to the launcher is handed to every process, which checkpoint the level in progress at the
same step (`lth.runs.writer.stop_requested`) and stop; re-running the command resumes. A launcher
killed outright (SIGKILL, the out-of-memory killer) takes its processes with it (Linux's
parent-death signal), so that a re-run does not find the run locked by orphans still training it.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Optional, Sequence

GRACE_S = 30.0  # how long stopped processes may take to checkpoint before they are killed


def free_port() -> int:
    """A TCP port free on this machine now (the coordinator's)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lth.launch", description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, required=True, help="how many processes form the job (>= 1)")
    p.add_argument("--port", type=int, default=0, help="the coordinator's port on 127.0.0.1 (default: a free one)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- SCRIPT [ARGS...]: run by this Python in every process")
    a = p.parse_args(argv)
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if a.processes < 1:
        p.error(f"--processes={a.processes}: must be at least 1")
    if not cmd:
        p.error("no command: python -m lth.launch --processes N -- experiments/lottery.py [overrides]")
    a.command = cmd
    return a


def environments(n: int, port: int, base: Optional[dict] = None) -> list[dict]:
    """Each process's environment: `base` with the job's settings (`lth.integrations.distributed`)."""
    base = dict(os.environ if base is None else base)
    return [{**base, "LTH_DISTRIBUTED": "1", "LTH_COORDINATOR": f"127.0.0.1:{port}", "LTH_NUM_PROCESSES": str(n),
             "LTH_PROCESS_ID": str(i)} for i in range(n)]


def _die_with_parent(parent: int):
    """A `preexec_fn` making the child get SIGKILL when the launcher (`parent`) dies (Linux's
    `prctl(PR_SET_PDEATHSIG)`), or None where there is no such call."""
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    except (OSError, AttributeError):
        return None

    def set_signal():
        prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the launcher died before the signal was set
            os._exit(128 + signal.SIGKILL)

    return set_signal


def status(code: int) -> int:
    """A process's exit status as a shell reports it: 128 + N when signal N killed it."""
    return 128 - code if code < 0 else code


def _consequence(code: int) -> int:
    """How likely a failed process's return code is a consequence of another's failure, for naming
    the cause first (several processes can end between two polls): 0, killed by a signal from
    outside (SIGKILL, SIGTERM, a crash); 1, a status of its own (2: a refused setting); 2, status 1
    (an exception, such as a collective failing because a peer died) or SIGABRT (JAX's coordination
    service ends every process when one of them has gone)."""
    if code == 1 or code == -signal.SIGABRT:
        return 2
    return 0 if code < 0 else 1


def _stop(procs: list[subprocess.Popen], sig: int = signal.SIGTERM, grace: float = GRACE_S) -> None:
    """Send `sig` to every running process, then kill those still running after `grace` seconds."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(sig)
    end = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run(n: int, command: Sequence[str], port: int = 0, poll_s: float = 0.2) -> int:
    """Start the job and wait for it; its exit status (the failed process's, the likeliest cause
    first: `_consequence`), else 0."""
    port = port or free_port()
    procs = []
    orphan_guard = _die_with_parent(os.getpid()) if sys.platform.startswith("linux") else None
    for i, env in enumerate(environments(n, port)):
        out = None if i == 0 else subprocess.DEVNULL
        procs.append(subprocess.Popen([sys.executable, *command], env=env, stdout=out, preexec_fn=orphan_guard))
    received: list[int] = []
    handlers = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            if received:  # handed on: every process checkpoints at the same step and stops
                _stop(procs, signal.SIGTERM)
                break
            codes = [p.poll() for p in procs]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                failed.sort(key=lambda ic: _consequence(ic[1]))
                said = "; ".join(f"process {i} of {n} exited with status {status(c)}" for i, c in failed)
                print(f"lth.launch: {said}; stopping the others", file=sys.stderr)
                _stop(procs, signal.SIGTERM, grace=5.0)
                return status(failed[0][1])
            if all(c == 0 for c in codes):
                return 0
            time.sleep(poll_s)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        for p in procs:
            if p.poll() is None:
                p.kill()
    codes = [status(p.returncode) for p in procs]
    return next((c for c in codes if c), 128 + received[0])


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = parse(sys.argv[1:] if argv is None else argv)
    return run(a.processes, a.command, a.port)


__all__ = ["main", "run", "environments", "free_port", "status"]
