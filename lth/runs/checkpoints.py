"""Orbax checkpoints of pytrees (weights, masks, whole train states).

Orbax writes to a temporary directory and renames it when complete, so a checkpoint on disk is
either whole or absent: a run killed while saving loses nothing already finished. Restoring takes a
template with the structure of what was saved (a freshly built state), so optax's NamedTuple
states come back as themselves.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from lth.runs import writer

PyTree = Any


def _checkpointer() -> ocp.StandardCheckpointer:
    return ocp.StandardCheckpointer(**writer.orbax_options())


def save(path: str, tree: PyTree) -> None:
    """Save `tree` (device or host arrays) at `path`; replaces an existing checkpoint there. Only the
    writing process of a multi-process run saves (`lth.runs.writer`: every process holds `tree`)."""
    if not writer.primary():
        return
    path = os.path.abspath(path)
    ckptr = _checkpointer()
    ckptr.save(path, jax.device_get(tree), force=True)
    ckptr.wait_until_finished()


def exists(path: str) -> bool:
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "_CHECKPOINT_METADATA"))


def restore(path: str, template: PyTree) -> PyTree:
    """Load the checkpoint at `path` into the structure of `template` (arrays as numpy); with
    `template=None`, as saved (nested dicts and lists: what branches and pre-trained starts read
    from a run whose model they only know by its tensors)."""
    abstract = jax.tree.map(lambda x: np.zeros(np.shape(x), np.asarray(x).dtype), jax.device_get(template))
    return _checkpointer().restore(os.path.abspath(path), abstract)
