"""LeNet-5 as Caffe's MNIST example defines it, the network of Han et al.'s pruning papers.

Han et al. (2015, "Learning both Weights and Connections for Efficient Neural Networks") and
Han et al. (2016, "Deep Compression") prune "LeNet-5", which is Caffe's
`examples/mnist/lenet_train_test.prototxt` (not LeCun et al. 1998's network with its C3 table,
tanh and RBF output):

    conv1  5x5, 20 filters, stride 1, valid padding   28x28x1 -> 24x24x20
    pool1  max 2x2, stride 2                           -> 12x12x20
    conv2  5x5, 50 filters, stride 1, valid padding    -> 8x8x50
    pool2  max 2x2, stride 2                           -> 4x4x50 (800)
    ip1    dense 500, ReLU
    ip2    dense 10 (the logits)

As in that prototxt there is **no nonlinearity after the convolutions**: the only ReLU is after
ip1 (the max-pools are the convolutions' only nonlinearity). On 28x28 MNIST: 431,080 parameters,
conv1 520, conv2 25,050, ip1 400,500, ip2 5,010 (430,500 weights, 580 biases); Han et al.
2015 list 0.5K, 25K, 400K and 5K weights, 431K parameters in all.

Names follow the package's conventions: `conv1`, `conv2`, `fc1` (Caffe's ip1) and `head` (ip2),
so `kernel$` selects the four weight tensors and Han et al.'s per-layer densities are set by the
patterns `conv1`, `conv2`, `fc1`, `head`. Caffe fills every weight with its `xavier` filler
(`model.init=xavier`, `conf/model/lenet5.yaml`) and biases with 0 (this package's bias init).
Caffe flattens pool2 in (C, H, W) order, this model in (H, W, C): the same function up to a fixed
permutation of ip1's rows.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from lth.config.schema import ModelConfig
from lth.models.cpu_conv import Conv
from lth.models.initializers import Initializer, bias_initializer, init_fields
from lth.models.precision import compute_input, float32_logits, layer_dtype


class LeNet5(nn.Module):
    """Caffe's MNIST LeNet: conv 5x5/20 - maxpool 2 - conv 5x5/50 - maxpool 2 - dense 500 - ReLU - head."""

    num_classes: int
    kernel_init: Initializer = nn.initializers.lecun_normal()
    head_init: Initializer | None = None  # None: kernel_init
    bias_init: str = "zeros"
    dtype: Any = jnp.float32  # compute dtype (train.dtype, lth.models.precision); parameters stay float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no BatchNorm or dropout
        x = compute_input(x, self.dtype)
        for i, filters in enumerate((20, 50), start=1):
            x = Conv(filters, (5, 5), padding="VALID", kernel_init=self.kernel_init,
                     bias_init=bias_initializer(self.bias_init, 25 * x.shape[-1]), dtype=layer_dtype(self.dtype),
                     name=f"conv{i}")(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))  # no ReLU: Caffe's lenet_train_test.prototxt has none here
        x = x.reshape(x.shape[0], -1)
        x = nn.Dense(500, kernel_init=self.kernel_init, bias_init=bias_initializer(self.bias_init, x.shape[-1]),
                     dtype=layer_dtype(self.dtype), name="fc1")(x)
        x = nn.relu(x)
        return float32_logits(nn.Dense(self.num_classes, kernel_init=self.head_init or self.kernel_init,
                                       bias_init=bias_initializer(self.bias_init, x.shape[-1]),
                                       dtype=layer_dtype(self.dtype), name="head")(x))


def lenet5(cfg: ModelConfig, num_classes: int) -> LeNet5:
    """Caffe's LeNet-5 (Han et al. 2015, 2016); `model.init` picks the kernel initialiser."""
    return LeNet5(num_classes=num_classes, **init_fields(cfg))
