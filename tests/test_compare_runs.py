"""scripts/compare_runs.py: tables across runs, by level or by density."""

from __future__ import annotations

import os
import sys

import pandas as pd
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import compare_runs  # noqa: E402


def _run(root, name, config, rows):
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    pd.DataFrame(rows).to_csv(d / "results.csv", index=False)
    return str(d)


def _rows(level, density, accs, kind="ticket"):
    return [{"level": level, "replicate": r, "kind": kind, "density": density, "test_accuracy": a} for r, a in enumerate(accs)]


def test_density_rows_merge_levels_oneshot_and_gradual_runs(tmp_path, capsys):
    imp = _run(tmp_path, "imp", {"pruning": {"method": "magnitude", "schedule": "iterative"}},
               _rows(0, 1.0, [0.6, 0.62]) + _rows(1, 0.5, [0.7, 0.72]) + _rows(2, 0.25, [0.5, 0.5]))
    one = _run(tmp_path, "one", {"pruning": {"method": "magnitude", "schedule": "oneshot"}},
               _rows(0, 1.0, [0.6, 0.62]) + _rows(1, 0.25, [0.4, 0.44]) + _rows(1, 0.25, [0.1, 0.1], kind="reinit"))
    grad = _run(tmp_path, "grad", {"pruning": {"method": "magnitude", "schedule": "gradual"}}, _rows(0, 0.5, [0.8, 0.8]))
    t = compare_runs.table([imp, one, grad], "pruning.method,pruning.schedule", "test_accuracy", None, rows="density")
    assert list(t.index) == ["100", "50", "25"]
    assert t.loc["25", "magnitude/oneshot"] == "42.00 ± 2.00"  # tickets only, not the control
    assert t.loc["25", "magnitude/iterative"] == "50.00 ± 0.00"
    assert t.loc["50", "magnitude/gradual"] == "80.00 ± 0.00" and t.loc["100", "magnitude/gradual"] == "-"
    assert compare_runs.main(["--rows", "density", "--by", "pruning.schedule", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| density % | gradual | iterative | oneshot |" in out


def test_density_rows_put_runs_of_one_label_in_one_column_unless_they_collide(tmp_path):
    a = _run(tmp_path, "a", {"pruning": {"schedule": "oneshot"}}, _rows(0, 1.0, [0.6]) + _rows(1, 0.5, [0.7]))
    b = _run(tmp_path, "b", {"pruning": {"schedule": "oneshot"}}, _rows(0, 1.0, [0.6]) + _rows(1, 17188 / 275000, [0.5]))
    c = _run(tmp_path, "c", {"pruning": {"schedule": "oneshot"}}, _rows(0, 1.0, [0.6]) + _rows(1, 17187 / 275000, [0.3]))
    t = compare_runs.table([a, b, c], "pruning.schedule", "test_accuracy", None, rows="density")
    assert list(t.columns) == ["oneshot", "oneshot#2"]
    assert list(t.index) == ["100", "50", "6.25"]  # 6.2498% and 6.2502%: one row
    assert (t.loc["50", "oneshot"], t.loc["6.25", "oneshot"], t.loc["6.25", "oneshot#2"]) == \
        ("70.00 ± 0.00", "50.00 ± 0.00", "30.00 ± 0.00")
