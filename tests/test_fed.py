"""Batches fed from the host (issue 30, `lth.train.fed`): a training set streamed from disk on
several devices. Members split over 2 devices, each device fed and read for its own members only,
train bit for bit as on one device; data parallel over 2 devices, each step's batch split over
them, agrees with in-memory data parallel to rounding (also with a last partial batch that does not
split, fed whole) and never puts the training set on a device. (Over 2 processes:
tests/test_launch.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys, jax, optax
sys.path.insert(0, sys.argv[1] + "/tests")
from conftest import make_tiny_dataset
from fed_data import reads, streamed, write_streamed
from lth.config.schema import DevicesConfig, ModelConfig
from lth.models import build_model
from lth.sparsity import masks as M
from lth.train import sharding
from lth.train.trainer import Trainer, replicate_keys, train_level
ds = make_tiny_dataset()
path = write_streamed(ds.x_train, sys.argv[2])
model = build_model(ModelConfig(name="mlp", widths=[16]), ds.num_classes)

def train(data, shard, R, count=0, drop_last=True):
    tr = Trainer(model, data, optax.inject_hyperparams(optax.sgd)(learning_rate=0.1), lambda s: 0.1, batch_size=100,
                 drop_last=drop_last)
    keys = replicate_keys(0, R)
    v = tr.init_variables(keys["init"])
    st = tr.create_states(v, jax.vmap(M.ones_like)(v["params"]))
    place = sharding.placement(DevicesConfig(shard=shard, count=count), tr)
    st, hist, _ = train_level(tr, st, keys, start=0, end=30, eval_every=10, place=place)
    mesh = tr.member_mesh if shard == "members" else (tr.batch_sharding.mesh if tr.batch_sharding else None)
    return {"devices": 0 if mesh is None else int(mesh.devices.size), "reads": reads(data),
            "on_device": "_x_train" in tr.__dict__, "acc": hist.evals[-1]["test/accuracy"].tolist(),
            "loss": hist.evals[-1]["test/loss"].tolist()}

out = {"members1": train(streamed(ds, path), "members", 4, count=1), "members2": train(streamed(ds, path), "members", 4),
       "batch_memory": train(ds, "batch", 2), "batch_streamed": train(streamed(ds, path), "batch", 2)}
odd = make_tiny_dataset(n_train=601)  # drop_last=False: every 7th batch has 1 example, fed whole
path = write_streamed(odd.x_train, sys.argv[2] + "-odd")
out["odd_memory"], out["odd_streamed"] = (train(d, "batch", 2, drop_last=False) for d in (odd, streamed(odd, path)))
print("OUT", json.dumps(out))
"""


def test_a_streamed_set_on_two_devices(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip()}
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO), str(tmp_path / "stream")], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads([line for line in res.stdout.splitlines() if line.startswith("OUT ")][-1][4:])
    one, two = out["members1"], out["members2"]
    assert (one["devices"], two["devices"]) == (0, 2)
    assert two["acc"] == one["acc"] and two["loss"] == one["loss"]  # bit for bit
    assert one["reads"] == [[4, 100]] and two["reads"] == [[2, 100]]  # each device reads its 2 members' batches
    mem, st = out["batch_memory"], out["batch_streamed"]
    assert mem["devices"] == st["devices"] == 2 and st["reads"] == [[2, 100]] and not st["on_device"]
    assert max(abs(a - b) for a, b in zip(mem["acc"], st["acc"])) <= 0.02
    assert max(abs(a - b) for a, b in zip(mem["loss"], st["loss"])) <= 1e-3
    mem, st = out["odd_memory"], out["odd_streamed"]
    assert st["devices"] == 2 and st["reads"] == [[2, 100], [2, 1]]
    assert max(abs(a - b) for a, b in zip(mem["acc"], st["acc"])) <= 0.02
    assert max(abs(a - b) for a, b in zip(mem["loss"], st["loss"])) <= 1e-3
