"""Conv-2, Conv-4 and Conv-6: the Lottery Ticket paper's CIFAR-10 networks.

Frankle & Carbin (2019), Figure 2 / Appendix H (scaled-down VGG, Simonyan & Zisserman 2014):
pairs of 3x3 'same' convolutions with 64, 64-128 or 64-128-256 filters, ReLU, a 2x2 max-pool
after each pair, then fully connected 256-256-10 with ReLU. No BatchNorm, no dropout (the paper
also studies dropout; it is left out here). Weights (kernels only): Conv-2 4,300,992,
Conv-4 2,425,024, Conv-6 2,261,184 on 32x32x3 inputs; convolutions and dense layers have biases.

Names: `conv1` ... `conv6`, `fc1`, `fc2`, `head`, so the paper's per-kind pruning rates
(conv 10-15%, fc 20%, output 10%) are selected by the patterns `conv`, `fc`, `head`.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from lth.config.schema import ModelConfig
from lth.models.cpu_conv import Conv
from lth.models.initializers import Initializer, bias_initializer, init_fields
from lth.models.precision import compute_input, float32_logits, layer_dtype

CONV_PLANS: dict[int, tuple[int, ...]] = {2: (64,), 4: (64, 128), 6: (64, 128, 256)}
FC_WIDTHS = (256, 256)


class ConvNet(nn.Module):
    """For each entry f of `filters`: two 3x3 convs with f filters (ReLU), then 2x2 max-pool;
    then flatten and dense `fc_widths` (ReLU) and the `head`."""

    filters: Sequence[int]
    num_classes: int
    fc_widths: Sequence[int] = FC_WIDTHS
    kernel_init: Initializer = nn.initializers.lecun_normal()
    head_init: Initializer | None = None  # None: kernel_init
    bias_init: str = "zeros"
    dtype: Any = jnp.float32  # compute dtype (train.dtype, lth.models.precision); parameters stay float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no BatchNorm or dropout
        x = compute_input(x, self.dtype)
        index = 0
        for f in self.filters:
            for _ in range(2):
                index += 1
                x = Conv(f, (3, 3), padding="SAME", kernel_init=self.kernel_init,
                         bias_init=bias_initializer(self.bias_init, 9 * x.shape[-1]), dtype=layer_dtype(self.dtype),
                         name=f"conv{index}")(x)
                x = nn.relu(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.fc_widths, start=1):
            x = nn.Dense(width, kernel_init=self.kernel_init, bias_init=bias_initializer(self.bias_init, x.shape[-1]),
                         dtype=layer_dtype(self.dtype), name=f"fc{i}")(x)
            x = nn.relu(x)
        return float32_logits(nn.Dense(self.num_classes, kernel_init=self.head_init or self.kernel_init,
                                       bias_init=bias_initializer(self.bias_init, x.shape[-1]),
                                       dtype=layer_dtype(self.dtype), name="head")(x))


def _conv(depth: int):
    def build(cfg: ModelConfig, num_classes: int) -> ConvNet:
        return ConvNet(filters=CONV_PLANS[depth], num_classes=num_classes, **init_fields(cfg))

    build.__name__ = f"conv{depth}"
    build.__doc__ = f"Conv-{depth} (Frankle & Carbin 2019): conv filters {CONV_PLANS[depth]} in pairs, FC 256-256."
    return build


conv2 = _conv(2)
conv4 = _conv(4)
conv6 = _conv(6)
