"""One training step of one replicate: loss, gradient and the masked update (the `Trainer`'s step).

For a replicate with weights θ, mask m and the optimizer's update rule u (optax, at the learning
rate of the state's step), one step on a batch (x, y) is

    g = ∇θ L(θ; x, y),   θ ← m ⊙ (θ + u(m ⊙ g))

(`TrainState.apply_masked_gradients`: pruned weights get no gradient and stay exactly 0 under
momentum, Adam moments and weight decay). L is the mean cross-entropy of the logits, or, for a
dataset with an objective (masked-language modelling), the objective's loss of the corrupted
batch. BatchNorm statistics are updated in the same forward pass. With a gradual schedule
(`mask_update`), the mask is recomputed inside the compiled step at the schedule's update steps
and the newly pruned weights zeroed before the update. With dynamic sparse training
(`lth.sparsity.dynamic`), the mask moves at its update steps between the gradient g (dense: the
gradient of every weight, pruned or not) and the update, which then uses the new mask. With straight-through pruning (`ste`,
`lth.sparsity.ste`) the loss is that of m(w) ⊙ w, the dense w takes its gradient unmasked and the
mask m(w) is recomputed after the update.

`Steps` is a mixin of `lth.train.trainer.Trainer`: its methods read the trainer's model, dataset,
objective, augmentation, `mask_update`, `ste`, `replicates_as` and batch layout (set in
`Trainer.__init__`).
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax

from lth.sparsity import dynamic, masks as M
from lth.train.train_state import TrainState

_OBJECTIVE_SALT, _RNG_SALT = 0x6D6C6D, 0x64726F70  # fold_in constants: the step key's uses besides augmentation


def cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


class Steps:
    """The step methods of `Trainer`: one replicate's loss and masked update, and all replicates' step."""

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

    def _train_step(self, state: TrainState, x, y, rng=None, before_update=None):
        """`before_update(state, grads) -> (state, metrics)`: a change of the state between the dense
        gradient and the update (dynamic sparse training's mask update), or None."""
        grad_fn = jax.value_and_grad(self._loss, has_aux=True)
        ste = self.ste  # straight-through pruning (lth.sparsity.ste): the loss of m(w) ⊙ w, its gradient to the dense w
        params = state.params if ste is None else ste.forward(state.params, state.mask)
        (loss, (logits, batch_stats)), grads = grad_fn(params, state.batch_stats, x, y, True, rng)
        extra = {}
        if before_update is not None:
            state, extra = before_update(state, grads)
        lr = state.lr_fn(state.step)
        if ste is None:
            state = state.apply_masked_gradients(grads, masked=self.masked, batch_stats=batch_stats)
        else:
            state = ste.apply_gradients(state, grads, batch_stats=batch_stats)
        if self.objective is None:
            acc = jnp.mean(jnp.argmax(logits, -1) == y)
        else:  # the fraction of the predicted (labelled) tokens that are right
            _, correct, weight = self.objective.token_losses(logits, y)
            acc = correct.sum() / jnp.maximum(weight.sum(), 1.0)
        return state, {"loss": loss, "accuracy": acc, "lr": lr, **extra}

    def _replica_step(self, state, idx, aug_key, x_all, y_all, step):
        """One step of one replicate on the examples `idx` of its epoch permutation, augmented
        with `fold_in(aug_key, step)`, normalised, one masked update. `idx=None`: `x_all`, `y_all`
        are the batch itself (fed from the host: `lth.train.streamed`)."""
        x, y = (x_all, y_all) if idx is None else (x_all[idx], y_all[idx])
        if self.batch_sharding is not None:  # data parallel over devices (lth.train.sharding, devices.shard=batch)
            x, y = (jax.lax.with_sharding_constraint(a, self.batch_sharding) for a in (x, y))
        if self.augment is not None:
            x = self.augment(jax.random.fold_in(aug_key, step), x)
        if self.objective is not None:
            x, y = self.objective.corrupt(jax.random.fold_in(jax.random.fold_in(aug_key, step), _OBJECTIVE_SALT), x)
        rng = jax.random.fold_in(jax.random.fold_in(aug_key, step), _RNG_SALT) if self.rng_streams else None
        gp = self.mask_update
        if gp is None or not getattr(gp, "moves", True):  # no mask update, or dynamic training's static mask
            return self._train_step(state, self.dataset.normalize(x), y, rng)
        if getattr(gp, "uses_gradients", False):  # dynamic sparse training (lth.sparsity.dynamic)
            key = dynamic.grow_key(jax.random.fold_in(aug_key, step))

            def move(s, grads):  # a conditional on the loop's step, as below
                s, density = jax.lax.cond(gp.is_update(step), lambda s: gp.update(s, grads, step, key),
                                          lambda s: (s, jnp.float32(jnp.nan)), s)
                return s, {"density": density}

            return self._train_step(state, self.dataset.normalize(x), y, rng, move)

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

