"""Temporary files left in a run directory by a writer that was killed mid-write, removed when the
run (re)starts.

Every file of a run directory is written under a temporary name and renamed when complete, so a
kill between the two leaves the temporary behind: never read (no reader looks at these names), but
piling up over kills and re-runs. `RunDir.lock` calls `remove_leftovers` right after taking the
run's lock: the process holding it is then the only one writing there, and has not written yet, so
no live writer can be using such a file. Only the names these writers produce are removed, and
only inside the run directory (symbolic links, such as `level_00` and `rewind` pointing at a
shared dense directory, `lth.lottery.shared_dense`, which has a lock of its own, are not followed):

    .tmp-XXXXXXXX                         `lth.runs.run_dir.write_atomic` (tempfile.mkstemp's prefix
                                          and 8 random characters)
    <name>.tmp.npz                        the compressed-weights format (`lth.compression.file_format`)
    <name>.orbax-checkpoint-tmp[-<digits>] orbax's checkpoints in progress, folders (`lth.runs.checkpoints`,
                                          `lth.runs.progress`)
"""

from __future__ import annotations

import os
import re
import shutil

WRITE_ATOMIC = re.compile(r"\.tmp-[a-z0-9_]{8}")  # tempfile.mkstemp(prefix=".tmp-"): 8 of [a-z0-9_]
COMPRESSED = re.compile(r".+\.tmp\.npz")
ORBAX = re.compile(r".+\.orbax-checkpoint-tmp(-\d+)?")


def leftovers(run_dir: str) -> list[str]:
    """The paths of the temporary files and folders that the run's writers leave under `run_dir`
    when killed (files for the first two kinds, folders for orbax's), without following links."""
    out = []
    for root, dirs, files in os.walk(run_dir):  # os.walk follows no symbolic link to a folder
        out += [os.path.join(root, f) for f in files if (WRITE_ATOMIC.fullmatch(f) or COMPRESSED.fullmatch(f))
                and not os.path.islink(os.path.join(root, f))]
        temporary = [d for d in dirs if ORBAX.fullmatch(d) and not os.path.islink(os.path.join(root, d))]
        out += [os.path.join(root, d) for d in temporary]
        dirs[:] = [d for d in dirs if d not in temporary]
    return sorted(out)


def remove_leftovers(run_dir: str) -> list[str]:
    """Remove `leftovers(run_dir)`; returns what was removed. Call only while holding the run's lock."""
    gone = leftovers(run_dir)
    for path in gone:
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    return gone
