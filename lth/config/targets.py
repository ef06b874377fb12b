"""A researcher's own model, data and pruning score (issue 26): how the config names them and how a run's hash identifies them.

Command line, by Hydra's `_target_` convention (other keys are the target's arguments):

    model=custom model._target_=my_models.TinyNet +model.features=48
    dataset=custom dataset._target_=my_data.load +dataset.n_train=1500
    pruning.method=custom pruning.score_fn=my_scores.taylor [pruning.scored_at=init]

Python: `lth.run(cfg, model=TinyNet(features=48), data={"x_train": ..., ...})` and
`lth.register_method(name, fn, scored_at=...)`.

Identity: a target's dotted path and arguments are settings, so part of the run hash; a model
object enters as its class path and fields (`describe`), arrays as their content hash (`inputs`).
A target that does not import is a `ConfigError` naming it (`import_target`), raised before
anything is written (`lth.lottery.levels.prepare` builds the model and loads the data first).

Where the components are used: `lth.models.custom` (a model target built and called by lth's
convention), `lth.data.custom` (a data target's arrays checked and split as built-in data),
`lth.sparsity.custom_scores` (score functions: `register_method`, `ScoreContext`). `lth.user_components`
re-exports all of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
from typing import Any, Mapping, Optional

import numpy as np
from flax import linen as nn

from lth.config import registry
from lth.config.schema import Config, ConfigError, ModelConfig

ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def import_target(setting: str, dotted: Optional[str]) -> Any:
    """The object `module.name` (or `module.Outer.name`) that setting `setting` names."""
    if not dotted or "." not in dotted:
        raise ConfigError(f"{setting}={dotted!r}: name a Python object as module.name (e.g. my_models.TinyNet), "
                          "importable from the working directory or PYTHONPATH")
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as e:
            if e.name and not ".".join(parts[:cut]).startswith(e.name):
                raise ConfigError(f"{setting}={dotted!r}: importing {'.'.join(parts[:cut])} failed: {e}") from None
            continue
        except Exception as e:  # the user's module raised while importing
            raise ConfigError(f"{setting}={dotted!r}: importing {'.'.join(parts[:cut])} failed: {type(e).__name__}: {e}") from None
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            raise ConfigError(f"{setting}={dotted!r}: module {'.'.join(parts[:cut])} has no {'.'.join(parts[cut:])}") from None
        return obj
    raise ConfigError(f"{setting}={dotted!r}: no module {parts[0]!r} to import (is its folder on PYTHONPATH?)")


def dotted_name(obj: Any) -> str:
    """`module.qualname` of a class or function (of an object: of its class)."""
    if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isbuiltin(obj)):
        obj = type(obj)
    return f"{obj.__module__}.{obj.__qualname__}"


def identity(value: Any) -> Any:
    """A JSON value that identifies `value` in a run hash: numbers, strings, lists and dicts as
    they are, arrays by content hash, classes and functions by dotted path, Flax modules by class
    path and fields, anything else by its repr (without a memory address)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [identity(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): identity(v) for k, v in value.items()}
    if isinstance(value, np.ndarray) or hasattr(value, "__array__") and hasattr(value, "dtype"):
        return {"sha256": content_hash({"a": np.asarray(value)})}
    if inspect.isclass(value) or callable(value) and not isinstance(value, nn.Module) and not dataclasses.is_dataclass(value):
        return dotted_name(value)
    if isinstance(value, nn.Module) or dataclasses.is_dataclass(value):
        return {"_target_": dotted_name(value), **module_fields(value)}
    text = repr(value)
    return dotted_name(value) if " at 0x" in text else text


def module_fields(module: Any) -> dict[str, Any]:
    """A module's (dataclass's) fields by identity, without Flax's `parent` and `name`."""
    return {f.name: identity(getattr(module, f.name)) for f in dataclasses.fields(module)
            if f.name not in ("parent", "name") and f.init}


def content_hash(arrays: Mapping[str, Any]) -> str:
    """SHA-256 of arrays by name: each one's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(np.asarray(arrays[k]))
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class Supplied:
    """What `lth.run` was handed besides the config: a model object and/or data arrays."""

    model: Optional[nn.Module] = None
    data: Optional[Mapping[str, Any]] = None


def describe(cfg: Config, supplied: Supplied) -> Config:
    """`cfg` saying which user components it runs: a model object as `model=custom` with its class
    path and fields, data arrays as `dataset=custom` (their content hash enters through `inputs`),
    a registered method's function as `pruning.score_fn` (and its `scored_at`)."""
    changes = {}
    if supplied.model is not None:
        if not isinstance(supplied.model, nn.Module):
            raise ConfigError(f"lth.run(model=...): {type(supplied.model).__name__} is not a Flax Linen module")
        changes["model"] = ModelConfig(name="custom", _target_=dotted_name(supplied.model), kwargs=module_fields(supplied.model))
    if supplied.data is not None:
        from lth.config import defaults

        d = cfg.dataset  # a val_size set in the config is kept; the replaced dataset's own one becomes custom's (0)
        own = defaults.option_values("dataset", d.name).get("val_size")
        val_size = d.val_size if d.name == "custom" or d.val_size not in (None, own) else defaults.option_values("dataset", "custom")["val_size"]
        changes["dataset"] = dataclasses.replace(d, name="custom", _target_=None, kwargs={}, val_size=val_size)
    p = cfg.pruning
    if p.method in registry.METHODS:
        m = registry.METHODS[p.method]
        changes["pruning"] = dataclasses.replace(p, score_fn=dotted_name(m.fn), scored_at=m.scored_at)
    return dataclasses.replace(cfg, **changes) if changes else cfg


def check(cfg: Config, supplied: Supplied) -> None:
    """Refuse a custom model or dataset without a target (settings only; importing happens when
    the model is built and the data loaded)."""
    if cfg.model.name == "custom" and supplied.model is None and not cfg.model._target_:
        raise ConfigError("model=custom needs model._target_=module.Class (a Flax module), or lth.run(cfg, model=...)")
    if cfg.model._target_ and cfg.model.name != "custom":
        raise ConfigError(f"model._target_={cfg.model._target_!r} is for model=custom, not model={cfg.model.name}")
    if cfg.dataset.name == "custom" and supplied.data is None and not cfg.dataset._target_:
        raise ConfigError("dataset=custom needs dataset._target_=module.function (returning x_train, y_train, x_test, "
                          "y_test), or lth.run(cfg, data=...)")
    if cfg.dataset._target_ and cfg.dataset.name != "custom":
        raise ConfigError(f"dataset._target_={cfg.dataset._target_!r} is for dataset=custom, not dataset={cfg.dataset.name}")


def inputs(supplied: Supplied) -> dict[str, Any]:
    """What identifies supplied arrays in the run hash: their content hash."""
    return {"data": content_hash({k: supplied.data[k] for k in ARRAYS})} if supplied.data is not None else {}


