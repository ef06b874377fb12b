"""The allowed values of the settings that name one of a few choices (`lth.config.validation` checks them).
"""

from __future__ import annotations

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "inv", "linear")
SCOPES = ("global", "layerwise", "module")
METHODS = ("magnitude", "random", "snip", "grasp", "synflow", "magnitude_at_init", "rigl", "set", "static", "magnitude_ste",
           "custom")  # custom last
# pruning.schedule=dynamic: one run at a fixed density (lth.sparsity.dynamic; magnitude_ste: lth.sparsity.ste)
DYNAMIC_METHODS = ("rigl", "set", "static", "magnitude_ste")
PRUNING_SCHEDULES = ("iterative", "linear", "oneshot", "gradual", "dynamic")
GRANULARITIES = ("weight", "neuron", "channel", "n:m", "block")  # n:m, block: lth.sparsity.patterns
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
DISTRIBUTIONS = ("uniform", "erk", "er", "custom")  # pruning.distribution (lth.sparsity.allocation)
DROP_DECAYS = ("cosine", "constant")  # pruning.dynamic.drop_decay
