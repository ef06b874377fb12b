#!/usr/bin/env python
"""Training speed on a CPU with and without the XLA flag lth sets (lth/integrations/xla_flags.py).

`import lth` turns XLA:CPU's YNNPACK reduction fusion off so that a member's results do not depend
on how many members are trained beside it. This prints the training throughput (steps/s) of a
model (the MNIST-1D MLP by default) with R members both ways, each in its own process (XLA reads flags once), alternating
`--rounds` times, and the ratio of the medians: the cost (or gain) of that choice on this machine.

    python scripts/bench_ynn.py                     # R = 2 and 4, 3 rounds
    python scripts/bench_ynn.py --replicates 8 --steps 1000
    python scripts/bench_ynn.py --model lenet5 --dataset mnist --replicates 2 --steps 100
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import jax
import lth  # noqa: F401  (applies lth.integrations.xla_flags unless LTH_XLA_FLAGS=keep)
from lth.lottery import levels as lottery
from lth.sparsity import masks as M
from lth.api import compose
from lth.config.schema import resolve
from lth.train.trainer import replicate_keys
R, steps, model, dataset = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
cfg = resolve(compose([f"dataset={dataset}", f"model={model}", f"replicates={R}"]))
_, _, tr = lottery.prepare(cfg)
keys = replicate_keys(0, R)
v = tr.init_variables(keys["init"])
st = tr.create_states(v, jax.vmap(M.ones_like)(v["params"]))
st, _ = tr.run(st, keys, 0, steps)  # compile + warm up
jax.block_until_ready(st.params)
t = time.perf_counter()
st, _ = tr.run(st, keys, steps, steps)
jax.block_until_ready(st.params)
print(json.dumps({"steps_per_s": steps / (time.perf_counter() - t)}))
"""


def measure(flag_off: bool, replicates: int, steps: int, model: str = "mlp", dataset: str = "mnist1d") -> float:
    env = dict(os.environ)
    if flag_off:
        env.pop("LTH_XLA_FLAGS", None)  # lth adds --xla_cpu_experimental_ynn_fusion_type=
    else:
        env["LTH_XLA_FLAGS"] = "keep"  # XLA's default: YNNPACK fuses reductions
    out = subprocess.run([sys.executable, "-c", CHILD, ROOT, str(replicates), str(steps), model, dataset], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["steps_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicates", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--dataset", default="mnist1d")
    args = ap.parse_args()
    if "ynn_fusion_type" in os.environ.get("XLA_FLAGS", ""):
        sys.exit("XLA_FLAGS already sets ynn_fusion_type: unset it to compare")
    import statistics

    print(f"{args.model} on {args.dataset}, {args.steps} steps per measurement, {args.rounds} alternating rounds (steps/s)")
    for R in args.replicates:
        lth_way, xla_way = [], []
        for _ in range(args.rounds):
            lth_way.append(measure(True, R, args.steps, args.model, args.dataset))
            xla_way.append(measure(False, R, args.steps, args.model, args.dataset))
        a, b = statistics.median(lth_way), statistics.median(xla_way)
        print(f"R={R}: lth (YNN reduction fusion off) {a:7.1f}   XLA default {b:7.1f}   ratio {a / b:.2f}   "
              f"(all: {[round(x) for x in lth_way]} vs {[round(x) for x in xla_way]})")


if __name__ == "__main__":
    main()
