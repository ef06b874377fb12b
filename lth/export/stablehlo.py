"""An exported network as a serialized JAX program (`jax.export`: StableHLO with its calling
convention), which any JAX of a compatible version reloads and runs without lth's code.

The weights are constants of the program (closed over by the traced function), and the batch
dimension is symbolic, so one file serves every batch size:

    import jax
    exp = jax.export.deserialize(open("model.jax_export", "rb").read())
    logits = exp.call(x)          # x: (batch, *input_shape) float32

`platforms` defaults to the CPU plus, where present, the accelerator the export runs on.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lth.export.graph import Op, forward

FILE = "model.jax_export"


def serialize(ops: list[Op], input_shape: tuple[int, ...], platforms: tuple[str, ...] | None = None) -> bytes:
    """The serialized `jax.export.Exported` of `forward(ops, x)` for x of shape (batch, *input_shape)."""
    (batch,) = jax.export.symbolic_shape("batch")
    spec = jax.ShapeDtypeStruct((batch, *input_shape), jnp.float32)
    if platforms is None:
        platforms = tuple(dict.fromkeys(("cpu", jax.default_backend())))
    exp = jax.export.export(jax.jit(lambda x: forward(ops, x)), platforms=platforms)(spec)
    return bytes(exp.serialize())


def load(data: bytes):
    """The `jax.export.Exported` in `data` (call it with `.call(x)`)."""
    return jax.export.deserialize(bytearray(data))


def run(exported, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    """The program's logits for `x`, in batches of `batch`."""
    f = jax.jit(exported.call)
    return np.concatenate([np.asarray(f(jnp.asarray(x[i:i + batch], jnp.float32))) for i in range(0, len(x), batch)])
