#!/usr/bin/env python
"""Benchmark: BERT masked vs dense training throughput (tokens/s) in the same run.

Random token ids (batch x length, no padding) through the trainer's compiled multi-step call
(`Trainer.run`), a BERT of the given size classifying 2 classes with AdamW: the dense step (no mask
operations) and the masked step (gradients masked, weights re-masked after the update; the
encoder matrices Chen et al. prune at 20% global density). Prints tokens/s of both and their ratio
(goal: masked >= 0.95 x dense). `--dtype bfloat16` computes in bfloat16 (accelerators).

    python scripts/bench_bert.py                              # MiniLM-L6-H384 sizes, batch 32 x 64
    python scripts/bench_bert.py --layers 2 --hidden 64 --heads 2 --intermediate 128 --steps 5   # tiny
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from bench_common import best_rate, device_line, fresh_states, write_record
from lth.sparsity import masks as M
from lth.config.schema import ModelConfig, OptimizerConfig, PruningConfig
from lth.data import Dataset
from lth.models import build_model
from lth.models.bert import PRUNABLE
from lth.train.optim import make_optimizer, make_schedule
from lth.sparsity.pruning import prune
from lth.train.trainer import Trainer


def token_dataset(n: int, length: int, vocab: int) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.integers(5, vocab, size=(n, length)).astype(np.int32)
    x[:, 0] = 101
    y = rng.integers(0, 2, size=n).astype(np.int32)
    z = np.zeros(1, np.float32)
    return Dataset("random tokens", x, y, x[:64], y[:64], x[:64], y[:64], 2, z, z + 1, 1.0, tokens=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--intermediate", type=int, default=1536)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20, help="steps per timed run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    args = ap.parse_args()
    cfg = ModelConfig(name="bert", init="bert_normal", layers=args.layers, hidden=args.hidden, heads=args.heads,
                      intermediate=args.intermediate, vocab_size=30522, max_len=512)
    model = build_model(cfg, 2)
    if args.dtype != "float32":
        model = model.clone(dtype=jax.numpy.dtype(args.dtype))
    ds = token_dataset(max(4 * args.batch_size, args.batch_size * (args.steps + 1)), args.length, cfg.vocab_size)
    opt = OptimizerConfig(name="adamw", lr=2e-5, weight_decay=0.0)
    tokens = args.batch_size * args.length
    print(f"{device_line()}, BERT {args.layers}x{args.hidden} ({args.heads} heads, ff {args.intermediate}), "
          f"batch {args.batch_size} x {args.length} tokens, {args.dtype}, {args.steps} steps, best of {args.repeats}", flush=True)
    res = {}
    for masked in (False, True):
        tr = Trainer(model, ds, make_optimizer(opt), make_schedule(opt, total_steps=args.steps, steps_per_epoch=ds.num_train // args.batch_size),
                     batch_size=args.batch_size, masked=masked)
        states, keys = fresh_states(tr, 1)
        if masked:
            paths = M.prunable_paths(jax.tree.map(lambda x: x[0], states.params), PRUNABLE)
            m = prune(jax.tree.map(lambda x: x[0], states.params), jax.tree.map(lambda x: x[0], states.mask),
                      PruningConfig(fraction=0.8, scope="global"), paths)
            states = states.replace(mask=M.stack([m]))

        def go(tr=tr, states=states, keys=keys):
            return tr.run(states, keys, 0, args.steps)[0]

        res[masked] = best_rate(go, args.steps, args.repeats) * tokens
    ratio = res[True] / res[False]
    print(f"BERT: dense {res[False]:10.0f} tokens/s   masked {res[True]:10.0f} tokens/s   masked/dense = {ratio:.3f} "
          f"(goal >= 0.95)", flush=True)
    write_record(args.json, "bert", [{"dense_tokens_per_s": res[False], "masked_tokens_per_s": res[True], "masked_over_dense": ratio}],
                 layers=args.layers, hidden=args.hidden, batch_size=args.batch_size, length=args.length, dtype=args.dtype)


if __name__ == "__main__":
    main()
