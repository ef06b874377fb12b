"""The presets that follow a paper's released code or OpenLTH (docs/fidelity.md), and the general
settings they need: each preset's resolved numbers, the residual MLP, prunable biases and the
linear sparsity schedule, PyTorch's initialisers, per-image standardisation, BatchNorm momentum
and the stage-1 projection, `train.drop_last=false`, `train.data_order=per_level`."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth.train import data_order
from lth.sparsity import linear_schedule, masks as M, pruning
from lth.config.schema import (
    Config,
    ConfigError,
    DatasetConfig,
    ModelConfig,
    PruningConfig,
    TrainConfig,
    validate,
)
from lth.lottery.levels import make_plan
from lth.models import build_model
from lth.train.optim import make_schedule
from lth.runs.run_dir import content_hash, hashed_settings



def lr_at(cfg, plan, steps):
    fn = make_schedule(cfg.optimizer, total_steps=plan.total_steps, steps_per_epoch=plan.steps_per_epoch)
    return [float(fn(s)) for s in steps]


def param_count(cfg: ModelConfig, shape, pattern="kernel$"):
    variables = jax.eval_shape(lambda: build_model(cfg, 10).init(jax.random.key(0), jnp.zeros((1, *shape))))
    flat = M.flatten(variables["params"])
    return {p: int(np.prod(v.shape)) for p, v in flat.items() if p.endswith(pattern.rstrip("$"))}


# ----------------------------------------------------------------------------- Renda et al. 2020


def test_renda_preset_is_the_released_code(compose):
    cfg = compose("experiment=renda_resnet56_cifar10")
    m, d = cfg.model, cfg.dataset
    assert (m.name, m.init, m.head_init, m.bias_init, m.bn_scale_init, m.bn_momentum, m.stage1_projection) == (
        "resnet56", "lecun_normal", "normal_0.01", "zeros", "ones", 0.997, True)
    assert (d.name, d.val_size, d.augment, d.normalize, d.normalization, d.shuffle) == ("cifar10", 0, True, True, "per_image", True)
    assert (cfg.rewind.mode, cfg.rewind.point, cfg.rewind.optimizer_state) == ("lr", "0it", "rewound")
    assert (cfg.pruning.scope, cfg.pruning.fraction, cfg.pruning.prunable, cfg.pruning.exclude) == ("global", 0.2, ["kernel$"], [])
    assert (cfg.train.duration, cfg.train.batch_size, cfg.train.drop_last, cfg.train.data_order) == ("71108it", 128, True, "fixed")
    plan = make_plan(cfg, 50_000)
    assert (plan.total_steps, plan.rewind_step) == (71_108, 0)
    assert lr_at(cfg, plan, [35_545, 35_546, 53_124, 53_125]) == pytest.approx([0.1, 0.01, 0.01, 0.001])


@pytest.mark.parametrize("variant,mode,point,state,steps", [("weights", "weights", "4701it", "rewound", 66_407),
                                                             ("finetune", "finetune", "4701it", "reset", 66_407)])
def test_renda_variants_change_only_the_rewinding(compose, variant, mode, point, state, steps):
    base, cfg = compose("experiment=renda_resnet56_cifar10"), compose(f"experiment=renda_resnet56_cifar10_{variant}")
    assert (cfg.rewind.mode, cfg.rewind.point, cfg.rewind.optimizer_state) == (mode, point, state)
    same = lambda c: dataclasses.replace(c, name="x", rewind=base.rewind)
    assert same(cfg) == same(base)
    plan = make_plan(cfg, 50_000)
    assert plan.total_steps - plan.rewind_step == steps
    if mode == "finetune":  # the release's --lottery_force_learning_rate 0.001
        assert lr_at(cfg, plan, [plan.total_steps - 1]) == pytest.approx([0.001])


def test_stage1_projection_adds_one_shortcut_of_256_weights():
    plain = param_count(ModelConfig(name="resnet20"), (32, 32, 3))
    proj = param_count(ModelConfig(name="resnet20", stage1_projection=True), (32, 32, 3))
    assert sum(plain.values()) == 270_896
    assert set(proj) - set(plain) == {"stage1/block0/shortcut_conv/kernel"}
    assert proj["stage1/block0/shortcut_conv/kernel"] == 256 and sum(proj.values()) == 271_152
    assert not any(p.startswith("stage1/block1/shortcut") for p in proj)  # only the stage's first block


@pytest.mark.slow  # compiles a convolutional network
def test_bn_momentum_and_head_init_reach_the_model():
    from lth.models.initializers import bn_model_fields
    from lth.models.resnet_cifar import CifarResNet

    from lth.config import defaults

    cfg = defaults.fill(ModelConfig(name="resnet20", bn_momentum=0.997, head_init="normal_0.01", init="lecun_normal"), "model")
    model = CifarResNet(depth=8, num_classes=10, **bn_model_fields(cfg))  # resnet20's builder, one block per stage
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
    v = jax.jit(model.init)(jax.random.key(0), x)
    _, upd = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(v, x)
    # running mean starts at 0: after one step it is (1 - 0.997) * the batch mean of the stem conv
    y = jax.lax.conv_general_dilated(x, v["params"]["conv1"]["kernel"], (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(upd["batch_stats"]["bn1"]["mean"], 0.003 * np.asarray(y).mean((0, 1, 2)), rtol=1e-4, atol=1e-7)
    head = np.asarray(v["params"]["head"]["kernel"])
    assert 0.007 < head.std() < 0.013  # N(0, 0.01²), 640 draws
    stem = np.asarray(v["params"]["conv1"]["kernel"])
    assert np.abs(stem).max() <= 2 * math.sqrt(1 / 27) / 0.87962566 + 1e-6  # truncated at 2σ


def test_per_image_standardisation_is_tfs():
    from lth.data import Dataset

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 4, 4, 3)).astype(np.uint8)
    x[2] = 7  # a constant image: TF divides by max(std, 1/sqrt(N)) = 1/sqrt(48)
    ds = Dataset("d", x, np.zeros(3, np.int32), x[:0], np.zeros(0, np.int32), x, np.zeros(3, np.int32), 10,
                 np.zeros(3, np.float32), np.ones(3, np.float32), 255.0, per_image=True)
    f = x.astype(np.float64)
    mean = f.mean((1, 2, 3), keepdims=True)
    ref = (f - mean) / np.maximum(f.std((1, 2, 3), keepdims=True), 1 / np.sqrt(48))
    np.testing.assert_allclose(ds.normalize(x), ref, atol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.jit(ds.normalize)(jnp.asarray(x))), ref, atol=1e-5)


def test_per_image_l2_is_keras_normalize_of_the_flattened_image():
    """Frankle & Carbin's release: `keras.utils.normalize(x.reshape(n, -1))`, i.e. x / ||x||_2 per image
    (an all-zero row keeps norm 1); the scale (uint8 vs /255) cancels and the background stays 0."""
    from lth.data import Dataset

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 28, 28, 1)).astype(np.uint8)
    x[:, :4] = 0  # background
    x[2] = 0  # an all-zero image
    ds = Dataset("d", x, np.zeros(3, np.int32), x[:0], np.zeros(0, np.int32), x, np.zeros(3, np.int32), 10,
                 np.full(1, 0.13, np.float32), np.full(1, 0.3, np.float32), 255.0, unit_l2=True)
    flat = x.reshape(3, -1).astype(np.float64)
    norm = np.linalg.norm(flat, axis=-1, keepdims=True)
    norm[norm == 0] = 1  # keras.utils.normalize
    ref = (flat / norm).reshape(x.shape)
    for out in (ds.normalize(x), np.asarray(jax.jit(ds.normalize)(jnp.asarray(x)))):
        np.testing.assert_allclose(out, ref, atol=1e-6)
        assert (out[:, :4] == 0).all() and (out[2] == 0).all()
        np.testing.assert_allclose(np.linalg.norm(out[:2].reshape(2, -1), axis=-1), 1.0, atol=1e-6)


def test_frankle_carbin_preset_normalises_per_image_l2(compose):
    d = compose("experiment=lth_lenet_mnist").dataset
    assert (d.name, d.normalize, d.normalization, d.val_size) == ("mnist", True, "per_image_l2", 5000)


# ----------------------------------------------------------------------------- Greydanus 2020


def test_greydanus_preset_is_the_notebook(compose):
    cfg = compose("experiment=greydanus_mnist1d_lottery")
    m, d, p = cfg.model, cfg.dataset, cfg.pruning
    assert (m.name, m.widths, m.residual, m.init, m.bias_init) == ("mlp", [500, 500], True, "pytorch_default", "pytorch")
    assert (d.name, d.val_size, d.normalize, d.shuffle) == ("mnist1d", 0, False, False)
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.weight_decay) == ("adam", 0.02, 0.0)
    assert (p.scope, p.schedule, p.fraction, p.prunable, p.fractions) == ("module", "linear", 1 / 99, ["kernel$", "bias$"], {})
    assert (cfg.levels, cfg.replicates, cfg.controls) == (99, 2, ["random_prune"])
    assert (cfg.rewind.mode, cfg.rewind.point, cfg.rewind.optimizer_state) == ("weights", "0it", "reset")
    plan = make_plan(cfg, 4000)
    assert (plan.total_steps, plan.steps_per_epoch, plan.eval_every) == (1502, 40, 100)  # range(1501 + 1)
    # one group per layer, weights and biases together, the output layer at the same rate
    sizes = param_count(ModelConfig(name="mlp", widths=[500, 500], residual=True), (40,), pattern="")
    paths = sorted(sizes)
    groups = pruning.groups(paths, p)
    assert [g for g, _ in groups] == [["fc1/bias", "fc1/kernel"], ["fc2/bias", "fc2/kernel"], ["head/bias", "head/kernel"]]
    assert [sum(sizes[t] for t in g) for g, _ in groups] == [20_500, 250_500, 5_010]


def test_linear_schedule_keeps_the_notebooks_counts():
    """keep = n - int(np.linspace(0, 1, 100)[L] * n), the notebook's get_mask, at every level."""
    totals = [20_500, 250_500, 5_010]
    for level, s in enumerate(np.linspace(0, 1.0, 100)):
        assert linear_schedule.keep_counts(totals, level, [1 / 99] * 3) == [n - int(s * n) for n in totals]
    assert linear_schedule.keep_counts(totals, 1, [1 / 99] * 3) == [20_500 - 207, 250_500 - 2530, 5_010 - 50]
    assert linear_schedule.keep_counts(totals, 99, [1 / 99] * 3) == [0, 0, 0]
    assert linear_schedule.keep_counts([100], 3, [0.25]) == [25] and linear_schedule.keep_counts([100], 5, [0.25]) == [0]


def test_residual_mlp_and_pytorch_init():
    cfg = ModelConfig(name="mlp", widths=[6, 6], residual=True, init="pytorch_default", bias_init="pytorch")
    model = build_model(cfg, 3)
    v = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 5)))
    p = jax.tree.map(np.asarray, v["params"])
    x = np.asarray(jax.random.normal(jax.random.key(2), (4, 5)))
    relu = lambda z: np.maximum(z, 0)
    h = relu(x @ p["fc1"]["kernel"] + p["fc1"]["bias"])
    h = h + relu(h @ p["fc2"]["kernel"] + p["fc2"]["bias"])
    np.testing.assert_allclose(model.apply(v, jnp.asarray(x)), h @ p["head"]["kernel"] + p["head"]["bias"], rtol=1e-5, atol=1e-6)
    for name, fan_in in (("fc1", 5), ("fc2", 6), ("head", 6)):
        for leaf in ("kernel", "bias"):
            assert np.abs(p[name][leaf]).max() <= 1 / math.sqrt(fan_in)  # U[-1/sqrt(fan_in), 1/sqrt(fan_in)]
            assert np.abs(p[name][leaf]).max() > 0.3 / math.sqrt(fan_in)  # not zeros
    from lth.models.initializers import kernel_initializer

    w = np.asarray(kernel_initializer("pytorch_default")(jax.random.key(0), (500, 500)))
    assert abs(w.var() - 1 / (3 * 500)) < 0.02 / (3 * 500)  # U[-a, a], a = 1/sqrt(500), has variance a² / 3


def test_module_scope_linear_schedule_prunes_biases_exactly():
    cfg = PruningConfig(scope="module", schedule="linear", fraction=0.25, prunable=["kernel$", "bias$"])
    rng = np.random.default_rng(0)
    params = {"fc1": {"kernel": rng.normal(size=(8, 6)), "bias": rng.normal(size=6) * 3}, "head": {"kernel": rng.normal(size=(6, 2)), "bias": rng.normal(size=2)}}
    paths = sorted(M.flatten(params))
    mask = jax.tree.map(lambda x: np.ones(x.shape, bool), params)
    totals = pruning.alive_counts(mask, cfg, paths)
    assert totals == [54, 14]
    for level in (1, 2, 3):
        keep = linear_schedule.keep_counts(totals, level, [0.25, 0.25])
        new = pruning.prune_to(pruning.magnitudes(M.apply_mask(params, mask)), mask, cfg, paths, keep)
        assert M.is_subset(new, mask)
        flat = M.flatten(new)
        assert [int(flat["fc1/bias"].sum() + flat["fc1/kernel"].sum()), int(flat["head/bias"].sum() + flat["head/kernel"].sum())] == keep
        mask = new
    # the biases, three times larger, outlive most kernels of their layer: ranked together with them
    assert M.flatten(mask)["fc1/bias"].mean() > M.flatten(mask)["fc1/kernel"].mean()


# ----------------------------------------------------------------------------- OpenLTH


def test_openlth_lenet_preset(compose):
    cfg = compose("experiment=openlth_lenet_mnist")
    assert (cfg.model.name, cfg.model.init, cfg.model.bias_init, cfg.dataset.val_size, cfg.dataset.augment) == (
        "lenet_300_100", "kaiming_normal", "pytorch", 0, False)
    o = cfg.optimizer
    assert (o.name, o.lr, o.momentum, o.weight_decay, o.schedule.name) == ("sgd", 0.1, 0.0, 0.0, "constant")
    assert (cfg.pruning.scope, cfg.pruning.fraction, cfg.pruning.exclude, cfg.pruning.fractions) == ("global", 0.2, ["head"], {})
    assert (cfg.train.batch_size, cfg.train.duration, cfg.train.drop_last, cfg.train.data_order) == (128, "40ep", False, "per_level")
    plan = make_plan(cfg, 60_000)
    assert (plan.steps_per_epoch, plan.total_steps) == (469, 18_760)  # ceil(60000 / 128) = 469


@pytest.mark.parametrize("preset,model,exclude", [("openlth_resnet20_cifar10", "resnet20", []), ("openlth_vgg16_cifar10", "vgg16", ["head"])])
def test_openlth_cifar_presets(compose, preset, model, exclude):
    cfg = compose(f"experiment={preset}")
    m, d = cfg.model, cfg.dataset
    assert (m.name, m.init, m.bn_scale_init, m.bias_init, m.bn_momentum) == (model, "kaiming_normal", "uniform", "pytorch", 0.9)
    assert m.stage1_projection is (False if model.startswith("resnet") else None)  # VGGs have no shortcuts: not shown
    assert (d.name, d.val_size, d.augment, d.normalization) == ("cifar10", 0, True, "imagenet")
    o = cfg.optimizer
    assert (o.name, o.lr, o.momentum, o.weight_decay, o.schedule.milestones) == ("momentum", 0.1, 0.9, 1e-4, ["80ep", "120ep"])
    assert (cfg.pruning.scope, cfg.pruning.fraction, cfg.pruning.exclude) == ("global", 0.2, exclude)
    assert (cfg.rewind.mode, cfg.rewind.point, cfg.rewind.optimizer_state) == ("weights", "0it", "reset")
    assert (cfg.train.drop_last, cfg.train.data_order, cfg.train.duration) == (False, "per_level", "160ep")
    plan = make_plan(cfg, 50_000)
    assert (plan.steps_per_epoch, plan.total_steps) == (391, 62_560)
    assert lr_at(cfg, plan, [31_279, 31_280, 46_919, 46_920]) == pytest.approx([0.1, 0.01, 0.01, 0.001])


def test_imagenet_normalisation_is_openlths_cifar_constants(tmp_path):
    from lth.data import IMAGENET_MEAN, IMAGENET_STD

    assert (IMAGENET_MEAN, IMAGENET_STD) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_openlth_prunes_one_weight_more_than_lth():
    """The count the README states: OpenLTH's sparse_global removes the weights at or below the
    (ceil(p m))-th order statistic (0-based), ceil(p m) + 1 of them, m counting ignored layers."""
    w = np.random.default_rng(0).permutation(np.arange(1, 1001)).astype(float)
    number = math.ceil(0.2 * w.size)
    threshold = np.sort(np.abs(w))[number]
    assert int((np.abs(w) <= threshold).sum()) == number + 1 == 201
    assert pruning.n_to_prune(0.2, w.size) == 200


# ----------------------------------------------------------------------------- drop_last, shuffle, data order


def test_drop_last_false_steps_per_epoch(compose):
    cfg = compose("experiment=lmc_resnet20_cifar10", "train.duration=2ep")
    assert make_plan(cfg, 50_000).steps_per_epoch == 390  # the default: drop the last 80 images
    cfg = compose("experiment=lmc_resnet20_cifar10", "train.duration=2ep", "train.drop_last=false")
    plan = make_plan(cfg, 50_000)
    assert (plan.steps_per_epoch, plan.total_steps) == (391, 782)


@pytest.mark.slow  # compiles the trainer's step for two batch sizes, and the reference steps
def test_drop_last_false_trains_the_partial_batch_in_stored_order(tiny_dataset):
    """Unshuffled, drop_last=false: steps 0, 1, 2 take examples [0, 100), [100, 200), [200, 250)."""
    import optax

    from lth.data import Dataset
    from lth.models.mlp import MLP
    from lth.train.trainer import Trainer, replicate_keys

    t = tiny_dataset
    ds = Dataset("t", t.x_train[:250], t.y_train[:250], t.x_val, t.y_val, t.x_test, t.y_test, t.num_classes, t.mean, t.std, 1.0)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    trainer = Trainer(MLP(widths=(8,), num_classes=ds.num_classes), ds, tx, optax.constant_schedule(0.1), batch_size=100,
                      shuffle=False, drop_last=False, scan=True)
    assert (trainer.steps_per_epoch, trainer.last_batch, trainer.segments(1, 4)) == (3, 50, [(1, 1, 100), (2, 1, 50), (3, 2, 100)])
    keys = replicate_keys(0, 1)
    v = trainer.init_variables(keys["init"])
    states0 = trainer.create_states(v, jax.vmap(M.ones_like)(v["params"]))
    states, metrics = trainer.run(states0, keys, 0, 4)
    assert metrics["loss"].shape == (4, 1)
    ref = states0
    for lo, hi in ((0, 100), (100, 200), (200, 250), (0, 100)):
        ref, _ = trainer.train_step_all(ref, jnp.asarray(ds.normalize(ds.x_train[lo:hi]))[None], jnp.asarray(ds.y_train[lo:hi])[None])
    for a, b in zip(jax.tree.leaves(states.params), jax.tree.leaves(ref.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_per_level_data_order_keys():
    keys = {"data": jax.random.split(jax.random.key(0), 2), "aug": jax.random.split(jax.random.key(1), 2), "init": jax.random.split(jax.random.key(2), 2)}
    fixed, per = data_order.ORDERS["fixed"], data_order.ORDERS["per_level"]
    same = lambda a, b: all(np.array_equal(jax.random.key_data(a[k]), jax.random.key_data(b[k])) for k in a)
    assert same(fixed.level_keys(keys, 3), keys) and same(per.level_keys(keys, 0), keys)
    l1, l2 = per.level_keys(keys, 1), per.level_keys(keys, 2)
    assert not np.array_equal(jax.random.key_data(l1["data"]), jax.random.key_data(keys["data"]))
    assert not np.array_equal(jax.random.key_data(l1["data"]), jax.random.key_data(l2["data"]))
    assert np.array_equal(jax.random.key_data(l1["init"]), jax.random.key_data(keys["init"]))  # weights are not the order's


# ----------------------------------------------------------------------------- settings: errors and hashes


@pytest.mark.parametrize("change,match", [
    (dict(model=ModelConfig(name="mlp", widths=[500, 100], residual=True)), "model.residual=true with model.widths"),
    (dict(model=ModelConfig(name="lenet_300_100", residual=True)), "model.residual=True: model=lenet_300_100 does not use this setting"),
    (dict(model=ModelConfig(name="vgg16", stage1_projection=True)), "model.stage1_projection=True: model=vgg16 does not use this setting"),
    (dict(model=ModelConfig(bn_momentum=1.0)), "model.bn_momentum=1.0"),
    (dict(model=ModelConfig(bias_init="uniform")), "model.bias_init='uniform' is not one of zeros, pytorch"),
    (dict(model=ModelConfig(head_init="tiny")), "model.head_init='tiny' is not one of"),
    (dict(dataset=DatasetConfig(normalization="minmax")), "dataset.normalization='minmax' is not one of dataset, imagenet, per_image, per_image_l2"),
    (dict(train=TrainConfig(data_order="random")), "train.data_order='random' is not one of fixed, per_level"),
    (dict(pruning=PruningConfig(schedule="linear", target_density=0.1)), "pruning.target_density=0.1 is for pruning.schedule=oneshot"),
    (dict(pruning=PruningConfig(scope="layer")), "pruning.scope='layer' is not one of global, layerwise, module"),
])
def test_bad_values_name_the_setting(change, match):
    with pytest.raises(ConfigError, match=match.replace("(", r"\(").replace("[", r"\[")):
        validate(dataclasses.replace(Config(), **change))


def test_new_settings_at_their_defaults_leave_hashes_alone():
    cfg = Config()
    h = hashed_settings(cfg)
    for section, key in (("model", "head_init"), ("model", "bias_init"), ("model", "bn_momentum"), ("model", "stage1_projection"),
                         ("model", "residual"), ("dataset", "normalization"), ("dataset", "shuffle"), ("train", "drop_last"),
                         ("train", "data_order")):
        assert key not in h[section]
    assert content_hash(cfg) == "e6f78db1bb8d"  # as before these settings existed (tests/test_lottery.py)
    changed = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, drop_last=False))
    assert content_hash(changed) != content_hash(cfg)


def test_glorot_truncated_is_tf1_xavier_normal():
    from lth.models.initializers import kernel_initializer

    w = np.asarray(kernel_initializer("glorot_truncated")(jax.random.key(0), (784, 300)))
    sigma = math.sqrt(1.3 * 2 / (784 + 300))  # tf.contrib variance_scaling_initializer(FAN_AVG, uniform=False)
    assert np.abs(w).max() <= 2 * sigma * (1 + 1e-6) and np.abs(w).max() > 1.99 * sigma
    assert abs(w.var() / (sigma**2 * 0.7737413) - 1) < 0.01  # variance of a standard normal truncated at ±2
