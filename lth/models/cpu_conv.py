"""The convolution every lth model uses: `lax.conv_general_dilated`, routed around XLA:CPU's slow cases.

On GPUs and TPUs this is exactly `lax.conv_general_dilated`. On a CPU, XLA's convolutions (Eigen)
have shapes where they are one to two orders of magnitude slower than the same arithmetic as a
matrix product. Measured on this project's 2-core CPU, batch 128, 3x3 kernels, padding 1
(`scripts/bench_cpu_conv.py` prints the table; GFLOP/s, forward / forward + backward):

    shape (H x W, in -> out)   lax.conv            im2col + dot
    2x2, 512 -> 512            1.0 / 1.3           64.3 / 63.0     (VGG's last stage on CIFAR)
    1x1, 512 -> 512            8.1 / 10.3          56.0 / 72.0
    32x32, 3 -> 16             7.9 / 4.8           15.7 / 12.7     (every model's first conv)
    32x32, 64 -> 64            51.2 / 8.0          17.5 / 30.7     (the weight gradient is slow)
    8x8, 256 -> 256            57.9 / 51.4         33.0 / 53.9     (elsewhere lax.conv is as fast or faster)

So, on a CPU only:

- outputs of at most `TINY_OUTPUT` pixels, and inputs of at most `FEW_CHANNELS` channels, are
  computed as im2col + one matrix product (`im2col_conv`), differentiated by JAX as usual;
- with `KERNEL_GRAD_DOT` set (off by default since jaxlib 0.10, see below), large convolutions
  (at least `LARGE_OUTPUT` output pixels and `LARGE_CHANNELS` in x out channels) keep XLA's
  forward pass and input gradient but compute the kernel gradient as one matrix product of the
  im2col patches with the output gradient (`conv_fast_kernel_grad`);
- everything else is `lax.conv_general_dilated`.

Re-measured with jax/jaxlib 0.10.2 (same table, load average 11 to 14 on the 2 cores, so only the
columns of one row compare; GFLOP/s forward / forward + backward):

    shape (H x W, in -> out)   lax.conv      im2col + dot    kernel gradient as dot
    2x2, 512 -> 512            0.4 / 0.5     42.3 / 25.3     0.3 / 0.6
    1x1, 512 -> 512            3.4 / 4.4     39.0 / 50.6     3.5 / 5.1
    32x32, 3 -> 64             8.1 / 5.6      8.3 / 8.8      5.6 / 3.8
    32x32, 64 -> 64           30.3 / 26.2     8.3 / 15.4    31.4 / 14.8
    16x16, 128 -> 128         44.5 / 44.9    14.3 / 20.2    56.0 / 21.3
    8x8, 256 -> 256           38.0 / 38.8    20.9 / 29.0    39.2 / 29.0

XLA:CPU's kernel gradient is no longer the slow part, so the kernel-gradient route is off; tiny
outputs and RGB inputs still gain from im2col. Per model (`--variants kgrad routed`, same run):
Conv-2 training 73.3 -> 73.3 images/s, evaluation 356 -> 359 images/s (unchanged: its time is
elsewhere). XLA flags tried on single convolutions (XNNPACK / YNNPACK convolution fusions, oneDNN)
gave no consistent gain under this load.

Every route computes the same convolution; they differ only in the order of floating-point sums
(tests compare outputs and gradients with `lax.conv_general_dilated`). The parameters are
untouched: models build `Conv` below (`flax.linen.Conv(conv_general_dilated=...)`), so kernels
keep their (kh, kw, in, out) shape and names, and checkpoints do not depend on the device.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

TINY_OUTPUT = 4  # output pixels (H x W) at or below which im2col + dot is used
FEW_CHANNELS = 4  # input channels at or below which im2col + dot is used (RGB / grey first layers)
LARGE_OUTPUT = 256  # output pixels at or above which ...
LARGE_CHANNELS = 64 * 64  # ... and in x out channels at or above which the kernel gradient is a dot
# The kernel-gradient route helped with jax/jaxlib 0.4; with 0.10 XLA:CPU's own kernel gradient is
# about twice as fast as it (see the module doc), so it is off unless this is set (before tracing).
KERNEL_GRAD_DOT = False

# False makes every convolution `lax.conv_general_dilated` (the baseline of scripts/bench_cpu_conv.py).
# Read when a function is traced: set it before compiling.
ROUTED = True

_NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2))
Padding = tuple[tuple[int, int], tuple[int, int]]


def _native(x, w, strides: tuple[int, int], padding: Padding):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC)


def patches(x: jax.Array, kh: int, kw: int, strides: tuple[int, int], padding: Padding) -> jax.Array:
    """im2col: (B, Ho, Wo, kh * kw * C) with the window at output (i, j) flattened in the order of
    an HWIO kernel reshaped to (kh * kw * C, out), so `patches @ kernel.reshape(-1, out)` is the
    convolution."""
    (pt, pb), (pl, pr) = padding
    sh, sw = strides
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    b, hp, wp, c = xp.shape
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    cols = [lax.slice(xp, (0, i, j, 0), (b, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c), (1, sh, sw, 1))
            for i in range(kh) for j in range(kw)]
    return cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)


def im2col_conv(x: jax.Array, w: jax.Array, strides: tuple[int, int], padding: Padding) -> jax.Array:
    """The convolution as im2col patches times the kernel: one matrix product."""
    kh, kw, cin, cout = w.shape
    p = patches(x, kh, kw, strides, padding)
    return jnp.dot(p.reshape(-1, kh * kw * cin), w.reshape(kh * kw * cin, cout)).reshape(p.shape[:3] + (cout,))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_fast_kernel_grad(x: jax.Array, w: jax.Array, strides: tuple[int, int], padding: Padding) -> jax.Array:
    """XLA's convolution, with the kernel gradient computed as `patches(x).T @ dy`."""
    return _native(x, w, strides, padding)


def _fkg_fwd(x, w, strides, padding):
    return _native(x, w, strides, padding), (x, w)


def _fkg_bwd(strides, padding, residuals, dy):
    x, w = residuals
    kh, kw, cin, cout = w.shape
    _, input_vjp = jax.vjp(lambda x_: _native(x_, w, strides, padding), x)
    (dx,) = input_vjp(dy)
    p = patches(x, kh, kw, strides, padding)
    dw = jnp.dot(p.reshape(-1, kh * kw * cin).T, dy.reshape(-1, cout)).reshape(w.shape)
    return dx, dw.astype(w.dtype)


conv_fast_kernel_grad.defvjp(_fkg_fwd, _fkg_bwd)


def route(x_shape: Sequence[int], w_shape: Sequence[int], strides: tuple[int, int], padding: Padding) -> str:
    """Which implementation a CPU convolution of these shapes uses: 'im2col', 'fast_kernel_grad'
    or 'lax'."""
    kh, kw, cin, cout = w_shape
    (pt, pb), (pl, pr) = padding
    ho = (x_shape[1] + pt + pb - kh) // strides[0] + 1
    wo = (x_shape[2] + pl + pr - kw) // strides[1] + 1
    if ho * wo <= TINY_OUTPUT or cin <= FEW_CHANNELS:
        return "im2col"
    if KERNEL_GRAD_DOT and ho * wo >= LARGE_OUTPUT and cin * cout >= LARGE_CHANNELS:
        return "fast_kernel_grad"
    return "lax"


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None):
    """Drop-in for `lax.conv_general_dilated` (what `flax.linen.Conv` calls), see the module doc.

    Only plain 2-D NHWC/HWIO convolutions on a CPU take another route; dilated, grouped or
    differently laid-out ones, and every convolution on other backends, are `lax`'s own.
    """
    plain = (
        ROUTED
        and jax.default_backend() == "cpu"
        and lhs.ndim == 4
        and feature_group_count == 1
        and batch_group_count == 1
        and preferred_element_type is None
        and all(d == 1 for d in (lhs_dilation or (1, 1)))
        and all(d == 1 for d in (rhs_dilation or (1, 1)))
        and dimension_numbers is not None
        and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == _NHWC
    )
    if not plain:
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                                        feature_group_count, batch_group_count, precision=precision,
                                        preferred_element_type=preferred_element_type)
    strides = tuple(int(s) for s in window_strides)
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    which = route(lhs.shape, rhs.shape, strides, pads)
    if which == "im2col":
        return im2col_conv(lhs, rhs, strides, pads)
    if which == "fast_kernel_grad":
        return conv_fast_kernel_grad(lhs, rhs, strides, pads)
    return _native(lhs, rhs, strides, pads)


# The convolution layer every lth model builds: Flax's, computed by `conv_general_dilated` above.
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
