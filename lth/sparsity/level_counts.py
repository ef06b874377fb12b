"""How many items each group of tensors keeps at a level: the counts a pruning step prunes to.

The groups are `lth.sparsity.pruning.groups`' (tensors sharing one threshold). With f =
`pruning.fraction` and level ℓ:

- uniform distribution (the default): as `lth.sparsity.pruning` and `lth.sparsity.linear_schedule`
  say: each group removes round(f · alive) of its alive items per level (iterative; `steps` levels
  from `mask`), keeps n_g − floor(min(1, ℓf) · n_g) of its dense n_g (linear), or 1 − target once.
- `pruning.distribution=erk|er|custom` (`lth.sparsity.allocation`): the level's overall density

      d_ℓ = (1 − f)^ℓ (iterative),   1 − min(1, ℓ·f) (linear),   pruning.target_density (one-shot)

  is spread over the tensors by the distribution, and tensor l keeps exactly
  K_l = round_half_up(d_l(d_ℓ) · N_l) weights, counted from the dense shapes. ERK's d_l(d) =
  min(1, ε(d)·r_l) rises with d, so K_l never grows from one level to the next: magnitude IMP's
  masks are nested, each level re-spreading its smaller d_ℓ by the distribution. (`custom` gives
  absolute densities, so it is one-shot only: `lth.config.pattern_settings`.)
- `pruning.granularity=n:m`: every tensor keeps n_ℓ of every m weights (`lth.sparsity.patterns.level_n`),
  n_ℓ · N_l / m in all.

Methods scored at initialisation (and SynFlow's last round) prune the dense network straight to
these counts; magnitude and random IMP prune the previous level's mask to them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lth.config.schema import PruningConfig
from lth.sparsity import allocation, linear_schedule, masks as M, patterns, pruning

PyTree = Any


def level_density(p: PruningConfig, level: int) -> float:
    """d_ℓ, the overall density a non-uniform distribution spreads at `level` (module docstring)."""
    if p.schedule in ("oneshot", "gradual"):
        return float(p.target_density) if p.target_density is not None else p.n_m[0] / p.n_m[1]
    if p.schedule == "linear":
        return 1.0 - linear_schedule.sparsity(level, p.fraction)
    return (1.0 - float(p.fraction)) ** level


def check(p: PruningConfig, flat_params: dict[str, Any], paths: list[str], levels: int) -> None:
    """Raise `ConfigError` before training when the distribution cannot spread the densities of
    levels 1 .. `levels` over the prunable tensors `paths` (ER on a 1-D tensor, custom densities
    that leave the other tensors outside [0, 1])."""
    if p.distribution == "uniform":
        return
    from lth.config.errors import ConfigError

    shapes = {k: tuple(np.shape(flat_params[k])) for k in paths}
    for level in range(1, levels + 1):
        try:
            allocation.tensor_densities(p.distribution, shapes, level_density(p, level), p.densities)
        except ValueError as e:
            raise ConfigError(f"pruning.distribution={p.distribution} over the prunable tensors "
                              f"{ {k: list(s) for k, s in shapes.items()} }: {e}") from None


def keep_counts(p: PruningConfig, mask: PyTree, paths: list[str], level: int, steps: int) -> list[int]:
    """Items each group of `pruning.groups(paths, p)` keeps at `level`, for one replicate's `mask`
    (host numpy); `steps`: the iterative levels to walk from `mask` (1 from the previous level's
    mask, `level` from the dense one)."""
    shapes = {path: tuple(np.shape(leaf)) for path, leaf in M.flatten(mask).items() if path in set(paths)}
    if p.granularity == "n:m":
        n = patterns.level_n(p.n_m[0], p.n_m[1], p.schedule, p.fraction, level)
        return [n * int(np.prod(shapes[path])) // p.n_m[1] for path in paths]
    if p.distribution != "uniform":
        dens = allocation.tensor_densities(p.distribution, {k: shapes[k] for k in paths}, level_density(p, level), p.densities)
        kept = allocation.keep_counts({k: shapes[k] for k in paths}, dens)
        return [kept[path] for path in paths]
    if p.schedule == "linear":  # counts from the dense network's (lth.sparsity.linear_schedule)
        fracs = [f for _, f in pruning.groups(paths, p)]
        return linear_schedule.keep_counts(pruning.alive_counts(M.ones_like_np(mask), p, paths), level, fracs)
    return pruning.ladder_counts(mask, p, paths, steps)
