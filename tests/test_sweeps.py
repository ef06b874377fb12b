"""Sweeps and clusters: the launcher presets (local, SLURM, multi-host), the sweep presets of the
papers, a sweep that runs every job when one fails and says so at the end, W&B runs tagged by
sweep, and one table per sweep (scripts/sweep_summary.py, lth.load_runs of a sweep folder).

The default tests compose configs and read fake sweep folders (seconds); the multiruns that train
(submitit_local, joblib, a failing job among good ones) are `slow`."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
sys.path.insert(0, str(ROOT))

SLURM_FIELDS = ("partition", "gpus_per_node", "cpus_per_task", "timeout_min", "mem_gb", "array_parallelism",
                "signal_delay_s", "max_num_timeout", "nodes", "tasks_per_node")


@pytest.fixture(scope="module")
def hydra_compose():
    """Hydra's compose over conf/ with the hydra config (launcher, sweeper) included."""
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore

    from lth.config.schema import structured_schema

    ConfigStore.instance().store(name="lth_schema", node=structured_schema())
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield lambda *overrides: compose("config", overrides=list(overrides), return_hydra_config=True)


# -- launchers -------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset, expected", [
    ("slurm", dict(gpus_per_node=None, cpus_per_task=4, timeout_min=240, mem_gb=16, array_parallelism=32, nodes=1, tasks_per_node=1)),
    ("slurm_gpu", dict(gpus_per_node=1, cpus_per_task=8, timeout_min=720, mem_gb=64, array_parallelism=16, nodes=1, tasks_per_node=1)),
    ("slurm_multinode", dict(gpus_per_node=4, cpus_per_task=8, timeout_min=720, mem_gb=128, array_parallelism=4, nodes=2, tasks_per_node=4)),
    ("slurm_multinode_node", dict(gpus_per_node=4, cpus_per_task=16, timeout_min=720, mem_gb=128, array_parallelism=4, nodes=2,
                                  tasks_per_node=1, setup=["export LTH_LOCAL_DEVICES=all"])),
])
def test_slurm_presets_compose_with_their_fields(hydra_compose, preset, expected):
    """Each preset inherits submitit's SLURM launcher, sets every documented field, requeues after
    time-outs (max_num_timeout > 0, the resume makes that safe) and takes command-line overrides."""
    launcher = hydra_compose(f"hydra/launcher={preset}").hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert {k: launcher[k] for k in expected} == expected
    assert launcher.partition is None and launcher.signal_delay_s == 300 and launcher.max_num_timeout == 20
    if preset == "slurm_multinode":  # JAX on SLURM: one process per GPU
        assert launcher.tasks_per_node == launcher.gpus_per_node
    changed = hydra_compose(f"hydra/launcher={preset}", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=30",
                            "hydra.launcher.mem_gb=8", "hydra.launcher.array_parallelism=2").hydra.launcher
    assert (changed.partition, changed.timeout_min, changed.mem_gb, changed.array_parallelism) == ("gpu", 30, 8, 2)


def test_every_slurm_preset_setting_is_commented():
    files = sorted((CONF / "hydra" / "launcher").glob("*.yaml"))
    assert {f.stem for f in files} >= {"slurm", "slurm_gpu", "slurm_multinode"}
    for f in files:
        keys = [line for line in f.read_text().splitlines() if line and not line.startswith(("#", " ", "-", "defaults"))]
        assert keys, f
        for line in keys:
            assert "#" in line, f"{f.name}: {line!r} has no comment"
    assert {line.split(":")[0] for line in (CONF / "hydra" / "launcher" / "slurm.yaml").read_text().splitlines()
            if line and line[0].isalpha()} >= set(SLURM_FIELDS)


def test_slurm_presets_become_these_sbatch_lines(hydra_compose, monkeypatch, tmp_path):
    """The presets' values as submitit writes them into the job array's sbatch file (the launcher's
    own translation of its parameters; `srun` is faked present, nothing is submitted)."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf
    from submitit.slurm import slurm

    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 1))

    def sbatch(preset, *overrides):
        launcher = hydra_compose(f"hydra/launcher={preset}", f"hydra.sweep.dir={tmp_path}", *overrides).hydra.launcher
        params = OmegaConf.to_container(launcher, resolve=True)
        params.pop("_target_")
        ex = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"),
                                   slurm_max_num_timeout=params.pop("max_num_timeout"))
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        ex.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
        ex._executor.parameters["map_count"] = 40  # a 40-job sweep
        return ex._executor._make_submission_file_text("python -u -m submitit.core._submit", "uid")

    gpu = sbatch("slurm_gpu", "hydra.launcher.partition=gpu")
    for line in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=64GB", "--time=720",
                 "--array=0-39%16", "--signal=USR2@300", "--nodes=1", "--ntasks-per-node=1"):
        assert f"#SBATCH {line}\n" in gpu, line
    cpu = sbatch("slurm")
    assert "--gpus-per-node" not in cpu and "--partition" not in cpu and "#SBATCH --array=0-39%32\n" in cpu
    multi = sbatch("slurm_multinode", "hydra.launcher.nodes=4")
    assert "#SBATCH --nodes=4\n" in multi and "#SBATCH --ntasks-per-node=4\n" in multi and "#SBATCH --gpus-per-node=4\n" in multi


def test_local_launchers_compose(hydra_compose):
    assert hydra_compose("hydra/launcher=submitit_local").hydra.launcher._target_.endswith("submitit_launcher.LocalLauncher")
    assert hydra_compose("hydra/launcher=joblib").hydra.launcher._target_.endswith("JoblibLauncher")
    assert hydra_compose().hydra.callbacks.sweep_summary._target_ == "lth.integrations.sweep_callbacks.SweepSummary"


# -- multi-host ------------------------------------------------------------------------------------

SLURM_TASK = {"SLURM_JOB_ID": "123", "SLURM_STEP_NODELIST": "node[01-02]", "SLURM_NTASKS": "8", "SLURM_PROCID": "5",
              "SLURM_LOCALID": "1"}


def test_distributed_decision():
    from lth.integrations import distributed
    from lth.config.schema import ConfigError

    assert not distributed.wanted({})
    assert distributed.wanted(SLURM_TASK) and not distributed.is_primary(SLURM_TASK)
    assert distributed.is_primary({**SLURM_TASK, "SLURM_PROCID": "0"}) and distributed.is_primary({})
    assert not distributed.wanted({**SLURM_TASK, "SLURM_NTASKS": "1"})  # one task: a plain SLURM job
    assert not distributed.wanted({k: v for k, v in SLURM_TASK.items() if k != "SLURM_STEP_NODELIST"})  # not in a job step
    assert not distributed.wanted({**SLURM_TASK, "LTH_DISTRIBUTED": "0"})
    assert distributed.wanted({"LTH_DISTRIBUTED": "1"}) and distributed.wanted({"LTH_DISTRIBUTED": "true"})
    with pytest.raises(ConfigError, match="LTH_DISTRIBUTED='maybe'.*expected 1"):
        distributed.wanted({"LTH_DISTRIBUTED": "maybe"})


def test_maybe_initialize_calls_jax_distributed_once_when_wanted(monkeypatch):
    import jax

    from lth.integrations import distributed

    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(distributed, "_initialized", False)
    assert distributed.maybe_initialize({}) is False and calls == []
    assert distributed.maybe_initialize(SLURM_TASK) is True
    assert distributed.maybe_initialize(SLURM_TASK) is True
    assert calls == [((), {})]  # once, with JAX detecting coordinator, process count and id


# -- sweep presets ---------------------------------------------------------------------------------

SWEEPS = {  # preset: (swept key, values, a base the values are valid on)
    "rewind_points": ("rewind.point", ["0it", "100it", "500it", "2000it", "10000it"], ["experiment=lth_lenet_mnist"]),
    "rewind_points_short": ("rewind.point", ["0it", "25it", "50it", "100it", "250it", "500it"], []),
    "rewinding_modes": ("rewind.mode", ["weights", "lr", "finetune"], ["experiment=renda_resnet56_cifar10"]),
    "pruning_methods": ("pruning.method", ["magnitude", "random", "snip", "grasp", "synflow", "magnitude_at_init"],
                        ["experiment=lth_lenet_mnist", "pruning=global"]),
}


def job_list(dcfg) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of a composed config's sweeper parameters."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in dcfg.hydra.sweeper.params.items()]
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params), None)
    return [list(job) for batch in batches for job in batch]


@pytest.mark.parametrize("preset", sorted(SWEEPS))
def test_sweep_presets_list_their_jobs_and_each_is_valid(hydra_compose, preset):
    from lth.api import compose
    from lth.config.schema import validate

    key, values, base = SWEEPS[preset]
    assert job_list(hydra_compose(*base, f"+sweep={preset}")) == [[f"{key}={v}"] for v in values]
    for v in values:
        cfg = compose([*base, f"+sweep={preset}", f"{key}={v}"])
        validate(cfg)
        assert str(getattr(getattr(cfg, key.split(".")[0]), key.split(".")[1])) == v
    if preset == "pruning_methods":  # what the pruning-at-initialisation methods need
        assert compose(["rewind=lr", "+sweep=pruning_methods"]).rewind.mode == "weights"


def test_sweep_presets_combine_with_a_presets_own_sweep(hydra_compose):
    jobs = job_list(hydra_compose("experiment=mnist1d_rewinding", "+sweep=rewind_points_short"))
    assert len(jobs) == 3 * 6 and ["rewind.mode=finetune", "rewind.point=500it"] in jobs


# -- a failing job, the summary, W&B tags ----------------------------------------------------------

@pytest.fixture
def in_multirun(tmp_path):
    """Hydra's runtime config as a multirun job sees it (job 3 of sweep `tmp_path/sweep-x`)."""
    from hydra.conf import HydraConf
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"hydra": OmegaConf.structured(HydraConf)})
    cfg.hydra.mode = RunMode.MULTIRUN
    cfg.hydra.sweep.dir = str(tmp_path / "sweep-x")
    cfg.hydra.job.num = 3
    cfg.hydra.overrides.task = ["seed=1"]
    before = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    yield tmp_path / "sweep-x"
    HydraConfig.instance().cfg = before


def _record(sweep: Path, job: int = 3) -> dict:
    return json.loads((sweep / "jobs" / f"{job:04d}.json").read_text())


def test_a_failed_job_in_a_multirun_is_recorded_and_returns(in_multirun, capsys):
    from experiments.common import run_or_exit, sweep_tagged
    from lth.config.schema import Config, ConfigError

    def boom():
        assert _record(in_multirun)["status"] == "running"  # recorded before the work starts
        raise RuntimeError("diverged into a wall")

    assert run_or_exit(boom) is None
    assert _record(in_multirun) == {"job": 3, "overrides": ["seed=1"], "status": "failed", "error": "RuntimeError: diverged into a wall"}
    assert "diverged into a wall" in capsys.readouterr().err  # the traceback

    def refuse():
        raise ConfigError("levels=-1: must be >= 0")

    assert run_or_exit(refuse) is None and _record(in_multirun)["status"] == "refused"
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C still stops the sweep
        run_or_exit(lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert _record(in_multirun)["status"] == "interrupted"
    out = run_or_exit(lambda: SimpleNamespace(run_dir="/runs/x"))
    assert out.run_dir == "/runs/x" and _record(in_multirun)["status"] == "done" and _record(in_multirun)["run_dir"] == "/runs/x"
    cfg = sweep_tagged(Config())
    assert cfg.logger.wandb.tags == ["sweep:sweep-x"] and sweep_tagged(cfg) == cfg and Config().logger.wandb.tags == []
    source = Config()
    source.logger.wandb.tags = ["mine", "sweep:an-earlier-sweep"]  # a branch of a run made in another sweep
    assert sweep_tagged(source).logger.wandb.tags == ["mine", "sweep:sweep-x"]


def test_outside_a_multirun_failures_end_the_process(capsys):
    from experiments.common import run_or_exit, sweep_tagged
    from lth.config.schema import Config, ConfigError

    with pytest.raises(SystemExit) as e:
        run_or_exit(lambda: (_ for _ in ()).throw(ConfigError("levels=-1: must be >= 0")))
    assert e.value.code == 2 and "error: levels=-1" in capsys.readouterr().err
    with pytest.raises(RuntimeError):
        run_or_exit(lambda: (_ for _ in ()).throw(RuntimeError("x")))
    assert sweep_tagged(Config()) == Config()
    source = Config()
    source.logger.wandb.tags = ["mine", "sweep:an-earlier-sweep"]
    assert sweep_tagged(source).logger.wandb.tags == ["mine"]


def _fake_sweep(sweep: Path, jobs: list[dict]) -> Path:
    (sweep / "jobs").mkdir(parents=True)
    for r in jobs:
        (sweep / "jobs" / f"{r['job']:04d}.json").write_text(json.dumps(r))
    return sweep


def test_sweep_summary_callback_prints_the_table_and_fails_the_sweep(tmp_path, capsys):
    from omegaconf import OmegaConf

    from lth.integrations.sweep_callbacks import SweepSummary

    sweep = _fake_sweep(tmp_path / "s", [
        {"job": 0, "overrides": ["levels=1", "seed=0"], "status": "done", "run_dir": "/runs/a"},
        {"job": 1, "overrides": ["levels=1", "seed=1"], "status": "refused", "error": "init.checkpoint='/x': no such file"},
        {"job": 2, "overrides": ["levels=1", "seed=2"], "status": "running"},
    ])
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    with pytest.raises(SystemExit) as e:
        SweepSummary().on_multirun_end(config=config)
    assert e.value.code == 1
    out = capsys.readouterr()
    assert "1 of 3 jobs done" in out.out and "shared overrides: levels=1" in out.out
    lines = out.out.splitlines()
    assert any(line.split()[:3] == ["1", "refused", "seed=1"] and "no such file" in line for line in lines)
    assert any(line.split()[:3] == ["2", "running", "seed=2"] for line in lines)
    assert "2 job(s) did not finish" in out.err
    for f in (sweep / "jobs").glob("000[12].json"):
        f.unlink()
    SweepSummary().on_multirun_end(config=config)  # all done: no exit
    assert "1 of 1 jobs done" in capsys.readouterr().out
    SweepSummary().on_multirun_start(config=config)  # the same folder used again: the old records set aside
    assert not (sweep / "jobs").exists() and [p.name for p in (sweep / "jobs.1").iterdir()] == ["0000.json"]
    SweepSummary().on_multirun_end(config=config)
    assert "no job records" in capsys.readouterr().out


def test_sweep_table_script_and_load_runs_of_a_sweep_folder(tmp_path, capsys):
    """Job records pointing at two committed runs (results/), and a refused job."""
    import lth
    from lth.api import load_run
    from lth.integrations.sweeps import sweep_table

    a, b = str(ROOT / "results" / "mnist1d_mlp"), str(ROOT / "results" / "lth_lenet_mnist")
    sweep = _fake_sweep(tmp_path / "multirun" / "2026-01-01_00-00-00", [
        {"job": 0, "overrides": ["logger.wandb.mode=disabled", "experiment=mnist1d_mlp"], "status": "done", "run_dir": a},
        {"job": 1, "overrides": ["logger.wandb.mode=disabled", "experiment=lth_lenet_mnist"], "status": "done", "run_dir": b},
        {"job": 2, "overrides": ["logger.wandb.mode=disabled", "experiment=nope"], "status": "refused", "error": "no preset nope"},
    ])
    table = sweep_table(str(sweep))
    assert list(table.columns[:3]) == ["job", "status", "experiment"]  # only the override that varies
    assert "logger.wandb.mode" in sweep_table(str(sweep), all_overrides=True).columns
    for row, path in zip(table.itertuples(), (a, b)):
        r = load_run(path).results
        last = r[(r.kind == "ticket") & (r.level == r.level.max())]
        assert row.level == last.level.max() and row.test_accuracy == pytest.approx(last.test_accuracy.mean())
        assert row.density == pytest.approx(last.density.mean()) and row.replicates == len(last)
        assert row.dense_test_accuracy == pytest.approx(r[(r.kind == "ticket") & (r.level == 0)].test_accuracy.mean())
    assert table.status.tolist() == ["done", "done", "refused"] and pd.isna(table.level[2]) and table.error[2] == "no preset nope"

    from scripts.sweep_summary import main

    assert main([str(sweep), "--csv", str(tmp_path / "t.csv")]) == 1  # a job did not finish
    printed = capsys.readouterr().out
    assert "2 of 3 jobs done" in printed and "lth_lenet_mnist" in printed and "no preset nope" in printed
    assert pd.read_csv(tmp_path / "t.csv").shape[0] == 3
    assert main([str(tmp_path / "nothing")]) == 2

    df = lth.load_runs(str(sweep))
    assert set(df.run) == {"mnist1d_mlp", "lth_lenet_mnist"}
    assert set(lth.load_runs(str(tmp_path / "multirun")).run) == {"mnist1d_mlp", "lth_lenet_mnist"}  # the sweeps' parent too


# -- multiruns that train (slow) -------------------------------------------------------------------

def _multirun(args: list[str], tmp_path: Path, *, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the entry point finds its checkout itself
    return subprocess.run([sys.executable, str(ROOT / "experiments" / "lottery.py"), "-m", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env)


def _jobs(runs: Path) -> list[dict]:
    (sweep,) = list((runs / "multirun").iterdir())
    return [json.loads(p.read_text()) for p in sorted((sweep / "jobs").glob("*.json"))]


@pytest.mark.slow  # 43 s on 2 CPU cores
def test_submitit_local_sweep_lands_both_results(tmp_path):
    """The issue's check, from another working directory: submitit's local executor runs each job in
    a process of its own, which imports lth and experiments.* from this checkout."""
    runs = tmp_path / "runs"
    p = _multirun(["hydra/launcher=submitit_local", f"paths.runs_dir={runs}", "dataset=mnist1d", "model=mlp", "levels=1",
                   "train.duration=100it", "logger.wandb.mode=disabled", "seed=0,1"], tmp_path, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    jobs = _jobs(runs)
    assert [j["status"] for j in jobs] == ["done", "done"]
    assert all(Path(j["run_dir"], "results.csv").is_file() for j in jobs) and len(list(runs.glob("*/results.csv"))) == 2
    assert "2 of 2 jobs done" in p.stdout


@pytest.mark.slow  # 79 s on 2 CPU cores
def test_joblib_2x2_sweep_lands_four_results(tmp_path):
    runs = tmp_path / "runs"
    p = _multirun(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"paths.runs_dir={runs}", "dataset=mnist1d", "model=mlp",
                   "levels=1", "train.duration=100it", "logger.wandb.mode=disabled", "pruning.fraction=0.2,0.5", "seed=0,1"],
                  tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    jobs = _jobs(runs)
    assert [j["status"] for j in jobs] == ["done"] * 4
    assert len({j["run_dir"] for j in jobs}) == 4 and len(list(runs.glob("*/results.csv"))) == 4


@pytest.mark.slow  # 33 s (W&B offline included)
def test_a_failing_job_does_not_stop_the_others(tmp_path):
    """Four jobs with the basic launcher: two refused (a checkpoint that does not exist), one that
    fails (its runs folder is a file), one that trains; every job runs, the good one lands its
    results and its W&B runs (offline, read back) carry the sweep's tag, the table says which failed, and the exit status is 1."""
    (tmp_path / "a_file").write_text("not a folder")
    sweep = tmp_path / "runs" / "multirun" / "my-sweep"
    p = _multirun([f"hydra.sweep.dir={sweep}", "levels=0", "replicates=1", "train.duration=20it", "train.eval_every=10it",
                   "model.widths=[16]", "logger.wandb.mode=offline", "logger.progress=false",
                   f"init.checkpoint={tmp_path}/missing.npz,null", f"paths.runs_dir={tmp_path}/a_file,{tmp_path}/runs"],
                  tmp_path)
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]
    jobs = [json.loads(f.read_text()) for f in sorted((sweep / "jobs").glob("*.json"))]
    assert [j["status"] for j in jobs] == ["refused", "refused", "failed", "done"]
    good = jobs[3]
    assert Path(good["run_dir"], "results.csv").is_file()
    assert "sweep:my-sweep" in Path(good["run_dir"], "config.yaml").read_text()
    from test_lottery import wandb_records

    files = sorted(Path(good["run_dir"], "wandb").glob("offline-run-*/*.wandb"))
    assert len(files) == 2  # level 0 and the summary run, both tagged with the sweep
    for f in files:
        run = next(r["run"] for r in wandb_records(str(f)) if r["type"] == "run")
        assert "sweep:my-sweep" in run["tags"] and run["run_group"] == Path(good["run_dir"]).name, run
    assert "1 of 4 jobs done" in p.stdout and "3 job(s) did not finish" in p.stderr
