#!/usr/bin/env python
"""Benchmark: lth's CPU convolution routes (`lth.models.cpu_conv`) against plain `lax.conv`, same run.

Part 1, per convolution shape (3x3 kernel, padding 1, batch `--batch`): GFLOP/s of the forward
pass and of forward + backward (gradients of kernel and input) for `lax.conv_general_dilated`,
im2col + dot, XLA's convolution with the kernel gradient as a dot, and the route lth takes.
Part 2, per model (`--models`): training images/s (the trainer's compiled step, batch 128, SGD
momentum) and evaluation images/s (forward passes of a batch of 1000) with every convolution on `lax` (baseline) and
with lth's routes, as images/s and GFLOP/s (XLA's cost analysis of the compiled `lax` program) and
as a fraction of the ceiling: a jitted float32 2048x2048 matmul measured in the same run. Only
meaningful on a CPU (elsewhere both are `lax`).

    python scripts/bench_cpu_conv.py [--models resnet20 conv2 vgg16] [--batch 128] [--repeats 3]
        [--no-shapes] [--variants lax routed]
"""

from __future__ import annotations

import argparse
import os
import time

from bench_common import best_rate, device_line, fresh_states  # (also puts the repo on sys.path)

import jax
import jax.numpy as jnp
import numpy as np

from lth.config.schema import ModelConfig, OptimizerConfig
from lth.data import Dataset
from lth.models import batch_norm_vjp, build_model, cpu_conv, materialize
from lth.train.optim import make_optimizer, make_schedule
from lth.train.trainer import Trainer

SHAPES = [(32, 3, 16), (32, 16, 16), (16, 32, 32), (8, 64, 64), (32, 64, 64), (16, 128, 128), (8, 256, 256),
          (4, 512, 512), (2, 512, 512), (1, 512, 512)]


def seconds(fn, *args, repeats: int) -> float:
    """Best-of-`repeats` wall time of the compiled `fn(*args)` (`bench_common.best_rate` of one call)."""
    fn = jax.jit(fn)
    return 1.0 / best_rate(lambda: fn(*args), 1, repeats)


def per_shape(batch: int, repeats: int) -> None:
    S, P = (1, 1), ((1, 1), (1, 1))
    impls = {
        "lax": lambda x, w: cpu_conv._native(x, w, S, P),
        "im2col": lambda x, w: cpu_conv.im2col_conv(x, w, S, P),
        "kgrad-dot": lambda x, w: cpu_conv.conv_fast_kernel_grad(x, w, S, P),
    }
    print(f"\nper shape, batch {batch}, 3x3 kernel, padding 1: GFLOP/s forward / forward+backward")
    print(f"{'H x W, in -> out':>18s} " + " ".join(f"{k:>15s}" for k in impls) + "   lth's route")
    for hw, cin, cout in SHAPES:
        x = jax.random.normal(jax.random.PRNGKey(0), (batch, hw, hw, cin))
        w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, cin, cout))
        flops = 2 * batch * hw * hw * cin * cout * 9
        cells = []
        for f in impls.values():
            fwd = seconds(f, x, w, repeats=repeats)
            both = seconds(jax.grad(lambda w_, x_, f=f: jnp.sum(f(x_, w_) ** 2), argnums=(0, 1)), w, x, repeats=repeats)
            cells.append(f"{flops / fwd / 1e9:6.1f} / {3 * flops / both / 1e9:6.1f}")
        print(f"{f'{hw}x{hw}, {cin} -> {cout}':>18s} " + " ".join(f"{c:>15s}" for c in cells)
              + f"   {cpu_conv.route(x.shape, w.shape, S, P)}", flush=True)


class Ceiling:
    """GFLOP/s of a jitted float32 (n x n) @ (n x n), the CPU's practical ceiling. `measure()` is
    called next to every timed step, and `best` is the best seen: on a shared machine the load
    changes within seconds, so a step is compared with the ceiling measured beside it."""

    def __init__(self, n: int = 2048):
        self.a, self.n, self.best = jax.random.normal(jax.random.PRNGKey(0), (n, n)), n, 0.0
        self.fn = jax.jit(jnp.dot)

    def measure(self, calls: int = 3) -> float:
        jax.block_until_ready(self.fn(self.a, self.a))
        for _ in range(calls):
            t = time.perf_counter()
            jax.block_until_ready(self.fn(self.a, self.a))
            self.best = max(self.best, 2 * self.n**3 / (time.perf_counter() - t) / 1e9)
        return self.best


def seconds_beside(fn, args, repeats: int, ceiling: Ceiling) -> tuple[float, float]:
    """(best wall time of the compiled `fn(*args)`, best ceiling GFLOP/s measured between its runs)."""
    fn = jax.jit(fn)
    jax.block_until_ready(fn(*args))
    best, ceil = float("inf"), Ceiling.__new__(Ceiling)
    ceil.__dict__.update(ceiling.__dict__, best=0.0)
    for _ in range(repeats):
        ceil.measure()
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    ceil.measure()
    return best, ceil.best


def step_flops(fn, *args) -> float:
    """FLOPs of `fn(*args)` by XLA's cost analysis of the compiled program (2 per multiply-add).
    Traces a fresh wrapper: `jax.jit(fn)` would cache the trace under `fn` itself, and the timed
    `jax.jit(fn)` of the same function would then reuse it, with the routes of this trace (`lax`)
    instead of the variant's (which made the first variant of every model run on `lax.conv`)."""
    return float(jax.jit(lambda *a: fn(*a)).lower(*args).compile().cost_analysis()["flops"])


def per_model(name: str, repeats: int, ceiling: Ceiling, variants) -> list[tuple]:
    """Per variant ('lax': every convolution `lax.conv`; 'routed': lth's routes; 'nomat': routed, ResNet
    block outputs not materialised; 'bnflax': routed, Flax's BatchNorm in training): training (one
    compiled step, batch 128, SGD momentum) and evaluation (forward pass of 1,000 images) images/s
    and GFLOP/s. FLOPs are XLA's cost analysis of the `lax` programs (the model's arithmetic, the
    same for every route)."""
    rng = np.random.default_rng(0)
    n = 1000
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.int32)
    stats = np.full(3, 0.5, np.float32)
    ds = Dataset("random", x, y, x[:0], y[:0], x, y, 10, stats, stats, 255.0)
    xb, yb = jnp.asarray(ds.normalize(x[:128])), jnp.asarray(y[:128])
    xe, ye = jnp.asarray(ds.normalize(x)), jnp.asarray(y)
    opt = OptimizerConfig(name="momentum", lr=0.1, momentum=0.9, weight_decay=1e-4)
    rows, flops = [], None
    for variant in variants:
        cpu_conv.ROUTED = variant != "lax"  # both read when the step below is traced
        cpu_conv.KERNEL_GRAD_DOT = variant in ("kgrad", "before")
        materialize.ENABLED = variant not in ("nomat", "before")
        batch_norm_vjp.ENABLED = variant not in ("bnflax", "before")
        tr = Trainer(build_model(ModelConfig(name=name), 10), ds, make_optimizer(opt),
                     make_schedule(opt, total_steps=10, steps_per_epoch=7), batch_size=128)
        states, _ = fresh_states(tr, 1)
        state = jax.tree.map(lambda a: a[0], states)
        train_fn = lambda s, x, y: tr._train_step(s, x, y)[0]  # noqa: E731
        eval_fn = lambda s, x, y: tr._loss(s.params, s.batch_stats, x, y, False)[0]  # noqa: E731
        if flops is None:
            saved, cpu_conv.ROUTED = cpu_conv.ROUTED, False
            flops = (step_flops(train_fn, state, xb, yb), step_flops(eval_fn, state, xe, ye))
            cpu_conv.ROUTED = saved
        train, c_train = seconds_beside(train_fn, (state, xb, yb), repeats, ceiling)
        evaluate, c_eval = seconds_beside(eval_fn, (state, xe, ye), repeats, ceiling)
        rows.append((name, variant, 128 / train, flops[0] / train / 1e9, n / evaluate, flops[1] / evaluate / 1e9))
        r = rows[-1]
        print(f"{name:>10s} {variant:>7s}: train {r[2]:7.1f} images/s {r[3]:6.1f} GFLOP/s ({r[3] / c_train:.3f}x of {c_train:5.1f})"
              f"   eval {r[4]:7.1f} images/s {r[5]:6.1f} GFLOP/s ({r[5] / c_eval:.3f}x of {c_eval:5.1f})   [{uptime()}]",
              flush=True)
    cpu_conv.ROUTED, cpu_conv.KERNEL_GRAD_DOT, materialize.ENABLED, batch_norm_vjp.ENABLED = True, False, True, True
    return rows


def uptime() -> str:
    """The machine's 1-minute load average (benchmarks on a shared machine are only comparable
    within one run)."""
    try:
        return f"load {os.getloadavg()[0]:.2f}"
    except OSError:
        return "load ?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["resnet20", "conv2", "vgg16"])
    ap.add_argument("--batch", type=int, default=128, help="batch of the per-shape table")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", nargs="*", default=["lax", "routed"], choices=["lax", "routed", "kgrad", "nomat", "bnflax", "before"],
                    help="lax: every conv lax.conv; routed: lth's routes; kgrad: routed + the kernel-gradient dot route (off by default); "
                         "nomat: routed without lth.models.materialize (XLA:CPU recomputes ResNet block outputs inside fusions); "
                         "bnflax: routed with Flax's BatchNorm in training (not lth.models.batch_norm_vjp); "
                         "before: the routes as they were before issue 31 (kernel-gradient dot on, no materialize, Flax's BatchNorm)")
    ap.add_argument("--no-shapes", action="store_true", help="skip the per-shape table")
    args = ap.parse_args()
    print(device_line())
    if not args.no_shapes:
        per_shape(args.batch, args.repeats)
    if args.models:
        ceiling = Ceiling()
        print(f"\nper model, 32x32x3 inputs. GFLOP/s: XLA's cost analysis of the lax program / best time;"
              f" x: of the ceiling, a jitted float32 2048x2048 matmul's best GFLOP/s measured between the timed runs")
    for name in args.models:
        per_model(name, args.repeats, ceiling, args.variants)


if __name__ == "__main__":
    main()
