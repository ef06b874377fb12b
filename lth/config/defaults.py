"""Group defaults: one place for what a model, dataset or optimizer sets, for Python and the CLI.

A setting whose value depends on the chosen model, dataset or optimizer (LeNet's Glorot normal
initialiser, MNIST's 5,000 validation examples, SGD's learning rate) is `None` in the schema
(`lth.config`) and lives only in that option's YAML file, `conf/<group>/<name>.yaml`. Hydra merges
the file when the command line picks the option (`model=lenet_300_100`); `fill` reads the same
file for a config built in Python (`Config(model=ModelConfig(name="lenet_300_100"))`), so both
get the same values:

    value = explicit setting, if given
          = conf/<group>/<name>.yaml's value, else     (conf/dataset/tfds.yaml for a TFDS name)
          = None: the option does not use the setting (an MLP has no BatchNorm)

A model setting that stays `None` is not used by that model: it is not shown as a number in
`config.yaml` or W&B, and a value given for it is refused (`unused`). The run hash keeps the
values older versions of lth stored for such settings (`LEGACY_HASH_VALUES`), so runs made before
keep their directories.

This module imports nothing from lth: `lth.config` uses it, not the other way round.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

CONF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "conf")

# Per group, the settings that take their default from the option's YAML file.
GROUP_FIELDS = {
    "model": ("widths", "init", "width_multiplier", "bn_scale_init", "bn_momentum", "stage1_projection", "residual",
              "layers", "hidden", "heads", "intermediate", "vocab_size", "max_len", "dropout", "pooling"),
    "dataset": ("val_size",),
    "optimizer": ("lr", "momentum", "weight_decay"),
}
# What the run hash used for a setting an option does not use (the values lth stored before these
# settings became option-specific).
LEGACY_HASH_VALUES = {
    "model": {"widths": [500, 500], "width_multiplier": 1, "bn_scale_init": "ones"},
    "optimizer": {"momentum": 0.0, "weight_decay": 0.0},
}


@functools.lru_cache(maxsize=None)
def group_file(group: str, name: str) -> dict[str, Any] | None:
    """The values of `conf/<group>/<name>.yaml` (comments and `defaults:` left out), or None when
    there is no such file."""
    path = os.path.join(CONF_DIR, group, f"{name}.yaml")
    if not os.path.exists(path):
        return None
    import yaml

    with open(path) as f:
        text = f.read()
    data = {k: v for k, v in (yaml.safe_load(text) or {}).items() if k != "defaults"}
    if "@package _global_" in text:  # the option also sets other sections (bert: pruning.prunable)
        return {**(data.pop(group, None) or {}), GLOBAL: data}
    return data


GLOBAL = "__global__"  # in a `# @package _global_` option's values: what it sets outside its group


def option_values(group: str, name: str) -> dict[str, Any]:
    """The settings option `name` of `group` gives (empty when it has no file); a dataset name
    without a file of its own is a TFDS name and takes `conf/dataset/tfds.yaml`'s values."""
    values = group_file(group, name)
    if values is None and group == "dataset":
        values = group_file("dataset", "tfds")
    return {k: v for k, v in (values or {}).items() if k != GLOBAL}


def global_values(group: str, name: str) -> dict[str, Any]:
    """What option `name` of `group` sets outside its group ({section: {key: value}}): BERT's
    prunable matrices, set by `conf/model/bert.yaml`."""
    return dict((group_file(group, name) or {}).get(GLOBAL, {}))


def fill(section, group: str):
    """`section` (a dataclass of `group`) with each of its option-specific settings that is None
    taken from its option's file; returns a new dataclass (or `section` itself if nothing changes)."""
    values = option_values(group, section.name)
    changes = {f: values[f] for f in GROUP_FIELDS[group] if getattr(section, f) is None and values.get(f) is not None}
    if not changes:
        return section
    changes = {k: list(v) if isinstance(v, list) else v for k, v in changes.items()}
    return dataclasses.replace(section, **changes)


def uses(group: str, name: str) -> tuple[str, ...] | None:
    """The option-specific settings option `name` uses (those its file lists), or None when the
    option has no file (a name lth does not know: nothing to check)."""
    values = group_file(group, name)
    if values is None:
        return None
    return tuple(f for f in GROUP_FIELDS[group] if f in values)


def fill_global(cfg, group: str, section):
    """`cfg` with the other sections' settings that option `section.name` sets (`global_values`),
    where `cfg` still has the schema's default for them (as Hydra merges the option over the
    schema, and the user's values over both)."""
    changes = {}
    for sec, values in global_values(group, section.name).items():
        current = getattr(cfg, sec)
        fresh = type(current)()
        upd = {k: v for k, v in values.items() if getattr(current, k) == getattr(fresh, k)}
        if upd:
            changes[sec] = dataclasses.replace(current, **upd)
    return dataclasses.replace(cfg, **changes) if changes else cfg


def unused(section, group: str) -> list[str]:
    """The option-specific settings given a value that option `section.name` does not use."""
    used = uses(group, section.name)
    if used is None:
        return []
    return [f for f in GROUP_FIELDS[group] if f not in used and getattr(section, f) is not None]


def for_hash(group: str, values: dict[str, Any]) -> dict[str, Any]:
    """`values` (a section as a dict) with the unused settings at the values older runs hashed, or
    left out when they came after those runs (as every setting added later is at its default)."""
    out = dict(values)
    legacy = LEGACY_HASH_VALUES.get(group, {})
    for key in GROUP_FIELDS.get(group, ()):
        if key in out and out[key] is None:
            if key in legacy:
                out[key] = legacy[key]
            else:
                out.pop(key)
    return out
