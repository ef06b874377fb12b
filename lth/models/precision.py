"""Mixed precision of the built-in image models (`train.dtype`, issue 32).

Every image model has a `dtype` field, the compute dtype (float32 by default; `lth.lottery.plan`
clones the model with `train.dtype`). With bfloat16:

- the input is cast to bfloat16 at the start (`compute_input`) and every `nn.Dense` / `nn.Conv`
  computes in bfloat16 (`layer_dtype`), while `param_dtype` stays float32: parameters, masks and
  the optimizer state are float32, the masked update happens on float32 weights (so pruned
  weights stay exactly 0), and gradients reach the parameters through the cast as float32;
- BatchNorm computes its batch statistics in float32 and keeps float32 `batch_stats` (Flax's
  `nn.BatchNorm` and the CPU `TrainBatchNorm` both promote the input to float32 for the
  statistics) and returns the compute dtype;
- the logits are cast back to float32 (`float32_logits`), so softmax, cross-entropy and accuracy
  are computed in float32.

At float32 the layers get `dtype=None` and no cast is added: the programs are exactly those of a
model without the field (the same jaxprs), so results and run directories do not change.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def is_float32(dtype: Any) -> bool:
    """Whether `dtype` (None counts as float32) is float32, the default compute dtype."""
    return dtype is None or jnp.dtype(dtype) == jnp.float32


def layer_dtype(dtype: Any) -> Any:
    """The `dtype=` a Flax layer gets: None at float32 (Flax's default, today's programs), else `dtype`."""
    return None if is_float32(dtype) else dtype


def compute_input(x: jax.Array, dtype: Any) -> jax.Array:
    """`x` cast to the compute dtype (unchanged at float32)."""
    return x if is_float32(dtype) else x.astype(dtype)


def float32_logits(logits: jax.Array) -> jax.Array:
    """The model's output as float32 (unchanged when it is float32 already)."""
    return logits if logits.dtype == jnp.float32 else logits.astype(jnp.float32)
