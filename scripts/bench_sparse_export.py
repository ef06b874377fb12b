#!/usr/bin/env python
"""Benchmark: an unstructured LeNet-300-100 ticket's sparse-matrix path against the dense masked
network, on CPU, at densities from 100% down to 1% (issue 29, `lth.export.sparse`).

The network is LeNet-300-100 (784-300-100-10) with random weights and a random mask of the same
density in every layer (the times do not depend on the values). For each density it times, as the
export does (`lth.export.timing`: median of `--repeats` calls after 3 warm-up calls, on random
inputs): the masked network stored dense in XLA (`x @ W`, zeros included) and in onnxruntime
(Gemm), and the sparse path: `jax.experimental.sparse` BCSR (`(Wᵀ @ xᵀ)ᵀ`) in XLA, and ONNX sparse
initialisers in onnxruntime (which densifies them when the session loads). It prints latency at
batch 1 and throughput at batch 256 per density, and the break-even density of each runtime's
sparse path: the highest measured density at which it is more than `--margin` (10%) faster than
the dense one in the same runtime (the table shows whether it stays faster below).

    python scripts/bench_sparse_export.py [--repeats 30] [--densities 1 0.5 0.2 0.1 0.05 0.02 0.01]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from lth.export import graph, onnx_graph, sparse, timing  # noqa: E402

DIMS = (784, 300, 100, 10)
SHAPE = (28, 28, 1)


def lenet_300_100(density: float, seed: int = 0) -> list:
    """LeNet-300-100's ops with a random mask of `density` in every layer."""
    rng = np.random.default_rng(seed)
    ops = [graph.Flatten()]
    for i, (a, b) in enumerate(zip(DIMS[:-1], DIMS[1:])):
        k = rng.normal(size=(a, b)).astype(np.float32) * (rng.random((a, b)) < density)
        ops += [graph.Dense(f"fc{i + 1}", k.astype(np.float32), np.zeros(b, np.float32)), graph.Relu()]
    return ops[:-1]


def measure(density: float, repeats: int) -> dict[str, dict[str, float]]:
    ops = lenet_300_100(density)
    return {
        "xla dense": timing.measure(timing.xla(lambda x: graph.forward(ops, x)), SHAPE, repeats),
        "xla BCSR": timing.measure(timing.xla(sparse.bcsr_fn(ops)), SHAPE, repeats),
        "ort dense": timing.measure(timing.onnxruntime(onnx_graph.session(onnx_graph.to_onnx(ops, SHAPE, 10))), SHAPE, repeats),
        "ort sparse init": timing.measure(timing.onnxruntime(onnx_graph.session(sparse.to_onnx_sparse(ops, SHAPE, 10))),
                                          SHAPE, repeats),
    }


def break_even(results: dict[float, dict], fast: str, slow: str, key: str, higher_is_better: bool,
               margin: float) -> float | None:
    """The highest density at which `fast` beats `slow` on `key` by more than `margin` (a shared
    CPU's timings move by ~10%; None: nowhere)."""
    def ratio(r):
        return r[fast][key] / r[slow][key] if higher_is_better else r[slow][key] / r[fast][key]

    wins = [d for d, r in results.items() if ratio(r) > 1 + margin]
    return max(wins) if wins else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--margin", type=float, default=0.1, help="how much faster counts as faster (0.1: 10%%)")
    ap.add_argument("--densities", type=float, nargs="+", default=[1.0, 0.5, 0.3, 0.2, 0.15, 0.1, 0.05, 0.02, 0.01])
    args = ap.parse_args()
    print(f"LeNet-300-100, random masks; {jax.default_backend()} ({os.cpu_count()} CPUs visible), "
          f"median of {args.repeats} calls; latency at batch 1 (ms), throughput at batch 256 (examples/s)")
    cols = ("xla dense", "xla BCSR", "ort dense", "ort sparse init")
    print(f"{'density':>8} | " + " | ".join(f"{c:>15} b=1 {'b=256':>9}" for c in cols))
    results = {}
    for d in args.densities:
        results[d] = r = measure(d, args.repeats)
        print(f"{100 * d:>7.1f}% | " + " | ".join(f"{r[c]['latency_batch_1_ms']:>16.3f} {r[c]['throughput_batch_256']:>9,.0f}"
                                                   for c in cols), flush=True)
    print(f"\nbreak-even density (highest density measured at which the sparse path is > {100 * args.margin:g}% faster):")
    for fast, slow in (("xla BCSR", "xla dense"), ("ort sparse init", "ort dense")):
        t = break_even(results, fast, slow, "throughput_batch_256", True, args.margin)
        lat = break_even(results, fast, slow, "latency_batch_1_ms", False, args.margin)
        fmt = lambda v: "never" if v is None else f"{100 * v:g}%"  # noqa: E731
        print(f"  {fast} vs {slow}: batch 256 throughput {fmt(t)}, batch 1 latency {fmt(lat)}")


if __name__ == "__main__":
    main()
