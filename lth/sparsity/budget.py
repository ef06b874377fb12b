"""A size or FLOPs budget for the sparsest ticket of a run, checked before anything is trained.

`budget.weights` and `budget.flops` (fractions of the dense network's, in (0, 1]; null: no budget)
bound what the run's last level L (its sparsest tickets) may keep. Pruning counts are exact
(`lth.sparsity.pruning`: each group of tensors that shares a threshold keeps
a_{l+1} = a_l - round(f_g * a_l), half up, from a_0 = its size, f_g its fraction: `pruning.fraction`,
a `pruning.fractions` entry, or 1 - `pruning.target_density` one-shot; the linear schedule keeps
a_L = a_0 - floor(min(1, L f_g) a_0), `lth.sparsity.linear_schedule`; a non-uniform `pruning.distribution`
gives each tensor its own count, `lth.sparsity.level_counts`), so the counts at level L are known
from the settings and the parameter shapes alone, before training:

    weights(L) = sum_g a_L(g) / sum_g a_0(g)                      (= results.csv's `density` at L)
    flops(L)   = sum_k pos_k * alive_L(k) / sum_k pos_k * size(k)

over the kernels k of every Conv/Dense layer (`lth.sparsity.flops`'s convention: one multiply-accumulate
per alive kernel weight per output position pos_k, biases not counted; a kernel that is not
prunable counts whole). alive_L(k) is exact for a tensor pruned on its own (layer-wise scope, or a
`pruning.fractions` pattern); for tensors that share one threshold (global or module scope) only
their total a_L(g) is known before training, so the group's survivors are placed where they cost
most (the tensors with most positions first): an upper bound, exact when the group's kernels have
equal positions (an MLP's dense layers). This counts every alive weight ("unstructured" FLOPs),
so it bounds the effective FLOPs `results.csv` reports (`flops_fraction`, which also drops
weights cut off by dead units) from above.

The rule: a run whose weights(L) > budget.weights or flops(L) > budget.flops is infeasible. It
is refused before any training or writing (`OverBudget`, a `ConfigError`: a single run exits with
status 2 and the numbers); in a Hydra multirun (the Optuna search, `conf/search/`) the job is not
trained and returns a negative objective, minus its excess over the budget,

    objective = -max(weights(L) - budget.weights, flops(L) - budget.flops)   (in [-1, 0))

(`infeasible_objective`), below every feasible run's accuracy (>= 0), so the best trial is
feasible whenever one is, and a sampler that sees only infeasible trials (a tight budget) is
still led towards the budget rather than shown a flat 0. Sampled fractions are not projected onto
the budget: each trial is exactly what was sampled. Supported: weight granularity (unit counts are not weight
counts) and the iterative, one-shot and linear schedules (gradual pruning has no levels to count).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from lth.config.budget_settings import SCHEDULES, validate  # noqa: F401  (the checks without counts: lth.config)
from lth.config.schema import Config, ConfigError


class OverBudget(ConfigError):
    """The run's last level would keep more than the budget allows (`report` says how much;
    `excess`: the largest fraction of the dense count over its budget, > 0)."""

    def __init__(self, message: str, report: "Report", excess: float):
        super().__init__(message)
        self.report, self.excess = report, excess


def infeasible_objective(error: OverBudget) -> float:
    """What an over-budget job returns to a sweeper: -excess (module doc)."""
    return -float(error.excess)


@dataclasses.dataclass(frozen=True)
class Report:
    """Counts at the last level `level`: prunable weights kept and dense, MACs per example (upper
    bound) kept and dense, and per prunable tensor the weights kept (exact, or the group's bound)."""

    level: int
    weights: int
    weights_dense: int
    flops: Optional[int]
    flops_dense: Optional[int]
    tensors: dict[str, int]

    @property
    def weights_fraction(self) -> float:
        return self.weights / self.weights_dense

    @property
    def flops_fraction(self) -> Optional[float]:
        return None if self.flops is None else self.flops / self.flops_dense


def level_counts(shapes: dict[str, tuple[int, ...]], paths: list[str], cfg: Config) -> list[tuple[list[str], int]]:
    """(tensors, weights kept) per group sharing a threshold (`lth.sparsity.pruning.groups`) at level
    `cfg.levels`, from the dense shapes `shapes` (path -> shape) of the prunable `paths`."""
    from lth.sparsity import level_counts, pruning

    mask = _unflatten({p: np.ones(shapes[p], bool) for p in paths})
    groups = pruning.groups(paths, cfg.pruning)  # counts as the run prunes (a distribution: per tensor)
    kept = level_counts.keep_counts(cfg.pruning, mask, paths, cfg.levels, cfg.levels)
    return [(group, k) for (group, _), k in zip(groups, kept)]


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, v in flat.items():
        node = out
        *parents, leaf = path.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = v
    return out


def tensor_bounds(groups: list[tuple[list[str], int]], sizes: dict[str, int], positions: dict[str, int]) -> dict[str, int]:
    """Weights kept per tensor: a group's count as it is for a group of one tensor; for a larger
    group, its count placed greedily in the tensors with most `positions` (the FLOPs upper bound)."""
    out = {}
    for group, kept in groups:
        for p in sorted(group, key=lambda p: -positions.get(p, 1)):
            out[p] = min(kept, sizes[p])
            kept -= out[p]
    return out


def report(cfg: Config, params: dict, paths: list[str], layers: Optional[list[tuple[str, int, int]]] = None) -> Report:
    """The counts at level `cfg.levels` (module doc) of one replicate's `params` (nested dict)
    with prunable `paths`; `layers`: (kernel path, output positions, kernel size) of each Conv/Dense
    layer (`layer_positions`), needed for the FLOPs."""
    from lth.sparsity.masks import flatten

    flat = flatten(params)
    shapes = {p: tuple(np.shape(flat[p])) for p in paths}
    sizes = {p: int(np.prod(s)) for p, s in shapes.items()}
    positions = {k: pos for k, pos, _ in layers or []}
    kept = tensor_bounds(level_counts(shapes, paths, cfg), sizes, positions)
    flops = flops_dense = None
    if layers is not None:
        flops_dense = sum(pos * size for _, pos, size in layers)
        flops = sum(pos * kept.get(k, size) for k, pos, size in layers)
    return Report(cfg.levels, sum(kept.values()), sum(sizes.values()), flops, flops_dense, kept)


def layer_positions(model, variables, input_shape) -> list[tuple[str, int, int]]:
    """(kernel path, output positions, kernel size) per Conv/Dense call of `model` (`lth.sparsity.flops`)."""
    from lth.sparsity.flops import count_flops

    rows = count_flops(model, variables, None, tuple(input_shape)).layers
    return [(f"{r.path}/kernel" if r.path else "kernel", r.positions, r.dense // r.positions) for r in rows]


def check(cfg: Config, rep: Report) -> None:
    """Raise `OverBudget` when `rep` exceeds `cfg.budget` (the rule of the module doc)."""
    b, over, excess = cfg.budget, [], 0.0
    if b.weights is not None and rep.weights_fraction > b.weights:
        over.append(f"weights {rep.weights:,} of {rep.weights_dense:,} ({rep.weights_fraction:.4f}) > budget.weights={b.weights}")
        excess = max(excess, rep.weights_fraction - b.weights)
    if b.flops is not None and rep.flops_fraction > b.flops:
        over.append(f"FLOPs {rep.flops:,} of {rep.flops_dense:,} per example ({rep.flops_fraction:.4f}) > budget.flops={b.flops}")
        excess = max(excess, rep.flops_fraction - b.flops)
    if over:
        raise OverBudget(f"over budget at level {rep.level}: {'; '.join(over)} (pruning.fraction={cfg.pruning.fraction}, "
                         f"pruning.fractions={dict(cfg.pruning.fractions)}); nothing trained", rep, excess)


def enforce(cfg: Config, params: dict, paths: list[str], model=None, variables=None, input_shape=None) -> Optional[Report]:
    """`check` of a run's settings before training (`lth.lottery.levels.run`): None without a budget."""
    b = cfg.budget
    if b.weights is None and b.flops is None:
        return None
    layers = layer_positions(model, variables, input_shape) if b.flops is not None else None
    rep = report(cfg, params, paths, layers)
    check(cfg, rep)
    return rep


def line(rep: Report) -> str:
    """The counts in words, for the run's first lines."""
    s = f"budget: level {rep.level} keeps {rep.weights:,} of {rep.weights_dense:,} prunable weights ({rep.weights_fraction:.4f})"
    if rep.flops is not None:
        s += f", at most {rep.flops:,} of {rep.flops_dense:,} MACs per example ({rep.flops_fraction:.4f})"
    return s
