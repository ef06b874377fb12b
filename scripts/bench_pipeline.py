#!/usr/bin/env python
"""Benchmark: the on-device CIFAR data pipeline against a fixed pre-made batch, in the same run.

ResNet-20 on CIFAR-10 (real CIFAR-10 when $LTH_DATA_DIR has it, else random pixels of the same
shape: 45,000 x 32 x 32 x 3 uint8), batch 128, SGD with momentum 0.9 and weight decay, every
replicate's mask all-ones (the masked step, as in a level-0 run). Both programs run the trainer's
train step (`Trainer._train_step`) `--steps` times, on the path training takes on this device
(one compiled `lax.scan` per call of the step of all replicates on accelerators, replicates one
after another inside it (`replicates_as="loop"`) unless `--replicates-as vmap`; for conv models on
a CPU a Python loop of compiled single-replicate steps, see `lth.train`):

- pipeline: the trainer's own multi-step call (`Trainer.run`): per-epoch permutation of every
  replicate's data order, gather of the batch from the uint8 training set on the device, random
  crop with 4-pixel zero padding + horizontal flip, normalisation, then the step;
- fixed: the step applied again and again to one already-normalised float32 batch per replicate,
  so none of the data work is done.

Prints training images/s (replicates x batch x steps / seconds, best of `--repeats`) for both and
their ratio (goal: pipeline >= 0.9 x fixed, i.e. the pipeline is not the bottleneck). With
`--replicates 1 8` it measures 1 and 8 replicates.

With real CIFAR-10 it also runs the pipeline on the training set streamed from disk
(`dataset.stream=true`: `lth.train.streamed`, batches read from the ArrayRecord copy under
`--stream-dir`, prepared first if missing, by a prefetch thread) and prints its images/s against
the in-memory pipeline's, in the same run (`--no-stream` skips it).

    python scripts/bench_pipeline.py [--steps 200] [--repeats 3] [--batch-size 128] [--replicates 1 8]
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

from bench_common import best_rate, device_line, fresh_states, real_or_random, write_record
from lth.config.schema import DatasetConfig, ModelConfig, OptimizerConfig
from lth.data import load_dataset
from lth.data.augment import random_crop_flip
from lth.models import build_model
from lth.train.optim import make_optimizer, make_schedule
from lth.train.trainer import Trainer


def fixed_batch_program(trainer: Trainer, steps: int):
    """`steps` applications of the trainer's step to one pre-made, normalised batch per replicate,
    on the trainer's path: a compiled lax.scan of the step of all replicates, or a Python loop of the
    compiled single-replicate step."""
    if trainer.scan:

        def run(states, x, y):
            def body(states, _):
                states, metrics = trainer.train_step_all(states, x, y)
                return states, metrics["loss"]

            return jax.lax.scan(body, states, None, length=steps, unroll=trainer.unroll)[0]

        return jax.jit(run)
    step = jax.jit(trainer._train_step)

    def loop(states, x, y):
        R = x.shape[0]
        reps = [jax.tree.map(lambda a: a[r], states) for r in range(R)]
        for _ in range(steps):
            reps = [step(reps[r], x[r], y[r])[0] for r in range(R)]
        return reps

    return loop


def streamed_trainer(tr: Trainer, stream_dir) -> Trainer:
    """A trainer like `tr` (same model, optimizer, batch, augmentation) on CIFAR-10 streamed from disk."""
    ds = load_dataset(DatasetConfig(name="cifar10", val_size=5000, stream=True, stream_dir=stream_dir), os.environ["LTH_DATA_DIR"])
    return Trainer(tr.model, ds, tr.tx, tr.lr_fn, batch_size=tr.batch_size, augment=tr.augment, unroll=tr.unroll,
                   replicates_as=tr.replicates_as)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200, help="steps per timed call")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per program (the best counts)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--replicates", type=int, nargs="+", default=[1], help="numbers of replicates to measure")
    ap.add_argument("--replicates-as", default=None, choices=["vmap", "loop"], help="default: the trainer's for this model and device")
    ap.add_argument("--model", default="resnet20", help="registry model (default resnet20)")
    ap.add_argument("--unroll", type=int, default=1, help="steps per iteration of the compiled loop (both programs)")
    ap.add_argument("--n-train", type=int, default=45000, help="training images of the random stand-in data")
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    ap.add_argument("--stream-dir", default=None, help="prepared copies for the streamed line (default ~/.cache/lth/stream)")
    ap.add_argument("--no-stream", action="store_true", help="skip the streamed-from-disk line")
    args = ap.parse_args()

    ds, what = real_or_random("cifar10", (32, 32, 3), args.n_train, 5000, 10000)
    model = build_model(ModelConfig(name=args.model, init="kaiming_normal", bn_scale_init="uniform"), ds.num_classes)
    opt = OptimizerConfig(name="momentum", lr=0.1, momentum=0.9, weight_decay=1e-4)
    spe = ds.num_train // args.batch_size
    print(f"{device_line()}, data: {what} ({ds.num_train} train), {args.model}, batch {args.batch_size}, "
          f"SGD momentum, crop+flip, {args.steps} steps per call, best of {args.repeats}")
    rows = []
    for R in args.replicates:
        tr = Trainer(model, ds, make_optimizer(opt), make_schedule(opt, total_steps=args.steps, steps_per_epoch=spe),
                     batch_size=args.batch_size, augment=random_crop_flip, unroll=args.unroll,
                     replicates_as=args.replicates_as)
        states, keys = fresh_states(tr, R)

        # The full pipeline: the trainer's multi-step call, started mid-epoch as in training.
        start = spe // 2
        pipeline = lambda: tr.run(states, keys, start, args.steps)[0]  # noqa: E731

        # The same step on one pre-made batch: the first batch of every replicate, augmented once and
        # normalised, as float32 on the device.
        idx = np.stack([np.asarray(jax.random.permutation(k, ds.num_train))[: args.batch_size] for k in keys["data"]])
        x = jax.jit(jax.vmap(random_crop_flip))(keys["aug"], jnp.asarray(ds.x_train[idx]))
        x = jax.block_until_ready(jnp.asarray(ds.normalize(x)))
        y = jnp.asarray(ds.y_train[idx])
        program = fixed_batch_program(tr, args.steps)
        fixed = lambda: program(states, x, y)  # noqa: E731

        imgs = R * args.batch_size
        fixed_ips = imgs * best_rate(fixed, args.steps, args.repeats)
        pipe_ips = imgs * best_rate(pipeline, args.steps, args.repeats)
        rows.append({"replicates": R, "fixed_images_per_s": fixed_ips, "pipeline_images_per_s": pipe_ips,
                     "pipeline_over_fixed": pipe_ips / fixed_ips, "pipeline_steps_per_s": pipe_ips / imgs,
                     "path": ("one lax.scan per call" if tr.scan else "Python loop of compiled steps")
                     + f", replicates by {tr.replicates_as}"})
        print(f"R={R}: fixed batch {fixed_ips:10.1f} images/s   full pipeline {pipe_ips:10.1f} images/s   "
              f"pipeline/fixed = {pipe_ips / fixed_ips:.3f} (goal >= 0.9)   "
              f"[{rows[-1]['path']}]", flush=True)
        if not args.no_stream and what.startswith("real"):
            streamed = streamed_trainer(tr, args.stream_dir)
            st_ips = imgs * best_rate(lambda: streamed.run(states, keys, start, args.steps)[0], args.steps, args.repeats)
            rows[-1].update(streamed_images_per_s=st_ips, streamed_over_in_memory=st_ips / pipe_ips)
            print(f"R={R}: streamed from disk {st_ips:10.1f} images/s   in memory {pipe_ips:10.1f} images/s   "
                  f"streamed/in memory = {st_ips / pipe_ips:.3f}", flush=True)
    write_record(args.json, "pipeline", rows, data=what, model=args.model, batch_size=args.batch_size, steps=args.steps)


if __name__ == "__main__":
    main()
