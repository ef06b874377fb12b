"""Fully connected ReLU networks.

- `mlp`: hidden widths from `ModelConfig.widths`; Greydanus (2020)'s MNIST-1D net is 40-500-500-10.
- `lenet_300_100`: Frankle & Carbin (2019)'s MNIST net, 784-300-100-10 (LeCun et al. 1998):
  266,200 weights and 410 biases (OpenLTH's `mnist_lenet_300_100`).

With `model.residual=true` every hidden layer after the first is residual,

    h_1 = relu(W_1 x + b_1),    h_i = h_{i-1} + relu(W_i h_{i-1} + b_i)  (i >= 2),    y = W_out h_n + b_out,

as the MNIST-1D lottery notebook's `SparseMLP` (h = relu(linear1(x)); h = h + relu(linear2(h))), so
the hidden widths must all be equal.

Layers are named `fc1`, `fc2`, ... and the classifier `head`. The input is flattened inside the
model, so images (B, 28, 28, 1) and vectors (B, 40) both work.
"""

from __future__ import annotations

from typing import Any, Sequence

from flax import linen as nn
import jax
import jax.numpy as jnp

from lth.config.schema import ConfigError, ModelConfig
from lth.models.initializers import Initializer, bias_initializer, init_fields
from lth.models.precision import compute_input, float32_logits, layer_dtype

LENET_300_100_WIDTHS = (300, 100)


class MLP(nn.Module):
    """Dense(w1) - ReLU - ... - Dense(wn) - ReLU - Dense(num_classes), on the flattened input;
    with `residual`, hidden layers 2..n add their ReLU output to their input."""

    widths: Sequence[int]
    num_classes: int
    kernel_init: Initializer = nn.initializers.lecun_normal()
    head_init: Initializer | None = None  # None: kernel_init
    bias_init: str = "zeros"
    residual: bool = False
    dtype: Any = jnp.float32  # compute dtype (train.dtype, lth.models.precision); parameters stay float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no BatchNorm or dropout: the same function in both modes
        x = compute_input(x.reshape(x.shape[0], -1), self.dtype)
        for i, width in enumerate(self.widths, start=1):
            y = nn.Dense(width, kernel_init=self.kernel_init, bias_init=bias_initializer(self.bias_init, x.shape[-1]),
                         dtype=layer_dtype(self.dtype), name=f"fc{i}")(x)
            x = x + nn.relu(y) if (self.residual and i > 1) else nn.relu(y)
        return float32_logits(nn.Dense(self.num_classes, kernel_init=self.head_init or self.kernel_init,
                                       bias_init=bias_initializer(self.bias_init, x.shape[-1]),
                                       dtype=layer_dtype(self.dtype), name="head")(x))


def mlp(cfg: ModelConfig, num_classes: int) -> MLP:
    """An MLP with hidden widths `cfg.widths` (residual hidden layers with `cfg.residual`)."""
    widths = tuple(int(w) for w in cfg.widths)
    if cfg.residual and len(set(widths)) > 1:
        raise ConfigError(f"model.residual=true with model.widths={list(widths)}: a residual layer adds its output to "
                          "its input, so every hidden width must be the same (e.g. [500, 500])")
    return MLP(widths=widths, num_classes=num_classes, residual=bool(cfg.residual), **init_fields(cfg))


def lenet_300_100(cfg: ModelConfig, num_classes: int) -> MLP:
    """LeNet-300-100 (Frankle & Carbin 2019, MNIST); ignores `cfg.widths`."""
    if cfg.residual:
        raise ConfigError("model.residual=true: LeNet-300-100's hidden widths differ (300, 100), so it cannot be residual; "
                          "use model=mlp with equal widths")
    return MLP(widths=LENET_300_100_WIDTHS, num_classes=num_classes, **init_fields(cfg))
