"""A researcher's own model, data and pruning score (issue 26), from the command line or Python.

Command line, by Hydra's `_target_` convention (other keys are the target's arguments):

    model=custom model._target_=my_models.TinyNet +model.features=48
    dataset=custom dataset._target_=my_data.load +dataset.n_train=1500
    pruning.method=custom pruning.score_fn=my_scores.taylor [pruning.scored_at=init]

Python: `lth.run(cfg, model=TinyNet(features=48), data={"x_train": ..., ...})` and
`lth.register_method(name, fn, scored_at=...)`.

- A model target is a Flax Linen module class, an NNX module class (through
  `flax.nnx.bridge.ToLinen`) or a function returning a Linen module; `num_classes` is passed when
  it takes one. Its `__call__` may take `train` or not (`Adapted` gives it lth's convention,
  `model.apply(variables, x, train=...)`, with its parameters where they were).
- A data target returns a mapping of NumPy arrays `x_train, y_train, x_test, y_test` (optional
  `num_classes`); the validation split, normalisation and augmentation then apply as for built-in
  data (`lth.data.load_dataset`).
- A score function takes a `ScoreContext` and returns scores shaped like `ctx.params`; lth's
  exact-count engine prunes the lowest (`lth.sparsity.methods`).

Identity: a target's dotted path and arguments are settings, so part of the run hash; a model
object enters as its class path and fields (`describe`), arrays as their content hash (`inputs`).
A target that does not import, or returns the wrong thing, is a `ConfigError` naming it, raised
before anything is written (`lth.lottery.levels.prepare` builds the model and loads the data first).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
from typing import Any, Callable, Mapping, Optional

import numpy as np
from flax import linen as nn

from lth.config import registry
from lth.config.schema import Config, ConfigError, DatasetConfig, ModelConfig

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


# -- models ---------------------------------------------------------------------------------------

class Adapted(nn.Module):
    """A user module called by lth's convention, `apply(variables, x, train=...)`, whatever its
    `__call__` takes; its parameters stay where they were (the scope is shared, not nested)."""

    inner: nn.Module
    takes_train: bool

    def setup(self):
        nn.share_scope(self, self.inner)

    def __call__(self, x, train: bool = False):
        return self.inner(x, train=train) if self.takes_train else self.inner(x)


def _takes(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def adapt(module: nn.Module) -> nn.Module:
    """`module` with lth's call convention (itself when its `__call__` takes `train`)."""
    call = getattr(module, "nnx_class", type(module)).__call__
    return module if _takes(call, "train") else Adapted(module, takes_train=False)


def build_model(cfg: ModelConfig, num_classes: int, obj: Optional[nn.Module] = None) -> nn.Module:
    """The researcher's module: `obj` (from Python) or `model._target_` built with `model.kwargs`,
    with `num_classes` when it takes one and is not given."""
    kwargs = dict(cfg.kwargs)
    if obj is not None:
        if not isinstance(obj, nn.Module):
            raise ConfigError(f"lth.run(model=...): {type(obj).__name__} is not a Flax Linen module (an NNX module "
                              "goes through flax.nnx.bridge.ToLinen(cls, kwargs=...))")
        if "num_classes" in {f.name for f in dataclasses.fields(obj)}:
            obj = obj.clone(num_classes=num_classes)
        return adapt(obj)
    setting = "model._target_"
    target = import_target(setting, cfg._target_)
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover - flax without NNX
        nnx = None
    try:
        if nnx is not None and inspect.isclass(target) and issubclass(target, nnx.Module):
            if _takes(target.__init__, "num_classes"):
                kwargs.setdefault("num_classes", num_classes)
            from flax.nnx import bridge

            module = bridge.ToLinen(target, kwargs=kwargs)
        else:
            if not callable(target):
                raise ConfigError(f"{setting}={cfg._target_!r} is a {type(target).__name__}, not a Flax module class or a function")
            takes = ({f.name for f in dataclasses.fields(target)} if inspect.isclass(target) and issubclass(target, nn.Module)
                     else set(inspect.signature(target).parameters))
            if "num_classes" in takes:
                kwargs.setdefault("num_classes", num_classes)
            module = target(**kwargs)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"{setting}={cfg._target_!r} with arguments {kwargs}: {type(e).__name__}: {e}") from None
    if not isinstance(module, nn.Module):
        raise ConfigError(f"{setting}={cfg._target_!r} returned a {type(module).__name__}, not a Flax Linen module")
    return adapt(module)


def head_path(model: nn.Module, params: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int) -> Optional[str]:
    """The output layer's parameter path: the last module called whose `kernel` is 2-D (dense),
    else the last 2-D kernel (in path order) with `num_classes` outputs, else None."""
    import jax
    import jax.numpy as jnp
    from flax import traverse_util

    flat = traverse_util.flatten_dict(params, sep="/")
    dense = {p.rsplit("/", 1)[0] for p, v in flat.items() if p.endswith("/kernel") and np.ndim(v) == 2}
    order: list[str] = []

    def record(next_fun, args, kwargs, context):
        path = "/".join(context.module.scope.path) if context.module.scope is not None else ""
        if path in dense:
            order.append(path)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(lambda: model.apply({"params": params}, jnp.zeros((1, *input_shape), jnp.float32), train=False))
    if order:
        return order[-1]
    shaped = sorted(p for p in dense if np.shape(flat[p + "/kernel"])[-1] == num_classes)
    return shaped[-1] if shaped else None


# -- data -----------------------------------------------------------------------------------------

def load_data(cfg: DatasetConfig, arrays: Optional[Mapping[str, Any]] = None):
    """`lth.data.RawSplits` of the researcher's arrays: `arrays` (from Python) or what
    `dataset._target_` returns when called with `dataset.kwargs`."""
    from lth.data.dataset import RawSplits, channel_stats

    if arrays is None:
        setting = f"dataset._target_={cfg._target_!r}"
        fn = import_target("dataset._target_", cfg._target_)
        if not callable(fn):
            raise ConfigError(f"{setting} is a {type(fn).__name__}, not a function returning arrays")
        try:
            arrays = fn(**cfg.kwargs)
        except Exception as e:
            raise ConfigError(f"{setting} with arguments {dict(cfg.kwargs)}: {type(e).__name__}: {e}") from None
    else:
        setting = "lth.run(data=...)"
    if not isinstance(arrays, Mapping) or any(k not in arrays for k in ARRAYS):
        got = sorted(arrays) if isinstance(arrays, Mapping) else type(arrays).__name__
        raise ConfigError(f"{setting} gave {got}; it must return a mapping of NumPy arrays {', '.join(ARRAYS)} "
                          "(and optionally num_classes)")
    a = {k: np.asarray(arrays[k]) for k in ARRAYS}
    for split in ("train", "test"):
        x, y = a[f"x_{split}"], a[f"y_{split}"]
        if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or not len(x):
            raise ConfigError(f"{setting}: x_{split} {x.shape} and y_{split} {y.shape} must be N examples and N labels (N > 0)")
        if not np.issubdtype(y.dtype, np.integer):
            raise ConfigError(f"{setting}: y_{split} has dtype {y.dtype}; labels are integer class indices 0 .. C-1")
    if a["x_train"].shape[1:] != a["x_test"].shape[1:]:
        raise ConfigError(f"{setting}: x_train examples have shape {a['x_train'].shape[1:]}, x_test {a['x_test'].shape[1:]}")
    for k in ("x_train", "x_test"):
        if np.issubdtype(a[k].dtype, np.floating) and a[k].dtype != np.float32:
            a[k] = a[k].astype(np.float32)
    ys = np.concatenate([a["y_train"], a["y_test"]])
    num_classes = int(arrays.get("num_classes") or int(ys.max()) + 1)
    if ys.min() < 0 or ys.max() >= num_classes:
        raise ConfigError(f"{setting}: labels run from {ys.min()} to {ys.max()}; they must lie in 0 .. num_classes-1 = {num_classes - 1}")
    scale = 255.0 if a["x_train"].dtype == np.uint8 else 1.0
    x = a["x_train"]
    mean, std = channel_stats(x[..., None] if x.ndim == 2 else x, scale)
    name = cfg._target_.rsplit(".", 1)[0] if cfg._target_ else "custom"
    return RawSplits(name=name, x_train=x, y_train=a["y_train"].astype(np.int32), x_test=a["x_test"],
                     y_test=a["y_test"].astype(np.int32), num_classes=num_classes, mean=mean, std=std, scale=scale,
                     info={"source": cfg._target_ or "lth.run(data=...)", "sha256": content_hash(a)})


# -- identity -------------------------------------------------------------------------------------

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


def register_method(name: str, fn: Callable[[Any], Any], *, scored_at: str = "final") -> None:
    """Make `pruning.method=name` score with `fn(ctx)` (a `ScoreContext`), at the previous level's
    `final` weights (as magnitude pruning) or at the rewind point, `init` (as SNIP)."""
    from lth.config.schema import METHODS

    if name in METHODS:
        raise ConfigError(f"lth.register_method: {name!r} is a built-in pruning method; choose another name")
    if scored_at not in registry.SCORED_AT:
        raise ConfigError(f"lth.register_method: scored_at={scored_at!r} is not one of {', '.join(registry.SCORED_AT)}")
    if not callable(fn):
        raise ConfigError(f"lth.register_method: fn is a {type(fn).__name__}, not a function of a ScoreContext")
    registry.METHODS[name] = registry.UserMethod(name, fn, scored_at)


def score_function(cfg: Config) -> Callable[[Any], Any]:
    """The score function of `pruning.method` (custom: `pruning.score_fn` imported)."""
    if cfg.pruning.method in registry.METHODS:
        return registry.METHODS[cfg.pruning.method].fn
    fn = import_target("pruning.score_fn", cfg.pruning.score_fn)
    if not callable(fn):
        raise ConfigError(f"pruning.score_fn={cfg.pruning.score_fn!r} is a {type(fn).__name__}, not a function")
    return fn


@dataclasses.dataclass(frozen=True)
class ScoreContext:
    """What a score function sees, for one replicate at one pruning step: `params` (the weights it
    scores, masked: the previous level's final ones, or the rewind point's), `grads` (the mean
    loss gradient at `params` over `xs, ys`, `pruning.score_batches` training batches of this
    replicate's data order, in training mode), `key` (a PRNG key of this seed, replicate, method
    and level), the current `mask`, `batch_stats`, the `level` being made, the `replicate`, the
    `model` (`model.apply({"params": p}, x, train=False)`) and the prunable `paths`."""

    params: Any
    grads: Any
    key: Any
    mask: Any
    batch_stats: Any
    level: int
    replicate: int
    xs: Any
    ys: Any
    model: Any
    paths: tuple[str, ...]


def checked_scores(cfg: Config, scores: Any, params: Any) -> Any:
    """`scores` as host float arrays shaped like `params`, or a ConfigError naming the function."""
    import jax

    name = f"pruning.score_fn={cfg.pruning.score_fn!r}"
    if jax.tree.structure(scores) != jax.tree.structure(params):
        raise ConfigError(f"{name} returned {jax.tree.structure(scores)}; it must return scores shaped like ctx.params, "
                          f"{jax.tree.structure(params)}")
    out = jax.tree.map(lambda s: np.asarray(jax.device_get(s), np.float64), scores)
    for s, p in zip(jax.tree.leaves(out), jax.tree.leaves(params)):
        if s.shape != np.shape(p):
            raise ConfigError(f"{name} returned a score array of shape {s.shape} for a parameter of shape {np.shape(p)}")
        if not np.all(np.isfinite(s)):
            raise ConfigError(f"{name} returned non-finite scores (NaN or inf); scores must be finite numbers")
    return out


def with_head(cfg: Config, model: nn.Module, params: Any, input_shape: tuple[int, ...], num_classes: int) -> Config:
    """`cfg` with `pruning.head` found for a custom model (the last dense layer it calls), so that
    patterns naming `head` (`pruning.fractions={head: 0.1}`) reach its output layer; a `pruning.head`
    that names no layer is refused."""
    from flax import traverse_util

    head = cfg.pruning.head
    modules = sorted({p.rsplit("/", 1)[0] for p in traverse_util.flatten_dict(params, sep="/")})
    if head is not None:
        if head not in modules:
            raise ConfigError(f"pruning.head={head!r} names no layer of the model; its layers: {', '.join(modules)}")
        return cfg
    if cfg.model.name != "custom":
        return cfg
    found = head_path(model, params, input_shape, num_classes)
    return dataclasses.replace(cfg, pruning=dataclasses.replace(cfg.pruning, head=found)) if found else cfg
