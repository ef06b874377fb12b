"""Structured tickets as physically smaller dense networks: the dead units taken out.

A ticket pruned with `pruning.granularity=neuron|channel` (`lth.sparsity.structured`) is a full-size
network whose removed units compute exactly 0: the unit's kernel slice, its bias and its
BatchNorm's scale and bias are masked, so `(0 - mean) * 0 * rsqrt(var + eps) + 0 = 0`, and ReLU,
max-pooling and the global mean keep 0. Such a unit, with its BatchNorm channel and the next
layer's matching inputs (every spatial position of the channel when a Flatten lies between), can
be deleted without changing a single output. So can a unit that nothing reads (the next layer's
inputs from it are all 0), whatever it computes.

`shrink(ops)` deletes, between each weighted layer and the next, every unit whose output is
exactly 0 (its kernel slice all 0 and the constant its bias leaves through the BatchNorm and
ReLU equal to 0) or unread, repeating until nothing changes (a unit whose only inputs were
deleted units becomes a constant). The output layer keeps every unit (the classes); a layer
keeps at least one unit. In a ResNet the channels of the residual stream are tied together by
the additions (a channel is 0 only where every added tensor is), so only a block's inner units
are deleted (its first convolution's filters, BatchNorm channels, and the second convolution's
inputs: the units Li et al. 2017 prune); the stream, the blocks' last convolutions and the
shortcuts keep their widths. The result is exact: the tests compare the smaller network's outputs
with the masked network's for each supported family.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lth.export.graph import BatchNorm, Conv, Dense, Flatten, Op, Relu, Residual


def shrink(ops: list[Op]) -> list[Op]:
    """A copy of `ops` with the removable units of every hidden Dense/Conv layer deleted (inside
    residual blocks, the units between the block's own layers)."""
    ops = [dataclasses.replace(op, body=shrink(op.body)) if isinstance(op, Residual) else dataclasses.replace(op)
           for op in ops]
    weighted = [i for i, op in enumerate(ops) if isinstance(op, (Dense, Conv))]
    pairs = [(a, b) for a, b in zip(weighted[:-1], weighted[1:])
             if not any(isinstance(op, Residual) for op in ops[a + 1:b])]  # a residual stream between: tied widths
    changed = True
    while changed:
        changed = False
        for a, b in pairs:
            keep = _keep(ops, a, b)
            if not keep.all():
                _remove(ops, a, b, keep)
                changed = True
    return ops


def _positions(ops: list[Op], a: int, b: int) -> int:
    """How many input rows of layer `b` each unit of layer `a` feeds: the spatial positions a
    Flatten between them spreads a channel over (1 without a Flatten)."""
    units = ops[a].kernel.shape[-1]
    if isinstance(ops[b], Dense) and any(isinstance(op, Flatten) for op in ops[a + 1:b]):
        rows = ops[b].kernel.shape[0]
        if rows % units:
            raise ValueError(f"{ops[b].name} has {rows} inputs, not a multiple of {ops[a].name}'s {units} channels")
        return rows // units
    return 1


def _reads(ops: list[Op], a: int, b: int) -> np.ndarray:
    """Per unit of layer `a`, whether layer `b` reads it (a nonzero weight from it)."""
    nxt, units = ops[b], ops[a].kernel.shape[-1]
    if isinstance(nxt, Conv):
        return np.any(nxt.kernel != 0, axis=(0, 1, 3))
    k = nxt.kernel.reshape(_positions(ops, a, b), units, -1)  # rows in (position, channel) order
    return np.any(k != 0, axis=(0, 2))


def _constant(ops: list[Op], a: int, b: int) -> np.ndarray:
    """Per unit of layer `a`, the value it outputs (after its BatchNorm and ReLU) when its
    kernel slice is all 0, as the float32 arithmetic of `lth.export.graph.forward` gives it."""
    bias = ops[a].bias
    c = np.zeros(ops[a].kernel.shape[-1], np.float32) if bias is None else bias.astype(np.float32).copy()
    for op in ops[a + 1:b]:
        if isinstance(op, BatchNorm):
            c = (c - op.mean) * (op.scale * (1.0 / np.sqrt(op.var + np.float32(op.eps)))) + op.bias
        elif isinstance(op, Relu):
            c = np.maximum(c, 0.0)
    return c


def _keep(ops: list[Op], a: int, b: int) -> np.ndarray:
    k = ops[a].kernel
    silent = ~np.any(k.reshape(-1, k.shape[-1]) != 0, axis=0)
    dead = (silent & (_constant(ops, a, b) == 0)) | ~_reads(ops, a, b)
    keep = ~dead
    if not keep.any():
        keep[0] = True  # a layer of width 0 cannot be written; one unit of zeros is exact too
    return keep


def _remove(ops: list[Op], a: int, b: int, keep: np.ndarray) -> None:
    """Delete the units `~keep` of layer `a`, its BatchNorm channels and layer `b`'s inputs."""
    P, units = _positions(ops, a, b), ops[a].kernel.shape[-1]
    bias = ops[a].bias
    scale = ops[a].scale  # an int8 layer's per-unit scales go with their units
    ops[a] = dataclasses.replace(ops[a], kernel=ops[a].kernel[..., keep], bias=None if bias is None else bias[keep],
                                 scale=None if scale is None else scale[keep])
    for i in range(a + 1, b):
        if isinstance(ops[i], BatchNorm):
            bn = ops[i]
            ops[i] = dataclasses.replace(bn, scale=bn.scale[keep], bias=bn.bias[keep], mean=bn.mean[keep], var=bn.var[keep])
    nxt = ops[b]
    if isinstance(nxt, Conv):
        kernel = nxt.kernel[:, :, keep, :]
    else:
        k = nxt.kernel.reshape(P, units, -1)[:, keep, :]
        kernel = k.reshape(P * int(keep.sum()), -1)
    ops[b] = dataclasses.replace(nxt, kernel=kernel)
