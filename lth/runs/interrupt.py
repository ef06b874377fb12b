"""SIGTERM, SIGINT (and a scheduler's SIGUSR2): save the level in progress, then stop cleanly.

A cluster pre-empts a job with SIGTERM (SLURM: then SIGKILL after its grace time); Ctrl-C sends
SIGINT; submitit asks a job to checkpoint with SIGUSR2. Inside `handling()` these signals only set
a flag. The training loop looks at it at every boundary (`requested()`): it then saves a
checkpoint of the level (`lth.runs.progress`) whatever `checkpoint.min_seconds` says and raises
`Interrupted`, which the entry points turn into one line naming the run and the step and exit
status 128 + signal number. A second Ctrl-C while waiting for the boundary stops at once (Python's
KeyboardInterrupt).

Under a scheduler that installed its own handlers first (submitit: SIGUSR2 checkpoints and
requeues the job, SIGTERM is ignored because SLURM sends it to every process of a job), that
handler is called once the checkpoint is written: SIGUSR2 then requeues the job, which resumes from
the checkpoint, and a SIGTERM the scheduler ignores does not stop training either (the checkpoint
is simply fresher when the end comes).
"""

from __future__ import annotations

import contextlib
import signal
from typing import Optional

SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR2")


class Interrupted(Exception):
    """Training stopped by a signal after saving its checkpoint."""

    def __init__(self, signum: int, where: str):
        self.signum, self.where = signum, where
        super().__init__(f"stopped by {signal.Signals(signum).name} {where}; re-run the same command to resume")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_received: Optional[int] = None
_previous: dict[int, object] = {}


def requested() -> Optional[int]:
    """The signal received since `handling()` began, or None."""
    return _received


def _handler(signum, frame):
    global _received
    if _received == signal.SIGINT and signum == signal.SIGINT:  # a second Ctrl-C: stop now
        raise KeyboardInterrupt
    _received = signum


@contextlib.contextmanager
def handling():
    """Within: the signals of `SIGNALS` are noted rather than acted on (SIGUSR2 only where a
    handler, a scheduler's, was installed before). Outside the main thread, nothing changes."""
    global _received
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received = None
    installed = {}
    for name in SIGNALS:
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        before = signal.getsignal(sig)
        if name == "SIGUSR2" and not callable(before):
            continue
        installed[sig] = before
        signal.signal(sig, _handler)
    _previous.clear()
    _previous.update(installed)
    try:
        yield
    finally:
        for sig, before in installed.items():
            signal.signal(sig, before)
        _previous.clear()
        _received = None


def stop(where: str) -> None:
    """Called once the checkpoint of a requested stop is written: hand the signal to the handler
    that was there before, if a Python one (a scheduler's: it may requeue and exit; if it returns,
    training goes on), else raise `Interrupted`."""
    global _received
    signum = _received
    if signum is None:
        return
    before = _previous.get(signum)
    if callable(before) and before is not signal.default_int_handler:
        _received = None
        before(signum, None)
        return
    raise Interrupted(signum, where)
