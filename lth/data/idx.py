"""MNIST and Fashion-MNIST from the four original IDX `.gz` files.

Files are looked for under `<data_dir>/mnist/` and `<data_dir>/fashion_mnist/` (Fashion-MNIST
also under `/usr/share/datasets/fashion-mnist/`, where Debian's `dataset-fashion-mnist` package
puts them) and verified against the pinned sha256 values before they are parsed.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from lth.data import checksums
from lth.data.dataset import RawSplits, channel_stats
from lth.data.errors import DATA_DIR_ORIGIN, DataError

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

# Published MNIST statistics (train pixels / 255).
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def parse_idx(data: bytes, path: str) -> np.ndarray:
    """Decode an IDX file of unsigned bytes (magic 0x0000 08 NDIM, big-endian dims, then data)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (header {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != int(np.prod(dims)):
        raise DataError(f"{path}: IDX header says {dims} ({int(np.prod(dims))} bytes) but {len(data) - header} bytes follow")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def _how_to_get(name: str, where: str, files=checksums.IDX_FILES) -> str:
    base = checksums.MNIST_URL if name == "mnist" else checksums.FASHION_MNIST_URL
    urls = ", ".join(base + f for f in files)
    if name == "mnist":
        return f"download {urls} into {where}/, or set dataset.source=tfds to download through TFDS when online"
    return (
        f"download {urls} into {where}/ (or on Debian/Ubuntu `apt-get install dataset-fashion-mnist`, which puts "
        f"them in {DEBIAN_FASHION_MNIST_DIR}/), or set dataset.source=tfds to download through TFDS when online"
    )


def load_idx_dataset(name: str, data_dir: str) -> RawSplits:
    """Load `mnist` or `fashion_mnist`: uint8 images (N, 28, 28, 1), int32 labels, 10 classes.

    The first directory that holds all four files is used; a file there that fails verification
    is an error (no silent fallback to another copy).
    """
    primary = os.path.join(os.path.abspath(data_dir), name)
    candidates = [primary] + ([DEBIAN_FASHION_MNIST_DIR] if name == "fashion_mnist" else [])
    folder = next((d for d in candidates if all(os.path.isfile(os.path.join(d, f)) for f in checksums.IDX_FILES)), None)
    if folder is None:
        missing = [os.path.join(d, f) for d in candidates for f in checksums.IDX_FILES if not os.path.isfile(os.path.join(d, f))]
        looked = " and ".join(candidates)
        raise DataError(
            f"dataset {name!r}: data files are missing. Looked in {looked} ({DATA_DIR_ORIGIN}); "
            f"missing: {', '.join(missing)}. To get them: {_how_to_get(name, primary)}."
        )

    arrays = {}
    for f in checksums.IDX_FILES:
        path = os.path.join(folder, f)
        raw, problem = checksums.read_verified_gz(name, path)
        if problem is not None:
            raise DataError(
                f"dataset {name!r}: {problem}. The file is corrupt or not the official one; replace it. "
                f"To get it: {_how_to_get(name, folder, [f])}."
            )
        arrays[f] = parse_idx(raw, path)

    x_train, y_train = arrays["train-images-idx3-ubyte.gz"], arrays["train-labels-idx1-ubyte.gz"]
    x_test, y_test = arrays["t10k-images-idx3-ubyte.gz"], arrays["t10k-labels-idx1-ubyte.gz"]
    x_train, x_test = x_train[..., None], x_test[..., None]
    if name == "mnist":
        mean, std = np.array([MNIST_MEAN], np.float32), np.array([MNIST_STD], np.float32)
    else:
        mean, std = channel_stats(x_train, 255.0)
    return RawSplits(
        name=name,
        x_train=x_train,
        y_train=y_train.astype(np.int32),
        x_test=x_test,
        y_test=y_test.astype(np.int32),
        num_classes=10,
        mean=mean,
        std=std,
        scale=255.0,
    )
