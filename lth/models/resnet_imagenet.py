"""ResNet-18 and ResNet-50 for ImageNet-sized inputs (He et al. 2016), as torchvision's `resnet18` /
`resnet50` (which OpenLTH's `imagenet_resnet_N` wraps) and Flax's examples/imagenet.

7x7 stride-2 convolution with 64 filters + BN + ReLU, 3x3 stride-2 max-pool (padding 1), four
stages with 64/128/256/512 filters (times `ModelConfig.width_multiplier`; bottleneck blocks output
4x that), stride 2 in the first block of stages 2-4, projection shortcuts (1x1 conv + BN) where the
shape changes, global average pool (so any image size works), dense `head`. With 1,000 classes
the parameter counts equal torchvision's: ResNet-18 11,689,512 (11,678,912 kernel weights),
ResNet-50 25,557,032 (25,502,912 kernel weights). BatchNorm scales start at one (torchvision's
`zero_init_residual=False`) unless `bn_scale_init: uniform`.

Names: `conv1`, `bn1`, `stage{1..4}/block{i}/{conv1,bn1,conv2,bn2[,conv3,bn3],shortcut_conv,shortcut_bn}`, `head`.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from lth.config.schema import ModelConfig
from lth.models.batch_norm import batch_norm
from lth.models.initializers import Initializer, bias_initializer, bn_model_fields
from lth.models.precision import compute_input, float32_logits, layer_dtype
from lth.models.resnet_blocks import BasicBlock, Bottleneck, Stage, conv

STAGE_FILTERS = (64, 128, 256, 512)
STAGE_SIZES: dict[int, tuple[int, ...]] = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}


class ImageNetResNet(nn.Module):
    """An ImageNet-style ResNet with `stage_sizes` blocks of type `block` per stage."""

    stage_sizes: Sequence[int]
    block: Any  # BasicBlock or Bottleneck
    num_classes: int
    width_multiplier: int = 1
    kernel_init: Initializer = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
    bn_scale_init: Initializer = nn.initializers.ones
    head_init: Initializer | None = None  # None: kernel_init
    bias_init: str = "zeros"
    bn_momentum: float = 0.9
    dtype: Any = jnp.float32  # compute dtype (train.dtype, lth.models.precision); parameters stay float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        w = self.width_multiplier
        x = conv(64 * w, 7, 2, self.kernel_init, "conv1", self.dtype)(compute_input(x, self.dtype))
        x = nn.relu(batch_norm(train, self.bn_scale_init, "bn1", self.bn_momentum, self.dtype)(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for s, (n, f) in enumerate(zip(self.stage_sizes, STAGE_FILTERS), start=1):
            x = Stage(
                block=self.block,
                num_blocks=n,
                filters=f * w,
                strides=1 if s == 1 else 2,
                kernel_init=self.kernel_init,
                bn_scale_init=self.bn_scale_init,
                bn_momentum=self.bn_momentum,
                dtype=self.dtype,
                name=f"stage{s}",
            )(x, train)
        x = x.mean(axis=(1, 2))
        return float32_logits(nn.Dense(self.num_classes, kernel_init=self.head_init or self.kernel_init,
                                       bias_init=bias_initializer(self.bias_init, x.shape[-1]),
                                       dtype=layer_dtype(self.dtype), name="head")(x))


def _build(cfg: ModelConfig, num_classes: int, depth: int, block: Any) -> ImageNetResNet:
    return ImageNetResNet(
        stage_sizes=STAGE_SIZES[depth],
        block=block,
        num_classes=num_classes,
        **bn_model_fields(cfg),
    )


def resnet18(cfg: ModelConfig, num_classes: int) -> ImageNetResNet:
    """ResNet-18: basic blocks, 2-2-2-2."""
    return _build(cfg, num_classes, 18, BasicBlock)


def resnet50(cfg: ModelConfig, num_classes: int) -> ImageNetResNet:
    """ResNet-50: bottleneck blocks, 3-4-6-3."""
    return _build(cfg, num_classes, 50, Bottleneck)
