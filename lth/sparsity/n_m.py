"""N:M sparsity: exactly n kept in every m consecutive weights along the input axis.

NVIDIA's sparse tensor cores (Ampere on) run 2:4: in every group of 4 consecutive weights along the
reduction (input) dimension, 2 are zero (Mishra et al. 2021, "Accelerating Sparse Deep Neural
Networks"; Zhou et al. 2021, "Learning N:M fine-grained structured sparse neural networks").
For a Dense kernel (n_in, n_out) the input axis is 0 (= −2); for a convolution kernel HWIO it is
the input-channel axis −2. So the default `axis=-2` (axis 0 for a vector).

    mask[..., g·m + j, ...] = 1  ⇔  j is among the n largest scores of group g (along `axis`)

Ties are broken by position (the earlier weight is kept): a stable sort of −score. Pure JAX, runs
under `jit`. (The module is `n_m`, not `n_of_m`, so that importing it does not shadow the function
`lth.sparsity.n_of_m`.)
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp


def n_of_m(scores: jax.Array, n: int, m: int, axis: int | None = None) -> jax.Array:
    """Boolean mask of `scores`' shape keeping the `n` largest of every `m` consecutive entries
    along `axis` (default −2, the input axis of Dense and HWIO conv kernels; 0 for 1-D)."""
    for name, v in (("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"n_of_m: {name} must be an int, got {v!r}")
    if not (m >= 1 and 0 <= n <= m):
        raise ValueError(f"n_of_m: need m >= 1 and 0 <= n <= m; got n={n}, m={m}")
    scores = jnp.asarray(scores)
    if scores.ndim == 0:
        raise ValueError("n_of_m: scores must have at least one axis, got a scalar")
    if axis is None:
        axis = -2 if scores.ndim >= 2 else 0
    if not -scores.ndim <= axis < scores.ndim:
        raise ValueError(f"n_of_m: axis={axis} is out of range for scores of shape {scores.shape}")
    axis %= scores.ndim
    size = scores.shape[axis]
    if size % m:
        raise ValueError(
            f"n_of_m: axis {axis} of scores of shape {tuple(scores.shape)} has {size} entries, not divisible "
            f"by m={m}; N:M sparsity needs groups of exactly m consecutive weights (pad the layer or choose m)")
    s = jnp.moveaxis(scores, axis, -1)
    if s.dtype == jnp.bool_ or jnp.issubdtype(s.dtype, jnp.unsignedinteger):
        s = s.astype(jnp.int32)
    g = s.reshape(*s.shape[:-1], size // m, m)
    order = jnp.argsort(-g, axis=-1, stable=True)  # largest first, earlier first among ties
    rank = jnp.argsort(order, axis=-1, stable=True)  # rank of each entry within its group
    keep = (rank < n).reshape(s.shape)
    return jnp.moveaxis(keep, -1, axis)
