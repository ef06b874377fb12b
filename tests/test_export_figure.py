"""The accuracy-against-time-and-bytes figure (issue 29, lth.export.levels_figure): every finished
level of the ticket and of its control is exported and timed, and the figure is written, from a
tiny neuron-pruned MLP run (the code path of a channel-pruned one)."""

import pytest
import os

import pandas as pd

from conftest import small_config
from lth.config.schema import PruningConfig
from lth.export import levels_figure
from lth.lottery import levels as lottery


@pytest.mark.slow  # ~37 s (every level of a run exported and timed)
def test_every_level_of_ticket_and_control_exported_and_drawn(tmp_path):
    cfg = small_config(tmp_path, levels=1, replicates=1, controls=["random_prune"],
                       pruning=PruningConfig(fraction=0.5, granularity="neuron"))
    src = lottery.run(cfg, echo=lambda _: None)
    points = levels_figure.export_levels(src.run_dir, repeats=1, runs_dir=str(tmp_path / "exports"), echo=lambda _: None)
    assert sorted(zip(points.kind, points.level)) == [("random_prune", 1), ("ticket", 0), ("ticket", 1)]
    lv = points.set_index(["kind", "level"])
    assert lv.loc[("ticket", 0), "density"] == 1.0 and lv.loc[("ticket", 1), "density"] < 0.6
    assert lv.loc[("ticket", 1), "bytes"] < lv.loc[("ticket", 0), "bytes"]  # the shrunk network is smaller
    assert (points.ms_per_256 > 0).all() and points.accuracy.between(0, 1).all()
    results = pd.read_csv(os.path.join(src.run_dir, "results.csv"))
    acc = results[(results.level == 1) & (results.kind == "ticket")].test_accuracy.iloc[0]
    assert abs(lv.loc[("ticket", 1), "accuracy"] - acc) < 1e-6  # the exported network's accuracy is the level's
    path = levels_figure.draw(points, str(tmp_path / "fig" / "a.png"), title="tiny")
    assert os.path.getsize(path) > 10_000
