"""A researcher's own pruning score: `pruning.method=custom pruning.score_fn=module.function`, or
`lth.register_method(name, fn, scored_at=...)` and then `pruning.method=name`.

A score function takes a `ScoreContext` (one replicate at one pruning step) and returns scores
shaped like `ctx.params`; lth's exact-count engine prunes the lowest (`lth.sparsity.methods`).
`checked_scores` refuses scores of the wrong structure or shape, or not finite, with a
`ConfigError` naming the function. Registered names live in `lth.config.registry`, so that the
config's validation sees them without importing this module.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from lth.config import registry
from lth.config.schema import Config, ConfigError
from lth.config.targets import import_target


def register_method(name: str, fn: Callable[[Any], Any], *, scored_at: str = "final") -> None:
    """Make `pruning.method=name` score with `fn(ctx)` (a `ScoreContext`), at the previous level's
    `final` weights (as magnitude pruning) or at the rewind point, `init` (as SNIP)."""
    from lth.config.schema import METHODS

    if name in METHODS:
        raise ConfigError(f"lth.register_method: {name!r} is a built-in pruning method; choose another name")
    if scored_at not in registry.SCORED_AT:
        raise ConfigError(f"lth.register_method: scored_at={scored_at!r} is not one of {', '.join(registry.SCORED_AT)}")
    if not callable(fn):
        raise ConfigError(f"lth.register_method: fn is a {type(fn).__name__}, not a function of a ScoreContext")
    registry.METHODS[name] = registry.UserMethod(name, fn, scored_at)


def score_function(cfg: Config) -> Callable[[Any], Any]:
    """The score function of `pruning.method` (custom: `pruning.score_fn` imported)."""
    if cfg.pruning.method in registry.METHODS:
        return registry.METHODS[cfg.pruning.method].fn
    fn = import_target("pruning.score_fn", cfg.pruning.score_fn)
    if not callable(fn):
        raise ConfigError(f"pruning.score_fn={cfg.pruning.score_fn!r} is a {type(fn).__name__}, not a function")
    return fn


@dataclasses.dataclass(frozen=True)
class ScoreContext:
    """What a score function sees, for one replicate at one pruning step: `params` (the weights it
    scores, masked: the previous level's final ones, or the rewind point's), `grads` (the mean
    loss gradient at `params` over `xs, ys`, `pruning.score_batches` training batches of this
    replicate's data order, in training mode), `key` (a PRNG key of this seed, replicate, method
    and level), the current `mask`, `batch_stats`, the `level` being made, the `replicate`, the
    `model` (`model.apply({"params": p}, x, train=False)`) and the prunable `paths`."""

    params: Any
    grads: Any
    key: Any
    mask: Any
    batch_stats: Any
    level: int
    replicate: int
    xs: Any
    ys: Any
    model: Any
    paths: tuple[str, ...]


def checked_scores(cfg: Config, scores: Any, params: Any) -> Any:
    """`scores` as host float arrays shaped like `params`, or a ConfigError naming the function."""
    import jax

    name = f"pruning.score_fn={cfg.pruning.score_fn!r}"
    if jax.tree.structure(scores) != jax.tree.structure(params):
        raise ConfigError(f"{name} returned {jax.tree.structure(scores)}; it must return scores shaped like ctx.params, "
                          f"{jax.tree.structure(params)}")
    out = jax.tree.map(lambda s: np.asarray(jax.device_get(s), np.float64), scores)
    for s, p in zip(jax.tree.leaves(out), jax.tree.leaves(params)):
        if s.shape != np.shape(p):
            raise ConfigError(f"{name} returned a score array of shape {s.shape} for a parameter of shape {np.shape(p)}")
        if not np.all(np.isfinite(s)):
            raise ConfigError(f"{name} returned non-finite scores (NaN or inf); scores must be finite numbers")
    return out
