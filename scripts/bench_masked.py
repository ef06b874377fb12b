#!/usr/bin/env python
"""Benchmark: masked vs dense training throughput, measured in the same run.

LeNet-300-100 on MNIST-sized data (55,000 x 28 x 28, real MNIST when $LTH_DATA_DIR has it, else
random pixels of the same shape), batch 128, plain SGD, the trainer's compiled multi-step call.
Prints steps/s for the dense step (no mask operations) and for the masked step (gradient masked,
weights re-masked after the update; mask at 20% density), their ratio (goal: masked >= 0.95 x
dense), and the achieved GFLOP/s (XLA's own FLOP count of the compiled program). With
`--replicates 1 4` it also shows how R vmapped replicates scale against one.

    python scripts/bench_masked.py [--steps 2000] [--repeats 5] [--replicates 1 4]
"""

from __future__ import annotations

import argparse

import jax

from bench_common import best_rate, device_line, fresh_states, real_or_random
from lth import masks as M
from lth.config import ModelConfig, OptimizerConfig, PruningConfig
from lth.models import build_model
from lth.optim import make_optimizer, make_schedule
from lth.pruning import prune
from lth.train import Trainer


def step_flops(trainer: Trainer, states, batch_size: int) -> float:
    """XLA's FLOP count of one (vmapped) training step. (The scanned multi-step program is a
    while loop, whose body XLA's cost analysis counts once, so the step is compiled alone.)"""
    R = jax.tree.leaves(states.params)[0].shape[0]
    x = jax.numpy.zeros((R, batch_size, *trainer.dataset.input_shape), jax.numpy.float32)
    y = jax.numpy.zeros((R, batch_size), jax.numpy.int32)
    cost = jax.jit(jax.vmap(trainer._train_step)).lower(states, x, y).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan")))


def measure(trainer: Trainer, states, keys, steps: int, repeats: int) -> tuple[float, float]:
    """Best-of-`repeats` steps/s of `trainer.run` over `steps` steps (the path training takes on
    this device: one lax.scan, or a loop of compiled steps for conv models on CPU), and FLOPs/step."""
    flops = step_flops(trainer, states, trainer.batch_size)
    return best_rate(lambda: trainer.run(states, keys, 0, steps)[0], steps, repeats), flops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--replicates", type=int, nargs="+", default=[1])
    args = ap.parse_args()

    ds, what = real_or_random("mnist", (28, 28, 1), 55000, 5000, 10000)
    model = build_model(ModelConfig(name="lenet_300_100", init="glorot_normal"), 10)
    opt = OptimizerConfig(name="sgd", lr=0.1)
    spe = ds.num_train // args.batch_size
    print(f"{device_line()}, data: {what}, LeNet-300-100, batch {args.batch_size}, SGD, "
          f"{args.steps} steps per call, best of {args.repeats}")
    base = None
    for R in args.replicates:
        rows = {}
        for masked in (False, True):
            tr = Trainer(model, ds, make_optimizer(opt), make_schedule(opt, total_steps=args.steps, steps_per_epoch=spe),
                         batch_size=args.batch_size, masked=masked)
            states, keys = fresh_states(tr, R)
            if masked:  # a real 20%-density mask (global magnitude pruning, 7 levels at 20%)
                paths = M.prunable_paths(jax.tree.map(lambda x: x[0], states.params), ["kernel$"])
                cfg = PruningConfig(fraction=1 - 0.8**7, scope="global")
                m = M.stack([prune(p, mm, cfg, paths) for p, mm in zip(M.unstack(states.params, R), M.unstack(states.mask, R))])
                states = states.replace(mask=m)
            rows[masked] = measure(tr, states, keys, args.steps, args.repeats)
        (dense, fl_d), (masked_sps, fl_m) = rows[False], rows[True]
        print(f"R={R}: dense {dense:9.1f} steps/s ({dense * fl_d / 1e9:6.1f} GFLOP/s)   "
              f"masked {masked_sps:9.1f} steps/s ({masked_sps * fl_m / 1e9:6.1f} GFLOP/s)   "
              f"masked/dense = {masked_sps / dense:.3f}   replicate-steps/s {R * masked_sps:9.1f}"
              + (f" ({R * masked_sps / base:.2f}x one replicate)" if base else "")
              + f"   [{'one lax.scan per call' if tr.scan else 'Python loop of compiled steps'}]")
        base = base or R * masked_sps


if __name__ == "__main__":
    main()
