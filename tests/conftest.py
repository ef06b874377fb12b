"""Shared test fixtures."""

import os
from pathlib import Path

# Tests are dominated by XLA compiles of small programs; LLVM's optimisations cost more than they
# save there (about 2x on the suite). Set before JAX is imported; subprocesses inherit it.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import pytest


@pytest.fixture(scope="session")
def data_dir() -> str:
    """The offline datasets: `$LTH_DATA_DIR` as the library reads it, else the ones beside the
    checkout (`<repo>/../shared/datasets`); skip (saying where it looked) when neither exists.
    Tests that only need MNIST-1D do not use this: the library generates MNIST-1D offline."""
    env = os.environ.get("LTH_DATA_DIR")
    path = Path(env) if env else (Path(__file__).resolve().parent.parent / ".." / "shared" / "datasets").resolve()
    if not path.is_dir():
        pytest.skip(f"offline datasets not found at {path} (set LTH_DATA_DIR or put ../shared beside the checkout)")
    return str(path)


import os  # noqa: E402

import numpy as np  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _offline_env():
    """Tests never reach W&B's servers and point lth at the offline datasets when present."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    shared = (Path(__file__).resolve().parent.parent / ".." / "shared" / "datasets").resolve()
    if shared.is_dir():
        os.environ.setdefault("LTH_DATA_DIR", str(shared))
    yield


def make_tiny_dataset(n_train=600, n_val=100, n_test=200, features=20, classes=4, seed=0):
    """A linearly separable toy problem as an `lth.data.Dataset` (fast unit tests of the trainer)."""
    from lth.data import Dataset

    rng = np.random.default_rng(seed)
    w = rng.normal(size=(features, classes))

    def split(n):
        x = rng.normal(size=(n, features)).astype(np.float32)
        return x, np.argmax(x @ w, 1).astype(np.int32)

    (xt, yt), (xv, yv), (xs, ys) = split(n_train), split(n_val), split(n_test)
    return Dataset("tiny", xt, yt, xv, yv, xs, ys, classes, np.zeros(1, np.float32), np.ones(1, np.float32), 1.0)


@pytest.fixture
def tiny_dataset():
    return make_tiny_dataset()


def assert_refused_before_writing(tmp_path, changes: dict, pruning_changes: dict, words: list):
    """A lottery run of `small_config(tmp_path, **changes)` with `pruning_changes` applied to its
    pruning section stops with a ConfigError naming every one of `words`, and writes nothing."""
    import dataclasses
    import os

    from lth.config.schema import ConfigError
    from lth.lottery import levels as lottery

    cfg = small_config(tmp_path, **changes)
    cfg = dataclasses.replace(cfg, pruning=dataclasses.replace(cfg.pruning, **pruning_changes))
    with pytest.raises(ConfigError) as e:
        lottery.run(cfg, echo=lambda s: None)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    assert not os.path.exists(tmp_path / "runs")


def small_config(tmp_path, **changes):
    """A small MNIST-1D lottery run under `tmp_path/runs` (MNIST-1D is generated offline: no data
    folder needed), W&B and progress bars off; `changes` replace top-level settings."""
    import dataclasses

    from lth.config.schema import (
        Config,
        DatasetConfig,
        ModelConfig,
        OptimizerConfig,
        PathsConfig,
        PruningConfig,
        RewindConfig,
        TrainConfig,
    )

    cfg = Config(
        levels=2, replicates=2, seed=0,
        dataset=DatasetConfig(name="mnist1d", val_size=500),
        model=ModelConfig(name="mlp", widths=[64, 64]),
        optimizer=OptimizerConfig(name="adam", lr=2e-3),
        pruning=PruningConfig(fraction=0.2, scope="global"),
        rewind=RewindConfig(point="20it"),
        train=TrainConfig(duration="100it", batch_size=100, eval_every="50it"),
        paths=PathsConfig(runs_dir=str(tmp_path / "runs")),
    )
    cfg.logger.progress = False
    cfg.logger.wandb.mode = "disabled"
    for k, v in changes.items():
        cfg = dataclasses.replace(cfg, **{k: v})
    return cfg


def mnist1d_config(tmp_path, **changes):
    """The shared small MNIST-1D run, one level, with a step schedule and momentum (so that
    rewinding the step or the optimizer state shows in the results)."""
    from lth.config.schema import ModelConfig, OptimizerConfig, ScheduleConfig, TrainConfig

    settings = dict(
        levels=1, model=ModelConfig(name="mlp", widths=[32, 32]),
        optimizer=OptimizerConfig(name="momentum", lr=0.05, momentum=0.9,
                                  schedule=ScheduleConfig(name="step", milestones=["50it"], gamma=0.1)),
        train=TrainConfig(duration="80it", batch_size=100, eval_every="20it"),
    )
    return small_config(tmp_path, **{**settings, **changes})


@pytest.fixture(scope="module")
def compose():
    """The config the command line composes for some overrides (`lth.api.compose`), validated."""
    from lth.api import compose as compose_overrides
    from lth.config.schema import validate

    def go(*overrides):
        cfg = compose_overrides(list(overrides))
        validate(cfg)
        return cfg

    return go


def stop_at_first_checkpoint(folder, run):
    """Call `run()` while a thread requests a stop (what the SIGTERM handler does) as soon as level
    0 under `folder` has a checkpoint; returns the `Interrupted` it raises."""
    import glob
    import signal
    import threading
    import time

    from lth.runs import interrupt

    def request_stop():
        while not glob.glob(f"{folder}/**/level_00/progress/[0-9]*", recursive=True):
            time.sleep(0.01)
        interrupt._handler(signal.SIGTERM, None)

    t = threading.Thread(target=request_stop, daemon=True)
    t.start()
    try:
        run()
    except interrupt.Interrupted as e:
        return e
    finally:
        t.join()
    raise AssertionError("the run finished: no stop was requested")


def run_gpu_script(name: str, *args, env=None):
    """`bash scripts/NAME ARGS` (scripts/gpu_bench.sh, scripts/gpu_cifar.sh) from the repository's
    root, with this interpreter as its Python; the finished process, output captured."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    return subprocess.run(["bash", str(root / "scripts" / name), *args], cwd=root,
                          env={**os.environ, "PYTHON": sys.executable, **(env or {})},
                          capture_output=True, text=True, timeout=900)


def gpu_smoke(name: str, out: Path):
    """`NAME --smoke OUT`: it succeeds and leaves exactly log.txt, records.tar.gz and results.md.
    Returns (the process, the archive's file names, its JSON records by name: records/NAME.json)."""
    import json
    import tarfile

    p = run_gpu_script(name, "--smoke", str(out))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["log.txt", "records.tar.gz", "results.md"]
    with tarfile.open(out / "records.tar.gz") as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
        recs = {Path(n).stem: json.load(tar.extractfile(n)) for n in names if n.count("/") == 1 and n.endswith(".json")}
    return p, names, recs
