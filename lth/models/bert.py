"""BERT (Devlin et al. 2019): the encoder of tickets in pre-trained transformers (Chen et al. 2020).

`model=bert`: token + position + segment embeddings with LayerNorm; `model.layers` post-LayerNorm
encoder blocks (multi-head self-attention with a padding mask, then a GELU feed-forward of width
`model.intermediate`, each followed by dropout, a residual connection and LayerNorm); the pooler
(tanh of a dense layer on the [CLS] position); a classification head on the pooled vector; and a
masked-language-modelling head (dense + GELU + LayerNorm, then the decoder tied to the word
embeddings plus a bias). `model.pooling=mean` classifies the mean of the non-padding hidden
states instead of the pooled [CLS] (the pooler then goes unused): what sentence-embedding models
such as all-MiniLM-L6-v2 were trained to produce. The same computation as Hugging Face's `BertModel` /
`BertForSequenceClassification` / `BertForMaskedLM` (exact-erf GELU, LayerNorm eps 1e-12), so
their checkpoints load (`lth.models.hf_bert`).

Inputs are token ids (B, L) (floats holding integers are cast: the trainer's data path is shared
with images); [PAD] (id `pad_id`, 0 in BERT vocabularies) is masked out of attention; every token
has segment 0 (single-text tasks). `model.apply(v, tokens, train=...)` returns the class logits,
`model.apply(v, tokens, train=..., method="mlm_logits")` the token logits (B, L, vocab). Both heads'
parameters exist whatever the task, so a mask found with one objective fits the other (MLM
tickets transferred to classification).

Parameter paths (lth's conventions: `head` is the classifier, weights `kernel`, (in, out)):

    embeddings/{word,position,segment}/embedding, embeddings/norm/{scale,bias}
    encoder/layer{i}/attention/{query,key,value,output}/{kernel,bias}, encoder/layer{i}/attention/norm/...
    encoder/layer{i}/{intermediate,output}/{kernel,bias}, encoder/layer{i}/norm/...
    pooler/{kernel,bias}, head/{kernel,bias}
    mlm/transform/{kernel,bias}, mlm/norm/{scale,bias}, mlm/bias

`PRUNABLE` selects the matrices Chen et al. prune: query, key, value, attention output and both
feed-forward matrices of every layer (`conf/model/bert.yaml` sets it as `pruning.prunable`).

Dropout (`model.dropout`, BERT's 0.1 on hidden states and attention probabilities) is active when
`train=True` and a `dropout` PRNG stream is given (the trainer gives one every step, see
`rng_streams`); without one the model is deterministic.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import linen as nn

from lth.config.schema import ModelConfig
from lth.models.initializers import Initializer, bias_init, kernel_initializer

LN_EPS = 1e-12
PRUNABLE = (r"encoder/layer\d+/attention/(query|key|value|output)/kernel$", r"encoder/layer\d+/(intermediate|output)/kernel$")


def gelu(x):
    """BERT's GELU: x·Φ(x) with the exact normal CDF (not the tanh approximation)."""
    return nn.gelu(x, approximate=False)


def _dense(features, init, dtype, name):
    return nn.Dense(features, kernel_init=init, bias_init=bias_init, dtype=dtype, name=name)


def _norm(name):
    return nn.LayerNorm(epsilon=LN_EPS, dtype=jnp.float32, name=name)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a padding mask, dropout on the probabilities, the output
    projection, dropout, residual and LayerNorm (BERT's `BertAttention`)."""

    hidden: int
    heads: int
    dropout: float
    kernel_init: Initializer
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h, keep, deterministic: bool):
        B, L, H = h.shape
        d = H // self.heads
        split = lambda t: t.reshape(B, L, self.heads, d)
        q = split(_dense(H, self.kernel_init, self.dtype, "query")(h))
        k = split(_dense(H, self.kernel_init, self.dtype, "key")(h))
        v = split(_dense(H, self.kernel_init, self.dtype, "value")(h))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / jnp.sqrt(jnp.float32(d))
        scores = jnp.where(keep[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1)
        probs = nn.Dropout(self.dropout)(probs, deterministic=deterministic)
        ctx = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(self.dtype), v).reshape(B, L, H)
        out = _dense(H, self.kernel_init, self.dtype, "output")(ctx)
        out = nn.Dropout(self.dropout)(out, deterministic=deterministic)
        return _norm("norm")(h.astype(jnp.float32) + out.astype(jnp.float32))


class Layer(nn.Module):
    """One encoder block: self-attention, then GELU feed-forward + dropout + residual + LayerNorm."""

    hidden: int
    heads: int
    intermediate: int
    dropout: float
    kernel_init: Initializer
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h, keep, deterministic: bool):
        h = SelfAttention(self.hidden, self.heads, self.dropout, self.kernel_init, self.dtype, name="attention")(h, keep, deterministic)
        ff = gelu(_dense(self.intermediate, self.kernel_init, self.dtype, "intermediate")(h))
        ff = _dense(self.hidden, self.kernel_init, self.dtype, "output")(ff)
        ff = nn.Dropout(self.dropout)(ff, deterministic=deterministic)
        return _norm("norm")(h + ff.astype(jnp.float32))


class Embeddings(nn.Module):
    """Word + position + segment embeddings, LayerNorm, dropout; `attend` is the tied decoder."""

    vocab_size: int
    hidden: int
    max_len: int
    dropout: float
    embed_init: Initializer
    dtype: Any = jnp.float32

    def setup(self):
        self.word = nn.Embed(self.vocab_size, self.hidden, embedding_init=self.embed_init)
        self.position = nn.Embed(self.max_len, self.hidden, embedding_init=self.embed_init)
        self.segment = nn.Embed(2, self.hidden, embedding_init=self.embed_init)
        self.norm = _norm(None)
        self.drop = nn.Dropout(self.dropout)

    def __call__(self, tokens, deterministic: bool):
        L = tokens.shape[1]
        e = self.word(tokens) + self.position(jnp.arange(L)[None]) + self.segment(jnp.zeros_like(tokens))
        return self.drop(self.norm(e), deterministic=deterministic)

    def attend(self, h):
        """h @ word_embeddingsᵀ: the MLM decoder tied to the input embeddings."""
        return jnp.dot(h.astype(self.dtype), self.word.embedding.T.astype(self.dtype))


class Encoder(nn.Module):
    layers: int
    hidden: int
    heads: int
    intermediate: int
    dropout: float
    kernel_init: Initializer
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h, keep, deterministic: bool):
        for i in range(self.layers):
            h = Layer(self.hidden, self.heads, self.intermediate, self.dropout, self.kernel_init, self.dtype,
                      name=f"layer{i}")(h, keep, deterministic)
        return h


class MLMHead(nn.Module):
    """Transform (dense + GELU + LayerNorm) of every position; the decoder is the caller's (tied)."""

    hidden: int
    vocab_size: int
    kernel_init: Initializer
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h, decode):
        t = _norm("norm")(gelu(_dense(self.hidden, self.kernel_init, self.dtype, "transform")(h)).astype(jnp.float32))
        return decode(t).astype(jnp.float32) + self.param("bias", bias_init, (self.vocab_size,))


class Bert(nn.Module):
    """BERT encoder with a pooler, a `num_classes` classifier (`head`) and an MLM head (`mlm`)."""

    num_classes: int
    layers: int = 12
    hidden: int = 768
    heads: int = 12
    intermediate: int = 3072
    vocab_size: int = 30522
    max_len: int = 512
    dropout: float = 0.1
    pooling: str = "cls"
    pad_id: int = 0
    kernel_init: Initializer = nn.initializers.normal(stddev=0.02)
    dtype: Any = jnp.float32

    # The trainer passes a fresh key of these streams to every training step (`lth.train`).
    rng_streams: ClassVar[tuple[str, ...]] = ("dropout",)
    # LayerNorm and softmax break the non-negativity `lth.sparsity.flops`' cascade probe relies on: only the
    # dense layers' (un)structured MACs are counted.
    flop_cascade: ClassVar[bool] = False

    def setup(self):
        self.embeddings = Embeddings(self.vocab_size, self.hidden, self.max_len, self.dropout, self.kernel_init, self.dtype)
        self.encoder = Encoder(self.layers, self.hidden, self.heads, self.intermediate, self.dropout, self.kernel_init, self.dtype)
        self.pooler = _dense(self.hidden, self.kernel_init, self.dtype, None)
        self.head = _dense(self.num_classes, self.kernel_init, self.dtype, None)
        self.mlm = MLMHead(self.hidden, self.vocab_size, self.kernel_init, self.dtype)
        self.drop = nn.Dropout(self.dropout)

    def encode(self, tokens, train: bool = False):
        """Hidden states (B, L, hidden) in float32, and the non-padding indicator (B, L)."""
        tokens = jnp.asarray(tokens)
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            tokens = jnp.round(tokens)
        tokens = tokens.astype(jnp.int32)
        deterministic = not (train and self.dropout > 0 and self.has_rng("dropout"))
        keep = tokens != self.pad_id
        h = self.embeddings(tokens, deterministic)
        return self.encoder(h, keep, deterministic), keep

    def __call__(self, tokens, train: bool = False):
        h, keep = self.encode(tokens, train)
        deterministic = not (train and self.dropout > 0 and self.has_rng("dropout"))
        if self.is_initializing():  # create the MLM head's and the pooler's parameters too (one tree for all)
            self.mlm(h[:, :1], self.embeddings.attend)
            self.pooler(h[:, 0])
        if self.pooling == "mean":  # the mean of the non-padding positions (sentence-transformers)
            w = keep.astype(jnp.float32)[..., None]
            pooled = (h * w).sum(1) / jnp.maximum(w.sum(1), 1.0)
        else:  # BERT's pooler: tanh of a dense layer on [CLS]
            pooled = jnp.tanh(self.pooler(h[:, 0]).astype(jnp.float32))
        return self.head(self.drop(pooled, deterministic=deterministic)).astype(jnp.float32)

    def mlm_logits(self, tokens, train: bool = False):
        """Token logits (B, L, vocab_size) of the masked-language-modelling head."""
        h, _ = self.encode(tokens, train)
        return self.mlm(h, self.embeddings.attend)


def bert(cfg: ModelConfig, num_classes: int) -> Bert:
    """`Bert` with the sizes of `cfg` (`model.layers`, `hidden`, `heads`, `intermediate`,
    `vocab_size`, `max_len`, `dropout`) and its kernel/embedding initialiser `model.init`."""
    return Bert(num_classes=num_classes, layers=cfg.layers, hidden=cfg.hidden, heads=cfg.heads,
                intermediate=cfg.intermediate, vocab_size=cfg.vocab_size, max_len=cfg.max_len, dropout=cfg.dropout,
                pooling=cfg.pooling,
                kernel_init=kernel_initializer(cfg.init))


def with_dtype(model: nn.Module, dtype: str) -> nn.Module:
    """The model computing in `dtype` (`train.dtype`); parameters stay float32."""
    return model.clone(dtype=jnp.dtype(dtype))


__all__ = ["Bert", "PRUNABLE", "bert", "gelu", "with_dtype"]
