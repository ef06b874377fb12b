"""Tests of `lth.sparsity.flops`: dense MACs against hand arithmetic, unstructured MACs against the mask,
and the effective MACs of structured pruning (cascades through the next layer, BatchNorm biases
and residual connections that keep a channel alive), including an independent numpy reference
for fully connected networks."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from lth.config.schema import ModelConfig
from lth.sparsity.flops import FlopReport, count_flops
from lth.sparsity.masks import flatten, unflatten
from lth.models import build_model

CIFAR = (32, 32, 3)


@functools.lru_cache(maxsize=None)
def _setup(name: str, input_shape: tuple, widths: tuple = (500, 500)):
    """One model object per configuration: `count_flops` compiles its probe once per model object
    (and tree shapes), so the tests share them. Callers must not mutate `variables`."""
    model = build_model(ModelConfig(name=name, widths=list(widths)), num_classes=10)
    variables = model.init(jax.random.key(0), jnp.zeros((1, *input_shape)))
    return model, variables


def _ones_mask(variables) -> dict[str, np.ndarray]:
    """The dense mask, flat (`path -> writable numpy bool array`)."""
    return {k: np.ones(np.shape(v), bool) for k, v in flatten(variables["params"]).items()}


def _count(model, variables, flat_mask, input_shape, **kw) -> FlopReport:
    return count_flops(model, variables, unflatten(flat_mask), input_shape, **kw)


# ---------------------------------------------------------------------------------------------
# Dense MACs: hand arithmetic (one MAC = one FLOP, kernels only, per example)


def test_lenet_300_100_dense_macs():
    model, variables = _setup("lenet_300_100", (28, 28, 1))
    report = count_flops(model, variables, None, (28, 28, 1))
    assert report.dense == 784 * 300 + 300 * 100 + 100 * 10 == 266_200
    assert [(r.path, r.kind, r.positions, r.dense) for r in report.layers] == [
        ("fc1", "dense", 1, 784 * 300),
        ("fc2", "dense", 1, 300 * 100),
        ("head", "dense", 1, 100 * 10),
    ]
    assert report.unstructured == report.effective == report.dense  # nothing pruned
    d = report.as_dict()
    assert d["dense"] == 266_200 and d["unit"] == "MAC" and len(d["layers"]) == 3 and d["layers"][0]["path"] == "fc1"


def test_conv2_dense_macs():
    model, variables = _setup("conv2", CIFAR)
    report = count_flops(model, variables, None, CIFAR)
    expected = (
        3 * 3 * 3 * 64 * 32 * 32  # conv1, 'same' padding: 32x32 outputs
        + 3 * 3 * 64 * 64 * 32 * 32  # conv2
        + 16 * 16 * 64 * 256  # fc1 on the max-pooled 16x16x64
        + 256 * 256  # fc2
        + 256 * 10  # head
    )
    assert report.dense == expected == 43_780_608
    assert report.layer("conv2").positions == 32 * 32
    assert report.layer("fc1").positions == 1


def test_resnet20_dense_macs():
    model, variables = _setup("resnet20", CIFAR)
    report = count_flops(model, variables, None, CIFAR)
    conv3x3 = lambda cin, cout, hw: 9 * cin * cout * hw * hw  # noqa: E731
    stem = conv3x3(3, 16, 32)
    stage1 = 6 * conv3x3(16, 16, 32)
    stage2 = conv3x3(16, 32, 16) + 5 * conv3x3(32, 32, 16)
    stage3 = conv3x3(32, 64, 8) + 5 * conv3x3(64, 64, 8)
    shortcuts = 16 * 32 * 16 * 16 + 32 * 64 * 8 * 8  # 1x1 stride-2 projections (option B, OpenLTH)
    head = 64 * 10
    assert stem + stage1 + stage2 + stage3 + head == 40_551_040  # the well-known ~40.55M (option A)
    assert report.dense == stem + stage1 + stage2 + stage3 + shortcuts + head == 40_813_184
    assert len(report.layers) == 1 + 18 + 2 + 1
    assert report.layer("stage2/block0/shortcut_conv").positions == 16 * 16
    assert report.layer("stage3/block2/conv2").dense == conv3x3(64, 64, 8)


# ---------------------------------------------------------------------------------------------
# Unstructured MACs


def test_random_mask_unstructured_is_alive_weights_times_positions():
    model, variables = _setup("lenet_300_100", (28, 28, 1))
    rng = np.random.default_rng(0)
    mask = _ones_mask(variables)
    for k in mask:
        if k.endswith("kernel"):
            mask[k] = rng.random(mask[k].shape) < 0.3
    report = _count(model, variables, mask, (28, 28, 1))
    alive = {k.removesuffix("/kernel"): int(v.sum()) for k, v in mask.items() if k.endswith("kernel")}
    assert [r.unstructured for r in report.layers] == [alive["fc1"], alive["fc2"], alive["head"]]
    assert report.unstructured == sum(alive.values()) < 0.31 * 266_200
    assert report.dense == 266_200
    assert report.effective <= report.unstructured

    # Conv layers multiply by their output positions.
    model, variables = _setup("conv2", CIFAR)
    mask = _ones_mask(variables)
    mask["conv2/kernel"] = rng.random(mask["conv2/kernel"].shape) < 0.5
    report = _count(model, variables, mask, CIFAR)
    assert report.layer("conv2").unstructured == int(mask["conv2/kernel"].sum()) * 32 * 32
    assert report.dense - report.unstructured == int((~mask["conv2/kernel"]).sum()) * 32 * 32


def test_zeros_are_pruned_counts_zero_weights_as_dead():
    model, variables = _setup("lenet_300_100", (28, 28, 1))
    params = flatten(variables["params"])
    kernel = np.array(params["fc2/kernel"])
    kernel[:50] = 0.0  # 50 rows of fc2 zeroed, the mask still all True
    params["fc2/kernel"] = kernel
    variables = {"params": unflatten(params)}
    mask = _ones_mask(variables)
    assert _count(model, variables, mask, (28, 28, 1)).unstructured == 266_200
    assert _count(model, variables, mask, (28, 28, 1), zeros_are_pruned=True).unstructured == 266_200 - 50 * 100


# ---------------------------------------------------------------------------------------------
# Effective MACs: structured pruning of fully connected networks


def test_mlp_removed_units_cascade_into_the_next_layer():
    model, variables = _setup("mlp", (40,), widths=(64, 32))
    dense = 40 * 64 + 64 * 32 + 32 * 10
    removed = np.arange(0, 64, 2)  # half the units of fc1
    mask = _ones_mask(variables)
    mask["fc1/kernel"][:, removed] = False  # their incoming weights ...
    mask["fc1/bias"][removed] = False  # ... and biases: the units are exactly 0
    report = _count(model, variables, mask, (40,))
    assert report.dense == dense
    assert report.unstructured == dense - 32 * 40
    assert report.effective == dense - 32 * 40 - 32 * 32  # and fc2's rows that read them
    assert report.layer("fc2").inputs_alive == 32 and report.layer("fc2").effective == 32 * 32
    assert report.layer("fc1").outputs_alive == 32

    # With the biases alive the units are constants relu(b), which fc2 still multiplies: only
    # the incoming weights go (structured pruning must mask the bias too).
    mask["fc1/bias"][:] = True
    report = _count(model, variables, mask, (40,))
    assert report.effective == report.unstructured == dense - 32 * 40


def test_mlp_units_nobody_reads_are_not_computed():
    """Backward cascade: pruning fc2's rows for some fc1 units makes those units' incoming
    weights useless (their outputs reach nothing)."""
    model, variables = _setup("mlp", (40,), widths=(64, 32))
    dense = 40 * 64 + 64 * 32 + 32 * 10
    unread = np.arange(10)
    mask = _ones_mask(variables)
    mask["fc2/kernel"][unread, :] = False
    report = _count(model, variables, mask, (40,))
    assert report.unstructured == dense - 10 * 32
    assert report.effective == dense - 10 * 32 - 10 * 40
    assert report.layer("fc1").outputs_alive == 54


def _mlp_reference(kernels: list[np.ndarray], biases: list[np.ndarray]) -> int:
    """Effective MACs of a ReLU MLP from the masks alone, by hand: a unit is nonzero when an
    alive weight reads a nonzero input or its bias is alive; it is used when an alive weight
    of the next layer carries it to a used unit (the logits are all used)."""
    nonzero_in = [np.ones(kernels[0].shape[0], bool)]
    for w, b in zip(kernels, biases):
        nonzero_in.append((w & nonzero_in[-1][:, None]).any(0) | b)
    used = np.ones(kernels[-1].shape[1], bool)
    total = 0
    for layer in reversed(range(len(kernels))):
        w, live_in = kernels[layer], nonzero_in[layer]
        total += int((w & live_in[:, None] & used[None, :]).sum())
        used = live_in & (w & used[None, :]).any(1)  # ReLU passes nothing where the unit is 0
    return total


@pytest.mark.parametrize("widths,density", [([64, 48, 32], 0.15), ([64] * 40, 0.25)])
def test_mlp_effective_matches_a_numpy_reference(widths, density):
    """Random sparse kernels and biases. The 40-layer net would overflow float32 (path counts
    grow like 16^40 > 3e38, and inf * 0 = nan) without the probe's per-layer binarisation."""
    model, variables = _setup("mlp", (40,), widths=tuple(widths))
    rng = np.random.default_rng(1)
    mask = _ones_mask(variables)
    names = [f"fc{i}" for i in range(1, len(widths) + 1)] + ["head"]
    for name in names:
        mask[f"{name}/kernel"] = rng.random(mask[f"{name}/kernel"].shape) < density
        mask[f"{name}/bias"] = rng.random(mask[f"{name}/bias"].shape) < 0.1
    report = _count(model, variables, mask, (40,))
    expected = _mlp_reference([mask[f"{n}/kernel"] for n in names], [mask[f"{n}/bias"] for n in names])
    assert report.unstructured == sum(int(mask[f"{n}/kernel"].sum()) for n in names)
    assert report.effective == expected
    assert report.effective < report.unstructured  # the random masks do disconnect units


# ---------------------------------------------------------------------------------------------
# Effective MACs: structured pruning of convolutional networks


def test_conv2_removed_filter_kills_the_next_input_channel():
    model, variables = _setup("conv2", CIFAR)
    dense = count_flops(model, variables, None, CIFAR).dense
    c = 5
    mask = _ones_mask(variables)
    mask["conv1/kernel"][..., c] = False
    mask["conv1/bias"][c] = False
    report = _count(model, variables, mask, CIFAR)
    filter_macs = 3 * 3 * 3 * 1024
    assert report.unstructured == dense - filter_macs
    assert report.effective == dense - filter_macs - 3 * 3 * 64 * 1024  # conv2's input channel c
    assert report.layer("conv2").inputs_alive == 63


@pytest.mark.slow  # ~15 s; the cascade is tested on the small nets
def test_vgg11_removed_filter_and_batchnorm_kill_the_next_input_channel():
    model, variables = _setup("vgg11", CIFAR)
    dense = count_flops(model, variables, None, CIFAR).dense
    c = 7
    filter_macs = 3 * 3 * 3 * 32 * 32  # conv1's filter c (32x32 outputs)
    next_input_macs = 3 * 3 * 128 * 16 * 16  # conv2's input channel c (after the max-pool)

    mask = _ones_mask(variables)
    mask["conv1/kernel"][..., c] = False
    mask["bn1/scale"][c] = False
    mask["bn1/bias"][c] = False
    report = _count(model, variables, mask, CIFAR)
    assert report.unstructured == dense - filter_macs
    assert report.effective == dense - filter_macs - next_input_macs
    assert report.layer("conv2").inputs_alive == 63

    # The filter removed but bn1's bias alive: the channel is relu(bias), a constant that can be
    # nonzero (the bias is trained), so conv2 still reads it. (Its value at init, 0, is irrelevant:
    # liveness is structural.)
    mask["bn1/bias"][c] = True
    report = _count(model, variables, mask, CIFAR)
    assert report.effective == report.unstructured == dense - filter_macs
    assert report.layer("conv2").inputs_alive == 64

    # bn1's scale removed but the filter kept: the filter's output is multiplied by 0, so its
    # weights are wasted, while the channel (the bias) still feeds conv2.
    mask = _ones_mask(variables)
    mask["bn1/scale"][c] = False
    report = _count(model, variables, mask, CIFAR)
    assert report.unstructured == dense
    assert report.effective == dense - filter_macs


def test_resnet20_block_filter_removal():
    model, variables = _setup("resnet20", CIFAR)
    dense = count_flops(model, variables, None, CIFAR).dense
    c = 3
    filter_macs = 3 * 3 * 16 * 32 * 32  # stage1 3x3 16 -> 16 convs, 32x32 outputs

    # Inside a block: conv1's filter c and bn1's scale/bias -> conv2's input channel c is dead.
    mask = _ones_mask(variables)
    mask["stage1/block0/conv1/kernel"][..., c] = False
    mask["stage1/block0/bn1/scale"][c] = False
    mask["stage1/block0/bn1/bias"][c] = False
    report = _count(model, variables, mask, CIFAR)
    assert report.unstructured == dense - filter_macs
    assert report.effective == dense - 2 * filter_macs  # conv2's input c: 3*3*1*16 weights x 32x32
    assert report.layer("stage1/block0/conv2").inputs_alive == 15
    assert report.layer("stage1/block1/conv1").inputs_alive == 16

    # At a block's output the residual connection carries the block's input: removing conv2's
    # filter c and bn2's scale/bias leaves channel c of the block's output alive.
    mask = _ones_mask(variables)
    mask["stage1/block0/conv2/kernel"][..., c] = False
    mask["stage1/block0/bn2/scale"][c] = False
    mask["stage1/block0/bn2/bias"][c] = False
    report = _count(model, variables, mask, CIFAR)
    assert report.effective == report.unstructured == dense - filter_macs
    assert report.layer("stage1/block1/conv1").inputs_alive == 16


# ---------------------------------------------------------------------------------------------
# Guard


class _Subtracting(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Dense(8, name="fc1")(x)) - 2.0
        return nn.Dense(2, name="head")(x)


def test_models_that_break_non_negativity_are_refused():
    model = _Subtracting()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 4)))
    with pytest.raises(ValueError, match="non-negativity"):
        count_flops(model, variables, None, (4,))
