"""Weight sharing by k-means and post-training int8 quantisation (Deep Compression's stage 2).

Weight sharing (Han, Mao & Dally 2016, section 3): the surviving weights w_i of one tensor are
clustered into K = 2^b − 1 shared values c_1..c_K by one-dimensional k-means,

    min_c Σ_i min_k (w_i − c_k)²,

from the paper's best initialisation, *linear*: c_k = min w + (k − 1)(max w − min w)/(K − 1),
then Lloyd's iterations (assign each weight to its nearest centroid, move each centroid to the
mean of its weights; a centroid left without weights stays where it is) until no assignment
changes. Each weight is then stored as its code k ∈ 1..K in b bits; code 0 is reserved for the
value 0 (pruned weights and the format's filler entries, `lth.compression.coding`), so a b-bit tensor has
2^b − 1 trainable shared values plus the zero.

Centroid fine-tuning (section 3.2): with the assignments fixed, W = c[codes] ⊙ m, and

    ∂L/∂c_k = Σ_{i : code_i = k} ∂L/∂W_i,

which is exactly what automatic differentiation of the gather `c[codes]` gives (its transpose is
a scatter-add), so the centroids train like any parameter under the source run's optimizer;
pruned weights stay exactly 0 (code 0 maps to the fixed 0).

int8 (the simple baseline): symmetric, per output channel (the kernel's last axis):
s_j = max_i |W_ij| / 127, q_ij = round(W_ij / s_j) ∈ [−127, 127], Ŵ = s_j·q; |W − Ŵ| ≤ s_j/2, and
pruned weights stay 0.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Shared:
    """One weight-shared tensor: `codebook` (K + 1,) float32 with codebook[0] = 0, `codes` of
    the tensor's shape (0 where pruned), and the k-means iterations run."""

    codebook: np.ndarray
    codes: np.ndarray
    iterations: int

    def weights(self) -> np.ndarray:
        return self.codebook[self.codes]


def linear_init(values: np.ndarray, k: int) -> np.ndarray:
    """k centroids evenly spaced over [min, max] of `values` (Han et al.'s linear initialisation)."""
    lo, hi = float(np.min(values)), float(np.max(values))
    if k == 1:
        return np.array([(lo + hi) / 2], np.float64)
    return np.linspace(lo, hi, k, dtype=np.float64)


def assign(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid of each value (ties to the lower centroid)."""
    order = np.argsort(centroids, kind="stable")
    sorted_c = centroids[order]
    mids = (sorted_c[1:] + sorted_c[:-1]) / 2
    return order[np.searchsorted(mids, values, side="left")]


def kmeans_1d(values: np.ndarray, k: int, *, max_iter: int = 300) -> tuple[np.ndarray, np.ndarray, int]:
    """Lloyd's k-means of 1-D `values` from the linear initialisation: (centroids (k,),
    assignment of each value, iterations run)."""
    values = np.asarray(values, np.float64)
    c = linear_init(values, k)
    a = assign(values, c)
    for it in range(1, max_iter + 1):
        sums = np.bincount(a, weights=values, minlength=k)
        counts = np.bincount(a, minlength=k)
        c = np.where(counts > 0, sums / np.maximum(counts, 1), c)
        new = assign(values, c)
        if np.array_equal(new, a):
            return c, a, it
        a = new
    return c, a, max_iter


def share(weights: np.ndarray, mask: np.ndarray, bits: int) -> Shared:
    """Weight sharing of one tensor: k-means with 2^bits − 1 centroids over the weights where
    `mask` is true; code 0 (the value 0) where it is false."""
    if bits < 1:
        raise ValueError(f"bits={bits}: at least 1 bit per weight")
    w = np.asarray(weights, np.float32)
    mask = np.asarray(mask, bool)
    codes = np.zeros(w.shape, np.int32)
    alive = w[mask]
    k = 2 ** bits - 1
    if alive.size == 0:
        return Shared(np.zeros(k + 1, np.float32), codes, 0)
    c, a, it = kmeans_1d(alive, k)
    codes[mask] = a + 1
    return Shared(np.concatenate([[0.0], c]).astype(np.float32), codes, it)


@dataclasses.dataclass
class Int8:
    """One int8-quantised tensor: `q` int8 of the tensor's shape, `scale` float32 per output channel."""

    q: np.ndarray
    scale: np.ndarray

    def weights(self) -> np.ndarray:
        return (self.q.astype(np.float32) * self.scale).astype(np.float32)


def int8(weights: np.ndarray, mask: np.ndarray | None = None) -> Int8:
    """Symmetric per-output-channel int8 quantisation (the kernel's last axis is the channel)."""
    w = np.asarray(weights, np.float32)
    if mask is not None:
        w = np.where(mask, w, 0.0).astype(np.float32)
    flat = w.reshape(-1, w.shape[-1]) if w.ndim > 1 else w.reshape(-1, 1)
    amax = np.abs(flat).max(axis=0)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.round(flat / scale), -127, 127).astype(np.int8)
    shape_scale = scale if w.ndim > 1 else scale.reshape(())
    return Int8(q.reshape(w.shape), shape_scale)
