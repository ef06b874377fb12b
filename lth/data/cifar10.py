"""CIFAR-10 from `<data_dir>/cifar10/`.

Two verified formats are read: the project's `cifar10.npz` (the copy in shared/datasets: uint8
images (N, 32, 32, 3), rows in a fixed shuffled order) and, so that a user can fetch the data
without TFDS, the official `cifar-10-binary.tar.gz` (official row order). Both hold the same
images; the validation split is a seeded permutation, so it is class-balanced for either.
"""

from __future__ import annotations

import os
import tarfile

import numpy as np

from lth.data import checksums
from lth.data.dataset import RawSplits
from lth.data.errors import DATA_DIR_ORIGIN, DataError

NPZ_NAME = "cifar10.npz"
BINARY_NAME = "cifar-10-binary.tar.gz"

# Published per-channel statistics of the training images / 255.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

_RECORD = 1 + 32 * 32 * 3  # label byte, then the red, green and blue 32x32 planes


def _read_binary_tar(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode the official binary archive: data_batch_1..5.bin (train) and test_batch.bin."""
    wanted = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    blobs = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            base = os.path.basename(member.name)
            if member.isfile() and base in wanted:
                blobs[base] = tar.extractfile(member).read()
    missing = [w for w in wanted if w not in blobs]
    if missing:
        raise DataError(f"dataset 'cifar10': {path} lacks {', '.join(missing)}")

    def decode(names):
        rec = np.frombuffer(b"".join(blobs[n] for n in names), np.uint8).reshape(-1, _RECORD)
        x = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(x), rec[:, 0].astype(np.int32)

    x_train, y_train = decode(wanted[:5])
    x_test, y_test = decode(wanted[5:])
    return x_train, y_train, x_test, y_test


def load_cifar10(data_dir: str) -> RawSplits:
    """CIFAR-10: uint8 (50000, 32, 32, 3) train, (10000, 32, 32, 3) test, int32 labels."""
    folder = os.path.join(os.path.abspath(data_dir), "cifar10")
    npz_path, tar_path = os.path.join(folder, NPZ_NAME), os.path.join(folder, BINARY_NAME)
    how = (
        f"set dataset.source=tfds to download CIFAR-10 through TFDS when online, or download the official "
        f"{checksums.CIFAR10_BINARY_URL} into {folder}/ (the {NPZ_NAME} form is the project's shared copy, "
        f"pinned by sha256)"
    )
    if os.path.isfile(npz_path):
        problem = checksums.file_problem(npz_path, checksums.CIFAR10_NPZ_SHA256)
        if problem is None:
            with np.load(npz_path, allow_pickle=False) as z:
                x_train, y_train, x_test, y_test = (z[k] for k in ("x_train", "y_train", "x_test", "y_test"))
            y_train, y_test = y_train.astype(np.int32), y_test.astype(np.int32)
    elif os.path.isfile(tar_path):
        problem = checksums.file_problem(tar_path, checksums.CIFAR10_BINARY_SHA256)
        if problem is None:
            x_train, y_train, x_test, y_test = _read_binary_tar(tar_path)
    else:
        raise DataError(
            f"dataset 'cifar10': data file is missing. Looked for {npz_path} and {tar_path} ({DATA_DIR_ORIGIN}). "
            f"To get it: {how}."
        )
    if problem is not None:
        raise DataError(f"dataset 'cifar10': {problem}. The file is corrupt or not the expected one; replace it. To get it: {how}.")
    return RawSplits(
        name="cifar10",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=10,
        mean=np.array(CIFAR10_MEAN, np.float32),
        std=np.array(CIFAR10_STD, np.float32),
        scale=255.0,
    )
