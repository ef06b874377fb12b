"""Straight-through magnitude pruning (`pruning.method=magnitude_ste`, lth.sparsity.ste) against its
definition: the forward pass uses exactly the top-k masked weights, the dense weights take w̃'s
gradient at every position (plus SR-STE's λ·w on the pruned ones), the mask is recomputed every
step (a weight can come back), evaluation is of m(w) ⊙ w, a short MNIST-1D run ends at the exact
density, and the settings that do not fit are refused."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lth.config.schema import ConfigError, ModelConfig, OptimizerConfig, PruningConfig, TrainConfig, validate
from lth.models import build_model
from lth.sparsity import allocation, masks as M
from lth.sparsity.ste import SteMagnitude
from lth.train.optim import make_optimizer, make_schedule
from lth.train.trainer import Trainer, replicate_keys

from conftest import make_tiny_dataset, small_config

PATHS = ["fc1/kernel", "fc2/kernel", "head/kernel"]
LR = 0.1


def make_trainer(ds, decay=0.0, density=0.2, **build):
    opt = OptimizerConfig(name="sgd", lr=LR)  # plain SGD: the update is -lr · g, so g can be read off it
    model = build_model(ModelConfig(name="mlp", widths=[32, 16]), ds.num_classes)
    tr = Trainer(model, ds, make_optimizer(opt), make_schedule(opt, total_steps=100, steps_per_epoch=12),
                 batch_size=50, eval_batch_size=64)
    v = tr.init_variables(replicate_keys(0, 2)["init"])
    one = jax.tree.map(lambda a: a[0], v["params"])
    flat = M.flatten(one)
    tr.ste = SteMagnitude.build({p: flat[p].shape for p in PATHS}, density, decay=decay, **build)
    states = tr.ste.initial(tr.create_states(v, jax.vmap(M.ones_like)(v["params"])))
    return tr, states


def first(tree):
    return jax.tree.map(lambda a: a[0], tree)


def flat_np(tree):
    return {p: np.asarray(a) for p, a in M.flatten(jax.device_get(tree)).items()}


@pytest.fixture(scope="module")
def setup():
    ds = make_tiny_dataset()
    tr, states = make_trainer(ds)
    return ds, tr, states


def masked_loss_and_grad(tr, w_tilde, batch_stats, x, y):
    """∂L/∂w̃ written out: the loss of the network whose weights are w̃, differentiated at w̃."""
    def loss(p):
        logits = tr.model.apply({"params": p}, x, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return jax.value_and_grad(loss)(w_tilde)


# -- the mask -------------------------------------------------------------------------------------
@pytest.mark.parametrize("distribution", ["uniform", "erk"])
def test_mask_keeps_exactly_the_largest_magnitudes_of_each_tensor(setup, distribution):
    _, tr, states = setup
    params = first(states.params)
    shapes = {p: np.shape(M.flatten(params)[p]) for p in PATHS}
    ste = SteMagnitude.build(shapes, 0.1, distribution=distribution)
    counts = allocation.keep_counts(shapes, allocation.tensor_densities(distribution, shapes, 0.1))
    mask, w = flat_np(jax.jit(ste.mask)(params)), flat_np(params)
    for p in PATHS:
        assert mask[p].dtype == bool and int(mask[p].sum()) == counts[p], p
        kept, pruned = np.abs(w[p][mask[p]]), np.abs(w[p][~mask[p]])
        assert kept.min() >= pruned.max(), p  # the top-|w|, exactly
    assert mask["fc1/bias"].all() and mask["head/bias"].all()  # not prunable: never masked
    if distribution == "erk":
        assert len({counts[p] / np.prod(shapes[p]) for p in PATHS}) > 1  # per-tensor densities really differ


def test_global_scope_shares_one_count_and_ties_keep_the_later_weights():
    params = {"a": {"kernel": jnp.array([[1.0, 3.0], [2.0, 2.0]])}, "b": {"kernel": jnp.array([[2.0, -5.0]])}}
    ste = SteMagnitude.build({"a/kernel": (2, 2), "b/kernel": (1, 2)}, 0.5, scope="global")  # round(0.5·6) = 3
    mask = flat_np(ste.mask(params))
    # |w| = 5, 3 kept; of the three 2s one more: the last in path order, row-major (b's).
    np.testing.assert_array_equal(mask["a/kernel"], [[False, True], [False, False]])
    np.testing.assert_array_equal(mask["b/kernel"], [[True, True]])


def test_n_of_m_masks_keep_n_largest_of_every_m_along_the_input_axis():
    w = jax.random.normal(jax.random.PRNGKey(3), (8, 5))
    ste = SteMagnitude.build({"k": (8, 5)}, 0.5, n_m=(2, 4))
    mask = np.asarray(ste.mask({"k": w})["k"])
    groups, mags = mask.reshape(2, 4, 5), np.abs(np.asarray(w)).reshape(2, 4, 5)
    assert (groups.sum(axis=1) == 2).all()
    assert (np.where(groups, mags, np.inf).min(axis=1) >= np.where(groups, -np.inf, mags).max(axis=1)).all()
    with pytest.raises(ValueError, match="not a multiple of m=4"):
        SteMagnitude.build({"k": (6, 5)}, 0.5, n_m=(2, 4))


# -- one step -------------------------------------------------------------------------------------
def one_step(tr, states, ds):
    s = first(states)
    x, y = jnp.asarray(ds.x_train[:50]), jnp.asarray(ds.y_train[:50])
    new, metrics = jax.jit(tr._train_step)(s, x, y)
    return s, x, y, new, metrics


def test_forward_uses_the_masked_weights_and_the_gradient_passes_straight_through(setup):
    ds, tr, states = setup
    s, x, y, new, metrics = one_step(tr, states, ds)
    w_tilde = M.apply_mask(s.params, s.mask)
    loss, g = masked_loss_and_grad(tr, w_tilde, s.batch_stats, x, y)
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-6)  # the loss of m(w) ⊙ w ...
    dense_loss, _ = masked_loss_and_grad(tr, s.params, s.batch_stats, x, y)
    assert abs(float(dense_loss) - float(loss)) > 1e-3  # ... not of the dense w
    g, w0, w1, m = flat_np(g), flat_np(s.params), flat_np(new.params), flat_np(s.mask)
    for p in PATHS:
        read = (w0[p] - w1[p]) / LR  # SGD: w1 = w0 − lr · g
        np.testing.assert_allclose(read, g[p], rtol=1e-4, atol=1e-6)  # at every position ...
        assert (np.abs(g[p][~m[p]]) > 0).mean() > 0.25 and (w1[p][~m[p]] != w0[p][~m[p]]).mean() > 0.25  # ... pruned ones too
        assert (w0[p][~m[p]] != 0).all()  # the dense weights are kept, not zeroed


def test_sr_ste_adds_exactly_lambda_w_on_the_pruned_weights(setup):
    ds, _, _ = setup
    lam = 0.5
    tr0, states = make_trainer(ds)
    trl, states_l = make_trainer(ds, decay=lam)
    g0 = tr0.ste.gradients
    s = first(states)
    grads = jax.tree.map(lambda a: jnp.full_like(a, 0.25), s.params)
    with_decay = flat_np(trl.ste.gradients(grads, s.params, s.mask))
    assert g0(grads, s.params, s.mask) is grads  # plain STE: the gradient itself
    w, m = flat_np(s.params), flat_np(s.mask)
    for p in w:
        np.testing.assert_array_equal(with_decay[p], np.where(m[p], np.float32(0.25), np.float32(0.25) + np.float32(lam) * w[p]))
    # and in the step: the updates differ by lr · λ · w on the pruned weights only
    _, _, _, a, _ = one_step(tr0, states, ds)
    _, _, _, b, _ = one_step(trl, states_l, ds)
    a, b = flat_np(a.params), flat_np(b.params)
    for p in PATHS:
        np.testing.assert_array_equal(a[p][m[p]], b[p][m[p]])
        np.testing.assert_allclose((a[p] - b[p])[~m[p]], LR * lam * w[p][~m[p]], rtol=1e-4, atol=1e-7)


def test_mask_is_recomputed_every_step_and_weights_come_back(setup):
    ds, tr, states = setup
    step, m_of = jax.jit(tr._train_step), jax.jit(tr.ste.mask)
    s, masks = first(states), [flat_np(first(states).mask)]
    for t in range(30):
        lo = (t % 12) * 50
        s, _ = step(s, jnp.asarray(ds.x_train[lo:lo + 50]), jnp.asarray(ds.y_train[lo:lo + 50]))
        masks.append(flat_np(s.mask))
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(flat_np(m_of(s.params))), jax.tree.leaves(masks[-1])))
    came_back = sum(int((~masks[t][p] & masks[t + 1][p]).sum()) for t in range(30) for p in PATHS)
    assert came_back > 0  # pruned at one step, kept at the next
    # the trainer's compiled loop (both replicates, vmapped): the state's mask is m(w), exact counts
    run, _ = tr.run(states, replicate_keys(0, 2), 0, 30)
    want = flat_np(jax.vmap(m_of)(run.params))
    got = flat_np(run.mask)
    for p, (_, count) in zip(PATHS, tr.ste.groups):
        np.testing.assert_array_equal(got[p], want[p])
        assert (got[p].reshape(2, -1).sum(axis=1) == count).all()
    assert not np.array_equal(got["fc1/kernel"], flat_np(states.mask)["fc1/kernel"])


def test_evaluation_is_of_the_masked_weights(setup):
    ds, tr, states = setup
    s, _ = tr.run(states, replicate_keys(0, 2), 0, 20)
    ev = tr.evaluate(s, "test")
    for r in range(2):
        p, m = jax.tree.map(lambda a: a[r], s.params), jax.tree.map(lambda a: a[r], s.mask)
        logits = tr.model.apply({"params": M.apply_mask(p, m)}, jnp.asarray(ds.normalize(ds.x_test)), train=False)
        acc = float(np.mean(np.argmax(np.asarray(logits), -1) == ds.y_test))
        loss = float(optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(ds.y_test)).mean())
        assert abs(float(ev["accuracy"][r]) - acc) < 1e-6
        np.testing.assert_allclose(ev["loss"][r], loss, rtol=1e-5)
    ste, tr.ste = tr.ste, None
    try:
        dense = tr.evaluate(s, "test")  # what evaluation without the hook would report
    finally:
        tr.ste = ste
    assert np.abs(dense["loss"] - ev["loss"]).min() > 1e-3


# -- a run ----------------------------------------------------------------------------------------
def test_mnist1d_run_ends_at_the_exact_density(tmp_path):
    from lth.lottery import levels, shared_dense
    from lth.runs import checkpoints

    cfg = small_config(tmp_path, levels=0, replicates=1,
                       pruning=PruningConfig(method="magnitude_ste", schedule="dynamic", target_density=0.1),
                       train=TrainConfig(duration="300it", batch_size=100, eval_every="100it"))
    assert not shared_dense.shareable(cfg)  # level 0 is not the dense training other runs share
    out = levels.run(cfg, echo=lambda s: None)
    row = out.results.iloc[0]
    sizes = {"fc1/kernel": 40 * 64, "fc2/kernel": 64 * 64, "head/kernel": 64 * 10}
    kept = {p: allocation.round_half_up(0.1 * n) for p, n in sizes.items()}
    assert row["density"] == pytest.approx(sum(kept.values()) / sum(sizes.values()), abs=1e-12)
    assert row["test_accuracy"] > 0.25  # chance: 0.1
    d = f"{out.run_dir}/level_00"
    mask = {p: a[0] for p, a in flat_np(checkpoints.restore(f"{d}/mask", None)).items()}
    final = {p: a[0] for p, a in flat_np(checkpoints.restore(f"{d}/final", None)["params"]).items()}
    for p, k in kept.items():
        assert int(mask[p].sum()) == k
        assert (final[p][~mask[p]] == 0).all() and (final[p][mask[p]] != 0).all()  # saved: m(w_T) ⊙ w_T


# -- the settings ---------------------------------------------------------------------------------
def test_the_command_line_spelling_composes(compose):
    cfg = compose("levels=0", "pruning.schedule=dynamic", "pruning.method=magnitude_ste", "pruning.target_density=0.1",
                  "pruning.ste_decay=2e-4")
    assert (cfg.pruning.method, cfg.pruning.schedule, cfg.pruning.ste_decay) == ("magnitude_ste", "dynamic", 2e-4)


STE = dict(method="magnitude_ste", schedule="dynamic", target_density=0.1)


@pytest.mark.parametrize("levels, pruning, match", [
    (1, STE, "levels=1.*needs levels=0"),
    (0, {**STE, "schedule": "gradual"}, "pruning.schedule='gradual'.*needs pruning.schedule=dynamic"),
    (2, {**STE, "schedule": "iterative", "target_density": None}, "pruning.schedule='iterative'.*dynamic"),
    (0, {**STE, "ste_decay": -1e-4}, r"pruning.ste_decay=-0.0001.*>= 0"),
    (0, {"schedule": "gradual", "target_density": 0.1, "ste_decay": 2e-4}, "pruning.ste_decay=0.0002 is for pruning.method=magnitude_ste"),
    (0, {"method": "magnitude", "schedule": "dynamic", "target_density": 0.1}, "pruning.method='magnitude'.*magnitude_ste"),
    (0, {**STE, "granularity": "neuron"}, "pruning.granularity='neuron'.*allows weight or n:m"),
    (0, {**STE, "scope": "module"}, "pruning.scope='module'.*allows"),
    (0, {**STE, "fractions": {"head": 0.5}}, "pruning.fractions.*pruning.distribution=custom"),
    (0, {**STE, "target_density": None}, "pruning.target_density=None"),
])
def test_what_does_not_fit_is_refused(tmp_path, levels, pruning, match):
    cfg = small_config(tmp_path, levels=levels, pruning=PruningConfig(**pruning))
    with pytest.raises(ConfigError, match=match):
        validate(cfg)


def test_a_density_distribution_that_cannot_be_met_is_a_config_error():
    from lth.sparsity.ste import from_config

    p = PruningConfig(**STE, distribution="custom", densities={"fc1": 1.0})
    with pytest.raises(ConfigError, match="magnitude_ste.*would need density"):
        from_config(p, {"fc1/kernel": (100, 10), "head/kernel": (10, 2)})
    assert dataclasses.asdict(PruningConfig())["ste_decay"] == 0.0
