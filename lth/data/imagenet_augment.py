"""On-device ImageNet augmentation in pure JAX: Inception-style random-resized crop + flip, and the
evaluation's centre crop.

Training (`random_resized_crop_flip`, torchvision's `RandomResizedCrop(size)` +
`RandomHorizontalFlip()`, the transform of OpenLTH's and TF's official ImageNet ResNet-50): per
image a window of area `s * H * W` with `s ~ U[0.08, 1]` and aspect ratio `w / h` log-uniform in
`[3/4, 4/3]`, at a uniform position, resized (bilinear, antialiased as PIL and torchvision are) to
`size x size`, then mirrored left-right with probability 1/2. Like torchvision, a window that does
not fit is drawn again (10 tries, all drawn at once here), and after 10 misfits the whole image
(its aspect ratio clamped to the range) is taken at the centre.

Evaluation (`center_crop`): the central `size x size` window. Stored as lth prepares ImageNet
(`dataset.image_size=256`: shorter side resized to 256, centre 256 x 256 kept), the centre 224 of
that IS torchvision's `Resize(256)` + `CenterCrop(224)` of the original image.

Both are functions of (key, batch) or of the batch alone, inside the jit-compiled step, so which
pixels a step sees stays a function of (seed, replicate, step) as for CIFAR (`lth.data.augment`).
Integer inputs come back in their dtype (rounded and clipped, as PIL's uint8 resize), so the batch
is normalised afterwards exactly as an unaugmented one.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from lth.data.errors import DataError

SCALE = (0.08, 1.0)  # the window's share of the image's area
RATIO = (3 / 4, 4 / 3)  # the window's width / height
TRIES = 10  # torchvision's attempts before the centre fallback


def crop_windows(key: jax.Array, batch_size: int, height: int, width: int, scale=SCALE, ratio=RATIO):
    """Per image the integer window (top, left, h, w) and `flip` (bool) that
    `random_resized_crop_flip` uses: torchvision's `RandomResizedCrop.get_params`, its 10 tries
    drawn at once and the first that fits taken; the centre fallback when none fits."""
    k_s, k_r, k_y, k_x, k_f = jax.random.split(key, 5)
    area = float(height * width)
    shape = (batch_size, TRIES)
    target = area * jax.random.uniform(k_s, shape, minval=scale[0], maxval=scale[1])
    log_r = jax.random.uniform(k_r, shape, minval=math.log(ratio[0]), maxval=math.log(ratio[1]))
    r = jnp.exp(log_r)
    w = jnp.round(jnp.sqrt(target * r)).astype(jnp.int32)
    h = jnp.round(jnp.sqrt(target / r)).astype(jnp.int32)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = jnp.argmax(fits, axis=1)  # the first try that fits (0 when none does; masked below)
    any_fit = jnp.any(fits, axis=1)
    pick = lambda a: jnp.take_along_axis(a, first[:, None], axis=1)[:, 0]  # noqa: E731
    h, w = pick(h), pick(w)
    # torchvision's fallback: the whole image, its aspect ratio clamped to `ratio`, at the centre.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fh, fw = height, int(round(height * ratio[1]))
    else:
        fw, fh = width, height
    h, w = jnp.where(any_fit, h, fh), jnp.where(any_fit, w, fw)
    u_y, u_x = jax.random.uniform(k_y, (batch_size,)), jax.random.uniform(k_x, (batch_size,))
    top = jnp.where(any_fit, jnp.floor(u_y * (height - h + 1)).astype(jnp.int32), (height - fh) // 2)
    left = jnp.where(any_fit, jnp.floor(u_x * (width - w + 1)).astype(jnp.int32), (width - fw) // 2)
    flip = jax.random.bernoulli(k_f, 0.5, (batch_size,))
    return top, left, h, w, flip


def _restore_dtype(x: jax.Array, dtype) -> jax.Array:
    if jnp.issubdtype(dtype, jnp.integer):
        info = jnp.iinfo(dtype)
        return jnp.clip(jnp.round(x), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def resize_window(image: jax.Array, top, left, h, w, size: int) -> jax.Array:
    """One (H, W, C) image: the window of h x w pixels at (top, left) resized to size x size
    (bilinear, antialiased when shrinking), in float32. A window of exactly size x size is the
    plain slice (the linear kernel is 1 at the pixel centres and 0 one pixel away)."""
    c = image.shape[2]
    sy, sx = size / h.astype(jnp.float32), size / w.astype(jnp.float32)
    scale = jnp.stack([sy, sx])
    translation = jnp.stack([-top.astype(jnp.float32) * sy, -left.astype(jnp.float32) * sx])
    return jax.image.scale_and_translate(image.astype(jnp.float32), (size, size, c), (0, 1), scale, translation,
                                         method="linear", antialias=True)


def random_resized_crop_flip(key: jax.Array, images: jax.Array, size: int = 224) -> jax.Array:
    """Augment a batch (B, H, W, C) of raw images to (B, size, size, C); the dtype is kept.
    `size` must be static."""
    if images.ndim != 4:
        raise ValueError(f"random_resized_crop_flip needs a batch of images (B, H, W, C); got shape {images.shape}")
    b, height, width, _ = images.shape
    top, left, h, w, flip = crop_windows(key, b, height, width)

    def one(im, t, l, hh, ww, f):
        out = resize_window(im, t, l, hh, ww, size)
        return jnp.where(f, out[:, ::-1, :], out)

    return _restore_dtype(jax.vmap(one)(images, top, left, h, w, flip), images.dtype)


def center_crop(images, size: int):
    """The central size x size window of a batch (B, H, W, C) (NumPy or JAX; a view for NumPy).
    Offsets round down, as torchvision's `CenterCrop` (`int(round((H - size) / 2))` differs only
    for odd H - size, which 256 - 224 is not)."""
    if images.ndim != 4:
        raise ValueError(f"center_crop needs a batch of images (B, H, W, C); got shape {images.shape}")
    _, height, width, _ = images.shape
    if size > height or size > width:
        raise ValueError(f"center_crop: a {size} x {size} crop does not fit images of {height} x {width}")
    top, left = (height - size) // 2, (width - size) // 2
    return images[:, top:top + size, left:left + size, :]


def check_croppable(name: str, example_shape: tuple, size: int) -> None:
    """`dataset.crop=size` needs images (H, W, C) at least size x size: else a `DataError` naming
    the setting, the value and the images' shape (before any work)."""
    if len(example_shape) != 3 or example_shape[0] < size or example_shape[1] < size:
        raise DataError(f"dataset.crop={size}: crops need images (height, width, channels) of at least {size} x {size}, "
                        f"but dataset {name!r} has examples of shape {example_shape}; lower dataset.crop, set "
                        f"dataset.image_size >= {size} (TFDS), or leave dataset.crop out")


def augmenter(size: int, augment: bool):
    """The `(key, raw_batch) -> raw_batch` the trainer applies to training batches of images that
    are cropped to `size` (`dataset.crop`): random-resized crop + flip with `dataset.augment`, else
    the same centre crop as evaluation (the key unused)."""
    if augment:
        return lambda key, images: random_resized_crop_flip(key, images, size)
    return lambda key, images: center_crop(images, size)


def window_stats(top, left, h, w, height: int, width: int) -> dict:
    """Host-side summary of drawn windows (tests and the docs): area share and aspect ranges."""
    top, left, h, w = (np.asarray(a) for a in (top, left, h, w))
    return {"scale": (h * w) / (height * width), "ratio": w / h, "inside": bool(np.all((top >= 0) & (left >= 0) & (top + h <= height) & (left + w <= width)))}
