"""The masked, vmapped trainer: zeros stay zero, rewinding, schedules driven by the state's step,
data order as a function of the step, replicate independence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth.sparsity import masks as M
from lth.config.schema import ModelConfig, OptimizerConfig, PruningConfig, ScheduleConfig
from lth.models import build_model
from lth.train.optim import make_optimizer, make_schedule
from lth.sparsity.pruning import prune
from lth.lottery.rewind import rewind_weights, snapshot
from lth.train.trainer import Trainer, chunk_boundaries, replicate_keys, train_level
from lth.train.train_state import learning_rate


def make_trainer(ds, opt=OptimizerConfig(name="sgd", lr=0.1), total=100, batch_size=50):
    model = build_model(ModelConfig(name="mlp", widths=[32, 16]), ds.num_classes)
    spe = ds.num_train // batch_size
    return Trainer(model, ds, make_optimizer(opt), make_schedule(opt, total_steps=total, steps_per_epoch=spe),
                   batch_size=batch_size, eval_batch_size=64)


def dense_states(tr, seed=0, replicates=2):
    keys = replicate_keys(seed, replicates)
    v = tr.init_variables(keys["init"])
    return tr.create_states(v, jax.vmap(M.ones_like)(v["params"])), keys


def host(x):
    return jax.device_get(x)


def tree_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(host(a)), jax.tree.leaves(host(b))))


PATHS = ["fc1/kernel", "fc2/kernel", "head/kernel"]


def pruned_masks(states, fraction=0.5, replicates=2):
    cfg = PruningConfig(fraction=fraction, scope="global")
    return M.stack([prune(p, m, cfg, PATHS) for p, m in zip(M.unstack(states.params, replicates), M.unstack(states.mask, replicates))])


OPTIMIZERS = [
    OptimizerConfig(name="sgd", lr=0.1),
    OptimizerConfig(name="momentum", lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True),
    OptimizerConfig(name="adam", lr=1e-2, weight_decay=1e-4),
    OptimizerConfig(name="adamw", lr=1e-2, weight_decay=0.1),
]


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: o.name)
def test_pruned_weights_stay_exactly_zero(tiny_dataset, opt):
    tr = make_trainer(tiny_dataset, opt)
    states, keys = dense_states(tr)
    states, _ = tr.run(states, keys, 0, 20)  # momentum / Adam moments are non-zero now
    saved = host(snapshot(states))
    masks = pruned_masks(states)
    # Rewound optimizer state: stale momentum on pruned weights must not move them.
    states = rewind_weights(states, saved, masks, optimizer_state="rewound")
    before = host(states.params)
    states, _ = tr.run(states, keys, 20, 30)
    after, m = M.flatten(host(states.params)), M.flatten(host(masks))
    for q in PATHS:
        w, keep = np.asarray(after[q]), np.asarray(m[q])
        assert (w[~keep] == 0).all()
        assert not np.allclose(w[keep], np.asarray(M.flatten(before)[q])[keep])  # survivors did train


def test_rewinding_gives_mask_times_theta_k_and_step_k(tiny_dataset):
    tr = make_trainer(tiny_dataset, OptimizerConfig(name="momentum", lr=0.05, momentum=0.9))
    states, keys = dense_states(tr)
    states, hist, captured = train_level(tr, states, keys, start=0, end=60, eval_every=20, capture_at=7)
    assert int(captured.step[0]) == 7
    saved = host(snapshot(captured))
    masks = pruned_masks(states)
    for mode in ("reset", "rewound"):
        r = rewind_weights(states, saved, masks, optimizer_state=mode)
        assert np.all(np.asarray(r.step) == 7)
        expected = jax.tree.map(lambda p, m: np.where(m, p, 0), saved["params"], host(masks))
        assert tree_equal(r.params, expected)
        trace = jax.tree.leaves(host(r.opt_state))
        if mode == "reset":
            assert all(not np.any(x) for x in trace if x.ndim > 1)
        else:
            assert tree_equal(r.opt_state, saved["opt_state"])


def test_every_rewinding_mode_by_its_equation(tiny_dataset):
    """lth.lottery.rewind.MODES on the trainer, fast (what `make mutate` runs against lth/lottery/rewind.py; the
    level loop's use of them is tests/test_rewind_modes.py): `weights` starts from m ⊙ θk,
    `lr` and `finetune` from m ⊙ (final weights); all at step k; `finetune` at the constant
    schedule(T - 1), the others on the schedule; the optimizer state reset or rewound."""
    from lth.lottery.rewind import MODES, restart, start_weights

    opt = OptimizerConfig(name="momentum", lr=0.05, momentum=0.9, schedule=ScheduleConfig(name="step", milestones=["40it"]))
    tr = make_trainer(tiny_dataset, opt, total=60)
    states, keys = dense_states(tr)
    final, _, captured = train_level(tr, states, keys, start=0, end=60, eval_every=20, capture_at=7)
    saved, fin = host(snapshot(captured)), host({"params": final.params, "batch_stats": final.batch_stats})
    masks = pruned_masks(final)
    assert (MODES["weights"].weights_from, MODES["lr"].weights_from, MODES["finetune"].weights_from) == ("rewind", "final", "final")
    for name, mode in MODES.items():
        lr_fn = mode.lr_fn(tr.lr_fn, 60)
        if name == "finetune":
            assert [float(lr_fn(t)) for t in (0, 7, 39, 40, 59)] == pytest.approx([0.005] * 5)
        else:
            assert lr_fn is tr.lr_fn
        w = start_weights(mode, saved, fin)
        assert tree_equal(w["params"], saved["params"] if name == "weights" else fin["params"])
        for opt_state in ("reset", "rewound"):
            r = restart(states, w["params"], w["batch_stats"], saved, masks, optimizer_state=opt_state, lr_fn=lr_fn)
            assert np.all(np.asarray(r.step) == 7) and r.lr_fn is lr_fn
            assert tree_equal(r.params, jax.tree.map(lambda p, m: np.where(m, p, 0), w["params"], host(masks)))
            assert tree_equal(r.mask, masks)
            if opt_state == "rewound":
                assert tree_equal(r.opt_state, saved["opt_state"])
            else:
                assert all(not np.any(x) for x in jax.tree.leaves(host(r.opt_state.inner_state)) if x.ndim > 1)
    r = restart(states, fin["params"], fin["batch_stats"], saved, masks, optimizer_state="reset")
    assert r.lr_fn is states.lr_fn  # without lr_fn: the template's schedule


def test_schedule_follows_the_state_step_like_pytorch_multistep():
    opt = OptimizerConfig(name="momentum", lr=0.1, momentum=0.9,
                          schedule=ScheduleConfig(name="step", milestones=["10it", "2ep"], gamma=0.1))
    lr = make_schedule(opt, total_steps=100, steps_per_epoch=8)
    got = [float(lr(s)) for s in (0, 9, 10, 15, 16, 99)]
    assert got == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    warm = make_schedule(OptimizerConfig(lr=1.0, schedule=ScheduleConfig(warmup="10it")), total_steps=100, steps_per_epoch=8)
    assert [float(warm(s)) for s in (0, 5, 10, 50)] == pytest.approx([0.0, 0.5, 1.0, 1.0])


def test_training_uses_the_learning_rate_of_the_rewound_step(tiny_dataset):
    opt = OptimizerConfig(name="sgd", lr=0.1, schedule=ScheduleConfig(name="step", milestones=["30it"], gamma=0.1))
    tr = make_trainer(tiny_dataset, opt)
    states, keys = dense_states(tr)
    states = states.replace(step=jnp.full_like(states.step, 28))  # as after rewinding to k = 28
    states, metrics = tr.run(states, keys, 28, 4)
    assert metrics["lr"][:, 0] == pytest.approx([0.1, 0.1, 0.01, 0.01])
    assert float(learning_rate(states.opt_state)[0]) == pytest.approx(0.01)


def test_chunking_does_not_change_training(tiny_dataset):
    """Results do not depend on eval_every: 0..37 in one call equals 0..13, 13..37 (crossing epochs)."""
    tr = make_trainer(tiny_dataset)
    s0, keys = dense_states(tr)
    a, _ = tr.run(s0, keys, 0, 37)
    b, _ = tr.run(s0, keys, 0, 13)
    b, _ = tr.run(b, keys, 13, 24)
    assert tree_equal(a.params, b.params)


@pytest.mark.slow  # ~15 s; test_oracles replays level 0 from k by default
def test_rewinding_to_k_replays_the_dense_run_from_k(tiny_dataset):
    """A dense network rewound to step k with its optimizer state sees the same batches and
    learning rates, so it reproduces the uninterrupted run exactly."""
    tr = make_trainer(tiny_dataset, OptimizerConfig(name="momentum", lr=0.05, momentum=0.9))
    s0, keys = dense_states(tr)
    final, _, captured = train_level(tr, s0, keys, start=0, end=50, eval_every=25, capture_at=17)
    again = rewind_weights(s0, snapshot(captured), host(s0.mask), optimizer_state="rewound")
    again, _ = tr.run(again, keys, 17, 33)
    assert tree_equal(final.params, again.params)


def test_replicates_are_independent_and_differ(tiny_dataset):
    tr = make_trainer(tiny_dataset)
    s2, k2 = dense_states(tr, replicates=2)
    s1, k1 = dense_states(tr, replicates=1)
    s2, _ = tr.run(s2, k2, 0, 25)
    s1, _ = tr.run(s1, k1, 0, 25)
    for x1, x2 in zip(jax.tree.leaves(host(s1.params)), jax.tree.leaves(host(s2.params))):
        np.testing.assert_allclose(x1[0], x2[0], rtol=1e-5, atol=1e-6)  # replicate 0 is the same run
        assert not np.allclose(x2[0], x2[1])  # replicate 1 has its own init and data order


def test_evaluation_matches_a_direct_computation(tiny_dataset):
    tr = make_trainer(tiny_dataset)
    states, keys = dense_states(tr)
    states, _ = tr.run(states, keys, 0, 30)
    ev = tr.evaluate(states, "test")
    p = jax.tree.map(lambda x: x[1], states.params)
    logits = tr.model.apply({"params": p}, tiny_dataset.normalize(tiny_dataset.x_test))
    acc = float(np.mean(np.argmax(np.asarray(logits), -1) == tiny_dataset.y_test))
    assert float(ev["accuracy"][1]) == pytest.approx(acc, abs=1e-6)  # 200 test examples, batch 64: padding ignored


def test_level_history_and_early_stop(tiny_dataset):
    tr = make_trainer(tiny_dataset)
    states, keys = dense_states(tr)
    _, hist, _ = train_level(tr, states, keys, start=10, end=55, eval_every=20)
    assert hist.eval_steps == [20, 40, 55]
    assert hist.train["loss"].shape == (45, 2)
    es = hist.early_stop()
    val = np.stack([e["val/loss"] for e in hist.evals])
    for r in range(2):
        b = int(np.argmin(val[:, r]))
        assert es["early_stop_step"][r] == hist.eval_steps[b]
        assert es["early_stop_test_accuracy"][r] == hist.evals[b]["test/accuracy"][r]


def test_chunk_boundaries():
    assert chunk_boundaries(0, 50, 20) == [20, 40, 50]
    assert chunk_boundaries(7, 50, 20, extra=(30,)) == [20, 30, 40, 50]
    assert chunk_boundaries(0, 40, 20, extra=(0, 40)) == [20, 40]


def test_scan_and_python_loop_paths_agree(tiny_dataset):
    """Accelerators run a call's steps in one lax.scan, CPUs in a Python loop of compiled steps:
    the same step function, so the same training up to float reassociation."""
    runs, trainers, final = {}, {}, {}
    for scan in (True, False):
        opt = OptimizerConfig(name="momentum", lr=0.05, momentum=0.9)
        model = build_model(ModelConfig(name="mlp", widths=[32, 16]), tiny_dataset.num_classes)
        tr = Trainer(model, tiny_dataset, make_optimizer(opt), make_schedule(opt, total_steps=40, steps_per_epoch=12),
                     batch_size=50, eval_batch_size=64, scan=scan)
        states, keys = dense_states(tr)
        states, metrics = tr.run(states, keys, 5, 30)  # crosses two epoch boundaries
        runs[scan] = (host(states.params), metrics, tr.evaluate(states, "test"), tr.evaluate(states, "val"))
        trainers[scan], final[scan] = tr, states
    for a, b in zip(jax.tree.leaves(runs[True][0]), jax.tree.leaves(runs[False][0])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(runs[True][1]["loss"], runs[False][1]["loss"], rtol=1e-4, atol=1e-5)
    for split in (2, 3):
        np.testing.assert_allclose(runs[True][split]["accuracy"], runs[False][split]["accuracy"], atol=1e-6)
        np.testing.assert_allclose(runs[True][split]["loss"], runs[False][split]["loss"], rtol=1e-5)
    # The two evaluation paths on the very same states (test split: 200 examples in 4 batches of 64, the last padded).
    a, b = trainers[True].evaluate(final[False], "test"), trainers[False].evaluate(final[False], "test")
    np.testing.assert_array_equal(a["accuracy"], b["accuracy"])
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)
    assert a["accuracy"].shape == b["accuracy"].shape == (final[False].step.shape[0],)


@pytest.mark.parametrize("start,n", [(0, 12), pytest.param(11, 1, marks=pytest.mark.slow), pytest.param(5, 30, marks=pytest.mark.slow),
                                     pytest.param(3, 40, marks=pytest.mark.slow)])  # the slow ones: over 15 s each here
def test_precomputed_permutations_and_unrolling_change_nothing(tiny_dataset, start, n):
    """The scanned call's variants (permutations before the loop or at epoch boundaries inside it,
    1 or several steps per loop iteration) train on the very same batches: identical results,
    also for calls that start mid-epoch, end on a boundary, or span several epochs."""
    opt = OptimizerConfig(name="momentum", lr=0.05, momentum=0.9)
    model = build_model(ModelConfig(name="mlp", widths=[32, 16]), tiny_dataset.num_classes)
    runs = {}
    for perms, unroll in [("in_loop", 1), ("precomputed", 1), ("precomputed", 4), ("in_loop", 3)]:
        tr = Trainer(model, tiny_dataset, make_optimizer(opt), make_schedule(opt, total_steps=60, steps_per_epoch=12),
                     batch_size=50, eval_batch_size=64, scan=True, perms=perms, unroll=unroll)
        assert tr.steps_per_epoch == 12
        states, keys = dense_states(tr)
        states, metrics = tr.run(states, keys, start, n)
        runs[perms, unroll] = (host(states.params), metrics["loss"])
    ref = runs["in_loop", 1]
    for key, (params, loss) in runs.items():
        for a, b in zip(jax.tree.leaves(ref[0]), jax.tree.leaves(params)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=str(key))
        np.testing.assert_allclose(ref[1], loss, rtol=1e-6, err_msg=str(key))


def test_trainer_refuses_unknown_loop_variants(tiny_dataset):
    model = build_model(ModelConfig(name="mlp", widths=[8]), tiny_dataset.num_classes)
    opt = OptimizerConfig(name="sgd", lr=0.1)
    with pytest.raises(ValueError, match="perms='sometimes'"):
        Trainer(model, tiny_dataset, make_optimizer(opt), make_schedule(opt, total_steps=1, steps_per_epoch=1),
                batch_size=50, perms="sometimes")
    with pytest.raises(ValueError, match="unroll=0"):
        Trainer(model, tiny_dataset, make_optimizer(opt), make_schedule(opt, total_steps=1, steps_per_epoch=1),
                batch_size=50, unroll=0)


def _image_dataset(n_train=32, n_test=12, size=8):
    from lth.data import Dataset

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(n_train + n_test, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, 10, size=n_train + n_test).astype(np.int32)
    mean, std = np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32)
    return Dataset("images", x[:n_train], y[:n_train], x[:0], y[:0], x[n_train:], y[n_train:], 10, mean, std, 255.0)


@pytest.mark.parametrize("kind,steps", [("mlp", 5), pytest.param("resnet20", 1, marks=pytest.mark.slow)])  # resnet20: 50 s here
def test_replicates_vmapped_or_looped_train_alike(tiny_dataset, kind, steps):
    """`replicates_as="loop"` (lax.map over replicates, the GPU default for conv models) and
    `"vmap"` compute the same training and evaluation, BatchNorm statistics and augmentation
    included. (ResNet-20 on tiny images and batches of 8 turns a rounding difference of 1e-7 into
    1e-5 in some steps and compounds it, as any two convolution algorithms would: one step.)"""
    from lth.data.augment import random_crop_flip

    opt = OptimizerConfig(name="momentum", lr=0.05, momentum=0.9, weight_decay=1e-4)
    if kind == "mlp":
        ds, model, aug, bs = tiny_dataset, build_model(ModelConfig(name="mlp", widths=[32, 16]), 4), None, 50
    else:
        ds, aug, bs = _image_dataset(size=16), random_crop_flip, 8
        model = build_model(ModelConfig(name=kind, bn_scale_init="uniform"), 10)
    runs = {}
    for mode in ("vmap", "loop"):
        tr = Trainer(model, ds, make_optimizer(opt), make_schedule(opt, total_steps=10, steps_per_epoch=4),
                     batch_size=bs, eval_batch_size=5, augment=aug, scan=True, replicates_as=mode)
        assert tr.replicates_as == mode
        states, keys = dense_states(tr)
        states, metrics = tr.run(states, keys, 3, steps)  # crosses an epoch boundary at step 4
        runs[mode] = (host(states.params), host(states.batch_stats), metrics["loss"], tr.evaluate(states, "test"))
    (pa, ba, la, ea), (pb, bb, lb, eb) = runs["vmap"], runs["loop"]
    # Norm-wise per tensor. A bias's gradient is a sum over the batch and the pixels that nearly
    # cancels, so after one step from 0 it carries float32 rounding of the order of 1e-3 of itself
    # (seen on XLA:CPU with LLVM optimisations off); a wrong batch, key or replicate differs by O(1).
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path((pa, ba))[0], jax.tree.leaves((pb, bb))):
        tol = 1e-2 if "bias" in jax.tree_util.keystr(path) else 2e-4
        assert np.linalg.norm(a - b) <= tol * np.linalg.norm(a) + 1e-7, jax.tree_util.keystr(path)
    np.testing.assert_allclose(la, lb, rtol=1e-5)
    np.testing.assert_allclose(ea["loss"], eb["loss"], rtol=1e-4)
    np.testing.assert_array_equal(ea["accuracy"], eb["accuracy"])
    assert la.shape == (steps, 2) and not np.allclose(la[:, 0], la[:, 1])  # two different replicates


def test_replicates_default_by_model_and_backend(tiny_dataset):
    opt = OptimizerConfig(name="sgd", lr=0.1)
    tr = Trainer(build_model(ModelConfig(name="mlp", widths=[8]), 4), tiny_dataset, make_optimizer(opt),
                 make_schedule(opt, total_steps=1, steps_per_epoch=1), batch_size=50)
    assert tr.replicates_as == "vmap"  # dense models: one batched program everywhere
    ds = _image_dataset()
    tr = Trainer(build_model(ModelConfig(name="conv2"), 10), ds, make_optimizer(opt),
                 make_schedule(opt, total_steps=1, steps_per_epoch=1), batch_size=8)
    assert tr.replicates_as == ("vmap" if jax.default_backend() == "cpu" else "loop")
    with pytest.raises(ValueError, match="replicates_as='grouped'"):
        Trainer(build_model(ModelConfig(name="mlp", widths=[8]), 4), tiny_dataset, make_optimizer(opt),
                make_schedule(opt, total_steps=1, steps_per_epoch=1), batch_size=50, replicates_as="grouped")


def test_the_training_set_first_asked_for_inside_a_compiled_function_stays_usable(tiny_dataset):
    """`Trainer.x_train` / `y_train` go on the device on first use; a first use inside a trace (as
    Deep Compression's centroid fine-tuning does) must cache a concrete array, not a tracer that
    leaks into the next call."""
    tr = make_trainer(tiny_dataset)
    idx = jnp.arange(5)
    first = jax.jit(lambda i: tr.x_train[i].sum() + tr.y_train[i].sum())(idx)
    again = jax.jit(lambda i: tr.x_train[i].sum() + tr.y_train[i].sum())(idx + 0)
    assert float(first) == float(again)
    assert isinstance(tr.y_train, jax.Array) and not isinstance(tr.y_train, jax.core.Tracer)
    np.testing.assert_array_equal(np.asarray(tr.x_train), tiny_dataset.x_train)
