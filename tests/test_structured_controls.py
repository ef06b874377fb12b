"""The random-pruning controls under structured pruning (`pruning.granularity=neuron|channel`,
issue 25): they remove uniformly random *whole units*, exactly the ticket's number per pruned
kernel (`random_prune`) or in total (`random_prune_global`), each removed unit taking its own
bias and BatchNorm channel; so a feed-forward control has the ticket's effective FLOPs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth.lottery import controls as C
from lth.sparsity import masks as M, pruning, structured
from lth.config.schema import ModelConfig, PruningConfig
from lth.sparsity.flops import count_flops
from lth.models import build_model
from lth.models.vgg import VGG

CIFAR = (32, 32, 3)


def _model(name):
    if name == "vgg_small":  # VGG's layout (conv + bias + BatchNorm per layer), small enough to be fast
        return VGG(plan=(8, "M", 16, 16, "M", 12), num_classes=10), (16, 16, 3)
    if name == "mlp":
        return build_model(ModelConfig(name="mlp", widths=[40, 30]), num_classes=10), (20,)
    return build_model(ModelConfig(name=name), num_classes=10), CIFAR


def _ticket(name, granularity, scope="layerwise"):
    """(model, variables, input shape, prunable kernels, unit kernels, the ticket's mask): one
    magnitude-pruning step at 50% of the units."""
    model, shape = _model(name)
    variables = model.init(jax.random.key(0), jnp.zeros((1, *shape)))
    params = variables["params"]
    flat = M.flatten(params)
    paths = sorted(p for p in flat if p.endswith("kernel"))
    units = structured.unit_paths(paths, {p: np.shape(flat[p]) for p in paths}, granularity)
    cfg = PruningConfig(granularity=granularity, fraction=0.5, scope=scope)
    ticket = pruning.prune(params, M.ones_like(params), cfg, units)
    return model, variables, shape, paths, units, ticket


def _alive(mask, units):
    flat = M.flatten(mask)
    return {p: structured.unit_alive(flat[p]) for p in units}


CASES = [("conv2", "channel"), ("conv2", "neuron"), ("mlp", "neuron"), ("vgg_small", "channel")]


@pytest.mark.parametrize("name,granularity", CASES)
def test_random_prune_removes_random_whole_units_with_the_tickets_counts_and_flops(name, granularity):
    model, variables, shape, paths, units, ticket = _ticket(name, granularity)
    control = C.CONTROLS["random_prune"].mask(ticket, paths, np.random.default_rng(7), units)
    t_alive, c_alive = _alive(ticket, units), _alive(control, units)
    assert {p: int(a.sum()) for p, a in c_alive.items()} == {p: int(a.sum()) for p, a in t_alive.items()}
    assert all(0 < a.sum() < a.size for a in t_alive.values())
    assert any(not np.array_equal(c_alive[p], t_alive[p]) for p in units)  # other units than the ticket's
    flat_c = M.flatten(control)
    for p in units:
        m = np.asarray(flat_c[p]).reshape(-1, np.shape(flat_c[p])[-1])
        assert np.array_equal(m.all(axis=0), m.any(axis=0))  # whole units, nothing partial
        comps = structured.companions(p, flat_c)
        assert comps and all(np.array_equal(np.asarray(flat_c[c]), c_alive[p]) for c in comps)  # its own units
    for p, v in M.flatten(ticket).items():  # everything outside the pruned units: the ticket's (all alive)
        if p not in units and not any(p in structured.companions(u, flat_c) for u in units):
            assert np.array_equal(np.asarray(flat_c[p]), np.asarray(v))
    t_flops = count_flops(model, variables, ticket, shape)
    c_flops = count_flops(model, variables, control, shape)
    assert c_flops.effective == t_flops.effective < t_flops.dense
    assert c_flops.unstructured == t_flops.unstructured


def test_random_prune_global_keeps_the_total_number_of_units():
    _, _, _, paths, units, ticket = _ticket("vgg_small", "channel", scope="global")
    control = C.CONTROLS["random_prune_global"].mask(ticket, paths, np.random.default_rng(3), units)
    t_alive, c_alive = _alive(ticket, units), _alive(control, units)
    assert sum(int(a.sum()) for a in c_alive.values()) == sum(int(a.sum()) for a in t_alive.values())
    assert {p: int(a.sum()) for p, a in c_alive.items()} != {p: int(a.sum()) for p, a in t_alive.items()}
    flat_c = M.flatten(control)
    for p in units:
        assert np.array_equal(np.asarray(flat_c[structured.companions(p, flat_c)[-1]]), c_alive[p])


def test_random_units_are_uniform_and_reproducible():
    """Each unit survives with probability alive/units (4,000 draws of 3 of 10 units); the same
    generator state gives the same mask; reinit still takes the ticket's mask as it is."""
    ticket = {"fc0": {"kernel": np.broadcast_to(np.arange(10) < 3, (4, 10)).copy(), "bias": np.arange(10) < 3},
              "head": {"kernel": np.ones((10, 2), bool), "bias": np.ones(2, bool)}}
    rng = np.random.default_rng(0)
    draws = [C.random_units(ticket, ["fc0/kernel"], rng, per_tensor=True) for _ in range(4000)]
    freq = np.mean([d["fc0"]["bias"] for d in draws], axis=0)
    assert np.abs(freq - 0.3).max() < 0.04
    assert all(d["fc0"]["kernel"].sum() == 12 and d["head"]["kernel"].all() for d in draws[:50])
    a = C.CONTROLS["random_prune"].mask(ticket, ["fc0/kernel", "head/kernel"], np.random.default_rng(5), ["fc0/kernel"])
    b = C.CONTROLS["random_prune"].mask(ticket, ["fc0/kernel", "head/kernel"], np.random.default_rng(5), ["fc0/kernel"])
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    same = C.CONTROLS["reinit"].mask(ticket, ["fc0/kernel"], np.random.default_rng(5), ["fc0/kernel"])
    assert np.array_equal(same["fc0"]["bias"], ticket["fc0"]["bias"])
