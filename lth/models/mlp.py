"""Fully connected ReLU networks.

- `mlp`: hidden widths from `ModelConfig.widths`; Greydanus (2020)'s MNIST-1D net is 40-500-500-10.
- `lenet_300_100`: Frankle & Carbin (2019)'s MNIST net, 784-300-100-10 (LeCun et al. 1998):
  266,200 weights and 410 biases (OpenLTH's `mnist_lenet_300_100`).

Layers are named `fc1`, `fc2`, ... and the classifier `head`. The input is flattened inside the
model, so images (B, 28, 28, 1) and vectors (B, 40) both work.
"""

from __future__ import annotations

from typing import Sequence

from flax import linen as nn
import jax

from lth.config import ModelConfig
from lth.models.initializers import Initializer, bias_init, kernel_initializer

LENET_300_100_WIDTHS = (300, 100)


class MLP(nn.Module):
    """Dense(w1) - ReLU - ... - Dense(wn) - ReLU - Dense(num_classes), on the flattened input."""

    widths: Sequence[int]
    num_classes: int
    kernel_init: Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no BatchNorm or dropout: the same function in both modes
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.widths, start=1):
            x = nn.Dense(width, kernel_init=self.kernel_init, bias_init=bias_init, name=f"fc{i}")(x)
            x = nn.relu(x)
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, bias_init=bias_init, name="head")(x)


def mlp(cfg: ModelConfig, num_classes: int) -> MLP:
    """An MLP with hidden widths `cfg.widths`."""
    return MLP(widths=tuple(int(w) for w in cfg.widths), num_classes=num_classes, kernel_init=kernel_initializer(cfg.init))


def lenet_300_100(cfg: ModelConfig, num_classes: int) -> MLP:
    """LeNet-300-100 (Frankle & Carbin 2019, MNIST); ignores `cfg.widths`."""
    return MLP(widths=LENET_300_100_WIDTHS, num_classes=num_classes, kernel_init=kernel_initializer(cfg.init))
