"""FLOPs of a (pruned) network: dense, unstructured-sparse and effective multiply-accumulates.

Convention: one multiply-accumulate (MAC) is one FLOP, as in AMC (He et al. 2018) and Deep
Compression (Han et al. 2016); double the numbers for "a multiply and an add are two FLOPs".
Only the kernels of convolutions (`flax.linen.Conv`, which `lth.models.cpu_conv.Conv` builds) and
dense layers (`flax.linen.Dense`) are counted; biases, BatchNorm, activations, pooling and residual
additions are not (they are a fraction of a percent of the total). All counts are per example
(batch 1), for one replicate's (unstacked) trees.

For a layer whose output has `positions` spatial positions per example (H_out x W_out for a
convolution, 1 for a dense layer on a (B, features) input):

- dense = kernel.size x positions: the unpruned network.
- unstructured = (alive kernel weights) x positions: what kernels that skip every pruned weight
  would compute.
- effective = (alive kernel weights whose input channel can be nonzero and whose output channel
  is used downstream) x positions. Removing whole filters (structured pruning) removes more than
  their own weights: a removed filter's output channel is exactly zero, so the matching input
  channel of the next layer multiplies zeros (forward cascade), and a channel whose every
  consumer is pruned need not be computed at all (backward cascade). A channel is not dead when
  something else makes it nonzero: an alive bias (of the layer itself or of the BatchNorm after
  it) makes it a constant, a residual connection carries the block's input. So structured
  pruning must also mask the bias / BatchNorm scale and bias of a removed channel for the
  cascade to show here.

"Alive" is structural, decided by the mask alone (True = alive): an alive weight that happens to
be 0.0 now (a zero-initialised bias) can become nonzero in training. With `zeros_are_pruned=True`
a weight must also be nonzero in `variables` to count as alive.

How the channels are found, without knowing the model's structure (in the spirit of SynFlow's
linearisation, Tanaka et al. 2020): one forward pass of the real model in evaluation mode on an
all-ones input, with every parameter leaf replaced by its 0/1 alive indicator (so masks apply to
every leaf, BatchNorm scales and biases included) and running statistics mean 0, variance 1.
Every operation of the supported models (ReLU, BatchNorm in evaluation mode, max / average
pooling, residual additions, reshapes) maps non-negative values to non-negative values, so every
activation is >= 0 and is exactly 0 iff no alive path reaches it (from the input or from an alive
bias): this is the largest support any weights with this mask can give. Each Conv/Dense call is
intercepted (`flax.linen.intercept_methods`), which gives its module path, input and output. An
input channel (the last axis; each feature of a dense layer) is alive when it is > 0 at some
position. Values cannot overflow: each intercepted layer sees its input and returns its output
binarised to 0/1 (a positive value is replaced by 1, which keeps every zero pattern downstream),
so activations stay below a few times the depth.

The backward cascade is one vector-Jacobian product of the summed logits through the same probe,
with the 0/1 binarisation passing the cotangent's own 0/1 indicator back (a straight-through
estimator), so cotangents are >= 0, bounded, and > 0 exactly where a channel reaches the output
through alive weights (ReLU passes no gradient where the probe's pre-activation is 0, i.e. where
the channel is zero for every input). A layer's output channel is used when its cotangent is > 0
somewhere.

Caveats: the probe assumes every operation between the intercepted layers preserves
non-negativity (true of every model in `lth.models` but BERT, which says so with
`flop_cascade = False` and gets dense and unstructured counts only: effective = unstructured); a model with LayerNorm, tanh or a
subtraction would break it, and `count_flops` raises when a layer's input is negative or not
finite. Channels are counted per channel, not per position (a channel alive only near a border
counts at every position). Layers other than Conv and Dense (ConvTranspose, Einsum, attention
products) are not counted. A module called twice gives two rows with the same path.

Example:

    >>> import jax, jax.numpy as jnp
    >>> from lth.config import ModelConfig
    >>> from lth.sparsity.masks import ones_like
    >>> from lth.models import build_model
    >>> model = build_model(ModelConfig(name="lenet_300_100"), num_classes=10)
    >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    >>> report = count_flops(model, variables, ones_like(variables["params"]), (28, 28, 1))
    >>> report.dense, report.unstructured, report.effective
    (266200, 266200, 266200)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from lth.sparsity.masks import flatten, unflatten

PyTree = Any


@dataclasses.dataclass(frozen=True)
class LayerFlops:
    """One Conv/Dense call. MACs are per example; `*_alive` count channels (or dense features)."""

    path: str  # module path, e.g. "stage1/block0/conv1"
    kind: str  # "conv" | "dense"
    kernel_shape: tuple[int, ...]
    positions: int  # output positions per example: H_out x W_out for a conv, 1 for a dense layer
    dense: int  # kernel.size x positions
    unstructured: int  # alive kernel weights x positions
    effective: int  # alive weights with a live input channel and a used output channel, x positions
    inputs_alive: int  # input channels that can be nonzero
    inputs: int
    outputs_alive: int  # output channels with an effective weight (fed by a live input, used downstream)
    outputs: int

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["kernel_shape"] = list(self.kernel_shape)
        return d


@dataclasses.dataclass(frozen=True)
class FlopReport:
    """Per-layer rows in call order and their totals (MACs per example; one MAC = one FLOP)."""

    layers: tuple[LayerFlops, ...]

    @property
    def dense(self) -> int:
        return sum(layer.dense for layer in self.layers)

    @property
    def unstructured(self) -> int:
        return sum(layer.unstructured for layer in self.layers)

    @property
    def effective(self) -> int:
        return sum(layer.effective for layer in self.layers)

    def layer(self, path: str) -> LayerFlops:
        """The (first) row of the module at `path`."""
        for row in self.layers:
            if row.path == path:
                return row
        raise KeyError(f"no Conv/Dense layer at {path!r}; layers: {[r.path for r in self.layers]}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "unit": "MAC",
            "dense": self.dense,
            "unstructured": self.unstructured,
            "effective": self.effective,
            "layers": [row.as_dict() for row in self.layers],
        }


@jax.custom_vjp
def _binarise(x: jax.Array) -> jax.Array:
    """1 where x > 0, else 0; the cotangent's own 0/1 indicator goes back (straight through)."""
    return (x > 0).astype(x.dtype)


def _binarise_fwd(x):
    return _binarise(x), None


def _binarise_bwd(_, ct):
    return ((ct > 0).astype(ct.dtype),)


_binarise.defvjp(_binarise_fwd, _binarise_bwd)


def _kind(module: nn.Module) -> Optional[str]:
    if isinstance(module, nn.Conv):
        return "conv"
    if isinstance(module, nn.Dense):
        return "dense"
    return None


def _probe_variables(variables: Mapping[str, Any], mask: PyTree, zeros_are_pruned: bool) -> tuple[dict, dict]:
    """(probe variables, flat alive indicators of the params as numpy bool)."""
    flat_params = {k: np.asarray(v) for k, v in flatten(variables["params"]).items()}
    flat_mask = {k: np.asarray(v) for k, v in flatten(mask).items()}
    if set(flat_params) != set(flat_mask):
        missing = sorted(set(flat_params) ^ set(flat_mask))
        raise ValueError(f"the mask's paths differ from the params' (one replicate's trees expected): {missing[:5]}")
    alive = {}
    for path, p in flat_params.items():
        m = flat_mask[path]
        if m.shape != p.shape:
            raise ValueError(f"mask {path} has shape {m.shape}, the param {p.shape} (stacked replicates? unstack them)")
        a = m.astype(bool)
        if zeros_are_pruned:
            a = a & (p != 0)
        alive[path] = a
    probe = {k: v for k, v in variables.items() if k not in ("params", "batch_stats")}
    probe["params"] = unflatten({k: a.astype(np.float32) for k, a in alive.items()})
    if variables.get("batch_stats"):
        probe["batch_stats"] = unflatten(
            {
                k: (np.ones if k.endswith("var") else np.zeros)(np.shape(v), np.float32)
                for k, v in flatten(variables["batch_stats"]).items()
            }
        )
    return probe, alive


def _run(model: nn.Module, probe: PyTree, x: jax.Array, taps: Optional[list], record: list):
    """Apply the probe. Every Conv/Dense call sees its input and returns its output binarised;
    `taps[i]` (zeros) is added to the i-th layer's output, so that the cotangent of the summed
    logits with respect to it can be read. Appends one dict per layer to `record`; returns the
    sum of the logits and, per layer, (input channel > 0 somewhere, input finite and >= 0)."""

    def interceptor(next_fun, args, kwargs, context):
        kind = _kind(context.module)
        if kind is None or context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        inputs = args[0]
        y = _binarise(next_fun(_binarise(inputs), *args[1:], **kwargs))
        index = len(record)
        module = context.module
        batch_axes = tuple(range(inputs.ndim - 1))
        record.append(
            dict(
                path="/".join(str(p) for p in module.path),
                kind=kind,
                groups=int(getattr(module, "feature_group_count", 1) or 1),
                out_shape=tuple(y.shape),
                inputs=(jnp.any(inputs > 0, axis=batch_axes), jnp.all(jnp.isfinite(inputs) & (inputs >= 0))),
            )
        )
        return y if taps is None else y + taps[index]

    with nn.intercept_methods(interceptor):
        out = model.apply(probe, x, train=False)
    return jnp.sum(out), [r["inputs"] for r in record]


# The probe is traced once per model object, input shape and tree shapes (IMP's levels reuse it);
# XLA's optimisations are off: they cost seconds of compilation on a CPU and save nothing here.
@functools.partial(jax.jit, static_argnames=("model",), compiler_options={"xla_backend_optimization_level": 0})
def _probe_pass(model: nn.Module, probe: PyTree, x: jax.Array, taps: list):
    _, vjp, inputs = jax.vjp(lambda t: _run(model, probe, x, t, []), taps, has_aux=True)
    (cotangents,) = vjp(jnp.ones((), jnp.float32))
    used = [jnp.any(ct > 0, axis=tuple(range(ct.ndim - 1))) for ct in cotangents]
    return inputs, used


def count_flops(
    model: nn.Module,
    variables: Mapping[str, Any],
    mask: Optional[PyTree],
    input_shape: Sequence[int],
    *,
    zeros_are_pruned: bool = False,
) -> FlopReport:
    """Dense, unstructured and effective MACs per example of `model` under `mask` (see the module doc).

    `variables`: one replicate's `{"params": ..., "batch_stats": ...}`; `mask`: a bool pytree of
    the params' structure (None: every weight alive); `input_shape`: one example's shape without
    the batch axis, e.g. (32, 32, 3) or (784,). The model is called as
    `model.apply(probe_variables, x, train=False)`.
    """
    if mask is None:
        mask = jax.tree.map(lambda p: np.ones(np.shape(p), bool), variables["params"])
    probe, alive = _probe_variables(variables, mask, zeros_are_pruned)
    x = np.ones((1, *tuple(int(d) for d in input_shape)), np.float32)

    layers: list = []  # pass 1 (abstract): the layers in call order, their paths and output shapes
    jax.eval_shape(lambda: _run(model, probe, x, None, layers))
    if not getattr(model, "flop_cascade", True):
        # Models whose operations do not preserve non-negativity (LayerNorm, softmax: BERT) have no
        # cascade probe: every input channel counts as alive and every output as used, so
        # effective = unstructured.
        return FlopReport(layers=tuple(
            _layer_row(**{k: v for k, v in layer.items() if k != "inputs"}, in_alive=np.ones(_cin(layer, alive), bool),
                       in_valid=True, out_used=np.ones(layer["out_shape"][-1], bool), alive=alive)
            for layer in layers))
    taps = [np.zeros(layer["out_shape"], np.float32) for layer in layers]
    # Pass 2: forward and backward, reduced to per-channel booleans.
    inputs, used = jax.device_get(_probe_pass(model, probe, x, taps))
    if len(inputs) != len(layers):  # both passes trace the same model: cannot happen
        raise RuntimeError(f"the probe saw {len(inputs)} layers, the shape pass {len(layers)}")
    for layer in layers:
        del layer["inputs"]
    rows = [
        _layer_row(**layer, in_alive=np.asarray(in_alive), in_valid=bool(valid), out_used=np.asarray(out_used), alive=alive)
        for layer, (in_alive, valid), out_used in zip(layers, inputs, used)
    ]
    return FlopReport(layers=tuple(rows))


def _cin(layer: dict, alive: dict) -> int:
    """Input channels of a recorded layer: its kernel's input axis times its groups."""
    kernel = alive.get(f"{layer['path']}/kernel" if layer["path"] else "kernel")
    return int(kernel.shape[-2]) * layer["groups"] if kernel is not None else 1


def _layer_row(
    path: str,
    kind: str,
    groups: int,
    out_shape: tuple,
    in_alive: np.ndarray,
    in_valid: bool,
    out_used: np.ndarray,
    alive: dict,
) -> LayerFlops:
    kernel_path = f"{path}/kernel" if path else "kernel"
    if kernel_path not in alive:
        raise ValueError(f"{kind} layer {path!r} has no params/{kernel_path} (shared or lifted modules are not supported)")
    if not in_valid:
        raise ValueError(
            f"the FLOP probe saw a negative or non-finite input at {path!r}: the model has an operation that does "
            "not preserve non-negativity (LayerNorm, tanh, a subtraction), which count_flops does not support"
        )
    w = alive[kernel_path]  # (..., in, out) bool
    positions = math.prod(out_shape[1:-1])
    cin, cout = w.shape[-2], w.shape[-1]
    if groups == 1:
        in_for_kernel = in_alive[:, None]  # (cin, 1)
    else:  # the kernel's input index i of output o reads channel (o // (cout / groups)) * cin + i
        group_of_out = np.arange(cout) // (cout // groups)
        in_for_kernel = in_alive.reshape(groups, cin)[group_of_out].T  # (cin, cout)
    effective_w = w & in_for_kernel & out_used[None, :]
    return LayerFlops(
        path=path,
        kind=kind,
        kernel_shape=tuple(int(d) for d in w.shape),
        positions=int(positions),
        dense=int(w.size) * positions,
        unstructured=int(w.sum()) * positions,
        effective=int(effective_w.sum()) * positions,
        inputs_alive=int(in_alive.sum()),
        inputs=int(in_alive.size),
        outputs_alive=int(np.any(effective_w, axis=tuple(range(w.ndim - 1))).sum()),
        outputs=int(cout),
    )


__all__ = ["FlopReport", "LayerFlops", "count_flops"]


def member_flops(model, input_shape, host) -> list[FlopReport]:
    """`count_flops` of every member of stacked host states (`params`, `batch_stats`, `mask` with a
    leading member axis), e.g. one level's tickets."""
    n = jax.tree.leaves(host.mask)[0].shape[0]
    out = []
    for r in range(n):
        one = jax.tree.map(lambda x: x[r], {"params": host.params, "batch_stats": host.batch_stats, "mask": host.mask})
        variables = {"params": one["params"], **({"batch_stats": one["batch_stats"]} if one["batch_stats"] else {})}
        out.append(count_flops(model, variables, one["mask"], tuple(input_shape)))
    return out
