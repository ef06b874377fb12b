"""MNIST-1D (Greydanus 2020): 4,000 train + 1,000 test sequences of 40 floats, 10 classes.

Read from `<data_dir>/mnist1d/mnist1d.npz` when it exists; otherwise regenerated offline by the
`mnist1d` package (`make_dataset(get_dataset_args())`, seconds, no network: its download helpers
are never used) and cached there, or under `~/.cache/lth/datasets/mnist1d/` when the data
directory is not writable. Both the file and freshly generated arrays are checked against the
pinned content hash of the published dataset.
"""

from __future__ import annotations

import os
import random
import tempfile

import numpy as np

from lth.data import checksums
from lth.data.dataset import RawSplits, channel_stats
from lth.data.errors import DATA_DIR_ORIGIN, DataError

FILE_NAME = "mnist1d.npz"


def fallback_cache_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".cache", "lth", "datasets", "mnist1d")


def generate() -> dict[str, np.ndarray]:
    """Regenerate the frozen MNIST-1D with the `mnist1d` package, in the reference file's dtypes.

    The package seeds Python's and NumPy's global generators; their states are restored after.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:
        raise DataError(f"dataset 'mnist1d': the `mnist1d` package is needed to generate it ({e}); pip install mnist1d") from None
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {
        "x_train": np.asarray(d["x"], np.float32),
        "y_train": np.asarray(d["y"]).astype(np.uint8),
        "x_test": np.asarray(d["x_test"], np.float32),
        "y_test": np.asarray(d["y_test"]).astype(np.uint8),
        "t": np.asarray(d["t"], np.float32),
    }


def _write_atomic(arrays: dict[str, np.ndarray], folder: str) -> str:
    """Write `folder/mnist1d.npz` via a temporary file and `os.replace` (never a partial file)."""
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".mnist1d.", suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        path = os.path.join(folder, FILE_NAME)
        os.replace(tmp, path)
        return path
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in checksums.MNIST1D_ARRAYS}
    except Exception as e:  # a truncated or foreign file: zipfile, KeyError, ValueError...
        raise DataError(
            f"dataset 'mnist1d': cannot read {path} ({type(e).__name__}: {e}). Delete it and it will be regenerated "
            f"offline by the mnist1d package."
        ) from None
    got = checksums.mnist1d_content_sha256(arrays)
    if got != checksums.MNIST1D_CONTENT_SHA256:
        raise DataError(
            f"dataset 'mnist1d': sha256 mismatch for the contents of {path} (x_train, y_train, x_test, y_test): "
            f"expected {checksums.MNIST1D_CONTENT_SHA256}, got {got}. Delete the file and it will be regenerated "
            f"offline by the mnist1d package."
        )
    return arrays


def load_mnist1d(data_dir: str) -> RawSplits:
    """MNIST-1D: float32 x (N, 40), int32 labels; mean/std over the training split, shape (1,)."""
    folder = os.path.join(os.path.abspath(data_dir), "mnist1d")
    fallback = fallback_cache_dir()
    existing = [os.path.join(d, FILE_NAME) for d in (folder, fallback) if os.path.isfile(os.path.join(d, FILE_NAME))]
    if existing:
        arrays = _read(existing[0])
    else:
        arrays = generate()
        got = checksums.mnist1d_content_sha256(arrays)
        if got != checksums.MNIST1D_CONTENT_SHA256:
            raise DataError(
                f"dataset 'mnist1d': the installed mnist1d package generated data whose content sha256 is {got}, not "
                f"the published dataset's {checksums.MNIST1D_CONTENT_SHA256}. Install the mnist1d version the project "
                f"pins, or put the published {FILE_NAME} in {folder}/ ({DATA_DIR_ORIGIN})."
            )
        try:
            _write_atomic(arrays, folder)
        except OSError:
            try:
                _write_atomic(arrays, fallback)
            except OSError:
                pass  # no writable cache: regenerate next time
    x_train = arrays["x_train"].astype(np.float32)
    mean, std = channel_stats(x_train[..., None], 1.0)
    return RawSplits(
        name="mnist1d",
        x_train=x_train,
        y_train=arrays["y_train"].astype(np.int32),
        x_test=arrays["x_test"].astype(np.float32),
        y_test=arrays["y_test"].astype(np.int32),
        num_classes=10,
        mean=mean,
        std=std,
        scale=1.0,
    )
