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
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from lth.sparsity import masks as M
from lth.sparsity.gradual import GradualPruning
from lth.train.train_state import TrainState, learning_rate

PyTree = Any
PERMS_BYTES = 256 << 20  # precomputed permutations of one call larger than this are computed in the loop
_OBJECTIVE_SALT, _RNG_SALT = 0x6D6C6D, 0x64726F70  # fold_in constants: the step key's uses besides augmentation
EVAL_OBJECTIVE_SEED = 0  # evaluation batch i is corrupted with fold_in(PRNGKey(EVAL_OBJECTIVE_SEED), i)


def replicate_keys(seed: int, replicates: int) -> dict[str, jax.Array]:
    """Per-replicate keys, each (R, 2): `init` (weights), `data` (order), `aug` (augmentation).
    Replicate r's keys depend only on (seed, r), so a replicate trains the same whatever R is."""
    base = jax.random.PRNGKey(seed)
    keys = jnp.stack([jax.random.split(jax.random.fold_in(base, r), 3) for r in range(replicates)])
    return {"init": keys[:, 0], "data": keys[:, 1], "aug": keys[:, 2]}


def cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@dataclasses.dataclass
class EvalSet:
    """A split padded to whole evaluation batches, on device, with 0/1 weights for the padding."""

    x: jax.Array
    y: jax.Array
    w: jax.Array
    n: int
    batch: int

    @property
    def n_batches(self) -> int:
        return self.x.shape[0] // self.batch


def _pad_split(x: np.ndarray, y: np.ndarray, batch: int) -> EvalSet:
    n = len(x)
    batch = max(1, min(batch, n))
    padded = -(-n // batch) * batch
    pad = padded - n
    xp = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    yp = np.concatenate([y, np.zeros((pad,), y.dtype)]) if pad else y
    w = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    return EvalSet(jnp.asarray(xp), jnp.asarray(yp), jnp.asarray(w), n, batch)


class Trainer:
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
        `perms`; the in-loop update's cost there is not measured yet.)
    """

    def __init__(self, model, dataset, tx, lr_fn, *, batch_size: int, eval_batch_size: int = 1000,
                 augment: Optional[Callable] = None, masked: bool = True, scan: Optional[bool] = None,
                 perms: Optional[str] = None, unroll: int = 1, replicates_as: Optional[str] = None,
                 mask_update: Optional[GradualPruning] = None, shuffle: bool = True, drop_last: bool = True):
        self.model, self.dataset, self.tx, self.lr_fn = model, dataset, tx, lr_fn
        self.objective = getattr(dataset, "objective", None)
        self.rng_streams = tuple(getattr(model, "rng_streams", ()))
        self.input_dtype = jnp.int32 if getattr(dataset, "tokens", False) else jnp.float32
        if mask_update is not None and not masked:
            raise ValueError("mask_update needs masked=True (the dense baseline has no mask to update)")
        self.mask_update = mask_update
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
        self.x_train = jnp.asarray(dataset.x_train)
        self.y_train = jnp.asarray(dataset.y_train)
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

    # -- one step ------------------------------------------------------------------------------
    def _loss(self, params, batch_stats, x, y, train: bool, rng=None):
        variables = {"params": params}
        kw = {}
        if rng is not None and self.rng_streams:
            kw["rngs"] = {name: jax.random.fold_in(rng, i) for i, name in enumerate(self.rng_streams)}
        if self.objective is not None:  # no BatchNorm in the models an objective is for (BERT)
            logits = self.model.apply(variables, x, train=train, method=self.objective.method, **kw)
            return self.objective.loss(logits, y)[0], (logits, batch_stats)
        if batch_stats:
            variables["batch_stats"] = batch_stats
            if train:
                logits, updates = self.model.apply(variables, x, train=True, mutable=["batch_stats"], **kw)
                return cross_entropy(logits, y), (logits, updates["batch_stats"])
        logits = self.model.apply(variables, x, train=train, **kw)
        return cross_entropy(logits, y), (logits, batch_stats)

    def _train_step(self, state: TrainState, x, y, rng=None):
        grad_fn = jax.value_and_grad(self._loss, has_aux=True)
        (loss, (logits, batch_stats)), grads = grad_fn(state.params, state.batch_stats, x, y, True, rng)
        lr = state.lr_fn(state.step)
        state = state.apply_masked_gradients(grads, masked=self.masked, batch_stats=batch_stats)
        if self.objective is None:
            acc = jnp.mean(jnp.argmax(logits, -1) == y)
        else:  # the fraction of the predicted (labelled) tokens that are right
            _, correct, weight = self.objective.token_losses(logits, y)
            acc = correct.sum() / jnp.maximum(weight.sum(), 1.0)
        return state, {"loss": loss, "accuracy": acc, "lr": lr}

    # -- many steps, one compiled call ---------------------------------------------------------
    def _epoch_perms(self, data_keys, epoch):
        n = self.x_train.shape[0]
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

    def _replica_step(self, state, idx, aug_key, x_all, y_all, step):
        """One step of one replicate on the examples `idx` of its epoch permutation, augmented
        with `fold_in(aug_key, step)`, normalised, one masked update."""
        x, y = x_all[idx], y_all[idx]
        if self.batch_sharding is not None:  # data parallel over devices (lth.train.sharding, devices.shard=batch)
            x, y = (jax.lax.with_sharding_constraint(a, self.batch_sharding) for a in (x, y))
        if self.augment is not None:
            x = self.augment(jax.random.fold_in(aug_key, step), x)
        if self.objective is not None:
            x, y = self.objective.corrupt(jax.random.fold_in(jax.random.fold_in(aug_key, step), _OBJECTIVE_SALT), x)
        rng = jax.random.fold_in(jax.random.fold_in(aug_key, step), _RNG_SALT) if self.rng_streams else None
        gp = self.mask_update
        if gp is None:
            return self._train_step(state, self.dataset.normalize(x), y, rng)

        def prune(s):  # the new mask (and its density) computed only when the branch is taken
            mask = gp.update_mask(s.params, s.mask, step)
            return s.replace(mask=mask, params=M.apply_mask(s.params, mask)), gp.density(mask)

        # `step` is the loop's (the same for every replicate): under vmap the predicate stays
        # unbatched and this stays a conditional.
        state, density = jax.lax.cond(gp.is_update(step), prune, lambda s: (s, jnp.float32(jnp.nan)), state)
        state, metrics = self._train_step(state, self.dataset.normalize(x), y, rng)
        return state, {**metrics, "density": density}

    def _replica_step_in_epoch(self, state, perm, aug_key, x_all, y_all, step, size: Optional[int] = None):
        """`_replica_step` on the batch of `step` in one replicate's epoch permutation `perm` (N,)."""
        idx = self._batch_indices(perm[None, None], step // self.steps_per_epoch, step, size)[0]
        return self._replica_step(state, idx, aug_key, x_all, y_all, step)

    def _step_impl(self, states, idx, aug_keys, x_all, y_all, step):
        """One step of every replicate (stacked states, idx (R, batch), aug_keys (R, 2))."""
        return self.over_replicates(lambda st, i, k: self._replica_step(st, i, k, x_all, y_all, step), states, idx, aug_keys)

    def over_replicates(self, fn: Callable, *stacked):
        """`fn` applied to every replicate's slice of the `stacked` arguments (leading axis R),
        results stacked: `jax.vmap(fn)` or `lax.map`, as `replicates_as` says."""
        if self.replicates_as == "vmap":
            return jax.vmap(fn)(*stacked)
        return jax.lax.map(lambda args: fn(*args), stacked)

    def train_step_all(self, states: TrainState, x, y):
        """One masked update of every replicate on its own batch: x (R, batch, ...), y (R, batch)."""
        return self.over_replicates(self._train_step, states, x, y)

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
        if self.scan:
            R, N = keys["data"].shape[0], self.x_train.shape[0]
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
                    metrics = {k: np.concatenate([np.asarray(o[1][k]) for o in outs], axis=1) for k in outs[0][1]}
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

    def _per_device(self, fn: Callable, sharded: tuple, replicated: tuple, **static):
        """`fn(*sharded_parts, *replicated, **static)` on every device of `member_mesh` with its own
        members, each a plain one-device call (dispatched asynchronously, so the devices run side
        by side); returns the per-device outputs. A member thus computes exactly what a one-device
        run of that many members computes. (XLA's SPMD partitioning of the same step, by `jit` of
        sharded arrays or `shard_map`, compiles another program for it that rounds differently,
        and training amplifies rounding: 1% of test accuracy after 200 MNIST-1D steps.)"""
        sharding = NamedSharding(self.member_mesh, P("members"))
        devs = list(self.member_mesh.devices.flat)
        here = self.__dict__.setdefault("_replicated_on", {})
        outs = []
        for dev in devs:
            part = [jax.tree.map(lambda x: _shard_on(x, dev, sharding), t) for t in sharded]
            rep = []
            for r in replicated:
                if isinstance(r, jax.Array) and r.size > 1024:  # the data: one copy per device, kept
                    key = (id(r), dev)
                    if key not in here:
                        here[key] = (r, jax.device_put(r, dev))
                    r = here[key][1]
                else:
                    r = jax.device_put(r, dev)
                rep.append(r)
            outs.append(fn(*part, *rep, **static))
        return outs

    def _assemble(self, parts: list, axis: int = 0):
        """One member-sharded global array per leaf from per-device parts (split on `axis`)."""
        spec = P("members") if axis == 0 else P(*([None] * axis), "members")
        sharding = NamedSharding(self.member_mesh, spec)

        def one(*xs):
            shape = list(xs[0].shape)
            shape[axis] *= len(xs)
            return jax.make_array_from_single_device_arrays(tuple(shape), sharding, list(xs))

        return jax.tree.map(one, *parts)

    # -- evaluation ----------------------------------------------------------------------------
    def _eval_batch(self, params, batch_stats, x, y, w, i, batch: int):
        """Summed loss and number correct of one replicate on evaluation batch `i` (padding has
        weight 0)."""
        xb = self.dataset.normalize(jax.lax.dynamic_slice_in_dim(x, i * batch, batch))
        yb = jax.lax.dynamic_slice_in_dim(y, i * batch, batch)
        wb = jax.lax.dynamic_slice_in_dim(w, i * batch, batch)
        if self.objective is not None:  # summed over the predicted tokens, with their number
            xb, yb = self.objective.corrupt(jax.random.fold_in(jax.random.PRNGKey(EVAL_OBJECTIVE_SEED), i), xb)
            _, (logits, _) = self._loss(params, batch_stats, xb, yb, False)
            ce, correct, weight = self.objective.token_losses(logits, yb)
            return jnp.sum(ce * wb[:, None]), jnp.sum(correct * wb[:, None]), jnp.sum(weight * wb[:, None])
        _, (logits, _) = self._loss(params, batch_stats, xb, yb, False)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, yb)
        return jnp.sum(losses * wb), jnp.sum((jnp.argmax(logits, -1) == yb) * wb)

    def _eval_impl(self, params, batch_stats, x, y, w, batch: int):
        nb = x.shape[0] // batch

        def body(tot, i):
            one = lambda p, bst: self._eval_batch(p, bst, x, y, w, i, batch)
            sums = self.over_replicates(one, params, batch_stats)
            return tuple(t + s for t, s in zip(tot, sums)), None

        r = jax.tree.leaves(params)[0].shape[0]
        zeros = jnp.zeros((r,), jnp.float32)
        if self.objective is not None:  # means over the predicted tokens
            (loss, correct, count), _ = jax.lax.scan(body, (zeros, zeros, zeros), jnp.arange(nb))
            return loss / jnp.maximum(count, 1.0), correct / jnp.maximum(count, 1.0)
        (loss, correct), _ = jax.lax.scan(body, (zeros, zeros), jnp.arange(nb))
        total = jnp.sum(w)
        return loss / total, correct / total

    def evaluate(self, states: TrainState, split: str) -> dict[str, np.ndarray]:
        """Mean loss and accuracy of every replicate on `split` ('val' or 'test'): arrays (R,)."""
        es = self.eval_sets[split]
        if es is None:
            return {}
        if self.scan:
            if self.member_mesh is None:
                loss, acc = self._eval(states.params, states.batch_stats, es.x, es.y, es.w, batch=es.batch)
            else:
                outs = self._per_device(self._eval, (states.params, states.batch_stats), (es.x, es.y, es.w), batch=es.batch)
                loss, acc = (np.concatenate([np.asarray(o[i]) for o in outs]) for i in (0, 1))
            return {"loss": np.asarray(loss), "accuracy": np.asarray(acc)}
        # CPU + convolutions: one compiled single-replicate batch at a time, as in `run`.
        if self.objective is not None:
            raise NotImplementedError("an objective (MLM) with scan=False: its models (BERT) have no convolutions")
        R = jax.tree.leaves(states.params)[0].shape[0]
        sums = []
        for r in range(R):
            p, bst = jax.tree.map(lambda a: a[r], (states.params, states.batch_stats))
            sums.append([self._eval1(p, bst, es.x, es.y, es.w, jnp.asarray(i, jnp.int32), batch=es.batch)
                         for i in range(es.n_batches)])
        sums = np.asarray(jax.device_get(sums), np.float64).sum(axis=1)  # (R, 2)
        return {"loss": (sums[:, 0] / es.n).astype(np.float32), "accuracy": (sums[:, 1] / es.n).astype(np.float32)}


def _shard_on(x, dev, sharding):
    """The part of member-sharded `x` on device `dev` (re-sharded first if an operation left it
    otherwise)."""
    if not isinstance(x, jax.Array):
        x = jnp.asarray(x)
    if x.sharding != sharding:
        x = jax.device_put(x, sharding)
    for shard in x.addressable_shards:
        if shard.device == dev:
            return shard.data
    raise ValueError(f"no part of the array on {dev}")


@dataclasses.dataclass
class LevelHistory:
    """What one level's training recorded: evaluations (every `eval_every` steps and at the end)
    and per-step training metrics."""

    eval_steps: list[int] = dataclasses.field(default_factory=list)
    evals: list[dict[str, np.ndarray]] = dataclasses.field(default_factory=list)  # {"val/loss": (R,), ...}
    train: dict[str, list[np.ndarray]] = dataclasses.field(default_factory=lambda: {"loss": [], "accuracy": [], "lr": []})
    seconds: float = 0.0
    diverged: Optional[np.ndarray] = None  # per member: the first step with a non-finite loss, -1 if none

    def select(self, members: slice) -> "LevelHistory":
        """The history of some members only (a slice of the member axis of every array)."""
        return LevelHistory(
            eval_steps=list(self.eval_steps), evals=[{k: v[members] for k, v in e.items()} for e in self.evals],
            train={k: (v[:, members] if np.ndim(v) == 2 else v) for k, v in self.train.items()}, seconds=self.seconds,
            diverged=None if self.diverged is None else self.diverged[members])

    def early_stop(self) -> dict[str, np.ndarray]:
        """Per replicate: the step of minimum validation loss (first of ties), the test accuracy
        there, and that loss. Without a validation split there is no early-stopping point: all NaN
        (the last evaluation is the final accuracy, not an early stop)."""
        r = len(self.evals[-1]["test/accuracy"])
        if "val/loss" not in self.evals[-1]:
            return {key: np.full(r, np.nan) for key in
                    ("early_stop_step", "early_stop_test_accuracy", "early_stop_val_accuracy", "min_val_loss")}
        val = np.stack([e["val/loss"] for e in self.evals])  # (E, R)
        val = np.where(np.isnan(val), np.inf, val)
        best = np.argmin(val, axis=0)
        pick = lambda key: np.array([self.evals[b][key][i] for i, b in enumerate(best)])
        return {
            "early_stop_step": np.array([self.eval_steps[b] for b in best]),
            "early_stop_test_accuracy": pick("test/accuracy"),
            "early_stop_val_accuracy": pick("val/accuracy"),
            "min_val_loss": pick("val/loss"),
        }


def chunk_boundaries(start: int, end: int, eval_every: int, extra: tuple[int, ...] = ()) -> list[int]:
    """Steps where a compiled call ends: every multiple of `eval_every` in (start, end), `end`,
    and any `extra` step inside (e.g. the rewind point, whose state is captured)."""
    points = {end} | set(range((start // eval_every + 1) * eval_every, end, eval_every))
    points |= {e for e in extra if start < e < end}
    return sorted(points)


def train_level(trainer: Trainer, states: TrainState, keys: dict, *, start: int, end: int, eval_every: int,
                capture_at: Optional[int] = None, on_eval: Optional[Callable] = None,
                on_train: Optional[Callable] = None, progress=None, extra_boundaries: tuple[int, ...] = (),
                resume=None, on_boundary: Optional[Callable] = None, place: Optional[Callable] = None):
    """Train stacked `states` from step `start` to `end`, evaluating at every multiple of
    `eval_every` and at `end` (not at `start`: on a CPU one evaluation of a CIFAR convnet costs
    minutes, and the untrained point is never the early-stopping point that matters).

    The compiled calls end at the evaluation steps, `capture_at` and `extra_boundaries` (the
    checkpoint steps), all fixed by `start` alone. `resume` (an `lth.runs.progress.Resume`) continues
    from one of those boundaries as if the level had never stopped; `on_boundary(step, level)` is
    called after every boundary (evaluation included) with a `LevelInProgress` to checkpoint.
    `place(states, keys)` puts the states and keys on the devices (`lth.train.sharding`).

    Divergence: after every call, a member whose training loss was not finite at some step, or
    whose weights are not all finite, is stopped: its state goes back to the last boundary (where it
    was finite) and stays there for the rest of the level, and `history.diverged[m]` records the
    first step whose loss was not finite. Members are independent, so the others train on exactly
    as they would have.

    Returns (states, history, captured) where `captured` is the host copy of the states at step
    `capture_at` (the rewind point) when it lies in [start, end), else None.
    """
    hist = LevelHistory()
    n_members = int(jax.tree.leaves(states.params)[0].shape[0])
    diverged = np.full(n_members, -1, np.int64)
    captured = jax.device_get(states) if capture_at == start else None
    step = start
    if resume is not None:
        states = jax.tree.map(lambda t, x: jnp.asarray(x, dtype=t.dtype), states, resume.states)
        step, captured, diverged = resume.step, resume.captured, np.array(resume.diverged, np.int64)
        hist.eval_steps, hist.evals = list(resume.eval_steps), list(resume.evals)
        hist.train = {k: [np.asarray(v)] for k, v in resume.train.items()}
    if place is not None:
        states, keys = place(states, keys)
    t0 = time.perf_counter()

    def evaluate(step):
        ev = {}
        for split in ("val", "test"):
            for k, v in trainer.evaluate(states, split).items():
                ev[f"{split}/{k}"] = v
        hist.eval_steps.append(step)
        hist.evals.append(ev)
        if on_eval:
            on_eval(step, ev)

    frozen = states  # every member's state at the last boundary, where it was finite
    extra = tuple(e for e in (capture_at, *extra_boundaries) if e is not None)
    for boundary in chunk_boundaries(start, end, eval_every, extra):
        if boundary <= step:  # done before the run was stopped
            continue
        states, metrics = trainer.run(states, keys, step, boundary - step)
        for k in hist.train:
            hist.train[k].append(metrics[k])
        states, frozen = _stop_diverged(states, frozen, metrics["loss"], step, boundary, diverged)
        if on_train:
            on_train(step, metrics)
        if progress is not None:
            progress.update(boundary - step)
        step = boundary
        if step == capture_at:
            captured = jax.device_get(states)
        if step % eval_every == 0 or step == end:
            evaluate(step)
            if progress is not None:
                ev = hist.evals[-1]
                progress.set_postfix(
                    {k.replace("/", "_"): f"{float(np.mean(v)):.4f}" for k, v in ev.items() if k.endswith("accuracy")}
                )
        if on_boundary is not None:
            on_boundary(step, LevelInProgress(states, captured, hist, diverged))
    hist.train = {k: np.concatenate(v) if v else np.zeros((0, n_members)) for k, v in hist.train.items()}
    hist.diverged = diverged
    hist.seconds = time.perf_counter() - t0
    return states, hist, captured


@dataclasses.dataclass
class LevelInProgress:
    """A level at a boundary, for `lth.runs.progress` to save: the live states, the rewind-point states
    captured so far, the history so far and the divergence steps."""

    states: TrainState
    captured: Optional[PyTree]
    history: "LevelHistory"
    diverged: np.ndarray

    def train_so_far(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) for k, v in self.history.train.items() if len(v)}


@jax.jit
def _finite_members(params) -> jax.Array:
    """(members,) True where every weight of that member is finite."""
    return jnp.stack([jnp.all(jnp.isfinite(x), axis=tuple(range(1, x.ndim))) for x in jax.tree.leaves(params)]).all(0)


@jax.jit
def _keep_where(stopped, old, new):
    """`new`, except the members `stopped` (members,) which keep `old`."""
    return jax.tree.map(lambda o, n: jnp.where(stopped.reshape((-1,) + (1,) * (n.ndim - 1)), o, n), old, new)


def _stop_diverged(states, frozen, loss, first: int, boundary: int, diverged: np.ndarray):
    """After the steps first .. boundary-1: record newly diverged members in `diverged` (in place),
    put every stopped member back to `frozen`; returns (states, the new `frozen`)."""
    loss = np.asarray(loss)
    bad = ~np.isfinite(loss)
    fresh = (diverged < 0) & (bad.any(axis=0) | ~np.asarray(_finite_members(states.params)))
    for m in np.flatnonzero(fresh):
        diverged[m] = first + int(np.argmax(bad[:, m])) if bad[:, m].any() else boundary
    if (diverged >= 0).any():
        states = _keep_where(jnp.asarray(diverged >= 0), frozen, states)
    return states, states


def stacked_density(mask: PyTree, paths: list[str]) -> np.ndarray:
    """Density of each replicate's stacked mask: array (R,)."""
    return np.array([M.density(m, paths) for m in M.unstack(mask, jax.tree.leaves(mask)[0].shape[0])])


__all__ = ["Trainer", "TrainState", "train_level", "replicate_keys", "LevelHistory", "chunk_boundaries", "learning_rate"]
