"""Run directories: named by a content hash of the settings that change results.

Re-running the same command finds the same directory, skips the levels already finished there and
continues; raising `levels` extends the run (the number of levels is not part of the hash, nor are
paths, logging or the run's label). A lock file stops two processes from writing one run.

Layout of a run directory:

    <runs_dir>/<model>-<dataset>-<hash>/
        config.yaml          the resolved config
        summary.json         config, parameter counts, per-level densities and outcomes
        results.csv          one row per level x replicate x kind
        rewind/              orbax: the stacked train states at the rewind point
        level_00/            orbax `mask/`, `final/` (weights at the end), and `result.json`
        level_01/ ...        the same, plus controls/<kind>/{mask,final,result.json} per control
        wandb/               W&B runs (offline by default)
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import tempfile
from typing import Any

from lth.config import defaults
from lth.runs import stale, writer
from lth.config.schema import (
    HASH_OMITTED_AT_DEFAULT,
    HASHED_SECTIONS,
    UNHASHED_DATASET_KEYS,
    UNHASHED_TRAIN_KEYS,
    Config,
    resolve,
    to_dict,
)


def hashed_settings(cfg: Config, steps: dict[str, Any] | None = None, extra: dict[str, Any] | None = None, *,
                    replicates: bool = True) -> dict[str, Any]:
    """The settings that change results, with the resolved step counts (`steps`) and anything else
    that identifies the run's inputs (`extra`: the content hash of a pre-trained checkpoint, the
    source of a branch). `init` enters only with a checkpoint, as that checkpoint's content (the
    caller passes `extra={"init_checkpoint": sha256}`), not its path. `replicates=False` leaves the
    replicate count out (a lottery run extends to more replicates in place: `lth.lottery.replicates`)."""
    d = to_dict(resolve(cfg))
    out = {k: d[k] for k in HASHED_SECTIONS}
    for group in ("model", "optimizer"):  # settings an option does not use: the values older runs hashed
        out[group] = defaults.for_hash(group, out[group])
    out["dataset"] = {k: v for k, v in out["dataset"].items() if k not in UNHASHED_DATASET_KEYS}
    out["train"] = {k: v for k, v in out["train"].items() if k not in UNHASHED_TRAIN_KEYS}
    if cfg.init.checkpoint is None:
        out["init"] = None
    else:
        out["init"] = {k: v for k, v in out["init"].items() if k != "checkpoint"}
    for path, default in HASH_OMITTED_AT_DEFAULT.items():
        parent = out
        for key in path[:-1]:
            parent = parent[key]
        if parent.get(path[-1], default) == default:
            parent.pop(path[-1], None)
    if not replicates:
        out.pop("replicates")
    if steps:
        out["steps"] = dict(steps)
    if extra:
        out["inputs"] = dict(extra)
    return out


def content_hash(cfg: Config, steps: dict[str, Any] | None = None, extra: dict[str, Any] | None = None, *,
                 replicates: bool = True) -> str:
    return hash_of(hashed_settings(cfg, steps, extra, replicates=replicates))


def hash_of(settings: dict[str, Any]) -> str:
    """The 12-hex-digit content hash of a dict of settings (its sorted JSON)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def write_atomic(path: str, text: str | bytes) -> None:
    """Write `text` (or bytes) to `path` through a temporary file and a rename: never a half-written file.
    Only the writing process of a multi-process run writes (`lth.runs.writer`)."""
    if not writer.primary():
        return
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() would follow the umask
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process's umask (read by setting it and putting it back: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path: str, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(x):
    import numpy as np

    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if dataclasses.is_dataclass(x):
        return dataclasses.asdict(x)
    return str(x)


class RunLocked(RuntimeError):
    pass


@dataclasses.dataclass
class RunDir:
    path: str
    hash: str

    @classmethod
    def for_config(cls, cfg: Config, steps: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                   prefix: str = "", *, replicates: bool = True) -> "RunDir":
        h = content_hash(cfg, steps, extra, replicates=replicates)
        return cls(_path(cfg, prefix, h), h)

    def adopt_legacy(self, cfg: Config, steps: dict[str, Any] | None, extra: dict[str, Any] | None,
                     echo=print, most: int = 64) -> None:
        """A lottery run made when the replicate count was part of the hash lives under its old
        name: move the one with the most replicates (1 .. `most`) with these settings to this
        run's name, once, so that re-running its command continues it."""
        import dataclasses as dc

        if os.path.exists(self.path) or not writer.primary():
            return
        for n in range(most, 0, -1):
            old = _path(cfg, "", content_hash(dc.replace(cfg, replicates=n), steps, extra))
            if os.path.isdir(old):
                os.rename(old, self.path)
                echo(f"moved {old} -> {self.path} (the replicate count is no longer part of a run's name)")
                return

    def create(self) -> None:
        if writer.primary():
            os.makedirs(self.path, exist_ok=True)

    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def level_dir(self, level: int) -> str:
        return self.file(f"level_{level:02d}")

    def member_dir(self, level: int, kind: str = "ticket") -> str:
        """Where a level's members of one kind keep `mask/`, `final/` and `result.json`: the level
        folder itself for the tickets, `level_NN/controls/<kind>/` for a control."""
        return self.level_dir(level) if kind == "ticket" else os.path.join(self.level_dir(level), "controls", kind)

    def level_done(self, level: int, kind: str = "ticket") -> bool:
        return os.path.exists(os.path.join(self.member_dir(level, kind), "result.json"))

    def lock(self):
        """Hold an exclusive lock on the run for the life of the returned file object (the writing
        process's: the others of a multi-process run get an object to close, and no lock). Once it
        is held, the temporary files that this run's writers left when killed mid-write (`.tmp-*`
        of `write_atomic`, orbax's unfinished checkpoints, ...) are removed from the run directory:
        no live writer can be using them (`lth.runs.stale`)."""
        if not writer.primary():
            return open(os.devnull)
        f = open(self.file(".lock"), "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise RunLocked(
                f"another process is running this run right now ({self.path}); wait for it to finish or "
                "stop it (a finished or killed run leaves no lock behind)"
            ) from None
        stale.remove_leftovers(self.path)
        return f


def _path(cfg: Config, prefix: str, h: str) -> str:
    name = f"{prefix}{cfg.model.name}-{cfg.dataset.name.replace('/', '_')}-{h}"
    return os.path.abspath(os.path.join(os.path.expanduser(cfg.paths.runs_dir), name))
