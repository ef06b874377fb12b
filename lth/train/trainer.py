"""The trainer: jit-compiled, over all replicates at once, many steps per compiled call.

Data lives on the device. One call of `Trainer.run(states, start, n)` runs `n` steps; each step
gathers every replicate's batch from its own per-epoch permutation
(`permutation(fold_in(data_key, epoch))`, recomputed only at epoch boundaries), optionally
augments it on device, normalises it, and applies the masked update. On an accelerator the `n`
steps are one compiled `lax.scan` over a step of all replicates (`jax.vmap`-ed, or for
convolutional models a `lax.map` over replicates, see `replicates_as`), and the Python loop
(`train_level`) runs once per evaluation interval. For convolutional models on a CPU, where XLA runs
convolutions inside loop bodies ~20x slower (jax-ml/jax#12868) and vmapped convolutions as slow
grouped ones, the same single-replicate step is compiled once and called per step and replicate
from Python, and so is evaluation.

Because the data order is a function of (data key, step), a level that rewinds to step k sees
exactly the batches the dense run saw from step k on, and R = 1 is the same code path as R = 8.

An epoch is `n // batch_size` full batches (`drop_last=True`), or `ceil(n / batch_size)` batches
whose last has the `n - (steps_per_epoch - 1) * batch_size` examples left (`drop_last=False`, as
PyTorch's DataLoader): that step is compiled once more for its own batch size and runs on its own.
With `shuffle=False` every epoch's order is the stored order 0 .. n-1 (no permutation).
Models with random layers (BERT's dropout) declare their PRNG streams (`model.rng_streams`); each
step gets keys for them from (augmentation key, step), so they too are a function of the step. A
dataset with an objective (`Dataset.objective`, masked-language modelling: `lth.data.mlm`) has
each batch corrupted with a key of (augmentation key, step) and is scored by the objective, with
the model's `objective.method`, instead of classified.

This module holds the `Trainer` itself (construction, the data order, the compiled calls of many
steps); its parts live beside it: `lth.train.steps` (one masked step), `lth.train.evaluation`
(evaluation on the padded val/test splits), `lth.train.per_device` (one call per device when
members are split over devices), `lth.train.streamed` and `lth.train.fed` (batches gathered on the
host instead: a training set streamed from disk, and data parallel over several processes, each
feeding its own slice of every batch) and `lth.train.drivers` (`train_level`, the loop over compiled
calls, evaluations, checkpoints and divergence). Their public names are importable from here too.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from lth.data.stream import StreamedRows
from lth.sparsity.dynamic import DynamicSparse
from lth.sparsity.gradual import GradualPruning
from lth.train.drivers import (  # noqa: F401  (re-exported: `from lth.train.trainer import train_level`)
    LevelHistory, LevelInProgress, chunk_boundaries, replicate_keys, stacked_density, train_level)
from lth.train.evaluation import EVAL_OBJECTIVE_SEED, EvalSet, Evaluation, _pad_split  # noqa: F401
from lth.train import fed
from lth.train.per_device import PerDevice
from lth.train.steps import _OBJECTIVE_SALT, _RNG_SALT, Steps, cross_entropy  # noqa: F401
from lth.train.train_state import TrainState, learning_rate  # noqa: F401

PyTree = Any
PERMS_BYTES = 256 << 20  # precomputed permutations of one call larger than this are computed in the loop


class Trainer(Steps, Evaluation, PerDevice):
    """Compiled training and evaluation of R stacked replicates of one model on one dataset.

    Args:
      model: a Flax module, `model.apply(variables, x, train=...)`.
      dataset: an `lth.data.Dataset` (raw arrays; normalised on device per batch).
      tx: the optax optimizer (`lth.train.optim.make_optimizer`).
      lr_fn: the schedule, a function of the state's step.
      batch_size, eval_batch_size: examples per step / per evaluation batch.
      augment: a function `(key, raw_batch) -> raw_batch` applied to training batches, or None.
      masked: False gives the dense baseline (no mask operations) for benchmarks.
      scan: run the steps of one call in a compiled `lax.scan` (default on accelerators) or in a
        Python loop of compiled single-replicate steps (default for convolutional models on a
        CPU, see below).
      perms: how a scanned call finds each step's epoch permutation. `"precomputed"` (default on
        accelerators): the permutations of every epoch the call touches are computed before the
        loop, so the loop body has no conditional (XLA:GPU runs a conditional by copying its
        predicate to the host and waiting, every step). `"in_loop"` (default on a CPU, where a
        conditional is cheap and a wasted permutation is not): recomputed inside the loop at epoch
        boundaries, also used when a call's permutations would take more than `PERMS_BYTES`.
        Both give identical results.
      unroll: steps per iteration of the compiled loop (`lax.scan(unroll=...)`); more steps per
        iteration means fewer loop-condition round trips on a GPU. Results are identical.
      replicates_as: how one compiled step covers the R replicates. `"vmap"` (default for dense
        models): one batched program, R matrix products in one. `"loop"` (default for
        convolutional models on accelerators): `lax.map`, one replicate after another inside the
        compiled step, because a vmapped convolution with per-replicate kernels becomes a grouped
        convolution, which cuDNN runs more slowly per image than R plain ones (measured on an
        H200: ResNet-20, R = 8 vmapped 40.4k images/s against 51.8k for one replicate). Results
        agree up to float rounding (different convolution algorithms).
      shuffle: permute the training examples every epoch (True) or keep their stored order.
      drop_last: drop the last partial batch of an epoch (True) or train on it (False).
      mask_update: an `lth.sparsity.gradual.GradualPruning`, or None (the mask is fixed: the default, and
        then the step is exactly what it was without this option). With one, every step first
        asks `mask_update.is_update(step)` of the loop's step (not of the per-replicate
        `state.step`, which would make the predicate batched under `vmap` and turn the
        conditional into a select running the update every step) and, in a `jax.lax.cond` inside
        the compiled step, recomputes the mask (`mask_update.update_mask`) and zeroes the newly
        pruned weights before the gradient update; so it runs in the scanned call and in the
        Python loop of compiled steps alike, under `vmap` or `lax.map` over replicates, with no
        host round trip. The per-step metrics then also carry `"density"`: at an update step the
        alive fraction of the new mask over the schedule's tensors, NaN at the other steps (a
        reduction over every prunable weight each step would cost ~10% of a LeNet-300-100 step
        on a CPU). (On XLA:GPU a conditional copies its predicate to the host every step, see
        `perms`; the in-loop update's cost there is not measured yet.) An
        `lth.sparsity.dynamic.DynamicSparse` (dynamic sparse training) is asked the same way, after
        the dense gradient is computed, and moves the mask from (params, gradient, step key) before
        the update (`lth.train.steps`); with its `static` method the step is the plain masked one.
    """

    def __init__(self, model, dataset, tx, lr_fn, *, batch_size: int, eval_batch_size: int = 1000,
                 augment: Optional[Callable] = None, masked: bool = True, scan: Optional[bool] = None,
                 perms: Optional[str] = None, unroll: int = 1, replicates_as: Optional[str] = None,
                 mask_update: Optional[GradualPruning | DynamicSparse] = None, shuffle: bool = True, drop_last: bool = True):
        self.model, self.dataset, self.tx, self.lr_fn = model, dataset, tx, lr_fn
        self.objective = getattr(dataset, "objective", None)
        self.rng_streams = tuple(getattr(model, "rng_streams", ()))
        self.input_dtype = jnp.int32 if getattr(dataset, "tokens", False) else jnp.float32
        if mask_update is not None and not masked:
            raise ValueError("mask_update needs masked=True (the dense baseline has no mask to update)")
        self.mask_update = mask_update
        # Straight-through pruning (`lth.sparsity.ste.SteMagnitude`, set by `lth.lottery.levels` for
        # pruning.method=magnitude_ste), or None: the params are the dense w, the mask m(w).
        self.ste = None
        self.batch_sharding = None  # set by lth.train.sharding.placement for devices.shard=batch
        self.member_mesh = None  # set by lth.train.sharding.placement for devices.shard=members
        self.batch_size = batch_size
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.steps_per_epoch = dataset.num_train // batch_size if drop_last else -(-dataset.num_train // batch_size)
        # Examples in the last batch of an epoch (batch_size unless drop_last=False leaves fewer).
        self.last_batch = dataset.num_train - (self.steps_per_epoch - 1) * batch_size
        if self.steps_per_epoch < 1:
            from lth.config.schema import ConfigError

            raise ConfigError(
                f"train.batch_size={batch_size} is larger than the training set ({dataset.num_train} examples)"
            )
        # dataset.stream=true: the training set stays on disk and batches are read per step (lth.train.streamed)
        self.streamed = isinstance(dataset.x_train, StreamedRows)
        self.eval_sets = {
            "val": _pad_split(dataset.x_val, dataset.y_val, eval_batch_size) if len(dataset.x_val) else None,
            "test": _pad_split(dataset.x_test, dataset.y_test, eval_batch_size),
        }
        self.augment = augment
        self.masked = masked
        # XLA:CPU runs convolutions inside loop bodies (lax.scan) about 20x slower than outside
        # (jax-ml/jax#12868), so for convolutional models on a CPU the steps of a call are a Python
        # loop of compiled steps; otherwise one compiled lax.scan runs them all. Both execute the
        # same step function.
        shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *dataset.input_shape), self.input_dtype),
                                                   train=False))
        has_conv = any(len(x.shape) > 2 for x in jax.tree.leaves(shapes))
        if scan is None:
            scan = not (jax.default_backend() == "cpu" and has_conv)
        self.scan = scan
        if replicates_as is None:
            replicates_as = "loop" if has_conv and jax.default_backend() != "cpu" else "vmap"
        if replicates_as not in ("vmap", "loop"):
            raise ValueError(f"replicates_as={replicates_as!r}: must be 'vmap' or 'loop'")
        self.replicates_as = replicates_as
        if perms is None:
            perms = "in_loop" if jax.default_backend() == "cpu" else "precomputed"
        if perms not in ("precomputed", "in_loop"):
            raise ValueError(f"perms={perms!r}: must be 'precomputed' or 'in_loop'")
        if unroll < 1:
            raise ValueError(f"unroll={unroll}: must be >= 1")
        self.perms, self.unroll = perms, int(unroll)
        self._run = jax.jit(self._run_impl, static_argnames=("n", "precompute", "size"))
        self._step1 = jax.jit(self._replica_step_in_epoch, static_argnames=("size",))
        self._perms = jax.jit(self._epoch_perms)
        self._eval = jax.jit(self._eval_impl, static_argnames=("batch",))
        self._eval1 = jax.jit(self._eval_batch, static_argnames=("batch",))

    @property
    def x_train(self):
        """The training set on the default device, put there on first use (batches fed from the
        host, `lth.train.fed`, never need it), or a streamed set's `StreamedRows`."""
        if self.streamed:
            return self.dataset.x_train
        if "_x_train" not in self.__dict__:
            with jax.ensure_compile_time_eval():  # a concrete array even when first asked inside a trace
                self._x_train = jnp.asarray(self.dataset.x_train)
        return self._x_train

    @property
    def y_train(self):
        """The training labels as `x_train` holds the examples (host labels when streamed)."""
        if "_y_train" not in self.__dict__:
            with jax.ensure_compile_time_eval():
                self._y_train = (np.asarray if self.streamed else jnp.asarray)(self.dataset.y_train)
        return self._y_train

    # -- state ---------------------------------------------------------------------------------
    def init_variables(self, keys: jax.Array) -> PyTree:
        """Initial variables ({'params', maybe 'batch_stats'}) for each key in `keys` (R, 2)."""
        # One compiled init reused per replicate and per call (reinit controls draw fresh weights
        # at every level): compiling a vmapped init costs several times more on CPU (threefry), and
        # the stacked result is the same.
        init = self.__dict__.get("_init")
        if init is None:
            dummy = jnp.zeros((1, *self.dataset.input_shape), self.input_dtype)
            init = self._init = jax.jit(lambda k: self.model.init(k, dummy, train=False))
        return jax.tree.map(lambda *xs: jnp.stack(xs), *[init(k) for k in keys])

    def create_states(self, variables: PyTree, masks: PyTree) -> TrainState:
        """Stacked train states at step 0 from stacked variables and masks."""

        def one(v, m):
            return TrainState.create_masked(
                apply_fn=self.model.apply, params=v["params"], tx=self.tx, lr_fn=self.lr_fn,
                mask=m, batch_stats=v.get("batch_stats", {}),
            )

        return jax.jit(jax.vmap(one))(dict(variables), masks)

    # -- many steps, one compiled call ---------------------------------------------------------
    def _epoch_perms(self, data_keys, epoch):
        n = self.dataset.num_train
        if not self.shuffle:  # the stored order, every epoch
            return jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (data_keys.shape[0], n))
        return jax.vmap(lambda k: jax.random.permutation(jax.random.fold_in(k, epoch), n))(data_keys)

    def _batch_indices(self, perms, first_epoch, step, size: Optional[int] = None):
        """Every replicate's batch indices (R, size) at `step`, from the permutations `perms`
        (E, R, N) of epochs first_epoch .. first_epoch + E - 1 (`size`: batch_size, or the last
        batch's size at the last step of an epoch with drop_last=False)."""
        bs, spe = self.batch_size, self.steps_per_epoch
        R = perms.shape[1]
        return jax.lax.dynamic_slice(perms, (step // spe - first_epoch, 0, (step % spe) * bs), (1, R, size or bs))[0]

    def batch_size_at(self, step: int) -> int:
        """Examples in the batch of `step`: batch_size, except at the last step of an epoch when
        drop_last=False leaves fewer."""
        return self.last_batch if step % self.steps_per_epoch == self.steps_per_epoch - 1 else self.batch_size

    def segments(self, start: int, n: int) -> list[tuple[int, int, int]]:
        """Steps start .. start+n-1 as (first step, number of steps, batch size) runs of one batch size."""
        if self.last_batch == self.batch_size:
            return [(start, n, self.batch_size)] if n > 0 else []
        out = []
        for step in range(start, start + n):
            size = self.batch_size_at(step)
            if out and out[-1][2] == size and out[-1][0] + out[-1][1] == step:
                out[-1] = (out[-1][0], out[-1][1] + 1, size)
            else:
                out.append((step, 1, size))
        return out

    def _run_impl(self, states, data_keys, aug_keys, x_all, y_all, start, n: int, precompute: bool, size: Optional[int] = None):
        spe = self.steps_per_epoch
        first = start // spe
        steps = start + jnp.arange(n, dtype=jnp.int32)
        if precompute:
            # Every epoch n steps from any start can touch, computed once before the loop (at most
            # one permutation per replicate more than needed).
            epochs = first + jnp.arange((n - 1) // spe + 2, dtype=jnp.int32)
            perms = jax.vmap(lambda e: self._epoch_perms(data_keys, e))(epochs)  # (E, R, N)

            def body(states, step):
                return self._step_impl(states, self._batch_indices(perms, first, step, size), aug_keys, x_all, y_all, step)

            return jax.lax.scan(body, states, steps, unroll=self.unroll)

        def body_in_loop(carry, step):
            states, perms = carry
            perms = jax.lax.cond(step % spe == 0, lambda: self._epoch_perms(data_keys, step // spe), lambda: perms)
            idx = self._batch_indices(perms[None], step // spe, step, size)
            states, metrics = self._step_impl(states, idx, aug_keys, x_all, y_all, step)
            return (states, perms), metrics

        (states, _), metrics = jax.lax.scan(body_in_loop, (states, self._epoch_perms(data_keys, first)), steps,
                                            unroll=self.unroll)
        return states, metrics  # metrics: each (n, R)

    def run(self, states: TrainState, keys: dict, start: int, n: int):
        """Run steps start .. start+n-1 for all replicates. Returns (states, per-step metrics as
        numpy arrays of shape (n, R))."""
        if fed.wanted(self):  # streamed, or data parallel over processes: batches fed from the host
            return fed.run(self, states, keys, start, n)
        if self.scan:
            R, N = keys["data"].shape[0], self.dataset.num_train
            parts = []
            for first, m, size in self.segments(start, n):  # one segment unless drop_last=False
                precompute = self.perms == "precomputed" and ((m - 1) // self.steps_per_epoch + 2) * R * N * 4 <= PERMS_BYTES
                size = None if size == self.batch_size else size
                start_ = jnp.asarray(first, jnp.int32)
                if self.member_mesh is None:
                    states, metrics = self._run(states, keys["data"], keys["aug"], self.x_train, self.y_train, start_,
                                                n=m, precompute=precompute, size=size)
                else:  # members split over devices (lth.train.sharding)
                    outs = self._per_device(self._run, (states, keys["data"], keys["aug"]),
                                            (self.x_train, self.y_train, start_), n=m, precompute=precompute, size=size)
                    states = self._assemble([o[0] for o in outs])
                    metrics = self._assemble([o[1] for o in outs], axis=1) if jax.process_count() > 1 else \
                        {k: np.concatenate([np.asarray(o[1][k]) for o in outs], axis=1) for k in outs[0][1]}
                parts.append(jax.device_get(metrics))
            if len(parts) == 1:
                return states, parts[0]
            return states, {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        # CPU: a Python loop over steps and replicates of one compiled single-replicate step.
        # (XLA:CPU turns vmapped convolutions into grouped ones, several times slower than one
        # replicate after another.) The permutation is recomputed once per epoch.
        R = keys["data"].shape[0]
        reps = [jax.tree.map(lambda x: x[r], states) for r in range(R)]
        aug = [keys["aug"][r] for r in range(R)]
        out, epoch, perms = [], None, None
        for step in range(start, start + n):
            if step // self.steps_per_epoch != epoch:
                epoch = step // self.steps_per_epoch
                stacked = self._perms(keys["data"], jnp.asarray(epoch, jnp.int32))
                perms = [stacked[r] for r in range(R)]  # sliced once per epoch, not per step
            s = jnp.asarray(step, jnp.int32)
            row = []
            size = self.batch_size_at(step)
            size = None if size == self.batch_size else size
            for r in range(R):
                reps[r], m = self._step1(reps[r], perms[r], aug[r], self.x_train, self.y_train, s, size)
                row.append(m)
            out.append(row)
        out = jax.device_get(out)
        metrics = {k: np.array([[m[k] for m in row] for row in out]) for k in out[0][0]}
        return jax.tree.map(lambda *xs: jnp.stack(xs), *reps), metrics


__all__ = ["Trainer", "TrainState", "train_level", "replicate_keys", "LevelHistory", "chunk_boundaries", "learning_rate"]
