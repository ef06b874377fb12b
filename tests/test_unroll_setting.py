"""`train.unroll` (issue 32): training steps per iteration of the compiled loop, a speed setting.
It reaches the trainer, gives the same results bit for bit, names the same run directory as the
default (it is not hashed), and a bad value is refused before anything is written."""

import os

import numpy as np
import pytest

import lth
from lth.config.schema import ConfigError, TrainConfig

from conftest import small_config


def _cfg(tmp_path, unroll):
    return small_config(tmp_path, levels=1, replicates=1,
                        train=TrainConfig(duration="40it", batch_size=100, eval_every="20it", unroll=unroll))


def test_unroll_reaches_the_trainer(tmp_path):
    from lth.lottery.plan import prepare
    from lth.config.schema import resolve

    _, _, trainer = prepare(resolve(_cfg(tmp_path, 4)))
    assert trainer.unroll == 4


def test_unrolled_run_is_the_same_run_with_the_same_results(tmp_path):
    """unroll=4 writes into the directory of unroll=1 (same hash) and trains to identical numbers:
    run it in a second runs folder and compare the tables."""
    runs = {}
    for u in (1, 4):
        cfg = _cfg(tmp_path / f"u{u}", u)
        runs[u] = lth.run(cfg, echo=lambda _: None)
    assert os.path.basename(runs[1].path) == os.path.basename(runs[4].path)
    a, b = runs[1].results, runs[4].results
    np.testing.assert_array_equal(a["test_accuracy"].to_numpy(), b["test_accuracy"].to_numpy())
    np.testing.assert_array_equal(a["test_loss"].to_numpy(), b["test_loss"].to_numpy())


@pytest.mark.parametrize("bad", [0, -2, 1.5, "fast"])
def test_bad_unroll_is_refused_naming_the_setting(tmp_path, bad):
    cfg = _cfg(tmp_path, 1)
    cfg.train.unroll = bad
    with pytest.raises(ConfigError, match=r"train\.unroll=.*must be an integer >= 1"):
        lth.run(cfg, echo=lambda _: None)
    assert not os.path.exists(tmp_path / "runs")
