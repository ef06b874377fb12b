"""A small ImageNet-shaped stand-in (`dataset.name=imagenet_standin`), generated, no download.

Shaped as lth prepares ImageNet for the ResNet-50 presets (`dataset.image_size=256`: 256 x 256 x 3
uint8 images, 1,000 classes, ImageNet's normalisation statistics), so those presets' whole code
path (random-resized crops to 224 on the device, centre-crop evaluation, ResNet-50, streaming with
`dataset.stream=true` or `scripts/prepare_data.py imagenet_standin OUT`) runs on a laptop in minutes.
2,048 training and 256 test images (the test split is also reachable by imagenet2012's name for it,
`validation`, so a preset's `dataset.test_split=validation` needs no change). Each class is a coarse
4 x 4 colour pattern, each image that pattern plus pixel noise: learnable, but not a benchmark.
The arrays are a function of nothing but this module (a fixed seed), so runs on them are comparable.
`dataset.image_size` sets the side (default 256).
"""

from __future__ import annotations

import functools

import numpy as np

from lth.data.dataset import RawSplits
from lth.data.errors import DataError

NAME = "imagenet_standin"
NUM_CLASSES = 1000
NUM_TRAIN, NUM_TEST = 2048, 256
SIDE = 256
SEED = 20200830
TEST_SPLITS = ("test", "validation")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's, as for imagenet2012


def _up(a: np.ndarray, factor: int, side: int) -> np.ndarray:
    return np.repeat(np.repeat(a, factor, axis=1), factor, axis=2)[:, :side, :side]


def _images(rng: np.random.Generator, patterns: np.ndarray, labels: np.ndarray, side: int) -> np.ndarray:
    """Class pattern + noise in 4 x 4-pixel cells (a 16th of the random draws: seconds, not a minute)."""
    cell, grain = -(-side // patterns.shape[1]), 4
    out = np.empty((len(labels), side, side, 3), np.uint8)
    for start in range(0, len(labels), 256):  # in blocks: no float copy of the whole set
        lab = labels[start:start + 256]
        noise = rng.standard_normal((len(lab), -(-side // grain), -(-side // grain), 3), dtype=np.float32) * 32.0
        out[start:start + len(lab)] = np.clip(_up(patterns[lab], cell, side) + _up(noise, grain, side), 0, 255).astype(np.uint8)
    return out


def load_imagenet_standin(cfg) -> RawSplits:
    """The stand-in's train and test splits (`RawSplits`); bad split names are a `DataError`."""
    if cfg.train_split != "train" or cfg.test_split not in TEST_SPLITS:
        raise DataError(f"dataset.name={NAME!r} has the splits train and test (also named validation, as imagenet2012's); "
                        f"got dataset.train_split={cfg.train_split!r}, dataset.test_split={cfg.test_split!r}")
    return _generate(SIDE if cfg.image_size is None else int(cfg.image_size))


@functools.lru_cache(maxsize=1)
def _generate(side: int) -> RawSplits:
    """The arrays, made once per process (read-only: callers share them)."""
    rng = np.random.default_rng(SEED)
    patterns = rng.integers(0, 256, (NUM_CLASSES, 4, 4, 3)).astype(np.float32)
    y_train = rng.permutation(np.arange(NUM_TRAIN) % NUM_CLASSES).astype(np.int32)
    y_test = rng.permutation(np.arange(NUM_TEST) % NUM_CLASSES).astype(np.int32)
    x_train, x_test = _images(rng, patterns, y_train, side), _images(rng, patterns, y_test, side)
    for a in (x_train, y_train, x_test, y_test):
        a.flags.writeable = False
    return RawSplits(name=NAME, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, num_classes=NUM_CLASSES,
                     mean=np.asarray(MEAN, np.float32), std=np.asarray(STD, np.float32), scale=255.0,
                     info={"source": f"lth.data.imagenet_standin (generated, seed {SEED}, {side} x {side})"})
