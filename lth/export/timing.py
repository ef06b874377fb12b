"""Measured speed of a network on this machine: latency at batch 1 and throughput at batch 256.

Why medians of repeated runs after warm-up: the first calls compile (XLA) or plan (onnxruntime)
and a shared CPU is noisy, so each figure is the median wall time of `repeats` timed calls that
follow `WARMUP` untimed ones, on the same fixed random input. Latency is that median at batch 1
(milliseconds); throughput is 256 / the median at batch 256 (examples per second).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

WARMUP = 3
BATCHES = (1, 256)


def median_seconds(f: Callable[[np.ndarray], object], x: np.ndarray, repeats: int) -> float:
    """The median wall time of `f(x)` over `repeats` calls after `WARMUP` calls; `f` must block
    until its result is ready (see `xla` and `onnxruntime`)."""
    for _ in range(WARMUP):
        f(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(x)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def measure(f: Callable[[np.ndarray], object], input_shape: tuple[int, ...], repeats: int) -> dict[str, float]:
    """`latency_batch_1_ms` and `throughput_batch_256` (examples/s) of `f`."""
    rng = np.random.default_rng(0)
    out = {}
    for b in BATCHES:
        x = rng.normal(size=(b, *input_shape)).astype(np.float32)
        s = median_seconds(f, x, repeats)
        if b == 1:
            out["latency_batch_1_ms"] = 1000.0 * s
        else:
            out[f"throughput_batch_{b}"] = b / s
    return out


def xla(fn) -> Callable[[np.ndarray], object]:
    """`fn` (a function of a JAX array) jit-compiled, called on a device copy of x and waited for."""
    import jax

    f = jax.jit(fn)
    return lambda x: jax.block_until_ready(f(jax.device_put(x)))


def onnxruntime(sess) -> Callable[[np.ndarray], object]:
    """An onnxruntime session's run on x."""
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})
