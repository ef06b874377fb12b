"""On-device CIFAR augmentation in pure JAX: random 4-pixel-padded crop and horizontal flip.

Meant to run inside the jit-compiled (and possibly vmapped) training step on a batch of RAW images,
before `Dataset.normalize`, so padded pixels are raw zeros exactly as in torchvision's
`RandomCrop(32, padding=4)` + `RandomHorizontalFlip()` applied to un-normalised images.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def crop_flip_offsets(key: jax.Array, batch_size: int, pad: int = 4):
    """The random draws of `random_crop_flip`: per image a row offset `dy` and column offset
    `dx`, uniform in [0, 2*pad], and `flip` (bool), true with probability 1/2."""
    k_y, k_x, k_f = jax.random.split(key, 3)
    dy = jax.random.randint(k_y, (batch_size,), 0, 2 * pad + 1)
    dx = jax.random.randint(k_x, (batch_size,), 0, 2 * pad + 1)
    flip = jax.random.bernoulli(k_f, 0.5, (batch_size,))
    return dy, dx, flip


def crop_flip_image(image: jax.Array, dy, dx, flip, pad: int = 4) -> jax.Array:
    """One (H, W, C) image: zero-pad by `pad` on each spatial side, take the H x W window whose
    top-left corner is (dy, dx) in the padded image, and mirror it left-right if `flip`."""
    h, w, c = image.shape
    padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    window = jax.lax.dynamic_slice(padded, (dy, dx, jnp.zeros_like(dy)), (h, w, c))
    return jnp.where(flip, window[:, ::-1, :], window)


def random_crop_flip(key: jax.Array, images: jax.Array, pad: int = 4) -> jax.Array:
    """Augment a batch (B, H, W, C) of raw images; the dtype is kept. `pad` must be static."""
    if images.ndim != 4:
        raise ValueError(f"random_crop_flip needs a batch of images (B, H, W, C); got shape {images.shape}")
    dy, dx, flip = crop_flip_offsets(key, images.shape[0], pad)
    return jax.vmap(lambda im, y, x, f: crop_flip_image(im, y, x, f, pad))(images, dy, dx, flip)
