"""VGG-11/13/16/19 for CIFAR (Simonyan & Zisserman 2014), as OpenLTH's `cifar_vgg_N`.

Each number in the plan is a 3x3 'same' convolution (with bias, as OpenLTH) + BN + ReLU, each 'M'
a 2x2 max-pool; the last stage has no pool. Then an average pool to one vector of 512 features
(OpenLTH's `AvgPool2d(2)` on the 2x2 map a 32x32 input leaves; here a global mean, which is the
same on CIFAR and also works on other sizes) and a dense `head`. `ModelConfig.width_multiplier`
multiplies every filter count. VGG-16 has 14,715,584 kernel weights (14,710,464 in convolutions,
5,120 in the head). Frankle et al. (2020) prune VGG-16 globally with OpenLTH's defaults
(kaiming_normal, `bn_scale_init: uniform`).

Names: `conv1` ... `convN` and `bn1` ... `bnN` (N = 8, 10, 13, 16), `head`.
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import jax
import jax.numpy as jnp
from flax import linen as nn

from lth.config.schema import ModelConfig
from lth.models.batch_norm import batch_norm
from lth.models.cpu_conv import Conv
from lth.models.initializers import Initializer, bias_initializer, bn_model_fields
from lth.models.precision import compute_input, float32_logits, layer_dtype

M = "M"
VGG_PLANS: dict[int, tuple[Union[int, str], ...]] = {
    11: (64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512),
    13: (64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512),
    16: (64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512),
    19: (64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M, 512, 512, 512, 512),
}


class VGG(nn.Module):
    """A CIFAR VGG following `plan` (filter counts and 'M' for max-pool)."""

    plan: Sequence[Union[int, str]]
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
        x = compute_input(x, self.dtype)
        index = 0
        for spec in self.plan:
            if spec == M:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
                continue
            index += 1
            x = Conv(
                int(spec) * self.width_multiplier,
                (3, 3),
                padding=((1, 1), (1, 1)),
                kernel_init=self.kernel_init,
                bias_init=bias_initializer(self.bias_init, 9 * x.shape[-1]),
                dtype=layer_dtype(self.dtype),
                name=f"conv{index}",
            )(x)
            x = nn.relu(batch_norm(train, self.bn_scale_init, f"bn{index}", self.bn_momentum, self.dtype)(x))
        x = x.mean(axis=(1, 2))
        return float32_logits(nn.Dense(self.num_classes, kernel_init=self.head_init or self.kernel_init,
                                       bias_init=bias_initializer(self.bias_init, x.shape[-1]),
                                       dtype=layer_dtype(self.dtype), name="head")(x))


def _vgg(depth: int):
    def build(cfg: ModelConfig, num_classes: int) -> VGG:
        return VGG(
            plan=VGG_PLANS[depth],
            num_classes=num_classes,
            **bn_model_fields(cfg),
        )

    build.__name__ = f"vgg{depth}"
    build.__doc__ = f"VGG-{depth} for CIFAR (OpenLTH's cifar_vgg_{depth})."
    return build


vgg11 = _vgg(11)
vgg13 = _vgg(13)
vgg16 = _vgg(16)
vgg19 = _vgg(19)
