"""W&B sweeps (conf/wandb_sweep/), offline: each file is valid for W&B's own sweeps engine (the
open-source `sweeps` package, run here under numpy 2), the runs it suggests compose into valid lth
configs through the command line the agent builds, and a run started by an agent logs the sweep's
metric, the level curves and the artifacts to the agent's run."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP_FILES = sorted(glob.glob(os.path.join(ROOT, "conf", "wandb_sweep", "*.yaml")))


def test_the_three_sweep_methods_are_there():
    methods = {yaml.safe_load(open(f))["method"] for f in SWEEP_FILES}
    assert methods == {"grid", "random", "bayes"}


def agent_args(sweep: dict, suggestion) -> list[str]:
    """The arguments `wandb agent` gives experiments/lottery.py for a suggested run: W&B's own
    command builder over the file's `command` (${args_no_hyphens}: Hydra's key=value)."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    command = sweep_utils.create_sweep_command(list(sweep["command"]))
    variables = sweep_utils.create_sweep_command_args({"args": suggestion.config})
    variables.update(env=["/usr/bin/env"], interpreter=["python"], program=[sweep["program"]])
    line = []
    for c in command:
        line += variables.get(c[2:-1], []) if c.startswith("${") else [c]
    assert line[:3] == ["/usr/bin/env", "python", "experiments/lottery.py"]
    return line[3:]


@pytest.mark.parametrize("path", SWEEP_FILES, ids=os.path.basename)
def test_sweep_file_is_valid_and_every_suggested_run_composes(path):
    """Schema-valid for the sweeps engine; its metric is one lth logs; the engine's next runs (for
    bayes, after fake finished runs with metric values) are `key=value` arguments that compose
    (lth.api.compose, as the command line does) into a config `lth.config.schema.validate` accepts, with
    the suggested values in it."""
    import sweeps

    from lth import api
    from lth.integrations import sweep_objective
    from lth.config.schema import to_dict, validate

    sweep = yaml.safe_load(open(path))
    assert sweeps.schema_violations_from_proposed_config(sweep) == []
    assert sweep["metric"]["name"] in sweep_objective.GOALS
    assert sweep["metric"]["goal"] == sweep_objective.GOALS[sweep["metric"]["name"]]
    assert os.path.isfile(os.path.join(ROOT, sweep["program"]))
    rng = np.random.default_rng(0)
    runs, seen = [], set()
    for i in range(4):
        suggestion = sweeps.next_run(sweep, runs, validate=True)
        assert suggestion is not None
        args = agent_args(sweep, suggestion)
        assert all("=" in a and not a.startswith("-") for a in args)
        cfg = api.compose(args)
        validate(cfg)
        flat = api.flatten_settings(to_dict(cfg))
        for key, value in ((k, v["value"]) for k, v in suggestion.config.items() if k != "experiment"):
            assert flat[key] == pytest.approx(value) if isinstance(value, float) else flat[key] == value, key
        seen.add(tuple(args))
        runs.append(sweeps.SweepRun(name=f"run{i}", state="finished", config=suggestion.config,
                                    summary_metrics={sweep["metric"]["name"]: float(rng.uniform(0.3, 0.9))}))
    assert len(seen) == 4  # four different runs (grid: no repeats; random and bayes: continuous draws)


def test_sweep_objectives_from_a_table():
    """Final-level accuracy and the sparsest matching density, by hand: levels 1 and 2 match (within
    the dense std 0.01 of 0.80), level 3 does not; without a matching level the value is 1.0."""
    from lth.integrations import sweep_objective

    t = pd.DataFrame({"density": [1.0, 0.8, 0.64, 0.512], "test_acc": [0.80, 0.795, 0.79, 0.70],
                      "test_acc_std": [0.01, 0.0, 0.0, 0.0],
                      "matching": pd.array([pd.NA, True, True, False], dtype="boolean")},
                     index=pd.Index([0, 1, 2, 3], name="level"))
    assert sweep_objective.objectives(t) == {"sweep/final_test_accuracy": 0.70, "sweep/sparsest_matching_density": 0.64}
    t["matching"] = pd.array([pd.NA, False, False, False], dtype="boolean")
    assert sweep_objective.objectives(t)["sweep/sparsest_matching_density"] == 1.0
    with pytest.raises(ValueError, match="no levels"):
        sweep_objective.objectives(t.iloc[:0])


def wandb_records(path: str) -> list[dict]:
    """The records of an offline run's .wandb log, through W&B's own reader (`wandb leet inspect`)."""
    p = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", path], capture_output=True, text=True,
                       timeout=120, check=True)
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


@pytest.fixture
def sweep_agent_env(monkeypatch, tmp_path):
    """The environment `wandb agent` gives the command it starts (a sweep id, the run id it made),
    with W&B's process-wide settings re-read before and after (they are read once per process)."""
    import wandb

    wandb.teardown()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep0test")
    monkeypatch.setenv("WANDB_RUN_ID", "agentrun0")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # artifact staging, kept in the test's folder
    yield "agentrun0"
    wandb.teardown()


def summary_of(records: list[dict]) -> dict:
    out = {}
    for r in records:
        if r["type"] == "summary":
            out.update(r["summary"]["update"])
    return out


def test_under_an_agent_the_agents_run_is_the_summary_run(sweep_agent_env, tmp_path):
    """WandbLogger alone (no training): under an agent one offline run exists, with the agent's run
    id; level metrics land in it under level_NN/ against level_NN/step; the sweep metrics in its
    summary; the results and masks artifacts in its log, their staged files equal to the run's."""
    from lth.runs import checkpoints
    from lth.integrations.wandb_logger import WandbLogger

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    mask = {"fc1": {"kernel": np.array([[[True, False], [True, True]]]), "bias": np.ones((1, 2), bool)}}
    checkpoints.save(str(run_dir / "level_00" / "mask"), mask)
    df = pd.DataFrame({"level": [0, 1, 1], "replicate": [0, 0, 1], "kind": ["ticket"] * 3, "density": [1.0, 0.75, 0.75],
                       "test_accuracy": [0.5, 0.4, 0.6]})
    df.to_csv(run_dir / "results.csv", index=False)
    (run_dir / "summary.json").write_text(json.dumps({"parameters": {"tensor_sizes": {"fc1/kernel": 4}}}))
    table = pd.DataFrame({"density": [1.0, 0.75], "test_acc": [0.5, 0.5], "test_acc_std": [0.0, 0.1],
                          "es_step": [1.0, 1.0], "es_test_acc": [0.5, 0.5],
                          "matching": pd.array([pd.NA, True], dtype="boolean")}, index=pd.Index([0, 1], name="level"))
    log = WandbLogger(mode="offline", project="p", entity=None, group="g", tags=[], config={}, directory=str(run_dir),
                      log_every=1, label="x", run_id="lth-abc")
    for level in (0, 1):
        log.start_level(level, 1.0 - 0.25 * level)
        log.log_eval(10, {"test/accuracy": np.array([0.5 - 0.1 * level])})
        log.end_level({"test_accuracy": 0.5 - 0.1 * level})
    log.log_results(df, table)
    log.log_artifacts(str(run_dir))
    log.finish()

    folders = glob.glob(str(run_dir / "wandb" / "offline-run-*"))
    assert len(folders) == 1 and folders[0].endswith("-agentrun0")
    recs = wandb_records(glob.glob(os.path.join(folders[0], "*.wandb"))[0])
    history = [r["history"]["item"] for r in recs if r["type"] == "history"]
    evals = [h for h in history if any(k.endswith("test/accuracy") for k in h)]
    assert [(h.get("level_00/test/accuracy"), h.get("level_01/test/accuracy")) for h in evals] == [(0.5, None), (None, 0.4)]
    assert all(h[f"level_0{i}/step"] == 10 for i, h in enumerate(evals))
    summary = summary_of(recs)
    assert summary["sweep/final_test_accuracy"] == 0.5 and summary["sweep/sparsest_matching_density"] == 0.75
    assert summary["level_01/test_accuracy"] == pytest.approx(0.4)
    arts = {r["artifact"]["type"]: r["artifact"] for r in recs if r["type"] == "artifact"}
    assert arts["results"]["name"] == "lth-abc-results" and arts["masks"]["name"] == "lth-abc-masks"
    files = {(t, c["path"]): c["local_path"] for t in ("results", "masks") for c in arts[t]["manifest"]["contents"]}
    assert sorted(files) == [("masks", "masks.npz"), ("results", "results.csv"), ("results", "summary.json")]
    for name in ("results.csv", "summary.json"):
        assert open(files[("results", name)], "rb").read() == (run_dir / name).read_bytes()
    with np.load(files[("masks", "masks.npz")]) as z:
        assert sorted(z.files) == ["level_00/ticket/fc1/kernel"]  # prunable tensors only
        assert z["level_00/ticket/fc1/kernel"].tolist() == [[[True, False], [True, True]]]


@pytest.mark.slow
def test_a_lottery_run_under_an_agent_logs_the_sweep_metric(sweep_agent_env, tmp_path):
    """A whole (small) lottery run started as an agent would start it: one W&B run, the agent's,
    whose summary holds the metric the sweep files optimise, equal to results.csv's last level, and
    which holds the run's artifacts (every level's ticket masks)."""
    sys.path.insert(0, os.path.dirname(__file__))
    from conftest import small_config

    from lth.lottery import levels as lottery

    cfg = small_config(tmp_path, levels=1)
    cfg.logger.wandb.mode = "offline"
    out = lottery.run(cfg, echo=lambda _: None)
    folders = glob.glob(os.path.join(out.run_dir, "wandb", "offline-run-*"))
    assert len(folders) == 1 and folders[0].endswith("-agentrun0")
    recs = wandb_records(glob.glob(os.path.join(folders[0], "*.wandb"))[0])
    summary = summary_of(recs)
    df = pd.read_csv(os.path.join(out.run_dir, "results.csv"))
    last = df[(df.level == df.level.max()) & (df.kind == "ticket")]
    assert summary["sweep/final_test_accuracy"] == pytest.approx(last.test_accuracy.mean(), abs=1e-6)
    assert "level_01/test/accuracy" in summary and "level_00/test/accuracy" in summary
    arts = {r["artifact"]["type"]: r["artifact"] for r in recs if r["type"] == "artifact"}
    keys = json.loads(arts["masks"]["metadata"])["keys"]
    assert keys == [f"level_0{lv}/ticket/{p}/kernel" for lv in (0, 1) for p in ("fc1", "fc2", "head")]
    assert sorted(c["path"] for c in arts["results"]["manifest"]["contents"]) == ["results.csv", "summary.json"]
