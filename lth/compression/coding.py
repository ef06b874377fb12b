"""Deep Compression's storage format for one pruned, weight-shared tensor, measured exactly in bits.

Han, Mao & Dally (ICLR 2016) store a network in three stages: pruning (a sparse layout with
relative indices, section 2), weight sharing (each surviving weight is a `weight_bits`-bit index
into a codebook of shared float32 values, section 3) and Huffman coding of both streams
(section 4). This module is the format and its exact size; the k-means weight sharing picks the
codes. Pure numpy: it runs once per tensor on the host and must be exact, not fast.

Sparse layout (the paper's Figure 2). Walk the flat tensor in row-major order. Each stored entry
is a pair (relative index, weight code). The i-th surviving weight sits at flat position p_i,
with p_{-1} := -1. Its gap g = p_i - p_{i-1} >= 1 is stored in `index_bits` bits as g - 1, so gaps
1 .. 2^index_bits fit. A larger gap is preceded by filler entries. Each filler advances the
position by 2^index_bits (relative code 2^index_bits - 1) and carries the reserved weight code 0,
"zero weight". So a gap g costs ceil(g / 2^b) - 1 fillers, and the final entry's gap
g - fillers * 2^b lies in 1 .. 2^b. A filler never lands on a surviving weight, gaps that are
exact multiples of 2^b included. Zeros after the last surviving weight need no entries (the
tensor's length is known). Figure 2 (3-bit indices, weights at 1, 4, 15 of 16) gives 4 entries:
(1, w), (2, w), (7, 0) filler, (2, w). The paper writes these as diffs 1, 3, 8, 3. Here the
stored code is the gap minus one, so that b bits really hold gaps up to 2^b.

Weight codes. Code 0 is reserved for "zero" (fillers), so the shared centroids use codes
1 .. 2^weight_bits - 1.

Huffman coding (stage 3). This is a canonical Huffman code of each stream on its own: the weight
codes of all entries (fillers included) and their relative indices. A canonical code is fixed by
each symbol's code length (codes assigned in order of (length, symbol)). Its table therefore costs
8 bits per symbol of the stream's alphabet (the symbol's code length; the alphabet is the set of
symbols that occur). That is the convention `table_bits` counts. A one-symbol alphabet gets the
1-bit code "0". Why not `dahuffman` from PyPI: it puts an end-of-stream symbol into every tree,
which changes the code lengths (not the optimal code of the symbols). Its codes are also not
canonical, and it encodes one symbol at a time in Python. The code here is heapq for the lengths
plus numpy bit packing. Its decoder reads every bit position's codeword at once and follows the
codeword chain by pointer doubling.

Sizes (`tensor_sizes`, all in bits, exact integers). n is the number of stored entries, fillers
included.
- dense: 32 bits times `dense_count` (default: the tensor's size);
- sparse_float32: the paper's pruned storage, n * (32 + index_bits), a float32 value plus a
  relative index for each entry;
- shared: n * (weight_bits + index_bits) plus the codebook, 32 * codebook_size. The default is
  2^weight_bits floats, which counts the zero of code 0 too; pass 2^weight_bits - 1, or the
  number of centroids in use, to leave it out;
- huffman: both Huffman-coded streams, plus both code tables, plus the same codebook.
Per-tensor metadata (the length, the entry count, the bit widths) is not counted, as in the
paper.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

FLOAT_BITS = 32  # one float32: a dense weight, a pruned-storage value, a codebook entry
TABLE_BITS_PER_SYMBOL = 8  # a canonical Huffman table stores one code length per symbol
TABLE_MAX_BITS = 20  # the decoder's lookup table has 2^(longest code) rows up to this length


# ---------------------------------------------------------------- sparse layout (relative indices)


@dataclass(frozen=True, eq=False)
class SparseCode:
    """The entries of one tensor: `rel[k]` (gap - 1, fillers: 2^index_bits - 1) and `weights[k]`
    (a code >= 1, fillers: 0); `length` is the tensor's size."""

    rel: np.ndarray
    weights: np.ndarray
    length: int
    index_bits: int

    @property
    def entries(self) -> int:
        return int(self.rel.size)

    @property
    def fillers(self) -> int:
        return int(np.count_nonzero(self.weights == 0))


def _check_index_bits(index_bits: int) -> int:
    if not 1 <= int(index_bits) <= 32:
        raise ValueError(f"index_bits must be in 1..32, got {index_bits}")
    return int(index_bits)


def encode_sparse(mask_flat, codes, index_bits: int) -> SparseCode:
    """The relative-index entries of a flat mask and the codes (>= 1) of its True positions,
    in order, with filler entries before every gap over 2^index_bits."""
    index_bits = _check_index_bits(index_bits)
    mask = np.asarray(mask_flat, bool).ravel()
    codes = np.asarray(codes).ravel()
    pos = np.flatnonzero(mask)
    if codes.size != pos.size:
        raise ValueError(f"{codes.size} codes for {pos.size} surviving weights")
    if codes.size and int(codes.min()) < 1:
        raise ValueError("weight code 0 is reserved for fillers (zero); codes must be >= 1")
    span = 1 << index_bits
    gaps = np.diff(pos, prepend=-1)
    fill = (gaps - 1) // span  # = ceil(g / span) - 1
    slot = np.cumsum(fill + 1) - 1  # each weight's entry, after its fillers
    total = int(pos.size + fill.sum())
    rel = np.full(total, span - 1, np.uint32)
    weights = np.zeros(total, np.uint32)
    rel[slot] = gaps - 1 - fill * span
    weights[slot] = codes
    return SparseCode(rel, weights, int(mask.size), index_bits)


def decode_sparse(sc: SparseCode) -> tuple[np.ndarray, np.ndarray]:
    """(mask_flat, codes) back from the entries; raises on anything `encode_sparse` cannot give."""
    span = 1 << _check_index_bits(sc.index_bits)
    rel = np.asarray(sc.rel, np.int64).ravel()
    w = np.asarray(sc.weights, np.int64).ravel()
    if rel.shape != w.shape:
        raise ValueError("rel and weights differ in length")
    if rel.size and (rel.min() < 0 or rel.max() >= span):
        raise ValueError(f"relative index out of 0..{span - 1}")
    real = w != 0
    if np.any(rel[~real] != span - 1):
        raise ValueError("a filler must advance by exactly 2^index_bits")
    pos = np.cumsum(rel + 1) - 1
    if pos.size and (pos[-1] >= sc.length or not real[-1]):
        raise ValueError("entries run past the tensor or end in a filler")
    mask = np.zeros(int(sc.length), bool)
    mask[pos[real]] = True
    return mask, w[real]


# ---------------------------------------------------------------- canonical Huffman


def huffman_lengths(counts: Mapping[int, int]) -> dict[int, int]:
    """Optimal code lengths of the symbols with a positive count (ties broken by symbol, so
    deterministic); one symbol alone gets length 1."""
    items = sorted((int(s), int(c)) for s, c in counts.items() if c > 0)
    if len(items) <= 1:
        return {s: 1 for s, _ in items}
    n = len(items)
    parent = [-1] * (2 * n - 1)
    heap = [(c, i) for i, (_, c) in enumerate(items)]
    heapq.heapify(heap)
    node = n
    while len(heap) > 1:
        ca, a = heapq.heappop(heap)
        cb, b = heapq.heappop(heap)
        parent[a] = parent[b] = node
        heapq.heappush(heap, (ca + cb, node))
        node += 1
    depth = [0] * (2 * n - 1)
    for v in range(2 * n - 3, -1, -1):  # parents have larger ids than their children
        depth[v] = depth[parent[v]] + 1
    return {s: depth[i] for i, (s, _) in enumerate(items)}


def canonical_code(lengths: Mapping[int, int]) -> dict[int, str]:
    """The canonical prefix code of the given lengths: codes in order of (length, symbol), each the
    previous one plus one, shifted left to its length."""
    order = sorted(((int(l), int(s)) for s, l in lengths.items()))
    if sum(2.0 ** -l for l, _ in order) > 1.0 + 1e-12 or any(l < 1 for l, _ in order):
        raise ValueError("code lengths violate Kraft's inequality")
    out, code, prev = {}, 0, order[0][0] if order else 0
    for l, s in order:
        code <<= l - prev
        out[s] = format(code, f"0{l}b")
        code, prev = code + 1, l
    return out


def symbol_counts(symbols) -> dict[int, int]:
    values, counts = np.unique(np.asarray(symbols, np.int64).ravel(), return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def huffman_code(symbols) -> dict[int, str]:
    """The canonical Huffman code {symbol: bit string} of a stream of integer symbols."""
    return canonical_code(huffman_lengths(symbol_counts(symbols)))


def coded_bits(symbols, code: Mapping[int, str]) -> int:
    """The stream's coded size: the sum of its symbols' code lengths."""
    return sum(c * len(code[s]) for s, c in symbol_counts(symbols).items())


def table_bits(code: Mapping[int, str]) -> int:
    """The cost of storing a canonical code: one 8-bit code length per symbol of the alphabet."""
    return TABLE_BITS_PER_SYMBOL * len(code)


def _arrays(code: Mapping[int, str]):
    alphabet = np.array(sorted(code), np.int64)
    lengths = np.array([len(code[s]) for s in alphabet.tolist()], np.int64)
    values = np.array([int(code[s], 2) for s in alphabet.tolist()], np.int64)
    if lengths.size and lengths.max() > 62:
        raise ValueError("code lengths over 62 bits are not supported")
    return alphabet, lengths, values


def huffman_encode(symbols, code: Mapping[int, str]) -> tuple[bytes, int]:
    """The codewords of the symbols concatenated, MSB first, zero-padded to whole bytes:
    (bytes, number of bits)."""
    sym = np.asarray(symbols, np.int64).ravel()
    if sym.size == 0:
        return b"", 0
    alphabet, lengths, values = _arrays(code)
    k = np.minimum(np.searchsorted(alphabet, sym), alphabet.size - 1)
    if alphabet.size == 0 or np.any(alphabet[k] != sym):
        raise ValueError("a symbol is not in the code")
    L, V = lengths[k], values[k]
    start = np.cumsum(L) - L
    nbits = int(L.sum())
    bits = np.zeros(nbits, np.uint8)
    for j in range(int(L.max())):
        sel = L > j
        bits[start[sel] + j] = (V[sel] >> (L[sel] - 1 - j)) & 1
    return np.packbits(bits).tobytes(), nbits


def _codeword_at(window, L, alphabet, lengths, values):
    """(length, symbol) of the codeword that starts each L-bit window (length 0: none). A lookup
    table of 2^L rows when L <= TABLE_MAX_BITS, else the canonical ranges one length at a time."""
    if L <= TABLE_MAX_BITS:
        len_table = np.zeros(1 << L, np.int64)
        sym_table = np.zeros(1 << L, np.int64)
        for s, l, v in zip(alphabet.tolist(), lengths.tolist(), values.tolist()):
            len_table[v << (L - l) : (v + 1) << (L - l)] = l
            sym_table[v << (L - l) : (v + 1) << (L - l)] = s
        return len_table[window], sym_table[window]
    order = np.lexsort((alphabet, lengths))  # canonical order: (length, symbol)
    sorted_syms, sorted_lens, sorted_vals = alphabet[order], lengths[order], values[order]
    len_at = np.zeros(window.size, np.int64)
    sym_at = np.zeros(window.size, np.int64)
    for l in np.unique(sorted_lens).tolist():
        rows = np.flatnonzero(sorted_lens == l)
        first, n = int(sorted_vals[rows[0]]), rows.size  # codes of length l: first .. first + n - 1
        prefix = window >> (L - l)
        hit = (len_at == 0) & (prefix >= first) & (prefix < first + n)
        len_at[hit] = l
        sym_at[hit] = sorted_syms[rows[0] + prefix[hit] - first]
    return len_at, sym_at


def huffman_decode(data: bytes, nbits: int, code: Mapping[int, str], count: int) -> np.ndarray:
    """The `count` symbols of a stream of `nbits` bits written by `huffman_encode` with the
    canonical `code`; raises if the bits are not exactly `count` codewords."""
    count, nbits = int(count), int(nbits)
    if count == 0 or nbits == 0:
        if count or nbits:
            raise ValueError(f"{nbits} bits cannot hold {count} symbols")
        return np.zeros(0, np.int64)
    if dict(code) != canonical_code({s: len(c) for s, c in code.items()}):
        raise ValueError("not a canonical code")
    raw = np.frombuffer(bytes(data), np.uint8)
    if raw.size * 8 < nbits:
        raise ValueError("fewer bits than nbits")
    alphabet, lengths, values = _arrays(code)
    L = int(lengths.max())
    bits = np.concatenate([np.unpackbits(raw)[:nbits], np.zeros(L, np.uint8)]).astype(np.int64)
    window = np.zeros(nbits, np.int64)  # the L bits starting at every position
    for j in range(L):
        window <<= 1
        window |= bits[j : j + nbits]
    len_at, sym_at = _codeword_at(window, L, alphabet, lengths, values)
    # The codewords start at 0, 0 + len, ...: follow the chain by pointer doubling.
    idx = np.arange(nbits, dtype=np.int64)
    jump = np.append(np.where(len_at > 0, np.minimum(idx + len_at, nbits), idx), nbits)
    jump = jump.astype(np.int32 if nbits < 2**31 - 1 else np.int64)
    visited = np.zeros(nbits + 1, bool)
    visited[0] = True
    steps = 1
    while steps < count:
        visited[jump[np.flatnonzero(visited)]] = True
        jump = jump[jump]
        steps *= 2
    starts = np.flatnonzero(visited[:nbits])
    if starts.size != count or np.any(len_at[starts] == 0) or int(len_at[starts].sum()) != nbits:
        raise ValueError("the bits are not exactly `count` codewords of this code")
    return sym_at[starts]


# ---------------------------------------------------------------- a whole tensor


@dataclass(frozen=True, eq=False)
class EncodedTensor:
    """One tensor after all three stages: both Huffman streams with their canonical codes, and the
    metadata needed to read them back (not counted in the sizes)."""

    length: int
    entries: int
    weight_bits: int
    index_bits: int
    weight_code: dict[int, str]
    weight_data: bytes
    weight_nbits: int
    index_code: dict[int, str]
    index_data: bytes
    index_nbits: int

    @property
    def bits(self) -> int:
        """Both streams and both code tables, in bits (the codebook is not included)."""
        return self.weight_nbits + self.index_nbits + table_bits(self.weight_code) + table_bits(self.index_code)


def _check_codes(codes, weight_bits: int) -> None:
    if not 1 <= int(weight_bits) <= 32:
        raise ValueError(f"weight_bits must be in 1..32, got {weight_bits}")
    codes = np.asarray(codes)
    if codes.size and (int(codes.min()) < 1 or int(codes.max()) >= 1 << int(weight_bits)):
        raise ValueError(f"weight codes must be in 1..{(1 << int(weight_bits)) - 1} (0 is reserved)")


def _encode(sc: SparseCode, weight_bits: int) -> EncodedTensor:
    wc, ic = huffman_code(sc.weights), huffman_code(sc.rel)
    wd, wn = huffman_encode(sc.weights, wc)
    idd, inn = huffman_encode(sc.rel, ic)
    return EncodedTensor(sc.length, sc.entries, int(weight_bits), sc.index_bits, wc, wd, wn, ic, idd, inn)


def encode_tensor(mask_flat, codes, *, weight_bits: int, index_bits: int) -> EncodedTensor:
    """The sparse layout of (mask_flat, codes), Huffman-coded stream by stream."""
    _check_codes(codes, weight_bits)
    return _encode(encode_sparse(mask_flat, codes, index_bits), weight_bits)


def decode_tensor(et: EncodedTensor) -> tuple[np.ndarray, np.ndarray]:
    """(mask_flat, codes) back from the Huffman streams."""
    weights = huffman_decode(et.weight_data, et.weight_nbits, et.weight_code, et.entries)
    rel = huffman_decode(et.index_data, et.index_nbits, et.index_code, et.entries)
    return decode_sparse(SparseCode(rel, weights, et.length, et.index_bits))


def tensor_sizes(
    mask_flat,
    codes,
    *,
    weight_bits: int,
    index_bits: int,
    codebook_size: int | None = None,
    dense_count: int | None = None,
) -> dict[str, int]:
    """The tensor's size at every stage, in bits (see the module docstring), with the breakdown of
    the Huffman stage and the entry counts."""
    _check_codes(codes, weight_bits)
    sc = encode_sparse(mask_flat, codes, index_bits)
    et = _encode(sc, weight_bits)
    n = sc.entries
    codebook = FLOAT_BITS * (1 << int(weight_bits) if codebook_size is None else int(codebook_size))
    tables = table_bits(et.weight_code) + table_bits(et.index_code)
    return {
        "dense": FLOAT_BITS * (sc.length if dense_count is None else int(dense_count)),
        "sparse_float32": n * (FLOAT_BITS + sc.index_bits),
        "shared": n * (int(weight_bits) + sc.index_bits) + codebook,
        "huffman": et.weight_nbits + et.index_nbits + tables + codebook,
        "huffman_weights": et.weight_nbits,
        "huffman_index": et.index_nbits,
        "huffman_tables": tables,
        "codebook": codebook,
        "entries": n,
        "fillers": sc.fillers,
        "nonzero": n - sc.fillers,
    }
