"""Residual blocks and stages shared by the CIFAR and ImageNet ResNets (He et al. 2016).

Both follow PyTorch (OpenLTH's `cifar_resnet.Block`, torchvision's `BasicBlock`/`Bottleneck`):
convolutions without bias, each followed by BatchNorm; 3x3 convolutions padded by one pixel on
every side (PyTorch `padding=1`; Flax's 'SAME' would pad a stride-2 convolution asymmetrically);
the stride of a downsampling bottleneck sits on its 3x3 convolution (torchvision's "ResNet v1.5",
as in Flax's examples/imagenet). The shortcut is the identity, or, when the block changes the
shape, a strided 1x1 convolution + BatchNorm (`shortcut_conv`, `shortcut_bn`). A block with
`projection=True` takes the projection even when the shape does not change: TF's official ResNet
(Renda et al. 2020's release) gives the first block of *every* stage one, the first stage of a
CIFAR ResNet included (`model.stage1_projection`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from lth.models.batch_norm import batch_norm
from lth.models.cpu_conv import Conv
from lth.models.initializers import Initializer
from lth.models.materialize import materialize
from lth.models.precision import layer_dtype


def conv(filters: int, kernel: int, strides: int, kernel_init: Initializer, name: str, dtype: Any = None) -> nn.Conv:
    """A bias-free k x k convolution padded as PyTorch's `padding=k // 2`, computing in `dtype`."""
    pad = kernel // 2
    return Conv(
        filters,
        (kernel, kernel),
        strides=(strides, strides),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=kernel_init,
        dtype=layer_dtype(dtype),
        name=name,
    )


class BasicBlock(nn.Module):
    """conv3x3(stride) - BN - ReLU - conv3x3 - BN, plus the shortcut, then ReLU (ResNet-18/20/56)."""

    filters: int
    strides: int
    kernel_init: Initializer
    bn_scale_init: Initializer
    bn_momentum: float = 0.9
    projection: bool = False
    dtype: Any = jnp.float32  # compute dtype (lth.models.precision)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = conv(self.filters, 3, self.strides, self.kernel_init, "conv1", self.dtype)(x)
        y = nn.relu(batch_norm(train, self.bn_scale_init, "bn1", self.bn_momentum, self.dtype)(y))
        y = conv(self.filters, 3, 1, self.kernel_init, "conv2", self.dtype)(y)
        y = batch_norm(train, self.bn_scale_init, "bn2", self.bn_momentum, self.dtype)(y)
        return materialize(nn.relu(y + _shortcut(self, x, y.shape[-1], train)), train)


class Bottleneck(nn.Module):
    """conv1x1 - BN - ReLU - conv3x3(stride) - BN - ReLU - conv1x1(4x) - BN, plus the shortcut, then
    ReLU (ResNet-50). `filters` is the inner width; the block outputs `EXPANSION * filters`."""

    filters: int
    strides: int
    kernel_init: Initializer
    bn_scale_init: Initializer
    bn_momentum: float = 0.9
    projection: bool = False
    dtype: Any = jnp.float32  # compute dtype (lth.models.precision)

    EXPANSION = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = conv(self.filters, 1, 1, self.kernel_init, "conv1", self.dtype)(x)
        y = nn.relu(batch_norm(train, self.bn_scale_init, "bn1", self.bn_momentum, self.dtype)(y))
        y = conv(self.filters, 3, self.strides, self.kernel_init, "conv2", self.dtype)(y)
        y = nn.relu(batch_norm(train, self.bn_scale_init, "bn2", self.bn_momentum, self.dtype)(y))
        y = conv(self.filters * self.EXPANSION, 1, 1, self.kernel_init, "conv3", self.dtype)(y)
        y = batch_norm(train, self.bn_scale_init, "bn3", self.bn_momentum, self.dtype)(y)
        return materialize(nn.relu(y + _shortcut(self, x, y.shape[-1], train)), train)


def _shortcut(block: nn.Module, x: jax.Array, out_filters: int, train: bool) -> jax.Array:
    """Identity when the block keeps the shape (and `block.projection` is off); else strided 1x1
    conv + BN (called inside `block`)."""
    if block.strides == 1 and x.shape[-1] == out_filters and not block.projection:
        return x
    x = conv(out_filters, 1, block.strides, block.kernel_init, "shortcut_conv", block.dtype)(x)
    return batch_norm(train, block.bn_scale_init, "shortcut_bn", block.bn_momentum, block.dtype)(x)


class Stage(nn.Module):
    """`num_blocks` blocks (`block0`, `block1`, ...) of `filters`; the first has stride `strides`
    (and, with `project_first`, a projection shortcut whatever the shapes)."""

    block: Any  # BasicBlock or Bottleneck
    num_blocks: int
    filters: int
    strides: int
    kernel_init: Initializer
    bn_scale_init: Initializer
    bn_momentum: float = 0.9
    project_first: bool = False
    dtype: Any = jnp.float32  # compute dtype (lth.models.precision)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i in range(self.num_blocks):
            x = self.block(
                filters=self.filters,
                strides=self.strides if i == 0 else 1,
                kernel_init=self.kernel_init,
                bn_scale_init=self.bn_scale_init,
                bn_momentum=self.bn_momentum,
                projection=self.project_first and i == 0,
                dtype=self.dtype,
                name=f"block{i}",
            )(x, train)
        return x
