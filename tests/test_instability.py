"""Instability analysis (lth.analysis.instability): the barrier, the path between two networks, BatchNorm
statistics along it, and whole runs (dense, under a ticket's mask, extended, refused)."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from conftest import make_tiny_dataset, small_config
from lth.analysis import instability
from lth.lottery import levels as lottery
from lth.sparsity import masks as M
from lth.config.schema import ConfigError, InstabilityConfig, ModelConfig, OptimizerConfig, TrainConfig
from lth.train.optim import make_optimizer, make_schedule
from lth.train.trainer import Trainer, replicate_keys


# -- the barrier --------------------------------------------------------------------------------
def test_error_barrier_known_paths():
    assert instability.error_barrier([0.1, 0.05, 0.02, 0.1]) == 0.0  # convex: never above the ends
    assert instability.error_barrier([0.2, 0.2, 0.2]) == 0.0  # flat
    assert instability.error_barrier([0.1, 0.4, 0.3]) == pytest.approx(0.4 - 0.2)  # a bump over mean(0.1, 0.3)
    assert instability.error_barrier([0.1, 0.2, 0.3]) == pytest.approx(0.3 - 0.2)  # linear: half the end gap


def test_interpolate_is_exact_at_the_ends_and_keeps_zeros():
    a = {"k": jnp.array([1.0, 0.0, -2.0])}
    b = {"k": jnp.array([3.0, 0.0, 4.0])}
    assert np.array_equal(instability.interpolate(a, b, 0.0)["k"], a["k"])
    assert np.array_equal(instability.interpolate(a, b, 1.0)["k"], b["k"])
    np.testing.assert_allclose(instability.interpolate(a, b, 0.25)["k"], [1.5, 0.0, -0.5])


# -- a hand-made pair: one network and its hidden units permuted ---------------------------------
def _trainer(widths=(16,)):
    from lth.models import build_model

    ds = make_tiny_dataset()
    opt = OptimizerConfig(name="sgd", lr=0.1)
    model = build_model(ModelConfig(name="mlp", widths=list(widths)), ds.num_classes)
    return Trainer(model, ds, make_optimizer(opt), make_schedule(opt, total_steps=10, steps_per_epoch=12), batch_size=50,
                   eval_batch_size=64)


def _numpy_error(params, ds):
    """Test error of the one-hidden-layer MLP `params` by an independent NumPy forward pass."""
    p = jax.tree.map(np.asarray, params)
    x = ds.normalize(ds.x_test).reshape(len(ds.x_test), -1)
    h = np.maximum(x @ p["fc1"]["kernel"] + p["fc1"]["bias"], 0)
    logits = h @ p["head"]["kernel"] + p["head"]["bias"]
    return float(np.mean(np.argmax(logits, 1) != ds.y_test))


def test_path_errors_identical_ends_and_a_permutation_bump():
    tr = _trainer()
    v = tr.init_variables(replicate_keys(0, 1)["init"])
    states = tr.create_states(v, jax.vmap(M.ones_like)(v["params"]))
    p1 = states.params
    perm = np.random.default_rng(0).permutation(16)
    # The same function with its hidden units in another order: equal end errors, a bump between.
    p2 = {"fc1": {"kernel": p1["fc1"]["kernel"][:, :, perm], "bias": p1["fc1"]["bias"][:, perm]},
          "head": {"kernel": p1["head"]["kernel"][:, perm, :], "bias": p1["head"]["bias"]}}
    alphas = np.linspace(0, 1, 5)
    same, _ = instability.path_errors(tr, states, (p1, {}), (p1, {}), alphas)
    assert np.all(same == same[0]) and instability.error_barrier(same[:, 0]) == 0.0
    errs, _ = instability.path_errors(tr, states, (p1, {}), (p2, {}), alphas)
    assert errs[0, 0] == errs[-1, 0]
    one = lambda tree: jax.tree.map(lambda x: x[0], tree)
    for i, a in enumerate(alphas):  # every point of the path, against the NumPy forward pass
        assert errs[i, 0] == pytest.approx(_numpy_error(instability.interpolate(one(p1), one(p2), float(a)), tr.dataset), abs=1e-6)
    assert instability.error_barrier(errs[:, 0]) == pytest.approx(errs[:, 0].max() - errs[0, 0])


# -- BatchNorm statistics along the path ----------------------------------------------------------
def _bn_net(momentum):
    """Dense(3) then BatchNorm at `momentum` (a field `bn_momentum`, as lth's BatchNorm models)."""
    from flax import linen as nn

    from lth.models.batch_norm import batch_norm

    class Net(nn.Module):
        bn_momentum: float = 0.9
        classes: int = 4

        @nn.compact
        def __call__(self, x, train=False):
            x = nn.Dense(3, name="fc")(x)
            x = nn.relu(batch_norm(train, nn.initializers.ones, "bn", self.bn_momentum)(x))
            return nn.Dense(self.classes, name="head")(x)

    return Net(bn_momentum=momentum)


def _numpy_bn_stats(params, batches):
    """The mean over `batches` (B, n, features) of each batch's mean and biased variance of fc's output."""
    h = np.einsum("bnf,fo->bno", np.asarray(batches, np.float64), np.asarray(params["fc"]["kernel"], np.float64))
    h = h + np.asarray(params["fc"]["bias"], np.float64)
    return h.mean(axis=1).mean(axis=0), h.var(axis=1).mean(axis=0)


@pytest.mark.parametrize("momentum", [0.9, 0.997, 0.5])
def test_recompute_batch_stats_is_the_average_of_batch_statistics(momentum):
    net = _bn_net(momentum)
    x = np.random.default_rng(1).normal(size=(4, 8, 5)).astype(np.float32) * 3 + 1
    v = net.init(jax.random.PRNGKey(0), x[0], train=False)
    stale = jax.tree.map(lambda s: s + 7.0, v["batch_stats"])  # what interpolation would leave
    stats = instability.recompute_batch_stats(net, v["params"], stale, jnp.asarray(x))
    mean, var = _numpy_bn_stats(v["params"], x)
    np.testing.assert_allclose(stats["bn"]["mean"], mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats["bn"]["var"], var, rtol=1e-4, atol=1e-5)


def test_path_errors_recompute_statistics_whatever_the_momentum():
    """Issue 25: the path's statistics were divided by 1 − 0.9 whatever `model.bn_momentum` was
    (at 0.997 they came out scaled by 0.03). Along the path of a network at momentum 0.997, the
    loss must be the loss under the statistics computed directly in NumPy."""
    ds = make_tiny_dataset()
    opt = OptimizerConfig(name="sgd", lr=0.1)
    tr = Trainer(_bn_net(0.997), ds, make_optimizer(opt), make_schedule(opt, total_steps=10, steps_per_epoch=12),
                 batch_size=50, eval_batch_size=64)
    v = tr.init_variables(replicate_keys(0, 1)["init"])
    states = tr.create_states(v, jax.vmap(M.ones_like)(v["params"]))
    x = ds.normalize(ds.x_train[:200]).reshape(4, 50, -1)
    end = (states.params, states.batch_stats)
    _, losses = instability.path_errors(tr, states, end, end, [0.0], jnp.asarray(x))
    mean, var = _numpy_bn_stats(jax.tree.map(lambda a: a[0], states.params), x)
    direct = {"bn": {"mean": jnp.asarray(mean[None], jnp.float32), "var": jnp.asarray(var[None], jnp.float32)}}
    expect = tr.evaluate(states.replace(batch_stats=direct), "test")["loss"]
    np.testing.assert_allclose(losses[0], np.asarray(expect), rtol=1e-5)


# -- whole runs -----------------------------------------------------------------------------------
def _cfg(tmp_path, points=("0it", "20it"), **inst):
    cfg = small_config(tmp_path, replicates=2, model=ModelConfig(name="mlp", widths=[32]),
                       train=TrainConfig(duration="60it", batch_size=100, eval_every="20it"))
    return dataclasses.replace(cfg, instability=InstabilityConfig(points=list(points), alphas=5, **inst))


def test_dense_run_writes_barriers_and_extends(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.logger.wandb.mode = "offline"
    from lth.analysis import reports

    out = instability.run(cfg, echo=lambda _: None, reports=reports.instability)  # as lth.run and the entry point ask
    # W&B (offline): one run with the tables and both figures as images (the reports asked for).
    runs = [d for d in os.listdir(os.path.join(out.run_dir, "wandb")) if d.startswith("offline-run-")]
    assert len(runs) == 1
    media = os.path.join(out.run_dir, "wandb", runs[0], "files", "media")
    files = [f for _, _, fs in os.walk(media) for f in fs]
    assert any("barrier_vs_point" in f for f in files) and any("interpolation_curves" in f for f in files), files
    assert any(f.endswith(".table.json") for f in files)
    t = pd.read_csv(os.path.join(out.run_dir, "instability.csv"))
    c = pd.read_csv(os.path.join(out.run_dir, "curves.csv"))
    assert list(t.columns) == instability.CSV_COLUMNS
    assert len(t) == 2 * 2 and sorted(t.step.unique()) == [0, 20] and set(t.level) == {-1} and set(t.density) == {1.0}
    assert len(c) == 2 * 2 * 5 and sorted(c.alpha.unique()) == pytest.approx(list(np.linspace(0, 1, 5)))
    assert (t.barrier >= 0).all() and t.barrier.notna().all()
    # No BatchNorm: the path's ends are exactly the trained copies.
    assert (t.error_start == t.error_trained_1).all() and (t.error_end == t.error_trained_2).all()
    assert (t.error_trained_1 != t.error_trained_2).any()  # different data orders
    for _, row in t.iterrows():  # the barrier is the curve's
        e = c[(c.step == row.step) & (c.replicate == row.replicate)].sort_values("alpha").test_error.to_numpy()
        assert row.barrier == pytest.approx(instability.error_barrier(e))
    # More points: the same directory, the finished points read back, only the new one trained.
    said = []
    more = instability.run(_cfg(tmp_path, points=("0it", "20it", "40it")), echo=said.append)
    assert more.run_dir == out.run_dir and sum("done already" in s for s in said) == 2
    t2 = pd.read_csv(os.path.join(out.run_dir, "instability.csv"))
    assert len(t2) == 3 * 2
    pd.testing.assert_frame_equal(t2[t2.step < 40].reset_index(drop=True), t)


@pytest.mark.slow  # ~18 s; the dense analysis is tested by default
def test_run_under_a_tickets_mask(tmp_path):
    src = lottery.run(dataclasses.replace(_cfg(tmp_path), levels=1), echo=lambda _: None)
    out = instability.run(_cfg(tmp_path, points=("20it",), source=src.run_dir, level=1), echo=lambda _: None)
    t = pd.read_csv(os.path.join(out.run_dir, "instability.csv"))
    ticket = src.results[(src.results.level == 1) & (src.results.kind == "ticket")].sort_values("replicate")
    np.testing.assert_allclose(t.density.to_numpy(), ticket.density.to_numpy())
    assert set(t.level) == {1} and (t.density < 0.9).all()
    assert (t.error_start == t.error_trained_1).all()
    before = sorted(os.listdir(tmp_path / "runs"))
    with pytest.raises(ConfigError, match="instability.level=3: not a finished level"):
        instability.run(_cfg(tmp_path, source=src.run_dir, level=3), echo=lambda _: None)
    assert sorted(os.listdir(tmp_path / "runs")) == before


@pytest.mark.parametrize("change, match", [
    (dict(alphas=1), "instability.alphas=1"),
    (dict(points=[]), "instability.points=\\[\\]"),
    (dict(points=["60it"]), "instability.points\\[0\\]='60it' is step 60"),
    (dict(level=1), "give both"),
    (dict(source="/nonexistent/run", level=1), "does not exist"),
    (dict(bn_batches=-1), "instability.bn_batches=-1"),
])
def test_bad_input_refused_before_anything_is_written(tmp_path, change, match):
    cfg = _cfg(tmp_path)
    cfg = dataclasses.replace(cfg, instability=dataclasses.replace(cfg.instability, **change))
    with pytest.raises(ConfigError, match=match):
        instability.run(cfg, echo=lambda _: None)
    assert not os.path.exists(tmp_path / "runs")

