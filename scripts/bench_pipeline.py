#!/usr/bin/env python
"""Benchmark: the on-device CIFAR data pipeline against a fixed pre-made batch, in the same run.

ResNet-20 on CIFAR-10 (real CIFAR-10 when $LTH_DATA_DIR has it, else random pixels of the same
shape: 45,000 x 32 x 32 x 3 uint8), batch 128, SGD with momentum 0.9 and weight decay, every
replicate's mask all-ones (the masked step, as in a level-0 run). Two programs, both one compiled
`lax.scan` over `--steps` steps of the same vmapped train step (`Trainer._train_step`):

- pipeline: the trainer's own multi-step call (`Trainer._run`): per-epoch permutation of every
  replicate's data order, gather of the batch from the uint8 training set on the device, random
  crop with 4-pixel zero padding + horizontal flip, normalisation, then the step;
- fixed: the step applied again and again to one already-normalised float32 batch (R, B, 32, 32, 3),
  so none of the data work is done.

Prints training images/s (replicates x batch x steps / seconds, best of `--repeats`) for both and
their ratio (goal: pipeline >= 0.9 x fixed, i.e. the pipeline is not the bottleneck). With
`--replicates 1 8` it measures 1 and 8 vmapped replicates.

    python scripts/bench_pipeline.py [--steps 200] [--repeats 3] [--batch-size 128] [--replicates 1 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from lth import masks as M  # noqa: E402
from lth.config import ModelConfig, OptimizerConfig  # noqa: E402
from lth.data import Dataset  # noqa: E402
from lth.data.augment import random_crop_flip  # noqa: E402
from lth.models import build_model  # noqa: E402
from lth.optim import make_optimizer, make_schedule  # noqa: E402
from lth.train import Trainer, replicate_keys  # noqa: E402


def cifar_sized() -> tuple[Dataset, str]:
    from lth.config import DatasetConfig
    from lth.data import DataError, load_dataset

    d = os.environ.get("LTH_DATA_DIR")
    if d:
        try:
            return load_dataset(DatasetConfig(name="cifar10", val_size=5000), d), "real CIFAR-10"
        except DataError:
            pass
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(55000, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, size=55000).astype(np.int32)
    mean, std = np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32)
    return Dataset("random", x[:45000], y[:45000], x[45000:50000], y[45000:50000], x[50000:], y[50000:], 10, mean, std, 255.0), \
        "random CIFAR-10-shaped data"


def best_rate(fn, args, steps: int, repeats: int) -> float:
    """Best-of-`repeats` steps/s of the compiled `steps`-step call `fn(*args)` (after a warm-up)."""
    jax.block_until_ready(fn(*args))
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = max(best, steps / (time.perf_counter() - t))
    return best


def fixed_batch_program(trainer: Trainer, steps: int):
    """`steps` applications of the trainer's vmapped step to one pre-made, normalised batch."""

    def run(states, x, y):
        def body(states, _):
            states, metrics = jax.vmap(trainer._train_step)(states, x, y)
            return states, metrics["loss"]

        return jax.lax.scan(body, states, None, length=steps)

    return jax.jit(run)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200, help="steps per compiled call")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per program (the best counts)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--replicates", type=int, nargs="+", default=[1], help="numbers of vmapped replicates to measure")
    ap.add_argument("--model", default="resnet20", help="registry model (default resnet20)")
    args = ap.parse_args()

    ds, what = cifar_sized()
    model = build_model(ModelConfig(name=args.model, init="kaiming_normal", bn_scale_init="uniform"), ds.num_classes)
    opt = OptimizerConfig(name="momentum", lr=0.1, momentum=0.9, weight_decay=1e-4)
    spe = ds.num_train // args.batch_size
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), data: {what} ({ds.num_train} train), "
          f"{args.model}, batch {args.batch_size}, SGD momentum, crop+flip, {args.steps} steps per call, best of {args.repeats}")
    for R in args.replicates:
        tr = Trainer(model, ds, make_optimizer(opt), make_schedule(opt, total_steps=args.steps, steps_per_epoch=spe),
                     batch_size=args.batch_size, augment=random_crop_flip)
        keys = replicate_keys(0, R)
        v = tr.init_variables(keys["init"])
        states = tr.create_states(v, jax.vmap(M.ones_like)(v["params"]))

        # The full pipeline: the trainer's compiled multi-step call, started mid-epoch as in training.
        start = jnp.asarray(spe // 2, jnp.int32)
        pipe_args = (states, keys["data"], keys["aug"], tr.x_train, tr.y_train, start)
        pipeline = tr._run.lower(*pipe_args, n=args.steps).compile()

        # The same step on one pre-made batch: the first batch of every replicate, augmented once and
        # normalised, as float32 on the device.
        idx = np.stack([np.asarray(jax.random.permutation(k, ds.num_train))[: args.batch_size] for k in keys["data"]])
        raw = jnp.asarray(ds.x_train[idx])
        x = jax.jit(jax.vmap(random_crop_flip))(keys["aug"], raw)
        x = jax.block_until_ready(jnp.asarray(ds.normalize(x)))
        y = jnp.asarray(ds.y_train[idx])
        fixed = fixed_batch_program(tr, args.steps).lower(states, x, y).compile()

        imgs = R * args.batch_size
        fixed_ips = imgs * best_rate(fixed, (states, x, y), args.steps, args.repeats)
        pipe_ips = imgs * best_rate(pipeline, pipe_args, args.steps, args.repeats)
        print(f"R={R}: fixed batch {fixed_ips:10.1f} images/s   full pipeline {pipe_ips:10.1f} images/s   "
              f"pipeline/fixed = {pipe_ips / fixed_ips:.3f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
