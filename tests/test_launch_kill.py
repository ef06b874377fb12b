"""Kills of a 2-process lottery run (issue 30: "a kill of any process, then re-running the job,
resumes as it does today").

`python -m lth.launch --processes 2 -- experiments/lottery.py ...` is started, and once level 0 is
finished and level 1 has an in-level checkpoint on disk one of these is SIGKILLed (no chance to
checkpoint): worker process 1, worker process 0 (the writer), the whole job (launcher and both
workers, as a node's pre-emption does), or the launcher alone. The job must end promptly (a worker
blocked in a collective whose peer died must not wait forever), the launcher (when alive) with
status 128 + 9, and what was written before the kill must stay readable. Re-running the same
command must resume: level 0 is not retrained, level 1 continues from the newest in-level
checkpoint, and the results equal an uninterrupted one-process run's exactly (members are split
over the processes: bit for bit on the CPU).
"""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from test_launch import REPO, TINY, _env, _results

STOP_S = 30.0  # how long the job may take to end after a kill (measured: 0.1-0.3 s; the launcher's grace is 5 s)


def _children(pid: int) -> list[int]:
    """The direct children of `pid` (Linux's /proc)."""
    out = []
    for task in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            out += [int(c) for c in open(task).read().split()]
        except OSError:
            pass
    return out


def _process_id(pid: int) -> str | None:
    """The `LTH_PROCESS_ID` a worker was started with (its environment), or None if it is gone."""
    try:
        env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return None
    return next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"LTH_PROCESS_ID=")), None)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


def _start(runs, *overrides, shard="members", wrapper=()):
    """The 2-process job over TINY with `overrides`; `wrapper`: a script (and its arguments) that
    runs experiments/lottery.py in each process."""
    return subprocess.Popen([sys.executable, "-m", "lth.launch", "--processes", "2", "--", *wrapper,
                             "experiments/lottery.py", f"paths.runs_dir={runs}", *TINY, f"devices.shard={shard}",
                             *overrides], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _checkpoints(runs, level):
    return sorted(int(os.path.basename(p)) for p in glob.glob(f"{runs}/**/level_{level:02d}/progress/[0-9]*", recursive=True)
                  if os.path.basename(p).isdigit())


# -- the launcher, with stand-in workers (no JAX: seconds) ---------------------------------------
def _pids(tmp_path, code):
    """Launch 2 processes running `code` (which may use PID, the file where each writes its pid);
    wait until both have written it; (the launcher, {process id: pid})."""
    pre = f"import os, signal, sys, time\nPID = {str(tmp_path)!r} + '/pid-' + os.environ['LTH_PROCESS_ID']\n" \
          "open(PID + '.tmp', 'w').write(str(os.getpid())); os.replace(PID + '.tmp', PID)\n"
    p = subprocess.Popen([sys.executable, "-m", "lth.launch", "--processes", "2", "--", "-c", pre + code], cwd=REPO,
                         env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    t0 = time.time()
    while not all(os.path.exists(tmp_path / f"pid-{i}") for i in "01") and time.time() - t0 < 60:
        time.sleep(0.02)
    return p, {i: int((tmp_path / f"pid-{i}").read_text()) for i in "01"}


def _gone_within(pids, seconds):
    t0 = time.time()
    while any(_alive(q) for q in pids) and time.time() - t0 < seconds:
        time.sleep(0.02)
    for q in pids:
        if _alive(q):
            os.kill(q, signal.SIGKILL)
            return False
    return True


def test_a_killed_launcher_takes_its_processes_with_it(tmp_path):
    """SIGKILL to the launcher alone (the out-of-memory killer, `kill -9`): its processes do not go
    on as orphans holding the run's lock (a re-run would be refused while they train on)."""
    p, pids = _pids(tmp_path, "time.sleep(120)")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert _gone_within(pids.values(), 5.0)


def test_a_process_killed_by_a_signal_is_reported_as_a_shell_does_and_a_deaf_peer_is_killed(tmp_path):
    """Process 1 SIGKILLed: the launcher exits with 128 + 9 within seconds, after killing process
    0, which ignores SIGTERM as a process blocked in a collective does."""
    p, pids = _pids(tmp_path, "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)")
    t0 = time.time()
    os.kill(pids["1"], signal.SIGKILL)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 128 + signal.SIGKILL and "process 1 of 2 exited with status 137" in err, (p.returncode, err)
    assert time.time() - t0 < 10 and _gone_within(pids.values(), 1.0)


def test_the_process_killed_is_reported_not_the_peer_that_failed_because_of_it(tmp_path):
    """Process 1 is SIGKILLed; process 0, talking to it over a socket as in a collective, fails at
    once with status 1: the launcher names the killed process first and exits with its status."""
    sock = str(tmp_path / "s")
    code = ("import socket\ns = socket.socket(socket.AF_UNIX)\n"
            "if os.environ['LTH_PROCESS_ID'] == '0':\n"
            f"    s.bind({sock!r}); s.listen(1); c = s.accept()[0]; c.recv(1); sys.exit(1)\n"
            "else:\n"
            "    while True:\n"  # until process 0 listens (its socket file exists from bind(), before listen())
            f"        try: s.connect({sock!r}); break\n"
            "        except (FileNotFoundError, ConnectionRefusedError): time.sleep(0.01)\n"
            "    time.sleep(0.5); os.kill(os.getpid(), signal.SIGKILL)\n")
    p, _ = _pids(tmp_path, code)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 137 and "lth.launch: process 1 of 2 exited with status 137" in err, (p.returncode, err)


def test_the_likeliest_cause_is_named_first():
    """Several processes can end between two polls of the launcher: a kill from outside comes
    before a status of the process's own (2: a refusal), which comes before what a peer's end
    causes (status 1 from a failed collective, SIGABRT from JAX's coordination service)."""
    from lth.integrations import launch

    codes = [1, -signal.SIGABRT, 2, -signal.SIGKILL]
    assert sorted(codes, key=launch._consequence) == [-signal.SIGKILL, 2, 1, -signal.SIGABRT]
    assert sorted([-signal.SIGABRT, 2], key=launch._consequence) == [2, -signal.SIGABRT]  # a refusal, then the abort


# -- whole lottery runs ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The uninterrupted one-process run's results."""
    runs = tmp_path_factory.mktemp("one")
    res = subprocess.run([sys.executable, "experiments/lottery.py", f"paths.runs_dir={runs}", *TINY], cwd=REPO, env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return _results(runs)


@pytest.mark.slow  # 35-60 s each on the shared 2-core CPU: a 2-process run killed, then re-run to its end
@pytest.mark.parametrize("victim", ["process 1", "process 0", "the whole job", "the launcher"])
def test_a_sigkilled_two_process_run_stops_promptly_and_a_rerun_resumes_to_the_one_process_results(
        tmp_path, one_process, victim):
    _kill_and_resume(tmp_path / "two", victim, one_process)


def _kill_and_resume(runs, victim, expected, *overrides, shard="members"):
    """Start the 2-process job (with `overrides`), SIGKILL `victim` once level 1 has an in-level
    checkpoint, check that the job ended promptly and left level 0 whole, re-run it and check that
    it resumed from the newest checkpoint and ended with the results `expected`, exactly."""
    p = _start(runs, *overrides, shard=shard)
    workers: dict[str, int] = {}
    try:
        t0 = time.time()
        while not _checkpoints(runs, 1) and p.poll() is None and time.time() - t0 < 400:
            time.sleep(0.05)
        assert _checkpoints(runs, 1), f"no in-level checkpoint of level 1 appeared\n{p.communicate(timeout=60)[0][-3000:]}"
        workers = {_process_id(c): c for c in _children(p.pid)}
        assert set(workers) == {"0", "1"}, workers
        targets = {"process 1": [workers["1"]], "process 0": [workers["0"]], "the launcher": [p.pid],
                   "the whole job": [p.pid, workers["0"], workers["1"]]}[victim]
        killed = time.time()
        for pid in targets:
            os.kill(pid, signal.SIGKILL)
        out = p.communicate(timeout=300)[0]
        while any(_alive(w) for w in workers.values()) and time.time() - killed < 120:
            time.sleep(0.05)
        stopped = time.time() - killed
        print(f"{victim} SIGKILLed: every process ended {stopped:.1f} s later")
        assert not any(_alive(w) for w in workers.values()), f"a worker outlived the kill of {victim} by 120 s"
        assert stopped < STOP_S, f"the job took {stopped:.1f} s to end after the kill of {victim}"
        if p.pid not in targets:  # the launcher reports the killed worker's signal, as a shell would
            assert p.returncode == 128 + signal.SIGKILL, (p.returncode, out[-3000:])
            assert f"process {victim[-1]} of 2 exited with status {128 + signal.SIGKILL}" in out, out[-3000:]
    finally:
        for pid in [p.pid, *workers.values()]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        p.wait()

    # what was written before the kill is whole: level 0's tables and summary
    (csv,) = glob.glob(f"{runs}/*/results.csv")
    summary = json.loads(open(os.path.join(os.path.dirname(csv), "summary.json")).read())
    assert list(summary["levels"]) == ["0"]
    written = pd.read_csv(csv).drop(columns=["seconds"]).sort_values(["level", "kind", "replicate"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(written, expected[expected.level == 0].reset_index(drop=True), check_exact=True)
    newest = _checkpoints(runs, 1)[-1]

    p = _start(runs, *overrides, shard=shard)
    out = p.communicate(timeout=600)[0]
    assert p.returncode == 0, out[-3000:]
    assert re.search(r"level +0: done already", out), out[-3000:]  # the finished level is not retrained
    assert f"level 1: resuming from the checkpoint at step {newest} of " in out, out[-3000:]
    assert "corrupt" not in out, out[-3000:]
    pd.testing.assert_frame_equal(expected, _results(runs), check_exact=True)  # bit for bit
    assert not _checkpoints(runs, 1)  # the finished level's in-level checkpoints are gone
