"""Settings that bring methods and presets to their papers' released code (issue 25): the scope
pruning-at-initialisation methods prune in, GraSP's class-balanced data and its gradient over every
kernel, fine-tuning's learning rate, and Chen et al.'s BERT protocol (the pooler pruned, 10% of the
dense count per level, the trained classifier kept while the encoder is rewound)."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from conftest import mnist1d_config, small_config
from lth.sparsity import class_balanced, masks as M, methods
from lth.lottery import levels as lottery
from lth.config import method_settings
from lth.config.schema import (
    ConfigError,
    OptimizerConfig,
    PruningConfig,
    RewindConfig,
    ScheduleConfig,
    validate,
)
from lth.runs.run_dir import content_hash
from test_rewind_modes import on_disk, spy  # noqa: F401 (fixture)


# -- scope of the pruning-at-initialisation methods ---------------------------------------------
def test_pai_methods_prune_globally_unless_a_scope_is_given(compose):
    for method in ("snip", "grasp", "synflow"):
        assert compose(f"pruning.method={method}").pruning.scope == "global"
        assert compose(f"pruning.method={method}", "pruning.scope=layerwise").pruning.scope == "layerwise"
        assert method_settings.scope(PruningConfig(method=method)) == "global"
    for method in ("magnitude", "random", "magnitude_at_init"):
        assert compose(f"pruning.method={method}").pruning.scope == "layerwise"
    # IMP's default is the layer-wise scope it always had, so its runs keep their hash
    assert content_hash(compose(), None, None) == content_hash(compose("pruning.scope=layerwise"), None, None)


def test_an_explicit_layerwise_scope_with_a_pai_method_warns(compose):
    cfg = compose("pruning.method=snip", "pruning.scope=layerwise")
    lines = method_settings.warnings(cfg, lambda t: 0.1, 100)
    assert len(lines) == 1 and "pruning.scope=layerwise with pruning.method=snip" in lines[0]
    assert method_settings.warnings(compose("pruning.method=snip"), lambda t: 0.1, 100) == []


# -- fine-tuning's learning rate ----------------------------------------------------------------
def _linear(cfg, **rewind):
    opt = dataclasses.replace(cfg.optimizer, schedule=ScheduleConfig(name="linear"))
    return dataclasses.replace(cfg, optimizer=opt, rewind=RewindConfig(mode="finetune", point="20it", **rewind))


def test_finetune_under_a_decay_to_zero_warns_and_finetune_lr_replaces_the_rate(tmp_path, spy):
    lines = []
    lottery.run(_linear(mnist1d_config(tmp_path / "a", levels=0)), echo=lines.append)
    warned = [x for x in lines if x.startswith("warning: rewind.mode=finetune")]
    assert len(warned) == 1 and "rewind.finetune_lr" in warned[0] and "optimizer.schedule.name=linear" in warned[0]
    lines = []
    lottery.run(_linear(mnist1d_config(tmp_path / "b"), finetune_lr=0.01), echo=lines.append)
    assert not [x for x in lines if x.startswith("warning:")]
    hist = spy[-1]["hist"]
    assert float(spy[-1]["lr_fn"](0)) == pytest.approx(0.01)
    np.testing.assert_allclose(hist.train["lr"], np.float32(0.01), rtol=1e-7)  # every step of level 1


@pytest.mark.parametrize("rewind, words", [
    (dict(mode="finetune", finetune_lr=0.0), ["rewind.finetune_lr=0.0", "> 0"]),
    (dict(mode="lr", finetune_lr=0.1), ["rewind.finetune_lr=0.1", "rewind.mode=lr"]),
    (dict(mode="lr", keep=["^head/"]), ["rewind.keep", "rewind.mode=weights"]),
    (dict(keep=["(head"]), ["rewind.keep", "regular expression"]),
])
def test_bad_rewind_settings_are_refused(tmp_path, rewind, words):
    cfg = dataclasses.replace(small_config(tmp_path), rewind=RewindConfig(**rewind))
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    for w in words:
        assert w in str(e.value)


# -- GraSP as its release -------------------------------------------------------------------------
def test_class_balanced_indices_are_the_first_of_each_class_in_order():
    labels = np.array([2, 0, 1, 0, 2, 1, 1, 0, 2, 2])
    order = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0])  # labels in this order: 2 2 0 1 1 2 0 1 0 2
    np.testing.assert_array_equal(class_balanced.indices(labels, order, 3, 2), [7, 3, 6, 5, 9, 8])
    with pytest.raises(ValueError, match="class 0 has only 3"):
        class_balanced.indices(labels, order, 3, 4)


def test_grasp_uses_class_balanced_halves_and_every_kernel(tmp_path, monkeypatch):
    """Through `methods.next_masks` with a real trainer: GraSP's batches are, per iteration, the two
    halves of the first 5 examples of each class of the replicate's order of that epoch (class by
    class), and g covers the head's kernel though `pruning.exclude` keeps it unpruned."""
    cfg = small_config(tmp_path, replicates=2, levels=1)
    cfg = dataclasses.replace(cfg, pruning=dataclasses.replace(
        cfg.pruning, method="grasp", exclude=["^head/"], score_batches=2, grasp_samples_per_class=5, grasp_weights="all"))
    validate(cfg)
    dataset, plan, trainer = lottery.prepare(cfg)
    from lth.train.trainer import replicate_keys

    keys = replicate_keys(cfg.seed, cfg.replicates)
    variables = jax.device_get(trainer.init_variables(keys["init"]))
    paths = M.prunable_paths(jax.tree.map(lambda x: x[0], variables["params"]), cfg.pruning.prunable, cfg.pruning.exclude)
    assert "head/kernel" not in paths
    seen = {}
    real = methods._compiled

    def recording(model, kind, temperature, shape, gpaths=()):
        fn = real(model, kind, temperature, shape, gpaths)

        def call(params, bstats, mask, xs, ys):
            seen.update(paths=gpaths, xs=np.asarray(xs), ys=np.asarray(ys))
            return fn(params, bstats, mask, xs, ys)

        return call

    monkeypatch.setattr(methods, "_compiled", recording)
    ctx = methods.Context(cfg, trainer, keys["data"], paths, paths)
    ones = jax.vmap(M.ones_like)(variables["params"])
    saved = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    new = methods.next_masks(methods.METHODS["grasp"], ctx, 1, jax.device_get(ones), None, saved)
    assert set(seen["paths"]) == {"fc1/kernel", "fc2/kernel", "head/kernel"}
    assert seen["ys"].shape == (2, 4, 25) and seen["xs"].shape == (2, 4, 25, 40)
    y, x = np.asarray(trainer.y_train), np.asarray(trainer.x_train)
    for r in range(2):
        for it in range(2):
            order = np.asarray(trainer._epoch_perms(keys["data"], it))[r]
            want = np.concatenate([order[y[order] == c][:5] for c in range(10)])
            got_y = seen["ys"][r, 2 * it:2 * it + 2].reshape(-1)
            np.testing.assert_array_equal(got_y, np.repeat(np.arange(10), 5))
            np.testing.assert_allclose(seen["xs"][r, 2 * it:2 * it + 2].reshape(50, -1),
                                       np.asarray(dataset.normalize(x[want])), rtol=0, atol=1e-6)  # the same examples
    assert np.asarray(M.flatten(new)["head/kernel"]).all()  # excluded from pruning all the same
    # the default is the gradient over the prunable tensors (the results before this option)
    cfg2 = dataclasses.replace(cfg, pruning=dataclasses.replace(cfg.pruning, grasp_weights="prunable"))
    assert methods.grasp_paths(cfg2, variables["params"], paths) == paths


def test_grasp_class_balance_that_cannot_be_drawn_is_refused_before_anything_is_written(tmp_path):
    import os

    cfg = small_config(tmp_path, levels=1)
    cfg = dataclasses.replace(cfg, pruning=dataclasses.replace(cfg.pruning, method="grasp", grasp_samples_per_class=100000))
    with pytest.raises(ConfigError, match="pruning.grasp_samples_per_class=100000"):
        lottery.run(cfg, echo=lambda _: None)
    assert not os.path.exists(tmp_path / "runs")


# -- Chen et al. 2020's BERT tickets, to the release ----------------------------------------------
@pytest.mark.parametrize("preset", ["chen_bert_sentiment", "chen_bert_mlm_transfer"])
def test_chen_presets_follow_the_release(compose, preset):
    """The pooler's matrix is prunable, the schedule removes 10% of the dense count per level to 90%
    sparsity (60% among the levels), and rewinding keeps the heads' trained values."""
    from lth.sparsity import linear_schedule
    from test_bert import init_params, tiny_model

    cfg = compose(f"experiment={preset}")
    pre = M.flatten(init_params(tiny_model(num_classes=2))["params"])
    paths = M.prunable_paths(M.unflatten(pre), cfg.pruning.prunable, cfg.pruning.exclude)
    assert "pooler/kernel" in paths and not any(p.startswith(("head/", "mlm/")) or p.endswith("bias") for p in paths)
    n = sum(np.size(pre[p]) for p in paths)
    ladder = [linear_schedule.keep_counts([n], L, [cfg.pruning.fraction])[0] / n for L in range(cfg.levels + 1)]
    assert (cfg.pruning.schedule, cfg.levels) == ("linear", 9)
    assert ladder == pytest.approx([1 - L / 10 for L in range(10)], abs=1 / n)
    assert cfg.rewind.mode == "weights" and cfg.rewind.keep == ["^head/", "^mlm/"]


@pytest.mark.slow  # ~55 s on a busy CPU: a tiny BERT through three levels
def test_chen_preset_prunes_the_pooler_10pct_of_dense_per_level_and_keeps_the_trained_head(tmp_path, spy, compose,
                                                                                         monkeypatch):
    """`experiment=chen_bert_sentiment` on a tiny BERT loaded from a file: pooler/kernel is prunable,
    the ticket densities are 0.9, 0.8 (10% of the dense count per level: n - floor(0.1 L n)), and
    level 2 starts from the pre-trained encoder and pooler (masked) with level 1's trained head."""
    from test_bert import SPECIAL, TINY, WORDS, init_params, tiny_model
    from lth.data import text

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL + WORDS) + "\n")
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS[:12], 5).tolist()) for _ in range(200)]
    labels = rng.integers(0, 2, 200).astype(np.int32)
    monkeypatch.setattr(text, "_splits", lambda name: (texts[:150], labels[:150], texts[150:], labels[150:], {"test_split": "synthetic"}))
    pre = M.flatten(init_params(tiny_model(num_classes=2), seed=1)["params"])
    np.savez(tmp_path / "pre.npz", **{p: np.asarray(v) for p, v in pre.items()})
    cfg = compose("experiment=chen_bert_sentiment", *[f"model.{k}={v}" for k, v in TINY.items()], "dataset.max_len=12",
                  f"dataset.vocab={vocab}", "dataset.val_size=30", "levels=2", "replicates=1", "controls=[]",
                  "train.duration=6it", "train.batch_size=20", "train.eval_every=6it", "train.eval_batch_size=50",
                  f"init.checkpoint={tmp_path / 'pre.npz'}", f"paths.runs_dir={tmp_path / 'runs'}",
                  f"paths.data_dir={tmp_path / 'data'}", "logger.wandb.mode=disabled", "logger.progress=false")
    paths = M.prunable_paths(M.unflatten(pre), cfg.pruning.prunable, cfg.pruning.exclude)
    assert "pooler/kernel" in paths and not any(p.startswith("head/") for p in paths)
    out = lottery.run(cfg, echo=lambda _: None)
    n = sum(np.size(pre[p]) for p in paths)
    dens = out.results[out.results.kind == "ticket"].sort_values("level").density.tolist()
    assert dens == pytest.approx([1.0] + [(n - int(np.floor(0.1 * L * n))) / n for L in (1, 2)], abs=1e-12)
    assert dens[1:] == pytest.approx([0.9, 0.8], abs=1 / n)
    import os

    mask2 = M.flatten(on_disk(os.path.join(out.run_dir, "level_02"), "mask"))
    assert 0 < np.asarray(mask2["pooler/kernel"]).mean() < 1  # the pooler is pruned
    start = M.flatten(jax.device_get(spy[2]["states"].params))  # level 2's starting weights
    final1 = M.flatten(on_disk(os.path.join(out.run_dir, "level_01"), "final")["params"])
    for p in ("head/kernel", "head/bias"):
        np.testing.assert_array_equal(start[p][0], np.asarray(final1[p])[0])  # the trained head, kept
        assert not np.array_equal(start[p][0], np.asarray(spy[0]["states"].params["head"][p.split("/")[1]])[0])
    for p in paths + ["embeddings/word/embedding", "pooler/bias"]:  # the pre-trained weights, masked
        np.testing.assert_array_equal(start[p][0], np.where(np.asarray(mask2[p])[0], pre[p], 0), err_msg=p)
