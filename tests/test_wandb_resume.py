"""W&B records that survive a resume (issue 27, point 1), read back from the offline run folders: a
level interrupted and resumed continues its own W&B run (same id, its history without repeated or
missing steps), a re-run that trains nothing records nothing, and the summary run is continued (same
id, its history going on) when a run is extended (`lth.integrations.wandb_ids`)."""

import glob
import re
import os
import time

import pytest

from conftest import stop_at_first_checkpoint, small_config
from test_lottery import wandb_records


def _folders(run_dir: str) -> list[str]:
    """The offline run folders under a run directory, oldest first (their names start with the time)."""
    return sorted(glob.glob(os.path.join(run_dir, "wandb", "offline-run-*")))


def _id(folder: str) -> str:
    return os.path.basename(folder).split("-", 3)[-1]  # offline-run-<date>_<time>-<id>


def _steps(folder: str) -> list[int]:
    (log,) = glob.glob(os.path.join(folder, "*.wandb"))
    return [r["history"]["item"]["_step"] for r in wandb_records(log) if r["type"] == "history"]


def _config(tmp_path, name: str, **changes):
    cfg = small_config(tmp_path, **changes)
    cfg.logger.wandb.mode = "offline"
    cfg.paths.runs_dir = str(tmp_path / name)
    return cfg


def test_a_level_interrupted_and_resumed_continues_its_own_wandb_run(tmp_path):
    """Level 0 stopped (as by SIGTERM) after its first checkpoint, then resumed: as many distinct W&B
    run ids as an uninterrupted run, and level 0's two offline folders (one id) hold the steps of the
    uninterrupted level 0 exactly once each, in order."""
    from lth.lottery import levels as lottery

    def cfg(name):
        c = _config(tmp_path, name, levels=1, replicates=1)
        c.train.duration, c.train.eval_every, c.checkpoint.min_seconds = "300it", "20it", 0.0
        return c

    clean = lottery.run(cfg("clean"), echo=lambda s: None).run_dir

    e = stop_at_first_checkpoint(f"{tmp_path}/cut", lambda: lottery.run(cfg("cut"), echo=lambda s: None))
    assert re.search(r"at level 0, step \d+ of 300", str(e)), e
    time.sleep(1.1)  # offline folders are named by the second: the resumed one gets a name of its own
    said = []
    cut = lottery.run(cfg("cut"), echo=said.append).run_dir
    assert any("level 0: resuming from the checkpoint at step" in line for line in said)

    ids = lambda rd: sorted({_id(f) for f in _folders(rd)})  # noqa: E731
    assert len(ids(cut)) == len(ids(clean)) == 3, (ids(cut), ids(clean))  # L00, L01, summary
    assert [i.split("-", 2)[-1] for i in ids(cut)] == ["L00", "L01", "summary"]
    level0 = [f for f in _folders(cut) if _id(f).endswith("-L00")]
    assert len(level0) == 2 and len(_folders(cut)) == len(_folders(clean)) + 1
    before, after = (_steps(f) for f in level0)
    want = _steps(next(f for f in _folders(clean) if _id(f).endswith("-L00")))
    assert want == sorted(set(want)) and want[-1] == 300
    assert before and after and before[-1] < after[0]
    assert before + after == want  # no step repeated, none missing


def test_a_rerun_that_trains_nothing_records_nothing(tmp_path):
    from lth.lottery import levels as lottery

    cfg = _config(tmp_path, "runs", levels=0, replicates=1)
    rd = lottery.run(cfg, echo=lambda s: None).run_dir
    first = _folders(rd)
    assert len(first) == 2  # level 0 and the summary
    time.sleep(1.1)
    said = []
    lottery.run(cfg, echo=said.append)
    assert any("done already" in line for line in said)
    assert _folders(rd) == first


def test_the_summary_run_is_continued_when_a_run_is_extended(tmp_path):
    """levels=0, then levels=1 (one more level trained): the summary run keeps its id, and its
    history goes on after the first invocation's last step; level 0 is not recorded again."""
    from lth.lottery import levels as lottery

    rd = lottery.run(_config(tmp_path, "runs", levels=0, replicates=1), echo=lambda s: None).run_dir
    time.sleep(1.1)
    lottery.run(_config(tmp_path, "runs", levels=1, replicates=1), echo=lambda s: None)
    folders = _folders(rd)
    summary = [f for f in folders if _id(f).endswith("-summary")]
    assert len(summary) == 2 and len({_id(f) for f in summary}) == 1
    one, two = (_steps(f) for f in summary)
    assert one == list(range(len(one))) and two == list(range(len(one), len(one) + len(two)))
    assert sorted(_id(f).split("-", 2)[-1] for f in folders) == ["L00", "L01", "summary", "summary"]


def test_level_ids():
    from lth.integrations.wandb_ids import level_id

    assert level_id("lth-abc", 3) == "lth-abc-L03"
    assert level_id("lth-abc", 1, [("ticket", 2), ("reinit", 2)], [0, 0]) == "lth-abc-L01"
    assert level_id("lth-abc", 1, [("ticket", 2), ("reinit", 2)], [2, 2]) == "lth-abc-L01-ticket2-reinit2"
    assert level_id("lth-abc", 1, [("reinit", 2)], [0]) == "lth-abc-L01-reinit0"  # a control added later
    with pytest.raises(ValueError, match="firsts"):
        level_id("lth-abc", 1, [("ticket", 2)], [0, 1])
