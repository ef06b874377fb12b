"""Training steps on batches read from disk (`dataset.stream=true`, `lth.data.stream`).

The trainer's data order is unchanged: step t of replicate r trains on the examples
`perm_r,e[(t mod S) * B : ... + B]` of epoch e = t // S's permutation, computed by the trainer's
own `_perms` (so the same function of (data key, replicate, step) as in memory). Only where the
bytes come from changes: a prefetch thread computes each step's indices, reads those examples from
the `StreamedRows` on the host (sorted reads, batch order kept) and puts them on the device, a
few steps ahead of the training loop; the loop calls the trainer's own step (`_replica_step`) with
`x_all` = the batch and `idx` = 0 .. B-1, so the compiled computation after the gather is the
in-memory one and results are identical.

The steps are a Python loop of compiled steps for every model: the step of all replicates
(`over_replicates`, vmapped or `lax.map`, as in the scanned call) where the trainer scans, and
the single-replicate step per replicate where it loops (convolutional models on a CPU). Since
the loader's position is the step, resuming a level from an in-level checkpoint needs nothing
more than the checkpoint's step.
"""

from __future__ import annotations

import queue
import threading

import jax
import jax.numpy as jnp
import numpy as np

PREFETCH = 4  # batches read ahead of the training loop


class Prefetcher:
    """Iterates (step, x (R, B, ...), y (R, B)) on the device for steps start .. start+n-1,
    read by a background thread at most `depth` steps ahead."""

    def __init__(self, trainer, data_keys, start: int, n: int, depth: int = PREFETCH):
        self.trainer, self.data_keys, self.start, self.n = trainer, data_keys, start, n
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._fill, daemon=True, name="lth-stream-prefetch")
        self.thread.start()

    def batch(self, perms: np.ndarray, step: int):
        """Every replicate's batch at `step` from its epoch permutation (R, N), read now."""
        t = self.trainer
        lo = (step % t.steps_per_epoch) * t.batch_size
        idx = perms[:, lo:lo + t.batch_size_at(step)]
        return t.x_train[idx], t.y_train[idx]

    def _fill(self):
        t, epoch, perms = self.trainer, None, None
        try:
            for step in range(self.start, self.start + self.n):
                if self.stop.is_set():
                    return
                if step // t.steps_per_epoch != epoch:
                    epoch = step // t.steps_per_epoch
                    perms = np.asarray(t._perms(self.data_keys, jnp.asarray(epoch, jnp.int32)))
                x, y = self.batch(perms, step)
                self._put((step, jax.device_put(x), jax.device_put(y)))
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


def _compiled(trainer):
    """The trainer's step of all replicates and single-replicate step on a given batch, compiled once."""
    fns = trainer.__dict__.get("_stream_fns")
    if fns is None:

        def one(state, aug_key, x, y, step):
            return trainer._replica_step(state, jnp.arange(x.shape[0]), aug_key, x, y, step)

        def all_(states, aug_keys, x, y, step):
            return trainer.over_replicates(lambda st, k, xr, yr: one(st, k, xr, yr, step), states, aug_keys, x, y)

        fns = trainer._stream_fns = (jax.jit(all_), jax.jit(one))
    return fns


def run_streamed(trainer, states, keys: dict, start: int, n: int):
    """`Trainer.run` for a streamed training set: steps start .. start+n-1 of all replicates.
    Returns (states, per-step metrics as numpy arrays of shape (n, R))."""
    if trainer.member_mesh is not None or trainer.batch_sharding is not None:
        from lth.config.schema import ConfigError

        raise ConfigError("dataset.stream=true runs on one device for now: set devices.count=1 (members or a batch "
                          "split over several devices read in-memory data only)")
    step_all, step_one = _compiled(trainer)
    R = keys["data"].shape[0]
    rows = []
    if trainer.scan:
        for step, x, y in Prefetcher(trainer, keys["data"], start, n):
            states, m = step_all(states, keys["aug"], x, y, jnp.asarray(step, jnp.int32))
            rows.append(m)
        rows = jax.device_get(rows)
        return states, {k: np.stack([m[k] for m in rows]) for k in rows[0]}
    reps = [jax.tree.map(lambda a: a[r], states) for r in range(R)]
    aug = [keys["aug"][r] for r in range(R)]
    for step, x, y in Prefetcher(trainer, keys["data"], start, n):
        s = jnp.asarray(step, jnp.int32)
        row = []
        for r in range(R):
            reps[r], m = step_one(reps[r], aug[r], x[r], y[r], s)
            row.append(m)
        rows.append(row)
    rows = jax.device_get(rows)
    metrics = {k: np.array([[m[k] for m in row] for row in rows]) for k in rows[0][0]}
    return jax.tree.map(lambda *xs: jnp.stack(xs), *reps), metrics
