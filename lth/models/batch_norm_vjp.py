"""BatchNorm in training mode on a CPU: per-channel sums as matrix-vector products, and a
closed-form backward pass (issue 31).

XLA:CPU runs the per-channel reductions of BatchNorm (the batch mean and mean square forward, the
sums of the output gradient and of the gradient times the normalised input backward) as chains of
`reduce-window` thunks, each reading the whole activation: about a third of a ResNet-20 training
step besides the convolutions. Here each sum over examples and pixels of an (N, H, W, C) tensor is
`ones(N) @ x.reshape(N, H*W*C)` (a matrix-vector product, which XLA:CPU hands to Eigen's fast
multi-threaded kernels) followed by a small sum over the H*W positions. The sums are also more
accurate than XLA's reduction: 1.6e-7 largest relative error against float64 for a 128x32x32x16
tensor, where XLA's reduction gave 4.0e-6 and a single `ones(N*H*W) @ x` 1.4e-5. The backward pass
is BatchNorm's closed form (dx = scale * rsqrt(var + eps) / n * (n dy - sum dy - xhat sum(dy xhat)),
with xhat recomputed from the saved input), so it needs just those two sums.

Measured on this 2-core CPU, ResNet-20's compiled training step at batch 128 with Flax's BatchNorm
and with this one: `python scripts/profile_cpu_step.py --models resnet20 --repeats 3` with
`--flax-bn`, then without (load 5.5 / 4.8): step 889 -> 690 ms, reduction thunks 214 -> 0.4 ms
(the sums: 18.6 ms of `dot`), elementwise 166 -> 116 ms, transposes 150 -> 79 ms;
`python scripts/bench_cpu_conv.py --models resnet20 vgg16 --no-shapes --variants bnflax routed
bnflax routed --repeats 3` (load 3-3.8): ResNet-20 154.1, 147.6 -> 165.9, 165.6 images/s, VGG-16
36.9, 37.4 -> 40.7, 38.2 (docs/performance.md).
Float32 gradients and running statistics of ResNet-20 come closer to float64 than with Flax's
BatchNorm (`python scripts/check_bn_accuracy.py`: largest / median norm-wise relative error per
leaf 3.2e-3 / 5.6e-5, Flax's 9.7e-3 / 1.9e-3).

Forward values are Flax's arithmetic (mean, E[x^2] - mean^2 clipped at 0, `(x - mean) *
(rsqrt(var + eps) * scale) + bias`) with the sums' rounding; the variables, their names, shapes,
initialisers and running-statistics update are Flax's `nn.BatchNorm`'s, so checkpoints and pruning
see no difference. Used only in training mode on a CPU (`lth.models.batch_norm.batch_norm`);
evaluation and GPU/TPU programs are unchanged. `ENABLED` false (the benchmark's `bnflax` variant)
gives Flax's BatchNorm everywhere.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

# False: Flax's BatchNorm everywhere. Read when a function is traced: set it before compiling.
ENABLED = True


def channel_sum(x: jax.Array) -> jax.Array:
    """Sum of a channels-last `x` over every axis but the last: over the leading axis as a
    matrix-vector product, then over the rest."""
    per_position = jnp.ones((x.shape[0],), x.dtype) @ x.reshape(x.shape[0], -1)
    return per_position.reshape(-1, x.shape[-1]).sum(0)


def _forward(x, scale, bias, epsilon):
    n = x.size // x.shape[-1]
    mean = channel_sum(x) / n
    var = jnp.maximum(0.0, channel_sum(jnp.square(x)) / n - jnp.square(mean))
    inv = jax.lax.rsqrt(var + epsilon)
    y = (x - mean) * (inv * scale) + bias
    return (y, mean, var), (x, mean, inv, scale)


def _backward(epsilon, residuals, cotangents):
    x, mean, inv, scale = residuals
    dy = cotangents[0]  # mean and var leave through stop_gradient: their cotangents are zero
    n = x.size // x.shape[-1]
    xhat = (x - mean) * inv
    dbias = channel_sum(dy)
    dscale = channel_sum(dy * xhat)
    return (scale * inv / n) * (n * dy - dbias - xhat * dscale), dscale, dbias


_batch_norm = jax.custom_vjp(lambda x, scale, bias, epsilon: _forward(x, scale, bias, epsilon)[0], nondiff_argnums=(3,))
_batch_norm.defvjp(_forward, _backward)


def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float):
    """(output, batch mean, biased batch variance) of BatchNorm in training mode over the last axis;
    gradients flow to `x`, `scale` and `bias` (the statistics feed only the running averages)."""
    y, mean, var = _batch_norm(x, scale, bias, epsilon)
    return y, jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)


class TrainBatchNorm(nn.Module):
    """BatchNorm in training mode with `nn.BatchNorm`'s variables (params `scale`, `bias`;
    batch_stats `mean`, `var`) and running-average update, computed by `batch_norm_train`."""

    momentum: float
    epsilon: float
    scale_init: Any
    bias_init: Any
    dtype: Any = None  # the output's dtype (None: float32); statistics are float32 whatever it is

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), (c,))
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), (c,))
        scale = self.param("scale", self.scale_init, (c,), jnp.float32)
        bias = self.param("bias", self.bias_init, (c,), jnp.float32)
        x = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # as Flax: statistics at least float32
        y, mean, var = batch_norm_train(x, scale, bias, self.epsilon)
        if not self.is_initializing():  # as nn.BatchNorm: initialisation leaves the statistics alone
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y if self.dtype is None else y.astype(self.dtype)


def applies(train: bool) -> bool:
    """Whether `batch_norm` uses `TrainBatchNorm`: training mode, on a CPU, `ENABLED`."""
    return bool(train and ENABLED and jax.default_backend() == "cpu")
