"""Convolutional tickets: the CIFAR model configs and presets, BatchNorm in the trainer (running
statistics trained, used by evaluation, rewound with the weights, never pruned), on-device
augmentation inside the compiled training call, and short real runs on CIFAR-10.

The trainer tests use a ResNet-8 (the CIFAR ResNet family with one block per stage: BatchNorm,
strided convolutions and 1x1 projection shortcuts like ResNet-20, at a fraction of the compile
time) on random uint8 32x32x3 images.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import yaml

from lth.sparsity import masks as M
from lth.config.schema import DatasetConfig, ModelConfig, OptimizerConfig, PruningConfig
from lth.data import Dataset, load_dataset
from lth.data.augment import random_crop_flip
from lth.lottery.levels import make_plan
from lth.models import build_model
from lth.models.resnet_cifar import CifarResNet
from lth.train.optim import make_optimizer, make_schedule
from lth.sparsity.pruning import prune, tensor_fraction
from lth.lottery.rewind import rewind_weights, snapshot
from lth.train.trainer import Trainer, replicate_keys, train_level

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"


def host(x):
    return jax.device_get(x)


def tree_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(host(a)), jax.tree.leaves(host(b))
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


def replicate(tree, r: int):
    return jax.tree.map(lambda x: np.asarray(x)[r], host(tree))


def abstract_params(name: str, **kwargs):
    """A registry model's parameters as shapes only (`jax.eval_shape`: nothing is computed)."""
    size = 64 if name in ("resnet18", "resnet50") else 32
    model = build_model(ModelConfig(name=name, **kwargs), 10)
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    return model, variables, x


def n_weights(params, paths) -> int:
    flat = M.flatten(params)
    return int(sum(np.prod(flat[p].shape) for p in paths))


# ----------------------------------------------------------------------------- model configs

NEW_MODEL_CONFIGS = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "vgg11", "vgg13", "vgg16", "vgg19",
                     "resnet18", "resnet50"]


@pytest.mark.parametrize("name", NEW_MODEL_CONFIGS)
def test_model_config_builds_its_registry_model(name):
    path = CONF / "model" / f"{name}.yaml"
    text = path.read_text()
    assert text.startswith("# "), f"{path.name} starts with a one-line comment"
    cfg = ModelConfig(**yaml.safe_load(text))
    assert (cfg.name, cfg.init) == (name, "kaiming_normal")  # OpenLTH's default for ResNets and VGGs
    model, variables, x = abstract_params(name, init=cfg.init)
    assert "batch_stats" in variables
    assert jax.eval_shape(model.apply, variables, x).shape == (2, 10)


# ----------------------------------------------------------------------------- what is prunable


def test_batchnorm_is_never_prunable_and_every_conv_and_the_head_is():
    _, variables, _ = abstract_params("resnet20")
    params = variables["params"]
    paths = M.prunable_paths(params, ["kernel$"])
    assert not [p for p in paths if "bn" in p]  # BN scale and bias are never selected
    assert all(p.endswith("/kernel") for p in paths)
    # The first conv, both 1x1 projection shortcuts and the classifier are prunable by default.
    for p in ("conv1/kernel", "stage2/block0/shortcut_conv/kernel", "stage3/block0/shortcut_conv/kernel", "head/kernel"):
        assert p in paths
    assert len(paths) == 19 + 2 + 1 and n_weights(params, paths) == 270_896

    # `pruning.exclude` patterns drop them.
    kept = M.prunable_paths(params, ["kernel$"], ["^conv1/", "shortcut_conv", "^head/"])
    assert set(paths) - set(kept) == {"conv1/kernel", "stage2/block0/shortcut_conv/kernel",
                                      "stage3/block0/shortcut_conv/kernel", "head/kernel"}
    assert n_weights(params, kept) == 270_896 - 432 - 512 - 2_048 - 640


def test_pruning_leaves_batchnorm_untouched():
    model = build_model(ModelConfig(name="resnet20", bn_scale_init="uniform"), 10)
    with jax.threefry_partitionable(False):  # cheaper to compile on CPU; any init will do
        params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
    paths = M.prunable_paths(params, ["kernel$"])
    mask = prune(params, M.ones_like(params), PruningConfig(fraction=0.5, scope="global"), paths)
    alive, total = M.count(mask, paths)
    assert alive == total - round(0.5 * total)
    flat_mask, flat_params = M.flatten(mask), M.flatten(params)
    bn = [p for p in flat_mask if "bn" in p.split("/")[-2]]  # bn1/scale, stage2/block0/shortcut_bn/bias, ...
    assert bn and all(np.all(np.asarray(flat_mask[p])) for p in bn)
    masked = M.flatten(M.apply_mask(params, mask))
    for p in bn:
        np.testing.assert_array_equal(masked[p], flat_params[p])


# ----------------------------------------------------------------------------- presets


CIFAR_PRESETS = ["lth_conv2_cifar10", "lth_conv4_cifar10", "lth_conv6_cifar10", "lmc_resnet20_cifar10",
                 "lmc_vgg16_cifar10", "renda_resnet56_cifar10"]


@pytest.mark.parametrize("preset", CIFAR_PRESETS)
def test_preset_header_states_command_paper_and_dense_accuracy(preset):
    text = (CONF / "experiment" / f"{preset}.yaml").read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert text.startswith("# @package _global_\n")
    assert f"python experiments/lottery.py experiment={preset}" in header
    assert "2019" in header or "2020" in header
    assert "reports" in header and "% test accuracy" in header


@pytest.mark.parametrize("depth,lr,steps,conv_rate", [(2, 2e-4, 20_000, 0.1), (4, 3e-4, 25_000, 0.1), (6, 3e-4, 30_000, 0.15)])
def test_conv_presets_are_frankle_and_carbin(compose, depth, lr, steps, conv_rate):
    cfg = compose(f"experiment=lth_conv{depth}_cifar10")
    assert (cfg.dataset.name, cfg.dataset.val_size, cfg.dataset.augment) == ("cifar10", 5000, False)
    assert (cfg.model.name, cfg.model.init) == (f"conv{depth}", "glorot_normal")
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.optimizer.schedule.name) == ("adam", lr, 0.0, "constant")
    assert (cfg.train.batch_size, cfg.rewind.point, cfg.pruning.scope) == (60, "0it", "layerwise")
    plan = make_plan(cfg, 45_000)
    assert (plan.total_steps, plan.eval_every, plan.rewind_step) == (steps, 100, 0)
    # The patterns give every conv its rate, fc1/fc2 the default 20% and the output layer 10%.
    _, variables, _ = abstract_params(cfg.model.name)
    paths = M.prunable_paths(variables["params"], cfg.pruning.prunable, cfg.pruning.exclude)
    rates = {p: tensor_fraction(p, cfg.pruning) or cfg.pruning.fraction for p in paths}
    assert rates == {**{f"conv{i}/kernel": conv_rate for i in range(1, depth + 1)},
                     "fc1/kernel": 0.2, "fc2/kernel": 0.2, "head/kernel": 0.1}


@pytest.mark.parametrize("preset,model,rewind_step,prunable", [
    ("lmc_resnet20_cifar10", "resnet20", 500, 270_896),  # every conv (shortcuts included) and the head
    ("lmc_vgg16_cifar10", "vgg16", 1000, 14_710_464),  # OpenLTH's cifar_vgg does not prune the output layer
])
def test_lmc_presets_are_frankle_et_al_2020(compose, preset, model, rewind_step, prunable):
    cfg = compose(f"experiment={preset}")
    assert (cfg.dataset.name, cfg.dataset.augment, cfg.dataset.val_size) == ("cifar10", True, 0)
    assert (cfg.model.name, cfg.model.init, cfg.model.bn_scale_init) == (model, "kaiming_normal", "uniform")
    o = cfg.optimizer
    assert (o.name, o.lr, o.momentum, o.weight_decay) == ("momentum", 0.1, 0.9, 1e-4)
    assert (o.schedule.name, o.schedule.milestones, o.schedule.gamma) == ("step", ["32000it", "48000it"], 0.1)
    assert (cfg.pruning.scope, cfg.pruning.fraction, cfg.pruning.fractions) == ("global", 0.2, {})
    assert cfg.train.batch_size == 128
    plan = make_plan(cfg, 50_000)
    assert (plan.total_steps, plan.rewind_step, plan.eval_every) == (63_000, rewind_step, 1000)
    _, variables, _ = abstract_params(model)
    assert n_weights(variables["params"], M.prunable_paths(variables["params"], cfg.pruning.prunable, cfg.pruning.exclude)) == prunable


def test_renda_preset_schedule_is_the_released_codes(compose):
    cfg = compose("experiment=renda_resnet56_cifar10")
    assert (cfg.model.name, cfg.dataset.augment, cfg.dataset.val_size) == ("resnet56", True, 0)
    o = cfg.optimizer
    assert (o.name, o.lr, o.momentum, o.weight_decay, o.schedule.milestones) == ("momentum", 0.1, 0.9, 2e-4, ["35546it", "53125it"])
    assert (cfg.pruning.scope, cfg.pruning.fraction, cfg.train.batch_size) == ("global", 0.2, 128)
    plan = make_plan(cfg, 50_000)
    assert (plan.steps_per_epoch, plan.total_steps, plan.rewind_step) == (390, 71_108, 0)
    assert (cfg.rewind.mode, cfg.rewind.point) == ("lr", "0it")  # Renda's method: full LR rewinding
    lr = make_schedule(o, total_steps=plan.total_steps, steps_per_epoch=plan.steps_per_epoch)
    # TF's learning_rate_with_decay: boundaries int(50000 / 128 * epoch) for epochs 91 and 136
    assert [int(50_000 / 128 * e) for e in (91, 136)] == [35_546, 53_125]
    assert [float(lr(s)) for s in (0, 35_545, 35_546, 53_124, 53_125, 71_107)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


# ----------------------------------------------------------------------------- BatchNorm and augmentation in the trainer


def make_tiny_images(n_train=48, n_val=8, n_test=24, classes=4, seed=0) -> Dataset:
    """Random uint8 CIFAR-shaped images (N, 32, 32, 3) with random labels, as an `lth.data.Dataset`."""
    rng = np.random.default_rng(seed)

    def split(n):
        return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8), rng.integers(0, classes, size=n).astype(np.int32)

    (xt, yt), (xv, yv), (xs, ys) = split(n_train), split(n_val), split(n_test)
    mean, std = np.array([0.49, 0.48, 0.45], np.float32), np.array([0.25, 0.24, 0.26], np.float32)
    return Dataset("tiny-images", xt, yt, xv, yv, xs, ys, classes, mean, std, 255.0)


BATCH = 8


@pytest.fixture(scope="module")
def bn():
    """A ResNet-8 trainer (momentum SGD, crop+flip on device) and two dense replicates at step 0."""
    ds = make_tiny_images()
    model = CifarResNet(depth=8, num_classes=ds.num_classes)
    opt = OptimizerConfig(name="momentum", lr=0.05, momentum=0.9, weight_decay=1e-4)
    tr = Trainer(model, ds, make_optimizer(opt), make_schedule(opt, total_steps=100, steps_per_epoch=ds.num_train // BATCH),
                 batch_size=BATCH, eval_batch_size=16, augment=random_crop_flip)
    keys = replicate_keys(0, 2)
    v = tr.init_variables(keys["init"])
    states0 = tr.create_states(v, jax.vmap(M.ones_like)(v["params"]))
    return tr, keys, states0


@pytest.fixture(scope="module")
def trained(bn):
    """The dense level: steps 0..6, capturing the states at the rewind point k = 2."""
    tr, keys, states0 = bn
    final, hist, captured = train_level(tr, states0, keys, start=0, end=6, eval_every=6, capture_at=2)
    return final, hist, captured


def test_training_updates_the_running_statistics(bn, trained):
    _, _, states0 = bn
    final = trained[0]
    assert "batch_stats" not in M.flatten(final.params)
    before, after = M.flatten(host(states0.batch_stats)), M.flatten(host(final.batch_stats))
    assert len(after) == 2 * 9  # mean and var of 9 BatchNorms (stem, 3 x 2 in blocks, 2 shortcuts)
    for path in after:
        for r in range(2):
            assert not np.array_equal(before[path][r], after[path][r]), path
    np.testing.assert_array_equal(host(final.step), [6, 6])


def test_evaluation_uses_the_running_statistics_and_leaves_them(bn, trained):
    tr, _, _ = bn
    final = trained[0]
    stats = host(final.batch_stats)
    ev = tr.evaluate(final, "test")
    assert tree_equal(final.batch_stats, stats)
    again = tr.evaluate(final, "test")
    np.testing.assert_array_equal(ev["loss"], again["loss"])  # deterministic: no augmentation, no batch statistics
    shifted = final.replace(batch_stats=jax.tree.map(lambda s: s + 0.5, final.batch_stats))
    assert not np.allclose(tr.evaluate(shifted, "test")["loss"], ev["loss"])  # the running statistics are what is used


@pytest.mark.parametrize("split", ["test", "val"])
def test_evaluation_is_a_plain_forward_pass_without_augmentation(bn, trained, split):
    """With an augmenting trainer, evaluating equals one un-augmented forward pass over the whole
    split in eval mode (24 test examples in batches of 16: the padding changes nothing)."""
    tr, _, _ = bn
    final = trained[0]
    ds = tr.dataset
    x, y = (ds.x_test, ds.y_test) if split == "test" else (ds.x_val, ds.y_val)
    ev = tr.evaluate(final, split)
    for r in range(2):
        variables = {"params": replicate(final.params, r), "batch_stats": replicate(final.batch_stats, r)}
        logits = tr.model.apply(variables, ds.normalize(x), train=False)
        loss = float(optax.softmax_cross_entropy_with_integer_labels(logits, y).mean())
        acc = float(np.mean(np.argmax(np.asarray(logits), -1) == y))
        assert float(ev["loss"][r]) == pytest.approx(loss, rel=1e-5, abs=1e-6)
        assert float(ev["accuracy"][r]) == pytest.approx(acc, abs=1e-6)


def test_rewinding_restores_the_batch_statistics_of_step_k(bn, trained):
    tr, keys, states0 = bn
    final, _, captured = trained
    # The captured states are those of an uninterrupted run of k = 2 steps.
    at_k, _ = tr.run(states0, keys, 0, 2)
    assert tree_equal(captured.batch_stats, at_k.batch_stats) and tree_equal(captured.params, at_k.params)
    assert not tree_equal(captured.batch_stats, final.batch_stats)

    paths = M.prunable_paths(replicate(states0.params, 0), ["kernel$"])
    cfg = PruningConfig(fraction=0.5, scope="global")
    masks = M.stack([prune(p, m, cfg, paths) for p, m in zip(M.unstack(final.params, 2), M.unstack(final.mask, 2))])
    rewound = rewind_weights(states0, snapshot(captured), masks, optimizer_state="reset")
    assert tree_equal(rewound.batch_stats, captured.batch_stats)  # statistics of step k, exactly
    np.testing.assert_array_equal(host(rewound.step), [2, 2])
    assert tree_equal(rewound.params, M.apply_mask(host(captured.params), masks))
    flat_rewound, flat_captured = M.flatten(host(rewound.params)), M.flatten(host(captured.params))
    for path in flat_rewound:
        if "bn" in path:  # BatchNorm scale and bias: rewound, never pruned
            np.testing.assert_array_equal(flat_rewound[path], flat_captured[path])

    # A dense network rewound to k with its optimizer state replays the rest of the dense run
    # exactly, running statistics included (same batches, same crops, same learning rates).
    replay = rewind_weights(states0, snapshot(captured), host(states0.mask), optimizer_state="rewound")
    replay, _ = tr.run(replay, keys, 2, 4)
    assert tree_equal(replay.batch_stats, final.batch_stats) and tree_equal(replay.params, final.params)


def test_each_replicate_gets_its_own_crops_and_the_same_seed_the_same_ones(bn):
    """Two replicates with the same initialisation and data order differ only through their
    augmentation keys, so they train identically exactly when those keys are equal."""
    tr, keys, _ = bn
    same = lambda k: jnp.stack([k[0], k[0]])
    twins = {"init": same(keys["init"]), "data": same(keys["data"]), "aug": keys["aug"]}
    v = tr.init_variables(twins["init"])
    s0 = tr.create_states(v, jax.vmap(M.ones_like)(v["params"]))

    a, _ = tr.run(s0, twins, 0, 2)
    assert not np.array_equal(replicate(a.params, 0)["head"]["kernel"], replicate(a.params, 1)["head"]["kernel"])
    b, _ = tr.run(s0, twins, 0, 2)
    assert tree_equal(a, b)  # the same seed gives the same crops and flips

    c, _ = tr.run(s0, {**twins, "aug": same(keys["aug"])}, 0, 2)
    assert tree_equal(replicate(c.params, 0), replicate(c.params, 1))
    assert tree_equal(replicate(c.batch_stats, 0), replicate(c.batch_stats, 1))
    assert tree_equal(replicate(c.params, 0), replicate(a.params, 0))  # replicate 0 kept its own key


def test_augmentation_changes_training_batches_only(bn):
    """The trainer without augmentation trains differently (so crops and flips are applied) but
    evaluates the same states identically (evaluation never augments)."""
    tr, keys, states0 = bn
    plain = Trainer(tr.model, tr.dataset, tr.tx, tr.lr_fn, batch_size=BATCH, eval_batch_size=16, augment=None)
    a, _ = tr.run(states0, keys, 0, 2)
    b, _ = plain.run(states0, keys, 0, 2)
    assert not tree_equal(a.params, b.params)
    for split in ("val", "test"):
        np.testing.assert_array_equal(tr.evaluate(a, split)["loss"], plain.evaluate(a, split)["loss"])


# ----------------------------------------------------------------------------- real CIFAR-10


def cifar10(data_dir, test_examples=2000, augment=False) -> Dataset:
    try:
        ds = load_dataset(DatasetConfig(name="cifar10", val_size=5000, augment=augment), data_dir)
    except Exception as e:  # noqa: BLE001 - a missing shared copy skips, it never downloads
        pytest.skip(f"CIFAR-10 not available offline: {e}")
    return Dataset(ds.name, ds.x_train, ds.y_train, ds.x_val[:1000], ds.y_val[:1000], ds.x_test[:test_examples],
                   ds.y_test[:test_examples], ds.num_classes, ds.mean, ds.std, ds.scale)


def short_run(ds, model_cfg, opt, *, steps, batch_size, augment):
    model = build_model(model_cfg, ds.num_classes)
    spe = ds.num_train // batch_size
    tr = Trainer(model, ds, make_optimizer(opt), make_schedule(opt, total_steps=steps, steps_per_epoch=spe),
                 batch_size=batch_size, eval_batch_size=500, augment=random_crop_flip if augment else None)
    keys = replicate_keys(0, 1)
    v = tr.init_variables(keys["init"])
    states = tr.create_states(v, jax.vmap(M.ones_like)(v["params"]))
    states, hist, _ = train_level(tr, states, keys, start=0, end=steps, eval_every=steps)
    return hist.evals[-1]


@pytest.mark.slow  # over 20 s here; `make test-slow` runs it (the default suite stays near 10 minutes)
def test_real_cifar10_pipeline_learns_far_above_chance(data_dir):
    """The whole on-device pipeline on real CIFAR-10 (uint8 images gathered per step, crop+flip,
    normalisation, evaluation on held-out images) with a network cheap enough for the default
    suite: an MLP reaches well above the 10% of chance in 400 steps (about 35%)."""
    ds = cifar10(data_dir)
    ev = short_run(ds, ModelConfig(name="mlp", widths=[256, 128], init="kaiming_normal"),
                   OptimizerConfig(name="adam", lr=5e-4), steps=400, batch_size=128, augment=True)
    assert ev["test/accuracy"][0] > 0.25 and ev["val/accuracy"][0] > 0.25


@pytest.mark.slow
def test_real_cifar10_conv2_learns_far_above_chance(data_dir):
    """Conv-2 as Frankle & Carbin train it (Adam, batch 60, Glorot normal, no augmentation)."""
    ds = cifar10(data_dir)
    ev = short_run(ds, ModelConfig(name="conv2", init="glorot_normal"), OptimizerConfig(name="adam", lr=2e-4),
                   steps=300, batch_size=60, augment=False)
    assert ev["test/accuracy"][0] > 0.35


@pytest.mark.slow
def test_real_cifar10_resnet20_learns_far_above_chance(data_dir):
    """ResNet-20 as Frankle et al. (2020) train it (SGD 0.1, momentum, weight decay, crop+flip,
    OpenLTH's BatchNorm init), for 300 steps."""
    ds = cifar10(data_dir, augment=True)
    ev = short_run(ds, ModelConfig(name="resnet20", init="kaiming_normal", bn_scale_init="uniform"),
                   OptimizerConfig(name="momentum", lr=0.1, momentum=0.9, weight_decay=1e-4),
                   steps=300, batch_size=128, augment=True)
    assert ev["test/accuracy"][0] > 0.35



# ----------------------------------------------------------------------------- ImageNet-style ResNets through TFDS


@pytest.mark.slow  # over 20 s here; `make test-slow` runs it (the default suite stays near 10 minutes)
def test_resnet18_runs_on_a_tfds_image_dataset_under_mock_data(tmp_path):
    """ResNet-18 on a variable-size TFDS image dataset (imagenette, mocked: nothing is downloaded),
    resized to 32x32 and augmented, through a whole two-level IMP run."""
    import json

    import pandas as pd
    import tensorflow_datasets as tfds

    from lth.lottery import levels as lottery
    from lth.config.schema import Config, PathsConfig, RewindConfig, TrainConfig

    cfg = Config(
        levels=1, replicates=1, seed=0,
        dataset=DatasetConfig(name="imagenette/160px", source="tfds", val_size=4, image_size=32, augment=True,
                              download=False),
        model=ModelConfig(name="resnet18"),
        optimizer=OptimizerConfig(name="momentum", lr=0.01, momentum=0.9),
        pruning=PruningConfig(fraction=0.2, scope="global"),
        rewind=RewindConfig(point="0it"),
        train=TrainConfig(duration="2it", batch_size=8, eval_every="2it", eval_batch_size=16),
        paths=PathsConfig(runs_dir=str(tmp_path / "runs")),
    )
    cfg.logger.progress = False
    cfg.logger.wandb.mode = "disabled"
    with tfds.testing.mock_data(num_examples=20):
        out = lottery.run(cfg, echo=lambda _: None)
    results = pd.read_csv(next((tmp_path / "runs").rglob("results.csv")))
    assert results.level.tolist() == [0, 1] and len(out.results) == 2
    assert results.density.tolist() == pytest.approx([1.0, 0.8], abs=1e-6)
    assert results.test_accuracy.between(0, 1).all()
    summary = json.loads(next((tmp_path / "runs").rglob("summary.json")).read_text())
    # torchvision ResNet-18 kernels with a 10-way head (11,678,912 with 1,000 classes, test_models)
    assert summary["parameters"]["prunable_weights"] == 11_678_912 - 512 * 990
