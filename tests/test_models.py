"""Tests of `lth.models`: exact parameter counts against the papers / OpenLTH / torchvision, the
naming convention pruning relies on, BatchNorm semantics, initialiser statistics and errors.

Big networks are only traced (`jax.eval_shape`), never run, so the file stays fast on a CPU.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.tree_util import tree_flatten_with_path

from lth.config.schema import INITS, BN_SCALE_INITS, ConfigError, ModelConfig
from lth.models import MODELS, build_model, has_batch_norm
from lth.models.initializers import KERNEL_INITIALIZERS, bn_scale_initializer, kernel_initializer
from lth.models.resnet_cifar import CifarResNet

IMAGENET = ("resnet18", "resnet50")
BATCH_NORM_MODELS = {"resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "vgg11", "vgg13", "vgg16", "vgg19", *IMAGENET}

# Kernel weights (conv + dense, no biases / BN) with a 10-way head (1000-way for ImageNet nets).
KERNEL_COUNTS = {
    "mlp": 40 * 500 + 500 * 500 + 500 * 10,  # MNIST-1D 40-500-500-10 (ModelConfig's default widths)
    "lenet_300_100": 266_200,  # Frankle & Carbin 2019, Figure 2
    "conv2": 4_300_992,
    "conv4": 2_425_024,
    "conv6": 2_261_184,
    "lenet5": 430_500,  # Caffe's LeNet-5 (Han et al. 2015): 500 + 25,000 + 400,000 + 5,000
    "resnet20": 270_896,
    "resnet32": 464_432,
    "resnet44": 657_968,
    "resnet56": 851_504,
    "resnet110": 1_722_416,
    "vgg11": 9_222_848,
    "vgg13": 9_407_168,
    "vgg16": 14_715_584,
    "vgg19": 20_024_000,
    "resnet18": 11_678_912,
    "resnet50": 25_502_912,
}
# torchvision's `sum(p.numel() for p in model.parameters())` with 1000 classes.
TORCHVISION_TOTALS = {"resnet18": 11_689_512, "resnet50": 25_557_032}


def input_shape(name: str) -> tuple[int, ...]:
    if name == "mlp":
        return (40,)
    if name in ("lenet_300_100", "lenet5"):
        return (28, 28, 1)
    if name in IMAGENET:
        return (64, 64, 3)
    return (32, 32, 3)


def num_classes(name: str) -> int:
    return 1000 if name in IMAGENET else 10


def flat(tree) -> dict[str, jax.Array]:
    """`/`-joined parameter paths -> leaves (the form pruning patterns are matched against)."""
    return {"/".join(str(k.key) for k in path): leaf for path, leaf in tree_flatten_with_path(tree)[0]}


def abstract_variables(name: str, **cfg_kwargs):
    model = build_model(ModelConfig(name=name, **cfg_kwargs), num_classes(name))
    x = jax.ShapeDtypeStruct((2, *input_shape(name)), jnp.float32)
    return model, jax.eval_shape(model.init, jax.random.key(0), x)


def count(params, leaf_name: str) -> int:
    return sum(math.prod(v.shape) for k, v in flat(params).items() if k.endswith("/" + leaf_name))


@pytest.fixture(autouse=True, scope="module")
def _fast_cpu_prng():
    """XLA:CPU compiles the (default) partitionable threefry several times slower than the classic
    one, and initialising a network compiles one generator per kernel shape. These tests check
    shapes and statistics, not particular random streams, so they use the classic threefry."""
    with jax.threefry_partitionable(False):
        yield


@pytest.fixture(scope="module")
def resnet20():
    """ResNet-20 with OpenLTH's CIFAR defaults (kaiming_normal, BN scales from U[0, 1)), initialised
    once on a small batch (the network is size-agnostic) and shared by the tests below."""
    model = build_model(ModelConfig(name="resnet20", init="kaiming_normal", bn_scale_init="uniform"), 10)
    x = jax.random.normal(jax.random.key(0), (8, 8, 8, 3)) * 2.0 + 0.5
    return model, x, jax.jit(model.init)(jax.random.key(1), x)


@pytest.fixture(scope="module")
def lenet_glorot():
    model = build_model(ModelConfig(name="lenet_300_100", init="glorot_normal"), 10)
    x = jax.random.normal(jax.random.key(0), (5, 28, 28, 1))
    return model, x, jax.jit(model.init)(jax.random.key(0), x)


TOKEN_MODELS = {"bert"}  # models of token ids, with their own conventions (tests/test_bert.py)


def test_registry_names():
    assert sorted(set(MODELS) - TOKEN_MODELS) == sorted(KERNEL_COUNTS)


@pytest.mark.parametrize("name", sorted(KERNEL_COUNTS))
def test_kernel_counts_output_shape_and_names(name):
    model, variables = abstract_variables(name)
    params = flat(variables["params"])
    assert count(variables["params"], "kernel") == KERNEL_COUNTS[name]

    out = jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((3, *input_shape(name)), jnp.float32))
    assert out.shape == (3, num_classes(name)) and out.dtype == jnp.float32

    # Naming convention: a `head/kernel`; kernels live in conv*/fc*/head modules; BN holds only
    # scale/bias; nothing but kernels is called kernel.
    assert "head/kernel" in params and "head/bias" in params
    assert params["head/kernel"].shape[-1] == num_classes(name)
    for path in params:
        *modules, leaf = path.split("/")
        layer = modules[-1]
        assert leaf in ("kernel", "bias", "scale"), path
        if "bn" in layer:
            assert leaf in ("scale", "bias"), path
        else:
            assert leaf in ("kernel", "bias"), path
            assert "conv" in layer or layer.startswith("fc") or layer == "head", path
    assert has_batch_norm(variables) == (name in BATCH_NORM_MODELS)
    assert ("batch_stats" in variables) == (name in BATCH_NORM_MODELS)


def test_lenet_300_100_layers():
    _, variables = abstract_variables("lenet_300_100")
    params = flat(variables["params"])
    assert {k: v.shape for k, v in params.items() if k.endswith("kernel")} == {
        "fc1/kernel": (784, 300),
        "fc2/kernel": (300, 100),
        "head/kernel": (100, 10),
    }
    assert count(variables["params"], "bias") == 410


def test_conv_nets_layers():
    _, variables = abstract_variables("conv6")
    shapes = {k: v.shape for k, v in flat(variables["params"]).items() if k.endswith("kernel")}
    assert shapes == {
        "conv1/kernel": (3, 3, 3, 64),
        "conv2/kernel": (3, 3, 64, 64),
        "conv3/kernel": (3, 3, 64, 128),
        "conv4/kernel": (3, 3, 128, 128),
        "conv5/kernel": (3, 3, 128, 256),
        "conv6/kernel": (3, 3, 256, 256),
        "fc1/kernel": (4 * 4 * 256, 256),
        "fc2/kernel": (256, 256),
        "head/kernel": (256, 10),
    }


def test_lenet5_is_caffes_lenet():
    """Caffe's lenet_train_test.prototxt as Han et al. 2015/2016 prune it: 431,080 parameters on
    28x28 MNIST, conv1 520, conv2 25,050, ip1 (fc1) 400,500, ip2 (head) 5,010."""
    model, variables = abstract_variables("lenet5")
    params = flat(variables["params"])
    assert {k: v.shape for k, v in params.items()} == {
        "conv1/kernel": (5, 5, 1, 20), "conv1/bias": (20,),
        "conv2/kernel": (5, 5, 20, 50), "conv2/bias": (50,),
        "fc1/kernel": (4 * 4 * 50, 500), "fc1/bias": (500,),
        "head/kernel": (500, 10), "head/bias": (10,),
    }
    per_layer = {layer: sum(math.prod(v.shape) for k, v in params.items() if k.startswith(layer + "/"))
                 for layer in ("conv1", "conv2", "fc1", "head")}
    assert per_layer == {"conv1": 520, "conv2": 25_050, "fc1": 400_500, "head": 5_010}
    assert sum(math.prod(v.shape) for v in params.values()) == 431_080

    # The forward pass is the prototxt's: valid 5x5 convs, 2x2/2 max-pools, no ReLU after the
    # convolutions, ReLU after ip1 only (checked against lax ops, with nonzero biases).
    keys = iter(jax.random.split(jax.random.key(3), 9))
    p = {k: jax.random.normal(next(keys), v.shape) * 0.3 for k, v in params.items()}
    x = jax.random.normal(next(keys), (3, 28, 28, 1))

    def conv_pool(h, layer):
        h = jax.lax.conv_general_dilated(h, p[layer + "/kernel"], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        h = h + p[layer + "/bias"]
        return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    h = conv_pool(conv_pool(x, "conv1"), "conv2").reshape(3, -1)
    h = jax.nn.relu(h @ p["fc1/kernel"] + p["fc1/bias"])
    want = h @ p["head/kernel"] + p["head/bias"]
    tree = {"params": {layer: {leaf: p[f"{layer}/{leaf}"] for leaf in ("kernel", "bias")} for layer in per_layer}}
    np.testing.assert_allclose(model.apply(tree, x), want, rtol=1e-4, atol=1e-4)


def test_resnet20_breakdown():
    _, variables = abstract_variables("resnet20")
    params = flat(variables["params"])

    def kernels(prefix):
        return sum(math.prod(v.shape) for k, v in params.items() if k.startswith(prefix) and k.endswith("kernel"))

    assert kernels("conv1/") == 432
    assert kernels("stage1/") == 13_824
    assert kernels("stage2/") == 51_200
    assert kernels("stage3/") == 204_800
    assert kernels("head/") == 640
    # Projection shortcuts only where the shape changes (first block of stages 2 and 3).
    shortcuts = sorted(k for k in params if "shortcut_conv" in k)
    assert shortcuts == ["stage2/block0/shortcut_conv/kernel", "stage3/block0/shortcut_conv/kernel"]
    assert params["stage2/block0/shortcut_conv/kernel"].shape == (1, 1, 16, 32)
    assert params["stage2/block0/conv1/kernel"].shape == (3, 3, 16, 32)
    assert "stage2/block0/shortcut_bn/scale" in params
    # Convolutions have no bias.
    assert not any("conv" in k and k.endswith("bias") for k in params)
    assert sorted({k.split("/")[1] for k in params if k.startswith("stage1/")}) == ["block0", "block1", "block2"]


def test_vgg16_breakdown():
    _, variables = abstract_variables("vgg16")
    params = flat(variables["params"])
    assert sum(1 for k in params if k.startswith("conv") and k.endswith("kernel")) == 13
    assert count({k: v for k, v in params.items() if k.startswith("conv")}, "kernel") == 14_710_464
    assert params["head/kernel"].shape == (512, 10)
    assert params["conv13/kernel"].shape == (3, 3, 512, 512)


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_resnets_match_torchvision(name):
    model, variables = abstract_variables(name)
    params = variables["params"]
    assert sum(math.prod(v.shape) for v in jax.tree.leaves(params)) == TORCHVISION_TOTALS[name]
    # Any image size: 224 (ImageNet) and 32 (CIFAR) both give logits.
    for size in (224, 32):
        out = jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32))
        assert out.shape == (2, 1000)
    p = flat(params)
    assert p["conv1/kernel"].shape == (7, 7, 3, 64)
    if name == "resnet50":
        assert p["stage1/block0/shortcut_conv/kernel"].shape == (1, 1, 64, 256)  # bottleneck expansion 4
        assert p["stage4/block0/conv2/kernel"].shape == (3, 3, 512, 512)  # stride on the 3x3 (v1.5)
    else:
        assert "stage1/block0/shortcut_conv/kernel" not in p


@pytest.mark.parametrize("name", ["mlp", "conv2"])
def test_forward_runs_and_is_jittable(name):
    model = build_model(ModelConfig(name=name), 10)
    x = jax.random.normal(jax.random.key(1), (4, *input_shape(name)))
    variables = jax.jit(model.init)(jax.random.key(0), x)
    logits = jax.jit(model.apply)(variables, x)
    assert logits.shape == (4, 10)
    assert bool(jnp.all(jnp.isfinite(logits)))
    assert all(bool(jnp.all(v == 0)) for k, v in flat(variables["params"]).items() if k.endswith("bias"))


def test_resnet20_forward_and_zero_biases(resnet20):
    model, x, variables = resnet20
    logits = jax.jit(model.apply)(variables, x)
    assert logits.shape == (8, 10) and bool(jnp.all(jnp.isfinite(logits)))
    # Head bias and BN shifts start at zero (convolutions have no bias).
    biases = {k: v for k, v in flat(variables["params"]).items() if k.endswith("bias")}
    assert "head/bias" in biases and "bn1/bias" in biases
    assert all(bool(jnp.all(v == 0)) for v in biases.values())


def test_mlp_flattens_input(lenet_glorot):
    model, x, variables = lenet_glorot
    np.testing.assert_allclose(model.apply(variables, x), model.apply(variables, x.reshape(5, 784)), rtol=1e-5, atol=1e-6)


def test_mlp_widths():
    _, variables = abstract_variables("mlp", widths=[7, 5, 3])
    shapes = {k: v.shape for k, v in flat(variables["params"]).items() if k.endswith("kernel")}
    assert shapes == {"fc1/kernel": (40, 7), "fc2/kernel": (7, 5), "fc3/kernel": (5, 3), "head/kernel": (3, 10)}


@pytest.mark.slow  # over 20 s here; `make test-slow` runs it (the default suite stays near 10 minutes)
def test_vmapped_replicates(resnet20):
    """R replicates = one vmapped init and step; different keys give different networks."""
    model = build_model(ModelConfig(name="mlp", widths=[32, 16]), 10)
    x = jax.random.normal(jax.random.key(0), (4, 40))
    keys = jax.random.split(jax.random.key(0), 3)
    variables = jax.jit(jax.vmap(model.init, in_axes=(0, None)))(keys, x)
    assert variables["params"]["head"]["kernel"].shape == (3, 16, 10)
    k = variables["params"]["fc1"]["kernel"]
    assert not bool(jnp.allclose(k[0], k[1]))
    logits = jax.jit(jax.vmap(model.apply, in_axes=(0, None)))(variables, x)
    assert logits.shape == (3, 4, 10)
    # Deterministic: the same key gives the same initialisation, vmapped or not.
    np.testing.assert_allclose(model.init(keys[1], x)["params"]["fc1"]["kernel"], k[1], rtol=1e-6, atol=1e-7)

    # A BatchNorm model's training step vmaps over replicates' params and batch_stats.
    model, x, single = resnet20
    stacked = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), single)
    step = jax.jit(jax.vmap(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"])))
    logits, updates = step(stacked)
    assert logits.shape == (2, 8, 10) and updates["batch_stats"]["bn1"]["mean"].shape == (2, 16)
    one, _ = model.apply(single, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(logits[0], one, rtol=1e-4, atol=1e-4)


class TestBatchNorm:
    def test_train_mode_updates_running_stats_with_pytorch_momentum(self, resnet20):
        model, x, variables = resnet20
        _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
        stats = updates["batch_stats"]
        # Stem BN: running = 0.9 * running + 0.1 * batch statistic (PyTorch momentum 0.1), from
        # the initial running mean 0 and variance 1.
        y = nn.Conv(16, (3, 3), padding=((1, 1), (1, 1)), use_bias=False).apply({"params": variables["params"]["conv1"]}, x)
        np.testing.assert_allclose(stats["bn1"]["mean"], 0.1 * y.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(stats["bn1"]["var"], 0.9 + 0.1 * y.var(axis=(0, 1, 2)), rtol=1e-4)
        changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"], stats)
        assert all(jax.tree.leaves(changed))

    def test_train_mode_uses_batch_statistics(self, resnet20):
        model, x, variables = resnet20
        out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
        other_stats = jax.tree.map(lambda s: s + 3.0, variables["batch_stats"])
        out2, _ = model.apply({**variables, "batch_stats": other_stats}, x, train=True, mutable=["batch_stats"])
        np.testing.assert_allclose(out, out2, rtol=1e-5, atol=1e-5)

    def test_eval_mode_uses_and_keeps_running_statistics(self, resnet20):
        model, x, variables = resnet20
        out, updates = model.apply(variables, x, train=False, mutable=["batch_stats"])
        jax.tree.map(np.testing.assert_array_equal, updates["batch_stats"], variables["batch_stats"])
        np.testing.assert_array_equal(out, model.apply(variables, x))  # eval needs nothing mutable
        other_stats = jax.tree.map(lambda s: s + 3.0, variables["batch_stats"])
        out2 = model.apply({**variables, "batch_stats": other_stats}, x)
        assert not bool(jnp.allclose(out, out2, atol=1e-3))
        # Eval differs from train on the same batch (running vs batch statistics).
        out_train, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
        assert not bool(jnp.allclose(out, out_train, atol=1e-3))


def test_bn_scale_init(resnet20):
    _, _, variables = resnet20
    params = flat(variables["params"])
    scales = jnp.concatenate([v for k, v in params.items() if k.endswith("scale")])
    assert scales.size == 16 + 6 * 16 + 6 * 32 + 32 + 6 * 64 + 64  # every BN of ResNet-20 (stem, blocks, shortcuts)
    assert bool(jnp.all((scales >= 0) & (scales < 1)))
    assert 0.4 < float(scales.mean()) < 0.6 and 0.25 < float(scales.std()) < 0.33  # U[0,1): 0.5, 0.289

    # `ones`: every scale is 1 (checked on the smallest BN net, a depth-8 CIFAR ResNet).
    model = CifarResNet(depth=8, num_classes=10, bn_scale_init=bn_scale_initializer("ones"))
    params = flat(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 4, 4, 3)))["params"])
    assert all(bool(jnp.all(v == 1)) for k, v in params.items() if k.endswith("scale"))
    assert build_model(ModelConfig(name="vgg16", bn_scale_init="ones"), 10).bn_scale_init is bn_scale_initializer("ones")


def test_glorot_normal_is_pytorch_xavier_normal(lenet_glorot):
    kernel = lenet_glorot[2]["params"]["fc1"]["kernel"]
    std = math.sqrt(2.0 / (784 + 300))
    assert abs(float(kernel.std()) / std - 1) < 0.02
    assert abs(float(kernel.mean())) < 0.01 * std
    # Untruncated: about 4.55% of a normal lies beyond 2 sigma (Flax's glorot_normal has none).
    beyond = float(jnp.mean(jnp.abs(kernel) > 2 * std))
    assert 0.04 < beyond < 0.051


def test_kaiming_normal_is_pytorch_default(resnet20):
    params = resnet20[2]["params"]
    kernel = params["stage3"]["block1"]["conv2"]["kernel"]  # (3, 3, 64, 64): fan_in 576
    assert abs(float(kernel.std()) / math.sqrt(2.0 / 576) - 1) < 0.03
    big = kernel_initializer("kaiming_normal")(jax.random.key(1), (3, 3, 256, 256))
    assert abs(float(big.std()) / math.sqrt(2.0 / 2304) - 1) < 0.02


@pytest.mark.parametrize(
    "name, bound",
    [("glorot_uniform", math.sqrt(6.0 / (2304 + 4608))), ("kaiming_uniform", math.sqrt(6.0 / 2304)),
     ("xavier", math.sqrt(3.0 / 2304))],  # xavier: Caffe's XavierFiller (variance_norm FAN_IN)
)
def test_uniform_initializers(name, bound):
    w = kernel_initializer(name)(jax.random.key(0), (3, 3, 256, 512))  # fan_in 2304, fan_out 4608
    assert float(jnp.abs(w).max()) <= bound
    assert abs(float(w.std()) / (bound / math.sqrt(3)) - 1) < 0.02


def test_lecun_normal_variance():
    w = kernel_initializer("lecun_normal")(jax.random.key(0), (1000, 1000))
    assert abs(float(w.std()) / math.sqrt(1.0 / 1000) - 1) < 0.02


def test_initializer_names_match_config():
    assert sorted(KERNEL_INITIALIZERS) == sorted(INITS)
    for name in BN_SCALE_INITS:
        build_model(ModelConfig(name="resnet20", bn_scale_init=name), 10)


@pytest.mark.parametrize("name, channel_paths", [
    ("resnet20", ["conv1/kernel", "stage2/block0/conv1/kernel", "stage3/block2/conv2/kernel", "stage3/block0/shortcut_conv/kernel"]),
    ("vgg11", ["conv1/kernel", "conv8/kernel"]),
    ("resnet18", ["conv1/kernel", "stage4/block1/conv2/kernel", "stage2/block0/shortcut_conv/kernel"]),
])
def test_width_multiplier_doubles_filters(name, channel_paths):
    _, base = abstract_variables(name)
    _, wide = abstract_variables(name, width_multiplier=2)
    base, wide = flat(base["params"]), flat(wide["params"])
    for path in channel_paths:
        assert wide[path].shape[-1] == 2 * base[path].shape[-1], path
    assert wide["head/kernel"].shape[0] == 2 * base["head/kernel"].shape[0]


def test_unknown_model_name():
    with pytest.raises(ConfigError) as e:
        build_model(ModelConfig(name="resnet21"), 10)
    msg = str(e.value)
    assert "model.name" in msg and "'resnet21'" in msg and ", ".join(sorted(MODELS)) in msg


def test_unknown_init_name():
    with pytest.raises(ConfigError) as e:
        build_model(ModelConfig(name="mlp", init="orthogonal"), 10)
    msg = str(e.value)
    assert "model.init" in msg and "'orthogonal'" in msg and ", ".join(sorted(INITS)) in msg
    with pytest.raises(ConfigError, match="model.bn_scale_init"):
        build_model(ModelConfig(name="vgg16", bn_scale_init="zeros"), 10)


def test_cifar_resnet_rejects_bad_depth():
    with pytest.raises(ConfigError, match="6n \\+ 2"):
        jax.eval_shape(CifarResNet(depth=21, num_classes=10).init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
