#!/usr/bin/env python
"""Training speed of one run over 2 local processes vs 1 process with 2 devices (issue 30).

Prints steps/s of the MNIST-1D MLP (2 replicates, the preset's batch size) with `devices.shard`
members and batch, each measured in a fresh job: 1 process with 2 CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=2`), and 2 processes of 1 device each started by
`python -m lth.launch --processes 2` (gloo between them). Compile and a warm-up call come first.

    python scripts/bench_processes.py                # 300 steps each
    python scripts/bench_processes.py --steps 1000 --replicates 4
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
from lth.integrations import distributed
distributed.maybe_initialize()
import jax
from lth.api import compose
from lth.config.schema import DevicesConfig, resolve
from lth.lottery import levels as lottery
from lth.sparsity import masks as M
from lth.train import sharding
from lth.train.trainer import replicate_keys
R, steps, shard = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cfg = resolve(compose(["dataset=mnist1d", "model=mlp", f"replicates={R}"]))
_, _, tr = lottery.prepare(cfg)
keys = replicate_keys(0, R)
v = tr.init_variables(keys["init"])
st = tr.create_states(v, jax.vmap(M.ones_like)(v["params"]))
st, keys = sharding.placement(DevicesConfig(shard=shard), tr)(st, keys)
st, _ = tr.run(st, keys, 0, steps)  # compile + warm up
jax.block_until_ready(jax.tree.leaves(st.params))
t = time.perf_counter()
st, _ = tr.run(st, keys, steps, steps)
jax.block_until_ready(jax.tree.leaves(st.params))
if jax.process_index() == 0:
    print(json.dumps({"steps_per_s": steps / (time.perf_counter() - t), "batch": tr.batch_size}))
"""


def measure(processes: int, shard: str, replicates: int, steps: int) -> dict:
    env = {**os.environ, "PYTHONPATH": ROOT}
    args = ["-c", CHILD, ROOT, str(replicates), str(steps), shard]
    if processes == 1:
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        cmd = [sys.executable, *args]
    else:
        env.pop("XLA_FLAGS", None)
        cmd = [sys.executable, "-m", "lth.launch", "--processes", str(processes), "--", *args]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--replicates", type=int, default=2)
    a = p.parse_args()
    for shard in ("members", "batch"):
        one, two = (measure(n, shard, a.replicates, a.steps) for n in (1, 2))
        print(f"devices.shard={shard:8s} 1 process x 2 devices: {one['steps_per_s']:7.1f} steps/s   "
              f"2 processes x 1 device: {two['steps_per_s']:7.1f} steps/s   (batch {one['batch']}, R={a.replicates})")


if __name__ == "__main__":
    main()
