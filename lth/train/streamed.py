"""Training steps on batches gathered on the host (`dataset.stream=true`, `lth.data.stream`; and
data parallel over several processes, `lth.train.fed`).

The trainer's data order is unchanged: step t of replicate r trains on the examples
`perm_r,e[(t mod S) * B : ... + B]` of epoch e = t // S's permutation, computed by the trainer's
own `_perms` (so the same function of (data key, replicate, step) as in memory). Only where the
bytes come from changes: a prefetch thread computes each step's indices (R, B) on the host, hands
them to a feeding function that reads those examples from the host copy of the training set (a
`StreamedRows` reads them from disk, sorted, batch order kept) and puts them on the devices that
train on them, a few steps ahead of the training loop; the loop calls the trainer's own step
(`_replica_step`) with `x_all` = the batch and no gather, so the compiled computation after the
gather is the in-memory one and results are identical.

This module holds the parts every host-fed path shares (`Prefetcher`, the steps on a given batch
`step_functions`) and the one-device path (`run_one_device`); `lth.train.fed` feeds members split over
devices and batches split over the devices of several processes.

The steps are a Python loop of compiled steps for every model: the step of all replicates
(`over_replicates`, vmapped or `lax.map`, as in the scanned call) where the trainer scans, and
the single-replicate step per replicate where it loops (convolutional models on a CPU). Since
the loader's position is the step, resuming a level from an in-level checkpoint needs nothing
more than the checkpoint's step.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

PREFETCH = 4  # batches read ahead of the training loop


def host_data(trainer):
    """The training set where the host reads it: the `StreamedRows` of a streamed set, else the
    dataset's own host arrays (never the trainer's device copy)."""
    return trainer.dataset.x_train, np.asarray(trainer.dataset.y_train)


def one_device(trainer) -> Callable:
    """The feeding function of one device: the whole (R, B) batch, put on the default device."""
    x_src, y_src = host_data(trainer)
    return lambda idx, step: (jax.device_put(x_src[idx]), jax.device_put(y_src[idx]))


class Prefetcher:
    """Iterates (step, feed(idx, step)) for steps start .. start+n-1, idx (R, B) every replicate's
    batch indices at that step, computed and fed by a background thread at most `depth` steps
    ahead. `feed` reads the examples and puts them on the devices (default: `one_device`)."""

    def __init__(self, trainer, data_keys, start: int, n: int, feed: Optional[Callable] = None, depth: int = PREFETCH):
        self.trainer, self.data_keys, self.start, self.n = trainer, data_keys, start, n
        self.feed = feed or one_device(trainer)
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._fill, daemon=True, name="lth-stream-prefetch")
        self.thread.start()

    def indices(self, perms: np.ndarray, step: int) -> np.ndarray:
        """Every replicate's batch indices (R, B) at `step` from its epoch permutation (R, N)."""
        t = self.trainer
        lo = (step % t.steps_per_epoch) * t.batch_size
        return perms[:, lo:lo + t.batch_size_at(step)]

    def _fill(self):
        t, epoch, perms = self.trainer, None, None
        try:
            for step in range(self.start, self.start + self.n):
                if self.stop.is_set():
                    return
                if step // t.steps_per_epoch != epoch:
                    epoch = step // t.steps_per_epoch
                    perms = np.asarray(t._perms(self.data_keys, jnp.asarray(epoch, jnp.int32)))
                self._put((step, self.feed(self.indices(perms, step), step)))
        except BaseException as e:  # handed to the training loop, which raises it
            self._put(e)

    def _put(self, item):
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self):
        try:
            for _ in range(self.n):
                item = self.queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.stop.set()


def step_functions(trainer):
    """The trainer's step of all replicates `(states, aug_keys, x, y, step)` and single-replicate
    step `(state, aug_key, x, y, step)` on a given batch (the batch itself is `x_all`: no gather),
    not compiled."""

    def one(state, aug_key, x, y, step):
        return trainer._replica_step(state, None, aug_key, x, y, step)

    def all_(states, aug_keys, x, y, step):
        return trainer.over_replicates(lambda st, k, xr, yr: one(st, k, xr, yr, step), states, aug_keys, x, y)

    return all_, one


def compiled(trainer):
    """`step_functions`, compiled once."""
    fns = trainer.__dict__.get("_stream_fns")
    if fns is None:
        fns = trainer._stream_fns = tuple(jax.jit(f) for f in step_functions(trainer))
    return fns


def stack_metrics(rows: list) -> dict:
    """Per-step metrics (dicts of (R,) arrays) as numpy arrays (n, R)."""
    rows = jax.device_get(rows)
    return {k: np.stack([np.asarray(m[k]) for m in rows]) for k in rows[0]}


def run_one_device(trainer, states, keys: dict, start: int, n: int):
    """`Trainer.run` for a streamed training set on one device: steps start .. start+n-1 of all
    replicates. Returns (states, per-step metrics as numpy arrays of shape (n, R))."""
    step_all, step_one = compiled(trainer)
    R = keys["data"].shape[0]
    rows = []
    if trainer.scan:
        for step, (x, y) in Prefetcher(trainer, keys["data"], start, n):
            states, m = step_all(states, keys["aug"], x, y, jnp.asarray(step, jnp.int32))
            rows.append(m)
        return states, stack_metrics(rows)
    reps = [jax.tree.map(lambda a: a[r], states) for r in range(R)]
    aug = [keys["aug"][r] for r in range(R)]
    for step, (x, y) in Prefetcher(trainer, keys["data"], start, n):
        s = jnp.asarray(step, jnp.int32)
        row = []
        for r in range(R):
            reps[r], m = step_one(reps[r], aug[r], x[r], y[r], s)
            row.append(m)
        rows.append(row)
    rows = jax.device_get(rows)
    metrics = {k: np.array([[m[k] for m in row] for row in rows]) for k in rows[0][0]}
    return jax.tree.map(lambda *xs: jnp.stack(xs), *reps), metrics
