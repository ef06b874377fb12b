"""`dataset.stream=true` (issue 30, lth.data.stream, lth.train.streamed): the training set read
from disk per step gives exactly the in-memory results; the prepared copy round-trips, an
interrupted preparation is never used, a streamed level resumes exactly, bad settings are refused."""

import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pytest

from conftest import small_config, stop_at_first_checkpoint


def _results(cfg):
    from lth.lottery import levels as lottery

    return lottery.run(cfg, echo=lambda s: None).results.drop(columns=["seconds"]).reset_index(drop=True)


def _streamed(cfg, stream_dir, runs_dir):
    d = dataclasses.replace(cfg.dataset, stream=True, stream_dir=str(stream_dir))
    return dataclasses.replace(cfg, dataset=d, paths=dataclasses.replace(cfg.paths, runs_dir=str(runs_dir)))


def test_streamed_mlp_run_equals_in_memory(tmp_path):
    """An MLP (the scanned, vmapped path in memory) on MNIST-1D, 2 levels x 2 replicates with a
    partial last batch per epoch: results.csv is equal, and nothing is cached under the runs."""
    from lth.config.schema import TrainConfig

    cfg = small_config(tmp_path, train=TrainConfig(duration="60it", batch_size=128, eval_every="20it", drop_last=False))
    mem = _results(cfg)
    got = _results(_streamed(cfg, tmp_path / "stream", tmp_path / "runs_stream"))
    pd.testing.assert_frame_equal(mem, got)
    assert os.path.isfile(next((tmp_path / "stream").glob("mnist1d-*/meta.json")))
