"""The prepared call of issue 32 (`scripts/gpu_cifar.sh`): every stage at tiny sizes (`--smoke`), so
that a call on a lent GPU cannot fail on a typo; its refusals before any work; the reproductions'
time check (`scripts/bench_repro.py`); and the results table on hand-built records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import gpu_smoke, run_gpu_script

ROOT = Path(__file__).resolve().parent.parent


def run_script(*args, env=None):
    return run_gpu_script("gpu_cifar.sh", *args, env=env)


@pytest.mark.slow  # over three minutes on a 2-core CPU: every stage compiled for a few steps
def test_gpu_cifar_smoke_runs_every_stage_and_brings_back_the_runs(tmp_path):
    out = tmp_path / "out"
    p, names, recs = gpu_smoke("gpu_cifar.sh", out)
    assert "gpu_cifar: 0 stage(s) failed, 0 skipped" in p.stdout
    assert set(recs) == {"masked", "masked-unroll8", "figure", "figure-unroll8", "lmc", "lmc-bf16", "inst-0", "inst-2",
                         "level0", "lmc-bf16-cmdbuf", "lmc-bf16-vmap"}
    assert recs["masked-unroll8"]["unroll"] == 8 and recs["masked"]["unroll"] == 1
    assert "train.unroll=8" in recs["figure-unroll8"]["overrides"]
    assert "train.dtype=bfloat16" in recs["lmc-bf16"]["overrides"]
    assert "+WHILE,+CONDITIONAL" in recs["lmc-bf16-cmdbuf"]["xla_flags"]
    inst0, inst2 = recs["inst-0"], recs["inst-2"]
    assert not inst0["skipped"] and [r["step"] for r in inst0["rows"]] == [0] and [r["step"] for r in inst2["rows"]] == [2]
    assert inst0["run_dir"] == inst2["run_dir"]  # one instability run, the points added to it
    assert inst0["member_steps"] == 2 * 6 and inst2["member_steps"] == 2 + 2 * 4
    assert recs["level0"]["rows"][0]["level"] == 0 and len(recs["level0"]["rows"][0]["test_accuracy"]) == 1
    assert any(n.endswith("instability.csv") for n in names) and any(n.endswith("results.csv") for n in names)
    assert any(n.endswith(".png") for n in names) and not any("checkpoints" in n for n in names)
    table = (out / "results.md").read_text()
    for heading in ("masked vs dense", "Preset lth_lenet_mnist", "Preset lmc_resnet20_cifar10", "Mixed precision, same run",
                    "CIFAR-10 reproductions", "Goals"):
        assert heading in table


@pytest.mark.parametrize("args,words", [(["--fast"], "unknown option --fast"),
                                        (["--deadline", "soon"], "--deadline soon"),
                                        (["--repro-dtype", "float16"], "--repro-dtype float16")])
def test_gpu_cifar_refuses_bad_options(args, words):
    p = run_script(*args)
    assert p.returncode == 2 and words in p.stderr


def test_gpu_cifar_refuses_to_start_without_the_data(tmp_path):
    out = tmp_path / "out"
    p = run_script(str(out), env={"LTH_DATA_DIR": str(tmp_path)})
    assert p.returncode == 2 and "cifar10/cifar10.npz is missing" in p.stderr and "gpu_stage_data.sh" in p.stderr
    assert not out.exists()


def test_a_reproduction_that_would_not_fit_is_skipped_with_its_time(tmp_path):
    """63,000-iteration copies at a measured 100 member-steps/s: 2 x 63,000 / 100 + 60 = 1,320 s."""
    rate = tmp_path / "lmc.json"
    rate.write_text(json.dumps({"replicates": 3, "rows": [{"level": 0, "steps": 2000, "wall_s": 999},
                                                          {"level": 1, "steps": 1500, "wall_s": 45.0}]}))
    rec = tmp_path / "inst.json"
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_repro.py"), "--kind", "instability",
                        "--preset", "lmc_resnet20_cifar10", "--left", "1000", "--rate-from", str(rate), "--json", str(rec),
                        "--keep", str(tmp_path / "runs"), "replicates=1", "instability.points=[0it]"],
                       cwd=ROOT, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "disabled"})
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(rec.read_text())
    assert r["skipped"] and r["member_steps"] == 2 * 63000 and r["rate_member_steps_per_s"] == pytest.approx(100.0)
    assert r["needs_s"] == pytest.approx(1320.0) and "skipped: needs about 1320 s" in p.stdout
    assert not (tmp_path / "runs").exists() or not os.listdir(tmp_path / "runs")


def _write(folder: Path, name: str, **rec):
    (folder / f"{name}.json").write_text(json.dumps({"device": "NVIDIA H100", "backend": "gpu", **rec}))


def _protocol(folder, name, seconds, acc, overrides=(), xla_flags=""):
    _write(folder, name, bench="protocol", preset="lmc_resnet20_cifar10", data="real cifar10", replicates=3,
           total_steps=2000, full_steps=63000, figure_levels=1, seconds_per_level=seconds, seconds_level0=seconds,
           figure_seconds=seconds, overrides=list(overrides), xla_flags=xla_flags,
           rows=[{"level": lv, "density": d, "steps": s, "wall_s": 10, "train_s": 9, "steps_per_s": sp, "wall_s_full": seconds,
                  "test_accuracy": a} for lv, d, s, sp, a in ((0, 1.0, 2000, 100, acc), (1, 0.8, 1500, 200, acc - 0.01))])


def test_gpu_report_compares_dtypes_and_states_every_reproduction(tmp_path):
    _protocol(tmp_path, "lmc", 575, 0.60)
    _protocol(tmp_path, "lmc-bf16", 290, 0.59, overrides=["train.duration=2000it", "train.dtype=bfloat16"])
    _protocol(tmp_path, "lmc-bf16-cmdbuf", 310, 0.59, overrides=["train.dtype=bfloat16"],
              xla_flags="--xla_cpu_x= --xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL")
    _write(tmp_path, "inst-0", bench="repro", kind="instability", preset="lmc_resnet20_cifar10", dtype="float32",
           overrides=["replicates=1", "instability.points=[0it]"], skipped=False, wall_s=300,
           rows=[{"point": "0it", "step": 0, "barrier_mean": 0.105, "stable": False, "replicates": 1,
                  "error_start": 0.085, "error_end": 0.083}])
    _write(tmp_path, "inst-2000", bench="repro", kind="instability", preset="lmc_resnet20_cifar10", dtype="float32",
           overrides=["instability.points=[2000it]"], skipped=True, needs_s=420, member_steps=124000,
           rate_member_steps_per_s=330, left_s=100, rows=[])
    _write(tmp_path, "level0", bench="repro", kind="lottery", preset="openlth_resnet20_cifar10", dtype="float32",
           overrides=["levels=0"], skipped=False, wall_s=200,
           rows=[{"level": 0, "density": 1.0, "test_accuracy": [0.9163], "test_accuracy_mean": 0.9163}])
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_report.py"), str(tmp_path)],
                       capture_output=True, text=True, check=True)
    t = p.stdout
    assert "Device: **NVIDIA H100**" in t
    assert "| 0 | 2000 | 100 | 100 | 1.00x | 60.00% | 59.00% |" in t  # float32 vs bfloat16, same run
    assert "k = 0it: barrier 10.50% (unstable), end errors 8.50% / 8.30%" in t
    assert "| inst-2000 |" in t and "skipped | needs ~7.0 min (124000 member-steps at 330/s), 100 s were left" in t
    assert "test accuracy 91.63% (vs OpenLTH's published dense ResNet-20 91.7%)" in t
    goals = t.split("**Goals**")[1]
    assert "| 9.6 min with 3 replicate(s) | NOT met |" in goals
    assert "| 4.8 min with 3 replicate(s), train.dtype=bfloat16 | met |" in goals
    assert "XLA_FLAGS=--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL | NOT met |" in goals
    assert "xla_cpu" not in goals
