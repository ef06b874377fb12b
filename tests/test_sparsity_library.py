"""`lth.sparsity` as a library (issue 28): `masked` keeps pruned weights and optimizer state at 0
under any optax optimizer; `magnitude_masks` and `imp` keep exact counts with deterministic ties;
`erk`/`er` match RigL's formula computed by hand; `n_of_m` keeps exactly n of every m."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lth import sparsity
from lth.sparsity import scores as S
from lth.sparsity.optax_masked import zero_state
from lth.sparsity.pruning import n_to_prune


def _params(key=0):
    k = jax.random.split(jax.random.key(key), 3)
    return {"fc1": {"kernel": jax.random.normal(k[0], (8, 6)), "bias": jax.random.normal(k[1], (6,))},
            "out": {"kernel": jax.random.normal(k[2], (6, 3)), "bias": jnp.zeros(3)}}


def _count(mask):
    return int(sum(np.asarray(m).sum() for m in jax.tree.leaves(mask)))


def test_import_stays_cheap():
    code = "import sys, lth.sparsity; print('optax' in sys.modules or 'jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ---- masked -----------------------------------------------------------------------------------

OPTIMIZERS = {
    "sgd": lambda: optax.sgd(0.1),
    "momentum": lambda: optax.sgd(0.1, momentum=0.9),
    "nesterov": lambda: optax.sgd(0.1, momentum=0.9, nesterov=True),
    "adam": lambda: optax.adam(1e-2),
    "adamw": lambda: optax.adamw(1e-2, weight_decay=0.5),
    "lamb": lambda: optax.lamb(1e-2, weight_decay=0.1),
    "lion": lambda: optax.lion(1e-3, weight_decay=0.1),
    "adafactor_factored": lambda: optax.adafactor(1e-2, min_dim_size_to_factor=4, weight_decay_rate=0.1),
    "clip_then_adam": lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2)),
    "clip_then_momentum": lambda: optax.chain(optax.clip(0.05), optax.sgd(0.1, momentum=0.9)),
    "inject_adamw": lambda: optax.inject_hyperparams(optax.adamw)(learning_rate=1e-2, weight_decay=0.5),
}


def _loss(p, x, y):
    h = jnp.tanh(x @ p["fc1"]["kernel"] + p["fc1"]["bias"])
    return jnp.mean((h @ p["out"]["kernel"] + p["out"]["bias"] - y) ** 2)


def _train(tx, params, steps=50):
    x = jax.random.normal(jax.random.key(1), (32, 8))
    y = jax.random.normal(jax.random.key(2), (32, 3))
    state = tx.init(params)

    @jax.jit
    def step(p, s):
        u, s = tx.update(jax.grad(_loss)(p, x, y), s, p)
        return optax.apply_updates(p, u), s

    for _ in range(steps):
        params, state = step(params, state)
    return params, state


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("as_float", [False, True])
def test_masked_holds_pruned_weights_and_state_at_zero(name, as_float):
    params = _params()  # not masked beforehand: the first update zeroes the pruned weights
    masks = sparsity.magnitude_masks(params, density=0.5)
    if as_float:
        masks = jax.tree.map(lambda m: m.astype(jnp.float32), masks)
    trained, state = _train(sparsity.masked(OPTIMIZERS[name](), masks), params)
    for w, w0, m in zip(jax.tree.leaves(trained), jax.tree.leaves(params), jax.tree.leaves(masks)):
        m = np.asarray(m) != 0
        assert np.all(np.asarray(w)[~m] == 0.0), name
        assert np.any(np.asarray(w)[m] != np.asarray(w0)[m]), f"{name}: kept weights did not move"
    # every params-shaped state leaf (momenta, Adam's mu and nu) is 0 at the pruned weights
    bool_masks = jax.tree.map(lambda m: m != 0, masks)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), zero_state(state, bool_masks), state))


def test_without_masked_adamw_moves_pruned_weights():
    """The guarantee is not vacuous: plain AdamW on masked params revives pruned weights."""
    params = _params()
    masks = sparsity.magnitude_masks(params, density=0.5)
    trained, _ = _train(optax.adamw(1e-2, weight_decay=0.5), jax.tree.map(lambda p, m: p * m, params, masks), steps=5)
    k, m = np.asarray(trained["fc1"]["kernel"]), np.asarray(masks["fc1"]["kernel"])
    assert np.any(k[~m] != 0)


def test_masked_moments_zero_after_one_adam_step():
    params = _params()
    masks = sparsity.magnitude_masks(params, density=0.3, scope="layerwise")
    _, state = _train(sparsity.masked(optax.adam(1e-2), masks), params, steps=1)
    mu, nu = state[0].mu["fc1"]["kernel"], state[0].nu["fc1"]["kernel"]
    off = ~np.asarray(masks["fc1"]["kernel"])
    assert np.all(np.asarray(mu)[off] == 0) and np.all(np.asarray(nu)[off] == 0)
    assert np.any(np.asarray(mu)[~off] != 0)


def test_masked_refuses_bad_masks():
    params = _params()
    half = jax.tree.map(lambda p: jnp.full(p.shape, 0.5), params)
    with pytest.raises(ValueError, match="0/1"):
        sparsity.masked(optax.sgd(0.1), half)
    tx = sparsity.masked(optax.sgd(0.1), {"fc1": {"kernel": jnp.ones((8, 6), bool)}})
    with pytest.raises(ValueError, match="structure"):
        tx.init(params)


# ---- magnitude_masks ----------------------------------------------------------------------------

@pytest.mark.parametrize("density", [0.0, 0.1, 0.25, 0.5, 0.97, 1.0])
def test_magnitude_masks_global_exact_count_and_largest(density):
    params = _params()
    masks = sparsity.magnitude_masks(params, density=density)
    n = 8 * 6 + 6 * 3
    keep = n - n_to_prune(1 - density, n)
    assert _count({k: masks[k]["kernel"] for k in masks}) == keep
    assert all(np.asarray(masks[k]["bias"]).all() for k in masks)  # not prunable: all kept
    w = np.concatenate([np.abs(np.asarray(params[k]["kernel"])).ravel() for k in ("fc1", "out")])
    kept = np.concatenate([np.asarray(masks[k]["kernel"]).ravel() for k in ("fc1", "out")])
    if 0 < keep < n:
        assert w[kept].min() >= w[~kept].max()


def test_magnitude_masks_layerwise_and_per_tensor_densities():
    params = _params()
    masks = sparsity.magnitude_masks(params, density=0.3, scope="layerwise")
    assert int(masks["fc1"]["kernel"].sum()) == 48 - n_to_prune(0.7, 48)
    assert int(masks["out"]["kernel"].sum()) == 18 - n_to_prune(0.7, 18)
    dens = sparsity.erk(params, 0.3)
    masks = sparsity.magnitude_masks(params, density=dens)
    for k, n in (("fc1", 48), ("out", 18)):
        assert int(masks[k]["kernel"].sum()) == n - n_to_prune(1 - dens[k]["kernel"], n)


def test_magnitude_masks_ties_are_broken_by_position():
    params = {"a": {"kernel": jnp.ones((4, 5))}, "b": {"kernel": jnp.ones((5, 2))}}
    masks = sparsity.magnitude_masks(params, density=0.4)
    # 30 equal weights, 12 kept: the stable sort removes the 18 earliest (a's first, in leaf order)
    flat = np.concatenate([np.asarray(masks["a"]["kernel"]).ravel(), np.asarray(masks["b"]["kernel"]).ravel()])
    assert flat.sum() == 12 and not flat[:18].any() and flat[18:].all()
    again = sparsity.magnitude_masks(params, density=0.4)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(masks), jax.tree.leaves(again)))


def test_magnitude_masks_prunable_and_errors():
    params = _params()
    masks = sparsity.magnitude_masks(params, density=0.5, prunable=[r"^fc1/"])
    assert np.asarray(masks["out"]["kernel"]).all()
    assert _count(masks["fc1"]) == 54 - n_to_prune(0.5, 54)
    with pytest.raises(ValueError, match="scope"):
        sparsity.magnitude_masks(params, density=0.5, scope="module")
    with pytest.raises(ValueError, match="density"):
        sparsity.magnitude_masks(params, density=1.5)
    with pytest.raises(ValueError, match="matches no parameter"):
        sparsity.magnitude_masks(params, density=0.5, prunable="conv")


# ---- ERK / ER -----------------------------------------------------------------------------------

def test_erk_small_mlp_by_hand():
    params = {"l1": {"kernel": jnp.zeros((4, 3)), "bias": jnp.zeros(3)}, "l2": {"kernel": jnp.zeros((3, 2))}}
    d = sparsity.erk(params, 0.5)
    # r1 = 7/12, r2 = 5/6; eps = 0.5*18 / (7/12*12 + 5/6*6) = 9/12
    assert d["l1"]["kernel"] == pytest.approx(0.75 * 7 / 12) and d["l2"]["kernel"] == pytest.approx(0.75 * 5 / 6)
    assert d["l1"]["bias"] == 1.0


def test_erk_makes_a_layer_dense_and_re_solves():
    params = {"big": {"kernel": jnp.zeros((10, 10))}, "tiny": {"kernel": jnp.zeros((2, 2))}}
    d = sparsity.erk(params, 0.5)
    # first eps = 52/24 makes tiny's density 2.17 > 1: tiny dense, then eps = (52 - 4)/20 on big alone
    assert d["tiny"]["kernel"] == 1.0 and d["big"]["kernel"] == pytest.approx(2.4 * 0.2)


def test_erk_and_er_of_a_conv_kernel_by_hand():
    params = {"conv": {"kernel": jnp.zeros((3, 3, 2, 4))}, "fc": {"kernel": jnp.zeros((4, 10))}}
    erk, er = sparsity.erk(params, 0.25), sparsity.erk(params, 0.25, kernel=False)
    budget = 0.25 * (72 + 40)
    eps = budget / (12 / 72 * 72 + 14 / 40 * 40)  # ERK: (3+3+2+4)/72 and (4+10)/40
    assert erk["conv"]["kernel"] == pytest.approx(eps * 12 / 72) and erk["fc"]["kernel"] == pytest.approx(eps * 14 / 40)
    eps = budget / (6 / 8 * 72 + 14 / 40 * 40)  # ER: (2+4)/(2*4) for the conv, spatial dims ignored
    assert er["conv"]["kernel"] == pytest.approx(eps * 6 / 8) and er["fc"]["kernel"] == pytest.approx(eps * 14 / 40)
    assert sparsity.er(params, 0.25) == er


def test_erk_check_case():
    params = {"a": {"kernel": jnp.zeros((400, 300))}, "b": {"kernel": jnp.zeros((300, 10))}}
    d = sparsity.erk(params, 0.1)
    kept = d["a"]["kernel"] * 120000 + d["b"]["kernel"] * 3000
    assert abs(kept / 123000 - 0.1) < 1e-9 and d["b"]["kernel"] > d["a"]["kernel"]
    with pytest.raises(ValueError, match="density"):
        sparsity.erk(params, 0.0)


# ---- N:M ----------------------------------------------------------------------------------------

def test_n_of_m_dense_kernel_keeps_the_n_largest_of_every_m_inputs():
    s = jax.random.normal(jax.random.key(3), (8, 5))
    m = np.asarray(sparsity.n_of_m(s, 2, 4))
    assert m.shape == (8, 5) and m.dtype == bool and (m.reshape(2, 4, 5).sum(1) == 2).all()
    g = np.asarray(s).reshape(2, 4, 5)
    mg = m.reshape(2, 4, 5)
    assert (np.where(mg, g, np.inf).min(1) >= np.where(mg, -np.inf, g).max(1)).all()


def test_n_of_m_conv_hwio_input_channels_ties_and_jit():
    s = jax.random.normal(jax.random.key(4), (3, 3, 8, 4))
    m = np.asarray(jax.jit(lambda x: sparsity.n_of_m(x, 1, 4))(s))
    assert (m.reshape(3, 3, 2, 4, 4).sum(3) == 1).all()
    ties = np.asarray(sparsity.n_of_m(jnp.ones((8, 2)), 2, 4))
    assert ties[:, 0].tolist() == [True, True, False, False] * 2  # the earlier weights win ties
    assert np.asarray(sparsity.n_of_m(jnp.arange(6.0), 1, 3, axis=0)).tolist() == [False, False, True] * 2


def test_n_of_m_refuses_bad_shapes():
    with pytest.raises(ValueError, match="not divisible by m=4"):
        sparsity.n_of_m(jnp.ones((6, 3)), 2, 4)
    with pytest.raises(ValueError, match="0 <= n <= m"):
        sparsity.n_of_m(jnp.ones((8, 3)), 5, 4)


# ---- scores and IMP -----------------------------------------------------------------------------

def test_scores_are_reachable():
    assert sparsity.snip is S.snip and sparsity.grasp is S.grasp and sparsity.synflow is S.synflow
    params = {"fc": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}}
    mask = jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)
    logits = lambda p, x: x @ p["fc"]["kernel"] + p["fc"]["bias"]
    sc = sparsity.snip(logits, params, mask, jnp.ones((1, 4, 3)), jnp.zeros((1, 4), jnp.int32))
    assert sc["fc"]["kernel"].shape == (3, 2)


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_imp_nested_masks_exact_counts_and_rewinding(scope):
    params = _params()
    rewind = jax.tree.map(lambda p: p + 100.0, params)
    calls = []

    def train_fn(p, m):
        calls.append((p, m))
        return jax.tree.map(lambda w, k: w * (1.0 + 0.1 * jnp.arange(w.size).reshape(w.shape)), p, m)

    res = sparsity.imp(train_fn, params, levels=3, fraction=0.2, rewind_to=rewind, scope=scope)
    assert len(res.masks) == len(res.params) == 4 and res.final_params is res.params[-1]
    sizes = {"fc1": 48, "out": 18}
    counts = dict(sizes) if scope == "layerwise" else {"all": 66}
    for level in range(1, 4):
        m, prev = res.masks[level], res.masks[level - 1]
        assert all(bool(np.all(~np.asarray(a) | np.asarray(b))) for a, b in zip(jax.tree.leaves(m), jax.tree.leaves(prev)))
        counts = {k: c - n_to_prune(0.2, c) for k, c in counts.items()}
        if scope == "layerwise":
            assert {k: int(m[k]["kernel"].sum()) for k in sizes} == counts
        else:
            assert int(m["fc1"]["kernel"].sum() + m["out"]["kernel"].sum()) == counts["all"]
        assert np.asarray(m["fc1"]["bias"]).all()
        p_in = calls[level][0]["fc1"]["kernel"]  # level trained from m ⊙ rewind_to
        assert np.array_equal(np.asarray(p_in), np.where(m["fc1"]["kernel"], rewind["fc1"]["kernel"], 0.0))
        assert np.all(np.asarray(res.params[level]["fc1"]["kernel"])[~np.asarray(m["fc1"]["kernel"])] == 0)
    assert np.array_equal(np.asarray(calls[0][0]["fc1"]["kernel"]), np.asarray(params["fc1"]["kernel"]))


def test_imp_refuses_bad_settings():
    with pytest.raises(ValueError, match="fraction"):
        sparsity.imp(lambda p, m: p, _params(), levels=2, fraction=1.0)
    with pytest.raises(ValueError, match="levels"):
        sparsity.imp(lambda p, m: p, _params(), levels=-1, fraction=0.2)


def test_the_guide_example_runs(capsys):
    """docs/guide/sparsity-library.md's example runs as written."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "guide" / "sparsity-library.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    exec(compile(code, "sparsity-library.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out[1:]] == [["0", "2212"], ["1", "1124"], ["2", "580"], ["3", "308"]]


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_imp_masks_equal_lths_own_pruning_step(scope):
    """Each IMP level's mask is exactly what lth's trainer-side engine (`lth.sparsity.pruning.prune`,
    the lottery loop's step) gives from the same trained weights and previous mask."""
    from lth.config.schema import PruningConfig
    from lth.sparsity import masks as M, pruning

    cfg = PruningConfig(fraction=0.3, scope=scope)
    params = _params(5)
    train_fn = lambda p, m: jax.tree.map(lambda w: jnp.sin(3.0 * w) + w, p)
    res = sparsity.imp(train_fn, params, levels=3, fraction=0.3, scope=scope)
    paths = M.prunable_paths(params, [r"(^|/)kernel$"])
    for level in range(1, 4):
        trained = jax.tree.map(lambda w: np.asarray(w), res.params[level - 1])
        want = pruning.prune(trained, jax.tree.map(np.asarray, res.masks[level - 1]), cfg, paths)
        got = M.flatten(res.masks[level])
        assert all(np.array_equal(np.asarray(got[p]), np.asarray(w)) for p, w in M.flatten(want).items())


def test_magnitude_masks_prunes_within_a_given_mask():
    params = _params()
    first = sparsity.magnitude_masks(params, density=0.5)
    second = sparsity.magnitude_masks(params, density=0.2, mask=first)
    assert all(bool(np.all(~np.asarray(b) | np.asarray(a))) for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)))
    assert _count({k: second[k]["kernel"] for k in second}) == 66 - n_to_prune(0.8, 66)
    with pytest.raises(ValueError, match="cannot keep"):
        sparsity.magnitude_masks(params, density=0.8, mask=first)
