"""Controls (lth.lottery.controls) as functions: exact counts of the random masks, their uniformity, the
masks each control takes from its ticket, and keys that depend on (seed, replicate, kind, level)
only. Fast: these are the tests `make mutate` runs against lth/lottery/controls.py. The controls trained
beside tickets by the level loop are tested in tests/test_members.py."""

from __future__ import annotations

import numpy as np

from lth.lottery import controls as C
from lth.sparsity import masks as M
from lth.train.trainer import replicate_keys

from test_rewind_modes import assert_trees_equal

PATHS = ["a/kernel", "b/kernel"]


def a_mask(seed=0):
    rng = np.random.default_rng(seed)
    return {"a": {"kernel": rng.random((20, 30)) < 0.3, "bias": np.ones(30, bool)},
            "b": {"kernel": rng.random((30, 5)) < 0.7, "bias": np.ones(5, bool)}}


def counts(mask):
    flat = M.flatten(mask)
    return {p: int(np.asarray(flat[p]).sum()) for p in PATHS}


def test_random_prune_keeps_every_tensors_count_and_global_keeps_the_total():
    ticket = a_mask()
    per = C.random_mask(ticket, PATHS, np.random.default_rng(1), per_tensor=True)
    glob = C.random_mask(ticket, PATHS, np.random.default_rng(1), per_tensor=False)
    assert counts(per) == counts(ticket)
    assert sum(counts(glob).values()) == sum(counts(ticket).values())
    assert counts(glob) != counts(ticket)  # the global draw spreads survivors by tensor size
    for m in (per, glob):
        assert M.flatten(m)["a/bias"].all() and M.flatten(m)["b/bias"].all()  # not prunable: untouched
        assert not np.array_equal(M.flatten(m)["a/kernel"], M.flatten(ticket)["a/kernel"])
    again = C.random_mask(ticket, PATHS, np.random.default_rng(1), per_tensor=True)
    assert_trees_equal(per, again)
    shuffled = C.shuffle_layerwise(ticket, PATHS, np.random.default_rng(2))
    assert counts(shuffled) == counts(ticket)


def test_random_masks_are_uniform_over_positions():
    """Every position survives with probability (survivors / size): 4,000 draws of 3 of 10."""
    ticket = {"k": np.array([True] * 3 + [False] * 7)}
    rng = np.random.default_rng(0)
    freq = np.mean([C.random_mask(ticket, ["k"], rng, per_tensor=True)["k"] for _ in range(4000)], axis=0)
    assert np.abs(freq - 0.3).max() < 0.04


def test_control_keys_depend_on_replicate_kind_and_level_only():
    k = C.control_key(0, 1, "reinit", 2)
    assert np.array_equal(k, C.control_key(0, 1, "reinit", 2))
    others = [C.control_key(0, 0, "reinit", 2), C.control_key(0, 1, "reinit", 3), C.control_key(1, 1, "reinit", 2),
              C.control_key(0, 1, "random_prune", 2), replicate_keys(0, 2)["init"][1]]
    assert all(not np.array_equal(k, o) for o in others)


def test_each_control_takes_its_mask_from_the_ticket():
    """reinit keeps the ticket's mask (as booleans); random_prune its per-tensor counts;
    random_prune_global its total; the same generator state gives the same mask."""
    ticket = {"a": {"kernel": a_mask()["a"]["kernel"].astype(np.uint8), "bias": np.ones(30, bool)},
              "b": {"kernel": a_mask()["b"]["kernel"], "bias": np.ones(5, bool)}}
    same = C.CONTROLS["reinit"].mask(ticket, PATHS, np.random.default_rng(0))
    assert M.flatten(same)["a/kernel"].dtype == bool
    assert_trees_equal(same, {"a": {"kernel": ticket["a"]["kernel"].astype(bool), "bias": ticket["a"]["bias"]},
                              "b": ticket["b"]})
    per = C.CONTROLS["random_prune"].mask(ticket, PATHS, np.random.default_rng(3))
    glob = C.CONTROLS["random_prune_global"].mask(ticket, PATHS, np.random.default_rng(3))
    assert counts(per) == counts(ticket) and sum(counts(glob).values()) == sum(counts(ticket).values())
    assert counts(glob) != counts(ticket)
    assert C.CONTROLS["reinit"].fresh_weights and not C.CONTROLS["random_prune"].fresh_weights
    assert not C.CONTROLS["random_prune_global"].fresh_weights
    assert_trees_equal(per, C.CONTROLS["random_prune"].mask(ticket, PATHS, np.random.default_rng(3)))
