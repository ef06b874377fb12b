"""Deep Compression (lth.compression.quantize, lth.compression.compress): k-means by hand, centroid gradients, int8
bounds, and whole compressions of a small run (zeros stay zero, the file decodes to what was
evaluated, sizes add up, bad sources refused with nothing written)."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from conftest import small_config
from lth.compression import compress, quantize
from lth.lottery import levels as lottery
from lth.config.schema import CompressConfig, ConfigError


def test_kmeans_linear_init_by_hand():
    w = np.array([0.0, 1.0, 2.0, 10.0, 9.0, -3.0], np.float32)
    # k = 3 (2 bits): linear init over [-3, 10] -> -3, 3.5, 10 (boundaries 0.25, 6.75), so the
    # clusters are {-3, 0} | {1, 2} | {9, 10}; the means -1.5, 1.5, 9.5 (boundaries 0, 5.5: the tie
    # at 0 goes to the lower centroid) assign the same: converged after one update.
    np.testing.assert_allclose(quantize.linear_init(w, 3), [-3.0, 3.5, 10.0])
    s = quantize.share(w, np.ones(6, bool), bits=2)
    np.testing.assert_allclose(s.codebook, [0.0, -1.5, 1.5, 9.5])
    assert s.codes.tolist() == [1, 2, 2, 3, 3, 1] and s.iterations == 1
    # An empty cluster keeps its centroid: 4 values, 3 centroids, nothing near the middle one.
    c, a, _ = quantize.kmeans_1d(np.array([0.0, 0.1, 9.9, 10.0]), 3)
    np.testing.assert_allclose(c, [0.05, 5.0, 9.95])
    assert a.tolist() == [0, 0, 2, 2]
    # Pruned weights take code 0, the value 0, and do not move the centroids.
    m = np.array([1, 1, 1, 1, 1, 0], bool)
    s = quantize.share(w, m, bits=1)  # one centroid: the mean of the survivors
    np.testing.assert_allclose(s.codebook, [0.0, np.mean(w[:5])], rtol=1e-6)
    assert s.codes.tolist() == [1, 1, 1, 1, 1, 0] and s.weights()[5] == 0.0


def test_centroid_gradient_is_the_sum_of_member_gradients():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(16, 6)), jnp.float32)
    codes = jnp.asarray(rng.integers(0, 5, size=(6, 3)))
    book = jnp.asarray(np.concatenate([[0.0], rng.normal(size=4)]), jnp.float32)
    loss = lambda w: jnp.sum(jnp.tanh(x @ w) ** 2)
    g_w = jax.grad(loss)(book[codes])
    g_book = jax.grad(lambda b: loss(b[codes]))(book)
    expected = np.bincount(np.asarray(codes).ravel(), weights=np.asarray(g_w).ravel(), minlength=5)
    np.testing.assert_allclose(g_book, expected, rtol=1e-5, atol=1e-6)


def test_int8_error_bound_and_zeros():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(20, 7)).astype(np.float32) * np.arange(1, 8)
    m = rng.random((20, 7)) > 0.5
    q = quantize.int8(w, m)
    assert q.q.dtype == np.int8 and q.scale.shape == (7,)
    np.testing.assert_allclose(q.scale, np.abs(np.where(m, w, 0)).max(axis=0) / 127, rtol=1e-6)
    err = np.abs(np.where(m, w, 0) - q.weights())
    assert np.all(err <= q.scale / 2 + 1e-7) and np.all(q.weights()[~m] == 0)
    assert np.abs(q.q).max() == 127


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compress")
    cfg = dataclasses.replace(small_config(tmp), levels=2, replicates=2, controls=["reinit"])
    return tmp, lottery.run(cfg, echo=lambda _: None)


def _cfg(tmp, src, **changes):
    cfg = small_config(tmp)
    cfg = dataclasses.replace(cfg, levels=2, replicates=2, controls=["reinit"])
    c = CompressConfig(**{"source": src.run_dir, "level": 2, "bits": {"head": 5, "kernel": 4}, "index_bits": {"kernel": 3},
                          "finetune_duration": "30it", **changes})
    return dataclasses.replace(cfg, compress=c)


def test_compress_a_level_every_stage(source):
    tmp, src = source
    out = compress.run(_cfg(tmp / "a", src), echo=lambda _: None)
    s = json.load(open(os.path.join(out.run_dir, "summary.json")))
    rep = pd.read_csv(os.path.join(out.run_dir, "report.csv"))
    params = json.load(open(os.path.join(src.run_dir, "summary.json")))["parameters"]["total_parameters"]
    totals = rep[rep.tensor == "total"]
    # Dense float32 is every parameter at 4 bytes; every stage's tensors add up to its total.
    assert np.allclose(totals[totals.stage == "dense"].bytes, 4 * params)
    for (r, stage), g in rep[rep.tensor != "total"].groupby(["replicate", "stage"]):
        assert g.bytes.sum() == pytest.approx(float(totals[(totals.replicate == r) & (totals.stage == stage)].bytes.iloc[0]))
    b = {k: s["stages"][k]["bytes"] for k in compress.STAGES}
    assert b["dense"] > b["sparse"] > b["shared"] >= b["huffman"] > 0
    assert s["bits"] == {"fc1/kernel": 4, "fc2/kernel": 4, "head/kernel": 5}
    # The file decodes to the fine-tuned shared network: its accuracy is the one reported, its
    # pruned weights are exactly zero, each layer holds at most 2^bits - 1 distinct values.
    acc = s["stages"]["accuracy"]
    assert acc["huffman"] == acc["finetuned"] and set(acc) == {"start", "shared", "finetuned", "huffman"}
    for r in range(2):
        w = compress.coding_load_weights(os.path.join(out.run_dir, f"compressed_r{r}.npz"))
        mask = _mask(src.run_dir, r)
        for p, bits in s["bits"].items():
            assert w[p].shape == mask[p].shape and np.all(w[p][~mask[p]] == 0.0)
            assert len(np.unique(w[p][mask[p]])) <= 2 ** bits - 1


def _mask(run_dir, r):
    import orbax.checkpoint as ocp

    from lth.sparsity.masks import flatten

    tree = ocp.StandardCheckpointer().restore(os.path.abspath(os.path.join(run_dir, "level_02", "mask")))
    return {p: np.asarray(v[r], bool) for p, v in flatten(tree).items()}


def test_int8_and_a_control(source):
    tmp, src = source
    out = compress.run(_cfg(tmp / "b", src, method="int8", kind="reinit"), echo=lambda _: None)
    s = out.summary
    assert s["kind"] == "reinit" and set(s["bits"].values()) == {8}
    assert s["stages"]["accuracy"]["huffman"] == s["stages"]["accuracy"]["int8"]
    assert abs(s["stages"]["accuracy"]["int8"] - s["stages"]["accuracy"]["start"]) < 0.02


@pytest.mark.parametrize("change, match", [
    (dict(level=7), "compress.level=7, compress.kind='ticket': not a finished level"),
    (dict(kind="random_prune"), "compress.kind='random_prune': not a finished level"),
    (dict(method="zip"), "compress.method='zip' is not one of kmeans, int8"),
    (dict(bits={"kernel": 0}), "compress.bits\\['kernel'\\]=0"),
    (dict(bits={"nothing": 4}), "no pattern matches the prunable tensor"),
    (dict(source="/nonexistent/run"), "does not exist"),
])
def test_bad_input_refused_with_nothing_written(source, change, match):
    tmp, src = source
    cfg = _cfg(tmp / "bad", src)
    cfg = dataclasses.replace(cfg, compress=dataclasses.replace(cfg.compress, **change))
    with pytest.raises(ConfigError, match=match):
        compress.run(cfg, echo=lambda _: None)
    assert not os.path.exists(tmp / "bad" / "runs")


def test_python_api_runs_and_loads_a_compression(source):
    import lth

    tmp, src = source
    run = lth.run({"compress.source": src.run_dir, "compress.level": 1, "compress.method": "int8",
                   "paths.runs_dir": str(tmp / "api"), "logger.wandb.mode": "disabled"},
                  experiment="compress", echo=lambda _: None)
    assert set(run.results.stage) == set(compress.STAGES) and run.summary["method"] == "int8"
    assert run.config["compress"]["level"] == 1 and run.config["model"]["widths"] == [64, 64]  # the source's


def test_int8_compression_of_a_layer_with_256_outputs(tmp_path):
    """Issue 25: 256 per-channel scales were decoded as a k-means codebook ("decoded tensor differs")."""
    from lth.config.schema import ModelConfig, TrainConfig

    cfg = small_config(tmp_path, levels=1, replicates=1, model=ModelConfig(name="mlp", widths=[256]),
                       train=TrainConfig(duration="30it", batch_size=100, eval_every="30it"))
    src = lottery.run(cfg, echo=lambda _: None)
    out = compress.run(dataclasses.replace(cfg, compress=CompressConfig(source=src.run_dir, level=1, method="int8")),
                       echo=lambda _: None)
    assert out.summary["tensors"]["fc1/kernel"]["size"] == 40 * 256
    assert out.summary["stages"]["accuracy"]["huffman"] == out.summary["stages"]["accuracy"]["int8"]


def test_caffe_index_order_run_counts_the_fillers_of_its_walk(source):
    tmp, src = source
    reps = {order: compress.run(_cfg(tmp / order, src, index_order=order, finetune_duration="0it"), echo=lambda _: None)
            for order in ("flax", "caffe")}
    from lth.compression import coding, file_format as compress_file

    for order, out in reps.items():  # each tensor's fillers: its mask walked in that order, 3-bit indices
        rep = out.report[out.report.stage == "huffman"]
        for r in range(2):
            for p, m in ((p, m) for p, m in _mask(src.run_dir, r).items() if p in out.summary["tensors"]):
                want = coding.encode_sparse(compress_file.storage_flat(m, order), np.ones(m.sum(), int), 3).fillers
                assert rep[(rep.replicate == r) & (rep.tensor == p)].fillers.iloc[0] == want
    assert reps["caffe"].summary["stages"]["accuracy"]["huffman"] == reps["flax"].summary["stages"]["accuracy"]["huffman"]
    assert reps["caffe"].run_dir != reps["flax"].run_dir


# -- BatchNorm statistics ------------------------------------------------------------------------
def _bn_compression(tmp_path, steps=20):
    """A Dense-BatchNorm-Dense network (BatchNorm momentum 0.5) on the tiny problem, its running
    means left stale at 50, compressed by lth.compression.compress's stages with `steps` of fine-tuning."""
    from flax import linen as nn

    from conftest import make_tiny_dataset
    from lth.sparsity import masks as M
    from lth.config.schema import OptimizerConfig
    from lth.models.batch_norm import batch_norm
    from lth.train.optim import make_optimizer, make_schedule
    from lth.runs.run_dir import RunDir
    from lth.train.trainer import Trainer, replicate_keys

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            x = nn.relu(batch_norm(train, nn.initializers.ones, "bn1", 0.5)(nn.Dense(16, name="fc1")(x)))
            return nn.Dense(4, name="head")(x)

    opt = OptimizerConfig(name="adam", lr=2e-3)
    ds = make_tiny_dataset()
    tr = Trainer(Net(), ds, make_optimizer(opt), make_schedule(opt, total_steps=60, steps_per_epoch=6), batch_size=100,
                 eval_batch_size=100)
    v = tr.init_variables(replicate_keys(0, 1)["init"])
    masks = jax.tree.map(lambda p: np.random.default_rng(0).random(p.shape) < 0.6, v["params"])
    states0 = tr.create_states(v, masks)
    stale = jax.tree.map(lambda s: np.asarray(s), v["batch_stats"])
    stale["bn1"]["mean"] = stale["bn1"]["mean"] + 50.0
    cfg = dataclasses.replace(small_config(tmp_path, replicates=1, optimizer=opt), compress=CompressConfig(
        bits={"kernel": 3}, index_bits={"kernel": 3}, finetune_duration=f"{steps}it", lr=0.01))
    rd = RunDir(str(tmp_path / "c"), "h")
    rd.create()
    members = {"mask": masks, "params": jax.tree.map(np.asarray, v["params"]), "batch_stats": stale}
    paths = ["fc1/kernel", "head/kernel"]
    out = compress._compress(cfg, rd, tr, states0, members, paths, {p: 3 for p in paths}, {p: 3 for p in paths}, steps,
                             lambda _: None)
    return tr, states0, members, out, rd


def test_batch_norm_statistics_stored_counted_and_fine_tuned(tmp_path):
    """Issue 25: the running statistics were neither stored nor counted, and the fine-tuned network
    was evaluated with the statistics from before fine-tuning."""
    from lth.sparsity import masks as M

    tr, states0, members, out, rd = _bn_compression(tmp_path)
    file = rd.file("compressed_r0.npz")
    stats = compress.load_batch_stats(file)
    # stored: the fine-tuned statistics (the stale means of 50 decay by 0.5 per step)
    assert sorted(stats) == ["bn1/mean", "bn1/var"] and stats["bn1/mean"].shape == (16,)
    assert np.all(np.abs(stats["bn1/mean"]) < 10) and not np.allclose(stats["bn1/var"], 1.0)
    # counted: 2 floats per channel, as float32, in every stage and in the total
    rep = pd.DataFrame(out["rows"])
    bn = rep[rep.tensor == "BatchNorm statistics (float32)"]
    assert sorted(bn.stage) == sorted(compress.STAGES) and np.all(bn.bytes == 2 * 16 * 4)
    n_params = sum(int(np.size(x)) for x in jax.tree.leaves(members["params"]))
    assert float(rep[(rep.tensor == "total") & (rep.stage == "dense")].bytes.iloc[0]) == 4 * (n_params + 32)
    # evaluated with the fine-tuned statistics: the decoded file's accuracy is that of its weights
    # with its statistics, and differs from the stale statistics' (a check that the test can tell)
    weights = M.unflatten(compress.coding_load_weights(file))
    one = lambda t: jax.tree.map(lambda x: jnp.asarray(x)[None], t)
    acc = lambda bs: float(tr.evaluate(states0.replace(params=one(weights), batch_stats=bs), "test")["accuracy"][0])
    tuned, old = acc(one(M.unflatten(stats))), acc(members["batch_stats"])  # members are stacked (R = 1)
    assert tuned != old
    assert out["stages"]["accuracy"]["finetuned"] == pytest.approx(tuned, abs=1e-7)
    assert out["stages"]["accuracy"]["huffman"] == pytest.approx(tuned, abs=1e-7)
