"""`scripts/compare_dtype.py` (float32 against bfloat16 on one config, issue 32) at tiny sizes, so
that its call on a lent GPU cannot fail on a typo: both dtypes, every level, the table and the JSON
record; and `--synthetic` (random data of the dataset's shape, as `bench_protocol.py`'s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # a script's smoke test, as tests/test_bench.py's and test_gpu_cifar.py's
def test_compare_dtype_smoke_trains_both_dtypes_and_writes_the_table(tmp_path):
    out = tmp_path / "dtype.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare_dtype.py"), "--synthetic", "--synthetic-sizes", "400",
                        "100", "--json", str(out), "model=mlp", "model.widths=[16]", "dataset.val_size=100", "levels=1",
                        "replicates=2", "train.duration=10it", "train.eval_every=5it", "rewind.point=0it"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "random mnist1d-shaped data (300 train / 100 val / 100 test)" in p.stdout
    assert "| dtype | level | steps | steps/s |" in p.stdout and "bfloat16 / float32 at level 1:" in p.stdout
    record = json.loads(out.read_text())
    assert record["bench"] == "compare_dtype"
    rows = record["rows"]
    assert [(r["dtype"], r["level"]) for r in rows] == [("float32", 0), ("float32", 1), ("bfloat16", 0), ("bfloat16", 1)]
    for r in rows:
        assert r["steps"] == 10 and r["steps_per_s"] > 0 and len(r["test_accuracy"]) == 2
        assert abs(r["mean_test_accuracy"] - sum(r["test_accuracy"]) / 2) < 1e-9
        assert f"| {r['dtype']} | {r['level']} | 10 |" in p.stdout
