"""A researcher's own model (`model=custom model._target_=...`, or `lth.run(cfg, model=...)`).

A model target is a Flax Linen module class, an NNX module class (through
`flax.nnx.bridge.ToLinen`) or a function returning a Linen module; `num_classes` is passed when it
takes one. Its `__call__` may take `train` or not (`Adapted` gives it lth's convention,
`model.apply(variables, x, train=...)`, with its parameters where they were). Its output layer
(`head_path`: the last dense layer it calls) becomes `pruning.head` (`with_head`), so that
patterns naming `head` reach it. A target that does not build, or returns the wrong thing, is a
`ConfigError` naming it. (Naming and identity of targets: `lth.config.targets`.)
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping, Optional

import numpy as np
from flax import linen as nn

from lth.config.schema import Config, ConfigError, ModelConfig
from lth.config.targets import import_target


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
