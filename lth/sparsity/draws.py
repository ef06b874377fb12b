"""Fresh draws: the random keys and generators of a control, an ablation or a pruning method, and weights drawn
fresh from the initialiser with them.

A draw is named by (seed, replicate, name, level) alone: `control_key` (JAX) and `control_rng` (NumPy)
fold the name in through a CRC32 salt. So the draw of control `reinit` of replicate r at level L is the
same whether it is trained with the tickets or later on its own, and whatever else is listed. The
controls (`lth.lottery.controls`), the ablations (`lth.sparsity.ablations`) and the random and custom
pruning methods (`lth.sparsity.methods`) all draw here; the module sits in `lth.sparsity` so that
sparsity needs nothing from the lottery (issue 26: imports run one way).
"""

from __future__ import annotations

import zlib
from typing import Any

import jax
import numpy as np


def _salt(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def control_key(seed: int, replicate: int, name: str, level: int) -> jax.Array:
    """The JAX key of control `name` of replicate `replicate` at `level` (its fresh weights)."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), replicate)
    return jax.random.fold_in(jax.random.fold_in(key, _salt(name)), level)


def control_rng(seed: int, replicate: int, name: str, level: int) -> np.random.Generator:
    """The numpy generator of the same control (its random mask)."""
    return np.random.default_rng([seed, replicate, _salt(name), level])


def fresh_weights(trainer, seed: int, replicates, name: str, level: int) -> dict[str, Any]:
    """{"params", "batch_stats"} drawn fresh from the initialiser for every replicate (`replicates`:
    a count, or which replicates), replicate r with `control_key(seed, r, name, level)` (reinit
    controls, the reinit ablation, reinit branches)."""
    import jax.numpy as jnp

    ids = range(replicates) if isinstance(replicates, int) else replicates
    fresh = trainer.init_variables(jnp.stack([control_key(seed, r, name, level) for r in ids]))
    return {"params": fresh["params"], "batch_stats": fresh.get("batch_stats", {})}
