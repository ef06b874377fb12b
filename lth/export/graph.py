"""A trained lth model as a plain list of layers: what the shrinking, the ONNX writer and the
serialized JAX program all read.

Why a list and not the Flax module: removing units changes every width, and the two output
formats need the network spelled out layer by layer anyway. `layers(model_cfg, params,
batch_stats)` reads the architecture from the model's settings (the same plans `lth.models`
builds from) and the weights from its trees; `forward(ops, x)` computes exactly what the Flax
model computes in evaluation mode (the tests compare them), in plain `jax.numpy`, for any widths.

Ops (NHWC images, as `lth.models`): `Dense(kernel (in, out), bias)`, `Conv(kernel (h, w, in, out),
bias, pads)`, `BatchNorm(scale, bias, mean, var, eps)`, `Relu()`, `MaxPool()` (2x2, stride 2,
valid), `Flatten()` (row-major over (H, W, C), as `x.reshape(B, -1)`), `GlobalMean()` (mean over
H, W), `Residual(body, shortcut)` (`body(x) + shortcut(x)`, an empty shortcut being the identity:
a ResNet block before its final ReLU). A Dense or Conv with `scale` holds int8 weights
(`compress.method=int8`): its float32 kernel is exactly `q * scale` (`int8_codes` gives q), and
`forward` and the serialized program compute it from the int8 codes. Supported: `mlp` (not residual), `lenet_300_100`,
`conv2/4/6`, `lenet5`, `vgg11..19`, the CIFAR ResNets `resnet20..110`. The ImageNet ResNets and
BERT are refused with a `ConfigError` saying so.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Union

import jax.numpy as jnp
import numpy as np
from jax import lax

from lth.config.schema import ConfigError, ModelConfig
from lth.models.batch_norm import EPSILON

RESNETS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")
SUPPORTED = ("mlp", "lenet_300_100", "conv2", "conv4", "conv6", "lenet5", "vgg11", "vgg13", "vgg16", "vgg19") + RESNETS


@dataclasses.dataclass
class Dense:
    name: str
    kernel: np.ndarray  # (in, out)
    bias: np.ndarray  # (out,)
    scale: np.ndarray | None = None  # int8 weights: kernel == q * scale, q int8, scale per output unit


@dataclasses.dataclass
class Conv:
    name: str
    kernel: np.ndarray  # (h, w, in, out)
    bias: np.ndarray | None  # (out,); None: no bias (the ResNets' convolutions)
    pads: tuple[int, int]  # (height, width) padding on each side
    strides: int = 1
    scale: np.ndarray | None = None  # int8 weights: kernel == q * scale, q int8, scale per output channel


@dataclasses.dataclass
class BatchNorm:
    name: str
    scale: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float = EPSILON


@dataclasses.dataclass
class Relu:
    pass


@dataclasses.dataclass
class MaxPool:
    pass


@dataclasses.dataclass
class Flatten:
    pass


@dataclasses.dataclass
class GlobalMean:
    pass


@dataclasses.dataclass
class Residual:
    body: list  # of ops
    shortcut: list  # of ops; [] is the identity


Op = Union[Dense, Conv, BatchNorm, Relu, MaxPool, Flatten, GlobalMean, Residual]


def layers(model: ModelConfig, params: dict[str, Any], batch_stats: dict[str, Any] | None = None) -> list[Op]:
    """The ops of one member's network (`params`, `batch_stats`: one replicate's trees)."""
    from lth.models.conv import CONV_PLANS, FC_WIDTHS
    from lth.models.mlp import LENET_300_100_WIDTHS
    from lth.models.vgg import VGG_PLANS

    name = model.name
    if name not in SUPPORTED or (name == "mlp" and model.residual):
        what = "residual MLP" if name == "mlp" else name
        raise ConfigError(f"model.name={what!r}: export handles {', '.join(SUPPORTED)} (mlp without model.residual); "
                          "the ImageNet ResNets, residual MLPs and BERT are not exported yet")
    p = {k: np.asarray(v, np.float32) for k, v in _flat(params).items()}
    s = {k: np.asarray(v, np.float32) for k, v in _flat(batch_stats or {}).items()}

    def dense(n):
        return Dense(n, p[f"{n}/kernel"], p[f"{n}/bias"])

    def conv(n, pad, strides=1):
        return Conv(n, p[f"{n}/kernel"], p.get(f"{n}/bias"), (pad, pad), strides)

    def bn(n):
        return BatchNorm(n, p[f"{n}/scale"], p[f"{n}/bias"], s[f"{n}/mean"], s[f"{n}/var"])

    ops: list[Op] = []
    if name in ("mlp", "lenet_300_100"):
        widths = LENET_300_100_WIDTHS if name == "lenet_300_100" else tuple(model.widths)
        ops.append(Flatten())
        for i in range(1, len(widths) + 1):
            ops += [dense(f"fc{i}"), Relu()]
    elif name.startswith("conv"):
        index = 0
        for _ in CONV_PLANS[int(name[4:])]:
            for _ in range(2):
                index += 1
                ops += [conv(f"conv{index}", 1), Relu()]
            ops.append(MaxPool())
        ops.append(Flatten())
        for i in range(1, len(FC_WIDTHS) + 1):
            ops += [dense(f"fc{i}"), Relu()]
    elif name == "lenet5":
        ops += [conv("conv1", 0), MaxPool(), conv("conv2", 0), MaxPool(), Flatten(), dense("fc1"), Relu()]
    elif name in RESNETS:
        ops += [conv("conv1", 1), bn("bn1"), Relu()]
        n = (int(name[6:]) - 2) // 6
        for stage in (1, 2, 3):
            for i in range(n):
                b = f"stage{stage}/block{i}"
                stride = 2 if stage > 1 and i == 0 else 1
                body = [conv(f"{b}/conv1", 1, stride), bn(f"{b}/bn1"), Relu(), conv(f"{b}/conv2", 1), bn(f"{b}/bn2")]
                short = [conv(f"{b}/shortcut_conv", 0, stride), bn(f"{b}/shortcut_bn")] if f"{b}/shortcut_conv/kernel" in p else []
                ops += [Residual(body, short), Relu()]
        ops.append(GlobalMean())
    else:  # vgg
        index = 0
        for spec in VGG_PLANS[int(name[3:])]:
            if spec == "M":
                ops.append(MaxPool())
                continue
            index += 1
            ops += [conv(f"conv{index}", 1), bn(f"bn{index}"), Relu()]
        ops.append(GlobalMean())
    ops.append(dense("head"))
    return ops


def _flat(tree: Any) -> dict[str, Any]:
    from lth.sparsity import masks as M

    return M.flatten(tree) if tree else {}


def forward(ops: list[Op], x):
    """The network's logits for the batch `x` (B, *input_shape), float32, in `jax.numpy`."""
    return _apply(ops, jnp.asarray(x, jnp.float32))


def _apply(ops: list[Op], x):
    for op in ops:
        if isinstance(op, Dense):
            x = x @ _kernel(op) + jnp.asarray(op.bias)
        elif isinstance(op, Conv):
            (ph, pw) = op.pads
            x = lax.conv_general_dilated(x, _kernel(op), (op.strides, op.strides), ((ph, ph), (pw, pw)),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
            if op.bias is not None:
                x = x + jnp.asarray(op.bias)
        elif isinstance(op, BatchNorm):
            mul = jnp.asarray(op.scale) * lax.rsqrt(jnp.asarray(op.var) + op.eps)
            x = (x - jnp.asarray(op.mean)) * mul + jnp.asarray(op.bias)
        elif isinstance(op, Relu):
            x = jnp.maximum(x, 0.0)
        elif isinstance(op, MaxPool):
            x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        elif isinstance(op, Flatten):
            x = x.reshape(x.shape[0], -1)
        elif isinstance(op, GlobalMean):
            x = x.mean(axis=(1, 2))
        elif isinstance(op, Residual):
            x = _apply(op.body, x) + (_apply(op.shortcut, x) if op.shortcut else x)
        else:
            raise TypeError(f"unknown op {op!r}")
    return x


def int8_codes(op: Dense | Conv) -> np.ndarray:
    """The int8 codes q of a quantised layer's kernel (`kernel == q * scale`, checked bit for bit)."""
    q = np.clip(np.round(op.kernel / op.scale), -127, 127).astype(np.int8)
    if not np.array_equal(q.astype(np.float32) * op.scale, op.kernel):
        raise ValueError(f"{op.name}: the kernel is not int8 codes times its per-channel scales")
    return q


def _kernel(op: Dense | Conv):
    """The kernel as the program holds it: int8 codes dequantised in the graph (`q * scale`, the
    same float32 products as `kernel`), or the float32 kernel."""
    if op.scale is None:
        return jnp.asarray(op.kernel)
    return jnp.asarray(int8_codes(op)).astype(jnp.float32) * jnp.asarray(op.scale)


def tensors(ops: list[Op]) -> dict[str, np.ndarray]:
    """Every array of the network by `layer/role` (the BatchNorm statistics included)."""
    out = {}
    for op in ops:
        if isinstance(op, Residual):
            out.update(tensors(op.body))
            out.update(tensors(op.shortcut))
            continue
        for f in dataclasses.fields(op):
            v = getattr(op, f.name)
            if isinstance(v, np.ndarray):
                out[f"{op.name}/{f.name}"] = v
    return out


def count(ops: list[Op]) -> dict[str, int]:
    """Parameters (BatchNorm statistics included, as the ONNX file stores them; an int8 layer's
    scales not counted as parameters), nonzero entries, and bytes of the network stored dense:
    4 per float32 entry, 1 per int8 code plus 4 per scale."""
    arrays = tensors(ops)
    int8 = {f"{op.name}/kernel" for op in _weighted(ops) if op.scale is not None}
    scales = {f"{op.name}/scale" for op in _weighted(ops) if op.scale is not None}
    params = {k: a for k, a in arrays.items() if k not in scales}
    n = int(sum(a.size for a in params.values()))
    nbytes = sum((1 if k in int8 else 4) * a.size for k, a in arrays.items())
    return {"parameters": n, "nonzero": int(sum(np.count_nonzero(a) for a in params.values())), "bytes": int(nbytes)}


def _weighted(ops: list[Op]) -> list:
    """Every Dense and Conv layer, those inside residual blocks included."""
    out = []
    for op in ops:
        if isinstance(op, Residual):
            out += _weighted(op.body) + _weighted(op.shortcut)
        elif isinstance(op, (Dense, Conv)):
            out.append(op)
    return out


def widths(ops: list[Op]) -> dict[str, int]:
    """The output width of each Dense/Conv layer (the architecture the shrinking leaves)."""
    out = {}
    for op in ops:
        if isinstance(op, Residual):
            out.update(widths(op.body))
            out.update(widths(op.shortcut))
        elif isinstance(op, (Dense, Conv)):
            out[op.name] = int(op.kernel.shape[-1])
    return out
