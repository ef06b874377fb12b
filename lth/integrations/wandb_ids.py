"""The W&B run ids of a lottery run, and where its summary run's history goes on.

Why: W&B continues a run only when `wandb.init` is given the run's id again (`resume="allow"`). An id
drawn at random on each invocation splits an interrupted and resumed level into two runs; so every
run `lth.integrations.wandb_logger` opens has an id fixed by the experiment:

    <run id>-L03                    level 3, trained from its first replicate (the usual case, and a
                                    level interrupted and resumed: the same id, so the same run)
    <run id>-L03-ticket2-reinit2    level 3 again, for members a later invocation adds (more
    <run id>-L03-reinit0            replicates, a control): `<kind><first replicate>` per member group
    <run id>-summary                the results, figures, metrics and artifacts

where `<run id>` is `lth-<run hash>`. A level's history is logged against its training step, so a
resumed level continues after its checkpoint. The summary run's history has no step of its own;
offline, each invocation's copy of it would start again at step 0, so the step after the last one
logged is kept in `wandb/lth-steps.json` under the run directory (`next_step`, `save_step`).
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence

STEPS_FILE = "lth-steps.json"  # in <run dir>/wandb/, beside W&B's own folders


def level_id(run_id: str, level: int, members: Sequence[tuple[str, int]] = (),
             firsts: Optional[Sequence[int]] = None) -> str:
    """The id of the W&B run of `level`'s training: `<run_id>-L<level>`, tagged with the member
    groups (`members`: (kind, size); `firsts`: each group's first replicate) unless it trains the
    tickets from replicate 0 (the level's first training): members added to a finished level (more
    replicates, or a control added later) are a run of their own."""
    base = f"{run_id}-L{level:02d}"
    firsts = list(firsts or [0] * len(members))
    if len(firsts) != len(members):
        raise ValueError(f"firsts={firsts!r}: one first replicate per member group {list(members)!r} is needed")
    if not any(firsts) and (not members or members[0][0] == "ticket"):  # the level's first training
        return base
    return base + "".join(f"-{kind}{first}" for (kind, _), first in zip(members, firsts))


def _path(directory: str) -> str:
    return os.path.join(directory, "wandb", STEPS_FILE)


def _read(directory: str) -> dict[str, int]:
    try:
        with open(_path(directory)) as f:
            data = json.load(f)
    except (OSError, ValueError):  # none yet (or unreadable: start from W&B's own step)
        return {}
    return data if isinstance(data, dict) else {}


def next_step(directory: str, run) -> int:
    """The step of the next history row of the W&B run `run` logged under `directory`: after the
    last one any invocation logged (kept in the steps file) and after the run's own (online, a
    resumed run starts at the server's step)."""
    return max(int(_read(directory).get(run.id, 0)), int(getattr(run, "step", 0) or 0))


def save_step(directory: str, run_id: str, step: int) -> None:
    """Note that the W&B run `run_id`'s next history row is `step`."""
    from lth.runs.run_dir import write_json

    write_json(_path(directory), {**_read(directory), run_id: int(step)})
