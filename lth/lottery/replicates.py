"""Extending a finished run to more replicates: train only the new ones, keep the old bit for bit.

Replicate r's randomness depends only on (seed, r) (`lth.train.trainer.replicate_keys`, the controls'
and methods' generators), so the replicate count is not part of a lottery run's hash. Raising
`replicates` from R to R' on a run that exists trains replicates R .. R'-1 only, level by level,
and appends them to each level's stacked files:

    mask/, final/  (orbax, stacked over replicates)   = old[0 .. R-1]  ++ new[R .. R'-1]
    result.json rows, history, summary               = old rows      ++ new rows
    rewind/        (the states at the rewind point)   = old           ++ new   (with level 0)

Replacing files that already hold finished work must not lose it when the process is killed, so
an extension is written beside the old files (`<name>.new`) and committed by one atomic write of
a manifest (`.swap.json`) naming the replacements; `recover` completes a committed swap (or drops
an uncommitted one) the next time the run opens. A run asked for fewer replicates than a level
holds shows its first `replicates` (`view`), and keeps the rest on disk.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import jax
import numpy as np

from lth.runs import writer

MANIFEST = ".swap.json"


def count(result: dict[str, Any] | None) -> int:
    """How many replicates a level's result holds (0 for none)."""
    if not result:
        return 0
    return len({r["replicate"] for r in result["rows"]})


def template(one: Any, n: int) -> Any:
    """A host tree of `n` stacked members shaped like `one` (a single member's tree), to restore
    a checkpoint of `n` replicates."""
    return jax.tree.map(lambda x: np.zeros((n,) + np.shape(x), np.asarray(x).dtype), one)


def concat(old: Any, new: Any) -> Any:
    """Two stacked host trees as one (old members first)."""
    return jax.tree.map(lambda a, b: np.concatenate([np.asarray(a), np.asarray(b)]), old, new)


def merge_results(old: dict[str, Any], new: dict[str, Any], summarize) -> dict[str, Any]:
    """A level's result.json for old ++ new replicates: rows appended, each evaluation's per-member
    arrays concatenated, per-tensor lists appended, and the summary recomputed by
    `summarize(rows, per_tensor)`."""
    ho, hn = old["history"], new["history"]
    if ho["eval_steps"] != hn["eval_steps"]:
        raise ValueError(f"cannot extend: the new replicates were evaluated at steps {hn['eval_steps'][:5]}..., "
                         f"the old ones at {ho['eval_steps'][:5]}...")
    evals = [{k: list(eo[k]) + list(en[k]) for k in eo} for eo, en in zip(ho["evals"], hn["evals"])]
    rows = list(old["rows"]) + list(new["rows"])
    per_tensor = _join_lists(old["summary"]["tensor_densities"], new["summary"]["tensor_densities"])
    summary = summarize(rows, per_tensor)
    if "structured" in old["summary"]:
        summary["structured"] = {k: _join_lists(old["summary"]["structured"][k], new["summary"]["structured"][k])
                                 for k in old["summary"]["structured"]}
    return {**old, "rows": rows, "summary": summary, "history": {"eval_steps": ho["eval_steps"], "evals": evals}}


def view(result: dict[str, Any], n: int, summarize) -> dict[str, Any]:
    """The first `n` replicates of a level's result (itself when it holds no more)."""
    if count(result) <= n:
        return result
    keep = [i for i, r in enumerate(result["rows"]) if r["replicate"] < n]
    rows = [result["rows"][i] for i in keep]
    per_tensor = {p: v[:n] for p, v in result["summary"]["tensor_densities"].items()}
    summary = summarize(rows, per_tensor)
    if "structured" in result["summary"]:
        summary["structured"] = {k: {p: v[:n] for p, v in d.items()} for k, d in result["summary"]["structured"].items()}
    hist = result.get("history")
    if hist:
        hist = {"eval_steps": hist["eval_steps"], "evals": [{k: v[:n] for k, v in e.items()} for e in hist["evals"]]}
    return {**result, "rows": rows, "summary": summary, "history": hist}


def _join_lists(a: dict[str, list], b: dict[str, list]) -> dict[str, list]:
    return {p: list(a[p]) + list(b.get(p, [])) for p in a}


def commit(root: str, replacements: dict[str, str]) -> None:
    """Replace files or folders under `root` by their new versions, all or none: `replacements`
    maps a new path (written completely already) to the path it replaces, both relative to `root`.
    The manifest's atomic write is the commit point; `recover` finishes it after a kill."""
    from lth.runs.run_dir import write_json

    write_json(os.path.join(root, MANIFEST), {"replace": replacements})
    recover(root)


def recover(root: str) -> None:
    """Finish a committed replacement under `root` (each new path renamed over its target), or, with
    no manifest, delete the `*.new` leftovers of one that was never committed."""
    if not writer.primary():  # the writing process finishes it (lth.runs.writer)
        return
    manifest = os.path.join(root, MANIFEST)
    if os.path.exists(manifest):
        with open(manifest) as f:
            replace = json.load(f)["replace"]
        for new, target in replace.items():
            new, target = os.path.join(root, new), os.path.join(root, target)
            if os.path.exists(new):
                old = target + ".old"
                if os.path.isdir(old):
                    shutil.rmtree(old)
                if os.path.isdir(target):
                    os.rename(target, old)  # a directory cannot be replaced by rename in one step
                os.replace(new, target)
                if os.path.isdir(old):
                    shutil.rmtree(old)
        os.unlink(manifest)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in list(dirnames) + filenames:
            if name.endswith(".new") or (name.endswith(".old") and os.path.isdir(os.path.join(dirpath, name))):
                p = os.path.join(dirpath, name)
                shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
                if name in dirnames:
                    dirnames.remove(name)
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d)) and d != "wandb"]
