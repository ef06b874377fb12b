"""Ticket metrics (`lth.analysis.metrics`): known answers on a hand-made results table and hand-made masks,
then a tiny run end to end: mask overlap from its checkpoints, scripts/ticket_report.py, and the
metrics in the W&B summary run."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import lth
from lth import api
from lth.analysis import metrics
from lth.config.schema import TrainConfig

from conftest import small_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# level: (density, ticket test acc, es step, es acc (per replicate), random_prune test acc, es acc)
TABLE = {
    0: (1.0, [0.90, 0.92], [400, 600], [0.89, 0.91], None, None),
    1: (0.5, [0.905, 0.905], [200, 300], [0.90, 0.91], [0.89, 0.90], [0.88, 0.88]),
    2: (0.25, [0.91, 0.93], [450, 450], [0.91, 0.91], [0.905, 0.905], [0.90, 0.90]),
    3: (0.125, [0.85, 0.87], [100, 100], [0.86, 0.86], [0.80, 0.80], [0.80, 0.80]),
}


def synthetic(val: bool = True) -> pd.DataFrame:
    rows = []
    for level, (d, acc, es, es_acc, c_acc, c_es_acc) in TABLE.items():
        for r in range(2):
            base = {"level": level, "replicate": r, "density": d, "flops": 1000 * d, "flops_fraction": d}
            rows.append({**base, "kind": "ticket", "test_accuracy": acc[r], "early_stop_step": es[r] if val else np.nan,
                         "early_stop_test_accuracy": es_acc[r] if val else np.nan})
            if c_acc:
                rows.append({**base, "kind": "random_prune", "test_accuracy": c_acc[r], "early_stop_step": 500 if val else np.nan,
                             "early_stop_test_accuracy": c_es_acc[r] if val else np.nan})
    return pd.DataFrame(rows)


def test_levels_on_a_hand_made_table():
    lv = metrics.level_metrics(synthetic(), prunable_weights=1000)
    assert list(zip(lv.level, lv.kind)) == [(0, "ticket"), (1, "ticket"), (1, "random_prune"), (2, "ticket"),
                                           (2, "random_prune"), (3, "ticket"), (3, "random_prune")]
    t = lv[lv.kind == "ticket"].set_index("level")
    c = lv[lv.kind == "random_prune"].set_index("level")
    assert t.remaining_weights.tolist() == [1000, 500, 250, 125]
    assert t.loc[0, "test_acc"] == pytest.approx(0.91) and t.loc[0, "test_acc_std"] == pytest.approx(0.01)  # population std
    assert t.loc[0, "test_acc_min"] == pytest.approx(0.90) and t.loc[0, "test_acc_max"] == pytest.approx(0.92)
    assert t.speedup.tolist() == pytest.approx([1.0, 2.0, 500 / 450, 5.0])  # dense early stop: mean 500
    assert c.speedup.tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert t.matching.tolist()[1:] == [True, True, False] and pd.isna(t.loc[0, "matching"])
    assert t.winning.tolist()[1:] == [True, True, False]
    assert c.matching.tolist() == [False, True, False]  # controls are judged against the dense ticket
    assert c.gap.tolist() == pytest.approx([0.01, 0.015, 0.06])  # ticket - control, paired by replicate
    assert c.gap_std.tolist() == pytest.approx([0.005, 0.01, 0.01])
    assert c.es_gap.tolist() == pytest.approx([0.025, 0.01, 0.06])
    assert c.es_margin.tolist() == pytest.approx([0.005, 0.0, 0.0])  # larger early-stop std of the two sides
    assert c.ticket_beats.tolist() == [True, True, True] and t.gap.isna().all()
    assert t.flops_fraction.tolist() == [1.0, 0.5, 0.25, 0.125]

    h = metrics.headline({"levels": lv})
    assert (h["sparsest_matching_level"], h["sparsest_matching_density"]) == (2, 0.25)
    assert (h["sparsest_winning_level"], h["sparsest_winning_density"]) == (2, 0.25)
    assert h["sparsest_matching_test_accuracy"] == pytest.approx(0.92)
    assert (h["random_prune_sparsest_matching_level"], h["dense_early_stop_step"], h["last_level"]) == (2, 500, 3)


def test_without_validation_data_there_is_no_speedup_and_no_winner():
    lv = metrics.level_metrics(synthetic(val=False))
    assert lv.speedup.isna().all() and lv.winning.isna().all() and lv.remaining_weights.isna().all()
    h = metrics.headline({"levels": lv})
    assert h["sparsest_winning_level"] is None and h["sparsest_matching_level"] == 2
    assert "winning ticket: none" in metrics.format_headline(h)


def test_jaccard_on_hand_made_masks():
    a, b = np.array([1, 1, 1, 0], bool), np.array([0, 1, 1, 1], bool)
    assert metrics.jaccard(a, b) == 0.5 and metrics.jaccard(a, a) == 1.0
    assert np.isnan(metrics.jaccard(np.zeros(3, bool), np.zeros(3, bool)))
    ma = {"fc1": {"kernel": a.reshape(2, 2), "bias": np.ones(2, bool)}, "head": {"kernel": np.array([True, False])}}
    mb = {"fc1": {"kernel": b.reshape(2, 2), "bias": np.ones(2, bool)}, "head": {"kernel": np.array([False, False])}}
    assert metrics.jaccard(ma, mb, paths=["fc1/kernel"]) == 0.5
    assert metrics.jaccard(ma, mb, paths=["fc1/kernel", "head/kernel"]) == 2 / 5
    assert metrics.jaccard(ma, mb) == 4 / 7  # every leaf, the biases too
    # two independent random masks of density 1/2: E|A∩B| = n/4, E|A∪B| = 3n/4
    assert metrics.random_jaccard({"w": 0.5}, {"w": 0.5}, {"w": 10}) == pytest.approx(1 / 3)
    rng = np.random.default_rng(0)
    x, y = rng.permutation(np.arange(10_000) < 3000), rng.permutation(np.arange(10_000) < 3000)
    assert metrics.jaccard(x, y) == pytest.approx(metrics.random_jaccard({"w": 0.3}, {"w": 0.3}, {"w": 10_000}), abs=0.01)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Levels 0..2 of a tiny MNIST-1D run with a reinit control, logged to W&B offline."""
    cfg = small_config(tmp_path_factory.mktemp("metrics"), levels=2, controls=["reinit"],
                       train=TrainConfig(duration="60it", batch_size=100, eval_every="20it"))
    cfg.logger.wandb.mode = "offline"
    return lth.run(cfg, echo=lambda line: None)


def test_metrics_of_a_run_with_masks_on_disk(tiny_run, tmp_path):
    m = lth.ticket_metrics(tiny_run)
    lv, ov, tens = m["levels"], m["overlap"].set_index(["level", "kind"]), m["tensors"]
    prunable = tiny_run.summary["parameters"]["prunable_weights"]
    t = lv[lv.kind == "ticket"].set_index("level")
    assert t.remaining_weights.tolist() == pytest.approx((t.density * prunable).round().tolist())
    # nested IMP masks: J(level L, level L-1) = density ratio; the reinit control keeps the ticket's mask
    for level in (1, 2):
        assert ov.loc[(level, "ticket"), "jaccard_previous"] == pytest.approx(t.loc[level, "density"] / t.loc[level - 1, "density"])
        assert ov.loc[(level, "reinit"), "jaccard_ticket"] == 1.0
    assert ov.loc[(0, "ticket"), "jaccard_replicates"] == 1.0
    assert 0 < ov.loc[(2, "ticket"), "jaccard_replicates_random"] < ov.loc[(1, "ticket"), "jaccard_replicates_random"] < 1
    assert set(tens.kind) == {"ticket", "reinit"} and set(tens.tensor) == {"fc1/kernel", "fc2/kernel", "head/kernel"}
    # a trimmed copy has no masks: the same levels, overlap NaN
    trimmed = metrics.ticket_metrics(api.export_tables(tiny_run.path, tmp_path / "trimmed"))
    pd.testing.assert_frame_equal(trimmed["levels"], lv)
    assert trimmed["overlap"].drop(columns=["level", "kind"]).isna().all().all()


def test_ticket_report_prints_the_tables(tiny_run, tmp_path):
    script = os.path.join(REPO, "scripts", "ticket_report.py")
    p = subprocess.run([sys.executable, script, tiny_run.path, "--csv", str(tmp_path / "csv")], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    for text in ("sparsest matching level", "per level and kind", "mask overlap", "reinit", "speed-up"):
        assert text in p.stdout
    assert sorted(os.listdir(tmp_path / "csv")) == ["headline.json", "levels.csv", "overlap.csv", "tensors.csv"]
    bad = subprocess.run([sys.executable, script, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "not a run directory" in bad.stderr and "Traceback" not in bad.stderr


def test_metrics_reach_the_wandb_summary_run(tiny_run):
    from test_lottery import wandb_records

    files = glob.glob(os.path.join(tiny_run.path, "wandb", "offline-run-*", "*.wandb"))
    for f in files:
        recs = wandb_records(f)
        if next(r["run"] for r in recs if r["type"] == "run")["display_name"].endswith("-summary"):
            break
    else:
        pytest.fail("no summary run")
    summary = {}
    for r in recs:
        if r["type"] == "summary":
            summary.update(r["summary"]["update"])
    h = metrics.headline(tiny_run)
    assert summary["sparsest_density"] == pytest.approx(h["sparsest_density"])
    for key in ("dense_test_accuracy", "sparsest_matching_level", "sparsest_winning_level"):
        assert (summary.get(key) is None) == (h[key] is None) and (h[key] is None or summary[key] == pytest.approx(h[key]))
    tables = glob.glob(os.path.join(os.path.dirname(f), "files", "media", "table", "metrics", "*.table.json"))
    assert sorted(os.path.basename(t).split("_")[0] for t in tables) == ["levels", "overlap", "tensors"]
    with open(next(t for t in tables if os.path.basename(t).startswith("levels"))) as fh:
        table = json.load(fh)
    assert "speedup" in table["columns"] and len(table["data"]) == 3 + 2  # levels 0..2 of tickets, 1..2 of reinit


def test_ticket_report_on_an_interrupted_run_says_it_is_in_progress(tmp_path):
    """A run stopped before its first level finished (config.yaml, its lock file, a partial level_00/,
    no results.csv): re-running the command resumes it, and the report says so."""
    run = tmp_path / "mlp-mnist1d-0123456789ab"
    (run / "level_00" / "final.tmp").mkdir(parents=True)
    (run / "config.yaml").write_text("model:\n  name: mlp\n")
    (run / ".lock").write_text("")
    p = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "ticket_report.py"), str(run)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"{run}: in progress: re-run the command to resume" in p.stderr and "not a run directory" not in p.stderr
    with pytest.raises(FileNotFoundError, match="in progress: re-run the command to resume"):
        lth.load_run(run)
    hydra = tmp_path / "0" / ".hydra"  # a Hydra job folder's config.yaml is no run
    hydra.mkdir(parents=True)
    (hydra / "config.yaml").write_text("levels: 1\n")
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        lth.load_run(hydra)
