"""Writing a dataset in the streaming format (`dataset.stream=true`, `scripts/prepare_data.py`).

The format is ArrayRecord (`array_record`, the record format of grain and of TFDS's
`array_record` data sources), one record per example holding its raw bytes (uint8 pixels, float32
features or int32 token ids), written with `group_size:1` so that any record is one seek away.
A prepared copy is a folder:

    train.array_record, test.array_record   the examples of the full training and test splits
    train_labels.npy, test_labels.npy       their int32 labels (4 bytes an example: kept in memory)
    meta.json                               shape, dtype, counts, classes, normalisation statistics

The validation split is not stored apart: it is chosen from the training records at load time
(`lth.data.dataset.validation_indices`), exactly as the in-memory path chooses it.

Preparation is atomic: everything is written into `<out>.tmp-<pid>` and renamed to `<out>` at
the end, so an interrupted preparation leaves only a temporary folder that is never read (and is
removed by the next preparation). CIFAR-10's `.npz` is converted in chunks of `CHUNK` examples
read straight from the archive, so the conversion never holds the training set in memory; the
other sources (MNIST-1D, MNIST, Fashion-MNIST: under 50 MB; TFDS datasets) are
read whole by their in-memory loader and written in the same chunks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from typing import Iterator, Optional

import numpy as np

from lth.data.errors import DataError

FORMAT_VERSION = 1
META = "meta.json"
CHUNK = 4096  # examples converted at a time
SPLITS = ("train", "test")
# Dataset settings that change the arrays a source yields (so they name the prepared copy).
SOURCE_KEYS = ("name", "source", "train_split", "test_split", "image_size", "max_len", "vocab", "task")


def cache_name(cfg) -> str:
    """The folder name of the prepared copy of `cfg`'s data: the name and a hash of the settings
    that change the arrays (`SOURCE_KEYS`), e.g. `cifar10-3f2a9c1e`."""
    key = json.dumps({k: getattr(cfg, k, None) for k in SOURCE_KEYS}, sort_keys=True)
    return f"{cfg.name.replace('/', '_')}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def default_stream_dir() -> str:
    """Where prepared copies go when `dataset.stream_dir` is unset: `$XDG_CACHE_HOME/lth/stream`
    (`~/.cache/lth/stream`), beside the default data directory `~/.cache/lth/datasets`."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lth", "stream")


def is_prepared(folder: str) -> bool:
    """True when `folder` is a complete prepared copy (its meta.json is written last, and only
    the final rename makes the folder appear under this name)."""
    return os.path.isfile(os.path.join(folder, META))


def _npz_chunks(path: str, member: str, chunk: int) -> tuple[tuple[int, ...], np.dtype, Iterator[np.ndarray]]:
    """The shape and dtype of array `member` of an .npz file, and its rows in chunks, read from
    the zip member as a stream (no whole-array read)."""
    z = zipfile.ZipFile(path)
    f = z.open(member + ".npy")
    version = np.lib.format.read_magic(f)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(f)
    if fortran:
        raise DataError(f"{path}: {member} is stored in Fortran order; cannot stream it")
    row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

    def rows():
        try:
            for start in range(0, shape[0], chunk):
                n = min(chunk, shape[0] - start)
                data = f.read(n * row)
                if len(data) != n * row:
                    raise DataError(f"{path}: {member} ends after {start} rows of {shape[0]}")
                yield np.frombuffer(data, dtype).reshape((n, *shape[1:]))
        finally:
            f.close()
            z.close()

    return shape, dtype, rows()


def _in_memory_chunks(x: np.ndarray, chunk: int) -> Iterator[np.ndarray]:
    for start in range(0, len(x), chunk):
        yield np.ascontiguousarray(x[start:start + chunk])


def _source(cfg, data_dir: str, chunk: int, load_raw):
    """(meta, {split: (x chunks, y array)}) for `cfg`'s data: CIFAR-10's npz in chunks, the rest
    through `load_raw` (`lth.data.load_raw`, passed in: lth.data imports this module)."""
    from lth.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD, NPZ_NAME

    npz = os.path.join(os.path.abspath(data_dir), "cifar10", NPZ_NAME)
    if cfg.name == "cifar10" and cfg.source != "tfds" and os.path.isfile(npz):
        from lth.data.checksums import CIFAR10_NPZ_SHA256, file_problem

        problem = file_problem(npz, CIFAR10_NPZ_SHA256)
        if problem is not None:
            raise DataError(f"dataset 'cifar10': {problem}. The file is corrupt or not the expected one; replace it.")
        splits, shape, dtype = {}, None, None
        for split in SPLITS:
            shape, dtype, xs = _npz_chunks(npz, f"x_{split}", chunk)
            with np.load(npz) as z:
                y = z[f"y_{split}"].astype(np.int32)
            splits[split] = (xs, y, shape[0])
        meta = dict(name="cifar10", num_classes=10, mean=list(CIFAR10_MEAN), std=list(CIFAR10_STD),
                    scale=255.0, tokens=False, info={}, shape=list(shape[1:]), dtype=np.dtype(dtype).str)
        return meta, splits
    raw = load_raw(cfg, data_dir)
    meta = dict(name=raw.name, num_classes=int(raw.num_classes), mean=np.asarray(raw.mean, np.float64).tolist(),
                std=np.asarray(raw.std, np.float64).tolist(), scale=float(raw.scale), tokens=bool(raw.tokens),
                info=raw.info, shape=list(raw.x_train.shape[1:]), dtype=np.asarray(raw.x_train).dtype.str)
    try:
        json.dumps(meta)
    except TypeError as e:
        raise DataError(f"dataset.stream=true: dataset {raw.name!r} carries information that cannot be stored with a "
                        f"prepared copy ({e}); use dataset.stream=false for it") from None
    splits = {s: (_in_memory_chunks(np.asarray(getattr(raw, f"x_{s}")), chunk), np.asarray(getattr(raw, f"y_{s}"), np.int32),
                  len(getattr(raw, f"x_{s}"))) for s in SPLITS}
    return meta, splits


def _write_split(folder: str, split: str, chunks: Iterator[np.ndarray], shape, dtype) -> int:
    from array_record.python.array_record_module import ArrayRecordWriter

    writer = ArrayRecordWriter(os.path.join(folder, f"{split}.array_record"), "group_size:1")
    count = 0
    try:
        for block in chunks:
            block = np.ascontiguousarray(block, dtype=dtype)
            if block.shape[1:] != tuple(shape):
                raise DataError(f"split {split!r}: examples of shape {block.shape[1:]}, expected {tuple(shape)}")
            for row in block:
                writer.write(row.tobytes())
            count += len(block)
    finally:
        writer.close()
    return count


def prepare(cfg, data_dir: str, out: str, load_raw, *, chunk: int = CHUNK, _fail_after: Optional[str] = None) -> str:
    """Write `cfg`'s dataset (a `DatasetConfig`) in the streaming format into folder `out`,
    atomically; returns `out` (an existing complete copy there is kept as it is). `load_raw`:
    `lth.data.load_raw`, for the sources read whole.
    (`_fail_after`: a split name after which to stop with an error, for tests of interruption.)"""
    out = os.path.abspath(out)
    if is_prepared(out):
        return out
    parent = os.path.dirname(out)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise DataError(f"dataset.stream_dir: cannot create {parent} for the prepared copy ({e})") from None
    base = os.path.basename(out)
    for stale in os.listdir(parent):  # interrupted preparations by processes that no longer exist
        if stale.startswith(base + ".tmp-") and not _alive(stale.rsplit("-", 1)[-1]):
            shutil.rmtree(os.path.join(parent, stale), ignore_errors=True)
    tmp = f"{out}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        meta, splits = _source(cfg, data_dir, chunk, load_raw)
        for split in SPLITS:
            xs, y, n = splits[split]
            got = _write_split(tmp, split, xs, meta["shape"], np.dtype(meta["dtype"]))
            if got != n or len(y) != n:
                raise DataError(f"split {split!r}: wrote {got} examples and {len(y)} labels, expected {n}")
            np.save(os.path.join(tmp, f"{split}_labels.npy"), y.astype(np.int32))
            meta[f"num_{split}"] = n
            if split == _fail_after:
                raise KeyboardInterrupt(f"stopped after split {split!r} (test)")
        meta["format_version"] = FORMAT_VERSION
        with open(os.path.join(tmp, META), "w") as f:
            json.dump(meta, f, indent=1)
        try:
            os.rename(tmp, out)
        except OSError:
            if not is_prepared(out):  # another process finished first: use its copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
