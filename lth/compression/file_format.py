"""The compressed file of one replicate (`compressed_r<r>.npz`, written by `lth.compression.compress`).

Per coded tensor `p`: its two canonical Huffman streams (weight codes, relative indices) with their
code lengths and bit counts, the sizes needed to decode, its shape and its codebook (k-means
centroids, or int8 per-channel scales); the parameters that are not pruned as float32 (`p|float32`)
and the BatchNorm running statistics as float32 (`p|batch_stats`, p a path in the `batch_stats`
collection). Two file-wide entries say how to read the codes back:

- `_method`: `kmeans` (a code is an index into the codebook) or `int8` (code = q + 128, weight =
  q · scale of its output channel). Files written before it existed are told apart by the
  codebook's size, which fails for int8 at exactly 2^8 = 256 output channels: new files always
  carry it.
- `_index_order`: the order in which the relative indices walk a kernel (`INDEX_ORDERS`): `flax`,
  Flax's own row-major layout (…, in, out), as files before it; `caffe`, Caffe's and PyTorch's
  (out, in, …), in which a pruned output unit is one long run of zeros (Han et al.'s layout, with
  fewer filler entries).
"""

from __future__ import annotations

import os

import numpy as np

from lth.compression import coding

METHODS = ("kmeans", "int8")
INDEX_ORDERS = ("flax", "caffe")
# compress settings added after compress runs existed: out of a run's hash while at these defaults,
# so that the runs made before them keep their directories (as `lth.config.schema.HASH_OMITTED_AT_DEFAULT`)
HASH_OMITTED_AT_DEFAULT = {"index_order": "flax"}


def hashed_settings(compress: dict) -> dict:
    """The `compress` settings (a dict) as a compress run's hash covers them: `source` as null (the
    source's own hash stands for it), the later settings left out while at their defaults."""
    return {k: (None if k == "source" else v) for k, v in compress.items()
            if not (k in HASH_OMITTED_AT_DEFAULT and v == HASH_OMITTED_AT_DEFAULT[k])}


# -- the order the relative indices walk -----------------------------------------------------------
def _perm(ndim: int, order: str) -> tuple[int, ...]:
    """The axes of a Flax kernel (…, in, out) in `order`: caffe = (out, in, …spatial)."""
    if order not in INDEX_ORDERS:
        raise ValueError(f"index order {order!r} is not one of {', '.join(INDEX_ORDERS)}")
    if order == "flax" or ndim < 2:
        return tuple(range(ndim))
    return (ndim - 1, ndim - 2, *range(ndim - 2))


def storage_flat(x: np.ndarray, order: str) -> np.ndarray:
    """`x` (a tensor in Flax's layout) flattened in the order the relative indices walk."""
    x = np.asarray(x)
    return np.transpose(x, _perm(x.ndim, order)).reshape(-1)


def from_storage(flat: np.ndarray, shape: tuple[int, ...], order: str) -> np.ndarray:
    """The inverse of `storage_flat`: a flat array in storage order back in Flax's layout `shape`."""
    perm = _perm(len(shape), order)
    return np.transpose(np.asarray(flat).reshape([shape[a] for a in perm]), np.argsort(perm))


# -- writing and reading -----------------------------------------------------------------------------
def save(file: str, enc: dict[str, "coding.EncodedTensor"], rest: dict[str, np.ndarray], books: dict[str, np.ndarray],
         shapes: dict[str, tuple], *, method: str, index_order: str, batch_stats: dict[str, np.ndarray] | None = None) -> None:
    """Write one replicate's compressed network (see the module docstring)."""
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {', '.join(METHODS)}")
    _perm(0, index_order)
    arrays: dict[str, np.ndarray] = {"_method": np.array(method), "_index_order": np.array(index_order)}
    for p, e in enc.items():
        for stream, code, data, nbits in (("w", e.weight_code, e.weight_data, e.weight_nbits),
                                          ("i", e.index_code, e.index_data, e.index_nbits)):
            syms = np.array(sorted(code), np.int64)
            arrays[f"{p}|{stream}_symbols"] = syms
            arrays[f"{p}|{stream}_lengths"] = np.array([len(code[s]) for s in syms], np.uint8)
            arrays[f"{p}|{stream}_data"] = np.frombuffer(data, np.uint8)
            arrays[f"{p}|{stream}_nbits"] = np.array(nbits, np.int64)
        arrays[f"{p}|meta"] = np.array([e.length, e.entries, e.weight_bits, e.index_bits], np.int64)
        arrays[f"{p}|shape"] = np.array(shapes[p], np.int64)
        arrays[f"{p}|book"] = np.asarray(books[p], np.float32)
    for p, v in rest.items():
        arrays[f"{p}|float32"] = np.asarray(v, np.float32)
    for p, v in (batch_stats or {}).items():
        arrays[f"{p}|batch_stats"] = np.asarray(v, np.float32)
    tmp = file + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, file)


def _entries(z, suffix: str) -> dict[str, np.ndarray]:
    return {k[: -len(suffix) - 1]: z[k] for k in z.files if k.endswith("|" + suffix)}


def load_batch_stats(file: str) -> dict[str, np.ndarray]:
    """The BatchNorm running statistics ({path: array}) stored in the file ({} for a model without
    BatchNorm, and for files written before they were stored)."""
    with np.load(file) as z:
        return _entries(z, "batch_stats")


def load_weights(file: str) -> dict[str, np.ndarray]:
    """The weights ({path: array}) rebuilt from a file of `save` alone: decode both Huffman
    streams of each tensor, undo the sparse layout and the index order, look the codes up in the
    codebook (or scale the int8 codes)."""
    with np.load(file) as z:
        out = _entries(z, "float32")
        method = str(z["_method"]) if "_method" in z.files else None
        order = str(z["_index_order"]) if "_index_order" in z.files else "flax"
        for p in sorted(_entries(z, "meta")):
            out[p] = _decode(z, p, method, order)
    return out


def _decode(z, p: str, method: str | None, order: str) -> np.ndarray:
    shape = tuple(int(x) for x in z[f"{p}|shape"])
    length, entries, wbits, ibits = (int(x) for x in z[f"{p}|meta"])
    codes = {}
    for stream in ("w", "i"):
        lengths = dict(zip(z[f"{p}|{stream}_symbols"].tolist(), z[f"{p}|{stream}_lengths"].tolist()))
        codes[stream] = coding.canonical_code(lengths)
    et = coding.EncodedTensor(
        length=length, entries=entries, weight_bits=wbits, index_bits=ibits,
        weight_code=codes["w"], weight_data=z[f"{p}|w_data"].tobytes(), weight_nbits=int(z[f"{p}|w_nbits"]),
        index_code=codes["i"], index_data=z[f"{p}|i_data"].tobytes(), index_nbits=int(z[f"{p}|i_nbits"]))
    mask, kept = coding.decode_tensor(et)
    full = np.zeros(length, np.int64)
    full[mask] = kept
    full = from_storage(full, shape, order)
    mask = from_storage(mask, shape, order)
    book = z[f"{p}|book"]
    if method is None:  # a file from before `_method`: int8 told by its codebook's size
        method = "int8" if wbits == 8 and book.size != 2 ** 8 else "kmeans"
    if method == "int8":  # per-channel scales (the kernel's last axis), codes q + 128
        q = np.where(mask, full - 128, 0).astype(np.float32)
        w = (q.reshape(-1, book.size) * book).reshape(shape) if len(shape) > 1 else q * book[0]
    else:
        w = book[full].reshape(shape)
    return np.asarray(w, np.float32)
