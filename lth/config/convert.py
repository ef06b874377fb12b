"""Conversions of a configuration: a `Config` from a nested dict (`from_dict`, type-checked; `structured_schema`
for Hydra), back to a dict (`to_dict`), with the group defaults filled in (`resolve`), and where its data lives
(`data_dir`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from lth.config import defaults as _defaults, method_settings as _settings
from lth.config.errors import ConfigError
from lth.config.sections import Config


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
    OmegaConf.set_struct(schema.pruning.densities, False)
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
