"""End to end: IMP levels on real MNIST-1D, run directories, skipping, extending, determinism,
W&B offline files, summary.json."""

import dataclasses
import glob
import json
import os

import numpy as np
import pandas as pd
import pytest

from lth.runs import checkpoints
from lth.lottery import levels as lottery
from lth.sparsity import masks as M
from lth.config.schema import (
    Config,
    ConfigError,
    DatasetConfig,
    ModelConfig,
    OptimizerConfig,
    PathsConfig,
    PruningConfig,
    RewindConfig,
    TrainConfig,
)
from lth.runs.run_dir import RunDir, content_hash

from conftest import small_config


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lottery")
    cfg = small_config(tmp)
    cfg.logger.wandb.mode = "offline"
    lines = []
    from lth.analysis import reports

    out = lottery.run(cfg, echo=lines.append, reports=reports.lottery)  # as lth.run and experiments/lottery.py ask
    return cfg, out, lines


def test_results_have_the_contract_columns_and_the_density_ladder(first_run):
    cfg, out, _ = first_run
    df = pd.read_csv(os.path.join(out.run_dir, "results.csv"))
    for col in ["level", "replicate", "kind", "density", "test_accuracy", "early_stop_step", "early_stop_test_accuracy",
                "min_val_loss", "steps", "seconds"]:
        assert col in df.columns
    assert len(df) == 3 * 2 and set(df.kind) == {"ticket"}
    prunable = 40 * 64 + 64 * 64 + 64 * 10
    for level in range(3):
        alive = prunable
        for _ in range(level):
            alive -= int(np.floor(0.2 * alive + 0.5))
        assert np.allclose(df[df.level == level].density, alive / prunable)
    assert (df[df.level == 0].steps == 100).all() and (df[df.level > 0].steps == 80).all()  # rewound to step 20
    assert (df.test_accuracy > 0.3).all()  # MNIST-1D is 10-way: far above chance after 100 steps


def test_masks_nest_and_pruned_weights_are_zero_on_disk(first_run):
    cfg, out, _ = first_run
    rd = out.run_dir
    template = {"params": {"fc1": {"kernel": np.zeros((2, 40, 64)), "bias": np.zeros((2, 64))},
                           "fc2": {"kernel": np.zeros((2, 64, 64)), "bias": np.zeros((2, 64))},
                           "head": {"kernel": np.zeros((2, 64, 10)), "bias": np.zeros((2, 10))}}}
    masks = [checkpoints.restore(os.path.join(rd, f"level_0{L}", "mask"), jax_bool(template["params"])) for L in range(3)]
    for a, b in zip(masks, masks[1:]):
        assert M.is_subset(b, a) and not M.is_subset(a, b)
    final = checkpoints.restore(os.path.join(rd, "level_02", "final"), {**template, "batch_stats": {}})
    for path, w in M.flatten(final["params"]).items():
        m = M.flatten(masks[2])[path]
        assert (np.asarray(w)[~np.asarray(m)] == 0).all()


def jax_bool(tree):
    import jax

    return jax.tree.map(lambda x: np.zeros(x.shape, bool), tree)


def test_summary_json_has_counts_and_per_tensor_densities(first_run):
    cfg, out, _ = first_run
    s = json.load(open(os.path.join(out.run_dir, "summary.json")))
    assert s["parameters"]["prunable_weights"] == 40 * 64 + 64 * 64 + 64 * 10
    assert s["parameters"]["total_parameters"] == 40 * 64 + 64 * 64 + 64 * 10 + 64 + 64 + 10
    assert s["config"]["pruning"]["scope"] == "global"
    assert set(s["levels"]) == {"0", "1", "2"}
    td = s["levels"]["1"]["tensor_densities"]
    assert set(td) == {"fc1/kernel", "fc2/kernel", "head/kernel"} and len(td["fc1/kernel"]) == 2


def wandb_records(path: str) -> list[dict]:
    """The records of an offline run's .wandb log, through W&B's own reader (`wandb leet inspect`)."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", path], capture_output=True, text=True,
                       timeout=120, check=True)
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


def test_wandb_offline_runs_record_the_results(first_run):
    """What W&B recorded offline, read back: one run per level (job type `level`) and one summary
    run, all in the experiment's group; each level's last evaluation logged per replicate and as
    their mean, equal to results.csv; the summary run's table holds every results row."""
    _, out, _ = first_run
    df = out.results
    files = sorted(glob.glob(os.path.join(out.run_dir, "wandb", "offline-run-*", "*.wandb")))
    assert len(files) == 3 + 1  # one W&B run per level plus the summary run
    runs = {}
    for f in files:
        recs = wandb_records(f)
        run = next(r["run"] for r in recs if r["type"] == "run")
        history = [r["history"]["item"] for r in recs if r["type"] == "history"]
        runs[run["display_name"]] = (run, history, os.path.dirname(f))
    label = os.path.basename(out.run_dir)
    assert sorted(runs) == [f"{label}-L00", f"{label}-L01", f"{label}-L02", f"{label}-summary"]
    assert {r[0]["run_group"] for r in runs.values()} == {label}
    for level in range(3):
        run, history, _ = runs[f"{label}-L{level:02d}"]
        assert run["job_type"] == "level"
        last = [h for h in history if "test/accuracy" in h][-1]
        assert last["_step"] == 100
        rows = df[df.level == level].sort_values("replicate")
        for r, acc in enumerate(rows.test_accuracy):
            assert last[f"test/accuracy_r{r}"] == pytest.approx(acc, abs=1e-7)
        assert last["test/accuracy"] == pytest.approx(rows.test_accuracy.mean(), abs=1e-6)
        assert any("train/loss" in h for h in history)
    _, history, folder = runs[f"{label}-summary"]
    per_level = {h["level"]: h for h in history if "level" in h}
    assert sorted(per_level) == [0, 1, 2]
    for level, h in per_level.items():
        assert h["density"] == pytest.approx(out.summary.loc[level, "density"])
    tables = glob.glob(os.path.join(folder, "files", "media", "table", "results_*.table.json"))
    assert len(tables) == 1
    with open(tables[0]) as f:
        table = json.load(f)
    assert len(table["data"]) == len(df) and "test_accuracy" in table["columns"]
    # The reports the caller asked for (lth.analysis.reports.lottery): ticket metrics and figures.
    media = os.path.join(folder, "files", "media")
    files = [os.path.relpath(os.path.join(d, f), media) for d, _, fs in os.walk(media) for f in fs]
    for name in ("levels", "tensors", "overlap"):
        assert any(f.startswith(f"table/metrics/{name}_") for f in files), (name, files)
    assert any(f.startswith("images/figures/") and f.endswith(".png") for f in files), files


def test_rerun_skips_finished_levels_and_more_levels_extend(first_run, tmp_path):
    import shutil

    # On a copy of the module's run, so that extending it changes nothing the other tests read.
    cfg0, out0, _ = first_run
    shutil.copytree(os.path.dirname(out0.run_dir), tmp_path / "runs")
    cfg = dataclasses.replace(cfg0, paths=PathsConfig(runs_dir=str(tmp_path / "runs")))
    out = dataclasses.replace(out0, run_dir=os.path.join(tmp_path / "runs", os.path.basename(out0.run_dir)))
    lines = []
    again = lottery.run(dataclasses.replace(cfg, logger=dataclasses.replace(cfg.logger, wandb=dataclasses.replace(cfg.logger.wandb, mode="disabled"))), echo=lines.append)
    assert again.run_dir == out.run_dir
    assert sum("skipped" in l for l in lines) == 3
    pd.testing.assert_frame_equal(again.results, out.results)
    lines = []
    more = lottery.run(dataclasses.replace(cfg, levels=3, logger=dataclasses.replace(cfg.logger, wandb=dataclasses.replace(cfg.logger.wandb, mode="disabled"))), echo=lines.append)
    assert more.run_dir == out.run_dir and sum("skipped" in l for l in lines) == 3
    assert sorted(more.results.level.unique()) == [0, 1, 2, 3]
    pd.testing.assert_frame_equal(more.results[more.results.level < 3].reset_index(drop=True), out.results)
    # A re-run with fewer levels than are finished keeps them all in results.csv and summary.json.
    lines = []
    fewer = lottery.run(dataclasses.replace(cfg, levels=1, logger=dataclasses.replace(cfg.logger, wandb=dataclasses.replace(cfg.logger.wandb, mode="disabled"))), echo=lines.append)
    assert any("levels 2..3: finished in an earlier run, kept" in l for l in lines)
    pd.testing.assert_frame_equal(fewer.results, more.results)
    on_disk = pd.read_csv(os.path.join(out.run_dir, "results.csv"))
    assert sorted(on_disk.level.unique()) == [0, 1, 2, 3]
    with open(os.path.join(out.run_dir, "summary.json")) as f:
        assert sorted(json.load(f)["levels"]) == ["0", "1", "2", "3"]


def test_same_seed_same_results_other_seed_other_dir(first_run, tmp_path):
    cfg, out, _ = first_run
    twin = lottery.run(dataclasses.replace(small_config(tmp_path)), echo=lambda _: None)
    cols = [c for c in out.results.columns if c != "seconds"]
    pd.testing.assert_frame_equal(twin.results[cols], out.results[cols])
    assert os.path.basename(twin.run_dir) == os.path.basename(out.run_dir)
    assert content_hash(dataclasses.replace(cfg, seed=1)) != content_hash(cfg)


def test_hash_ignores_paths_logging_levels_and_stays_stable(tmp_path):
    a = small_config(tmp_path)
    from lth.config.schema import LoggerConfig, WandbConfig

    b = dataclasses.replace(a, levels=9, name="other", paths=PathsConfig(runs_dir="/elsewhere"),
                            logger=LoggerConfig(wandb=WandbConfig(mode="online", project="x"), progress=True),
                            dataset=dataclasses.replace(a.dataset, tfds_data_dir="/somewhere"))
    assert content_hash(a) == content_hash(b)
    # Pinned: a change here silently orphans every existing run directory. Update only on purpose.
    assert content_hash(Config()) == "e6f78db1bb8d"


def test_bad_values_fail_before_anything_is_written(tmp_path):
    bad = [
        dict(levels=-1), dict(replicates=0),
        dict(pruning=PruningConfig(fraction=1.0)), dict(pruning=PruningConfig(fraction=0.0)),
        dict(rewind=RewindConfig(point="100it")),  # == the end of training
        dict(train=TrainConfig(duration="abc")),
        dict(pruning=PruningConfig(prunable=["nothing_matches"])),
        dict(model=ModelConfig(name="nope")),
    ]
    for change in bad:
        with pytest.raises(ConfigError):
            lottery.run(small_config(tmp_path, **change), echo=lambda _: None)
        assert not os.path.exists(tmp_path / "runs"), change


def test_second_process_on_a_live_run_is_refused(tmp_path):
    from lth.runs.run_dir import RunLocked

    cfg = small_config(tmp_path)
    _, plan, _ = lottery.prepare(cfg)
    rd = RunDir.for_config(cfg, plan.as_dict())
    rd.create()
    held = rd.lock()
    try:
        with pytest.raises(RunLocked, match="another process"):
            lottery.run(cfg, echo=lambda _: None)
    finally:
        held.close()


def test_a_tfds_dataset_runs_end_to_end_under_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    cfg = small_config(tmp_path, dataset=DatasetConfig(name="mnist", source="tfds", val_size=20),
                       model=ModelConfig(name="mlp", widths=[16]), levels=1, replicates=1,
                       train=TrainConfig(duration="10it", batch_size=10, eval_every="5it"), rewind=RewindConfig(point="0it"))
    with tfds.testing.mock_data(num_examples=100):
        out = lottery.run(cfg, echo=lambda _: None)
    assert len(out.results) == 2 and out.results.density.tolist() == pytest.approx([1.0, 0.8], abs=1e-3)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    """Colleagues on a shared cluster read a run's tables when the umask lets them (mkstemp alone
    would make every file 0600)."""
    from lth.runs.run_dir import write_atomic, write_json

    old = os.umask(umask)
    try:
        write_atomic(str(tmp_path / "results.csv"), "a,b\n1,2\n")
        write_json(str(tmp_path / "summary.json"), {"x": 1})
    finally:
        os.umask(old)
    for name in ("results.csv", "summary.json"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == mode, name


def test_progress_is_a_bar_on_a_terminal_and_whole_lines_in_a_log_file(tmp_path):
    import io

    from lth.lottery import levels as lottery

    cfg = small_config(tmp_path)
    cfg.logger.progress = True
    log = io.StringIO()  # not a terminal: a SLURM log
    t = [0.0]
    p = lottery._progress(cfg, total=100, desc="level 1 (80.0%)", stream=log)
    assert isinstance(p, lottery.LogProgress)
    p.clock = lambda: t[0]
    p.start = p.last = 0.0
    p.update(10)
    assert log.getvalue() == ""  # not a minute yet
    t[0] = 61.0
    p.set_postfix({"test_accuracy": "0.5000"})
    p.update(40)
    t[0] = 80.0
    p.update(50)
    p.close()
    lines = log.getvalue().splitlines()
    assert lines == ["level 1 (80.0%): 50/100 steps (50%), 0.8 steps/s, test_accuracy=0.5000",
                     "level 1 (80.0%): 100/100 steps (100%), 1.2 steps/s, test_accuracy=0.5000"]

    class Tty(io.StringIO):
        def isatty(self):
            return True

    bar = lottery._progress(cfg, total=10, desc="x", stream=Tty())
    assert type(bar).__name__ == "tqdm" or "tqdm" in type(bar).__module__
    bar.close()
    cfg.logger.progress = False
    assert lottery._progress(cfg, total=10, desc="x", stream=log) is None
