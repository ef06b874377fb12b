"""Kills of a 2-process lottery run whose training set is streamed from disk (issue 30:
`dataset.stream=true` over several processes, "a kill of any process, then re-running the job,
resumes as it does today").

With the members split over the processes, a streamed run killed once level 1 has an in-level
checkpoint and re-run ends with the uninterrupted one-process in-memory results bit for bit (the
loader's position is the step, and streaming changes where bytes come from, never which examples a
step sees). With the batches split, it ends with the uninterrupted 2-process streamed run's results
exactly: data parallel over 2 CPU processes repeats itself bit for bit, so a resumed run is the
uninterrupted one (both agree with one process's results to float rounding,
`tests/test_launch.py`). A job killed while it prepares the ArrayRecord copy under
`dataset.stream_dir` leaves only a temporary folder, which the re-run never reads and removes.
"""

from __future__ import annotations

import os

import pandas as pd
import pytest

from test_launch import _results
from test_launch_kill import _kill_and_resume, _start, one_process  # noqa: F401 (a fixture)

# Run by each process instead of experiments/lottery.py: the process SIGKILLs itself as it opens the
# labels file of the copy it is preparing (its examples written, the rest not): a kill mid-preparation.
KILL_IN_PREPARATION = r"""
import os, runpy, signal, sys
def hook(event, args):
    if event == "open" and ".tmp-" in str(args[0]) and str(args[0]).endswith("train_labels.npy"):
        os.kill(os.getpid(), signal.SIGKILL)
sys.addaudithook(hook)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _stream(folder):
    return "dataset.stream=true", f"dataset.stream_dir={folder}"


@pytest.fixture(scope="module")
def stream_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("stream")


@pytest.fixture(scope="module")
def two_process_streamed_batch(tmp_path_factory, stream_dir):
    """The uninterrupted 2-process streamed data-parallel run's results."""
    runs = tmp_path_factory.mktemp("batch")
    p = _start(runs, *_stream(stream_dir), shard="batch")
    out = p.communicate(timeout=600)[0]
    assert p.returncode == 0, out[-3000:]
    return _results(runs)


@pytest.mark.slow  # 60-120 s each on the shared 2-core CPU: a run killed and re-run (and, for batch, one uninterrupted)
@pytest.mark.parametrize("shard,victim", [("members", "process 1"), ("batch", "process 0")])
def test_a_sigkilled_streamed_two_process_run_resumes_to_the_uninterrupted_results(
        tmp_path, request, stream_dir, shard, victim):
    expected = request.getfixturevalue("one_process" if shard == "members" else "two_process_streamed_batch")
    _kill_and_resume(tmp_path / "two", victim, expected, *_stream(stream_dir), shard=shard)


@pytest.mark.slow  # 40-70 s on the shared 2-core CPU: the killed start is seconds, the re-run a whole run
def test_a_job_killed_while_preparing_the_stream_copy_never_uses_the_half_written_copy(tmp_path, one_process):
    from lth.data.stream_prepare import is_prepared

    stream, runs = tmp_path / "stream", tmp_path / "two"
    (tmp_path / "kill.py").write_text(KILL_IN_PREPARATION)
    p = _start(runs, *_stream(stream), wrapper=(str(tmp_path / "kill.py"),))
    out = p.communicate(timeout=300)[0]
    assert p.returncode == 137, out[-3000:]
    left = os.listdir(stream)
    assert left and all(".tmp-" in name for name in left), left  # no copy under its own name, only temporary ones
    assert any(os.path.exists(stream / name / "train.array_record") for name in left), left  # killed half way
    assert not any(is_prepared(str(stream / name)) for name in left)

    p = _start(runs, *_stream(stream))
    out = p.communicate(timeout=600)[0]
    assert p.returncode == 0, out[-3000:]
    (name,) = os.listdir(stream)  # the half-written copies are gone, a whole one is prepared
    assert ".tmp-" not in name and is_prepared(str(stream / name)), name
    pd.testing.assert_frame_equal(one_process, _results(runs), check_exact=True)
