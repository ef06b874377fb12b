#!/usr/bin/env python
"""Benchmark: lth's CPU convolution routes (`lth.models.cpu_conv`) against plain `lax.conv`, same run.

Part 1, per convolution shape (3x3 kernel, padding 1, batch `--batch`): GFLOP/s of the forward
pass and of forward + backward (gradients of kernel and input) for `lax.conv_general_dilated`,
im2col + dot, XLA's convolution with the kernel gradient as a dot, and the route lth takes.
Part 2, per model (`--models`): training images/s (the trainer's compiled step, batch 128, SGD
momentum) and evaluation images/s (forward passes of a batch of 1000) with every convolution on `lax` (baseline) and
with lth's routes, and their ratio. Only meaningful on a CPU (elsewhere both are `lax`).

    python scripts/bench_cpu_conv.py [--models resnet20 vgg16 conv2] [--batch 128] [--repeats 3]
"""

from __future__ import annotations

import argparse

from bench_common import best_rate, device_line, fresh_states  # (also puts the repo on sys.path)

import jax
import jax.numpy as jnp
import numpy as np

from lth.config.schema import ModelConfig, OptimizerConfig
from lth.data import Dataset
from lth.models import build_model, cpu_conv
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


def per_model(name: str, repeats: int) -> None:
    rng = np.random.default_rng(0)
    n = 1000
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.int32)
    stats = np.full(3, 0.5, np.float32)
    ds = Dataset("random", x, y, x[:0], y[:0], x, y, 10, stats, stats, 255.0)
    xb, yb = jnp.asarray(ds.normalize(x[:128])), jnp.asarray(y[:128])
    xe, ye = jnp.asarray(ds.normalize(x)), jnp.asarray(y)
    opt = OptimizerConfig(name="momentum", lr=0.1, momentum=0.9, weight_decay=1e-4)
    rates = {}
    for routed in (False, True):
        cpu_conv.ROUTED = routed  # read when the step below is traced
        tr = Trainer(build_model(ModelConfig(name=name), 10), ds, make_optimizer(opt),
                     make_schedule(opt, total_steps=10, steps_per_epoch=7), batch_size=128)
        states, _ = fresh_states(tr, 1)
        state = jax.tree.map(lambda a: a[0], states)
        train = seconds(lambda s, x, y: tr._train_step(s, x, y)[0], state, xb, yb, repeats=repeats)
        evaluate = seconds(lambda s, x, y: tr._loss(s.params, s.batch_stats, x, y, False)[0], state, xe, ye, repeats=repeats)
        rates[routed] = (128 / train, n / evaluate)
    cpu_conv.ROUTED = True
    (t0, e0), (t1, e1) = rates[False], rates[True]
    print(f"{name:>10s}: train {t0:8.1f} -> {t1:8.1f} images/s (x{t1 / t0:.2f})   eval {e0:8.1f} -> {e1:8.1f} images/s (x{e1 / e0:.2f})",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["resnet20", "vgg16", "conv2"])
    ap.add_argument("--batch", type=int, default=128, help="batch of the per-shape table")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-shapes", action="store_true", help="skip the per-shape table")
    args = ap.parse_args()
    print(device_line())
    if not args.no_shapes:
        per_shape(args.batch, args.repeats)
    if args.models:
        print("\nper model, 32x32x3 inputs: lax.conv everywhere -> lth's routes")
    for name in args.models:
        per_model(name, args.repeats)


if __name__ == "__main__":
    main()
