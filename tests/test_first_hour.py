"""A researcher's first hour: option defaults in one place (Python = command line), model settings
only where a model uses them, replicates that extend a run, a dense level 0 shared across pruning
settings, kill-safe replacement of finished files, one W&B summary run, per-sweep job records."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import small_config
from lth import api
from lth.config import defaults
from lth.lottery import levels as lottery, replicates as REP
from lth.config.schema import (
    Config,
    ConfigError,
    DatasetConfig,
    ModelConfig,
    OptimizerConfig,
    from_dict,
    resolve,
    structured_schema,
    to_dict,
    validate,
)
from lth.runs.run_dir import content_hash

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml") if p.stem != "custom")  # custom: a researcher's own module


@pytest.fixture(scope="module")
def composed():
    """Command-line configs, composed by Hydra once per override list (one Hydra initialisation)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name="lth_schema", node=structured_schema())
    cache = {}
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        def get(*overrides):
            if overrides not in cache:
                cache[overrides] = from_dict(OmegaConf.to_container(compose("config", overrides=list(overrides)), resolve=True))
            return cache[overrides]

        yield get


# -- one place for defaults --------------------------------------------------------------------

def test_python_config_equals_command_line_default(composed):
    assert resolve(Config()) == composed()
    assert Config().levels == 4 and resolve(Config()).dataset.val_size == 500


@pytest.mark.parametrize("overrides, python", [
    (["model=lenet_300_100"], {"model": {"name": "lenet_300_100"}}),
    (["dataset=mnist"], {"dataset": {"name": "mnist"}}),
    (["optimizer=momentum"], {"optimizer": {"name": "momentum"}}),
    (["optimizer=adamw", "model=resnet20", "dataset=cifar10"],
     {"optimizer": {"name": "adamw"}, "model": {"name": "resnet20"}, "dataset": {"name": "cifar10"}}),
])
def test_python_group_defaults_equal_command_line(composed, overrides, python):
    """The issue's cases: MNIST's 5,000 validation examples, LeNet's Glorot normal, the optimizer's
    own rate, reached by naming the option in Python as on the command line."""
    cli = composed(*overrides)
    assert api.config_from_dict(python) == cli
    assert from_dict(python) == cli
    m = python.get("model", {}).get("name")
    if m:
        assert resolve(Config(model=ModelConfig(name=m))).model == cli.model
    d = python.get("dataset", {}).get("name")
    if d:
        assert resolve(Config(dataset=DatasetConfig(name=d))).dataset.val_size == cli.dataset.val_size == 5000
    o = python.get("optimizer", {}).get("name")
    if o:
        assert resolve(Config(optimizer=OptimizerConfig(name=o))).optimizer == cli.optimizer


def _preset_as_python(name: str) -> dict:
    """What a Python user writes for preset `name`: its own values, the model/dataset/optimizer it
    picks by name, and the values of the other groups' options it picks (pruning=global, ...)."""
    text = yaml.safe_load((CONF / "experiment" / f"{name}.yaml").read_text()) or {}
    text.pop("hydra", None)  # a preset's sweep (hydra.sweeper.params) is not a setting
    out: dict = {}
    for entry in text.pop("defaults", []):
        if isinstance(entry, str):  # another preset this one builds on (or _self_)
            if entry != "_self_":
                out = _deep_merge(out, _preset_as_python(entry))
            continue
        for key, option in entry.items():
            group = key.replace("override", "").strip().lstrip("/")
            if group in ("model", "dataset", "optimizer"):
                out.setdefault(group, {})["name"] = option
            else:
                body = yaml.safe_load((CONF / group / f"{option}.yaml").read_text()) or {}
                out.setdefault(group, {}).update(body)
    return _deep_merge(out, text)


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def test_every_preset_python_equals_command_line(composed):
    """For every preset: the settings it writes, built in Python over the schema (no Hydra), give
    exactly the config the command line composes: no default hides in conf/config.yaml or differs
    between the dataclasses and the YAML."""
    from omegaconf import OmegaConf

    assert len(PRESETS) >= 15
    for preset in PRESETS:
        cli = composed(f"experiment={preset}")
        py = from_dict(OmegaConf.to_container(OmegaConf.merge(structured_schema(), _preset_as_python(preset)), resolve=True))
        assert to_dict(py) == to_dict(cli), preset


def test_python_api_runs_presets_as_the_command_line(composed):
    assert api.config_from_dict({"experiment": "lth_lenet_mnist", "levels": 2}) == dataclasses.replace(
        composed("experiment=lth_lenet_mnist"), levels=2)


# -- model groups ---------------------------------------------------------------------------------

def test_model_groups_set_only_what_their_model_uses(composed):
    assert len(MODELS) >= 17
    for model in MODELS:
        cfg = composed(f"model={model}")
        used = defaults.uses("model", model)
        assert "init" in used
        for f in defaults.GROUP_FIELDS["model"]:
            assert (getattr(cfg.model, f) is None) == (f not in used), (model, f)
        assert (cfg.model.widths is None) == (model != "mlp")
        assert (cfg.model.bn_scale_init is None) == (model.startswith(("mlp", "lenet", "conv", "bert"))), model  # no BatchNorm
        assert (cfg.model.layers is None) == (model != "bert")
        validate(cfg)


def test_lenet_config_has_no_widths_and_unused_settings_are_refused():
    out = subprocess.run([sys.executable, "experiments/lottery.py", "model=lenet_300_100", "--cfg", "job"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "500, 500" not in out and "- 500" not in out and "widths: null" in out
    with pytest.raises(ConfigError, match=r"model.widths=\[100\]: model=lenet_300_100 does not use"):
        validate(Config(model=ModelConfig(name="lenet_300_100", widths=[100])))
    with pytest.raises(ConfigError, match="optimizer.momentum=0.9: optimizer=adam does not use"):
        validate(Config(optimizer=OptimizerConfig(momentum=0.9)))


def test_hashes_of_existing_runs_unchanged():
    """Run hashes computed by lth before model settings became model-specific (commit d232496):
    the runs made then keep their directories."""
    cases = {
        "f24e10827921": Config(model=ModelConfig(name="lenet_300_100", init="glorot_normal"), dataset=DatasetConfig(name="mnist", val_size=5000)),
        "c989ec9ee685": Config(model=ModelConfig(name="resnet20", bn_scale_init="uniform"), dataset=DatasetConfig(name="cifar10", val_size=5000),
                               optimizer=OptimizerConfig(name="momentum", lr=0.1, momentum=0.9, weight_decay=1e-4)),
        "e851426ddf81": Config(),
        "03c75da3a06d": Config(model=ModelConfig(name="lenet5", init="xavier"), dataset=DatasetConfig(name="mnist", val_size=5000),
                               optimizer=OptimizerConfig(name="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4)),
    }
    for expected, cfg in cases.items():
        assert content_hash(cfg, {"total_steps": 100}) == expected


# -- replicates extend, level 0 is shared ------------------------------------------------------

@pytest.fixture
def spy(monkeypatch):
    """Records the member count of every level lottery.run trains."""
    calls = []
    real = lottery.train_level

    def wrapped(trainer, states, keys, **kw):
        calls.append(int(states.step.shape[0]))
        return real(trainer, states, keys, **kw)

    monkeypatch.setattr(lottery, "train_level", wrapped)
    return calls


def _quiet(cfg):
    return lottery.run(cfg, echo=lambda s: None)


def _stacked_on_disk(run_dir):
    """Every stacked checkpoint of a run (host arrays, as saved): each kind's mask and final
    weights at each level, and the states at the rewind point."""
    from lth.runs import checkpoints
    from lth.runs.run_dir import RunDir

    rd = RunDir(run_dir, "")
    where = {"rewind": rd.file("rewind")}
    for level, kind in ((0, "ticket"), (1, "ticket"), (1, "reinit")):
        for name in ("mask", "final"):
            where[f"level {level} {kind} {name}"] = os.path.join(rd.member_dir(level, kind), name)
    return {what: checkpoints.restore(path, None) for what, path in where.items()}


def test_more_replicates_train_only_the_new_ones(tmp_path, spy):
    """Extending 1 -> 2 replicates trains replicate 1 only and keeps replicate 0: its result rows,
    and its slice of every stacked array on disk (masks, final weights, rewind point) bit for bit."""
    import jax

    cfg = small_config(tmp_path, replicates=1, levels=1, controls=["reinit"])
    a = _quiet(cfg)
    old_rows = a.results.copy()
    old_arrays = _stacked_on_disk(a.run_dir)
    old_result = json.loads(Path(a.run_dir, "level_01", "result.json").read_text())
    spy.clear()
    b = _quiet(dataclasses.replace(cfg, replicates=2))
    assert b.run_dir == a.run_dir
    assert spy == [1, 2]  # level 0: the new replicate; level 1: its ticket and its control
    kept = b.results[b.results.replicate == 0].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, old_rows)
    new_result = json.loads(Path(a.run_dir, "level_01", "result.json").read_text())
    assert new_result["rows"][0] == old_result["rows"][0]
    assert [e["test/accuracy"][0] for e in new_result["history"]["evals"]] == [e["test/accuracy"][0] for e in old_result["history"]["evals"]]
    assert sorted(b.results.replicate.unique()) == [0, 1]
    new_arrays = _stacked_on_disk(a.run_dir)
    for what, old in old_arrays.items():
        olds, news = jax.tree.leaves(old), jax.tree.leaves(new_arrays[what])
        assert len(olds) == len(news) > 0, what
        for o, n in zip(olds, news):
            assert np.shape(o)[:1] == (1,) and np.shape(n)[:1] == (2,), what
            np.testing.assert_array_equal(n[:1], o, err_msg=f"{what}: replicate 0 changed when replicate 1 was added")
    # asking for fewer shows the first ones and keeps the rest on disk
    c = _quiet(dataclasses.replace(cfg, replicates=1))
    pd.testing.assert_frame_equal(c.results.drop(columns="seconds"), old_rows.drop(columns="seconds"))
    assert REP.count(json.loads(Path(a.run_dir, "level_01", "result.json").read_text())) == 2


@pytest.mark.slow
def test_an_added_replicate_equals_one_trained_from_scratch(tmp_path):
    """Replicate r's randomness depends on (seed, r) only: added later, it trains as it would have
    in a run with all replicates from the start (to float rounding: another vmap width)."""
    cfg = small_config(tmp_path, replicates=1, levels=1, controls=["reinit"])
    _quiet(cfg)
    b = _quiet(dataclasses.replace(cfg, replicates=2))
    fresh = _quiet(dataclasses.replace(cfg, replicates=2, paths=dataclasses.replace(cfg.paths, runs_dir=str(tmp_path / "fresh"))))
    one = lambda df: df[df.replicate == 1].sort_values(["level", "kind"]).test_accuracy.to_numpy()
    np.testing.assert_allclose(one(b.results), one(fresh.results), atol=2e-3)


def test_level0_shared_across_pruning_settings(tmp_path, spy):
    cfg = small_config(tmp_path, levels=1)
    a = _quiet(cfg)
    assert spy == [2, 2]
    spy.clear()
    b = _quiet(dataclasses.replace(cfg, pruning=dataclasses.replace(cfg.pruning, fraction=0.5, scope="layerwise"),
                                   rewind=dataclasses.replace(cfg.rewind, mode="lr")))
    assert b.run_dir != a.run_dir and spy == [2]  # level 1 only
    for run in (a, b):
        assert os.path.islink(os.path.join(run.run_dir, "level_00")) and os.path.islink(os.path.join(run.run_dir, "rewind"))
    assert os.path.realpath(os.path.join(a.run_dir, "level_00")) == os.path.realpath(os.path.join(b.run_dir, "level_00"))
    level0 = lambda r: r.results[r.results.level == 0].drop(columns="seconds").reset_index(drop=True)
    pd.testing.assert_frame_equal(level0(a), level0(b))
    assert b.results[b.results.level == 1].density.iloc[0] == pytest.approx(0.5, abs=0.01)


def test_what_level0_depends_on():
    """Level 0's directory changes with the seed, optimiser, training, data, model or rewind point,
    not with pruning, rewinding mode or replicates; gradual pruning keeps level 0 in its run."""
    from lth.lottery import shared_dense
    from lth.config.schema import PruningConfig
    from lth.runs.run_dir import RunDir, hash_of

    cfg = resolve(Config())
    name = lambda c, plan={"total_steps": 100, "rewind_step": 0}: hash_of(shared_dense.level0_settings(c, plan, None))
    same = [dataclasses.replace(cfg, replicates=5), dataclasses.replace(cfg, controls=["reinit"]),
            dataclasses.replace(cfg, pruning=PruningConfig(fraction=0.5, scope="global", method="random")),
            dataclasses.replace(cfg, rewind=dataclasses.replace(cfg.rewind, mode="finetune", optimizer_state="rewound"))]
    other = [dataclasses.replace(cfg, seed=1), dataclasses.replace(cfg, optimizer=dataclasses.replace(cfg.optimizer, lr=0.1)),
             dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=50)),
             dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, widths=[100]))]
    assert all(name(c) == name(cfg) for c in same)
    assert len({name(c) for c in other} | {name(cfg)}) == len(other) + 1
    assert name(cfg, {"total_steps": 100, "rewind_step": 20}) != name(cfg)
    gradual = dataclasses.replace(cfg, levels=0, pruning=PruningConfig(schedule="gradual", target_density=0.5))
    rd = RunDir("/nonexistent/run", "h")
    assert shared_dense.for_run(gradual, {}, None, rd) is rd


@pytest.mark.slow  # a migration path; ~8 s
def test_run_made_with_replicates_in_its_hash_is_adopted(tmp_path, spy):
    cfg = small_config(tmp_path, levels=0, replicates=1)
    a = _quiet(cfg)
    plan = json.loads(Path(a.run_dir, "summary.json").read_text())["plan"]
    legacy = os.path.join(os.path.dirname(a.run_dir), f"mlp-mnist1d-{content_hash(cfg, plan)}")
    os.rename(a.run_dir, legacy)
    spy.clear()
    messages = []
    b = lottery.run(cfg, echo=messages.append)
    assert b.run_dir == a.run_dir and not os.path.exists(legacy) and spy == []
    assert any("moved" in m for m in messages)


# -- replacing finished files, all or nothing ----------------------------------------------------

def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_commit_after_a_kill_completes_or_drops(tmp_path):
    def setup(root):
        (root / "level_00" / "mask").mkdir(parents=True)
        (root / "level_00" / "mask" / "a").write_text("old")
        (root / "level_00" / "result.json").write_text("old")
        (root / "level_00" / "mask.new").mkdir()
        (root / "level_00" / "mask.new" / "a").write_text("new")
        (root / "level_00" / "result.json.new").write_text("new")

    # killed before the manifest: the old files stay, the half-written new ones go
    setup(tmp_path / "a")
    REP.recover(str(tmp_path / "a"))
    assert _tree(tmp_path / "a") == {"level_00/mask/a": "old", "level_00/result.json": "old"}
    # killed after the manifest, in the middle of the renames (mask moved aside already)
    root = tmp_path / "b"
    setup(root)
    (root / REP.MANIFEST).write_text(json.dumps({"replace": {"level_00/mask.new": "level_00/mask",
                                                             "level_00/result.json.new": "level_00/result.json"}}))
    os.rename(root / "level_00" / "mask", root / "level_00" / "mask.old")
    REP.recover(str(root))
    assert _tree(root) == {"level_00/mask/a": "new", "level_00/result.json": "new"}
    # a commit that runs through
    root = tmp_path / "c"
    setup(root)
    REP.commit(str(root), {"level_00/mask.new": "level_00/mask", "level_00/result.json.new": "level_00/result.json"})
    assert _tree(root) == {"level_00/mask/a": "new", "level_00/result.json": "new"}


# -- W&B and sweeps --------------------------------------------------------------------------------

@pytest.mark.slow
def test_one_wandb_summary_run_across_invocations(tmp_path):
    cfg = small_config(tmp_path, levels=0, replicates=1)
    cfg.logger.wandb.mode = "offline"
    for _ in range(3):
        out = _quiet(cfg)
    ids = {d.name.split("-", 3)[-1] for d in Path(out.run_dir, "wandb").glob("offline-run-*") if d.name.endswith("-summary")}
    assert len(ids) == 1, ids


@pytest.mark.slow
def test_each_sweep_records_its_jobs_in_a_folder_of_its_own(tmp_path):
    base = [sys.executable, "experiments/lottery.py", "-m", f"paths.runs_dir={tmp_path}", "levels=0", "replicates=1",
            "train.duration=20it", "train.eval_every=10it", "model.widths=[16]", "logger.wandb.mode=disabled",
            "logger.progress=false"]
    first = subprocess.run(base + ["seed=0,1"], cwd=ROOT, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    import time

    time.sleep(1.1)
    second = subprocess.run(base + ["seed=2"], cwd=ROOT, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    sweeps = sorted((tmp_path / "multirun").iterdir())
    assert len(sweeps) == 2
    jobs = [sorted(json.loads(p.read_text())["overrides"][-1] for p in (s / "jobs").glob("*.json")) for s in sweeps]
    assert jobs == [["seed=0", "seed=1"], ["seed=2"]]
    rec = json.loads((sweeps[0] / "jobs" / "0001.json").read_text())
    assert rec["status"] == "done" and os.path.isfile(os.path.join(rec["run_dir"], "results.csv"))
    assert "job 1 (" in first.stdout and rec["run_dir"] in first.stdout


# -- the README's and the documentation's examples ----------------------------------------------------

def readme_commands() -> list[list[str]]:
    """Every `python experiments/<name>.py ...` command the README and the documentation pages
    (docs/**/*.md) show (code blocks and inline, continuation lines joined, comments dropped), as
    [name, override, ...]."""
    import re
    import shlex

    text = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))])
    out = []
    for m in re.finditer(r"(`?)python experiments/(\w+)\.py", text):
        rest = text[m.end():]
        if m.group(1):  # inline: up to the closing backtick, across line breaks
            body = rest[:rest.index("`")]
        else:  # a code block line, with its continuation lines
            body = ""
            for line in rest.split("\n"):
                part = line.split("#")[0] if "#" in line and not line.lstrip().startswith("\"") else line
                body += " " + part.rstrip().rstrip("\\")
                if not line.rstrip().endswith("\\"):
                    break
        body = re.sub(r"<(\w+)>", r"\1", body)  # placeholders: runs/<run> stands for a run directory
        tokens = [os.path.expandvars(t) for t in shlex.split(body.replace("\n", " "))
                  if "=" in t and not t.startswith("[") and not t.endswith("=NAME")]  # experiment=NAME: any preset  # as the shell expands $HOME
        out.append([m.group(2), *tokens])
    return out


def test_every_readme_command_composes(composed):
    """Each override the README and docs/ show composes as written (sweeps: their first value)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    commands = readme_commands()
    assert len(commands) >= 30 and {c[0] for c in commands} == {"lottery", "branch", "instability", "compress", "export"}
    parser = OverridesParser.create()
    for name, *overrides in commands:
        plain = []
        for ov, text in zip(parser.parse_overrides(overrides), overrides):
            plain.append(f"{ov.key_or_group}={next(ov.sweep_string_iterator())}" if ov.is_sweep_override() else text)
        cfg = composed(*plain)
        assert isinstance(cfg, Config), (name, overrides)


def test_matching_with_one_replicate_is_na_unless_a_tolerance_is_given():
    from lth.runs import results

    rows = [{"level": lv, "replicate": 0, "kind": "ticket", "density": d, "test_accuracy": a, "early_stop_step": 10.0,
             "early_stop_test_accuracy": a} for lv, d, a in ((0, 1.0, 0.90), (1, 0.8, 0.8995), (2, 0.64, 0.95))]
    df = pd.DataFrame(rows)
    t = results.summarize(df)
    assert t.matching.isna().all()  # no spread to compare within: not "no" from a std of 0
    assert list(t.winning_ticket[1:]) == [False, True]
    t = results.summarize(df, tolerance=0.005)
    assert list(t.matching[1:]) == [True, True]
    two = pd.concat([df, df.assign(replicate=1, test_accuracy=df.test_accuracy + 0.002)])
    assert list(results.summarize(two).matching[1:]) == [True, True]  # population std 0.001: 0.9005 within it
