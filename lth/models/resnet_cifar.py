"""ResNet-20/32/44/56/110 for CIFAR (He et al. 2016, Section 4.2), as OpenLTH's `cifar_resnet_N`.

3x3 conv with 16 filters + BN + ReLU, three stages of n = (depth - 2) / 6 basic blocks with
16, 32, 64 filters (times `ModelConfig.width_multiplier`, OpenLTH's `cifar_resnet_N_W` with
W = 16 * multiplier), stride 2 in the first block of stages 2 and 3, projection shortcuts
(1x1 conv stride 2 + BN, He et al.'s option B as OpenLTH) where the shape changes, identity
elsewhere; global average pool; dense `head`. Convolutions have no bias; the head has one.

ResNet-20 has 270,896 kernel weights: stem 432, stage 1 13,824, stage 2 51,200 (including the
512-weight shortcut), stage 3 204,800 (including 2,048), head 640. Frankle et al. (2020) and
Renda et al. (2020) prune ResNet-20 / ResNet-56 with OpenLTH's defaults: kaiming_normal kernels
and BatchNorm scales from U[0, 1) (`bn_scale_init: uniform`).

`model.stage1_projection=true` gives the first block of stage 1 a 1x1 projection shortcut + BN
too (stride 1, 16 -> 16 filters: 256 more kernel weights), as TF's official ResNet v1 that Renda
et al. (2020) trained, where the first block of every stage projects.

Names: `conv1`, `bn1`, `stage{1,2,3}/block{i}/{conv1,bn1,conv2,bn2,shortcut_conv,shortcut_bn}`, `head`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from lth.config.schema import ConfigError, ModelConfig
from lth.models.batch_norm import batch_norm
from lth.models.initializers import Initializer, bias_initializer, bn_model_fields
from lth.models.materialize import materialize
from lth.models.precision import compute_input, float32_logits, layer_dtype
from lth.models.resnet_blocks import BasicBlock, Stage, conv

STAGE_FILTERS = (16, 32, 64)


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet of depth 6n + 2."""

    depth: int
    num_classes: int
    width_multiplier: int = 1
    kernel_init: Initializer = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
    bn_scale_init: Initializer = nn.initializers.ones
    head_init: Initializer | None = None  # None: kernel_init
    bias_init: str = "zeros"
    bn_momentum: float = 0.9
    stage1_projection: bool = False
    dtype: Any = jnp.float32  # compute dtype (train.dtype, lth.models.precision); parameters stay float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if (self.depth - 2) % 6 != 0 or self.depth < 8:
            raise ConfigError(f"CIFAR ResNet depth {self.depth} is not 6n + 2 with n >= 1 (20, 32, 44, 56, 110, ...)")
        n = (self.depth - 2) // 6
        filters = [f * self.width_multiplier for f in STAGE_FILTERS]
        x = conv(filters[0], 3, 1, self.kernel_init, "conv1", self.dtype)(compute_input(x, self.dtype))
        x = materialize(nn.relu(batch_norm(train, self.bn_scale_init, "bn1", self.bn_momentum, self.dtype)(x)), train)
        for s, f in enumerate(filters, start=1):
            x = Stage(
                block=BasicBlock,
                num_blocks=n,
                filters=f,
                strides=1 if s == 1 else 2,
                kernel_init=self.kernel_init,
                bn_scale_init=self.bn_scale_init,
                bn_momentum=self.bn_momentum,
                project_first=self.stage1_projection and s == 1,
                dtype=self.dtype,
                name=f"stage{s}",
            )(x, train)
        x = x.mean(axis=(1, 2))
        return float32_logits(nn.Dense(self.num_classes, kernel_init=self.head_init or self.kernel_init,
                                       bias_init=bias_initializer(self.bias_init, x.shape[-1]),
                                       dtype=layer_dtype(self.dtype), name="head")(x))


def _resnet_cifar(depth: int):
    def build(cfg: ModelConfig, num_classes: int) -> CifarResNet:
        return CifarResNet(
            depth=depth,
            num_classes=num_classes,
            stage1_projection=bool(cfg.stage1_projection),
            **bn_model_fields(cfg),
        )

    build.__name__ = f"resnet{depth}"
    build.__doc__ = f"ResNet-{depth} for CIFAR ({(depth - 2) // 6} basic blocks per stage)."
    return build


resnet20 = _resnet_cifar(20)
resnet32 = _resnet_cifar(32)
resnet44 = _resnet_cifar(44)
resnet56 = _resnet_cifar(56)
resnet110 = _resnet_cifar(110)
