"""Carrying CIFAR-10 to a lent GPU in parts (`scripts/gpu_stage_data.sh`, issue 32): the split here,
the calls it plans, and the reassembly there, simulated in a folder that keeps what earlier calls left
(as the warm device machine keeps ignored files): byte-identical files, checked by SHA-256; a damaged
or missing part is named and nothing wrong is put in place."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "gpu_stage_data.sh")
MIB = 1 << 20


def stage(root, *args):
    return subprocess.run(["bash", SCRIPT, "--root", str(root), *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable})


def make_repo(tmp_path, files):
    """A repository root with the script, and a data folder holding `files` {relpath: bytes}."""
    here = tmp_path / "here"
    (here / "scripts").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "scripts", "gpu_stage_data.py"), here / "scripts")
    shutil.copy(SCRIPT, here / "scripts")
    data = tmp_path / "data"
    for rel, blob in files.items():
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(blob)
    return here, data


def calls_of(here):
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import gpu_stage_data

    return gpu_stage_data.plan(json.loads((here / ".gpu-stage" / "MANIFEST.json").read_text()))


def deliver(here, there, call):
    """What the device tool does for one call: the carried paths replace theirs there."""
    for p in call["carry"]:
        if p == ".whl":
            continue
        (there / p).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(here / p, there / p)
    return subprocess.run(call["command"].split(" && ")[0], shell=True, cwd=there, capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable})


def there_root(tmp_path, here):
    there = tmp_path / "there"
    shutil.copytree(here / "scripts", there / "scripts")
    return there


def blobs():
    rng = np.random.default_rng(0)
    return {"cifar10/cifar10.npz": rng.integers(0, 256, int(2.6 * MIB), dtype=np.uint8).tobytes(),
            "mnist/small.gz": rng.integers(0, 256, 1000, dtype=np.uint8).tobytes()}


def test_split_plans_calls_within_the_budget_and_reassembles_byte_identical(tmp_path):
    files = blobs()
    here, data = make_repo(tmp_path, files)
    p = stage(here, "split", "--data-dir", str(data), "--budget-mib", "1", "--then", "echo bench", *files)
    assert p.returncode == 0, p.stderr
    manifest = json.loads((here / ".gpu-stage" / "MANIFEST.json").read_text())
    parts = manifest["files"][0]["parts"]
    assert len(parts) == 3 and sum(x["bytes"] for x in parts) == len(files["cifar10/cifar10.npz"])
    calls = calls_of(here)
    assert len(calls) == 3 and "call 3: carry=" in p.stdout
    for c in calls:  # each call's data under the budget, within the tool's 8 carried paths
        data_bytes = sum((here / x).stat().st_size for x in c["carry"] if x != ".whl")
        assert data_bytes <= MIB and len(c["carry"]) <= 8
    assert calls[-1]["carry"][-1] == ".whl" and calls[-1]["command"].endswith("--require-complete && echo bench")
    there = there_root(tmp_path, here)
    for i, c in enumerate(calls):
        r = deliver(here, there, c)
        assert r.returncode == 0, r.stdout + r.stderr
        done = (there / ".gpu-data" / "cifar10" / "cifar10.npz").exists()
        assert done == (i == len(calls) - 1), r.stdout
    for rel, blob in files.items():
        assert (there / ".gpu-data" / rel).read_bytes() == blob
    assert not any(f for _, _, fs in os.walk(there / ".gpu-data" / ".parts") for f in fs)
    v = subprocess.run(["bash", "scripts/gpu_stage_data.sh", "verify"], cwd=there, capture_output=True, text=True,
                       env={**os.environ, "PYTHON": sys.executable})
    assert v.returncode == 0 and v.stdout.count(": ok") == 2


def test_a_damaged_part_is_named_deleted_and_can_be_sent_again(tmp_path):
    files = blobs()
    here, data = make_repo(tmp_path, files)
    assert stage(here, "split", "--data-dir", str(data), "--budget-mib", "1", *files).returncode == 0
    calls = calls_of(here)
    there = there_root(tmp_path, here)
    for c in calls[:-1]:
        assert deliver(here, there, c).returncode == 0
    last = calls[-1]
    part = next(x for x in last["carry"] if "cifar10.npz.part" in x)
    good = (here / part).read_bytes()
    (here / part).write_bytes(good[:100] + bytes([good[100] ^ 1]) + good[101:])
    r = deliver(here, there, last)
    assert r.returncode == 4 and "DAMAGED" in r.stdout and os.path.basename(part) in r.stdout
    assert not (there / ".gpu-data" / "cifar10" / "cifar10.npz").exists() and not (there / part).exists()
    (here / part).write_bytes(good)  # the same call again
    r = deliver(here, there, last)
    assert r.returncode == 0 and "complete" in r.stdout
    assert (there / ".gpu-data" / "cifar10" / "cifar10.npz").read_bytes() == files["cifar10/cifar10.npz"]


def test_the_last_call_refuses_to_go_on_while_a_part_is_missing(tmp_path):
    files = blobs()
    here, data = make_repo(tmp_path, files)
    assert stage(here, "split", "--data-dir", str(data), "--budget-mib", "1", "--then", "echo bench", *files).returncode == 0
    calls = calls_of(here)
    there = there_root(tmp_path, here)
    deliver(here, there, calls[0])
    r = subprocess.run(calls[-1]["command"], shell=True, cwd=there, capture_output=True, text=True,
                       env={**os.environ, "PYTHON": sys.executable})  # the second call was skipped (its part missing)
    assert r.returncode == 3 and "missing: cifar10/cifar10.npz.part-01" in r.stdout and "bench" not in r.stdout
    assert not (there / ".gpu-data" / "cifar10" / "cifar10.npz").exists()


def test_split_refuses_a_file_that_is_not_there(tmp_path):
    here, data = make_repo(tmp_path, {})
    p = stage(here, "split", "--data-dir", str(data), "cifar10/cifar10.npz")
    assert p.returncode != 0 and "cifar10/cifar10.npz: no such file" in p.stderr


def test_real_cifar10_travels_in_calls_under_64_mib_and_arrives_identical(tmp_path):
    """The real file (161.7 MiB), the budget measured from this checkout's working tree."""
    src = os.path.join(ROOT, "..", "shared", "datasets")
    if not os.path.isfile(os.path.join(src, "cifar10", "cifar10.npz")):
        pytest.skip("../shared/datasets/cifar10 is not here")
    here = tmp_path / "here"
    shutil.copytree(ROOT, here, ignore=shutil.ignore_patterns(".venv", ".git", "*.egg-info", "__pycache__", ".gpu-*"))
    subprocess.run(["git", "init", "-q", str(here)], check=True)
    p = stage(here, "split", "--data-dir", src, "cifar10/cifar10.npz")
    assert p.returncode == 0, p.stderr
    there = there_root(tmp_path, here)
    for c in calls_of(here):
        assert sum((here / x).stat().st_size for x in c["carry"] if x != ".whl") < 60 * MIB
        assert deliver(here, there, c).returncode == 0
    h = hashlib.sha256((there / ".gpu-data" / "cifar10" / "cifar10.npz").read_bytes()).hexdigest()
    sums = open(os.path.join(src, "SHA256SUMS")).read()
    assert f"{h}  cifar10/cifar10.npz" in sums or h in sums
