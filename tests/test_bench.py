"""The GPU benchmark script end to end at tiny sizes (`scripts/gpu_bench.sh --smoke`), so that a
call on a lent GPU cannot fail on a typo, and the results table's verdicts on hand-built records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import gpu_smoke, run_gpu_script

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # two minutes on a 2-core CPU: every benchmark stage, compiled for a few steps
def test_gpu_bench_smoke_runs_every_stage_and_writes_the_table(tmp_path):
    out = tmp_path / "out"
    p, names, recs = gpu_smoke("gpu_bench.sh", out)
    assert "gpu_bench: 0 stage(s) failed" in p.stdout
    assert len(names) == len(recs)  # nothing but the records
    assert set(recs) == {"masked", "loop-precomputed-4", "pipeline", "figure", "lmc"}

    masked = recs["masked"]
    assert [r["replicates"] for r in masked["rows"]] == [1, 2] and masked["optimizer"] == "adam"
    assert all(r["masked_steps_per_s"] > 0 and r["dense_steps_per_s"] > 0 for r in masked["rows"])
    assert masked["rows"][0]["scaling"] == 1.0
    # in-loop gradual pruning, measured at the first R only: 20 steps, updates at steps 0 and 19
    assert masked["rows"][0]["gradual_steps_per_s"] > 0 and masked["rows"][0]["gradual_updates"] == 2
    assert "gradual_steps_per_s" not in masked["rows"][1]
    assert (recs["loop-precomputed-4"]["perms"], recs["loop-precomputed-4"]["unroll"]) == ("precomputed", 4)

    fig = recs["figure"]  # the LTH preset through the driver: level 0 dense, level 1 layer-wise 20% (head 10%)
    assert fig["preset"] == "lth_lenet_mnist" and fig["replicates"] == 2 and fig["total_steps"] == 20
    assert [r["level"] for r in fig["rows"]] == [0, 1]
    assert fig["rows"][0]["density"] == 1.0 and abs(fig["rows"][1]["density"] - (1 - (0.2 * 266000 + 0.1 * 1000) / 266200)) < 1e-3
    assert fig["figure_seconds"] == pytest.approx(fig["seconds_level0"] + 20 * fig["seconds_per_level"])
    # scaled from 20 to 50,000 steps per level (rewind to step 0)
    assert fig["rows"][1]["wall_s_full"] == pytest.approx(fig["rows"][1]["wall_s"] * 50000 / 20)
    lmc = recs["lmc"]  # ResNet-20, rewind to step 2 of 4: level 1 trains 2 steps, scaled to 62,998
    assert [r["steps"] for r in lmc["rows"]] == [4, 2] and lmc["rewind_step"] == 2
    assert lmc["seconds_per_level"] == pytest.approx(lmc["rows"][1]["wall_s"] * (63000 - 2) / 2)

    table = (out / "results.md").read_text()
    for heading in ("LeNet-300-100, masked vs dense", "The compiled loop", "ResNet-20 data pipeline",
                    "Preset lth_lenet_mnist", "Preset lmc_resnet20_cifar10", "Goals"):
        assert heading in table
    assert table.count("| met |") + table.count("| NOT met |") + table.count("| not measured |") == 5


def test_gpu_bench_refuses_an_unknown_option():
    p = run_gpu_script("gpu_bench.sh", "--fast")
    assert p.returncode == 2 and "unknown option --fast" in p.stderr


def _records(folder: Path, scaling: float, worst_masked: float, figure_s: float, lmc_s: float, pipe: float):
    def write(name, **rec):
        (folder / f"{name}.json").write_text(json.dumps({"device": "X", "backend": "gpu", **rec}))

    write("masked", data="d", optimizer="adam", batch_size=60, steps=10, rows=[
        {"replicates": r, "dense_steps_per_s": 1, "masked_steps_per_s": 1, "masked_over_dense": m,
         "replicate_steps_per_s": r, "scaling": s, "scaling_base_replicates": 1, "dense_tflops": 0, "masked_tflops": 0}
        for r, s, m in [(1, 1.0, 1.0), (8, scaling, worst_masked)]])
    write("pipeline", data="d", batch_size=128, rows=[
        {"replicates": 1, "fixed_images_per_s": 100, "pipeline_images_per_s": 100 * pipe, "pipeline_over_fixed": pipe}])
    for name, secs, reps in (("figure", figure_s, 5), ("lmc", lmc_s, 3)):
        write(name, preset=name, data="d", replicates=reps, total_steps=10, full_steps=10, figure_levels=21,
              seconds_per_level=secs, seconds_level0=secs, figure_seconds=secs,
              rows=[{"level": 0, "density": 1, "steps": 10, "wall_s": 1, "train_s": 1, "steps_per_s": 10, "wall_s_full": 1}])


@pytest.mark.parametrize("good", [True, False])
def test_gpu_report_judges_each_goal_by_its_threshold(tmp_path, good):
    if good:  # exactly at each threshold: met
        _records(tmp_path, scaling=6.0, worst_masked=0.95, figure_s=600, lmc_s=300, pipe=0.9)
    else:  # just past each threshold
        _records(tmp_path, scaling=5.99, worst_masked=0.949, figure_s=601, lmc_s=301, pipe=0.899)
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_report.py"), str(tmp_path)],
                       capture_output=True, text=True, check=True)
    goals = p.stdout.split("**Goals**")[1]
    assert goals.count("| met |") == (5 if good else 0) and goals.count("| NOT met |") == (0 if good else 5)
