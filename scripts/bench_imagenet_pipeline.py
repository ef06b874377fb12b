#!/usr/bin/env python
"""Benchmark: the on-device ImageNet pipeline (random-resized crop + flip) against a fixed pre-made
batch, in the same run.

ResNet-50 (or `--model resnet18`) on random uint8 images stored as lth prepares ImageNet (256 x 256 x 3,
`dataset.image_size=256`), cropped to 224 (`dataset.crop=224`), 1,000 classes, SGD with momentum
and weight decay, every replicate's mask all-ones. Both programs run the trainer's train step on the
path training takes on this device (`scripts/bench_pipeline.py` says which):

- pipeline: `Trainer.run`, i.e. the per-epoch permutation, the gather of the batch from the uint8
  training set, `lth.data.imagenet_augment.random_resized_crop_flip` (per image a window of 8-100%
  of the area, aspect 3/4-4/3, resized to 224 bilinear + antialiased, flipped), normalisation, step;
- fixed: the step applied again and again to one already-augmented, normalised float32 batch.

Prints training images/s of both and their ratio (goal: pipeline >= 0.9 x fixed), and the
augmentation alone (compiled, on a batch already on the device) in images/s.

    python scripts/bench_imagenet_pipeline.py [--steps 3] [--repeats 2] [--batch-size 8] [--model resnet50]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from bench_common import best_rate, device_line, fresh_states, write_record
from bench_pipeline import fixed_batch_program
from lth.config.schema import ModelConfig, OptimizerConfig
from lth.data.dataset import Dataset
from lth.data.imagenet_augment import center_crop, random_resized_crop_flip
from lth.models import build_model
from lth.train.optim import make_optimizer, make_schedule
from lth.train.trainer import Trainer

STORED, CROP, CLASSES = 256, 224, 1000


def imagenet_shaped(n_train: int, n_test: int) -> Dataset:
    """Random uint8 pixels and labels shaped as prepared ImageNet: training images 256 x 256, the
    test images their centre 224 (throughput does not depend on the pixels)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n_train + n_test, STORED, STORED, 3), dtype=np.uint8)
    y = rng.integers(0, CLASSES, size=n_train + n_test).astype(np.int32)
    test = np.ascontiguousarray(center_crop(x[n_train:], CROP))
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    return Dataset("random-imagenet", x[:n_train], y[:n_train], test[:0], y[:0], test, y[n_train:], CLASSES, mean, std,
                   255.0, crop=CROP)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3, help="steps per timed call")
    ap.add_argument("--repeats", type=int, default=2, help="timed calls per program (the best counts)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--model", default="resnet50", help="registry model (resnet50 or resnet18)")
    ap.add_argument("--n-train", type=int, default=64, help="training images of the random data")
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    args = ap.parse_args()

    ds = imagenet_shaped(args.n_train, 8)
    model = build_model(ModelConfig(name=args.model, init="kaiming_normal"), CLASSES)
    opt = OptimizerConfig(name="momentum", lr=0.4, momentum=0.9, weight_decay=1e-4)
    spe = ds.num_train // args.batch_size
    augment = lambda key, x: random_resized_crop_flip(key, x, CROP)  # noqa: E731
    tr = Trainer(model, ds, make_optimizer(opt), make_schedule(opt, total_steps=args.steps, steps_per_epoch=spe),
                 batch_size=args.batch_size, augment=augment)
    print(f"{device_line()}, data: random {STORED}x{STORED} uint8 cropped to {CROP} ({ds.num_train} train), {args.model}, "
          f"batch {args.batch_size}, {args.steps} steps per call, best of {args.repeats}", flush=True)
    states, keys = fresh_states(tr, 1)
    start = spe // 2
    pipeline = lambda: tr.run(states, keys, start, args.steps)[0]  # noqa: E731

    idx = np.stack([np.asarray(jax.random.permutation(k, ds.num_train))[: args.batch_size] for k in keys["data"]])
    raw = jnp.asarray(ds.x_train[idx])  # (1, batch, 256, 256, 3)
    x = jax.jit(jax.vmap(augment))(keys["aug"], raw)
    x = jax.block_until_ready(jnp.asarray(ds.normalize(x)))
    y = jnp.asarray(ds.y_train[idx])
    program = fixed_batch_program(tr, args.steps)
    fixed = lambda: program(states, x, y)  # noqa: E731

    aug_only = jax.jit(lambda k, b: random_resized_crop_flip(k, b, CROP))
    aug_ips = args.batch_size * best_rate(lambda: aug_only(keys["aug"][0], raw[0]), 1, max(args.repeats, 3))
    fixed_ips = args.batch_size * best_rate(fixed, args.steps, args.repeats)
    pipe_ips = args.batch_size * best_rate(pipeline, args.steps, args.repeats)
    row = {"fixed_images_per_s": fixed_ips, "pipeline_images_per_s": pipe_ips, "pipeline_over_fixed": pipe_ips / fixed_ips,
           "augment_only_images_per_s": aug_ips, "path": "one lax.scan per call" if tr.scan else "Python loop of compiled steps"}
    print(f"fixed batch {fixed_ips:8.2f} images/s   full pipeline {pipe_ips:8.2f} images/s   pipeline/fixed = "
          f"{pipe_ips / fixed_ips:.3f} (goal >= 0.9)   augmentation alone {aug_ips:8.1f} images/s   [{row['path']}]", flush=True)
    write_record(args.json, "imagenet_pipeline", [row], model=args.model, batch_size=args.batch_size, steps=args.steps)


if __name__ == "__main__":
    main()
