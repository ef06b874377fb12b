"""Temporary files that a run's writers leave when killed mid-write are removed when the run
(re)starts and holds its lock (`lth.runs.stale`, `RunDir.lock`): only the names those writers
produce, only inside the run's own directory (no link followed), and never while another process
holds the lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import small_config

REPO = Path(__file__).resolve().parent.parent

# write_atomic killed between writing its temporary file and renaming it (a real SIGKILL, so the
# temporary's name is the one the writer makes).
_KILLED_WRITE = """
import os, signal, sys
from lth.runs import run_dir
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
run_dir.write_atomic(sys.argv[1], "half")
"""

_HOLD = """
import sys, time
from lth.runs.run_dir import RunDir
lock = RunDir(sys.argv[1], "x").lock()
print("held", flush=True)
time.sleep(600)
"""


def _files(folder) -> set[str]:
    """Every path under `folder` (links not followed), relative to it."""
    out = set()
    for root, dirs, files in os.walk(folder):
        out |= {os.path.relpath(os.path.join(root, n), folder) for n in dirs + files}
    return out


def _plant(run: Path, shared: Path, sub: str = "level_00") -> tuple[set[str], set[str]]:
    """Leftovers of each writer in the run directory `run` (one of them from a real killed
    write_atomic into folder `sub`), and files that only look alike, there and in a shared folder
    that `run` links to; returns (leftovers, look-alikes) as paths relative to `run`."""
    (run / sub).mkdir(parents=True, exist_ok=True)
    killed = subprocess.run([sys.executable, "-c", _KILLED_WRITE, str(run / sub / "result.json")], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert killed.returncode == -9
    (real,) = [n for n in os.listdir(run / sub) if n.startswith(".tmp-")]
    planted = {f"{sub}/{real}", ".tmp-k2j4_x9q", "figures/png/.tmp-abcdefgh", "compressed/weights.lthz.tmp.npz",
               f"{sub}/final.orbax-checkpoint-tmp-1733500000", f"{sub}/final.orbax-checkpoint-tmp-1733500000/_METADATA",
               "rewind.orbax-checkpoint-tmp"}
    lookalikes = {"notes.tmp", ".tmp-notes.txt", ".tmp-ABCDEFGH", "tmp-abcdefgh", f"{sub}/.tmp-abc", "results.tmp.csv",
                  f"{sub}/final.orbax-checkpoint-tmp-x", "figures/png/curve.png"}
    for rel in sorted(planted | lookalikes):
        path = run / rel
        if "orbax-checkpoint-tmp" in rel and not rel.endswith("_METADATA"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("x")
    # another run's directory, a shared one linked from this run, and the runs folder: not this run's
    shared.mkdir(parents=True, exist_ok=True)
    (shared / ".tmp-shared12").write_text("x")
    (shared / "final.orbax-checkpoint-tmp-1").mkdir()
    os.symlink(shared, run / "linked")
    (run.parent / ".tmp-outside").write_text("x")
    (run.parent / "other-run").mkdir()
    (run.parent / "other-run" / ".tmp-other123").write_text("x")
    return planted, lookalikes


def test_the_run_holding_its_lock_removes_only_its_writers_leftovers(tmp_path):
    from lth.runs import stale
    from lth.runs.run_dir import RunDir, RunLocked

    run = tmp_path / "runs" / "mlp-mnist1d-0123456789ab"
    run.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        planted, lookalikes = _plant(run, tmp_path / "runs" / "dense" / "shared")
        assert stale.leftovers(str(run)) == sorted(str(run / p) for p in planted if not p.endswith("_METADATA"))
        before = _files(tmp_path)
        with pytest.raises(RunLocked):  # a live holder: its temporaries may be in use, nothing is removed
            RunDir(str(run), "x").lock()
        assert _files(tmp_path) == before
    finally:
        holder.kill()
        holder.wait()

    RunDir(str(run), "x").lock().close()
    after = _files(tmp_path)
    gone = {f"runs/mlp-mnist1d-0123456789ab/{p}" for p in planted}
    assert not after & gone
    assert after == before - gone  # nothing else touched
    assert all((run / p).read_text() == "x" for p in lookalikes if (run / p).is_file())


def test_rerunning_a_killed_run_clears_its_leftovers_and_keeps_its_results(tmp_path):
    from lth.lottery import levels as lottery

    cfg = small_config(tmp_path, levels=1)
    first = lottery.run(cfg, echo=lambda s: None).results
    (run,) = [p.parent for p in (tmp_path / "runs").glob("*/results.csv")]
    planted, lookalikes = _plant(run, tmp_path / "elsewhere", sub="level_01")  # level_00 links to a shared folder
    said = []
    again = lottery.run(cfg, echo=said.append).results
    assert any("done already" in s for s in said), said
    assert not any((run / p).exists() for p in planted)
    assert all((run / p).exists() for p in lookalikes) and (tmp_path / "elsewhere" / ".tmp-shared12").exists()
    assert first.drop(columns=["seconds"]).equals(again.drop(columns=["seconds"]))
