"""Evaluation of every replicate on the validation and test splits (the `Trainer`'s evaluation).

A split is padded to whole evaluation batches with weights w (1 for an example, 0 for padding),
so one compiled batch shape covers it; per replicate

    loss = Σ_i w_i CE(f(x_i), y_i) / Σ_i w_i,   accuracy = Σ_i w_i [argmax f(x_i) = y_i] / Σ_i w_i

(for a masked-language objective: both averaged over the predicted tokens, evaluation batch i
corrupted with `fold_in(PRNGKey(EVAL_OBJECTIVE_SEED), i)`, the same at every evaluation).

`Evaluation` is a mixin of `lth.train.trainer.Trainer`: its methods use the trainer's `_loss`
(`lth.train.steps`), `over_replicates`, `eval_sets`, `ste` and compiled `_eval` / `_eval1`. Under
straight-through pruning (`Trainer.ste`) the evaluated weights are m(w) ⊙ w.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lth.train.train_state import TrainState

EVAL_OBJECTIVE_SEED = 0  # evaluation batch i is corrupted with fold_in(PRNGKey(EVAL_OBJECTIVE_SEED), i)


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


class Evaluation:
    """The evaluation methods of `Trainer`: per-batch sums, the compiled scan over batches, `evaluate`."""

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
        if self.ste is not None:  # straight-through pruning: the network is m(w) ⊙ w (lth.sparsity.ste)
            states = states.replace(params=self.ste.forward(states.params, states.mask))
        if self.scan:
            if self.member_mesh is None:
                loss, acc = self._eval(states.params, states.batch_stats, es.x, es.y, es.w, batch=es.batch)
            else:
                outs = self._per_device(self._eval, (states.params, states.batch_stats), (es.x, es.y, es.w), batch=es.batch)
                loss, acc = self._assemble(outs) if jax.process_count() > 1 else \
                    (np.concatenate([np.asarray(o[i]) for o in outs]) for i in (0, 1))
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

