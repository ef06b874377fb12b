"""Deep Compression's centroid fine-tuning (Han, Mao & Dally 2016, section 3.2; step 3 of
`lth.compression.compress`): with each weight's code fixed, W = c[codes] ⊙ m, only the centroids train,
∂L/∂c_k = Σ_{code_i = k} ∂L/∂W_i (the gradient of the gather c[codes], one jit-compiled step),
under the source's optimizer without weight decay; code 0 stays the fixed zero. The steps run the
model in training mode, so BatchNorm running statistics move with them and are returned beside
the codebooks (the compressed network is evaluated, stored and counted with them)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lth.sparsity import masks as M
from lth.compression import quantize
from lth.config.schema import Config
from lth.config.durations import to_steps


def default_lr(cfg: Config, trainer, shared: dict[str, "quantize.Shared"]) -> float:
    """The fine-tuning rate when `compress.lr` is null: the source schedule's final rate η_T; for
    SGD and momentum, whose step is proportional to the gradient, divided by the mean number of
    weights per centroid n̄ = (surviving weights) / (centroids), so that a centroid whose gradient
    is the sum over its n̄ members moves as far as one weight trained at η_T would (Adam's step
    does not depend on the gradient's scale: η_T as it is)."""
    from lth.train.optim import make_schedule

    spe = trainer.steps_per_epoch
    total = to_steps(cfg.train.duration, spe, setting="train.duration")
    lr = float(make_schedule(cfg.optimizer, total_steps=total, steps_per_epoch=spe)(max(0, total - 1)))
    if cfg.optimizer.name in ("adam", "adamw"):
        return lr
    alive = sum(int((s.codes > 0).sum()) for s in shared.values())
    centroids = sum(len(s.codebook) - 1 for s in shared.values())
    return lr * centroids / max(alive, 1)


def finetune_centroids(cfg: Config, trainer, flat_params: dict[str, np.ndarray], shared: dict[str, "quantize.Shared"],
                       batch_stats, steps: int, replicate: int) -> tuple[dict[str, np.ndarray], Any]:
    """`steps` updates of the codebooks of one replicate, the codes fixed (see the module
    docstring); returns the new codebooks (entry 0 stays exactly 0) and the BatchNorm running
    statistics, which the training-mode steps update as training does."""
    from lth.train.optim import make_optimizer
    from lth.train.trainer import cross_entropy, replicate_keys
    from lth.train.train_state import with_learning_rate

    c = cfg.compress
    spe = trainer.steps_per_epoch
    lr = default_lr(cfg, trainer, shared) if c.lr is None else float(c.lr)
    tx = make_optimizer(dataclasses.replace(cfg.optimizer, weight_decay=0.0))
    codes = {p: jnp.asarray(s.codes) for p, s in shared.items()}
    fixed = {p: jnp.asarray(v) for p, v in flat_params.items() if p not in shared}
    books = {p: jnp.asarray(s.codebook) for p, s in shared.items()}
    opt_state = tx.init(books)
    model, normalize, augment = trainer.model, trainer.dataset.normalize, trainer.augment

    def loss_fn(books, bstats, x, y):
        params = M.unflatten({**fixed, **{p: books[p][codes[p]] for p in books}})
        variables = {"params": params}
        if bstats:
            logits, upd = model.apply({**variables, "batch_stats": bstats}, x, train=True, mutable=["batch_stats"])
            return cross_entropy(logits, y), upd["batch_stats"]
        return cross_entropy(model.apply(variables, x, train=True), y), bstats

    @jax.jit
    def step(books, opt_state, bstats, idx, key):
        x, y = trainer.x_train[idx], trainer.y_train[idx]
        if augment is not None:
            x = augment(key, x)
        (_, bstats), grads = jax.value_and_grad(loss_fn, has_aux=True)(books, bstats, normalize(x), y)
        grads = {p: g.at[0].set(0.0) for p, g in grads.items()}  # code 0 is the fixed zero
        updates, opt_state = tx.update(grads, with_learning_rate(opt_state, lr), books)
        books = jax.tree.map(lambda b, u: (b + u).at[0].set(0.0), books, updates)
        return books, opt_state, bstats

    keys = replicate_keys(cfg.seed, replicate + 1)
    data_key, aug_key = jax.random.fold_in(keys["data"][replicate], 7), keys["aug"][replicate]
    n, bs = trainer.x_train.shape[0], trainer.batch_size
    bstats = jax.tree.map(jnp.asarray, batch_stats)
    perm = None
    for t in range(steps):
        if t % spe == 0:
            perm = jax.random.permutation(jax.random.fold_in(data_key, t // spe), n)
        idx = jax.lax.dynamic_slice_in_dim(perm, (t % spe) * bs, bs)
        books, opt_state, bstats = step(books, opt_state, bstats, idx, jax.random.fold_in(aug_key, t))
    return {p: np.asarray(b, np.float32) for p, b in books.items()}, bstats
