"""Typed configuration of a lottery-ticket run: the one place to import it from.

The dataclasses are the schema of every setting (`lth.config.sections`). Hydra composes the YAML groups
under `conf/` on top of them (registered in its ConfigStore by `experiments/lottery.py`), so a misspelt
key or a wrongly typed value fails when the config is composed. The library itself never imports
Hydra: it takes a `Config` (`from_dict`, `lth.config.convert`) and `validate` (`lth.config.validation`)
checks the values that a type cannot express (ranges, durations, names), before any work starts. The
allowed values are `lth.config.choices`; which settings name a run directory, `lth.config.hashing`.

This module holds no code of its own: it gathers those modules' names, so that
`from lth.config.schema import Config, from_dict, validate` (and the old `lth.config` names) keep working.
"""

from __future__ import annotations

from lth.config.choices import (  # noqa: F401
    ABLATIONS,
    BIAS_INITS,
    BN_SCALE_INITS,
    BRANCH_MASKS,
    BRANCH_WEIGHTS,
    CIFAR_RESNETS,
    CONTROLS,
    DATA_ORDERS,
    DATA_SOURCES,
    DTYPES,
    GRANULARITIES,
    INITS,
    METHODS,
    NORMALIZATIONS,
    OPTIMIZER_STATE_MODES,
    OPTIMIZERS,
    PRUNING_SCHEDULES,
    REWIND_MODES,
    SCHEDULES,
    SCOPES,
    TEXT_TASKS,
    WANDB_MODES,
)
from lth.config.convert import _from_dict, data_dir, from_dict, resolve, structured_schema, to_dict  # noqa: F401
from lth.config.errors import ConfigError  # noqa: F401
from lth.config.hashing import HASH_OMITTED_AT_DEFAULT, HASHED_SECTIONS, UNHASHED_DATASET_KEYS, UNHASHED_TRAIN_KEYS  # noqa: F401
from lth.config.sections import (  # noqa: F401
    BranchConfig,
    BudgetConfig,
    CheckpointConfig,
    CompressConfig,
    Config,
    DatasetConfig,
    DevicesConfig,
    DynamicConfig,
    ExportConfig,
    GradualConfig,
    InitConfig,
    InstabilityConfig,
    LoggerConfig,
    ModelConfig,
    OptimizerConfig,
    PathsConfig,
    PruningConfig,
    RewindConfig,
    ScheduleConfig,
    TrainConfig,
    WandbConfig,
)
from lth.config.validation import _choice, _validate_pruning_method, validate  # noqa: F401
