"""Each rewinding mode's defining equation (lth.lottery.rewind), checked on the states the level loop hands
the trainer: the weights and step a level starts from, the learning rate at every step after, and
the optimizer state reset or rewound. A spy around `lottery.train_level` records what each call was
given and what it recorded; the expected values come from the checkpoints on disk."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from lth.runs import checkpoints
from lth.lottery import levels as lottery
from lth.config.schema import PruningConfig, RewindConfig, TrainConfig
from lth.train.optim import make_schedule
from lth.runs.run_dir import RunDir

from conftest import mnist1d_config

K, T = 20, 80  # rewind step and steps per level of mnist1d_config (step schedule: lr 0.05, x0.1 from step 50)


@pytest.fixture
def spy(monkeypatch):
    """Every call of the level loop's `train_level`: its start states and per-member keys (host),
    its keyword arguments and the history it returned."""
    calls = []
    monkeypatch.setattr(lottery, "train_level", recording(lottery.train_level, calls))
    return calls


def recording(real, calls):
    """`real` (train_level), appending what each call was given and recorded to `calls`."""

    def recorded(trainer, states, keys, **kw):
        start = jax.device_get(states)
        out = real(trainer, states, keys, **kw)
        calls.append({"states": start, "keys": jax.device_get(keys), "lr_fn": states.lr_fn, "kw": kw, "hist": out[1]})
        return out

    return recorded


def run(tmp_path, mode, optimizer_state="reset", **changes):
    cfg = mnist1d_config(tmp_path / mode, rewind=RewindConfig(mode=mode, point=f"{K}it", optimizer_state=optimizer_state),
                         pruning=PruningConfig(fraction=0.5, scope="global"), **changes)
    return cfg, lottery.run(cfg, echo=lambda _: None)


@pytest.fixture(scope="module")
def modes(tmp_path_factory):
    """One run per mode (optimizer state reset), shared by the tests below: mode -> (cfg, outcome,
    the spy's calls)."""
    out = {}
    for mode in ("weights", "lr", "finetune"):
        calls = []
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(lottery, "train_level", recording(lottery.train_level, calls))
            cfg, o = run(tmp_path_factory.mktemp("modes"), mode)
        out[mode] = (cfg, o, calls)
    return out


def on_disk(run_dir, *parts):
    return checkpoints.restore(os.path.join(run_dir, *parts), None)


def assert_trees_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def masked(params, mask):
    return jax.tree.map(lambda p, m: np.where(np.asarray(m, bool), np.asarray(p), 0), params, mask)


def schedule(cfg):
    return make_schedule(cfg.optimizer, total_steps=T, steps_per_epoch=35)


def test_weights_mode_starts_from_theta_k_at_step_k_with_the_schedule(modes):
    """θ ← m ⊙ θk, step ← k, lr_t = schedule(t) for t = k .. T-1."""
    cfg, out, spy = modes["weights"]
    start, hist = spy[1]["states"], spy[1]["hist"]
    theta_k = on_disk(out.run_dir, "rewind")["params"]
    mask = on_disk(RunDir(out.run_dir, "").level_dir(1), "mask")
    assert_trees_equal(start.params, masked(theta_k, mask))
    assert spy[1]["kw"]["start"] == K and (np.asarray(start.step) == K).all()
    sched = schedule(cfg)
    np.testing.assert_allclose(hist.train["lr"], np.array([[float(sched(t))] * 2 for t in range(K, T)]), rtol=0, atol=0)


def test_lr_mode_starts_from_the_final_weights_with_the_schedule_restarted_at_k(modes):
    """θ ← m ⊙ θ_{L-1} (level 0's final weights), step ← k, and the schedule again from k: lr is
    0.05 up to step 49 and 0.005 from step 50, at level 1 as at level 0.
    Catches: LR rewinding that rewinds the weights, or that keeps the final learning rate."""
    cfg, out, spy = modes["lr"]
    start, hist = spy[1]["states"], spy[1]["hist"]
    final0 = on_disk(RunDir(out.run_dir, "").level_dir(0), "final")["params"]
    mask = on_disk(RunDir(out.run_dir, "").level_dir(1), "mask")
    assert_trees_equal(start.params, masked(final0, mask))
    theta_k = on_disk(out.run_dir, "rewind")["params"]
    assert not np.array_equal(jax.tree.leaves(start.params)[1], jax.tree.leaves(masked(theta_k, mask))[1])
    assert (np.asarray(start.step) == K).all()
    lr = hist.train["lr"]
    assert lr.shape == (T - K, 2)
    expected = np.where(np.arange(K, T) < 50, 0.05, 0.005).astype(np.float32)
    np.testing.assert_allclose(lr[:, 0], expected, rtol=1e-7)
    np.testing.assert_array_equal(lr, spy[0]["hist"].train["lr"][K:])  # level 0's rates at the same steps


def test_finetune_mode_trains_the_final_weights_at_the_final_learning_rate(modes):
    """θ ← m ⊙ θ_{L-1}, T - k steps at schedule(T - 1) = 0.005 throughout (no rate of 0.05)."""
    cfg, out, spy = modes["finetune"]
    start, hist = spy[1]["states"], spy[1]["hist"]
    final0 = on_disk(RunDir(out.run_dir, "").level_dir(0), "final")["params"]
    mask = on_disk(RunDir(out.run_dir, "").level_dir(1), "mask")
    assert_trees_equal(start.params, masked(final0, mask))
    assert (np.asarray(start.step) == K).all() and hist.train["lr"].shape == (T - K, 2)
    np.testing.assert_allclose(hist.train["lr"], np.float32(0.005), rtol=1e-7)
    assert float(spy[1]["lr_fn"](0)) == pytest.approx(float(schedule(cfg)(T - 1)))
    # Level 0 is dense training with the schedule in every mode.
    np.testing.assert_allclose(spy[0]["hist"].train["lr"][:50], np.float32(0.05), rtol=1e-7)


@pytest.mark.parametrize("mode", ["lr", pytest.param("finetune", marks=pytest.mark.slow)])  # finetune: ~12 s more
def test_optimizer_state_reset_or_rewound_in_every_mode(tmp_path, spy, modes, mode):
    """`rewound` starts level 1 with the optimizer state saved at k (momentum built over k steps),
    `reset` with a fresh one (zero momentum), whatever the weights."""
    _, out = run(tmp_path / "a", mode, optimizer_state="rewound")
    saved = on_disk(out.run_dir, "rewind")["opt_state"]
    assert_trees_equal(spy[1]["states"].opt_state, saved)
    assert any(np.abs(np.asarray(x)).sum() > 0 for x in jax.tree.leaves(saved["inner_state"]))
    trace = jax.tree.leaves(modes[mode][2][1]["states"].opt_state.inner_state)  # the same run with reset
    assert all(not np.asarray(x).any() for x in trace if np.ndim(x) > 1)


def test_modes_share_level_0_and_differ_after(tmp_path, modes):
    """Level 0 is the same dense training in every mode; level 1 differs between the three."""
    res = {m: modes[m][1].results for m in ("weights", "lr", "finetune")}
    l0 = {m: r[r.level == 0].test_loss.to_numpy() for m, r in res.items()}
    l1 = {m: r[r.level == 1].test_loss.to_numpy() for m, r in res.items()}
    np.testing.assert_array_equal(l0["weights"], l0["lr"])
    np.testing.assert_array_equal(l0["weights"], l0["finetune"])
    assert not np.array_equal(l1["weights"], l1["lr"])
    assert not np.array_equal(l1["lr"], l1["finetune"])
    assert len({RunDir.for_config(run_cfg).hash for run_cfg in (
        mnist1d_config(tmp_path, rewind=RewindConfig(mode=m)) for m in ("weights", "lr", "finetune"))}) == 3


class BatchNormMLP:
    """A stand-in for `model=mlp` with BatchNorm (Dense - BatchNorm - ReLU - Dense): the smallest
    network whose levels carry `batch_stats`, so the modes' BatchNorm rule shows on MNIST-1D."""

    @staticmethod
    def build(cfg, num_classes):
        from flax import linen as nn

        from lth.models.batch_norm import batch_norm

        class Net(nn.Module):
            @nn.compact
            def __call__(self, x, train=False):
                x = nn.Dense(int(cfg.widths[0]), name="fc1")(x.reshape(x.shape[0], -1))
                x = nn.relu(batch_norm(train, nn.initializers.ones, name="bn1")(x))
                return nn.Dense(num_classes, name="head")(x)

        return Net()


@pytest.fixture(scope="module")
def bn_modes(tmp_path_factory):
    """Two-level runs of the BatchNorm MLP, one per mode, sharing their dense level 0 (trained by
    the first): mode -> (outcome, the spy's calls, None for a level not trained)."""
    from lth import models

    out, tmp = {}, tmp_path_factory.mktemp("bn")
    for mode in ("weights", "lr", "finetune"):
        calls = []
        with pytest.MonkeyPatch.context() as mp:
            mp.setitem(models.MODELS, "mlp", BatchNormMLP.build)
            mp.setattr(lottery, "train_level", recording(lottery.train_level, calls))
            cfg = mnist1d_config(tmp, levels=2, rewind=RewindConfig(mode=mode, point=f"{K}it"),
                                 pruning=PruningConfig(fraction=0.5, scope="global"),
                                 train=TrainConfig(duration=f"{T}it", batch_size=100, eval_every=f"{T}it"))
            o = lottery.run(cfg, echo=lambda _: None)
        out[mode] = (o, [None] * (3 - len(calls)) + calls)
    return out


@pytest.mark.parametrize("mode", ["weights", "lr", "finetune"])
def test_batchnorm_statistics_a_level_starts_from(bn_modes, mode):
    """Level L >= 1 starts from the BatchNorm statistics of the weights it starts from: under
    `weights` those saved at the rewind point k, under `lr` and `finetune` level L-1's final ones."""
    out, spy = bn_modes[mode]
    rd = RunDir(out.run_dir, "")
    at_k = on_disk(out.run_dir, "rewind")["batch_stats"]
    assert at_k and len(spy) == 3 and spy[1] is not None
    for level in (1, 2):
        start = spy[level]["states"].batch_stats
        final_before = on_disk(rd.level_dir(level - 1), "final")["batch_stats"]
        expected, other = (at_k, final_before) if mode == "weights" else (final_before, at_k)
        assert_trees_equal(start, expected)
        pairs = zip(jax.tree.leaves(start), jax.tree.leaves(other))
        assert not all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in pairs)  # the other rule differs here

