#!/usr/bin/env python3
"""Carry datasets larger than one call of the lent GPU machine in parts (issue 32).

One `run` call of the device tool carries the working tree plus at most 64 MiB in all; CIFAR-10
(`cifar10/cifar10.npz`, 161.7 MiB) does not fit. Files under git-ignored paths stay on the device
machine between calls while it is warm (about 30 s after each call), so the data can travel in
parts over consecutive calls and be put together there:

    here:   python3 scripts/gpu_stage_data.py split --data-dir "$LTH_DATA_DIR" \\
                cifar10/cifar10.npz mnist/train-images-idx3-ubyte.gz ...   [--then "CMD"]
            -> .gpu-stage/<file>.part-KK, .gpu-stage/MANIFEST.json, and the calls to make, one per
               line: what each carries and its command
    there:  python3 scripts/gpu_stage_data.py receive      (the command of every call)
            -> each part that arrived is checked against its SHA-256 and moved into
               .gpu-data/.parts/; a file whose parts are all there is put together, checked against
               the whole file's SHA-256 and renamed into place: .gpu-data/<file>
            `--require-complete` (the last call) exits 3 while a file is missing.
    either: python3 scripts/gpu_stage_data.py plan     (the calls again)
            python3 scripts/gpu_stage_data.py verify   (every file of the manifest against its SHA-256)

The budget of a call is 64 MiB minus what the working tree already carries (tracked files and
untracked files git does not ignore, measured here), minus `--reserve-mib` for the wheels
(`.whl`) the last call carries; each call carries MANIFEST.json and at most 6 parts (the tool
takes 8 carried paths; one is kept for `.whl`). A damaged part is deleted there and named, so the
call that carries it can simply be made again; a part sent twice is harmless.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys

MIB = 1 << 20
CALL_LIMIT_MIB = 64  # what one device call carries, working tree included
MAX_PARTS_PER_CALL = 6  # + MANIFEST.json + .whl = the tool's 8 carried paths
STAGE, DATA = ".gpu-stage", ".gpu-data"
MANIFEST = "MANIFEST.json"


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 * MIB), b""):
            h.update(block)
    return h.hexdigest()


def tree_bytes(root: str) -> int:
    """Bytes of the files a device call sends with the working tree: tracked files and untracked
    files that git does not ignore."""
    p = subprocess.run(["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                       capture_output=True)
    if p.returncode != 0:
        sys.exit(f"--root {root}: not a git checkout, so the working tree's size is unknown; give --budget-mib")
    out = p.stdout
    names = [n for n in out.decode().split("\0") if n]
    return sum(os.path.getsize(os.path.join(root, n)) for n in names if os.path.isfile(os.path.join(root, n)))


def split(args) -> dict:
    """Cut each file into parts of at most the per-call budget, balanced; write the manifest."""
    for rel in args.files:
        if not os.path.isfile(os.path.join(args.data_dir, rel)):
            sys.exit(f"{rel}: no such file under --data-dir {args.data_dir}")
    if args.budget_mib is None:
        tree = tree_bytes(args.root) / MIB
        budget = CALL_LIMIT_MIB - tree - args.reserve_mib
        print(f"working tree {tree:.1f} MiB + reserve {args.reserve_mib} MiB: {budget:.1f} MiB per call for data")
    else:
        budget = args.budget_mib
    budget_b = int(budget * MIB) - 4096  # MANIFEST.json travels too
    if budget_b < MIB // 4:
        sys.exit(f"--budget-mib: {budget:.2f} MiB per call is too small to carry data")
    stage = os.path.join(args.root, STAGE)
    if os.path.isdir(stage):
        shutil.rmtree(stage)
    files = []
    for rel in args.files:
        src = os.path.join(args.data_dir, rel)
        size = os.path.getsize(src)
        n = max(1, -(-size // budget_b))
        part_size = -(-size // n)
        parts = []
        with open(src, "rb") as f:
            for k in range(n):
                name = f"{rel}.part-{k:02d}"
                dst = os.path.join(stage, name)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                data = f.read(part_size)
                with open(dst, "wb") as g:
                    g.write(data)
                parts.append({"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        files.append({"path": rel, "bytes": size, "sha256": sha256(src), "parts": parts})
    manifest = {"budget_bytes": budget_b, "files": files, "then": args.then or "", "calls": pack(files, budget_b)}
    with open(os.path.join(stage, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def pack(files: list[dict], budget_b: int) -> list[list[str]]:
    """The parts of each call, in order: first fit, at most MAX_PARTS_PER_CALL per call."""
    calls: list[tuple[int, list[str]]] = []
    for f in files:
        for p in f["parts"]:
            for i, (used, names) in enumerate(calls):
                if used + p["bytes"] <= budget_b and len(names) < MAX_PARTS_PER_CALL:
                    calls[i] = (used + p["bytes"], names + [p["name"]])
                    break
            else:
                calls.append((p["bytes"], [p["name"]]))
    return [names for _, names in calls]


def load_manifest(root: str) -> dict:
    for d in (STAGE, DATA):
        path = os.path.join(root, d, MANIFEST)
        if os.path.isfile(path):
            with open(path) as f:
                return json.load(f)
    sys.exit(f"no {MANIFEST} under {STAGE}/ or {DATA}/ (here: run `split` first; there: carry {STAGE}/{MANIFEST})")


def plan(manifest: dict) -> list[dict]:
    """The device calls, each {"carry": [...], "command": "..."}; the last also carries `.whl` and runs `then`."""
    calls = []
    n = len(manifest["calls"])
    for i, names in enumerate(manifest["calls"]):
        carry = [f"{STAGE}/{MANIFEST}"] + [f"{STAGE}/{p}" for p in names]
        cmd = "bash scripts/gpu_stage_data.sh receive"
        if i == n - 1:
            carry.append(".whl")
            cmd += " --require-complete"
            if manifest.get("then"):
                cmd += f" && {manifest['then']}"
        calls.append({"carry": carry, "command": cmd})
    return calls


def print_plan(manifest: dict) -> None:
    calls = plan(manifest)
    total = sum(f["bytes"] for f in manifest["files"])
    print(f"{len(manifest['files'])} file(s), {total / MIB:.1f} MiB, in {len(calls)} call(s) of at most "
          f"{manifest['budget_bytes'] / MIB:.1f} MiB of data each; make them one right after the other "
          f"(the machine is given back ~30 s after a call):")
    for i, c in enumerate(calls, 1):
        print(f"call {i}: carry={json.dumps(c['carry'])} command={json.dumps(c['command'])}")


def receive(root: str, require_complete: bool) -> int:
    """Check and keep the parts that arrived; put together every file whose parts are all here."""
    manifest = load_manifest(root)
    stage, data = os.path.join(root, STAGE), os.path.join(root, DATA)
    parts_dir = os.path.join(data, ".parts")
    os.makedirs(parts_dir, exist_ok=True)
    with open(os.path.join(data, MANIFEST + ".tmp"), "w") as f:  # kept beside the data, for `verify` there
        json.dump(manifest, f, indent=1)
    os.replace(os.path.join(data, MANIFEST + ".tmp"), os.path.join(data, MANIFEST))
    damaged, missing = [], []
    for f in manifest["files"]:
        target = os.path.join(data, f["path"])
        if _complete(target, f):
            print(f"{f['path']}: here, {f['bytes'] / MIB:.1f} MiB, sha256 ok")
            continue
        have = []
        for p in f["parts"]:
            arrived, kept = os.path.join(stage, p["name"]), os.path.join(parts_dir, p["name"])
            if os.path.isfile(arrived):
                if os.path.getsize(arrived) != p["bytes"] or sha256(arrived) != p["sha256"]:
                    os.unlink(arrived)
                    damaged.append(p["name"])
                    print(f"{p['name']}: DAMAGED in transfer (size or sha256 differ from the manifest); deleted, carry it again")
                    continue
                os.makedirs(os.path.dirname(kept), exist_ok=True)
                os.replace(arrived, kept)
            if os.path.isfile(kept):
                have.append(kept)
        if len(have) < len(f["parts"]):
            lost = [p["name"] for p in f["parts"] if os.path.join(parts_dir, p["name"]) not in have]
            print(f"{f['path']}: {len(have)} of {len(f['parts'])} parts here (missing: {', '.join(lost)})")
            missing.append(f["path"])
            continue
        tmp = target + ".partial"
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(tmp, "wb") as out:
            for kept in have:
                with open(kept, "rb") as g:
                    shutil.copyfileobj(g, out, 16 * MIB)
        digest = sha256(tmp)
        if digest != f["sha256"]:
            os.unlink(tmp)
            print(f"{f['path']}: put together, but its sha256 {digest} is not the manifest's {f['sha256']}; "
                  f"its parts are deleted: carry them again")
            for kept in have:
                os.unlink(kept)
            damaged.append(f["path"])
            continue
        os.replace(tmp, target)
        with open(target + ".sha256", "w") as g:
            g.write(f"{digest}  {os.path.basename(target)}\n")
        for kept in have:
            os.unlink(kept)
        print(f"{f['path']}: complete, {f['bytes'] / MIB:.1f} MiB, sha256 ok")
    if damaged:
        return 4
    if missing and require_complete:
        print(f"incomplete: {', '.join(missing)} (make the calls that carry the missing parts first)")
        return 3
    return 0


def _complete(target: str, f: dict) -> bool:
    """Put together and checked by an earlier call (its .sha256 beside it), same size."""
    marker = target + ".sha256"
    if not (os.path.isfile(target) and os.path.isfile(marker)) or os.path.getsize(target) != f["bytes"]:
        return False
    with open(marker) as g:
        return g.read().split()[0] == f["sha256"]


def verify(root: str) -> int:
    manifest = load_manifest(root)
    bad = 0
    for f in manifest["files"]:
        target = os.path.join(root, DATA, f["path"])
        ok = os.path.isfile(target) and sha256(target) == f["sha256"]
        print(f"{f['path']}: {'ok' if ok else 'MISSING or different'}")
        bad += not ok
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    help="the repository's root (default: this script's)")
    sub = ap.add_subparsers(dest="verb", required=True)
    s = sub.add_parser("split", help="here: parts, manifest and the calls to make")
    s.add_argument("files", nargs="+", help="paths relative to --data-dir, e.g. cifar10/cifar10.npz")
    s.add_argument("--data-dir", default=os.environ.get("LTH_DATA_DIR"), required="LTH_DATA_DIR" not in os.environ,
                   help="the folder holding the files (default: $LTH_DATA_DIR)")
    s.add_argument("--budget-mib", type=float, help="data per call (default: 64 MiB - working tree - reserve)")
    s.add_argument("--reserve-mib", type=float, default=2.0, help="room kept in every call for .whl (default 2)")
    s.add_argument("--then", help="a command the last call runs once every file is complete")
    sub.add_parser("plan", help="print the calls again")
    r = sub.add_parser("receive", help="there: keep the parts that arrived, put complete files together")
    r.add_argument("--require-complete", action="store_true", help="exit 3 while a file is still missing")
    sub.add_parser("verify", help=f"check every file under {DATA}/ against the manifest")
    args = ap.parse_args(argv)
    if args.verb == "split":
        print_plan(split(args))
        return 0
    if args.verb == "plan":
        print_plan(load_manifest(args.root))
        return 0
    if args.verb == "receive":
        return receive(args.root, args.require_complete)
    return verify(args.root)


if __name__ == "__main__":
    sys.exit(main())
