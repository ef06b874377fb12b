"""`train.dtype=bfloat16` on the built-in image models (mixed precision, `lth.models.precision`):
bfloat16 compute, float32 logits, parameters, masks, optimizer state and BatchNorm statistics,
pruned weights exactly zero, accuracy close to float32's, and a clear refusal for a model without
a `dtype` field."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth.config.schema import ConfigError, ModelConfig, OptimizerConfig, PruningConfig, TrainConfig
from lth.data import Dataset
from lth.lottery.rewind import rewind_weights, snapshot
from lth.models import build_model, check_fits_data
from lth.sparsity import masks as M
from lth.sparsity.pruning import prune
from lth.train.optim import make_optimizer, make_schedule
from lth.train.trainer import Trainer, replicate_keys

from conftest import make_tiny_dataset, small_config

# (model config, input shape): the smallest inputs each family's architecture accepts.
FAMILIES = {
    "mlp": (ModelConfig(name="mlp", widths=[32, 32]), (40,)),
    "lenet5": (ModelConfig(name="lenet5"), (16, 16, 1)),
    "conv2": (ModelConfig(name="conv2"), (8, 8, 3)),
    "vgg11": (ModelConfig(name="vgg11"), (32, 32, 3)),
    "resnet20": (ModelConfig(name="resnet20"), (8, 8, 3)),
}


def floating_leaves(tree):
    return [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]


SLOW = pytest.mark.slow  # cases another default case covers: convolutions (conv2), BatchNorm (resnet20's training case)


@pytest.mark.parametrize("family", [pytest.param(f, marks=SLOW) if f in ("vgg11", "lenet5", "resnet20") else f for f in sorted(FAMILIES)])
def test_bfloat16_forward_gives_float32_logits_close_to_float32(family):
    cfg, shape = FAMILIES[family]
    model = build_model(cfg, 10)
    half = model.clone(dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.key(1), (8, *shape))
    variables = model.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, half.init(jax.random.key(0), x)) == jax.tree.map(jnp.shape, variables)
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(half.init(jax.random.key(0), x)))
    from flax import linen as nn

    _, captured = half.apply(variables, x, train=False, mutable=["intermediates"],
                             capture_intermediates=lambda mdl, _: isinstance(mdl, (nn.Dense, nn.Conv)))
    outputs = jax.tree.leaves(captured)
    assert outputs and all(y.dtype == jnp.bfloat16 for y in outputs)  # every dense / conv layer computes in bfloat16
    for train in (False, True):
        kw = {"mutable": ["batch_stats"]} if train and variables.get("batch_stats") else {}
        full, low = model.apply(variables, x, train=train, **kw), half.apply(variables, x, train=train, **kw)
        if kw:
            (full, stats_full), (low, stats_low) = full, low
            assert all(s.dtype == jnp.float32 for s in jax.tree.leaves(stats_low))
            for a, b in zip(jax.tree.leaves(stats_full), jax.tree.leaves(stats_low)):
                np.testing.assert_allclose(a, b, rtol=0.05, atol=0.05)
        assert low.dtype == jnp.float32
        err = float(jnp.abs(full - low).max())
        assert 0 < err <= 0.05 * float(jnp.abs(full).max()) + 1e-3, (family, train, err)  # bfloat16 used, and close


def image_dataset(shape, n_train=64, n_test=32, classes=4, seed=0):
    """A small learnable image problem: the label is the argmax of fixed projections of the pixels."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(int(np.prod(shape)), classes))

    def split(n):
        x = rng.normal(size=(n, *shape)).astype(np.float32)
        return x, np.argmax(x.reshape(n, -1) @ w, 1).astype(np.int32)

    (xt, yt), (xv, yv), (xs, ys) = split(n_train), split(n_test), split(n_test)
    return Dataset("images", xt, yt, xv, yv, xs, ys, classes, np.zeros(shape[-1], np.float32),
                   np.ones(shape[-1], np.float32), 1.0)


@pytest.mark.parametrize("family", ["mlp", pytest.param("lenet5", marks=SLOW), pytest.param("conv2", marks=SLOW), "resnet20"])
def test_bfloat16_training_keeps_float32_state_and_pruned_weights_at_zero(family):
    """Train, prune half of every kernel, rewind (with the optimizer's momentum) and train on, in
    bfloat16: params, masks, optimizer state and batch_stats stay float32, pruned weights exactly 0."""
    cfg, shape = FAMILIES[family]
    ds = image_dataset(shape) if len(shape) == 3 else make_tiny_dataset(n_train=64, n_val=32, n_test=32, features=40)
    opt = OptimizerConfig(name="momentum", lr=0.05, momentum=0.9)
    model = build_model(cfg, ds.num_classes).clone(dtype=jnp.bfloat16)
    tr = Trainer(model, ds, make_optimizer(opt), make_schedule(opt, total_steps=8, steps_per_epoch=4),
                 batch_size=16, eval_batch_size=32)
    keys = replicate_keys(0, 1)
    v = tr.init_variables(keys["init"])
    states = tr.create_states(v, jax.vmap(M.ones_like)(v["params"]))
    states, _ = tr.run(states, keys, 0, 4)
    saved = jax.device_get(snapshot(states))
    paths = [p for p in M.flatten(v["params"]) if p.endswith("kernel")]
    masks = M.stack([prune(p, m, PruningConfig(fraction=0.5, scope="layerwise"), paths)
                     for p, m in zip(M.unstack(states.params, 1), M.unstack(states.mask, 1))])
    states = rewind_weights(states, saved, masks, optimizer_state="rewound")
    before = M.flatten(jax.device_get(states.params))
    states, _ = tr.run(states, keys, 4, 4)
    for tree in (states.params, states.opt_state, states.batch_stats):
        assert all(x.dtype == jnp.float32 for x in floating_leaves(tree))
    after, m = M.flatten(jax.device_get(states.params)), M.flatten(jax.device_get(masks))
    for q in paths:
        w, keep = np.asarray(after[q]), np.asarray(m[q])
        assert w.dtype == np.float32 and (~keep).any() and (w[~keep] == 0).all(), q
        assert not np.array_equal(w[keep], np.asarray(before[q])[keep]), q  # survivors trained
    logits = tr.model.apply({"params": M.unstack(states.params, 1)[0],
                             **({"batch_stats": M.unstack(states.batch_stats, 1)[0]} if states.batch_stats else {})},
                            jnp.asarray(ds.x_test[:4]), train=False)
    assert logits.dtype == jnp.float32 and bool(jnp.isfinite(logits).all())


def test_bfloat16_run_end_to_end_is_as_accurate_as_float32(tmp_path):
    """A two-level MNIST-1D lottery run through `lth.run` with `train.dtype=bfloat16`: its own run
    directory, level 1's tickets within 5 points of float32's mean test accuracy, and float32
    weights on disk with the pruned ones exactly zero."""
    import lth
    from lth.runs import checkpoints

    runs = {}
    for dtype in ("float32", "bfloat16"):
        cfg = small_config(tmp_path, levels=1, train=TrainConfig(duration="200it", batch_size=100, eval_every="100it",
                                                                 dtype=dtype))
        runs[dtype] = lth.run(cfg, echo=lambda s: None)
    assert runs["float32"].path != runs["bfloat16"].path
    acc = {d: r.results[(r.results.level == 1) & (r.results.kind == "ticket")].test_accuracy.mean() for d, r in runs.items()}
    assert acc["float32"] > 0.3 and abs(acc["bfloat16"] - acc["float32"]) < 0.05, acc
    rd = runs["bfloat16"].path
    final = checkpoints.restore(os.path.join(rd, "level_01", "final"), None)
    mask = M.flatten(checkpoints.restore(os.path.join(rd, "level_01", "mask"), None))
    for path, w in M.flatten(final["params"]).items():
        assert np.asarray(w).dtype == np.float32, path
        if path.endswith("kernel"):
            keep = np.asarray(mask[path]).astype(bool)
            assert (~keep).any() and (np.asarray(w)[~keep] == 0).all(), path


def test_a_model_without_a_dtype_field_is_refused_with_the_models_that_have_one():
    from flax import linen as nn

    class Plain(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            return nn.Dense(4)(x)

    data = make_tiny_dataset()
    check_fits_data(ModelConfig(name="custom"), Plain(), data)  # float32: fine
    with pytest.raises(ConfigError) as e:
        check_fits_data(ModelConfig(name="custom"), Plain(), data, dtype="bfloat16")
    for word in ("train.dtype=bfloat16", "'custom'", "Plain", "dtype", "resnet20", "lenet5", "bert"):
        assert word in str(e.value), word
    for name in ("mlp", "resnet20"):  # the built-in models are accepted
        check_fits_data(ModelConfig(name=name), build_model(ModelConfig(name=name), 4), data, dtype="bfloat16")
