"""Sparsity: masks, pruning scores and methods, exact-count pruning steps, sparsity schedules, structured units, ablations, fresh random draws (`draws`), FLOPs and budgets: the part a researcher could use in their own training loop.

The library face (pure functions over params pytrees, no lth Config; guide: docs/guide/sparsity-library.md),
imported on first use so that `import lth.sparsity` stays cheap:

- `masked(tx, masks)`: any optax optimizer with pruned weights and their state held at 0 (`optax_masked`);
- `magnitude_masks(params, density, scope=, prunable=)`, `imp(train_fn, params, levels=, fraction=)` (`library`);
- `erk(params, density)`, `er(params, density)`: per-tensor densities (`distributions`);
- `n_of_m(scores, n, m)`: N:M masks (`n_m`); `n_m_mask(scores, n, m, alive=)`, `block_mask(scores, block, density)`:
  N:M among alive weights and whole-block masks, numpy or under `jit` (`patterns`);
- `snip`, `grasp`, `synflow`, `synflow_densities`, `loss_gradient`: pruning-at-init scores (`scores`).

May import: lth.config, lth.data, lth.models.
"""

_LAZY = {
    "masked": "lth.sparsity.optax_masked",
    "magnitude_masks": "lth.sparsity.library", "imp": "lth.sparsity.library", "IMPResult": "lth.sparsity.library",
    "PRUNABLE": "lth.sparsity.library",
    "erk": "lth.sparsity.distributions", "er": "lth.sparsity.distributions",
    "n_of_m": "lth.sparsity.n_m", "n_m_mask": "lth.sparsity.patterns", "block_mask": "lth.sparsity.patterns",
    "snip": "lth.sparsity.scores", "grasp": "lth.sparsity.scores", "synflow": "lth.sparsity.scores",
    "synflow_densities": "lth.sparsity.scores", "loss_gradient": "lth.sparsity.scores",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip __getattr__
        return value
    raise AttributeError(f"module 'lth.sparsity' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
