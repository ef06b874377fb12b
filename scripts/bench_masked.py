#!/usr/bin/env python
"""Benchmark: masked vs dense training throughput, and R vmapped replicates vs one, in the same run.

LeNet-300-100 on MNIST-sized data (55,000 x 28 x 28, real MNIST when $LTH_DATA_DIR has it, else
random pixels of the same shape), the trainer's compiled multi-step call (`Trainer.run`, the path
training takes on this device). For each number of replicates R it prints steps/s of the dense step
(no mask operations) and of the masked step (gradient masked, weights re-masked after the update;
mask at 20% density), their ratio (goal: masked >= 0.95 x dense), replicate-steps/s and their
scaling against the first R measured, and the achieved FLOP rate (XLA's own FLOP count of the
compiled step; cost analysis counts a pruned weight's zero multiplications too).

At the first R it also measures training with gradual magnitude pruning inside the compiled loop
(`lth.sparsity.gradual`, `Trainer(mask_update=...)`): from dense to 20% density (global) over the timed
window, the mask recomputed every `--gradual-every` steps (a `lax.cond` on the step; default 100,
0 skips it), and prints its steps/s against the fixed-mask masked step (goal: >= 0.9 x). Likewise
RigL (`lth.sparsity.dynamic`, Evci et al. 2020): a random 20%-density mask per tensor moved every
`--rigl-every` steps over the timed window (drop by magnitude, grow by |dense gradient|, moments of
grown weights reset; default 100, RigL's ΔT; 0 skips it), against the same masked step (goal >= 0.9 x).

    python scripts/bench_masked.py [--steps 2000] [--repeats 5] [--replicates 1 4]
    python scripts/bench_masked.py --optimizer adam --batch-size 60 --replicates 1 8 32 128   # Frankle & Carbin's setting
"""

from __future__ import annotations

import argparse

import jax

from bench_common import best_rate, device_line, fresh_states, real_or_random, write_record
from lth.sparsity import masks as M
from lth.config.schema import ModelConfig, OptimizerConfig, PruningConfig
from lth.sparsity.dynamic import DynamicSparse, initial_masks
from lth.sparsity.gradual import GradualPruning
from lth.models import build_model
from lth.train.optim import make_optimizer, make_schedule
from lth.sparsity.pruning import prune
from lth.train.trainer import Trainer


def step_flops(trainer: Trainer, states, batch_size: int) -> float:
    """XLA's FLOP count of one (vmapped) training step. (The scanned multi-step program is a
    while loop, whose body XLA's cost analysis counts once, so the step is compiled alone.)"""
    R = jax.tree.leaves(states.params)[0].shape[0]
    x = jax.numpy.zeros((R, batch_size, *trainer.dataset.input_shape), jax.numpy.float32)
    y = jax.numpy.zeros((R, batch_size), jax.numpy.int32)
    cost = jax.jit(trainer.train_step_all).lower(states, x, y).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan")))


def measure(trainer: Trainer, states, keys, steps: int, chunk: int, repeats: int, flops: bool = True) -> tuple[float, float]:
    """Best-of-`repeats` steps/s of `steps` steps run as calls of `chunk` steps each (the metrics
    of every call fetched to the host, as `train_level` does), and FLOPs/step (nan unless `flops`)."""
    flops = step_flops(trainer, states, trainer.batch_size) if flops else float("nan")

    def go():
        s = states
        for start in range(0, steps, chunk):
            s, metrics = trainer.run(s, keys, start, min(chunk, steps - start))
        return s

    return best_rate(go, steps, repeats), flops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2000, help="steps per timed run")
    ap.add_argument("--chunk", type=int, default=0, help="steps per compiled call (default: all of --steps in one call)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"], help="sgd (lr 0.1) or adam (lr 1.2e-3)")
    ap.add_argument("--replicates", type=int, nargs="+", default=[1])
    ap.add_argument("--unroll", type=int, default=1, help="steps per iteration of the compiled loop")
    ap.add_argument("--perms", default=None, choices=["precomputed", "in_loop"], help="default: the device's")
    ap.add_argument("--replicates-as", default=None, choices=["vmap", "loop"], help="default: the trainer's for this model and device")
    ap.add_argument("--gradual-every", type=int, default=100,
                    help="steps between in-loop gradual mask updates, measured at the first R (0: not measured)")
    ap.add_argument("--rigl-every", type=int, default=100,
                    help="steps between in-loop RigL mask updates, measured at the first R (0: not measured)")
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    args = ap.parse_args()
    chunk = args.chunk or args.steps

    ds, what = real_or_random("mnist", (28, 28, 1), 55000, 5000, 10000)
    model = build_model(ModelConfig(name="lenet_300_100", init="glorot_normal"), 10)
    opt = OptimizerConfig(name="sgd", lr=0.1) if args.optimizer == "sgd" else OptimizerConfig(name="adam", lr=1.2e-3)
    spe = ds.num_train // args.batch_size
    print(f"{device_line()}, data: {what}, LeNet-300-100, batch {args.batch_size}, {args.optimizer}, "
          f"{args.steps} steps as calls of {chunk}, best of {args.repeats}", flush=True)
    base, rows = None, []
    for R in args.replicates:
        res = {}
        for masked in (False, True):
            tr = Trainer(model, ds, make_optimizer(opt), make_schedule(opt, total_steps=args.steps, steps_per_epoch=spe),
                         batch_size=args.batch_size, masked=masked, perms=args.perms, unroll=args.unroll,
                         replicates_as=args.replicates_as)
            states, keys = fresh_states(tr, R)
            if masked:  # a real 20%-density mask (global magnitude pruning, 7 levels at 20%)
                paths = M.prunable_paths(jax.tree.map(lambda x: x[0], states.params), ["kernel$"])
                cfg = PruningConfig(fraction=1 - 0.8**7, scope="global")
                m = M.stack([prune(p, mm, cfg, paths) for p, mm in zip(M.unstack(states.params, R), M.unstack(states.mask, R))])
                states = states.replace(mask=m)
            res[masked] = measure(tr, states, keys, args.steps, chunk, args.repeats)
        gradual = None
        if args.gradual_every > 0 and R == args.replicates[0]:
            # Dense to 20% density (global over the kernels) across the timed window, updates at
            # 0, Δt, 2Δt, ... and at the window's last step, so the last update is timed too.
            paths = M.prunable_paths(jax.tree.map(lambda x: x[0], states.params), ["kernel$"])
            gp = GradualPruning.build(paths, 0.2, scope="global", begin=0, end=max(args.steps - 1, 0), every=args.gradual_every)
            tr_g = Trainer(model, ds, make_optimizer(opt), make_schedule(opt, total_steps=args.steps, steps_per_epoch=spe),
                           batch_size=args.batch_size, perms=args.perms, unroll=args.unroll,
                           replicates_as=args.replicates_as, mask_update=gp)
            states_g, keys_g = fresh_states(tr_g, R)
            gradual = (measure(tr_g, states_g, keys_g, args.steps, chunk, args.repeats, flops=False)[0], gp)
        rigl = None
        if args.rigl_every > 0 and R == args.replicates[0]:
            # RigL at 20% density per tensor from a random mask, updates at 0, Δt, 2Δt, ... < the window's end.
            one = jax.tree.map(lambda x: x[0], states.params)
            paths = M.prunable_paths(one, ["kernel$"])
            shapes = {p: M.flatten(one)[p].shape for p in paths}
            dyn = DynamicSparse.build(shapes, 0.2, method="rigl", begin=0, end=args.steps, every=args.rigl_every)
            tr_r = Trainer(model, ds, make_optimizer(opt), make_schedule(opt, total_steps=args.steps, steps_per_epoch=spe),
                           batch_size=args.batch_size, perms=args.perms, unroll=args.unroll,
                           replicates_as=args.replicates_as, mask_update=dyn)
            states_r, keys_r = fresh_states(tr_r, R)
            states_r = states_r.replace(mask=initial_masks(dyn, states_r.mask, 0, range(R)))
            states_r = states_r.replace(params=M.apply_mask(states_r.params, states_r.mask))
            rigl = (measure(tr_r, states_r, keys_r, args.steps, chunk, args.repeats, flops=False)[0], dyn)
        (dense, fl_d), (masked_sps, fl_m) = res[False], res[True]
        base = base or (args.replicates[0], args.replicates[0] * masked_sps)
        row = {"replicates": R, "dense_steps_per_s": dense, "masked_steps_per_s": masked_sps,
               "masked_over_dense": masked_sps / dense, "replicate_steps_per_s": R * masked_sps,
               "scaling": R * masked_sps / base[1], "scaling_base_replicates": base[0],
               "dense_tflops": dense * fl_d / 1e12, "masked_tflops": masked_sps * fl_m / 1e12,
               "path": ("one lax.scan per call" if tr.scan else "Python loop of compiled steps") + f", replicates by {tr.replicates_as}"}
        rows.append(row)
        print(f"R={R}: dense {dense:9.1f} steps/s ({row['dense_tflops'] * 1e3:8.1f} GFLOP/s)   "
              f"masked {masked_sps:9.1f} steps/s ({row['masked_tflops'] * 1e3:8.1f} GFLOP/s)   "
              f"masked/dense = {row['masked_over_dense']:.3f}   replicate-steps/s {R * masked_sps:10.1f} "
              f"({row['scaling']:.2f}x R={base[0]})   [{row['path']}]", flush=True)
        if gradual is not None:
            sps, gp = gradual
            row.update(gradual_steps_per_s=sps, gradual_over_masked=sps / masked_sps, gradual_every=gp.every,
                       gradual_updates=len(gp.update_steps()))
            print(f"R={R}: gradual pruning in the loop (density 1 -> 0.2, mask recomputed every {gp.every} steps, "
                  f"{len(gp.update_steps())} updates in {args.steps} steps) {sps:9.1f} steps/s   "
                  f"gradual/masked = {sps / masked_sps:.3f} (goal >= 0.9)", flush=True)
        if rigl is not None:
            sps, dyn = rigl
            row.update(rigl_steps_per_s=sps, rigl_over_masked=sps / masked_sps, rigl_every=dyn.every,
                       rigl_updates=len(dyn.update_steps()))
            print(f"R={R}: RigL in the loop (density 0.2 per tensor, mask moved every {dyn.every} steps, "
                  f"{len(dyn.update_steps())} updates in {args.steps} steps) {sps:9.1f} steps/s   "
                  f"rigl/masked = {sps / masked_sps:.3f} (goal >= 0.9)", flush=True)
    write_record(args.json, "masked", rows, data=what, batch_size=args.batch_size, optimizer=args.optimizer,
                 steps=args.steps, chunk=chunk, unroll=args.unroll, perms=tr.perms)


if __name__ == "__main__":
    main()
