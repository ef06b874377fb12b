"""Pruning-at-initialisation scores (lth.sparsity.scores) against hand computations.

The reference network is a two-layer ReLU MLP written out in numpy, with its cross-entropy
gradient derived by hand, so that SNIP and GraSP are checked against code that shares nothing
with JAX's autodiff; SynFlow is checked against its closed form for bias-free (and BatchNorm)
networks, where R = 1ᵀ|W1||W2|1.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from lth.sparsity import scores

# -- the reference network ---------------------------------------------------------------------


def make_params(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return {
        "fc0": {"kernel": rng.normal(size=(3, 4)).astype(dtype), "bias": rng.normal(size=4).astype(dtype) * 0.1},
        "head": {"kernel": rng.normal(size=(4, 2)).astype(dtype), "bias": rng.normal(size=2).astype(dtype) * 0.1},
    }


def make_mask(params):
    mask = jax.tree.map(lambda p: np.ones(np.shape(p), bool), params)
    mask["fc0"]["kernel"][1, 2] = False
    mask["fc0"]["kernel"][0, 0] = False
    mask["head"]["kernel"][3, 1] = False
    return mask


def make_batches(seed=1, n_batches=2, batch=5, dtype=np.float32):
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(n_batches, batch, 3)).astype(dtype)
    ys = rng.integers(0, 2, size=(n_batches, batch)).astype(np.int32)
    return xs, ys


def logits_fn(p, x):
    h = jax.nn.relu(x @ p["fc0"]["kernel"] + p["fc0"]["bias"])
    return h @ p["head"]["kernel"] + p["head"]["bias"]


def masked_np(params, mask):
    return jax.tree.map(lambda p, m: np.where(m, np.asarray(p, np.float64), 0.0), params, mask)


def hand_grad(p, x, y, temperature=1.0):
    """∂/∂θ of mean_i CE(softmax(logits_i / T), y_i) for the 2-layer ReLU net, by hand (float64)."""
    x = np.asarray(x, np.float64)
    W1, b1, W2, b2 = (np.asarray(a, np.float64) for a in (p["fc0"]["kernel"], p["fc0"]["bias"],
                                                           p["head"]["kernel"], p["head"]["bias"]))
    pre = x @ W1 + b1
    h = np.maximum(pre, 0.0)
    z = (h @ W2 + b2) / temperature
    prob = np.exp(z - z.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    dz = (prob - np.eye(z.shape[1])[y]) / x.shape[0] / temperature  # ∂L/∂logits
    dh = dz @ W2.T * (pre > 0)
    return {"fc0": {"kernel": x.T @ dh, "bias": dh.sum(0)}, "head": {"kernel": h.T @ dz, "bias": dz.sum(0)}}


def mean_hand_grad(p, xs, ys, temperature=1.0):
    grads = [hand_grad(p, x, y, temperature) for x, y in zip(xs, ys)]
    return jax.tree.map(lambda *g: np.mean(g, 0), *grads)


def assert_tree_close(actual, expected, **tol):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64), **tol)


# -- SNIP ---------------------------------------------------------------------------------------


def test_snip_is_masked_gradient_times_weight_averaged_over_batches():
    params, xs, ys = make_params(), *make_batches()
    mask = make_mask(params)
    theta = masked_np(params, mask)
    g = mean_hand_grad(theta, xs, ys)
    expected = jax.tree.map(lambda gi, t: np.abs(gi * t), g, theta)

    got = jax.jit(functools.partial(scores.snip, logits_fn))(params, mask, xs, ys)
    got = jax.tree.map(np.asarray, got)

    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(got))
    assert_tree_close(got, expected, rtol=1e-4, atol=1e-7)
    # dead weights: exactly 0
    assert got["fc0"]["kernel"][1, 2] == 0 and got["fc0"]["kernel"][0, 0] == 0 and got["head"]["kernel"][3, 1] == 0
    # the test can tell the mean over both batches from the first batch alone, from the sum, and
    # from the gradient of the unmasked network
    first = jax.tree.map(lambda gi, t: np.abs(gi * t), hand_grad(theta, xs[0], ys[0]), theta)
    unmasked = jax.tree.map(lambda gi, t: np.abs(gi * t), mean_hand_grad(masked_np(params, jax.tree.map(
        lambda m: np.ones_like(m), mask)), xs, ys), theta)
    for wrong in (first, jax.tree.map(lambda e: 2 * e, expected), unmasked):
        assert not np.allclose(np.asarray(got["fc0"]["kernel"]), wrong["fc0"]["kernel"], rtol=1e-3)


def test_snip_matches_a_flax_model_with_the_same_params():
    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2, name="head")(nn.relu(nn.Dense(4, name="fc0")(x)))

    params = make_params(3)
    xs, ys = make_batches(4)
    mask = make_mask(params)
    flax_logits = lambda p, x: MLP().apply({"params": p}, x)
    got = jax.jit(functools.partial(scores.snip, flax_logits))(params, mask, xs, ys)
    theta = masked_np(params, mask)
    expected = jax.tree.map(lambda gi, t: np.abs(gi * t), mean_hand_grad(theta, xs, ys), theta)
    assert_tree_close(got, expected, rtol=1e-4, atol=1e-7)


def test_score_functions_reject_unbatched_data():
    params = make_params()
    xs, ys = make_batches()
    with pytest.raises(ValueError, match="batches of batches"):
        scores.snip(logits_fn, params, make_mask(params), xs[0], ys[0])


# -- GraSP --------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 200.0])
def test_grasp_hessian_gradient_product_matches_finite_differences(temperature):
    params = make_params(5, np.float64)
    mask = make_mask(params)
    xs, ys = make_batches(6, dtype=np.float64)
    theta = masked_np(params, mask)
    g = mean_hand_grad(theta, xs, ys, temperature)
    eps = 1e-6

    def fd_hvp(direction):
        plus = jax.tree.map(lambda t, d: t + eps * d, theta, direction)
        minus = jax.tree.map(lambda t, d: t - eps * d, theta, direction)
        return jax.tree.map(lambda a, b: (a - b) / (2 * eps), mean_hand_grad(plus, xs, ys, temperature),
                            mean_hand_grad(minus, xs, ys, temperature))

    @jax.jit
    def all_of_them(params, mask, xs, ys):
        g, hg = scores.hessian_gradient_product(logits_fn, params, mask, xs, ys, temperature=temperature)
        got = scores.grasp(logits_fn, params, mask, xs, ys, temperature=temperature)
        # the released code's g over the weights only: H[:, kernels] g_kernels
        _, hg_w = scores.hessian_gradient_product(logits_fn, params, mask, xs, ys, temperature=temperature,
                                                  paths=["fc0/kernel", "head/kernel"])
        return g, hg, got, hg_w

    with scores._x64_context():
        g_got, hg, got, hg_w = jax.tree.map(np.asarray, all_of_them(params, mask, xs, ys))
    assert jax.tree.leaves(hg)[0].dtype == np.float64
    assert_tree_close(g_got, g, rtol=1e-9, atol=1e-14)
    expected = fd_hvp(g)
    scale = max(np.abs(leaf).max() for leaf in jax.tree.leaves(expected))
    assert scale > 0
    assert_tree_close(hg, expected, rtol=1e-5, atol=1e-6 * scale)
    assert_tree_close(got, jax.tree.map(lambda t, h, m: np.where(m, t * h, 0.0), theta, expected, mask),
                      rtol=1e-5, atol=1e-6 * scale * 3)
    g_w = jax.tree.map(lambda v: v, g)
    g_w["fc0"]["bias"] = np.zeros_like(g_w["fc0"]["bias"])
    g_w["head"]["bias"] = np.zeros_like(g_w["head"]["bias"])
    expected_w = fd_hvp(g_w)
    assert_tree_close(hg_w, expected_w, rtol=1e-5, atol=1e-6 * scale)
    # (the bias part of g does contribute: the two differ by far more than the tolerance)
    assert np.abs(hg_w["fc0"]["kernel"] - expected["fc0"]["kernel"]).max() > 1e-3 * scale


def test_grasp_rejects_unknown_paths():
    params = make_params()
    xs, ys = make_batches()
    with pytest.raises(ValueError, match="fc9/kernel"):
        scores.grasp(logits_fn, params, make_mask(params), xs, ys, paths=["fc0/kernel", "fc9/kernel"])


@pytest.mark.parametrize("temperature", [1.0, 200.0])
def test_grasp_sign_removes_the_weight_whose_removal_raises_the_gradient_norm(temperature):
    """logits = x·(u, v), label 0, x = 1: L = softplus((v − u)/T). With s = σ((v − u)/T),
    g = s/T·(−1, 1), H = s(1 − s)/T²·[[1, −1], [−1, 1]], so θ ⊙ Hg = 2s²(1 − s)/T³·(−u, v).
    With u = 1 > v = 0.5 > 0, GraSP (remove the highest S = −θ ⊙ Hg) removes u, the larger weight
    that SNIP and magnitude would keep: zeroing u raises ‖∇L‖², zeroing v lowers it."""
    u, v = 1.0, 0.5
    params = {"w": np.array([u, v], np.float32)}
    mask = {"w": np.ones(2, bool)}
    xs, ys = np.ones((2, 3), np.float32), np.zeros((2, 3), np.int32)
    fn = lambda p, x: x[:, None] * p["w"][None, :]

    got = np.asarray(jax.jit(lambda *a: scores.grasp(fn, *a, temperature=temperature))(params, mask, xs, ys)["w"])
    s = 1.0 / (1.0 + np.exp(-(v - u) / temperature))
    np.testing.assert_allclose(got, 2 * s * s * (1 - s) / temperature**3 * np.array([-u, v]), rtol=1e-4)
    assert np.argmin(got) == 0  # "remove the lowest keep-importance" removes u

    def grad_norm2(w):
        s = 1.0 / (1.0 + np.exp(-(w[1] - w[0]) / temperature))
        return 2 * (s / temperature) ** 2

    assert grad_norm2([0.0, v]) > grad_norm2([u, v]) > grad_norm2([u, 0.0])
    snip = np.asarray(jax.jit(functools.partial(scores.snip, fn))(params, mask, xs, ys)["w"])
    assert np.argmin(snip) == 1 and np.argmin(np.asarray(scores.magnitude(params)["w"])) == 1


# -- SynFlow ------------------------------------------------------------------------------------


def relu_net(p, x):
    h = jax.nn.relu(x @ p["fc0"]["kernel"] + p["fc0"].get("bias", 0.0))
    return h @ p["head"]["kernel"] + p["head"].get("bias", 0.0)


def synflow_np(forward, params, mask, input_shape, **kw):
    """`scores.synflow` under `jit`, as numpy."""
    fn = jax.jit(lambda p, m: scores.synflow(forward, p, m, input_shape, **kw))
    return jax.tree.map(np.asarray, fn(params, mask))


def closed_form_synflow(p, mask):
    """score(W1)_ij = |W1_ij| Σ_k |W2_jk|,  score(W2)_jk = |W2_jk| (Σ_i |W1_ij| + |b1_j|), input 1."""
    A1 = np.where(mask["fc0"]["kernel"], np.abs(np.asarray(p["fc0"]["kernel"], np.float64)), 0)
    A2 = np.where(mask["head"]["kernel"], np.abs(np.asarray(p["head"]["kernel"], np.float64)), 0)
    b1 = np.abs(np.asarray(p["fc0"].get("bias", np.zeros(A1.shape[1])), np.float64))
    return A1 * A2.sum(1)[None, :], A2 * (A1.sum(0) + b1)[:, None]


def test_synflow_matches_the_product_of_absolute_weights():
    params = make_params(7)
    del params["fc0"]["bias"], params["head"]["bias"]
    mask = make_mask(params)
    got = synflow_np(relu_net, params, mask, (3,))
    e1, e2 = closed_form_synflow(params, mask)
    assert got["fc0"]["kernel"].dtype == jnp.float64  # x64 by default
    np.testing.assert_allclose(got["fc0"]["kernel"], e1, rtol=1e-6)
    np.testing.assert_allclose(got["head"]["kernel"], e2, rtol=1e-6)
    assert got["fc0"]["kernel"][1, 2] == 0 and got["fc0"]["kernel"][0, 0] == 0 and got["head"]["kernel"][3, 1] == 0
    assert np.all(np.asarray(got["fc0"]["kernel"])[np.asarray(mask["fc0"]["kernel"])] > 0)
    f32 = synflow_np(relu_net, params, mask, (3,), x64=False)
    assert f32["fc0"]["kernel"].dtype == jnp.float32
    np.testing.assert_allclose(f32["head"]["kernel"], e2, rtol=1e-5)


def test_synflow_takes_every_leaf_in_absolute_value_biases_included():
    """Negative biases and weights: the released code linearises with |·| on every parameter, so
    flipping any sign changes nothing, and |b1| adds to the flow into W2."""
    params = make_params(8)
    params["fc0"]["bias"] = -np.abs(params["fc0"]["bias"]) - 1.0  # would kill ReLUs without |·|
    mask = make_mask(params)
    got = synflow_np(relu_net, params, mask, (3,))
    e1, e2 = closed_form_synflow(params, mask)
    np.testing.assert_allclose(got["fc0"]["kernel"], e1, rtol=1e-6)
    np.testing.assert_allclose(got["head"]["kernel"], e2, rtol=1e-6)
    flipped = jax.tree.map(lambda p: -p, params)
    assert_tree_close(synflow_np(relu_net, flipped, mask, (3,)), got, rtol=1e-12)


def test_synflow_ranking_is_invariant_to_scaling_a_layer():
    params = make_params(9)
    del params["fc0"]["bias"], params["head"]["bias"]
    mask = make_mask(params)
    scaled = jax.tree.map(lambda p: p, params)
    scaled["fc0"]["kernel"] = params["fc0"]["kernel"] * 37.0
    a, b = synflow_np(relu_net, params, mask, (3,)), synflow_np(relu_net, scaled, mask, (3,))
    flat = lambda t: np.concatenate([np.asarray(leaf).ravel() for leaf in jax.tree.leaves(t)])
    np.testing.assert_allclose(flat(b), 37.0 * flat(a), rtol=1e-6)
    alive = flat(mask).astype(bool)
    np.testing.assert_array_equal(np.argsort(flat(a)[alive], kind="stable"), np.argsort(flat(b)[alive], kind="stable"))
    # ... which magnitude scores are not
    ma, mb = flat(scores.magnitude(params)), flat(scores.magnitude(scaled))
    assert not np.array_equal(np.argsort(ma[alive]), np.argsort(mb[alive]))


def test_synflow_in_float64_survives_what_overflows_float32():
    """30 layers of 4x4 tens: every weight's score is 10·40^29 ≈ 2.9e47 > float32's 3.4e38."""
    depth = 30
    params = {f"fc{i}": {"kernel": np.full((4, 4), -10.0, np.float32)} for i in range(depth)}
    mask = jax.tree.map(lambda p: np.ones(p.shape, bool), params)

    def chain(p, x):
        for i in range(depth):
            x = jax.nn.relu(x @ p[f"fc{i}"]["kernel"])
        return x

    got = synflow_np(chain, params, mask, (4,))
    for leaf in jax.tree.leaves(got):
        np.testing.assert_allclose(leaf, 10.0 * 40.0**29, rtol=1e-9)
    f32 = synflow_np(chain, params, mask, (4,), x64=False)
    assert not np.all(np.isfinite(np.asarray(f32["fc0"]["kernel"])))


def test_synflow_through_a_flax_model_with_batchnorm_in_inference_mode():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Dense(4, use_bias=False, name="fc0")(x)
            x = nn.relu(nn.BatchNorm(use_running_average=True, epsilon=1e-5, name="bn")(x))
            return nn.Dense(2, use_bias=False, name="head")(x)

    net = Net()
    variables = net.init(jax.random.key(0), jnp.ones((1, 3)))
    params = jax.tree.map(np.asarray, variables["params"])
    params = {k: dict(v) for k, v in params.items()}
    params["bn"]["scale"] = np.array([-2.0, 1.0, 0.5, -1.0], np.float32)
    params["bn"]["bias"] = np.array([-0.5, 0.0, 0.25, -1.0], np.float32)
    mask = jax.tree.map(lambda p: np.ones(p.shape, bool), params)
    mask["fc0"]["kernel"][2, 1] = False
    forward = lambda p, x: net.apply({"params": p, "batch_stats": variables["batch_stats"]}, x)
    got = synflow_np(forward, params, mask, (3,))

    A1 = np.where(mask["fc0"]["kernel"], np.abs(params["fc0"]["kernel"].astype(np.float64)), 0)
    A2 = np.abs(params["head"]["kernel"].astype(np.float64))
    gain = np.abs(params["bn"]["scale"]) / np.sqrt(1.0 + 1e-5)
    h = A1.sum(0) * gain + np.abs(params["bn"]["bias"])
    np.testing.assert_allclose(got["fc0"]["kernel"], A1 * (gain * A2.sum(1))[None, :], rtol=1e-6)
    np.testing.assert_allclose(got["head"]["kernel"], A2 * h[:, None], rtol=1e-6)
    assert got["fc0"]["kernel"][2, 1] == 0


# -- magnitude, random ----------------------------------------------------------------------------


def test_magnitude_and_random():
    params = make_params(10)
    mag = scores.magnitude(params)
    assert_tree_close(mag, jax.tree.map(np.abs, params), rtol=0)
    key = jax.random.key(3)
    rand = jax.jit(scores.random)
    # the same key gives the same scores, whatever the weights; another key others
    a, b = rand(key, params), rand(jax.random.key(3), jax.tree.map(lambda p: p + 1, params))
    c = rand(jax.random.key(4), params)
    assert_tree_close(a, b, rtol=0)
    assert not np.allclose(np.asarray(a["fc0"]["kernel"]), np.asarray(c["fc0"]["kernel"]))
    for leaf, p in zip(jax.tree.leaves(a), jax.tree.leaves(params)):
        assert leaf.shape == p.shape and leaf.dtype == jnp.float32
        assert np.all((np.asarray(leaf) >= 0) & (np.asarray(leaf) < 1))
    same_shape = rand(key, {"a": np.zeros(8), "b": np.zeros(8)})
    assert not np.allclose(np.asarray(same_shape["a"]), np.asarray(same_shape["b"]))  # one key per leaf


# -- the SynFlow schedule ---------------------------------------------------------------------------


def test_synflow_densities():
    assert scores.synflow_densities(10_000, 100, 4) == [3162, 1000, 316, 100]  # 10⁴·10^(-j/2)
    assert scores.synflow_densities(266_200, 266_200 // 100, 1) == [2662]
    assert scores.synflow_densities(7, 0, 3) == [0, 0, 0]
    assert scores.synflow_densities(np.int64(10_000), np.int64(100), 2) == [1000, 100]  # numpy counts
    assert all(type(n) is int for n in scores.synflow_densities(np.int64(10_000), np.int64(100), 2))
    with pytest.raises(TypeError, match="rounds"):
        scores.synflow_densities(100, 10, 2.5)
    for start, final, rounds in [(266_200, 1_331, 100), (100, 99, 100), (1000, 1000, 5), (5, 1, 7)]:
        d = scores.synflow_densities(start, final, rounds)
        assert len(d) == rounds and d[-1] == final
        assert all(a >= b for a, b in zip([start] + d, d))
        j = rounds // 2
        assert d[j - 1] == int(np.floor(start * (final / start) ** (j / rounds) + 0.5))
    with pytest.raises(ValueError, match="rounds"):
        scores.synflow_densities(100, 10, 0)
    with pytest.raises(ValueError, match="final_count"):
        scores.synflow_densities(100, 200, 3)


# -- jit and vmap over replicates --------------------------------------------------------------------


def test_jit_and_vmap_over_replicates_match_per_replicate_calls():
    reps = [make_params(20), make_params(21)]
    masks = [make_mask(reps[0]), make_mask(reps[1])]
    masks[1]["head"]["kernel"][0, 0] = False
    data = [make_batches(22), make_batches(23)]
    keys = jnp.stack([jax.random.key_data(jax.random.key(30)), jax.random.key_data(jax.random.key(31))])
    stack = lambda trees: jax.tree.map(lambda *xs: np.stack(xs), *trees)
    P, Mk = stack(reps), stack(masks)
    XS, YS = np.stack([d[0] for d in data]), np.stack([d[1] for d in data])

    def all_scores(p, m, x, y, k):
        return {
            "snip": scores.snip(logits_fn, p, m, x, y),
            "grasp": scores.grasp(logits_fn, p, m, x, y, temperature=200.0),
            "synflow": scores.synflow(relu_net, p, m, (3,)),
            "magnitude": scores.magnitude(p),
            "random": scores.random(jax.random.wrap_key_data(k), p),
        }

    batched = jax.tree.map(np.asarray, jax.jit(jax.vmap(all_scores))(P, Mk, XS, YS, keys))
    single_fn = jax.jit(all_scores)
    for r in range(2):
        single = jax.tree.map(np.asarray, single_fn(reps[r], masks[r], *data[r], keys[r]))
        for name in single:
            one = jax.tree.map(lambda a: a[r], batched[name])
            try:
                assert_tree_close(one, single[name], rtol=2e-5, atol=1e-12)
            except AssertionError as e:
                raise AssertionError(f"{name}, replicate {r}") from e
    # the replicates' scores differ (the comparison is not between identical trees), and a
    # jitted call gives what an eager one does
    for name, tree in batched.items():
        assert not np.allclose(tree["fc0"]["kernel"][0], tree["fc0"]["kernel"][1]), name
    assert_tree_close(scores.magnitude(reps[1]), single["magnitude"], rtol=0)
