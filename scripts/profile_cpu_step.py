#!/usr/bin/env python
"""Where one compiled training step's time goes on a CPU (issue 31): sub-programs timed in one run,
and XLA's per-thunk profile of the whole step grouped by kind.

Part 1 times, interleaved and best of `--repeats`, at batch 128 (SGD momentum, masked update, the
trainer's CIFAR augmentation): the trainer's whole step as the CPU loop calls it (gather + crop/flip
+ normalise + forward + backward + update), forward only (training mode), forward + backward, the
masked optax update alone, gather + augmentation + normalisation alone, and a jitted 2048x2048
matmul as the ceiling. Part 2 runs the whole step under `jax.profiler` and sums the executed
thunks (XLA:CPU's units of work: a fusion, a convolution, a copy ...) by kind: convolutions,
matrix products, fusions that reduce (BatchNorm statistics, their gradients, the loss), elementwise
fusions, transposes (with what XLA fused into them), the rest; "idle/dispatch" is the wall time no thunk ran.

    python scripts/profile_cpu_step.py [--models resnet20 conv2] [--repeats 5] [--no-materialize] [--flax-bn]
"""

from __future__ import annotations

import argparse
import collections
import re
import time

from bench_common import device_line, fresh_states  # (also puts the repo on sys.path)

import jax
import jax.numpy as jnp
import numpy as np

from lth.config.schema import ModelConfig, OptimizerConfig
from lth.data import Dataset
from lth.data.augment import random_crop_flip
from lth.models import batch_norm_vjp, build_model, materialize
from lth.train.optim import make_optimizer, make_schedule
from lth.train.trainer import Trainer
from bench_cpu_conv import uptime


def setup(name: str):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (1024, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, 1024).astype(np.int32)
    stats = np.full(3, 0.5, np.float32)
    ds = Dataset("random", x, y, x[:0], y[:0], x[:1000], y[:1000], 10, stats, stats, 255.0)
    opt = OptimizerConfig(name="momentum", lr=0.1, momentum=0.9, weight_decay=1e-4)
    tr = Trainer(build_model(ModelConfig(name=name), 10), ds, make_optimizer(opt),
                 make_schedule(opt, total_steps=10, steps_per_epoch=8), batch_size=128, augment=random_crop_flip)
    states, keys = fresh_states(tr, 1)
    return tr, jax.tree.map(lambda a: a[0], states), keys


def programs(tr: Trainer, state):
    """name -> (jitted function, args), each a part of the trainer's step."""
    perm = jnp.arange(tr.x_train.shape[0], dtype=jnp.int32)
    key, step = jax.random.PRNGKey(1), jnp.asarray(3, jnp.int32)
    xb = jnp.asarray(tr.dataset.normalize(np.asarray(tr.x_train[:128])))
    yb = tr.y_train[:128]
    grads = jax.tree.map(jnp.ones_like, state.params)

    def data(perm, key, x_all, y_all, step):
        idx = tr._batch_indices(perm[None, None], 0, step)[0]
        return tr.dataset.normalize(tr.augment(jax.random.fold_in(key, step), x_all[idx])), y_all[idx]

    fwd = lambda s, x, y: tr._loss(s.params, s.batch_stats, x, y, True)  # noqa: E731
    fwd_bwd = lambda s, x, y: jax.value_and_grad(tr._loss, has_aux=True)(s.params, s.batch_stats, x, y, True)  # noqa: E731
    update = lambda s, g: s.apply_masked_gradients(g, batch_stats=s.batch_stats)  # noqa: E731
    return {
        "whole step (trainer)": (tr._step1, (state, perm, key, tr.x_train, tr.y_train, step)),
        "step on a ready batch": (jax.jit(lambda s, x, y: tr._train_step(s, x, y)), (state, xb, yb)),
        "forward (training mode)": (jax.jit(fwd), (state, xb, yb)),
        "forward + backward": (jax.jit(fwd_bwd), (state, xb, yb)),
        "masked optax update": (jax.jit(update), (state, grads)),
        "gather + augment + normalise": (jax.jit(data), (perm, key, tr.x_train, tr.y_train, step)),
    }


def time_all(progs: dict, repeats: int) -> dict:
    """Best wall time (ms) of each program, the programs interleaved so that load changes hit all."""
    n = 2048
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
    progs = {**progs, "matmul 2048 (ceiling)": (jax.jit(jnp.dot), (a, a))}
    for fn, args in progs.values():
        jax.block_until_ready(fn(*args))
    best = {k: float("inf") for k in progs}
    for _ in range(repeats):
        for k, (fn, args) in progs.items():
            t = time.perf_counter()
            jax.block_until_ready(fn(*args))
            best[k] = min(best[k], (time.perf_counter() - t) * 1e3)
    return best


def kinds(hlo_text: str) -> dict:
    """instruction name -> kind, from the compiled module's text (a fusion's kind from what it holds)."""
    comps, cur = {}, None
    for line in hlo_text.splitlines():
        m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if m:
            cur = comps.setdefault(m.group(1), [])
        elif cur is not None:
            cur.append(line)
    out = {}
    for lines in comps.values():
        for line in lines:
            m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = \S+ (\w[\w\-]*)\(", line)
            if not m:
                continue
            name, op = m.groups()
            body = ""
            c = re.search(r"calls=%?([\w.\-]+)", line)
            if c:
                body = "\n".join(comps.get(c.group(1), []))
            text = op + " " + body
            if "convolution" in text or "__onednn$conv" in text:
                kind = "convolution"
            elif re.search(r"\bdot\(", text) or op == "dot":
                kind = "dot"
            elif re.search(r"\breduce(-window)?\(", text) or op.startswith("reduce"):
                kind = "reduce (BN stats, pooling, loss)"
            elif op in ("copy", "transpose") or "transpose" in name:
                kind = "transpose (+ fused elementwise)"
            elif op == "fusion":
                kind = "elementwise fusion"
            else:
                kind = "other (" + op + ")"
            out[name] = kind
    return out


def profile(fn, args, steps: int = 5):
    """(ms per step by kind, wall ms per step, thread count) of `fn(*args)` under jax.profiler."""
    from jax._src.lib import _profiler
    from jax.profiler import ProfileData

    kind_of = kinds(fn.lower(*args).compile().as_text())
    jax.block_until_ready(fn(*args))
    session = _profiler.ProfilerSession()
    t = time.perf_counter()
    for _ in range(steps):
        jax.block_until_ready(fn(*args))
    wall = (time.perf_counter() - t) * 1e3 / steps
    data = ProfileData.from_serialized_xspace(session.stop())
    per_kind, per_op, threads = collections.Counter(), collections.Counter(), set()
    for plane in data.planes:
        for line in plane.lines:
            for e in line.events:
                name = e.name[5:] if e.name.startswith("end: ") else e.name
                if name in kind_of and not e.name.startswith("end: "):
                    per_kind[kind_of[name]] += e.duration_ns / 1e6 / steps
                    per_op[name] += e.duration_ns / 1e6 / steps
                    threads.add(line.name)
    return per_kind, per_op, wall, len(threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["resnet20", "conv2"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-materialize", action="store_true", help="lth.models.materialize off (the step before it)")
    ap.add_argument("--flax-bn", action="store_true", help="Flax's BatchNorm in training, not lth.models.batch_norm_vjp")
    ap.add_argument("--top", type=int, default=8, help="slowest thunks listed")
    args = ap.parse_args()
    print(device_line())
    materialize.ENABLED = not args.no_materialize
    batch_norm_vjp.ENABLED = not args.flax_bn
    for name in args.models:
        tr, state, _ = setup(name)
        progs = programs(tr, state)
        best = time_all(progs, args.repeats)
        ceil = 2 * 2048**3 / best["matmul 2048 (ceiling)"] / 1e6
        print(f"\n{name}, batch 128: best ms of {args.repeats}, interleaved [{uptime()}], ceiling {ceil:.1f} GFLOP/s")
        for k, ms in best.items():
            print(f"  {k:32s} {ms:8.1f} ms")
        per_kind, per_op, wall, threads = profile(*progs["whole step (trainer)"])
        print(f"  profile of the whole step: wall {wall:.1f} ms/step, thunks on {threads} threads [{uptime()}]")
        for k, ms in per_kind.most_common():
            print(f"    {k:34s} {ms:8.1f} ms")
        print(f"    {'idle / dispatch (wall - thunks)':34s} {wall - sum(per_kind.values()):8.1f} ms")
        for k, ms in per_op.most_common(args.top):
            print(f"      {k:40s} {ms:7.1f} ms")


if __name__ == "__main__":
    main()
