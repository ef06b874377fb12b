"""Deep Compression's storage format: relative indices with fillers, canonical Huffman, exact sizes."""

import itertools
import math

import numpy as np
import pytest

from lth.compression import coding as C


def mask_at(positions, length):
    m = np.zeros(length, bool)
    m[list(positions)] = True
    return m


def hand_fillers(positions, b):
    """sum over gaps of ceil(g / 2^b) - 1, with p_{-1} = -1."""
    prev, total = -1, 0
    for p in positions:
        total += math.ceil((p - prev) / 2**b) - 1
        prev = p
    return total


def roundtrip(mask, b, rng):
    codes = rng.integers(1, 8, size=int(mask.sum()))
    sc = C.encode_sparse(mask, codes, b)
    assert sc.rel.max(initial=0) < 2**b
    assert sc.fillers == hand_fillers(np.flatnonzero(mask), b) and sc.entries == mask.sum() + sc.fillers
    assert np.all(sc.rel[sc.weights == 0] == 2**b - 1)
    m2, c2 = C.decode_sparse(sc)
    np.testing.assert_array_equal(m2, mask)
    np.testing.assert_array_equal(c2, codes)
    return sc


@pytest.mark.parametrize("b", range(1, 9))
def test_sparse_roundtrip_random_masks(b):
    rng = np.random.default_rng(b)
    for density in [0.0, 0.003, 0.05, 0.3, 0.9, 1.0]:
        roundtrip(rng.random(2000) < density, b, rng)


@pytest.mark.parametrize("b", [1, 2, 3, 5, 8])
def test_sparse_edge_gaps(b):
    rng = np.random.default_rng(0)
    s = 2**b
    cases = [
        [0],  # first weight at position 0: gap 1
        [s - 1],  # gap exactly 2^b: no filler
        [s],  # gap 2^b + 1: one filler
        [s + 5],  # first weight past 2^b
        [0, s, 2 * s, 2 * s + 1],  # gaps 1, 2^b, 2^b, 1
        [0, s + 1],  # gap 2^b + 1
        [0, 3 * s],  # gap 3 * 2^b: two fillers, the last gap exactly 2^b
        [0, 3 * s + 1],  # gap 3 * 2^b + 1: three fillers
        [4 * s - 1],  # first gap 4 * 2^b
    ]
    for pos in cases:
        length = max(pos) + 1 + s  # trailing zeros need no entries
        sc = roundtrip(mask_at(pos, length), b, rng)
        assert sc.weights[-1] != 0
    assert C.encode_sparse(mask_at([s - 1], s), [1], b).fillers == 0
    assert C.encode_sparse(mask_at([s], s + 1), [1], b).fillers == 1
    assert C.encode_sparse(mask_at([0, 3 * s], 3 * s + 1), [1, 1], b).fillers == 2
    assert C.encode_sparse(mask_at([0, 3 * s + 1], 3 * s + 2), [1, 1], b).fillers == 3


def test_sparse_empty_and_full():
    sc = C.encode_sparse(np.zeros(100, bool), [], 3)
    assert sc.entries == 0 and sc.length == 100
    m, c = C.decode_sparse(sc)
    assert not m.any() and m.size == 100 and c.size == 0
    full = np.ones(50, bool)
    sc = C.encode_sparse(full, np.arange(50) % 7 + 1, 1)
    assert sc.entries == 50 and sc.fillers == 0 and np.all(sc.rel == 0)
    np.testing.assert_array_equal(C.decode_sparse(sc)[0], full)


def test_paper_figure_2():
    # 3-bit indices, 16 positions, weights 3.4, 0.9, 1.7 at 1, 4, 15: the gap of 11 gets one filler.
    # Paper: diffs 1, 3, 8, 3 and values 3.4, 0.9, 0, 1.7. Stored here as gap - 1 (p_{-1} = -1).
    sc = C.encode_sparse(mask_at([1, 4, 15], 16), [1, 2, 3], 3)
    assert sc.rel.tolist() == [1, 2, 7, 2]
    assert sc.weights.tolist() == [1, 2, 0, 3]
    assert sc.entries == 4 and sc.fillers == 1


def test_sparse_rejects_bad_input():
    with pytest.raises(ValueError):
        C.encode_sparse(mask_at([1], 4), [0], 2)  # code 0 is reserved
    with pytest.raises(ValueError):
        C.encode_sparse(mask_at([1, 2], 4), [1], 2)
    with pytest.raises(ValueError):
        C.decode_sparse(C.SparseCode(np.array([3], np.uint32), np.array([0], np.uint32), 10, 2))  # ends in a filler
    with pytest.raises(ValueError):
        C.decode_sparse(C.SparseCode(np.array([4], np.uint32), np.array([1], np.uint32), 10, 2))  # index too wide


def is_prefix_free(code):
    words = list(code.values())
    return not any(a != b and b.startswith(a) for a, b in itertools.permutations(words, 2))


def test_huffman_textbook_optimal():
    # CLRS 16.3: frequencies 45, 13, 12, 16, 9, 5 -> 224 bits, lengths 1, 3, 3, 3, 4, 4.
    freqs = {0: 45, 1: 13, 2: 12, 3: 16, 4: 9, 5: 5}
    lengths = C.huffman_lengths(freqs)
    assert lengths == {0: 1, 1: 3, 2: 3, 3: 3, 4: 4, 5: 4}
    symbols = np.repeat(list(freqs), list(freqs.values()))
    code = C.huffman_code(symbols)
    assert is_prefix_free(code) and {s: len(c) for s, c in code.items()} == lengths
    assert C.coded_bits(symbols, code) == 224
    data, nbits = C.huffman_encode(symbols, code)
    assert nbits == 224 and len(data) == 28
    np.testing.assert_array_equal(C.huffman_decode(data, nbits, code, symbols.size), symbols)
    # canonical: codes in order of (length, symbol), consecutive
    assert code == {0: "0", 1: "100", 2: "101", 3: "110", 4: "1110", 5: "1111"}
    assert C.table_bits(code) == 48


@pytest.mark.parametrize("kind", ["skewed", "uniform", "geometric", "two", "one"])
def test_huffman_roundtrip(kind):
    rng = np.random.default_rng(1)
    n = 20000
    if kind == "skewed":
        p = np.array([0.7, 0.2, 0.05, 0.03, 0.01, 0.005, 0.003, 0.002])
        symbols = rng.choice(np.array([0, 3, 9, 17, 31, 100, 255, 7]), size=n, p=p)
    elif kind == "uniform":
        symbols = rng.integers(0, 256, size=n)
    elif kind == "geometric":
        symbols = np.minimum(rng.geometric(0.3, size=n), 40)  # long codes
    elif kind == "two":
        symbols = rng.integers(5, 7, size=n)
    else:
        symbols = np.full(n, 42)
    code = C.huffman_code(symbols)
    assert is_prefix_free(code)
    assert sum(2.0 ** -len(c) for c in code.values()) == (0.5 if kind == "one" else 1.0)
    data, nbits = C.huffman_encode(symbols, code)
    assert nbits == C.coded_bits(symbols, code) == sum(len(code[s]) for s in symbols.tolist())
    assert len(data) == (nbits + 7) // 8
    out = C.huffman_decode(data, nbits, code, n)
    np.testing.assert_array_equal(out, symbols)
    if kind == "one":
        assert code == {42: "0"} and nbits == n
    if kind == "uniform":
        assert nbits == 8 * n  # 256 symbols each present: lengths all 8 is optimal
    # Huffman is within one bit per symbol of the entropy
    _, counts = np.unique(symbols, return_counts=True)
    p = counts / n
    entropy = -(p * np.log2(p)).sum()
    assert entropy * n <= nbits + 1e-6 <= (entropy + 1) * n + 1e-6


def test_huffman_decode_without_lookup_table(monkeypatch):
    rng = np.random.default_rng(2)
    symbols = np.minimum(rng.geometric(0.4, size=5000), 30)
    code = C.huffman_code(symbols)
    data, nbits = C.huffman_encode(symbols, code)
    monkeypatch.setattr(C, "TABLE_MAX_BITS", 0)  # the canonical ranges, one length at a time
    np.testing.assert_array_equal(C.huffman_decode(data, nbits, code, symbols.size), symbols)


def test_huffman_edge_cases():
    assert C.huffman_code([]) == {}
    assert C.huffman_encode([], {}) == (b"", 0)
    assert C.huffman_decode(b"", 0, {}, 0).size == 0
    code = C.huffman_code([1, 2, 2])
    data, nbits = C.huffman_encode([1, 2, 2], code)
    with pytest.raises(ValueError):
        C.huffman_decode(data, nbits, code, 2)  # wrong count
    with pytest.raises(ValueError):
        C.huffman_encode([3], code)  # not in the code
    with pytest.raises(ValueError):
        C.huffman_decode(data, nbits, {1: "1", 2: "0"}, 3)  # not canonical
    with pytest.raises(ValueError):
        C.huffman_decode(b"\x80", 1, {7: "0"}, 1)  # "1" is no codeword of a one-symbol code


def test_hand_tensor_sizes():
    # 20 weights, survivors at 0, 1, 6, 15 with codes 1, 1, 2, 1; 2-bit indices (gaps up to 4).
    # gaps 1, 1, 5, 9 -> fillers 0, 0, 1, 2:
    #   (0,1) (0,1) (3,0)@5 (0,2)@6 (3,0)@10 (3,0)@14 (0,1)@15
    mask, codes = mask_at([0, 1, 6, 15], 20), [1, 1, 2, 1]
    sc = C.encode_sparse(mask, codes, 2)
    assert sc.rel.tolist() == [0, 0, 3, 0, 3, 3, 0]
    assert sc.weights.tolist() == [1, 1, 0, 2, 0, 0, 1]
    sizes = C.tensor_sizes(mask, codes, weight_bits=2, index_bits=2, codebook_size=3)
    # weight stream: 1 x3, 0 x3, 2 x1 -> lengths 1, 2, 2 (or 2, 1, 2): 3 + 6 + 2 = 11 bits
    # index stream: 0 x4, 3 x3 -> 1 bit each: 7 bits; tables (3 + 2) symbols x 8 bits = 40
    assert sizes == {
        "dense": 32 * 20,
        "sparse_float32": 7 * (32 + 2),
        "shared": 7 * (2 + 2) + 3 * 32,
        "huffman": 11 + 7 + 40 + 3 * 32,
        "huffman_weights": 11,
        "huffman_index": 7,
        "huffman_tables": 40,
        "codebook": 96,
        "entries": 7,
        "fillers": 3,
        "nonzero": 4,
    }
    default = C.tensor_sizes(mask, codes, weight_bits=2, index_bits=2, dense_count=21)
    assert default["codebook"] == 4 * 32 and default["dense"] == 32 * 21
    et = C.encode_tensor(mask, codes, weight_bits=2, index_bits=2)
    assert et.bits == 11 + 7 + 40
    m2, c2 = C.decode_tensor(et)
    np.testing.assert_array_equal(m2, mask)
    assert c2.tolist() == codes


def test_tensor_roundtrip_and_consistency():
    rng = np.random.default_rng(3)
    for density, wb, ib in [(0.1, 5, 4), (0.02, 8, 5), (0.5, 2, 1), (0.0, 4, 3), (1.0, 3, 8)]:
        mask = rng.random((30, 40)).ravel() < density
        # skewed codes, as k-means on a bell-shaped distribution gives
        codes = np.clip(np.round(rng.normal(2**wb / 2, 2**wb / 8, size=int(mask.sum()))), 1, 2**wb - 1).astype(int)
        et = C.encode_tensor(mask, codes, weight_bits=wb, index_bits=ib)
        m2, c2 = C.decode_tensor(et)
        np.testing.assert_array_equal(m2, mask)
        np.testing.assert_array_equal(c2, codes)
        s = C.tensor_sizes(mask, codes, weight_bits=wb, index_bits=ib)
        assert s["nonzero"] == mask.sum() and s["fillers"] == hand_fillers(np.flatnonzero(mask), ib)
        assert s["huffman"] == et.bits + s["codebook"]
        # Huffman never loses to fixed-width codes on the payload
        assert s["huffman_weights"] + s["huffman_index"] <= s["entries"] * (wb + ib)
    with pytest.raises(ValueError):
        C.encode_tensor(mask_at([0], 4), [4], weight_bits=2, index_bits=2)  # code past 2^2 - 1
