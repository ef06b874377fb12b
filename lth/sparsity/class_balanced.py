"""GraSP's class-balanced scoring data, as its released code draws it (`pruning.grasp_samples_per_class`).

The release (github.com/alecwangcq/GraSP, `pruner/GraSP.py`, `GraSP_fetch_data`) walks a shuffled
training loader and keeps the first `samples_per_class` examples of each class, then concatenates
them class by class (class 0's first), so N = samples_per_class · classes examples; its gradient
g and its Hessian-gradient product Hg are each taken over the two halves of that array, examples
[0, N/2) and [N/2, N), and this is repeated `num_iters` times, each with a fresh pass of the loader.

Here iteration i walks replicate r's data order of epoch i (its own shuffle, as a new loader pass)
and the two halves become two batches, so `pruning.score_batches` = num_iters gives 2 · num_iters
batches of N/2 examples that `lth.sparsity.scores.grasp` averages over (the release sums; the same ranking).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def indices(labels: np.ndarray, order: np.ndarray, num_classes: int, per_class: int) -> np.ndarray:
    """The first `per_class` examples of each class in `order` (indices into `labels`), class 0's
    first, then class 1's, ...; raises ValueError naming a class with fewer examples."""
    labels, order = np.asarray(labels), np.asarray(order)
    ranked = labels[order]
    out = []
    for c in range(num_classes):
        found = order[ranked == c][:per_class]
        if found.size < per_class:
            raise ValueError(f"pruning.grasp_samples_per_class={per_class}: class {c} has only {found.size} training "
                             "examples; lower it")
        out.append(found)
    return np.concatenate(out)


def batches(trainer, data_keys: jax.Array, iters: int, per_class: int) -> tuple[jax.Array, jax.Array]:
    """xs (R, 2 · iters, N/2, ...), ys (R, 2 · iters, N/2): for each iteration the two halves of
    the class-ordered examples of replicate r's order of that epoch, normalised."""
    num_classes = int(trainer.dataset.num_classes)
    n = per_class * num_classes
    if n % 2:
        raise ValueError(f"pruning.grasp_samples_per_class={per_class}: GraSP splits the {n} = {per_class} x {num_classes} "
                         "examples into two halves, so their number must be even")
    labels = np.asarray(trainer.y_train)
    idx = []
    for it in range(iters):
        perms = np.asarray(trainer._epoch_perms(data_keys, jnp.asarray(it, jnp.int32)))  # (R, N_train)
        idx.append(np.stack([indices(labels, p, num_classes, per_class).reshape(2, n // 2) for p in perms]))
    idx = jnp.asarray(np.concatenate(idx, axis=1))  # (R, 2 · iters, N/2)
    return trainer.dataset.normalize(trainer.dataset.centered(trainer.x_train[idx])), trainer.y_train[idx]
