"""The compressed file (lth.compression.file_format): the method it records (int8 at exactly 256 output
channels), files from before it, Caffe's index order (exact filler counts), and the compress run's
hash (committed runs keep theirs)."""

import json
import os

import numpy as np
import pytest
import yaml

from lth.compression import coding, compress, file_format as compress_file, quantize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(file, w, mask, method, order="flax", index_bits=4):
    """`w` (Flax layout) compressed by `method` into `file` as lth.compression.compress does; its expected weights."""
    q = quantize.int8(w, mask) if method == "int8" else quantize.share(w, mask, 3)
    bits = 8 if method == "int8" else 3
    enc = {"fc/kernel": compress._encode(mask, q, bits, index_bits, order)}
    compress_file.save(file, enc, {"fc/bias": np.zeros(w.shape[-1], np.float32)}, {"fc/kernel": compress._book(q)},
                       {"fc/kernel": w.shape}, method=method, index_order=order)
    return q.weights()


@pytest.mark.parametrize("outputs", [255, 256, 257])
@pytest.mark.parametrize("order", ["flax", "caffe"])
def test_int8_round_trip_at_256_output_channels(tmp_path, outputs, order):
    """Issue 25: the decoder told int8 from k-means by the codebook's size, so 256 per-channel
    scales took the k-means branch. The file now says its method."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(12, outputs)).astype(np.float32)
    mask = rng.random(w.shape) < 0.3
    expect = _write(str(tmp_path / "c.npz"), w, mask, "int8", order)
    got = compress_file.load_weights(str(tmp_path / "c.npz"))
    assert np.array_equal(got["fc/kernel"], expect) and np.all(got["fc/kernel"][~mask] == 0)


@pytest.mark.parametrize("method, outputs", [("int8", 7), ("kmeans", 7), ("kmeans", 256)])
def test_files_from_before_the_method_was_recorded_still_decode(tmp_path, method, outputs):
    rng = np.random.default_rng(1)
    w = rng.normal(size=(9, outputs)).astype(np.float32)
    mask = rng.random(w.shape) < 0.5
    expect = _write(str(tmp_path / "new.npz"), w, mask, method)
    with np.load(tmp_path / "new.npz") as z:  # the old format: no _method, no _index_order
        np.savez(tmp_path / "old.npz", **{k: z[k] for k in z.files if not k.startswith("_")})
    assert np.array_equal(compress_file.load_weights(str(tmp_path / "old.npz"))["fc/kernel"], expect)


def test_caffe_order_filler_count_on_a_known_mask():
    """A (in=4, out=3) kernel whose output unit 0 alone survives, 1-bit relative indices (gaps up
    to 2): Flax's (in, out) walk meets it at 0, 3, 6, 9 (gaps 1, 3, 3, 3: one filler each, 3),
    Caffe's (out, in) walk at 0, 1, 2, 3 (no filler)."""
    mask = np.zeros((4, 3), bool)
    mask[:, 0] = True
    codes = np.ones(4, np.int64)
    flax = coding.encode_sparse(compress_file.storage_flat(mask, "flax"), codes, 1)
    caffe = coding.encode_sparse(compress_file.storage_flat(mask, "caffe"), codes, 1)
    assert (flax.fillers, flax.entries) == (3, 7) and (caffe.fillers, caffe.entries) == (0, 4)
    assert coding.tensor_sizes(compress_file.storage_flat(mask, "caffe"), codes, weight_bits=2, index_bits=1)["fillers"] == 0


def test_caffe_order_is_pytorch_layout_and_inverts():
    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # a Flax conv kernel (kh, kw, in, out)
    assert np.array_equal(compress_file.storage_flat(x, "caffe"), x.transpose(3, 2, 0, 1).reshape(-1))  # (out, in, kh, kw)
    d = np.arange(12).reshape(4, 3)
    assert np.array_equal(compress_file.storage_flat(d, "caffe"), d.T.reshape(-1))
    for t in (x, d, np.arange(5)):
        for order in compress_file.INDEX_ORDERS:
            assert np.array_equal(compress_file.from_storage(compress_file.storage_flat(t, order), t.shape, order), t)


@pytest.mark.parametrize("name", ["han_lenet300_compress_kmeans", "han_lenet300_compress_int8", "han_lenet5_compress_kmeans"])
def test_committed_compress_runs_keep_their_hash(name):
    """compress.index_order is out of the hash at its default (flax), so existing runs keep their directories."""
    from lth.config.schema import from_dict
    from lth.lottery.levels import make_plan
    from lth.runs.run_dir import content_hash

    d = os.path.join(ROOT, "results", name)
    summary = json.load(open(os.path.join(d, "summary.json")))
    cfg = from_dict(yaml.safe_load(open(os.path.join(d, "config.yaml"))))
    assert cfg.compress.index_order == "flax"
    plan = make_plan(cfg, 60000 - cfg.dataset.val_size)  # MNIST's training images less the held-out ones
    assert content_hash(cfg, plan.as_dict(), compress.hash_extra(cfg, summary["source_hash"])) == summary["hash"]
    import dataclasses

    caffe = dataclasses.replace(cfg, compress=dataclasses.replace(cfg.compress, index_order="caffe"))
    assert content_hash(caffe, plan.as_dict(), compress.hash_extra(caffe, summary["source_hash"])) != summary["hash"]
