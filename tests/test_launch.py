"""One run over several processes (issue 30): `python -m lth.launch` (lth.integrations.launch),
jax.distributed on the CPU over gloo (lth.integrations.distributed), members and data parallel over
the devices of all processes (lth.train.multiprocess) and one writer (lth.runs.writer)."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
TWO_DEVICES = "--xla_force_host_platform_device_count=2"


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS",)}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return {**env, **extra}


def _launch(n, *command, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "lth.launch", "--processes", str(n), "--", *command], cwd=REPO,
                          env=env or _env(), capture_output=True, text=True, **kw)


# -- the launcher ---------------------------------------------------------------------------------
def test_the_launcher_gives_each_process_the_job_settings():
    from lth.integrations import launch

    envs = launch.environments(3, 1234, base={"A": "1"})
    assert [e["LTH_PROCESS_ID"] for e in envs] == ["0", "1", "2"]
    assert all(e["LTH_DISTRIBUTED"] == "1" and e["LTH_NUM_PROCESSES"] == "3" and e["LTH_COORDINATOR"] == "127.0.0.1:1234"
               and e["A"] == "1" for e in envs)
    with pytest.raises(SystemExit):
        launch.parse(["--processes", "0", "--", "x.py"])
    with pytest.raises(SystemExit):
        launch.parse(["--processes", "2"])
    assert launch.parse(["--processes", "2", "--", "x.py", "a=1"]).command == ["x.py", "a=1"]


def test_a_failed_process_stops_the_others_and_the_launcher_exits_with_its_status(tmp_path):
    pid = tmp_path / "pid"
    code = (f"import os, sys, time\nif os.environ['LTH_PROCESS_ID'] == '0':\n    open({str(pid)!r}, 'w').write(str(os.getpid()))\n"
            "    time.sleep(120)\nelse:\n    time.sleep(1); sys.exit(3)")
    t0 = time.time()
    res = _launch(2, "-c", code, timeout=60)
    assert res.returncode == 3 and "process 1 of 2 exited with status 3" in res.stderr
    assert time.time() - t0 < 30
    with pytest.raises(ProcessLookupError):  # process 0 was stopped
        os.kill(int(pid.read_text()), 0)


def test_a_refused_run_over_two_processes_ends_at_once_with_status_2(tmp_path):
    """Both processes refuse the bad setting and exit without waiting for each other at JAX's
    shutdown (minutes otherwise: `lth.integrations.distributed.exit_now`)."""
    t0 = time.time()
    res = _launch(2, "experiments/lottery.py", f"paths.runs_dir={tmp_path}", "devices.shard=rows", timeout=300)
    assert res.returncode == 2 and "devices.shard='rows'" in res.stderr, res.stderr[-2000:]
    assert time.time() - t0 < 120 and not any(tmp_path.iterdir())


def test_partial_explicit_settings_are_refused():
    from lth.config.schema import ConfigError
    from lth.integrations import distributed

    with pytest.raises(ConfigError, match="LTH_COORDINATOR set without LTH_NUM_PROCESSES, LTH_PROCESS_ID"):
        distributed.maybe_initialize({"LTH_DISTRIBUTED": "1", "LTH_COORDINATOR": "127.0.0.1:1"})


def test_only_the_writing_process_writes(tmp_path, monkeypatch):
    from lth.runs import checkpoints, writer
    from lth.runs.run_dir import RunDir, write_atomic

    monkeypatch.setattr(writer, "_process", 1)
    monkeypatch.setattr(writer, "_count", 2)
    write_atomic(str(tmp_path / "a" / "x.txt"), "x")
    checkpoints.save(str(tmp_path / "ck"), {"w": [1.0]})
    rd = RunDir(str(tmp_path / "run"), "h")
    rd.create()
    rd.lock().close()
    assert list(tmp_path.iterdir()) == []


# -- training over processes ----------------------------------------------------------------------
TRAIN = r"""
import json, sys, jax
sys.path.insert(0, sys.argv[1] + "/tests")
from lth.integrations import distributed
distributed.maybe_initialize()
import optax
from conftest import make_tiny_dataset
from fed_data import counted, reads, streamed
from lth.config.schema import DevicesConfig, ModelConfig
from lth.models import build_model
from lth.sparsity import masks as M
from lth.train import sharding
from lth.train.trainer import Trainer, replicate_keys, train_level
ds = make_tiny_dataset()
model = build_model(ModelConfig(name="mlp", widths=[16]), ds.num_classes)
out = {}
one = sys.argv[2] == "one"  # one process with 2 devices: members on 1 device (devices.count=1), batches over 2
for name, R, data in (("members", 4, ds), ("batch", 2, counted(ds)), ("stream_members", 4, streamed(ds, sys.argv[3])),
                      ("stream_batch", 2, streamed(ds, sys.argv[3]))):
    shard = name.split("_")[-1]
    tr = Trainer(model, data, optax.inject_hyperparams(optax.sgd)(learning_rate=0.1), lambda s: 0.1, batch_size=100)
    keys = replicate_keys(0, R)
    v = tr.init_variables(keys["init"])
    st = tr.create_states(v, jax.vmap(M.ones_like)(v["params"]))
    place = sharding.placement(DevicesConfig(shard=shard, count=1 if one and shard == "members" else 0), tr)
    st, hist, _ = train_level(tr, st, keys, start=0, end=30, eval_every=10, place=place)
    mesh = tr.member_mesh if shard == "members" else (tr.batch_sharding.mesh if tr.batch_sharding else None)
    out[name] = {"devices": 0 if mesh is None else int(mesh.devices.size),
                 "processes": 0 if mesh is None else len({d.process_index for d in mesh.devices.flat}),
                 "reads": reads(data), "on_device": "_x_train" in tr.__dict__,
                 "acc": hist.evals[-1]["test/accuracy"].tolist(), "loss": hist.evals[-1]["test/loss"].tolist()}
print("OUT", jax.process_index(), json.dumps(out))
"""


def _out(text):
    return json.loads([line for line in text.splitlines() if line.startswith("OUT 0 ")][-1][6:])


@pytest.mark.slow  # ~70 s; ../shared/checks/many-hosts runs the same comparison through the CLI
def test_members_over_two_processes_train_bit_for_bit_and_batches_to_rounding(tmp_path):
    """Members split over 2 processes (one device each) train exactly as in one process on one
    device; data parallel over 2 processes, each process reading only its half of every batch
    (never the whole training set, which stays off the devices), agrees with data parallel over 2
    devices of one. The same with the training set streamed from disk: members bit for bit, data
    parallel exactly as in memory over 2 processes."""
    from fed_data import write_streamed
    from conftest import make_tiny_dataset

    path = write_streamed(make_tiny_dataset().x_train, str(tmp_path / "stream"))
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    run = lambda cmd, env: subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs = [run([sys.executable, "-m", "lth.launch", "--processes", "2", "--", str(script), str(REPO), "two", path], _env()),
             run([sys.executable, str(script), str(REPO), "one", path], _env(XLA_FLAGS=TWO_DEVICES))]  # side by side
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), "".join(err for _, err in outs)[-3000:]
    two, one = (_out(out) for out, _ in outs)
    assert (two["members"]["devices"], two["members"]["processes"]) == (2, 2) and one["members"]["devices"] == 0
    assert two["members"]["acc"] == one["members"]["acc"] and two["members"]["loss"] == one["members"]["loss"]
    assert (two["batch"]["devices"], two["batch"]["processes"], one["batch"]["devices"]) == (2, 2, 2)
    assert two["batch"]["reads"] == [[2, 50]] and not two["batch"]["on_device"]  # its half of every (R, B) batch
    for k, tol in (("acc", 0.02), ("loss", 1e-3)):
        assert max(abs(a - b) for a, b in zip(two["batch"][k], one["batch"][k])) <= tol
    sm, sb = two["stream_members"], two["stream_batch"]
    assert (sm["devices"], sm["processes"], sb["devices"], sb["processes"]) == (2, 2, 2, 2)
    assert sm["reads"] == [[2, 100]] and sb["reads"] == [[2, 50]]
    assert sm["acc"] == one["members"]["acc"] and sm["loss"] == one["members"]["loss"]
    assert sb["acc"] == two["batch"]["acc"] and sb["loss"] == two["batch"]["loss"]


# -- whole lottery runs ---------------------------------------------------------------------------
TINY = ("dataset=mnist1d", "model=mlp", "model.widths=[32,32]", "levels=1", "replicates=2", "train.duration=300it",
        "train.eval_every=50it", "checkpoint.min_seconds=0", "logger.wandb.mode=disabled", "logger.progress=false")

AUDIT = r"""
import json, os, runpy, sys, atexit
runs, log = sys.argv[1], sys.argv[2] + "-" + os.environ.get("LTH_PROCESS_ID", "x") + ".json"
seen = []
def hook(event, args):
    if event in ("open", "os.mkdir", "os.rename", "os.replace", "os.remove", "os.symlink", "shutil.rmtree", "os.rmdir"):
        path = str(args[0])
        if event == "open" and not (isinstance(args[1], str) and any(c in args[1] for c in "wax+")) \
                and not (isinstance(args[2], int) and args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
            return
        if os.path.abspath(path).startswith(runs):
            seen.append([event, path])
atexit.register(lambda: open(log, "w").write(json.dumps(seen)))
sys.addaudithook(hook)
sys.argv = [sys.argv[3], *sys.argv[4:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _audited(tmp_path, runs, *overrides):
    script = tmp_path / "audit.py"
    script.write_text(AUDIT)
    return subprocess.Popen([sys.executable, "-m", "lth.launch", "--processes", "2", "--", str(script), str(runs),
                             str(tmp_path / "audit"), "experiments/lottery.py", f"paths.runs_dir={runs}", *TINY, *overrides],
                            cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _results(runs):
    path = max(glob.glob(f"{runs}/**/results.csv", recursive=True), key=lambda p: len(open(p).readlines()))
    return pd.read_csv(path).drop(columns=["seconds"]).sort_values(["level", "kind", "replicate"]).reset_index(drop=True)


@pytest.mark.slow
def test_a_two_process_lottery_run_equals_one_process_only_process_0_writes_and_a_stop_resumes(tmp_path):
    """The CLI over 2 processes (members split): SIGTERM to the launcher mid-level checkpoints both
    at the same step; re-launched, the run resumes and ends with the one-process results exactly;
    process 1 wrote nothing under the runs folder."""
    one = subprocess.run([sys.executable, "experiments/lottery.py", f"paths.runs_dir={tmp_path / 'one'}", *TINY], cwd=REPO,
                         env=_env(), capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    runs = tmp_path / "two"
    p = _audited(tmp_path, runs, "devices.shard=members")
    t0 = time.time()
    while not glob.glob(f"{runs}/**/level_00/progress/[0-9]*", recursive=True) and time.time() - t0 < 400:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    out = p.communicate(timeout=300)[0]
    assert p.returncode != 0 and "checkpoint saved" in out, out[-3000:]
    p = _audited(tmp_path, runs, "devices.shard=members")
    out = p.communicate(timeout=600)[0]
    assert p.returncode == 0 and "resuming from the checkpoint" in out, out[-3000:]
    pd.testing.assert_frame_equal(_results(tmp_path / "one"), _results(runs))
    wrote = {i: json.loads((tmp_path / f"audit-{i}.json").read_text()) for i in (0, 1)}
    assert wrote[0] and wrote[1] == []


def test_one_process_per_node_takes_every_gpu_of_its_node():
    from lth.config.schema import ConfigError
    from lth.integrations import distributed

    assert distributed.local_device_ids({}) is None  # JAX's choice: the GPU of SLURM_LOCALID
    assert distributed.local_device_ids({"LTH_LOCAL_DEVICES": "all", "SLURM_GPUS_ON_NODE": "4"}) == [0, 1, 2, 3]
    assert distributed.local_device_ids({"LTH_LOCAL_DEVICES": "all", "CUDA_VISIBLE_DEVICES": "2,3"}) == [0, 1]
    assert distributed.local_device_ids({"LTH_LOCAL_DEVICES": "1,3"}) == [1, 3]
    with pytest.raises(ConfigError, match="LTH_LOCAL_DEVICES='x'"):
        distributed.local_device_ids({"LTH_LOCAL_DEVICES": "x"})
    with pytest.raises(ConfigError, match="LTH_LOCAL_DEVICES=all: neither"):
        distributed.local_device_ids({"LTH_LOCAL_DEVICES": "all"})
