"""`lth.models.materialize`: a ResNet block output computed once on a CPU, with the same values,
running statistics and gradients as without it (float rounding)."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from lth.models import materialize as mat
from lth.models.resnet_blocks import BasicBlock, Stage


def test_materialize_is_the_identity_bit_for_bit_and_nan_stays_nan():
    x = jax.nn.relu(jax.random.normal(jax.random.PRNGKey(0), (2, 3, 3, 4)))
    f = jax.jit(lambda a: mat.materialize(a, True))
    np.testing.assert_array_equal(f(x), x)
    np.testing.assert_array_equal(jax.grad(lambda a: jnp.sum(mat.materialize(a, True) * 3.0))(x), np.full(x.shape, 3.0))
    assert np.isnan(np.asarray(f(x.at[0, 0, 0, 0].set(jnp.nan)))).all()  # only a NaN activation takes the other branch


def test_only_cpu_training_programs_change(monkeypatch):
    x = jnp.ones((1, 2, 2, 1))
    assert "cond" not in str(jax.make_jaxpr(lambda a: mat.materialize(a, False))(x))  # evaluation
    monkeypatch.setattr(mat, "ENABLED", False)
    assert "cond" not in str(jax.make_jaxpr(lambda a: mat.materialize(a, True))(x))
    monkeypatch.setattr(mat, "ENABLED", True)
    has_cond = "cond" in str(jax.make_jaxpr(lambda a: mat.materialize(a, True))(x))
    assert has_cond == (jax.default_backend() == "cpu")


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
        x = Stage(BasicBlock, 2, 4, 1, init, nn.initializers.ones, name="stage1")(x, train)
        x = Stage(BasicBlock, 1, 8, 2, init, nn.initializers.ones, name="stage2")(x, train)
        return x.mean(axis=(1, 2))


def _loss_grads_hlo(enabled):
    mat.ENABLED = enabled
    try:
        net, x = _Net(), jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 4))
        v = net.init(jax.random.PRNGKey(2), x)

        def loss(params):
            out, upd = net.apply({"params": params, "batch_stats": v["batch_stats"]}, x, train=True, mutable=["batch_stats"])
            return jnp.sum(out**2), (out, upd["batch_stats"])

        compiled = jax.jit(jax.value_and_grad(loss, has_aux=True)).lower(v["params"]).compile()
        return compiled(v["params"]), compiled.as_text()
    finally:
        mat.ENABLED = True


def test_residual_blocks_give_the_same_outputs_stats_and_gradients_and_keep_the_conditionals():
    """Same loss, outputs, running statistics and gradients; on a CPU the compiled program keeps
    the conditionals (XLA folds them away when both branches are the identity, and then the block
    outputs are recomputed inside fusions again)."""
    ((l0, (o0, s0)), g0), hlo0 = _loss_grads_hlo(False)
    ((l1, (o1, s1)), g1), hlo1 = _loss_grads_hlo(True)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    np.testing.assert_allclose(o1, o0, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves((s1, g1)), jax.tree.leaves((s0, g0))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert "conditional(" not in hlo0
    assert ("conditional(" in hlo1) == (jax.default_backend() == "cpu")
