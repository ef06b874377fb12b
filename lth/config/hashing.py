"""Which settings name a run directory: the content hash of a run (`lth.runs.run_dir.content_hash`) covers
`HASHED_SECTIONS`; a setting added after runs existed is listed in `HASH_OMITTED_AT_DEFAULT` at its
default, so that the runs made before it keep their directories (a NEW setting must be added here).
`UNHASHED_DATASET_KEYS`: dataset settings that only say where data lives; `UNHASHED_TRAIN_KEYS`: training
settings that change only speed.
"""

from __future__ import annotations

import dataclasses

from lth.config.sections import DynamicConfig, GradualConfig


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
    # a researcher's own model, data and score (issue 26, lth.user_components)
    ("model", "_target_"): None, ("model", "kwargs"): {}, ("dataset", "_target_"): None, ("dataset", "kwargs"): {},
    # dynamic sparse training, distributions and patterns (issue 28)
    ("pruning", "distribution"): "uniform", ("pruning", "densities"): {}, ("pruning", "n_m"): [2, 4],
    ("pruning", "block"): [4, 4], ("pruning", "dynamic"): dataclasses.asdict(DynamicConfig()), ("pruning", "ste_decay"): 0.0,
    ("pruning", "score_fn"): None, ("pruning", "scored_at"): "final", ("pruning", "head"): None,
    # ImageNet's crops (issue 30, lth.data.imagenet_augment)
    ("dataset", "crop"): None,
}


# Dataset settings that only say where data lives or whether it may be fetched.
# `stream`/`stream_dir` (issue 30) say where the training bytes come from, not which: a streamed run
# and an in-memory run of the same settings are the same run (directory).
UNHASHED_DATASET_KEYS = ("tfds_data_dir", "tfds_manual_dir", "download", "stream", "stream_dir")

# Training settings that change speed, never results: `unroll` (issue 32) unrolls the compiled loop,
# the same steps in the same order (bit-identical, tests/test_train.py).
UNHASHED_TRAIN_KEYS = ("unroll",)
