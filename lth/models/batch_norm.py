"""The one BatchNorm every model uses, with PyTorch's (and so OpenLTH's) constants.

`momentum=0.9` in Flax is PyTorch's `momentum=0.1` (running = 0.9 * running + 0.1 * batch) and
`epsilon=1e-5` is PyTorch's `eps`. `model.bn_momentum` changes the momentum, written as Flax and
TensorFlow write it: running = m * running + (1 - m) * batch (TF's official ResNet, Renda et al.
2020's release, uses `_BATCH_NORM_DECAY = 0.997`; its epsilon is 1e-5 too). Running statistics live in the `batch_stats` collection: in
training mode the layer normalises with the batch's statistics and updates them (apply with
`mutable=["batch_stats"]`); in evaluation mode it normalises with the running statistics and
leaves them untouched. One difference from PyTorch: Flax tracks the biased batch variance where
PyTorch tracks the unbiased one (a factor n / (n - 1), negligible at the usual batch sizes).
"""

from __future__ import annotations

from typing import Any

from flax import linen as nn

from lth.models import batch_norm_vjp

from lth.models.initializers import Initializer, bias_init
from lth.models.precision import layer_dtype

MOMENTUM = 0.9
EPSILON = 1e-5


def batch_norm(train: bool, scale_init: Initializer, name: str, momentum: float = MOMENTUM,
               dtype: Any = None) -> nn.Module:
    """A BatchNorm named `name` (which should contain `bn`, the convention pruning presets rely on);
    in training mode on a CPU `batch_norm_vjp.TrainBatchNorm` (same variables and values, faster).
    Statistics and `batch_stats` are float32 whatever `dtype`; the output is in `dtype` (the compute
    dtype, `lth.models.precision`; None or float32: as the input and parameters promote, float32)."""
    if batch_norm_vjp.applies(train):  # sums as matrix-vector products, closed-form backward (issue 31)
        return batch_norm_vjp.TrainBatchNorm(momentum, EPSILON, scale_init, bias_init, layer_dtype(dtype), name=name)
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=momentum,
        epsilon=EPSILON,
        scale_init=scale_init,
        bias_init=bias_init,
        dtype=layer_dtype(dtype),
        name=name,
    )
