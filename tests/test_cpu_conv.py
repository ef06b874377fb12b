"""The CPU convolution routes compute the same convolution (and gradients) as `lax.conv`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax import lax

from lth.config.schema import ModelConfig
from lth.models import build_model, cpu_conv

DIMS = ("NHWC", "HWIO", "NHWC")

# (input shape, kernel shape, strides, padding, the route on a CPU)
CASES = [
    ((2, 2, 2, 8), (3, 3, 8, 8), (1, 1), ((1, 1), (1, 1)), "im2col"),  # VGG's 2x2 last stage
    ((2, 1, 1, 8), (3, 3, 8, 4), (1, 1), ((1, 1), (1, 1)), "im2col"),
    ((2, 9, 9, 3), (3, 3, 3, 5), (1, 1), ((1, 1), (1, 1)), "im2col"),  # an RGB first layer
    ((2, 11, 11, 3), (7, 7, 3, 4), (2, 2), ((3, 3), (3, 3)), "im2col"),  # ResNet-18/50's stem
    ((2, 8, 8, 3), (3, 3, 3, 4), (1, 1), ((0, 1), (2, 0)), "im2col"),  # asymmetric padding
    ((1, 16, 16, 64), (3, 3, 64, 64), (1, 1), ((1, 1), (1, 1)), "fast_kernel_grad"),
    ((1, 33, 33, 64), (3, 3, 64, 64), (2, 2), ((1, 1), (1, 1)), "fast_kernel_grad"),  # stride 2, odd size
    ((2, 6, 6, 8), (3, 3, 8, 8), (1, 1), ((1, 1), (1, 1)), "lax"),
    ((2, 6, 6, 8), (1, 1, 8, 16), (2, 2), ((0, 0), (0, 0)), "lax"),  # a 1x1 shortcut
]


def _inputs(xs, ws):
    kx, kw = jax.random.split(jax.random.PRNGKey(0))
    return jax.random.normal(kx, xs), jax.random.normal(kw, ws)


@pytest.mark.parametrize("xs,ws,strides,padding,route", CASES, ids=[c[-1] + str(c[0]) + str(c[1]) for c in CASES])
def test_every_route_is_the_same_convolution_with_the_same_gradients(xs, ws, strides, padding, route, monkeypatch):
    monkeypatch.setattr(cpu_conv, "KERNEL_GRAD_DOT", True)
    assert cpu_conv.route(xs, ws, strides, padding) == route
    x, w = _inputs(xs, ws)
    ref = lambda x, w: lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=DIMS)  # noqa: E731
    ours = lambda x, w: cpu_conv.conv_general_dilated(x, w, strides, padding, dimension_numbers=DIMS)  # noqa: E731
    np.testing.assert_allclose(jax.jit(ours)(x, w), ref(x, w), rtol=1e-5, atol=1e-5)
    dy = jax.random.normal(jax.random.PRNGKey(1), ref(x, w).shape)
    g_ref = jax.grad(lambda x, w: jnp.sum(ref(x, w) * dy), argnums=(0, 1))(x, w)
    g_ours = jax.jit(jax.grad(lambda x, w: jnp.sum(ours(x, w) * dy), argnums=(0, 1)))(x, w)
    for a, b in zip(g_ours, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_the_kernel_gradient_route_is_off_by_default():
    """jaxlib 0.10's XLA:CPU kernel gradient is faster than the dot route: large convs are lax's."""
    assert not cpu_conv.KERNEL_GRAD_DOT
    assert cpu_conv.route((1, 16, 16, 64), (3, 3, 64, 64), (1, 1), ((1, 1), (1, 1))) == "lax"


def test_the_routes_are_taken_on_a_cpu():
    """The im2col route really is im2col (a dot, no convolution) when the backend is a CPU."""
    x, w = _inputs((2, 2, 2, 8), (3, 3, 8, 8))
    hlo = jax.jit(lambda x, w: cpu_conv.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=DIMS)).lower(x, w).as_text()
    if jax.default_backend() == "cpu":
        assert "convolution" not in hlo and "dot_general" in hlo
    else:
        assert "convolution" in hlo


def test_other_convolutions_are_lax_exactly():
    """Dilated, grouped and string-padded convolutions give bit-identical results to lax's."""
    x, w = _inputs((2, 7, 7, 8), (3, 3, 4, 8))
    kw = dict(dimension_numbers=DIMS, feature_group_count=2)
    np.testing.assert_array_equal(cpu_conv.conv_general_dilated(x, w, (1, 1), "SAME", **kw),
                                  lax.conv_general_dilated(x, w, (1, 1), "SAME", **kw))
    x, w = _inputs((2, 7, 7, 8), (3, 3, 8, 8))
    kw = dict(dimension_numbers=DIMS, rhs_dilation=(2, 2))
    np.testing.assert_array_equal(cpu_conv.conv_general_dilated(x, w, (1, 1), "VALID", **kw),
                                  lax.conv_general_dilated(x, w, (1, 1), "VALID", **kw))


def test_flax_conv_with_same_padding_through_the_routes():
    x, _ = _inputs((2, 2, 2, 6), (3, 3, 6, 6))
    plain = nn.Conv(5, (3, 3), padding="SAME")
    routed = nn.Conv(5, (3, 3), padding="SAME", conv_general_dilated=cpu_conv.conv_general_dilated)
    v = plain.init(jax.random.PRNGKey(0), x)
    assert jax.tree.map(jnp.shape, routed.init(jax.random.PRNGKey(0), x)) == jax.tree.map(jnp.shape, v)
    np.testing.assert_allclose(routed.apply(v, x), plain.apply(v, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", [pytest.param("vgg11", marks=pytest.mark.slow), pytest.param("resnet20", marks=pytest.mark.slow), "conv2"])  # vgg11: 28 s, resnet20: 17 s here
def test_models_compute_the_same_logits_and_gradients_with_and_without_the_routes(name, monkeypatch):
    model = build_model(ModelConfig(name=name), 10)
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 32, 3))
    v = model.init(jax.random.PRNGKey(1), x, train=False)

    def loss(params):
        return jnp.sum(model.apply({**v, "params": params}, x, train=False) ** 2)

    monkeypatch.setattr(cpu_conv, "ROUTED", False)
    want_logits, want_grads = model.apply(v, x, train=False), jax.grad(loss)(v["params"])
    monkeypatch.setattr(cpu_conv, "ROUTED", True)
    got_logits, got_grads = model.apply(v, x, train=False), jax.grad(loss)(v["params"])
    np.testing.assert_allclose(got_logits, want_logits, rtol=1e-4, atol=1e-4)
    for path, g in jax.tree_util.tree_leaves_with_path(got_grads):
        want = dict(jax.tree_util.tree_leaves_with_path(want_grads))[path]
        np.testing.assert_allclose(g, want, rtol=1e-3, atol=1e-3 * float(jnp.max(jnp.abs(want))), err_msg=str(path))
