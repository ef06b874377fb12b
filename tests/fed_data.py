"""Test helpers for batches fed from the host (tests/test_fed.py, tests/test_launch.py): a
dataset's training set as a streamed copy, and training sets that record what is read of them."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from lth.data.stream import StreamedRows


class CountedRows(StreamedRows):
    """`StreamedRows` recording the shape of every index it is read with (`reads`)."""

    def __getitem__(self, idx):
        self.__dict__.setdefault("reads", []).append(list(np.shape(idx)))
        return super().__getitem__(idx)


class Counted:
    """Host arrays recording every read: an index's shape, or "whole" when made an array."""

    def __init__(self, a):
        self.a, self.reads = np.asarray(a), []

    shape = property(lambda self: self.a.shape)
    dtype = property(lambda self: self.a.dtype)

    def __len__(self):
        return len(self.a)

    def __getitem__(self, idx):
        self.reads.append(list(np.shape(idx)))
        return self.a[idx]

    def __array__(self, dtype=None, copy=None):
        self.reads.append("whole")
        return self.a if dtype is None else self.a.astype(dtype)


def write_streamed(x: np.ndarray, folder: str) -> str:
    """`x` written as the ArrayRecord file a streamed training set reads (`lth.data.stream_prepare`)."""
    from lth.data.stream_prepare import _write_split

    os.makedirs(folder, exist_ok=True)
    _write_split(folder, "train", iter([x]), x.shape[1:], x.dtype)
    return os.path.join(folder, "train.array_record")


def streamed(ds, path: str):
    """`ds` with its training set read from `path` (`write_streamed`), counting the reads."""
    return dataclasses.replace(ds, x_train=CountedRows(path, ds.x_train.shape[1:], ds.x_train.dtype, len(ds.x_train)))


def counted(ds):
    """`ds` with its training set in memory, counting the reads."""
    return dataclasses.replace(ds, x_train=Counted(ds.x_train))


def reads(ds) -> list:
    """The distinct reads of `ds`'s training set so far (index shapes, "whole")."""
    seen = getattr(ds.x_train, "reads", [])
    return [r for i, r in enumerate(seen) if r not in seen[:i]]
