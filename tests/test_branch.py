"""Branches after the fact (lth.lottery.branch, experiments/branch.py): a branch that changes nothing
reproduces its source level, the mask and weight options do what they say, a ticket transfers to
another dataset (its head re-initialised when the classes differ), and overrides on the command
line change only what they name."""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
import pytest

from lth.lottery import branch, levels as lottery
from lth.sparsity import masks as M
from lth.config.schema import BranchConfig, ConfigError, DatasetConfig, ModelConfig, RewindConfig, TrainConfig
from lth.runs.run_dir import RunDir

from conftest import mnist1d_config
from test_rewind_modes import assert_trees_equal, masked, on_disk


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished 2-level lottery run (weight rewinding to step 20, fresh optimizer state)."""
    tmp = tmp_path_factory.mktemp("source")
    cfg = mnist1d_config(tmp, levels=2, rewind=RewindConfig(point="20it"))
    return cfg, lottery.run(cfg, echo=lambda _: None)


def branched(cfg, out, tmp_path, **b):
    return dataclasses.replace(cfg, branch=BranchConfig(source=out.run_dir, **b),
                               paths=dataclasses.replace(cfg.paths, runs_dir=str(tmp_path / "branches")))


@pytest.fixture
def spy(monkeypatch):
    calls = []
    real = branch.train_level

    def recorded(trainer, states, keys, **kw):
        calls.append(jax.device_get(states))
        return real(trainer, states, keys, **kw)

    monkeypatch.setattr(branch, "train_level", recorded)
    return calls


def test_a_branch_that_changes_nothing_reproduces_its_source_levels(source, tmp_path):
    cfg, out = source
    res = branch.run(branched(cfg, out, tmp_path, levels=[1, 2]), echo=lambda _: None)
    assert os.path.basename(res.run_dir).startswith("branch-mlp-mnist1d-")
    df = res.results
    assert set(df.kind) == {"branch"} and set(df.source_level) == {1, 2}
    assert set(df.source_run) == {os.path.basename(out.run_dir)}
    src = out.results[out.results.level.isin([1, 2])]
    for col in ("density", "test_accuracy", "test_loss", "val_loss", "start_step", "end_step"):
        np.testing.assert_array_equal(df.sort_values(["level", "replicate"])[col].to_numpy(),
                                      src.sort_values(["level", "replicate"])[col].to_numpy(), err_msg=col)
    # Fewer replicates than the source: the first ones (replicate 0 keeps its keys, so its row, up
    # to the rounding of a vmapped product of another size; replicate 1's loss is 1e-3 away).
    one = branch.run(dataclasses.replace(branched(cfg, out, tmp_path, levels=[2]), replicates=1), echo=lambda _: None)
    s2 = out.results[out.results.level == 2].sort_values("replicate").test_loss.tolist()
    assert len(one.results) == 1 and abs(s2[0] - s2[1]) > 1e-4
    assert one.results.test_loss.iloc[0] == pytest.approx(s2[0], rel=1e-6)
    # Asking again skips; asking for another level extends the same branch directory.
    lines = []
    again = branch.run(branched(cfg, out, tmp_path, levels=[1, 2]), echo=lines.append)
    assert again.run_dir == res.run_dir and sum("done already" in x for x in lines) == 2
    # Its table is the lottery table (percent, ± population std) with the source ticket beside each level:
    # the same numbers here, as nothing changed.
    t = again.summary
    np.testing.assert_allclose(t.source_test_acc, t.test_acc)
    np.testing.assert_allclose(t.source_test_acc_std, t.test_acc_std)
    assert (t.gap_source == 0).all() and (t.es_gap_source == 0).all()
    assert all("source ticket" in x and "gap +0.00" in x for x in lines if "source level" in x)


def test_a_branch_table_is_the_lottery_table_with_its_source_ticket_beside_it():
    """Percent, mean ± population std (ddof=0) over replicates, as the lottery table; the source's
    ticket at the same level and the same replicates, and the branch-minus-source gaps."""
    import pandas as pd

    from lth.runs import results

    rows = lambda kind, level, accs: [{"level": level, "replicate": r, "kind": kind, "density": 0.64,
                                       "test_accuracy": a, "early_stop_test_accuracy": a - 0.01, "early_stop_step": 100}
                                      for r, a in enumerate(accs)]
    branch_df = pd.DataFrame(rows("branch", 2, [0.90, 0.92]))
    source = pd.DataFrame(rows("ticket", 2, [0.93, 0.95, 0.10]) + rows("reinit", 2, [0.5, 0.5]) + rows("ticket", 1, [0.2, 0.2]))
    t = results.beside_source(results.summarize(branch_df, kind="branch"), branch_df, source)
    assert t.loc[2, "test_acc_std"] == pytest.approx(0.01)  # population std of 0.90, 0.92
    assert t.loc[2, "source_test_acc"] == pytest.approx(0.94) and t.loc[2, "source_test_acc_std"] == pytest.approx(0.01)
    assert t.loc[2, "gap_source"] == pytest.approx(-0.03) and t.loc[2, "es_gap_source"] == pytest.approx(-0.03)
    text = results.format_summary(t)
    header = text.splitlines()[0]
    assert "test acc % (final)" in header and "source ticket acc % (final)" in header and "source gap %" in header
    assert "91.00 ± 1.00" in text and "94.00 ± 1.00" in text and "-3.00" in text and "64.0%" in text
    legend = results.verdict_legend(t)
    assert "population std" in legend and "source ticket" in legend and "winning" not in legend


def test_the_branch_command_prints_the_lottery_table(source, tmp_path):
    """experiments/branch.py prints the table `format_summary` gives (percent ± std, the source
    ticket beside each level), not fractions with a sample std."""
    import subprocess
    import sys

    _, out = source
    script = os.path.join(os.path.dirname(__file__), "..", "experiments", "branch.py")
    p = subprocess.run([sys.executable, script, f"branch.source={out.run_dir}", "branch.levels=[1]",
                        f"paths.runs_dir={tmp_path}", "logger.progress=false", "logger.wandb.mode=disabled"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "test acc % (final)" in p.stdout and "source ticket acc % (final)" in p.stdout and "±" in p.stdout
    assert "source level  1:" in p.stdout and "source ticket" in p.stdout.split("source level  1:")[1].splitlines()[0]
    assert "test_accuracy" not in p.stdout  # the old pandas aggregate (fractions, mean and sample std)


@pytest.mark.slow  # ~20 s; branch masks and weights are covered by the faster branch tests
def test_shuffled_masks_keep_each_tensors_density_and_weights_options(source, tmp_path, spy):
    cfg, out = source
    src_mask = on_disk(RunDir(out.run_dir, "").level_dir(2), "mask")
    theta_k = on_disk(out.run_dir, "rewind")["params"]
    final2 = on_disk(RunDir(out.run_dir, "").level_dir(2), "final")["params"]
    res = branch.run(branched(cfg, out, tmp_path, levels=[2], mask="shuffle_layerwise"), echo=lambda _: None)
    start = spy[-1]
    for p, m in M.flatten(start.mask).items():
        s = np.asarray(M.flatten(src_mask)[p], bool)
        assert (np.asarray(m).sum(axis=tuple(range(1, m.ndim))) == s.sum(axis=tuple(range(1, s.ndim)))).all()
        if p.endswith("kernel"):
            assert not np.array_equal(np.asarray(m), s)
    assert_trees_equal(start.params, masked(theta_k, start.mask))
    assert res.results.density.tolist() == pytest.approx(out.results[out.results.level == 2].density.tolist())
    branch.run(branched(cfg, out, tmp_path, levels=[2], weights="final"), echo=lambda _: None)
    assert_trees_equal(spy[-1].params, masked(final2, src_mask))
    branch.run(branched(cfg, out, tmp_path, levels=[2], weights="reinit"), echo=lambda _: None)
    w, w0 = jax.tree.leaves(spy[-1].params), jax.tree.leaves(masked(theta_k, src_mask))
    assert all(not np.array_equal(a, b) for a, b in zip(w, w0) if np.ndim(a) > 2)
    assert_trees_equal(spy[-1].mask, src_mask)
    assert len({os.path.basename(p) for p in os.listdir(tmp_path / "branches")}) == 3  # one directory per option


def test_ticket_transfer_to_a_dataset_with_other_classes_reinitialises_the_head(tmp_path, spy):
    """MNIST → Fashion-MNIST (10 classes: every tensor carries over) and MNIST → EMNIST letters
    (37 classes: the head is drawn fresh, with a random mask of the source head's density), on
    TFDS's mock data."""
    import tensorflow_datasets as tfds

    cfg = mnist1d_config(tmp_path, dataset=DatasetConfig(name="mnist", source="tfds", val_size=20),
                         model=ModelConfig(name="mlp", widths=[16]),
                         train=TrainConfig(duration="10it", batch_size=10, eval_every="5it"), rewind=RewindConfig(point="0it"))
    with tfds.testing.mock_data(num_examples=100):
        out = lottery.run(cfg, echo=lambda _: None)
        src_mask = M.flatten(on_disk(RunDir(out.run_dir, "").level_dir(1), "mask"))
        theta_0 = M.flatten(on_disk(out.run_dir, "rewind")["params"])
        fm = branch.run(dataclasses.replace(branched(cfg, out, tmp_path, levels=[1]),
                                            dataset=dataclasses.replace(cfg.dataset, name="fashion_mnist")), echo=lambda _: None)
        assert_trees_equal(spy[-1].params, masked(M.unflatten(theta_0), M.unflatten(src_mask)))
        letters = branch.run(dataclasses.replace(branched(cfg, out, tmp_path, levels=[1]),
                                                 dataset=dataclasses.replace(cfg.dataset, name="emnist/letters")),
                             echo=lambda _: None)
    assert "fashion_mnist" in fm.run_dir and "emnist_letters" in letters.run_dir
    start = M.flatten(spy[-1].params)
    mask = M.flatten(spy[-1].mask)
    assert start["head/kernel"].shape == (2, 16, 37)
    np.testing.assert_array_equal(start["fc1/kernel"], np.where(src_mask["fc1/kernel"], theta_0["fc1/kernel"], 0))
    head_density = np.asarray(src_mask["head/kernel"]).mean()
    assert np.asarray(mask["head/kernel"][0]).sum() == round(head_density * 16 * 37)
    assert len(letters.results) == 2 and (letters.results.kind == "branch").all()


def test_branches_that_cannot_be_made_are_refused_before_writing(source, tmp_path):
    cfg, out = source
    for b, changes, match in (
        (dict(levels=[5]), {}, r"level\(s\) \[5\] are not finished"),
        (dict(levels=[]), {}, "branch.levels=\\[\\]"),
        (dict(levels=[1], weights="last"), {}, "branch.weights='last' is not one of rewind, reinit, final"),
        (dict(levels=[1], mask="random"), {}, "branch.mask='random'"),
        (dict(levels=[1]), {"replicates": 3}, "replicates=3: the source run has 2"),
        (dict(levels=[1]), {"model": ModelConfig(name="mlp", widths=[8, 32])}, "params/fc1/kernel: source \\(40, 32\\) vs model \\(40, 8\\)"),
    ):
        c = dataclasses.replace(branched(cfg, out, tmp_path, **b), **changes)
        with pytest.raises(ConfigError, match=match):
            branch.run(c, echo=lambda _: None)
    with pytest.raises(ConfigError, match="not a lottery run directory"):
        branch.run(dataclasses.replace(cfg, branch=BranchConfig(source=str(tmp_path), levels=[1])), echo=lambda _: None)
    assert not os.path.exists(tmp_path / "branches")


def test_command_line_overrides_change_only_what_they_name(source, tmp_path):
    """experiments/branch.py starts from the source's config.yaml: a key override changes that key,
    a group override the whole group, everything else stays the source's (here its model widths and
    optimizer, which differ from conf/'s defaults); the branch goes beside the source run."""
    import sys

    from hydra import compose, initialize_config_dir

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments"))
    import branch as cli

    _, out = source
    conf = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "conf"))
    overrides = [f"branch.source={out.run_dir}", "branch.levels=[2]", "train.duration=60it", "optimizer=adam", "seed=3"]
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        composed = compose(config_name="config", overrides=overrides)
    cfg = cli.branch_config(composed, overrides)
    assert cfg.train.duration == "60it" and cfg.train.eval_every == "20it" and cfg.seed == 3
    assert cfg.model.widths == [32, 32] and cfg.optimizer.name == "adam" and cfg.optimizer.lr == 0.001
    assert cfg.optimizer.schedule.name == "constant"  # the adam group wholesale
    assert cfg.rewind.point == "20it" and cfg.branch.levels == [2]
    assert cfg.paths.runs_dir == os.path.dirname(out.run_dir)
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        composed = compose(config_name="config", overrides=[f"branch.source={out.run_dir}", "experiment=mnist1d_mlp"])
    with pytest.raises(ConfigError, match="experiment=mnist1d_mlp: presets do not apply with branch.source"):
        cli.branch_config(composed, [f"branch.source={out.run_dir}", "experiment=mnist1d_mlp"])


def test_a_source_that_does_not_exist_is_named_as_such(tmp_path):
    """experiments/branch.py branch.source=<missing>: one line saying the source does not exist (not
    that it has no config.yaml), exit status 2, nothing written."""
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "..", "experiments", "branch.py")
    nope = tmp_path / "runs" / "nope"
    p = subprocess.run([sys.executable, script, f"branch.source={nope}", "branch.levels=[1]"], capture_output=True,
                       text=True, timeout=300, cwd=tmp_path)
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "Traceback" not in out
    assert f"branch.source='{nope}': does not exist" in out and "config.yaml" not in out
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ConfigError, match="branch.source='.*nope': does not exist"):
        branch.run(dataclasses.replace(mnist1d_config(tmp_path), branch=BranchConfig(source=str(nope), levels=[1])),
                   echo=lambda _: None)
