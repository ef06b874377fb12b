"""Structured pruning: whole units instead of single weights (`pruning.granularity`).

A unit is one output slice of a kernel, `W[..., j]`: a dense layer's neuron (`neuron`: 2-D
kernels, (in, out)) or a convolution's filter (`channel`: 4-D kernels, (h, w, in, out); Li et al.
2017 prune filters of convolutions only). A unit's score is the sum of its alive weights' scores;
with magnitude scores that is the L1 norm of the filter, Li et al.'s criterion:

    s_j = Σ_{i} |W[i, j]|   (dense),      s_j = Σ_{h,w,c} |W[h, w, c, j]|   (convolution).

Removing unit j zeroes the whole slice W[..., j] and the leaves that would otherwise keep its
output alive: the layer's bias b[j] and, where the model follows the naming convention of
`lth.models` (`.../convK` is normalised by `.../bnK`), that BatchNorm's scale[j] and bias[j], so
the channel is exactly 0 and the next layer's matching inputs are dead (`lth.sparsity.flops` counts what
that saves). The output layer (`head`) keeps all its units: they are the classes.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

GRANULARITY_NDIM = {"neuron": (2,), "channel": (3, 4, 5)}


def unit_paths(paths: list[str], shapes: dict[str, tuple[int, ...]], granularity: str, head: str | None = None) -> list[str]:
    """The prunable tensors whose units `granularity` prunes: dense kernels (`neuron`) or
    convolution kernels (`channel`), never the output layer's (`head/`, or `pruning.head`)."""
    head = (head or "head") + "/"
    return [p for p in paths if len(shapes[p]) in GRANULARITY_NDIM[granularity] and not p.startswith(head)]


def unit_scores(scores: Any, mask: Any) -> np.ndarray:
    """Per unit (last axis), the sum of its alive weights' scores: (units,) float64."""
    s, m = np.asarray(scores, np.float64), np.asarray(mask, bool)
    return np.where(m, s, 0.0).reshape(-1, s.shape[-1]).sum(axis=0)


def unit_alive(mask: Any) -> np.ndarray:
    """Per unit, whether any of its weights is alive: (units,) bool."""
    m = np.asarray(mask, bool)
    return m.reshape(-1, m.shape[-1]).any(axis=0)


def companions(path: str, flat: dict[str, Any]) -> list[str]:
    """The leaves that belong to the units of kernel `path`: its module's bias and, for
    `.../convK/kernel` (`.../shortcut_conv/kernel`), the BatchNorm `.../bnK` (`.../shortcut_bn`) (scale, bias) with as many channels."""
    module = path.rsplit("/", 1)[0]
    units = np.shape(flat[path])[-1]
    out = [f"{module}/bias"]
    parent, name = module.rsplit("/", 1) if "/" in module else ("", module)
    bn = re.sub(r"conv|fc", "bn", name, count=1)  # conv1 -> bn1, shortcut_conv -> shortcut_bn
    if bn != name:
        prefix = f"{parent}/" if parent else ""
        out += [f"{prefix}{bn}/scale", f"{prefix}{bn}/bias"]
    return [p for p in out if p in flat and np.shape(flat[p]) == (units,)]


def remove_units(flat: dict[str, np.ndarray], path: str, alive_units: np.ndarray) -> dict[str, np.ndarray]:
    """New mask leaves for kernel `path` and its companions with the dead units' slices False."""
    alive_units = np.asarray(alive_units, bool)
    out = {path: np.asarray(flat[path], bool) & alive_units}
    for c in companions(path, flat):
        out[c] = np.asarray(flat[c], bool) & alive_units
    return out


def dead_units(mask: Any) -> int:
    """Units of one kernel mask with no alive weight."""
    return int((~unit_alive(mask)).sum())


def report(mask: Any, paths: list[str]) -> dict[str, Any]:
    """One replicate's structured mask in numbers: alive units per pruned kernel and, per
    BatchNorm (or bias) leaf that belongs to those units, how many of its channels are dead."""
    from lth.sparsity import masks as M

    flat = M.flatten(mask)
    units = {p: int(unit_alive(flat[p]).sum()) for p in paths}
    dead = {}
    for p in paths:
        for c in companions(p, flat):
            if c.endswith("/scale"):  # a BatchNorm of the kernel's units
                dead[c.rsplit("/", 1)[0]] = int((~np.asarray(flat[c], bool)).sum())
    return {"alive_units": units, "dead_batchnorm_channels": dead}
