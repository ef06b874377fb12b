"""The `pruning` section of the configuration: which weights each pruning step removes, how many
and when, with its sub-sections for gradual pruning and dynamic sparse training (re-exported by
`lth.config.sections` and `lth.config.schema`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class GradualConfig:
    """Gradual magnitude pruning within one training run (`pruning.schedule=gradual`, `lth.sparsity.gradual`):
    the density falls from `initial_density` at step `begin` to `pruning.target_density` at step
    `end` along Zhu & Gupta's cubic, the mask recomputed every `every` steps. `end: null` is 3/4 of
    training; `every: null` is a tenth of end - begin (at least one step)."""

    begin: str = "0it"
    end: Optional[str] = None
    every: Optional[str] = None
    initial_density: float = 1.0


@dataclass
class DynamicConfig:
    """Dynamic sparse training within one training run (`pruning.schedule=dynamic`,
    `lth.sparsity.dynamic`): the mask, at `pruning.target_density` from the first step, is updated
    every `every` steps from `begin` until `end` (`null`: 3/4 of training, RigL's default); each
    update drops a fraction of every tensor's active weights (`drop_fraction` at the first update,
    decaying to 0 at `end` along a cosine for `drop_decay: cosine`, RigL's schedule, or kept for
    `constant`) and grows as many: at random (`method=set`) or where the dense gradient's magnitude
    is largest (`method=rigl`)."""

    every: str = "100it"
    begin: str = "0it"
    end: Optional[str] = None
    drop_fraction: float = 0.3
    drop_decay: str = "cosine"  # cosine | constant


@dataclass
class PruningConfig:
    """Which weights each pruning step removes, how many, and when.

    `schedule`: `iterative` (each level removes `fraction` of the *remaining* prunable weights),
    `linear` (the sparsity grows by `fraction` of the *dense* count per level, `lth.sparsity.linear_schedule`:
    the MNIST-1D lottery notebook's 100 rounds are `fraction: 1/99`), `oneshot` (one level straight
    from the dense network to `target_density`) or `gradual` (within level 0's training,
    `lth.sparsity.gradual`). `scope`: `global` (one threshold over all prunable tensors), `layerwise` (each
    tensor its own), `module` (the prunable tensors of one layer, its kernel and bias, share one). `method` scores the weights (`lth.sparsity.methods`): `magnitude`
    of the previous level's final weights (IMP), `random`, or at the rewind point (θ0 by default)
    `snip`, `grasp`, `synflow`, `magnitude_at_init`. The lowest scores go, an exact count, ties
    broken by position. `granularity`: single `weight`s, or whole units by the sum of their
    weights' scores (`neuron`: dense units; `channel`: convolution filters; `lth.sparsity.structured`).
    `ablation` (Frankle et al. 2021, `lth.sparsity.ablations`): `shuffle_layerwise`, `reinit`, `invert`.

    `prunable` and `exclude` are regular expressions searched in `/`-joined parameter paths
    (`head/kernel`, `stage2/block0/conv1/kernel`). `fractions` maps a pattern to a per-tensor
    fraction that replaces `fraction` for the tensors it matches (first match wins); with global
    scope those tensors are pruned on their own and the rest share one threshold.
    """

    fraction: float = 0.2
    # global | layerwise | module; null: the method's own, `global` for snip, grasp and synflow (as their
    # papers: a per-layer count would undo the per-layer allocation they exist for), else `layerwise`
    scope: Optional[str] = None
    prunable: list[str] = field(default_factory=lambda: ["kernel$"])
    exclude: list[str] = field(default_factory=list)
    fractions: dict[str, float] = field(default_factory=dict)
    method: str = "magnitude"  # magnitude | random | snip | grasp | synflow | magnitude_at_init
    schedule: str = "iterative"  # iterative | linear | oneshot | gradual
    target_density: Optional[float] = None  # oneshot and gradual: the density reached
    granularity: str = "weight"  # weight | neuron | channel
    ablation: str = "none"  # none | shuffle_layerwise | reinit | invert
    score_batches: int = 1  # snip, grasp: training batches the scores average over
    synflow_rounds: int = 100  # synflow: pruning rounds per level (exponential density schedule)
    grasp_temperature: float = 200.0  # grasp: logits divided by T (the released GraSP code's T = 200)
    # grasp: the leaves g covers, `prunable` (the prunable tensors) or `all` (every kernel: the released
    # code's conv/linear weights, pruned or not)
    grasp_weights: str = "prunable"
    # grasp: null, `score_batches` training batches; N: the released code's class-balanced data, the first
    # N examples of each class in the replicate's order, `score_batches` times (`lth.sparsity.class_balanced`)
    grasp_samples_per_class: Optional[int] = None
    # `method=custom` (`lth.user_components`): the score function `module.name`, scored at the
    # previous level's `final` weights (as magnitude) or at the rewind point, `init` (as SNIP).
    score_fn: Optional[str] = None
    scored_at: str = "final"  # final | init
    # The output layer's parameter path (e.g. `out`): patterns naming `head` also match it. Null:
    # `head` (lth's models), or for `model=custom` the last dense layer the model calls.
    head: Optional[str] = None
    gradual: GradualConfig = field(default_factory=GradualConfig)
    # How the target density is spread over the prunable tensors (`lth.sparsity.allocation`):
    # `uniform` (as `scope` says), `erk` / `er` (Evci et al. 2020's Erdős–Rényi(-Kernel) per-tensor
    # densities), or `custom` (per-tensor densities from `densities`, pattern -> density).
    distribution: str = "uniform"
    densities: dict[str, float] = field(default_factory=dict)
    # `granularity: n:m`: exactly n of every m consecutive weights along the input axis kept
    # (`lth.sparsity.n_m`); `granularity: block`: whole (rows, cols) blocks of a kernel's last two axes.
    n_m: list[int] = field(default_factory=lambda: [2, 4])
    block: list[int] = field(default_factory=lambda: [4, 4])
    dynamic: DynamicConfig = field(default_factory=DynamicConfig)
    # `method: magnitude_ste`: SR-STE's decay λ_W of the pruned weights (Zhou et al. 2021); 0: plain STE.
    ste_decay: float = 0.0
