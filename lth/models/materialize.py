"""`materialize`: make XLA:CPU compute a residual block's output once, instead of re-deriving it
from every earlier block inside each fusion that reads it.

XLA:CPU fuses cheap elementwise producers into every consumer, duplicating them. In a ResNet a
block's output is `relu(bn(conv) + previous output)`: elementwise all the way back to the stem,
so in a training step each backward fusion that reads a block's output (the ReLU mask, BatchNorm's
gradient, the transposed copy the kernel gradient of the next convolution reads) recomputes the
BatchNorms and residual sums of every block before it, in a transposed, cache-hostile order
(measured on ResNet-20 at batch 128: single `transpose_copy` fusions of 100-400 ms; a conv output
read by up to 15 fusions). `jax.lax.optimization_barrier` does not stop it (XLA:CPU removes
barriers before fusing); a conditional does: fusion does not cross a conditional's boundary, so its
result is one buffer that consumers read.

`materialize(x)` is `lax.cond(x.flat[0] >= 0, identity, nan_fill, x)`: for the output of a ReLU
the predicate is true unless that value is NaN, so it returns `x` itself (bit for bit; in a step
whose first activation is NaN the loss is NaN already, and the other branch makes the whole
activation NaN). The two branches differ so XLA cannot fold the conditional away. Only on a CPU
and only in training mode (where the backward pass reads the forward values); elsewhere, and with
`ENABLED` false (the benchmark's baseline), it is the identity and the program is unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# False makes `materialize` the identity (scripts/bench_cpu_conv.py's baseline). Read when a
# function is traced: set it before compiling.
ENABLED = True


def materialize(x: jax.Array, train: bool) -> jax.Array:
    """`x` (a ReLU's output, so >= 0 or NaN), computed once into its own buffer on a CPU in training."""
    if not (ENABLED and train and jax.default_backend() == "cpu"):
        return x
    return jax.lax.cond(x.reshape(-1)[0] >= 0, lambda a: a, lambda a: jnp.full_like(a, jnp.nan), x)
