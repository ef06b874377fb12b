"""The level driver: `train_level` runs a `Trainer` from one step to another in compiled calls.

The calls end at the evaluation steps (every `eval_every` and the end), the rewind point and the
checkpoint steps (`chunk_boundaries`); after each call the driver evaluates, captures the
rewind-point states, hands a `LevelInProgress` to the checkpointer and stops diverged members.
What a level recorded is a `LevelHistory` (evaluations, per-step metrics, early stopping).
Also here: the per-replicate keys (`replicate_keys`, a function of (seed, r) only) and the
density of stacked masks (`stacked_density`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from lth.sparsity import masks as M
from lth.train.train_state import TrainState

PyTree = Any
Trainer = Any  # lth.train.trainer.Trainer (not imported: the trainer re-exports this module's names)


def replicate_keys(seed: int, replicates: int) -> dict[str, jax.Array]:
    """Per-replicate keys, each (R, 2): `init` (weights), `data` (order), `aug` (augmentation).
    Replicate r's keys depend only on (seed, r), so a replicate trains the same whatever R is."""
    base = jax.random.PRNGKey(seed)
    keys = jnp.stack([jax.random.split(jax.random.fold_in(base, r), 3) for r in range(replicates)])
    return {"init": keys[:, 0], "data": keys[:, 1], "aug": keys[:, 2]}


@dataclasses.dataclass
class LevelHistory:
    """What one level's training recorded: evaluations (every `eval_every` steps and at the end)
    and per-step training metrics."""

    eval_steps: list[int] = dataclasses.field(default_factory=list)
    evals: list[dict[str, np.ndarray]] = dataclasses.field(default_factory=list)  # {"val/loss": (R,), ...}
    train: dict[str, list[np.ndarray]] = dataclasses.field(default_factory=lambda: {"loss": [], "accuracy": [], "lr": []})
    seconds: float = 0.0
    diverged: Optional[np.ndarray] = None  # per member: the first step with a non-finite loss, -1 if none

    def select(self, members: slice) -> "LevelHistory":
        """The history of some members only (a slice of the member axis of every array)."""
        return LevelHistory(
            eval_steps=list(self.eval_steps), evals=[{k: v[members] for k, v in e.items()} for e in self.evals],
            train={k: (v[:, members] if np.ndim(v) == 2 else v) for k, v in self.train.items()}, seconds=self.seconds,
            diverged=None if self.diverged is None else self.diverged[members])

    def early_stop(self) -> dict[str, np.ndarray]:
        """Per replicate: the step of minimum validation loss (first of ties), the test accuracy
        there, and that loss. Without a validation split there is no early-stopping point: all NaN
        (the last evaluation is the final accuracy, not an early stop)."""
        r = len(self.evals[-1]["test/accuracy"])
        if "val/loss" not in self.evals[-1]:
            return {key: np.full(r, np.nan) for key in
                    ("early_stop_step", "early_stop_test_accuracy", "early_stop_val_accuracy", "min_val_loss")}
        val = np.stack([e["val/loss"] for e in self.evals])  # (E, R)
        val = np.where(np.isnan(val), np.inf, val)
        best = np.argmin(val, axis=0)
        pick = lambda key: np.array([self.evals[b][key][i] for i, b in enumerate(best)])
        return {
            "early_stop_step": np.array([self.eval_steps[b] for b in best]),
            "early_stop_test_accuracy": pick("test/accuracy"),
            "early_stop_val_accuracy": pick("val/accuracy"),
            "min_val_loss": pick("val/loss"),
        }


def chunk_boundaries(start: int, end: int, eval_every: int, extra: tuple[int, ...] = ()) -> list[int]:
    """Steps where a compiled call ends: every multiple of `eval_every` in (start, end), `end`,
    and any `extra` step inside (e.g. the rewind point, whose state is captured)."""
    points = {end} | set(range((start // eval_every + 1) * eval_every, end, eval_every))
    points |= {e for e in extra if start < e < end}
    return sorted(points)


def train_level(trainer: "Trainer", states: TrainState, keys: dict, *, start: int, end: int, eval_every: int,
                capture_at: Optional[int] = None, on_eval: Optional[Callable] = None,
                on_train: Optional[Callable] = None, progress=None, extra_boundaries: tuple[int, ...] = (),
                resume=None, on_boundary: Optional[Callable] = None, place: Optional[Callable] = None):
    """Train stacked `states` from step `start` to `end`, evaluating at every multiple of
    `eval_every` and at `end` (not at `start`: on a CPU one evaluation of a CIFAR convnet costs
    minutes, and the untrained point is never the early-stopping point that matters).

    The compiled calls end at the evaluation steps, `capture_at` and `extra_boundaries` (the
    checkpoint steps), all fixed by `start` alone. `resume` (an `lth.runs.progress.Resume`) continues
    from one of those boundaries as if the level had never stopped; `on_boundary(step, level)` is
    called after every boundary (evaluation included) with a `LevelInProgress` to checkpoint.
    `place(states, keys)` puts the states and keys on the devices (`lth.train.sharding`).

    Divergence: after every call, a member whose training loss was not finite at some step, or
    whose weights are not all finite, is stopped: its state goes back to the last boundary (where it
    was finite) and stays there for the rest of the level, and `history.diverged[m]` records the
    first step whose loss was not finite. Members are independent, so the others train on exactly
    as they would have.

    Returns (states, history, captured) where `captured` is the host copy of the states at step
    `capture_at` (the rewind point) when it lies in [start, end), else None.
    """
    hist = LevelHistory()
    n_members = int(jax.tree.leaves(states.params)[0].shape[0])
    diverged = np.full(n_members, -1, np.int64)
    captured = jax.device_get(states) if capture_at == start else None
    step = start
    if resume is not None:
        states = jax.tree.map(lambda t, x: jnp.asarray(x, dtype=t.dtype), states, resume.states)
        step, captured, diverged = resume.step, resume.captured, np.array(resume.diverged, np.int64)
        hist.eval_steps, hist.evals = list(resume.eval_steps), list(resume.evals)
        hist.train = {k: [np.asarray(v)] for k, v in resume.train.items()}
    if place is not None:
        states, keys = place(states, keys)
    t0 = time.perf_counter()

    def evaluate(step):
        ev = {}
        for split in ("val", "test"):
            for k, v in trainer.evaluate(states, split).items():
                ev[f"{split}/{k}"] = v
        hist.eval_steps.append(step)
        hist.evals.append(ev)
        if on_eval:
            on_eval(step, ev)

    frozen = states  # every member's state at the last boundary, where it was finite
    extra = tuple(e for e in (capture_at, *extra_boundaries) if e is not None)
    for boundary in chunk_boundaries(start, end, eval_every, extra):
        if boundary <= step:  # done before the run was stopped
            continue
        states, metrics = trainer.run(states, keys, step, boundary - step)
        for k in hist.train:
            hist.train[k].append(metrics[k])
        states, frozen = _stop_diverged(states, frozen, metrics["loss"], step, boundary, diverged)
        if on_train:
            on_train(step, metrics)
        if progress is not None:
            progress.update(boundary - step)
        step = boundary
        if step == capture_at:
            captured = jax.device_get(states)
        if step % eval_every == 0 or step == end:
            evaluate(step)
            if progress is not None:
                ev = hist.evals[-1]
                progress.set_postfix(
                    {k.replace("/", "_"): f"{float(np.mean(v)):.4f}" for k, v in ev.items() if k.endswith("accuracy")}
                )
        if on_boundary is not None:
            on_boundary(step, LevelInProgress(states, captured, hist, diverged))
    hist.train = {k: np.concatenate(v) if v else np.zeros((0, n_members)) for k, v in hist.train.items()}
    hist.diverged = diverged
    hist.seconds = time.perf_counter() - t0
    return states, hist, captured


@dataclasses.dataclass
class LevelInProgress:
    """A level at a boundary, for `lth.runs.progress` to save: the live states, the rewind-point states
    captured so far, the history so far and the divergence steps."""

    states: TrainState
    captured: Optional[PyTree]
    history: "LevelHistory"
    diverged: np.ndarray

    def train_so_far(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) for k, v in self.history.train.items() if len(v)}


@jax.jit
def _finite_members(params) -> jax.Array:
    """(members,) True where every weight of that member is finite."""
    return jnp.stack([jnp.all(jnp.isfinite(x), axis=tuple(range(1, x.ndim))) for x in jax.tree.leaves(params)]).all(0)


@jax.jit
def _keep_where(stopped, old, new):
    """`new`, except the members `stopped` (members,) which keep `old`."""
    return jax.tree.map(lambda o, n: jnp.where(stopped.reshape((-1,) + (1,) * (n.ndim - 1)), o, n), old, new)


def _stop_diverged(states, frozen, loss, first: int, boundary: int, diverged: np.ndarray):
    """After the steps first .. boundary-1: record newly diverged members in `diverged` (in place),
    put every stopped member back to `frozen`; returns (states, the new `frozen`)."""
    loss = np.asarray(loss)
    bad = ~np.isfinite(loss)
    fresh = (diverged < 0) & (bad.any(axis=0) | ~np.asarray(_finite_members(states.params)))
    for m in np.flatnonzero(fresh):
        diverged[m] = first + int(np.argmax(bad[:, m])) if bad[:, m].any() else boundary
    if (diverged >= 0).any():
        states = _keep_where(jnp.asarray(diverged >= 0), frozen, states)
    return states, states


def stacked_density(mask: PyTree, paths: list[str]) -> np.ndarray:
    """Density of each replicate's stacked mask: array (R,)."""
    return np.array([M.density(m, paths) for m in M.unstack(mask, jax.tree.leaves(mask)[0].shape[0])])
