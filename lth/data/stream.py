"""Training examples read from disk per step (`dataset.stream=true`).

`load_streamed` opens the prepared copy of a dataset (`lth.data.stream_prepare`, ArrayRecord),
preparing it first when it is missing, and returns the splits with the training set as
`StreamedRows`: an array-like of the right shape and dtype whose rows are read from the file when
indexed (`rows[idx]`, any integer index array; reads go to the file in sorted order and come back
in the order asked for). The training set is therefore never in memory; the validation examples
(chosen from the training records as the in-memory path chooses them), the test split and all
labels (4 bytes an example) are read into memory once.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from lth.data.dataset import RawSplits
from lth.data.errors import DataError
from lth.data.stream_prepare import FORMAT_VERSION, META, cache_name, default_stream_dir, is_prepared, prepare


class StreamedRows:
    """Rows `rows` (or all) of the examples in an ArrayRecord file, read when indexed.

    Indexing with integers, integer arrays or a slice returns a NumPy array; converting the whole
    object to an array (`np.asarray`) is refused, since that is exactly the read streaming avoids.
    """

    def __init__(self, path: str, example_shape, dtype, count: int, rows: Optional[np.ndarray] = None, _shared=None):
        self.path, self.example_shape, self.dtype = path, tuple(example_shape), np.dtype(dtype)
        self.rows = None if rows is None else np.asarray(rows, np.int64)
        self.count = int(count) if self.rows is None else len(self.rows)
        self._shared = _shared if _shared is not None else {"source": None, "lock": threading.Lock()}

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.count, *self.example_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.example_shape)

    def __len__(self) -> int:
        return self.count

    def view(self, rows) -> "StreamedRows":
        """The rows `rows` of this one, still unread."""
        rows = np.asarray(rows, np.int64)
        return StreamedRows(self.path, self.example_shape, self.dtype, len(rows),
                            rows if self.rows is None else self.rows[rows], self._shared)

    def __array__(self, *args, **kwargs):
        raise DataError(f"dataset.stream=true: the streamed training set ({self.count} examples in {self.path}) is read "
                        f"by batches (rows[idx]), never whole; something asked for all of it")

    def __getstate__(self):
        return {**self.__dict__, "_shared": None}

    def __setstate__(self, state):
        self.__dict__.update(state, _shared={"source": None, "lock": threading.Lock()})

    def __getitem__(self, idx) -> np.ndarray:
        if isinstance(idx, slice):
            idx = np.arange(self.count)[idx]
        if isinstance(idx, jax.core.Tracer):
            raise DataError("dataset.stream=true: the streamed training set cannot be indexed inside a compiled function "
                            "(this feature gathers training examples on the device); use dataset.stream=false for it")
        as_jax = isinstance(idx, jax.Array)  # a JAX index gives a JAX array, as indexing the in-memory set does
        idx = np.asarray(idx)
        if not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"StreamedRows: index with integers, not {idx.dtype}")
        flat = idx.reshape(-1).astype(np.int64)
        flat = np.where(flat < 0, flat + self.count, flat)
        if flat.size and (flat.min() < 0 or flat.max() >= self.count):
            raise IndexError(f"index out of range for {self.count} streamed examples")
        file_rows = flat if self.rows is None else self.rows[flat]
        order = np.argsort(file_rows, kind="stable")  # sorted reads, then back to the order asked for
        with self._shared["lock"]:
            if self._shared["source"] is None:
                from array_record.python.array_record_data_source import ArrayRecordDataSource

                self._shared["source"] = ArrayRecordDataSource(self.path)
            blobs = self._shared["source"].__getitems__(file_rows[order].tolist())
        out = np.empty((len(flat), *self.example_shape), self.dtype)
        out[order] = np.frombuffer(b"".join(blobs), self.dtype).reshape((len(flat), *self.example_shape))
        out = out.reshape(idx.shape + self.example_shape)
        return jnp.asarray(out) if as_jax else out


def stream_folder(cfg) -> str:
    """The prepared copy of `cfg`'s data: `<dataset.stream_dir or ~/.cache/lth/stream>/<name>-<hash>`."""
    from lth.config import defaults

    cfg = defaults.fill(cfg, "dataset")  # as load_dataset sees it, so that every caller names the same copy
    base = os.path.abspath(os.path.expanduser(cfg.stream_dir)) if cfg.stream_dir else default_stream_dir()
    return os.path.join(base, cache_name(cfg))


def load_streamed(cfg, data_dir: str, load_raw) -> RawSplits:
    """The full training split as `StreamedRows` and the test split in memory, from the prepared
    copy of `cfg`'s data (prepared now when missing, with `load_raw`: `lth.data.load_raw`)."""
    if cfg.name == "custom":
        raise DataError("dataset.stream=true: dataset=custom arrays are already in memory; stream only built-in or TFDS "
                        "datasets (dataset.stream=false for custom)")
    folder = stream_folder(cfg)
    if not is_prepared(folder):
        prepare(cfg, data_dir, folder, load_raw)
    with open(os.path.join(folder, META)) as f:
        meta = json.load(f)
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"dataset.stream=true: {folder} was prepared in format {meta.get('format_version')}, this lth reads "
                        f"format {FORMAT_VERSION}; delete the folder to prepare it again")
    shape, dtype = meta["shape"], np.dtype(meta["dtype"])
    x_train = StreamedRows(os.path.join(folder, "train.array_record"), shape, dtype, meta["num_train"])
    test = StreamedRows(os.path.join(folder, "test.array_record"), shape, dtype, meta["num_test"])
    return RawSplits(
        name=meta["name"], x_train=x_train, y_train=np.load(os.path.join(folder, "train_labels.npy")),
        x_test=test[np.arange(meta["num_test"])], y_test=np.load(os.path.join(folder, "test_labels.npy")),
        num_classes=meta["num_classes"], mean=np.asarray(meta["mean"], np.float32), std=np.asarray(meta["std"], np.float32),
        scale=meta["scale"], tokens=meta["tokens"], info={**meta["info"], "streamed_from": folder},
    )
