"""Hugging Face BERT checkpoints (`.safetensors`) as `lth.models.bert` parameters.

Pre-trained BERTs are published in Hugging Face's layout: PyTorch tensor names such as
`encoder.layer.3.attention.self.query.weight`, linear weights stored (out, in). `convert` maps a
`BertModel` checkpoint (MiniLM, `bert-base-uncased`, ...; also `BertForMaskedLM`,
`BertForPreTraining` and `BertForSequenceClassification` with their `bert.` prefix and heads) to
lth's paths, transposing every linear weight to Flax's (in, out). The MLM decoder weight is tied
to the word embeddings in BERT, so it is not a parameter here: it is checked equal to them and
dropped (an untied decoder is refused). Buffers (`position_ids`) and the next-sentence head are
left out and reported. `pretrained.load` uses this for any `.safetensors` file whose names are
Hugging Face BERT names, so `init.checkpoint=` takes such a file as it is.

`check_config` compares the `config.json` beside the file (when there is one) with `model.*`:
the number of attention heads cannot be seen in the tensor shapes, and a mismatch would load
silently and compute something else. A checkpoint with more layers than `model.layers` loads
its first layers (the others are reported as ignored); fewer is refused.

`read_safetensors` reads the format with NumPy alone (8-byte header length, JSON header, raw
little-endian data), bfloat16 included, which `safetensors.numpy` cannot return.
"""

from __future__ import annotations

import json
import os
import re
import struct
from typing import Any

import numpy as np

from lth.config.schema import ConfigError

FORMAT = "Hugging Face BERT"
_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
           "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}

_LAYER = r"encoder\.layer\.(\d+)\."
# (HF name pattern, lth path template, transpose). `{0}` is the layer index.
_RULES: list[tuple[str, str, bool]] = [
    (r"embeddings\.word_embeddings\.weight", "embeddings/word/embedding", False),
    (r"embeddings\.position_embeddings\.weight", "embeddings/position/embedding", False),
    (r"embeddings\.token_type_embeddings\.weight", "embeddings/segment/embedding", False),
    (r"embeddings\.LayerNorm\.(weight|gamma)", "embeddings/norm/scale", False),
    (r"embeddings\.LayerNorm\.(bias|beta)", "embeddings/norm/bias", False),
    (_LAYER + r"attention\.self\.(query|key|value)\.weight", "encoder/layer{0}/attention/{1}/kernel", True),
    (_LAYER + r"attention\.self\.(query|key|value)\.bias", "encoder/layer{0}/attention/{1}/bias", False),
    (_LAYER + r"attention\.output\.dense\.weight", "encoder/layer{0}/attention/output/kernel", True),
    (_LAYER + r"attention\.output\.dense\.bias", "encoder/layer{0}/attention/output/bias", False),
    (_LAYER + r"attention\.output\.LayerNorm\.(weight|gamma)", "encoder/layer{0}/attention/norm/scale", False),
    (_LAYER + r"attention\.output\.LayerNorm\.(bias|beta)", "encoder/layer{0}/attention/norm/bias", False),
    (_LAYER + r"intermediate\.dense\.weight", "encoder/layer{0}/intermediate/kernel", True),
    (_LAYER + r"intermediate\.dense\.bias", "encoder/layer{0}/intermediate/bias", False),
    (_LAYER + r"output\.dense\.weight", "encoder/layer{0}/output/kernel", True),
    (_LAYER + r"output\.dense\.bias", "encoder/layer{0}/output/bias", False),
    (_LAYER + r"output\.LayerNorm\.(weight|gamma)", "encoder/layer{0}/norm/scale", False),
    (_LAYER + r"output\.LayerNorm\.(bias|beta)", "encoder/layer{0}/norm/bias", False),
    (r"pooler\.dense\.weight", "pooler/kernel", True),
    (r"pooler\.dense\.bias", "pooler/bias", False),
    (r"classifier\.weight", "head/kernel", True),
    (r"classifier\.bias", "head/bias", False),
    (r"cls\.predictions\.transform\.dense\.weight", "mlm/transform/kernel", True),
    (r"cls\.predictions\.transform\.dense\.bias", "mlm/transform/bias", False),
    (r"cls\.predictions\.transform\.LayerNorm\.(weight|gamma)", "mlm/norm/scale", False),
    (r"cls\.predictions\.transform\.LayerNorm\.(bias|beta)", "mlm/norm/bias", False),
    (r"cls\.predictions\.bias", "mlm/bias", False),
]
_COMPILED = [(re.compile(r"^(?:bert\.)?" + pattern + "$"), path, t) for pattern, path, t in _RULES]
_DECODER = re.compile(r"^cls\.predictions\.decoder\.(weight|bias)$")


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Every tensor of a `.safetensors` file as a NumPy array (bfloat16 widened to float32)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw, shape, dtype = data[start:end], tuple(info["shape"]), info["dtype"]
        if dtype == "BF16":
            bits = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        elif dtype in _DTYPES:
            arr = np.frombuffer(raw, np.dtype(_DTYPES[dtype]).newbyteorder("<"))
        else:
            raise ConfigError(f"{path}: tensor {name!r} has dtype {dtype}, which lth cannot read")
        out[name] = arr.reshape(shape).copy()
    return out


def is_hf_bert(names) -> bool:
    """Whether tensor `names` are those of a Hugging Face BERT checkpoint."""
    return any(re.match(r"^(bert\.)?(embeddings\.word_embeddings\.weight$|encoder\.layer\.\d+\.)", n) for n in names)


def convert(arrays: dict[str, np.ndarray], *, setting: str = "init.checkpoint") -> tuple[dict[str, np.ndarray], list[str]]:
    """({lth path: array}, names of the tensors left out) of a Hugging Face BERT state dict."""
    out, left_out = {}, []
    decoder = {}
    for name, value in arrays.items():
        m = _DECODER.match(name)
        if m:
            decoder[m.group(1)] = value
            continue
        for pattern, template, transpose in _COMPILED:
            hit = pattern.match(name)
            if hit:
                path = template.format(*hit.groups())
                if path in out:
                    raise ConfigError(f"{setting}: two tensors of the checkpoint map to {path} (one is {name!r})")
                out[path] = np.ascontiguousarray(np.asarray(value).T if transpose else np.asarray(value))
                break
        else:
            left_out.append(name)
    if "weight" in decoder:
        word = out.get("embeddings/word/embedding")
        if word is None or word.shape != decoder["weight"].shape or not np.array_equal(word, decoder["weight"]):
            raise ConfigError(f"{setting}: the checkpoint's MLM decoder (cls.predictions.decoder.weight) is not tied to "
                              "the word embeddings; lth's BERT ties them (as BERT does)")
    if "bias" in decoder and "mlm/bias" not in out:
        out["mlm/bias"] = np.asarray(decoder["bias"])
    return out, left_out


def check_config(path: str, model: Any, *, setting: str = "init.checkpoint") -> None:
    """Refuse a checkpoint whose `config.json` (beside `path`) disagrees with `model` (a
    `ModelConfig`) where tensor shapes cannot tell: heads, and too few layers, or where they
    would tell less clearly. Does nothing when there is no config.json."""
    from lth.config import defaults

    model = defaults.fill(model, "model")  # sizes left null are bert's own (conf/model/bert.yaml)
    cfg_path = os.path.join(os.path.dirname(path), "config.json")
    if not os.path.isfile(cfg_path):
        return
    with open(cfg_path) as f:
        hf = json.load(f)
    if model.name != "bert":
        raise ConfigError(f"{setting}: a {FORMAT} checkpoint ({hf.get('num_hidden_layers')} layers, hidden "
                          f"{hf.get('hidden_size')}) loads into model=bert only, not model={model.name}")
    pairs = [("hidden", "hidden_size"), ("heads", "num_attention_heads"), ("intermediate", "intermediate_size"),
             ("vocab_size", "vocab_size"), ("max_len", "max_position_embeddings")]
    wrong = [f"model.{ours}={getattr(model, ours)} (the checkpoint has {theirs} = {hf[theirs]})"
             for ours, theirs in pairs if theirs in hf and getattr(model, ours) != hf[theirs]]
    if "num_hidden_layers" in hf and model.layers > hf["num_hidden_layers"]:
        wrong.append(f"model.layers={model.layers} (the checkpoint has only {hf['num_hidden_layers']} layers)")
    if abs(float(hf.get("layer_norm_eps", 1e-12)) - 1e-12) > 1e-15:
        wrong.append(f"layer_norm_eps={hf['layer_norm_eps']} (lth's BERT uses 1e-12)")
    if hf.get("hidden_act", "gelu") != "gelu":
        wrong.append(f"hidden_act={hf['hidden_act']!r} (lth's BERT uses the exact GELU, 'gelu')")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        wrong.append(f"position_embedding_type={hf['position_embedding_type']!r} (lth's BERT has absolute positions)")
    if wrong:
        raise ConfigError(f"{setting}: the checkpoint does not fit the model (config.json beside it): " + "; ".join(wrong))


__all__ = ["FORMAT", "check_config", "convert", "is_hf_bert", "read_safetensors"]
