"""Pre-trained starting points (lth.lottery.pretrained, `init.checkpoint`): level 0 starts from a finished
run's level or from a file of named arrays, the head is drawn fresh when asked, IMP rewinds to the
loaded weights, a checkpoint that does not fit is refused naming every tensor with nothing written,
and the checkpoint's content (not its path) is part of the run's identity."""

from __future__ import annotations

import dataclasses
import os
import shutil

import jax
import numpy as np
import pytest

from lth.lottery import levels as lottery, pretrained
from lth.sparsity import masks as M
from lth.config.schema import ConfigError, InitConfig, ModelConfig, RewindConfig, TrainConfig

from conftest import mnist1d_config
from test_rewind_modes import assert_trees_equal, masked, on_disk, spy  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pre")
    cfg = mnist1d_config(tmp, levels=0)
    out = lottery.run(cfg, echo=lambda _: None)
    return os.path.join(out.run_dir, "level_00", "final")


def test_level_0_starts_from_a_runs_replicate_with_a_fresh_head(tmp_path, finished, spy):
    """Every replicate starts from replicate 1's final weights, except the head: drawn fresh, each
    replicate its own. With rewind.point=0it, level 1 rewinds to the loaded weights."""
    saved = M.flatten(on_disk(finished)["params"])
    cfg = mnist1d_config(tmp_path, init=InitConfig(checkpoint=finished, replicate=1, reinit_patterns=["head"]),
                         rewind=RewindConfig(point="0it"))
    lines = []
    out = lottery.run(cfg, echo=lines.append)
    start = M.flatten(spy[0]["states"].params)
    for p in ("fc1/kernel", "fc1/bias", "fc2/kernel"):
        for r in range(2):
            np.testing.assert_array_equal(start[p][r], saved[p][1])
    for p in ("head/kernel", "head/bias"):
        assert not np.array_equal(start[p][0], saved[p][1]) or p.endswith("bias")
    assert not np.array_equal(start["head/kernel"][0], start["head/kernel"][1])
    assert any("re-initialised: head/bias, head/kernel" in x for x in lines)
    # IMP with k = 0 rewinds level 1 to the loaded weights (fresh head included).
    mask = on_disk(os.path.join(out.run_dir, "level_01"), "mask")
    assert_trees_equal(spy[1]["states"].params, masked(jax.device_get(spy[0]["states"].params), mask))


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_level_0_starts_from_a_file_of_named_arrays(tmp_path, finished, spy, fmt):
    """Keys are `/`-joined parameter paths, with or without the `params/` prefix."""
    saved = M.flatten(on_disk(finished)["params"])
    arrays = {(f"params/{p}" if i % 2 else p): np.asarray(v[0]) for i, (p, v) in enumerate(saved.items())}
    path = str(tmp_path / f"weights.{fmt}")
    if fmt == "npz":
        np.savez(path, **arrays)
    else:
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, path)
    cfg = mnist1d_config(tmp_path, levels=0, init=InitConfig(checkpoint=path))
    lottery.run(cfg, echo=lambda _: None)
    start = M.flatten(spy[0]["states"].params)
    for p, v in saved.items():
        np.testing.assert_array_equal(start[p][1], v[0])


def test_a_checkpoint_that_does_not_fit_is_refused_naming_each_tensor(tmp_path, finished):
    cfg = mnist1d_config(tmp_path, model=ModelConfig(name="mlp", widths=[16, 32]), init=InitConfig(checkpoint=finished))
    with pytest.raises(ConfigError) as e:
        lottery.run(cfg, echo=lambda _: None)
    msg = str(e.value)
    assert msg.startswith(f"init.checkpoint={finished!r}: the checkpoint does not fit the model")
    for line in ("params/fc1/kernel: checkpoint (40, 32) vs model (40, 16)", "params/fc1/bias: checkpoint (32,) vs model (16,)",
                 "params/fc2/kernel: checkpoint (32, 32) vs model (16, 32)"):
        assert line in msg
    assert "fc2/bias" not in msg  # it fits
    path = str(tmp_path / "partial.npz")
    np.savez(path, **{"fc1/kernel": np.zeros((40, 32), np.float32)})
    with pytest.raises(ConfigError, match="params/head/kernel: not in the checkpoint"):
        lottery.run(mnist1d_config(tmp_path, init=InitConfig(checkpoint=path)), echo=lambda _: None)
    with pytest.raises(ConfigError, match=r"init.replicate=2: the checkpoint .* holds 2 replicate\(s\)"):
        lottery.run(mnist1d_config(tmp_path, init=InitConfig(checkpoint=finished, replicate=2)), echo=lambda _: None)
    with pytest.raises(ConfigError, match="init.checkpoint='/no/such.npz': no such file"):
        lottery.run(mnist1d_config(tmp_path, init=InitConfig(checkpoint="/no/such.npz")), echo=lambda _: None)
    assert not os.path.exists(tmp_path / "runs")


def test_the_checkpoints_content_names_the_shared_dense_level(tmp_path, finished):
    """Level 0 lives in a dense directory shared by runs that differ only in how they prune
    (`lth.lottery.shared_dense`); the starting checkpoint's content is part of its name: two checkpoints
    whose contents differ (one bias) train two dense levels, while the same content under another
    path finds the first one done."""
    saved = M.flatten(on_disk(finished)["params"])
    arrays = {p: np.asarray(v[0]) for p, v in saved.items()}
    a, b, c = str(tmp_path / "a.npz"), str(tmp_path / "elsewhere" / "b.npz"), str(tmp_path / "c.npz")
    np.savez(a, **arrays)
    os.makedirs(os.path.dirname(b))
    shutil.copy(a, b)
    np.savez(c, **{**arrays, "fc1/bias": arrays["fc1/bias"] + 1.0})
    short = dict(levels=0, rewind=RewindConfig(point="0it"),
                 train=TrainConfig(duration="20it", batch_size=100, eval_every="20it"))
    out, said = {}, {}
    for name, path in (("a", a), ("b", b), ("c", c)):
        said[name] = []
        out[name] = lottery.run(mnist1d_config(tmp_path, init=InitConfig(checkpoint=path), **short), echo=said[name].append)
    dense = {name: os.path.realpath(os.path.join(o.run_dir, "level_00")) for name, o in out.items()}
    assert dense["a"] == dense["b"] != dense["c"]
    assert any("done already" in line for line in said["b"]) and not any("done already" in line for line in said["c"])
    loss = {name: o.results.test_loss.to_numpy() for name, o in out.items()}
    np.testing.assert_array_equal(loss["a"], loss["b"])
    assert not np.array_equal(loss["a"], loss["c"])  # c's level 0 trained from c's weights


@pytest.mark.slow  # over 20 s here; `make test-slow` runs it (the default suite stays near 10 minutes)
def test_the_checkpoints_content_not_its_path_names_the_run(tmp_path, finished):
    a = str(tmp_path / "a.npz")
    saved = M.flatten(on_disk(finished)["params"])
    np.savez(a, **{p: np.asarray(v[0]) for p, v in saved.items()})
    b = str(tmp_path / "elsewhere" / "b.npz")
    os.makedirs(os.path.dirname(b))
    shutil.copy(a, b)
    assert pretrained.content_hash(a) != pretrained.content_hash(finished)
    changed = dict(np.load(a))
    changed["fc1/bias"] = changed["fc1/bias"] + 1.0
    c = str(tmp_path / "c.npz")
    np.savez(c, **changed)
    dirs = {}
    for name, path in (("a", a), ("b", b), ("c", c)):
        cfg = mnist1d_config(tmp_path, levels=0, init=InitConfig(checkpoint=path))
        dirs[name] = lottery.run(cfg, echo=lambda _: None).run_dir
    assert dirs["a"] == dirs["b"] != dirs["c"]
    plain = lottery.run(mnist1d_config(tmp_path, levels=0), echo=lambda _: None).run_dir
    assert plain not in dirs.values()
    assert dataclasses.replace(mnist1d_config(tmp_path), init=InitConfig()).init.checkpoint is None
