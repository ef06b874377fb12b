"""W&B artifacts of a finished lottery run: its result tables and its masks, versioned by W&B.

A lottery run with W&B enabled (offline too) ends by logging two artifacts to its summary run
(`lth.integrations.wandb_logger.WandbLogger.log_artifacts`), each named by the run's content hash, so a
re-run or an extension of the same experiment adds a new version of the same artifact:

- `lth-<hash>-results` (type `results`): `results.csv` (one row per level x kind x replicate) and
  `summary.json` (settings, counts, per-level outcomes), as the run directory holds them.
- `lth-<hash>-masks` (type `masks`): `masks.npz`, every mask checkpoint of the run directory in one
  compressed numpy file: key `level_NN/<kind>/<tensor path>` (kind `ticket` or a control, tensor
  path as `pruning.prunable` sees it, e.g. `level_02/ticket/fc1/kernel`), value a boolean array
  (replicates, *tensor shape), True = alive. Only the prunable tensors are stored (the others are
  all True). Read back with `np.load(path)[key]`.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

RESULT_FILES = ("results.csv", "summary.json")


def mask_checkpoints(run_dir: str) -> list[tuple[int, str, str]]:
    """(level, kind, checkpoint path) of every mask checkpoint in `run_dir`, by level then kind."""
    from lth.runs import checkpoints

    out, level = [], 0
    while os.path.isdir(os.path.join(run_dir, f"level_{level:02d}")):
        d = os.path.join(run_dir, f"level_{level:02d}")
        if checkpoints.exists(os.path.join(d, "mask")):
            out.append((level, "ticket", os.path.join(d, "mask")))
        controls = os.path.join(d, "controls")
        for kind in sorted(os.listdir(controls)) if os.path.isdir(controls) else []:
            if checkpoints.exists(os.path.join(controls, kind, "mask")):
                out.append((level, kind, os.path.join(controls, kind, "mask")))
        level += 1
    return out


def write_masks_npz(run_dir: str, out_path: str) -> list[str]:
    """Write `masks.npz` (module doc) of the run at `run_dir` to `out_path`; returns its keys."""
    from lth.runs import checkpoints
    from lth.sparsity import masks

    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    prunable = set((summary.get("parameters") or {}).get("tensor_sizes") or {})
    pruning = (summary.get("config") or {}).get("pruning") or {}
    arrays = {}
    for level, kind, path in mask_checkpoints(run_dir):
        flat = masks.flatten(checkpoints.restore(path, None))
        for p, m in flat.items():
            keep = p in prunable if prunable else (any(re.search(x, p) for x in pruning.get("prunable", ["kernel$"]))
                                                   and not any(re.search(x, p) for x in pruning.get("exclude", [])))
            if keep:
                arrays[f"level_{level:02d}/{kind}/{p}"] = np.asarray(m, bool)
    np.savez_compressed(out_path, **arrays)
    return sorted(arrays)
