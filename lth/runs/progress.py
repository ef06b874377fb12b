"""Checkpoints of a level in progress: a killed run resumes inside its level, not at its start.

A level's training is a sequence of compiled calls between fixed step boundaries (the evaluation
steps, the rewind point, and the checkpoint steps of `checkpoint.every`, all counted from step 0,
so they do not depend on where a run was stopped). After a boundary b, the whole state of the
level is

    (b, the stacked train states of all members (params, optimizer state, BatchNorm statistics,
     mask, step), the states captured at the rewind point if b > k, the evaluations and per-step
     training metrics so far, and which members diverged and when)

and nothing else: the data order and the augmentation of step s are functions of (the replicate's
keys, s) (`lth.train`), so the position in the data needs no saving. Resuming from b therefore runs
exactly the compiled calls the uninterrupted run ran after b: on a CPU the level's results are bit
for bit the same.

Each checkpoint is one orbax `CheckpointManager` step under `level_NN/progress/<b>/` (orbax writes
it to a temporary directory and renames it when complete, so a checkpoint on disk is whole or
absent), with the last `checkpoint.keep` kept. The write happens in orbax's background thread
while training goes on (measured for the MNIST-1D MLP, 2 members: 15 ms of the training loop's time
per checkpoint instead of 150 ms written in line); a stop request waits for it. Its metadata holds a SHA-256 of every saved array;
a checkpoint that fails to load or whose arrays do not hash to it is reported, moved aside to
`progress-corrupt/`, and the previous one is used (or the level starts over). The checkpoints
belong to one set of members (level, kinds, replicates): a re-run asking for other members starts
the level over. When the level's files are written the directory is removed: the level's own
`mask/`, `final/` and `result.json` are its end-of-level checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import time
from typing import Any, Callable, Optional

import jax
import numpy as np

from lth.runs import writer

PyTree = Any
FORMAT = 1


@dataclasses.dataclass
class Resume:
    """What a level's training continues from."""

    step: int
    states: PyTree  # host arrays, the structure of the live stacked states
    captured: Optional[PyTree]  # host states at the rewind point (level 0, once passed), else None
    eval_steps: list[int]
    evals: list[dict[str, np.ndarray]]
    train: dict[str, np.ndarray]  # per-step training metrics so far, each (steps done, members)
    diverged: np.ndarray  # per member: the step its loss first stopped being finite, -1 if it has not


def digest(tree: PyTree) -> str:
    """SHA-256 of a tree's arrays (shapes, dtypes and bytes, in tree order)."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _plain(tree: PyTree) -> PyTree:
    """Host numpy arrays (orbax refuses numpy scalars: 0-d arrays instead)."""
    return jax.tree.map(lambda x: np.asarray(x), jax.device_get(tree))


class LevelCheckpoints:
    """The checkpoints of one level in progress (`directory` = `level_NN/progress`), for the
    members described by `members` (a JSON-able identity: level, kinds, replicates, steps)."""

    def __init__(self, directory: str, members: dict[str, Any], *, keep: int = 2, min_seconds: float = 0.0,
                 echo: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic):
        self.dir, self.members, self.keep, self.min_seconds = os.path.abspath(directory), members, keep, min_seconds
        self.echo, self.clock = echo, clock
        self.async_save = True  # orbax writes in a background thread; `finish` waits for it
        self.last_saved = clock()
        self._manager = None
        self.saved_steps: list[int] = []

    def manager(self):
        if self._manager is None:
            import orbax.checkpoint as ocp

            mine = writer.primary()  # the other processes of a multi-process run only read (lth.runs.writer)
            if mine:
                os.makedirs(self.dir, exist_ok=True)  # (orbax's create=True refuses a per-process manager)
            opts = ocp.CheckpointManagerOptions(max_to_keep=self.keep, enable_async_checkpointing=self.async_save,
                                                cleanup_tmp_directories=mine, create=False, **writer.orbax_options())
            self._manager = ocp.CheckpointManager(self.dir, options=opts)
        return self._manager

    # -- saving ---------------------------------------------------------------------------------
    def due(self, step: int, candidate: bool) -> bool:
        """Whether boundary `step` should be saved: a checkpoint step, and `min_seconds` passed."""
        return candidate and self.clock() - self.last_saved >= self.min_seconds

    def save(self, step: int, states: PyTree, captured: Optional[PyTree], eval_steps: list[int],
             evals: list[dict[str, np.ndarray]], train: dict[str, np.ndarray], diverged: np.ndarray) -> None:
        import orbax.checkpoint as ocp

        if not writer.primary():
            self.last_saved = self.clock()
            return
        arrays = _plain({"states": states, "train": dict(train), **({"captured": captured} if captured is not None else {})})
        meta = {
            "format": FORMAT, "members": self.members, "step": int(step), "captured": captured is not None,
            "train": {k: [list(np.shape(v)), np.asarray(v).dtype.str] for k, v in arrays["train"].items()},
            "eval_steps": [int(s) for s in eval_steps],
            "evals": [{k: np.asarray(v).tolist() for k, v in e.items()} for e in evals],
            "diverged": np.asarray(diverged).tolist(), "sha256": digest(arrays),
        }
        m = self.manager()
        if step in m.all_steps():  # a boundary saved by an earlier, interrupted invocation
            m.delete(step)
        m.save(step, args=ocp.args.Composite(arrays=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)))
        self.last_saved = self.clock()
        self.saved_steps.append(int(step))

    # -- resuming -------------------------------------------------------------------------------
    def latest(self, template_states: PyTree, template_captured: Optional[PyTree]) -> Optional[Resume]:
        """The newest good checkpoint for these members, or None (nothing saved, other members, or
        none loads): corrupt ones are reported and moved aside, others' are removed."""
        if not os.path.isdir(self.dir):
            return None
        import orbax.checkpoint as ocp

        m = self.manager()
        for step in sorted(m.all_steps(), reverse=True):
            try:
                meta = m.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
            except Exception as e:  # noqa: BLE001 - any failure to read is a corrupt checkpoint
                self._set_aside(step, f"its metadata does not load ({type(e).__name__}: {e})")
                continue
            if meta.get("format") != FORMAT or meta.get("members") != self.members:
                self.echo(f"checkpoint {self._where(step)} is for other members ({meta.get('members')}); starting the level over")
                self.clear()
                return None
            template = {"states": template_states,
                        "train": {k: np.zeros(shape, np.dtype(dt)) for k, (shape, dt) in meta["train"].items()}}
            if meta["captured"]:
                template["captured"] = template_captured
            template = _plain(template)
            try:
                arrays = m.restore(step, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(template))).arrays
                ok = digest(arrays) == meta["sha256"]
                why = "its arrays do not match the SHA-256 recorded when it was saved"
            except Exception as e:  # noqa: BLE001
                ok, why = False, f"it does not load ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
            if not ok:
                self._set_aside(step, why)
                continue
            evals = [{k: np.asarray(v, np.float32) for k, v in e.items()} for e in meta["evals"]]
            return Resume(step=int(meta["step"]), states=arrays["states"], captured=arrays.get("captured"),
                          eval_steps=list(meta["eval_steps"]), evals=evals, train=arrays["train"],
                          diverged=np.asarray(meta["diverged"], np.int64))
        return None

    def _where(self, step: int) -> str:
        return os.path.join(self.dir, str(step))

    def _set_aside(self, step: int, why: str) -> None:
        if not writer.primary():  # process 0 moves it, and reports
            self._manager = None
            return
        aside = os.path.join(os.path.dirname(self.dir), "progress-corrupt", f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        shutil.move(self._where(step), aside)
        self._manager = None  # re-read the steps on disk
        self.echo(f"checkpoint {self._where(step)} is corrupt: {why}; moved to {aside}, falling back to the one before")

    def finish(self) -> None:
        """Wait until the checkpoint being written in the background is on disk."""
        if self._manager is not None:
            self._manager.wait_until_finished()

    def clear(self) -> None:
        """Remove the level's checkpoints (its finished files replace them)."""
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()
            self._manager = None
        if writer.primary():
            shutil.rmtree(self.dir, ignore_errors=True)
