"""`lth.models.batch_norm_vjp`: BatchNorm in training mode on a CPU with matrix-vector sums and a
closed-form backward pass gives Flax's outputs, running statistics and gradients (float rounding),
with the same variables, and leaves evaluation alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from lth.models import batch_norm_vjp as bv
from lth.models.batch_norm import batch_norm
from lth.models.resnet_blocks import BasicBlock, Stage


def test_channel_sum_is_at_least_as_accurate_as_xlas_reduction():
    x = np.random.default_rng(0).standard_normal((128, 16, 16, 8)).astype(np.float32) * 2 + 3
    exact = x.astype(np.float64).sum((0, 1, 2))
    ours = np.asarray(jax.jit(bv.channel_sum)(x), np.float64)
    xla = np.asarray(jax.jit(lambda a: a.sum((0, 1, 2)))(x), np.float64)
    assert np.max(np.abs(ours - exact) / exact) < 1e-6
    assert np.max(np.abs(ours - exact)) <= np.max(np.abs(xla - exact)) + 1e-3


def test_batch_norm_train_matches_autodiff_of_the_same_forward():
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 5, 5, 3)) * 2 + 1
    scale, bias = jnp.array([0.5, 1.0, 2.0]), jnp.array([0.1, -0.2, 0.3])
    w = jax.random.normal(jax.random.PRNGKey(1), x.shape)

    def plain(x, s, b):  # Flax's formulas, autodiff everywhere
        mean, var = x.mean((0, 1, 2)), jnp.maximum(0.0, jnp.square(x).mean((0, 1, 2)) - jnp.square(x.mean((0, 1, 2))))
        return jnp.sum(w * ((x - mean) * (jax.lax.rsqrt(var + 1e-5) * s) + b))

    ours = lambda x, s, b: jnp.sum(w * bv.batch_norm_train(x, s, b, 1e-5)[0])  # noqa: E731
    for a, b in zip(jax.grad(ours, (0, 1, 2))(x, scale, bias), jax.grad(plain, (0, 1, 2))(x, scale, bias)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
        x = nn.relu(batch_norm(train, nn.initializers.uniform(1.0), "bn1")(x))
        x = Stage(BasicBlock, 2, 4, 1, init, nn.initializers.uniform(1.0), name="stage1")(x, train)
        x = Stage(BasicBlock, 1, 8, 2, init, nn.initializers.uniform(1.0), name="stage2")(x, train)
        return x.mean(axis=(1, 2))


def _run(enabled, train=True):
    bv.ENABLED = enabled
    try:
        net, x = _Net(), jax.random.normal(jax.random.PRNGKey(1), (8, 8, 8, 4)) + 0.5
        v = net.init(jax.random.PRNGKey(2), x)
        v = {**v, "batch_stats": jax.tree.map(lambda a: a + 0.25, v["batch_stats"])}

        def loss(params):
            out, upd = net.apply({"params": params, "batch_stats": v["batch_stats"]}, x, train=train,
                                 mutable=["batch_stats"])
            return jnp.sum(jnp.sin(out)), (out, upd["batch_stats"])

        return v, jax.jit(jax.value_and_grad(loss, has_aux=True))(v["params"]), jax.make_jaxpr(loss)(v["params"])
    finally:
        bv.ENABLED = True


def test_training_gives_flax_values_statistics_gradients_and_variables():
    v0, ((l0, (o0, s0)), g0), _ = _run(False)
    v1, ((l1, (o1, s1)), g1), jaxpr = _run(True)
    assert jax.tree.map(jnp.shape, v1) == jax.tree.map(jnp.shape, v0)  # same names and shapes
    for a, b in zip(jax.tree.leaves(v1), jax.tree.leaves(v0)):  # same initialisers
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    np.testing.assert_allclose(o1, o0, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s0)):  # running statistics
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5 * float(np.max(np.abs(b))) + 1e-7)
    assert ("custom_vjp" in str(jaxpr)) == (jax.default_backend() == "cpu")


def test_evaluation_and_other_devices_keep_flax(monkeypatch):
    _, ((l0, (o0, s0)), _), jaxpr = _run(True, train=False)
    assert "custom_vjp" not in str(jaxpr)
    assert not bv.applies(False)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert not bv.applies(True)
    monkeypatch.setattr(bv, "ENABLED", False)
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert not bv.applies(True)


@pytest.mark.parametrize("dtype", [jnp.bfloat16])
def test_low_precision_inputs_give_float32_outputs_as_flax(dtype):
    x = (jax.random.normal(jax.random.PRNGKey(0), (4, 3, 3, 2)) * 3).astype(dtype)
    bn = bv.TrainBatchNorm(0.9, 1e-5, nn.initializers.ones, nn.initializers.zeros)
    ref = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
    v = ref.init(jax.random.PRNGKey(0), x)
    a, _ = bn.apply(v, x, mutable=["batch_stats"])
    b, _ = ref.apply(v, x, mutable=["batch_stats"])
    assert a.dtype == b.dtype
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_a_member_is_the_same_bit_for_bit_whatever_the_members_beside_it():
    """Replicates are a vmapped leading axis: the matrix-vector sums must not round a member
    differently with 1, 2 or 4 members (as lth.integrations.xla_flags ensures for reductions)."""
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 16, 8, 8, 4)) + 1
    s, b, w = jnp.full((4, 4), 1.3), jnp.full((4, 4), 0.1), jax.random.normal(jax.random.PRNGKey(1), x.shape[1:])

    def f(x, s, b):
        y, mean, var = bv.batch_norm_train(x, s, b, 1e-5)
        return jnp.sum(jnp.sin(y) * w), (mean, var)

    g = jax.jit(jax.vmap(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)))
    r4, r2, r1 = g(x, s, b), g(x[:2], s[:2], b[:2]), g(x[:1], s[:1], b[:1])
    for a, c, d in zip(jax.tree.leaves(r4), jax.tree.leaves(r2), jax.tree.leaves(r1)):
        np.testing.assert_array_equal(a[:1], c[:1])
        np.testing.assert_array_equal(a[:1], d[:1])
