"""Parameter initialisers, chosen by name (`ModelConfig.init`, `ModelConfig.bn_scale_init`).

The lottery-ticket papers trained PyTorch models (OpenLTH, `open_lth/models/initializers.py`), so
the names mean what they mean in PyTorch, not in Flax:

- `glorot_normal` is `torch.nn.init.xavier_normal_`: an *untruncated* normal with variance
  2 / (fan_in + fan_out). Flax's `nn.initializers.glorot_normal` is a truncated normal (rescaled to
  the same variance); its tails differ, and Frankle & Carbin (2019) used the untruncated one.
- `glorot_truncated` is TF1's `tf.contrib.layers.xavier_initializer(uniform=False)`, the kernel
  initialiser of Frankle & Carbin's released code (google-research/lottery-ticket-hypothesis,
  `foundations/model_fc.py`): a normal truncated at two standard deviations whose untruncated
  variance is 1.3 · 2 / (fan_in + fan_out) (`variance_scaling_initializer(FAN_AVG)`'s 1.3 makes
  up for the truncation: the result has variance ≈ 2 / (fan_in + fan_out)). Flax's truncated
  normal divides the standard deviation by 0.87962566 instead of multiplying the variance by 1.3,
  so the scale here is 1.3 · 0.87962566² to give TF's exact distribution.
- `glorot_uniform` is `xavier_uniform_`: U[-a, a], a = sqrt(6 / (fan_in + fan_out)).
- `kaiming_normal` is `kaiming_normal_` with its defaults (a = 0, mode `fan_in`): a normal with
  variance 2 / fan_in. OpenLTH's default for the CIFAR ResNets and VGGs.
- `kaiming_uniform` is `kaiming_uniform_` with its defaults: U[-a, a], a = sqrt(6 / fan_in).
- `lecun_normal` is Flax's default kernel initialiser (truncated normal, variance 1 / fan_in);
  PyTorch has no counterpart.
- `xavier` is *Caffe's* `XavierFiller` with its default `variance_norm: FAN_IN`: U[-a, a],
  a = sqrt(3 / fan_in) (variance 1 / fan_in), the filler of Caffe's LeNet-5 (Han et al. 2015,
  2016). Despite the name it is not `glorot_uniform`, which uses fan_in + fan_out.
- `pytorch_default` is what `torch.nn.Linear` and `torch.nn.Conv2d` do when nothing else is asked
  (`kaiming_uniform_(a=sqrt(5))`): U[-a, a], a = 1 / sqrt(fan_in) (variance 1 / (3 fan_in)). The
  MNIST-1D lottery notebook (Greydanus 2020) keeps it.
- `normal_0.01` is N(0, 0.01²) whatever the shape: TF's `random_normal_initializer(stddev=0.01)`,
  the classifier of TF's official ResNet (Renda et al. 2020's release), for `model.head_init`.
- `lecun_normal` is also TF1's `variance_scaling_initializer()` with its defaults (scale 1,
  fan_in, a normal truncated at two standard deviations and rescaled to variance 1 / fan_in): the
  kernels of TF's official ResNet (Renda et al. 2020).
- `bert_normal` is BERT's initialiser (Devlin et al. 2019; Hugging Face `initializer_range`): a
  normal with standard deviation 0.02 whatever the fans, for kernels and embeddings alike.

Fans follow PyTorch for convolutions too: for a Flax kernel of shape (kh, kw, in, out),
fan_in = kh * kw * in and fan_out = kh * kw * out.

`model.head_init` picks the output layer's (`head`) kernel initialiser apart (null: `model.init`).

Biases of dense and convolution layers (`model.bias_init`) start at zero (`zeros`, the default:
the usual JAX choice, and θ0 is then a function of the kernels only) or, as PyTorch leaves them
and so OpenLTH and the MNIST-1D notebook, at U[-1/sqrt(fan_in), 1/sqrt(fan_in)] (`pytorch`, the
layer's own fan_in: in_features, or kh * kw * in_channels). BatchNorm shifts start at zero;
BatchNorm scales start at one (`ones`) or, as OpenLTH's default `bn_initializers.uniform`
(`torch.rand`), at U[0, 1) (`uniform`).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from lth.config.schema import ConfigError, ModelConfig

Initializer = Callable[..., jax.Array]

# The standard deviation of a standard normal truncated to [-2, 2]; Flax's truncated normal divides by it.
TRUNCATED_STD = 0.87962566103423978

KERNEL_INITIALIZERS: dict[str, Callable[[], Initializer]] = {
    "glorot_normal": lambda: nn.initializers.variance_scaling(1.0, "fan_avg", "normal"),
    "glorot_truncated": lambda: nn.initializers.variance_scaling(1.3 * TRUNCATED_STD**2, "fan_avg", "truncated_normal"),
    "glorot_uniform": lambda: nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
    "kaiming_normal": lambda: nn.initializers.variance_scaling(2.0, "fan_in", "normal"),
    "kaiming_uniform": lambda: nn.initializers.variance_scaling(2.0, "fan_in", "uniform"),
    "lecun_normal": lambda: nn.initializers.lecun_normal(),
    "xavier": lambda: nn.initializers.variance_scaling(1.0, "fan_in", "uniform"),  # Caffe's XavierFiller
    # a = sqrt(3 * scale / fan_in) = 1 / sqrt(fan_in) with scale 1/3: torch.nn.Linear's default
    "pytorch_default": lambda: nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
    "normal_0.01": lambda: nn.initializers.normal(stddev=0.01),
    "bert_normal": lambda: nn.initializers.normal(stddev=0.02),
}

# BatchNorm shifts, and the biases of convolutions and dense layers under `model.bias_init=zeros`.
bias_init: Initializer = nn.initializers.zeros
BIAS_INITS = ("zeros", "pytorch")


def pytorch_bias_init(fan_in: int) -> Initializer:
    """U[-1/sqrt(fan_in), 1/sqrt(fan_in)]: PyTorch's default bias of a layer with this fan_in."""
    bound = 1.0 / float(fan_in) ** 0.5 if fan_in > 0 else 0.0

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

    return init


def bias_initializer(name: str, fan_in: int) -> Initializer:
    """The bias initialiser `name` (`ModelConfig.bias_init`) of a layer whose fan_in is `fan_in`."""
    if name == "zeros":
        return bias_init
    if name == "pytorch":
        return pytorch_bias_init(fan_in)
    raise ConfigError(f"model.bias_init={name!r} is not one of {', '.join(BIAS_INITS)}")


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


def head_initializer(cfg: ModelConfig) -> Initializer:
    """The output layer's kernel initialiser: `model.head_init`, or `model.init` when it is null."""
    if cfg.head_init is None:
        return kernel_initializer(cfg.init)
    if cfg.head_init not in KERNEL_INITIALIZERS:
        raise ConfigError(f"model.head_init={cfg.head_init!r} is not one of {', '.join(sorted(KERNEL_INITIALIZERS))} (or null: model.init)")
    return KERNEL_INITIALIZERS[cfg.head_init]()


def init_fields(cfg: ModelConfig) -> dict:
    """The initialiser fields every model takes from `cfg`: kernels, the head's kernel, biases."""
    return {"kernel_init": kernel_initializer(cfg.init), "head_init": head_initializer(cfg), "bias_init": cfg.bias_init}


def bn_model_fields(cfg: ModelConfig) -> dict:
    """The constructor fields the BatchNorm models (CIFAR ResNets, VGGs, ImageNet ResNets) take
    from `cfg`: width multiplier, initialisers, BatchNorm scale initialiser and momentum."""
    return {
        "width_multiplier": cfg.width_multiplier,
        **init_fields(cfg),
        "bn_scale_init": bn_scale_initializer(cfg.bn_scale_init),
        "bn_momentum": float(cfg.bn_momentum),
    }
