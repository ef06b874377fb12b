"""Parameter initialisers, chosen by name (`ModelConfig.init`, `ModelConfig.bn_scale_init`).

The lottery-ticket papers trained PyTorch models (OpenLTH, `open_lth/models/initializers.py`), so
the names mean what they mean in PyTorch, not in Flax:

- `glorot_normal` is `torch.nn.init.xavier_normal_`: an *untruncated* normal with variance
  2 / (fan_in + fan_out). Flax's `nn.initializers.glorot_normal` is a truncated normal (rescaled to
  the same variance); its tails differ, and Frankle & Carbin (2019) used the untruncated one.
- `glorot_uniform` is `xavier_uniform_`: U[-a, a], a = sqrt(6 / (fan_in + fan_out)).
- `kaiming_normal` is `kaiming_normal_` with its defaults (a = 0, mode `fan_in`): a normal with
  variance 2 / fan_in. OpenLTH's default for the CIFAR ResNets and VGGs.
- `kaiming_uniform` is `kaiming_uniform_` with its defaults: U[-a, a], a = sqrt(6 / fan_in).
- `lecun_normal` is Flax's default kernel initialiser (truncated normal, variance 1 / fan_in);
  PyTorch has no counterpart.
- `xavier` is *Caffe's* `XavierFiller` with its default `variance_norm: FAN_IN`: U[-a, a],
  a = sqrt(3 / fan_in) (variance 1 / fan_in), the filler of Caffe's LeNet-5 (Han et al. 2015,
  2016). Despite the name it is not `glorot_uniform`, which uses fan_in + fan_out.
- `bert_normal` is BERT's initialiser (Devlin et al. 2019; Hugging Face `initializer_range`): a
  normal with standard deviation 0.02 whatever the fans, for kernels and embeddings alike.

Fans follow PyTorch for convolutions too: for a Flax kernel of shape (kh, kw, in, out),
fan_in = kh * kw * in and fan_out = kh * kw * out.

Biases start at zero in every model (OpenLTH leaves PyTorch's small uniform bias init in place;
zero biases are the usual JAX choice and keep θ0 a function of the kernels only). BatchNorm
shifts start at zero; BatchNorm scales start at one (`ones`) or, as OpenLTH's default
`bn_initializers.uniform` (`torch.rand`), at U[0, 1) (`uniform`).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from lth.config import ConfigError, ModelConfig

Initializer = Callable[..., jax.Array]

KERNEL_INITIALIZERS: dict[str, Callable[[], Initializer]] = {
    "glorot_normal": lambda: nn.initializers.variance_scaling(1.0, "fan_avg", "normal"),
    "glorot_uniform": lambda: nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
    "kaiming_normal": lambda: nn.initializers.variance_scaling(2.0, "fan_in", "normal"),
    "kaiming_uniform": lambda: nn.initializers.variance_scaling(2.0, "fan_in", "uniform"),
    "lecun_normal": lambda: nn.initializers.lecun_normal(),
    "xavier": lambda: nn.initializers.variance_scaling(1.0, "fan_in", "uniform"),  # Caffe's XavierFiller
    "bert_normal": lambda: nn.initializers.normal(stddev=0.02),
}

# Biases of convolutions and dense layers, and BatchNorm shifts.
bias_init: Initializer = nn.initializers.zeros


def uniform_scale_init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """BatchNorm scales drawn from U[0, 1), as OpenLTH's `bn_initializers.uniform` (`torch.rand`)."""
    return jax.random.uniform(key, shape, dtype, minval=0.0, maxval=1.0)


BN_SCALE_INITIALIZERS: dict[str, Initializer] = {
    "ones": nn.initializers.ones,
    "uniform": uniform_scale_init,
}


def kernel_initializer(name: str) -> Initializer:
    """The kernel initialiser called `name` (`ModelConfig.init`); ConfigError if there is none."""
    if name not in KERNEL_INITIALIZERS:
        raise ConfigError(f"model.init={name!r} is not one of {', '.join(sorted(KERNEL_INITIALIZERS))}")
    return KERNEL_INITIALIZERS[name]()


def bn_scale_initializer(name: str) -> Initializer:
    """The BatchNorm scale initialiser called `name` (`ModelConfig.bn_scale_init`)."""
    if name not in BN_SCALE_INITIALIZERS:
        raise ConfigError(f"model.bn_scale_init={name!r} is not one of {', '.join(sorted(BN_SCALE_INITIALIZERS))}")
    return BN_SCALE_INITIALIZERS[name]


def bn_model_fields(cfg: ModelConfig) -> dict:
    """The constructor fields the BatchNorm models (CIFAR ResNets, VGGs, ImageNet ResNets) take
    from `cfg`: width multiplier, kernel initialiser and BatchNorm scale initialiser."""
    return {
        "width_multiplier": cfg.width_multiplier,
        "kernel_init": kernel_initializer(cfg.init),
        "bn_scale_init": bn_scale_initializer(cfg.bn_scale_init),
    }
