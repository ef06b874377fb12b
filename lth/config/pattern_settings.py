"""The checks of `pruning.distribution` (with `pruning.densities`), `pruning.granularity=n:m|block`
(with `pruning.n_m`, `pruning.block`) against the other pruning settings: what each combination
means is in `lth.sparsity.level_counts` and `lth.sparsity.patterns`; the combinations that would
mean nothing are refused here, before any work, naming the setting, its value and what is allowed.

- A non-uniform distribution (erk, er, custom) sets every tensor's count itself, so it takes no
  `pruning.scope` other than layerwise (or unset) and no `pruning.fractions`; it counts single
  weights (`pruning.granularity=weight`); gradual pruning spreads its densities by the scope, not by
  a distribution; `custom`'s densities are absolute, so it is one-shot only; the linear schedule
  must keep some weights at the last level (levels · fraction < 1).
- N:M fixes the count of every group of m: no scope but layerwise (or unset), no `pruning.fractions`,
  and not SynFlow (whose rounds allocate across layers); one-shot reaches n/m, so
  `pruning.target_density` is unset or n/m.
- `pruning.n_m` is two ints 0 < n < m; `pruning.block` two ints >= 1; each only with its granularity.
Shapes (an input axis divisible by m, axes divisible by the block) are checked when the model is
built (`lth.sparsity.patterns.pattern_paths`).
"""

from __future__ import annotations

from typing import Any

from lth.config.errors import ConfigError


def _ints(value: Any) -> bool:
    try:
        value = list(value)
    except TypeError:
        return False
    return len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def validate(cfg: Any) -> None:
    """Raise `ConfigError` for a combination the module docstring refuses."""
    p = cfg.pruning
    if not _ints(p.n_m) or not 0 < p.n_m[0] < p.n_m[1]:
        raise ConfigError(f"pruning.n_m={p.n_m!r}: must be two integers [n, m] with 0 < n < m (n kept of every m), e.g. [2, 4]")
    if not _ints(p.block) or min(p.block) < 1:
        raise ConfigError(f"pruning.block={p.block!r}: must be two integers [rows, cols] >= 1, e.g. [4, 4]")
    if list(p.n_m) != [2, 4] and p.granularity != "n:m":
        raise ConfigError(f"pruning.n_m={list(p.n_m)} is for pruning.granularity=n:m, not pruning.granularity={p.granularity}")
    if list(p.block) != [4, 4] and p.granularity != "block":
        raise ConfigError(f"pruning.block={list(p.block)} is for pruning.granularity=block, not pruning.granularity={p.granularity}")
    if p.distribution != "uniform":
        what = f"pruning.distribution={p.distribution} sets every tensor's count"
        if p.granularity != "weight":
            raise ConfigError(f"pruning.granularity={p.granularity} with pruning.distribution={p.distribution}: a distribution "
                              "spreads single weights over the tensors; it needs pruning.granularity=weight")
        if p.scope not in (None, "layerwise"):
            raise ConfigError(f"pruning.scope={p.scope}: {what}; leave pruning.scope unset (or layerwise)")
        if p.fractions:
            raise ConfigError(f"pruning.fractions={dict(p.fractions)}: {what}; use pruning.distribution=custom with "
                              "pruning.densities for per-tensor densities")
        if p.schedule == "gradual":
            raise ConfigError(f"pruning.schedule=gradual with pruning.distribution={p.distribution}: gradual pruning spreads "
                              "its density by pruning.scope; use pruning.distribution=uniform (or schedule=oneshot)")
        if p.distribution == "custom" and p.schedule in ("iterative", "linear"):
            raise ConfigError(f"pruning.schedule={p.schedule} with pruning.distribution=custom: custom densities are absolute "
                              "(one per tensor), so they are reached in one step; use pruning.schedule=oneshot")
        if p.schedule == "linear" and cfg.levels * p.fraction >= 1.0:
            raise ConfigError(f"levels={cfg.levels} with pruning.fraction={p.fraction} (linear) reaches density 0; "
                              f"pruning.distribution={p.distribution} needs levels · fraction < 1")
    if p.granularity == "n:m":
        what = f"pruning.granularity=n:m keeps n of every m (pruning.n_m={list(p.n_m)})"
        if p.scope not in (None, "layerwise"):
            raise ConfigError(f"pruning.scope={p.scope}: {what} in every tensor; leave pruning.scope unset (or layerwise)")
        if p.fractions:
            raise ConfigError(f"pruning.fractions={dict(p.fractions)}: {what} in every tensor; per-tensor fractions do not apply")
        if p.method == "synflow":
            raise ConfigError(f"pruning.method=synflow with pruning.granularity=n:m: SynFlow's rounds allocate weights across "
                              "layers, n:m fixes every group's count; use snip, grasp, magnitude_at_init, random or magnitude")
        if p.schedule == "oneshot" and p.target_density is not None and abs(p.target_density - p.n_m[0] / p.n_m[1]) > 1e-9:
            raise ConfigError(f"pruning.target_density={p.target_density} with pruning.granularity=n:m: one-shot n:m reaches "
                              f"n/m = {p.n_m[0] / p.n_m[1]:g}; leave pruning.target_density unset")
