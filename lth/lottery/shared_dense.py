"""The dense level 0, trained once and shared by every run that differs only in how it prunes.

Level 0 trains the dense network from θ0 to the end and keeps the states at the rewind point k.
Nothing in it depends on the pruning settings or on the rewinding mode, only on the data, model,
optimiser, training, initialisation, seed and k (the run's step plan). So the level lives in its
own directory, named by the content hash of exactly those settings,

    <runs_dir>/dense/<model>-<dataset>-<hash>/
        level_00/   rewind/   settings.json   (what the hash covers)

and each lottery run links to it (`level_00 -> ../dense/.../level_00`, `rewind -> ...`): a sweep
over `pruning.fraction`, `pruning.scope`, `pruning.method` or `rewind.mode` trains level 0 once.
Runs sharing it may run at the same time: the first to need level 0 trains it under the dense
directory's lock while the others wait for it, then find it done. Gradual pruning (which prunes
during level 0) and runs whose level 0 was trained in their own directory by an earlier version
keep theirs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import Any, Callable

from lth.config.schema import Config
from lth.runs import writer
from lth.runs.run_dir import RunDir, hash_of, hashed_settings, write_json

LINKED = ("level_00", "rewind")


def level0_settings(cfg: Config, steps: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, Any]:
    """What level 0 depends on: the run's hashed settings without pruning, rewinding mode and
    replicate count (k is in the step plan `steps`)."""
    s = hashed_settings(cfg, steps, extra, replicates=False)
    s.pop("pruning")
    s.pop("rewind")
    return s


def shareable(cfg: Config) -> bool:
    """Whether level 0 is plain dense training (gradual pruning prunes during it, dynamic sparse
    training is sparse throughout)."""
    return cfg.pruning.schedule not in ("gradual", "dynamic")


def for_run(cfg: Config, steps: dict[str, Any], extra: dict[str, Any] | None, rd: RunDir) -> RunDir:
    """The directory holding `rd`'s level 0 and rewind point: a shared dense directory, linked
    from `rd`, or `rd` itself (not shareable, or trained there by an earlier version of lth)."""
    own = [n for n in LINKED if os.path.lexists(rd.file(n)) and not os.path.islink(rd.file(n))]
    if own or not shareable(cfg):
        return rd
    settings = level0_settings(cfg, steps, extra)
    h = hash_of(settings)
    name = f"{cfg.model.name}-{cfg.dataset.name.replace('/', '_')}-{h}"
    rd0 = RunDir(os.path.join(os.path.dirname(rd.path), "dense", name), h)
    rd0.create()
    if not os.path.exists(rd0.file("settings.json")):
        write_json(rd0.file("settings.json"), settings)
    for n in LINKED:
        link = rd.file(n)
        if not os.path.lexists(link) and writer.primary():
            os.symlink(os.path.relpath(rd0.file(n), rd.path), link)
    return rd0


@contextlib.contextmanager
def holding(rd0: RunDir, rd: RunDir, echo: Callable[[str], None]):
    """Hold the shared level's lock (waiting while another run trains it); nothing when `rd0` is
    the run's own directory (whose lock the run holds already)."""
    if rd0.path == rd.path or not writer.primary():  # a multi-process run: process 0 holds it (lth.runs.writer)
        yield
        return
    f = open(rd0.file(".lock"), "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            echo(f"level 0: waiting for another run training the shared dense level ({rd0.path})")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield
    finally:
        f.close()


__all__ = ["LINKED", "for_run", "holding", "level0_settings", "shareable"]
