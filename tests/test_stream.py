"""`dataset.stream=true` (issue 30, lth.data.stream, lth.train.streamed): the training set read
from disk per step gives exactly the in-memory results; the prepared copy round-trips, an
interrupted preparation is never used, a streamed level resumes exactly, bad settings are refused."""

import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pytest

from conftest import small_config, stop_at_first_checkpoint


def _results(cfg):
    from lth.lottery import levels as lottery

    return lottery.run(cfg, echo=lambda s: None).results.drop(columns=["seconds"]).reset_index(drop=True)


def _streamed(cfg, stream_dir, runs_dir):
    d = dataclasses.replace(cfg.dataset, stream=True, stream_dir=str(stream_dir))
    return dataclasses.replace(cfg, dataset=d, paths=dataclasses.replace(cfg.paths, runs_dir=str(runs_dir)))


def test_streamed_mlp_run_equals_in_memory(tmp_path):
    """An MLP (the scanned, vmapped path in memory) on MNIST-1D, 2 levels x 2 replicates with a
    partial last batch per epoch: results.csv is equal, and nothing is cached under the runs."""
    from lth.config.schema import TrainConfig

    cfg = small_config(tmp_path, train=TrainConfig(duration="60it", batch_size=128, eval_every="20it", drop_last=False))
    mem = _results(cfg)
    got = _results(_streamed(cfg, tmp_path / "stream", tmp_path / "runs_stream"))
    pd.testing.assert_frame_equal(mem, got)
    assert os.path.isfile(next((tmp_path / "stream").glob("mnist1d-*/meta.json")))


def test_streamed_snip_run_equals_in_memory(tmp_path):
    """SNIP scores the mask on the first training batches, read from the streamed set: the same."""
    from lth.config.schema import PruningConfig, TrainConfig

    cfg = small_config(tmp_path, levels=1, pruning=PruningConfig(method="snip", fraction=0.5),
                       train=TrainConfig(duration="40it", batch_size=100, eval_every="20it"))
    pd.testing.assert_frame_equal(_results(cfg), _results(_streamed(cfg, tmp_path / "stream", tmp_path / "runs_stream")))


@pytest.fixture(scope="module")
def cifar_stream(tmp_path_factory, data_dir):
    """CIFAR-10 prepared once (in chunks of 5,000 from the npz) for this module's tests."""
    from lth.config.schema import DatasetConfig
    from lth.data import load_raw
    from lth.data.stream import stream_folder
    from lth.data.stream_prepare import prepare

    base = tmp_path_factory.mktemp("cifar_stream")
    cfg = DatasetConfig(name="cifar10", stream=True, stream_dir=str(base))
    prepare(cfg, data_dir, stream_folder(cfg), load_raw, chunk=5000)
    return base


@pytest.mark.slow  # ~26 s; ../shared/checks/many-hosts compares a streamed CIFAR-10 conv run through the CLI
def test_streamed_conv_steps_equal_in_memory(tmp_path, cifar_stream):
    """conv2 on CIFAR-10 (on a CPU: the loop of compiled single-replicate steps), 2 replicates,
    augmentation on, 6 steps from mid-epoch: the states and per-step metrics are bit-identical.
    (Through the trainer, not a whole run: evaluating conv2 on 10,000 test images twice costs
    minutes here; the check's streamed CIFAR-10 run compares results.csv.)"""
    import jax

    from lth.config.schema import DatasetConfig, ModelConfig, OptimizerConfig, RewindConfig, TrainConfig, resolve
    from lth.lottery import levels as lottery
    from lth.sparsity import masks as M
    from lth.train.trainer import replicate_keys

    cfg = small_config(tmp_path, levels=0, rewind=RewindConfig(point="0it"),
                       dataset=DatasetConfig(name="cifar10", val_size=1000, augment=True),
                       model=ModelConfig(name="conv2"), optimizer=OptimizerConfig(name="sgd", lr=0.05),
                       train=TrainConfig(duration="8it", batch_size=32, eval_every="4it"))
    out, streamed = [], []
    for c in (cfg, _streamed(cfg, cifar_stream, tmp_path / "runs_stream")):
        _, _, trainer = lottery.prepare(resolve(c))
        keys = replicate_keys(c.seed, c.replicates)
        v = trainer.init_variables(keys["init"])
        states = trainer.create_states(v, jax.vmap(M.ones_like)(v["params"]))
        out.append(trainer.run(states, keys, trainer.steps_per_epoch - 3, 6))  # across an epoch boundary
        streamed.append((trainer.streamed, trainer.scan))
    assert streamed == [(False, False), (True, False)]
    (s0, m0), (s1, m1) = out
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(s0), jax.tree.leaves(s1)))
    assert m0.keys() == m1.keys() and all(np.array_equal(m0[k], m1[k]) for k in m0)


def test_prepared_copy_round_trips(tmp_path, cifar_stream, data_dir):
    """The prepared copies hold the loaders' arrays exactly (CIFAR-10 from its npz in chunks,
    MNIST-1D through its loader), and StreamedRows returns rows in the order asked for."""
    from lth.config.schema import DatasetConfig
    from lth.data import load_raw
    from lth.data.stream import load_streamed

    for cfg in (DatasetConfig(name="cifar10", stream=True, stream_dir=str(cifar_stream)),
                DatasetConfig(name="mnist1d", stream=True, stream_dir=str(tmp_path))):
        raw, st = load_raw(cfg, data_dir), load_streamed(cfg, data_dir, load_raw)
        assert st.x_train.shape == raw.x_train.shape and st.x_train.dtype == raw.x_train.dtype
        np.testing.assert_array_equal(st.x_train[np.arange(len(raw.x_train))], raw.x_train)
        np.testing.assert_array_equal(st.y_train, raw.y_train)
        np.testing.assert_array_equal(st.x_test, raw.x_test)
        np.testing.assert_array_equal(st.y_test, raw.y_test)
        np.testing.assert_array_equal(st.mean, raw.mean)
        np.testing.assert_array_equal(st.std, raw.std)
        idx = np.array([[7, 3, 3999], [0, 12, 5]])
        np.testing.assert_array_equal(st.x_train[idx], raw.x_train[idx])
        with pytest.raises(Exception, match="never whole"):
            np.asarray(st.x_train)


def test_interrupted_preparation_is_not_used(tmp_path):
    """A preparation stopped half way leaves no folder under the copy's name (only a temporary
    one, removed); the next load prepares a complete copy."""
    from lth.config.schema import DatasetConfig
    from lth.data import load_raw
    from lth.data.stream import load_streamed, stream_folder
    from lth.data.stream_prepare import prepare

    cfg = DatasetConfig(name="mnist1d", stream=True, stream_dir=str(tmp_path))
    folder = stream_folder(cfg)
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg, "unused", folder, load_raw, _fail_after="train")
    assert not os.path.exists(folder) and os.listdir(tmp_path) == []
    os.makedirs(folder + ".tmp-999999999")  # left by a process killed mid-way: never read, removed
    raw = load_streamed(cfg, "unused", load_raw)
    assert raw.x_train.shape == (4000, 40) and os.listdir(tmp_path) == [os.path.basename(folder)]
    assert json.load(open(os.path.join(folder, "meta.json")))["num_test"] == 1000


def test_streamed_level_resumes_exactly(tmp_path):
    """Stopped at its first in-level checkpoint and re-run, a streamed level ends with the results
    of an uninterrupted in-memory run (the loader's position is the step)."""
    from lth.config.schema import TrainConfig
    from lth.lottery import levels as lottery

    cfg = small_config(tmp_path, levels=0, train=TrainConfig(duration="120it", batch_size=100, eval_every="20it"))
    cfg.checkpoint.min_seconds = 0.0
    mem = _results(cfg)
    st = _streamed(cfg, tmp_path / "stream", tmp_path / "cut")
    stop_at_first_checkpoint(f"{tmp_path}/cut", lambda: lottery.run(st, echo=lambda s: None))
    said = []
    got = lottery.run(st, echo=said.append).results.drop(columns=["seconds"]).reset_index(drop=True)
    assert any("resuming from the checkpoint at step" in line for line in said)
    pd.testing.assert_frame_equal(mem, got)


@pytest.mark.parametrize("overrides, message", [
    (["dataset.stream=maybe"], "stream"),
    (["dataset.stream_dir=/tmp/x"], r"dataset.stream_dir='/tmp/x' applies only with dataset.stream=true"),
    (["dataset.stream=true", "dataset=custom", "dataset._target_=numpy.zeros"], r"dataset.stream=true with dataset.name='custom'"),
])
def test_bad_stream_settings_are_refused(compose, overrides, message):
    with pytest.raises(Exception, match=message):
        compose(*overrides)


def test_stream_dir_that_is_a_file_is_refused(compose, tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(Exception, match=r"dataset.stream_dir=.* is a file; it must be a folder"):
        compose("dataset.stream=true", f"dataset.stream_dir={f}")


def test_stream_does_not_change_the_run_directory(tmp_path):
    from lth.runs.run_dir import content_hash

    cfg = small_config(tmp_path)
    assert content_hash(cfg) == content_hash(_streamed(cfg, tmp_path, tmp_path))
