"""Runs that survive being killed: checkpoints inside a level (`lth.runs.progress`), SIGTERM saving first
(`lth.runs.interrupt`), corrupt checkpoints falling back, stale and live locks, diverged members
(`lth.train.trainer.train_level`), and members split over several devices (`lth.train.sharding`)."""

import glob
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from conftest import small_config, stop_at_first_checkpoint

REPO = Path(__file__).resolve().parent.parent


def _setup(tmp_path, **changes):
    from lth.lottery import levels as lottery
    from lth.sparsity import masks as M
    from lth.config.schema import resolve
    from lth.train.trainer import replicate_keys

    cfg = resolve(small_config(tmp_path, **changes))
    _, plan, trainer = lottery.prepare(cfg)
    keys = replicate_keys(cfg.seed, cfg.replicates)
    v = trainer.init_variables(keys["init"])
    states = trainer.create_states(v, jax.vmap(M.ones_like)(v["params"]))
    return trainer, states, keys


def _same(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


class _Killed(Exception):
    pass


def test_resume_inside_a_level_is_bit_identical(tmp_path):
    """Train 60 steps; separately, stop after the checkpoint at step 40 and resume from it: the
    final states, the rewind-point states, every evaluation and every per-step metric are equal."""
    from lth.runs.progress import LevelCheckpoints
    from lth.train.trainer import train_level

    trainer, states, keys = _setup(tmp_path)
    run = dict(start=0, end=60, eval_every=10, capture_at=15)
    full, hist, captured = train_level(trainer, states, keys, **run)

    ck = LevelCheckpoints(str(tmp_path / "progress"), {"level": 0}, keep=2)

    def save_then_die(step, lvl):
        ck.save(step, lvl.states, lvl.captured, lvl.history.eval_steps, lvl.history.evals, lvl.train_so_far(), lvl.diverged)
        if step == 40:
            raise _Killed

    with pytest.raises(_Killed):
        train_level(trainer, states, keys, **run, on_boundary=save_then_die)
    ck.finish()  # the background write (lth.lottery does this in a `finally`)
    assert sorted(int(p) for p in os.listdir(tmp_path / "progress")) == [30, 40]  # keep=2: the last two
    resume = LevelCheckpoints(str(tmp_path / "progress"), {"level": 0}).latest(states, states)
    assert resume.step == 40 and resume.eval_steps == [10, 20, 30, 40] and resume.captured is not None
    again, hist2, captured2 = train_level(trainer, states, keys, **run, resume=resume)
    assert _same(full, again) and _same(captured, captured2)
    assert hist.eval_steps == hist2.eval_steps == [10, 20, 30, 40, 50, 60]
    assert all(_same(a, b) for a, b in zip(hist.evals, hist2.evals))
    assert all(np.array_equal(hist.train[k], hist2.train[k]) for k in hist.train) and hist2.train["loss"].shape == (60, 2)


def _save_two(tmp_path):
    from lth.runs.progress import LevelCheckpoints
    from lth.train.trainer import train_level

    trainer, states, keys = _setup(tmp_path)
    ck = LevelCheckpoints(str(tmp_path / "progress"), {"level": 1}, keep=2)
    train_level(trainer, states, keys, start=0, end=50, eval_every=25, on_boundary=lambda step, lvl: ck.save(
        step, lvl.states, lvl.captured, lvl.history.eval_steps, lvl.history.evals, lvl.train_so_far(), lvl.diverged))
    ck.finish()
    return states


def test_corrupt_checkpoints_fall_back_to_the_one_before(tmp_path):
    """A checkpoint cut off mid-write (orbax's temporary folder) is not one; a checkpoint whose
    arrays were damaged is reported, set aside and the one before used; one whose metadata does not
    load likewise; checkpoints of other members (a control added since) start the level over."""
    import shutil

    from lth.runs.progress import LevelCheckpoints

    states = _save_two(tmp_path)
    progress = tmp_path / "progress"
    half = progress / "75.orbax-checkpoint-tmp-123"
    shutil.copytree(progress / "50", half)
    os.remove(half / "_CHECKPOINT_METADATA")
    assert LevelCheckpoints(str(progress), {"level": 1}).latest(states, None).step == 50

    shutil.copytree(progress / "25", tmp_path / "spare25")
    files = [f for f in glob.glob(str(progress / "50" / "arrays" / "**" / "*"), recursive=True) if os.path.isfile(f)]
    biggest = max(files, key=os.path.getsize)
    with open(biggest, "r+b") as f:  # flip bytes in the middle of the array data
        f.seek(os.path.getsize(biggest) // 2)
        f.write(b"\x00\xff" * 64)
    said = []
    resume = LevelCheckpoints(str(progress), {"level": 1}, echo=said.append).latest(states, None)
    assert resume is not None and resume.step == 25
    assert len(said) == 1 and "50" in said[0] and "corrupt" in said[0] and "falling back" in said[0]
    assert os.listdir(tmp_path / "progress-corrupt")[0].startswith("50-")  # kept aside, not deleted
    assert sorted(os.listdir(progress)) == ["25"]

    for f in glob.glob(str(progress / "25" / "meta" / "*")):
        Path(f).write_text("{not json")
    said.clear()
    assert LevelCheckpoints(str(progress), {"level": 1}, echo=said.append).latest(states, None) is None
    assert "metadata does not load" in said[0]

    shutil.copytree(tmp_path / "spare25", progress / "25")
    said.clear()
    assert LevelCheckpoints(str(progress), {"level": 2}, echo=said.append).latest(states, None) is None
    assert "other members" in said[0] and not os.path.exists(progress)


def test_a_checkpoint_that_still_loads_but_does_not_match_its_digest_is_set_aside(tmp_path):
    """The SHA-256 recorded with a checkpoint is compared with the arrays it loads: step 50's arrays
    replaced by a well-formed checkpoint's whose one value differs, and step 25's recorded digest
    changed, both still load, and both are reported, set aside and fallen back from.
    (The byte flip above is caught by orbax failing to decode: it never reaches the comparison.)"""
    import json
    import shutil

    from lth.runs.progress import LevelCheckpoints

    states = _save_two(tmp_path)
    progress = tmp_path / "progress"
    good = LevelCheckpoints(str(progress), {"level": 1}).latest(states, None)
    assert good.step == 50
    altered = good.states.replace(params=jax.tree.map(np.copy, good.states.params))
    leaf = jax.tree.leaves(altered.params)[0]
    leaf.flat[0] += 1.0  # one value of one array
    other = LevelCheckpoints(str(tmp_path / "other"), {"level": 1})
    other.save(50, altered, None, good.eval_steps, good.evals, good.train, good.diverged)
    other.finish()
    shutil.rmtree(progress / "50" / "arrays")
    shutil.copytree(tmp_path / "other" / "50" / "arrays", progress / "50" / "arrays")  # step 50's own metadata kept
    said = []
    resume = LevelCheckpoints(str(progress), {"level": 1}, echo=said.append).latest(states, None)
    assert resume is not None and resume.step == 25
    assert len(said) == 1 and "50" in said[0] and "do not match the SHA-256" in said[0] and "falling back" in said[0]
    assert [p.split("-")[0] for p in os.listdir(tmp_path / "progress-corrupt")] == ["50"]

    meta = progress / "25" / "meta" / "metadata"
    m = json.loads(meta.read_text())
    m["sha256"] = "0" * 64  # the stored digest, arrays untouched
    meta.write_text(json.dumps(m))
    said.clear()
    assert LevelCheckpoints(str(progress), {"level": 1}, echo=said.append).latest(states, None) is None
    assert len(said) == 1 and "25" in said[0] and "do not match the SHA-256" in said[0]
    assert sorted(p.split("-")[0] for p in os.listdir(tmp_path / "progress-corrupt")) == ["25", "50"]


def test_a_diverged_member_stops_and_the_others_train_on_unchanged(tmp_path):
    from lth.config.schema import OptimizerConfig
    from lth.train.trainer import train_level

    trainer, healthy, keys = _setup(tmp_path, optimizer=OptimizerConfig(name="sgd", lr=0.5))
    blow = jax.tree.map(lambda x: x.at[1].multiply(1e6) if x.ndim == 3 else x, healthy.params)  # member 1's kernels
    states = healthy.replace(params=blow)
    out, hist, _ = train_level(trainer, states, keys, start=0, end=100, eval_every=25)
    assert hist.diverged[0] == -1 and 0 <= hist.diverged[1] < 100
    assert not np.isfinite(hist.train["loss"][hist.diverged[1], 1])
    assert np.isfinite(hist.train["loss"][:, 0]).all()
    assert all(np.isfinite(np.asarray(x)[1]).all() for x in jax.tree.leaves(out.params))  # stopped at a finite state
    out0, hist0, _ = train_level(trainer, healthy, keys, start=0, end=100, eval_every=25)  # both members healthy
    assert (hist0.diverged == -1).all()
    assert _same(jax.tree.map(lambda x: x[0], out.params), jax.tree.map(lambda x: x[0], out0.params))  # member 0 unchanged
    assert hist.evals[-1]["test/accuracy"][0] == hist0.evals[-1]["test/accuracy"][0]

    from lth.runs import results

    rows = results.level_rows(0, "ticket", np.ones(2), hist, start=0, end=100)
    assert [r["status"] for r in rows] == ["ok", "diverged"] and rows[1]["diverged_step"] == hist.diverged[1]
    assert np.isnan(rows[0]["diverged_step"])
    assert results.summarize(results.to_frame(rows)).loc[0, "diverged"] == 1


def _cli(runs, *overrides, env=None, **kw):
    cmd = [sys.executable, str(REPO / "experiments" / "lottery.py"), f"paths.runs_dir={runs}", *overrides]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})}, **kw)


TINY = ("dataset=mnist1d", "model=mlp", "model.widths=[32,32]", "levels=1", "replicates=2", "train.duration=600it",
        "train.eval_every=50it", "checkpoint.min_seconds=0", "logger.wandb.mode=disabled", "logger.progress=false")


def _results(runs):
    path = max(glob.glob(f"{runs}/**/results.csv", recursive=True), key=lambda p: len(open(p).readlines()))
    return pd.read_csv(path).drop(columns=["seconds"])


def _wait_for_checkpoint(runs, level, at_least, proc, timeout=240):
    t0 = time.time()
    while time.time() - t0 < timeout:
        for d in glob.glob(f"{runs}/**/level_{level:02d}/progress/*", recursive=True):
            name = os.path.basename(d)
            if name.isdigit() and int(name) >= at_least:
                return int(name)
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def test_a_stop_request_saves_then_stops_and_the_rerun_matches_an_uninterrupted_run(tmp_path):
    """In-process: a stop requested (as by SIGTERM) in the middle of level 0 checkpoints at the next
    boundary and raises `Interrupted`; the re-run resumes there, and its results are those of a
    run that was never stopped (the same level trained whole, `train_level` alone: the rows are
    a function of the history, compared here through the final test accuracies). The real signal
    through the command line, compared on whole results.csv files: the slow tests below."""
    import threading

    from lth.runs import interrupt
    from lth.lottery import levels as lottery

    cfg = small_config(tmp_path, levels=0)
    cfg.train.duration, cfg.train.eval_every, cfg.checkpoint.min_seconds = "300it", "20it", 0.0
    cfg.paths.runs_dir = str(tmp_path / "cut" / "runs")

    e = stop_at_first_checkpoint(f"{tmp_path}/cut/runs", lambda: lottery.run(cfg, echo=lambda s: None))
    assert re.search(r"stopped by SIGTERM at level 0, step \d+ of 300", str(e)), e
    assert e.exit_code == 143
    said = []
    got = lottery.run(cfg, echo=said.append).results
    assert any("level 0: resuming from the checkpoint at step" in line for line in said)
    assert not glob.glob(f"{tmp_path}/cut/**/progress", recursive=True)  # removed once the level is written
    trainer, states, keys = _setup(tmp_path, levels=0, train=cfg.train)
    from lth.train.trainer import train_level

    _, hist, _ = train_level(trainer, states, keys, start=0, end=300, eval_every=20, capture_at=20)
    assert list(got.test_accuracy) == [float(a) for a in hist.evals[-1]["test/accuracy"]]
    assert list(got.early_stop_step) == list(hist.early_stop()["early_stop_step"])


@pytest.mark.slow
def test_sigterm_saves_then_stops_and_the_rerun_matches_an_uninterrupted_run(tmp_path):
    clean = _cli(tmp_path / "clean", *TINY)
    out, _ = clean.communicate(timeout=600)
    assert clean.returncode == 0, out
    p = _cli(tmp_path / "cut", *TINY)
    _wait_for_checkpoint(tmp_path / "cut", 1, 100, p)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 128 + signal.SIGTERM, out
    assert "stopped by SIGTERM at level 1, step" in out and "re-run the same command to resume" in out
    again = _cli(tmp_path / "cut", *TINY)
    out2, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out2
    assert "level 1: resuming from the checkpoint at step" in out2 and "level  0: done already" in out2
    pd.testing.assert_frame_equal(_results(tmp_path / "clean"), _results(tmp_path / "cut"))
    assert not glob.glob(f"{tmp_path}/cut/**/progress", recursive=True)  # removed once the level is written


@pytest.mark.slow
def test_sigkill_at_several_points_then_rerun_matches(tmp_path):
    """SIGKILL in level 0, in level 1, and right after a checkpoint appears (possibly during the
    next write); each re-run ends with the uninterrupted run's results."""
    clean = _cli(tmp_path / "clean", *TINY)
    assert clean.wait(timeout=600) == 0
    want = _results(tmp_path / "clean")
    for i, (level, at) in enumerate([(0, 100), (1, 300), (1, 550)]):
        runs = tmp_path / f"k{i}"
        p = _cli(runs, *TINY)
        _wait_for_checkpoint(runs, level, at, p)
        p.kill()
        p.wait()
        again = _cli(runs, *TINY)
        out, _ = again.communicate(timeout=600)
        assert again.returncode == 0, out
        assert "resuming from the checkpoint" in out
        pd.testing.assert_frame_equal(want, _results(runs))


_HOLD = """
import sys, time
from lth.runs.run_dir import RunDir
lock = RunDir(sys.argv[1], "x").lock()
print("held", flush=True)
time.sleep(600)
"""


def test_a_live_lock_refuses_and_a_killed_holder_leaves_no_stale_lock(tmp_path):
    from lth.runs.run_dir import RunDir, RunLocked

    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match="another process is running this run"):
            RunDir(str(tmp_path), "x").lock()
    finally:
        holder.kill()
        holder.wait()
    assert os.path.exists(tmp_path / ".lock")  # the file stays; the kernel released the lock with the process
    RunDir(str(tmp_path), "x").lock().close()


def test_interrupt_notes_signals_and_hands_them_to_a_schedulers_handler():
    from lth.runs import interrupt

    called = []
    before = signal.signal(signal.SIGUSR2, lambda s, f: called.append(s))
    try:
        with interrupt.handling():
            assert interrupt.requested() is None
            os.kill(os.getpid(), signal.SIGUSR2)
            assert interrupt.requested() == signal.SIGUSR2 and not called
            interrupt.stop("at level 1, step 5 of 10")  # the scheduler's handler runs; training may go on
            assert called == [signal.SIGUSR2] and interrupt.requested() is None
            os.kill(os.getpid(), signal.SIGTERM)  # no handler before ours: stop
            with pytest.raises(interrupt.Interrupted, match="stopped by SIGTERM at level 2") as e:
                interrupt.stop("at level 2")
            assert e.value.exit_code == 143
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # put back
    finally:
        signal.signal(signal.SIGUSR2, before)


def test_checkpoint_settings_are_checked():
    from lth.config.schema import Config, ConfigError, validate

    for key, value, msg in [("every", "0it", "checkpoint.every='0it'"), ("every", "often", "checkpoint.every"),
                            ("keep", 0, "checkpoint.keep=0"), ("min_seconds", -1.0, "checkpoint.min_seconds=-1.0")]:
        cfg = Config()
        setattr(cfg.checkpoint, key, value)
        with pytest.raises(ConfigError, match=msg.replace("[", r"\[").replace("(", r"\(")):
            validate(cfg)
    cfg = Config()
    cfg.devices.shard = "rows"
    with pytest.raises(ConfigError, match="devices.shard='rows'"):
        validate(cfg)


def test_checkpoint_and_device_settings_leave_the_run_hash_alone():
    from lth.config.schema import Config
    from lth.runs.run_dir import content_hash

    cfg = Config()
    h = content_hash(cfg)
    cfg.checkpoint.every, cfg.checkpoint.min_seconds, cfg.devices.shard, cfg.devices.count = "1000it", 0.0, "batch", 2
    assert content_hash(cfg) == h


def test_largest_divisor():
    from lth.train.sharding import largest_divisor

    assert [largest_divisor(m, 4) for m in (1, 2, 3, 4, 6, 8, 9)] == [1, 2, 3, 4, 3, 4, 3]
    assert largest_divisor(100, 8) == 5 and largest_divisor(7, 1) == 1


DEV = ("dataset=mnist1d", "model=mlp", "model.widths=[32,32]", "levels=1", "replicates=4", "train.duration=100it",
       "train.eval_every=50it", "logger.wandb.mode=disabled", "logger.progress=false")


def _devices(n: int) -> str:
    """XLA_FLAGS for n CPU devices, keeping the flags the suite runs with (the same program otherwise)."""
    return f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}".strip()


@pytest.mark.slow
def test_members_split_over_two_devices_give_the_one_device_results(tmp_path):
    """Forced CPU devices: 4 members as 2 per device train bit for bit as on one device (every
    column but the wall clock)."""
    one = _cli(tmp_path / "one", *DEV)
    two = _cli(tmp_path / "two", *DEV, env={"XLA_FLAGS": _devices(2)})
    for p in (one, two):
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out
    a, b = _results(tmp_path / "one"), _results(tmp_path / "two")
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("runs", [pytest.param("members4,none4"), pytest.param("members4,none4,members6,batch4", marks=pytest.mark.slow)])
def test_members_and_batches_are_placed_on_the_devices(runs):
    """In a process with 4 CPU devices: members mode splits 4 members over 4 devices (6 members: 3
    devices) and trains bit for bit as on one device; batch mode replicates the states and splits
    each batch."""
    code = r"""
import sys, json, jax, numpy as np
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/tests")
import lth
from conftest import make_tiny_dataset
from lth.train import sharding
from lth.sparsity import masks as M
from lth.config.schema import DevicesConfig
from lth.train.trainer import Trainer, replicate_keys, train_level
from lth.models import build_model
from lth.config.schema import ModelConfig
import optax
ds = make_tiny_dataset()
model = build_model(ModelConfig(name="mlp", widths=[16]), ds.num_classes)
out = {}
for name in sys.argv[2].split(","):
    shard, R = name[:-1], int(name[-1])
    shard = None if shard == "none" else shard
    tr = Trainer(model, ds, optax.inject_hyperparams(optax.sgd)(learning_rate=0.1), lambda s: 0.1, batch_size=100)
    keys = replicate_keys(0, R)
    v = tr.init_variables(keys["init"]); st = tr.create_states(v, jax.vmap(M.ones_like)(v["params"]))
    place = sharding.placement(DevicesConfig(shard=shard), tr) if shard else None
    st2, hist, _ = train_level(tr, st, keys, start=0, end=30, eval_every=10, place=place)
    leaf = jax.tree.leaves(st2.params)[0]
    out[name] = {"devices": len(leaf.sharding.device_set), "acc": hist.evals[-1]["test/accuracy"].tolist()}
print(json.dumps(out))
"""
    env = {**os.environ, "XLA_FLAGS": _devices(4)}
    res = subprocess.run([sys.executable, "-c", code, str(REPO), runs], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    import json

    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["members4"]["devices"] == 4 and out["none4"]["devices"] == 1
    assert out["members4"]["acc"] == out["none4"]["acc"]  # bit for bit
    if "batch4" in out:
        assert out["members6"]["devices"] == 3 and out["batch4"]["devices"] == 4
        np.testing.assert_allclose(out["batch4"]["acc"], out["none4"]["acc"], atol=0.02)  # gradients summed in another order


def test_xla_flags_added_only_when_allowed(monkeypatch):
    from lth.integrations import xla_flags

    monkeypatch.setattr(xla_flags, "_backend_started", lambda: False)
    monkeypatch.setattr(xla_flags, "_jaxlib_version", lambda: "0.10.2")
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    monkeypatch.delenv("LTH_XLA_FLAGS", raising=False)
    assert xla_flags.apply() and os.environ["XLA_FLAGS"] == "--xla_backend_optimization_level=0 " + xla_flags.FLAG
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=reduce")  # the user's own choice
    assert not xla_flags.apply() and os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=reduce"
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setattr(xla_flags, "_jaxlib_version", lambda: "0.12.0")  # not checked: an unknown flag stops XLA
    assert not xla_flags.apply() and os.environ["XLA_FLAGS"] == ""
    monkeypatch.setattr(xla_flags, "_jaxlib_version", lambda: "0.10.2")
    monkeypatch.setenv("LTH_XLA_FLAGS", "keep")
    assert not xla_flags.apply() and os.environ["XLA_FLAGS"] == ""


def test_a_corrupt_result_file_is_reported_and_its_level_trained_again(tmp_path):
    """A level's result.json that no longer parses is moved aside and the level retrained (the same
    numbers: training is deterministic); a results.csv that does not read is reported and rebuilt."""
    from lth.lottery import levels as lottery

    cfg = small_config(tmp_path, levels=1)
    first = lottery.run(cfg, echo=lambda s: None)
    level1 = os.path.join(first.run_dir, "level_01", "result.json")
    Path(level1).write_text('{"rows": [{"level": 1, "test_acc')  # cut off
    Path(first.run_dir, "results.csv").write_bytes(b"\x00\xff\xfe garbage\n\"unclosed")
    said = []
    again = lottery.run(cfg, echo=said.append)
    text = "\n".join(said)
    assert "results.csv does not read" in text and "is corrupt" in text and "the level is trained again" in text
    assert "level  0: done already" in text  # the good level is kept
    assert glob.glob(level1 + ".corrupt-*")
    pd.testing.assert_frame_equal(first.results.drop(columns=["seconds"]), again.results.drop(columns=["seconds"]))


@pytest.mark.slow
def test_a_preempted_submitit_job_checkpoints_requeues_and_resumes(tmp_path):
    """submitit's local executor, pre-empted the way SLURM does it (SIGUSR2 to the job, which
    `LocalJob._interrupt` sends): lth checkpoints the level in progress, hands the signal to
    submitit, which requeues the job; the requeued job resumes from that checkpoint and ends with
    the results of an uninterrupted run."""
    clean = _cli(tmp_path / "clean", *TINY)
    assert clean.wait(timeout=600) == 0
    sweep = tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.Popen([sys.executable, str(REPO / "experiments" / "lottery.py"), "-m", "hydra/launcher=submitit_local",
                          f"hydra.sweep.dir={sweep}", f"paths.runs_dir={tmp_path / 'runs'}", *TINY, "seed=0"],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    _wait_for_checkpoint(tmp_path / "runs", 1, 100, p)
    job = subprocess.run(["pgrep", "-f", f"submitit.core._submit.*{sweep}"], capture_output=True, text=True).stdout.split()
    assert len(job) == 1, job
    os.kill(int(job[0]), signal.SIGUSR2)
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out
    logs = "\n".join(Path(f).read_text() for f in glob.glob(f"{sweep}/.submitit/**/*.out", recursive=True) +
                     glob.glob(f"{sweep}/.submitit/**/*.err", recursive=True))
    assert "Requeued job" in logs or "requeue" in logs.lower(), logs[-3000:]
    assert "level 1: resuming from the checkpoint at step" in logs, logs[-3000:]
    pd.testing.assert_frame_equal(_results(tmp_path / "clean"), _results(tmp_path / "runs"))
