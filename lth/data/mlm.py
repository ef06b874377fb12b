"""Masked-language modelling (BERT's pre-training task) over a text dataset: `dataset.task=mlm`.

Chen et al. (2020) find tickets on the pre-training task as well as on downstream tasks and
transfer them. Each training step masks its batch afresh (dynamic masking, as Hugging Face's
`DataCollatorForLanguageModeling` that their code used): every token that is not special ([PAD],
[CLS], [SEP], [UNK], [MASK]) is selected with probability `rate` (15%); a selected token is
replaced by [MASK] with probability 0.8, by a token drawn uniformly from the vocabulary with
probability 0.1, and kept with probability 0.1; the model predicts the original token at every
selected position (labels -1 elsewhere). Evaluation masks each evaluation batch with a fixed key,
so every level is scored on the same masked positions.

The objective travels with the dataset (`Dataset.objective`); the trainer (`lth.train`) asks it
to `corrupt` each batch, applies the model's `method` (BERT's `mlm_logits`), and averages the
cross-entropy over the selected tokens (`token_losses`). Accuracy is the fraction of selected
tokens predicted exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

IGNORE = -1  # label of the positions that are not predicted


@dataclasses.dataclass(frozen=True)
class MaskedLM:
    """The MLM objective of one vocabulary (hashable: it is static in compiled steps)."""

    vocab_size: int
    mask_id: int
    special_ids: tuple[int, ...]
    rate: float = 0.15
    mask_prob: float = 0.8
    random_prob: float = 0.1
    method: str = "mlm_logits"  # the model method that returns token logits (B, L, vocab)

    @classmethod
    def for_vocab(cls, info: dict[str, Any]) -> "MaskedLM":
        """The objective of a text dataset's vocabulary (`Dataset.info` of `lth.data.text`)."""
        return cls(vocab_size=int(info["vocab_size"]), mask_id=int(info["mask_id"]),
                   special_ids=tuple(int(i) for i in info["special_ids"]))

    def corrupt(self, key: jax.Array, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(model inputs, labels) for token ids (..., L): selected positions masked / randomised /
        kept as the module says, labels the original token there and `IGNORE` elsewhere."""
        tokens = tokens.astype(jnp.int32)
        k_select, k_how, k_random = jax.random.split(key, 3)
        candidate = ~jnp.isin(tokens, jnp.asarray(self.special_ids, jnp.int32))
        selected = candidate & (jax.random.uniform(k_select, tokens.shape) < self.rate)
        u = jax.random.uniform(k_how, tokens.shape)
        to_mask = selected & (u < self.mask_prob)
        to_random = selected & (u >= self.mask_prob) & (u < self.mask_prob + self.random_prob)
        random_tokens = jax.random.randint(k_random, tokens.shape, 0, self.vocab_size, jnp.int32)
        inputs = jnp.where(to_mask, self.mask_id, jnp.where(to_random, random_tokens, tokens))
        return inputs, jnp.where(selected, tokens, IGNORE)

    @staticmethod
    def token_losses(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Per position: cross-entropy, correctness and weight (1 where a label is set), each (..., L)."""
        weight = (labels != IGNORE).astype(jnp.float32)
        safe = jnp.where(labels == IGNORE, 0, labels)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe)
        correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
        return ce * weight, correct * weight, weight

    def loss(self, logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(mean cross-entropy, accuracy) over the selected tokens of a batch."""
        ce, correct, weight = self.token_losses(logits, labels)
        n = jnp.maximum(weight.sum(), 1.0)
        return ce.sum() / n, correct.sum() / n


__all__ = ["IGNORE", "MaskedLM"]
