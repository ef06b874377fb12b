"""The in-memory dataset every loader returns, and the train/validation split.

Images keep their raw dtype (uint8) so that a whole training set fits on the accelerator in a
quarter of the float32 size; `Dataset.normalize` turns a batch into standardised float32 where it
is used (inside the jit-compiled step, after any augmentation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from lth.data.errors import DataError


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train, validation and test arrays plus what is needed to normalise them.

    `x_*` keep the raw dtype (uint8 images, float32 for MNIST-1D); `y_*` are int32 class indices.
    `mean` and `std` are float32 per-channel statistics in units of `x / scale` (so 0.1307 for
    MNIST, not 33.3); with `dataset.normalize=false` they are 0 and 1 and `normalize` only scales.

    Text (`tokens=True`, `lth.data.text`): `x_*` are int32 token ids (N, max_len) that `normalize`
    passes through unchanged. `objective` is None (classify `y`) or the masked-language-modelling
    objective (`lth.data.mlm.MaskedLM`) the trainer applies to the tokens instead. `info` is what
    the run's summary records about the data's origin and splits.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: np.ndarray
    std: np.ndarray
    scale: float
    per_image: bool = False  # standardise each example by its own statistics (`dataset.normalization=per_image`)
    unit_l2: bool = False  # divide each example by its own L2 norm (`dataset.normalization=per_image_l2`)
    tokens: bool = False
    objective: Optional[Any] = None
    info: dict = field(default_factory=dict)
    # `dataset.crop` (ImageNet): the model sees crop x crop; the training images keep their stored
    # size (the trainer's augmentation crops them), the validation and test images are stored cropped.
    crop: Optional[int] = None

    def __post_init__(self):
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if len(x) != len(y):
                raise DataError(f"dataset {self.name!r}: x_{split} has {len(x)} examples but y_{split} has {len(y)}")
            want = self.x_train.shape[1:] if split == "train" else self.input_shape
            if x.shape[1:] != want:
                raise DataError(f"dataset {self.name!r}: x_{split} has example shape {x.shape[1:]}, expected {want}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example as the model sees it, e.g. (28, 28, 1), (40,) or, with `crop`, (224, 224, 3)."""
        if self.crop is not None:
            return (self.crop, self.crop, *self.x_train.shape[3:])
        return tuple(self.x_train.shape[1:])

    def centered(self, x):
        """Raw image batches (..., H, W, C) as evaluation sees them: with `crop`, the central crop x crop
        window (the score batches of SNIP/GraSP take training images un-augmented); else `x` itself."""
        if self.crop is None:
            return x
        top, left = (x.shape[-3] - self.crop) // 2, (x.shape[-2] - self.crop) // 2
        return x[..., top:top + self.crop, left:left + self.crop, :]

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    def normalize(self, x):
        """Raw examples -> standardised float32: `(x / scale - mean) / std`, or with `per_image`
        TF's `per_image_standardization` of each raw example x (N values, after augmentation):
        `(x - mean(x)) / max(std(x), 1 / sqrt(N))`, or with `unit_l2` each example scaled to unit
        L2 norm over all its values, `x / ||x||_2` (an all-zero example stays 0): Keras's
        `utils.normalize` of the flattened image, as Frankle & Carbin's release preprocesses MNIST
        (`datasets/dataset_mnist.py`; the background stays exactly 0, and the norm does not
        depend on `scale`).

        Only arithmetic and array methods, so it works on NumPy arrays and on (traced) JAX arrays alike.
        Token ids (`tokens`) are returned as they are.
        """
        if self.tokens:
            return x
        if self.per_image:
            x = x.astype(np.float32)
            axes = tuple(range(1, x.ndim))
            n = int(np.prod(x.shape[1:]))
            mean = x.mean(axis=axes, keepdims=True)
            std = x.std(axis=axes, keepdims=True).clip(min=1.0 / np.sqrt(n))
            return (x - mean) / std
        if self.unit_l2:
            x = x.astype(np.float32)
            axes = tuple(range(1, x.ndim))
            norm = ((x * x).sum(axis=axes, keepdims=True)) ** 0.5
            return x / (norm + (norm == 0))
        return (x.astype(np.float32) / self.scale - self.mean) / self.std


def split_validation(x: np.ndarray, y: np.ndarray, val_size: int, split_seed: int, name: str = "dataset"):
    """Hold `val_size` examples of a training set out for validation.

    The validation examples are `np.random.default_rng(split_seed).permutation(n)[:val_size]` (in
    that order), so the split depends only on the seed and n; the training examples are the rest in
    their original order. Returns `(x_train, y_train, x_val, y_val)`.
    """
    train_idx, val_idx = validation_indices(len(x), val_size, split_seed, name)
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


def validation_indices(n: int, val_size: int, split_seed: int, name: str = "dataset") -> tuple[np.ndarray, np.ndarray]:
    """The rows of a training set of `n` examples that stay for training and those held out (see
    `split_validation`), as `(train_idx, val_idx)`."""
    if val_size < 0 or val_size >= n:
        raise DataError(
            f"dataset.val_size={val_size} is not possible for dataset {name!r}: it must be >= 0 and smaller "
            f"than the {n} training examples"
        )
    val_idx = np.random.default_rng(split_seed).permutation(n)[:val_size]
    keep = np.ones(n, dtype=bool)
    keep[val_idx] = False
    return np.flatnonzero(keep), val_idx


def channel_stats(x: np.ndarray, scale: float, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of `x / scale` over all examples and positions, as float32 (C,).

    The last axis is the channel axis (for (N, F) data such as MNIST-1D pass `x[..., None]`).
    Accumulated in float64 chunk by chunk so a large uint8 set never gets a float copy.
    """
    c = x.shape[-1]
    total, total_sq, count = np.zeros(c), np.zeros(c), 0
    for start in range(0, len(x), chunk):
        block = x[start : start + chunk].reshape(-1, c).astype(np.float64) / scale
        total += block.sum(0)
        total_sq += np.square(block).sum(0)
        count += block.shape[0]
    if count == 0:
        raise DataError("cannot compute normalisation statistics of an empty training set")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
    return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


@dataclass(frozen=True, eq=False)
class RawSplits:
    """What a loader returns: the full training and test sets, before the validation split.

    `mean`/`std` are the dataset's normalisation statistics over the whole training split (the
    published ones where they exist); `load_dataset` turns this into a `Dataset`. `tokens` and
    `info` as in `Dataset`.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: np.ndarray
    std: np.ndarray
    scale: float
    tokens: bool = False
    info: dict = field(default_factory=dict)
