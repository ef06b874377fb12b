"""The Python API (`lth.api`): running from Python, loading runs back, many runs as one table,
trimmed copies of runs."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

import lth
from lth import api
from lth.config.schema import ConfigError, TrainConfig, to_dict

from conftest import small_config


def _tiny(tmp_path):
    return small_config(tmp_path, levels=1, controls=["reinit"],
                        train=TrainConfig(duration="60it", batch_size=100, eval_every="20it"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Two levels (0, 1) of a tiny MNIST-1D run with a reinit control, run through `lth.run`."""
    cfg = _tiny(tmp_path_factory.mktemp("api"))
    lines = []
    return cfg, lth.run(cfg, echo=lines.append), lines


def test_run_from_python_returns_the_loaded_run(tiny_run):
    cfg, run, lines = tiny_run
    assert isinstance(run, lth.Run) and run[0] is run.results
    assert run._fields == ("results", "history", "config", "summary", "path", "instability", "curves")
    assert os.path.isfile(os.path.join(run.path, "results.csv")) and lines[0].startswith("run ")
    assert set(run.results.kind) == {"ticket", "reinit"} and sorted(set(run.results.level)) == [0, 1]
    assert run.config["controls"] == ["reinit"] and run.summary["hash"] in run.path
    assert run.instability is None and run.curves is None


def test_run_asks_for_the_reports(tmp_path, monkeypatch):
    """`lth.run` hands the level loop and the instability analysis their W&B reports
    (`lth.analysis.reports`): the loops themselves import no figures or metrics (issue 26)."""
    from lth.analysis import instability, reports
    from lth.lottery import levels

    asked = []

    def stop(cfg, **kw):
        asked.append(kw.get("reports"))
        raise RuntimeError("stop")

    monkeypatch.setattr(levels, "run", stop)
    monkeypatch.setattr(instability, "run", stop)
    for experiment in ("auto", "instability"):
        with pytest.raises(RuntimeError, match="stop"):
            lth.run(_tiny(tmp_path), experiment=experiment, echo=lambda _: None)
    assert asked == [reports.lottery, reports.instability]


def test_a_dict_of_settings_is_the_same_config(tiny_run, tmp_path):
    """The same settings as a nested dict with dotted keys find the same run directory (finished
    levels skipped, nothing trained); a misspelt key or a bad value is refused."""
    cfg, run, _ = tiny_run
    settings = to_dict(cfg)
    train = settings.pop("train")
    settings.update({"train.duration": train["duration"], "train.eval_every": train["eval_every"],
                     "train.batch_size": train["batch_size"]})
    lines = []
    again = lth.run(settings, echo=lines.append)
    assert again.path == run.path and any("done already" in line for line in lines)
    pd.testing.assert_frame_equal(again.results, run.results)
    with pytest.raises(ConfigError, match="prunning"):
        lth.run({"prunning": {"fraction": 0.5}})
    with pytest.raises(ConfigError, match="pruning.fraction"):
        lth.run({"pruning.fraction": 1.5, "paths.runs_dir": str(tmp_path)})
    assert not os.listdir(tmp_path)


def test_load_run_round_trip_and_the_member_mapping(tiny_run):
    """results equal results.csv; the history has one row per level x member x evaluation, and
    each member's last evaluation is its row of results.csv (tickets and controls kept apart)."""
    _, run, _ = tiny_run
    loaded = lth.load_run(run.path)
    pd.testing.assert_frame_equal(loaded.results, pd.read_csv(os.path.join(run.path, "results.csv")))
    h = loaded.history
    assert list(h.columns[:4]) == ["level", "kind", "replicate", "step"]
    assert {"test_accuracy", "test_loss", "val_accuracy", "val_loss"} <= set(h.columns)
    expected = 0
    for level, kind, f in api.result_files(run.path):
        with open(f) as fh:
            result = json.load(fh)
        expected += len(result["rows"]) * len(result["history"]["eval_steps"])
    assert len(h) == expected == 2 * 3 + 2 * 2 * 2  # level 0: 3 evaluations; level 1 (from step 20): 2, two kinds
    last = h.sort_values("step").groupby(["level", "kind", "replicate"]).last()
    for _, row in loaded.results.iterrows():
        got = last.loc[(row.level, row.kind, row.replicate)]
        assert got.test_accuracy == pytest.approx(row.test_accuracy, abs=1e-7)
        assert got.val_loss == pytest.approx(row.val_loss, abs=1e-7)
    # the reinit control is trained beside the tickets, on other weights: its history differs
    t = h[(h.level == 1) & (h.kind == "ticket")].test_loss.to_numpy()
    c = h[(h.level == 1) & (h.kind == "reinit")].test_loss.to_numpy()
    assert len(t) == len(c) and (t != c).any()


def test_export_tables_round_trip(tiny_run, tmp_path):
    _, run, _ = tiny_run
    out = api.export_tables(run.path, tmp_path / "trimmed")
    assert sorted(os.listdir(out)) == ["config.yaml", "history.csv", "results.csv", "summary.json"]
    back = lth.load_run(out)
    pd.testing.assert_frame_equal(back.results, run.results)
    assert back.config == run.config and back.summary == run.summary
    pd.testing.assert_frame_equal(back.history, run.history.round(5), check_dtype=False)
    only1 = lth.load_run(api.export_tables(run.path, tmp_path / "level1", history_levels=[1]))
    assert set(only1.history.level) == {1} and len(only1.results) == len(run.results)


def test_load_runs_puts_settings_beside_the_results(tiny_run, tmp_path):
    _, run, _ = tiny_run
    a = api.export_tables(run.path, tmp_path / "a")
    b = api.export_tables(run.path, tmp_path / "b")
    with open(os.path.join(b, "config.yaml")) as f:
        cfg = yaml.safe_load(f)
    cfg["pruning"]["fraction"], cfg["seed"] = 0.5, 7
    with open(os.path.join(b, "config.yaml"), "w") as f:
        yaml.safe_dump(cfg, f)
    df = lth.load_runs([a, b])
    assert len(df) == 2 * len(run.results) and set(df.run) == {"a", "b"}
    for col in ("pruning.fraction", "rewind.mode", "seed", "model.name", "model.widths", "controls"):
        assert col in df.columns
    assert df[df.run == "b"]["pruning.fraction"].eq(0.5).all() and df[df.run == "a"]["seed"].eq(0).all()
    assert df["model.widths"].iloc[0] == "[64, 64]" and df["controls"].iloc[0] == '["reinit"]'
    assert api.varying_settings(df) == ["seed", "pruning.fraction"]
    assert lth.varying_settings(df.copy()) == ["seed", "pruning.fraction"]
    by_glob = lth.load_runs(str(tmp_path / "*"))  # a glob, and a folder holding runs
    assert len(by_glob) == len(df) and len(lth.load_runs(str(tmp_path))) == len(df)
    res, hist = lth.load_runs([a, b], history=True)
    assert len(hist) == 2 * len(run.history) and hist.groupby("run")["pruning.fraction"].first().to_dict() == {"a": 0.2, "b": 0.5}


def test_not_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: not a run directory.*results.csv"):
        lth.load_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        lth.load_run(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="matches no path"):
        lth.load_runs(str(tmp_path / "*"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no run directories"):
        lth.load_runs(str(tmp_path / "*"))
    with pytest.raises(FileNotFoundError, match="neither a run directory"):
        lth.load_runs([tmp_path / "empty"])


def test_import_lth_does_not_import_jax():
    code = "import sys, lth; lth.load_run; lth.load_runs; lth.ticket_metrics; assert 'jax' not in sys.modules, 'jax imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_branch_from_python_starts_from_its_source(tiny_run):
    """`branch.source` in a dict: the source's config with the dict's changes, beside the source; the
    branch's history is loaded like a lottery level's."""
    _, run, _ = tiny_run
    b = lth.run({"branch": {"source": run.path, "levels": [1]}, "seed": 3}, echo=lambda line: None)
    assert os.path.dirname(b.path) == os.path.dirname(run.path) and os.path.basename(b.path).startswith("branch-")
    assert b.config["seed"] == 3 and b.config["controls"] == ["reinit"] and b.config["model"]["widths"] == [64, 64]
    assert set(b.results.kind) == {"branch"} and set(b.history.kind) == {"branch"}
    assert len(b.history) == 2 * 2  # two replicates, two evaluations (steps 40 and 60)
    last = b.history[b.history.step == 60].set_index("replicate")
    assert last.test_accuracy.tolist() == pytest.approx(b.results.sort_values("replicate").test_accuracy.tolist(), abs=1e-7)
    # its ticket metrics: no dense level to judge it by; its masks on disk are the source's level-1 masks
    m = lth.ticket_metrics(b)
    assert m["levels"].kind.tolist() == ["branch"] and m["levels"].matching.isna().all()
    ov = m["overlap"].iloc[0]
    src = lth.ticket_metrics(run)["overlap"].set_index(["level", "kind"]).loc[(1, "ticket")]
    assert ov.jaccard_replicates == pytest.approx(src.jaccard_replicates) and pd.isna(ov.jaccard_ticket)


def test_an_instability_analysis_loads_with_its_tables(tmp_path):
    """An instability directory (`lth.analysis.instability`: instability.csv and curves.csv, no levels) is a
    run to load_run: no results rows, its two tables; a trimmed copy keeps them."""
    d = tmp_path / "lmc-mlp-mnist1d-0"
    d.mkdir()
    table = pd.DataFrame({"point": ["0it", "20it"], "step": [0, 20], "replicate": [0, 0], "barrier": [0.1, 0.02]})
    curves = pd.DataFrame({"point": ["0it"] * 3, "step": [0] * 3, "replicate": [0] * 3, "alpha": [0, 0.5, 1.0],
                           "test_error": [0.2, 0.3, 0.2]})
    table.to_csv(d / "instability.csv", index=False)
    curves.to_csv(d / "curves.csv", index=False)
    (d / "config.yaml").write_text(yaml.safe_dump(to_dict(small_config(tmp_path))))
    r = lth.load_run(d)
    assert r.results.empty and "test_accuracy" in r.results.columns and r.history.empty
    pd.testing.assert_frame_equal(r.instability, table)
    pd.testing.assert_frame_equal(r.curves, curves)
    back = lth.load_run(api.export_tables(d, tmp_path / "trimmed"))
    pd.testing.assert_frame_equal(back.instability, table)
    with pytest.raises(ConfigError, match="experiment='lmc'"):
        lth.run({}, experiment="lmc")
