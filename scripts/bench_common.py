"""Shared pieces of the benchmark scripts: the dataset (real when $LTH_DATA_DIR has it, else random
data of the same shape), fresh stacked train states, a best-of-N timer, a lottery run timed level
by level, and the JSON record each script can write (`--json PATH`) for `scripts/gpu_report.py`."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from lth.sparsity import masks as M  # noqa: E402
from lth.config.schema import DatasetConfig  # noqa: E402
from lth.data import DataError, Dataset, load_dataset  # noqa: E402
from lth.train.trainer import Trainer, replicate_keys  # noqa: E402


def real_or_random(name: str, shape: tuple[int, ...], n_train: int, n_val: int, n_test: int) -> tuple[Dataset, str]:
    """Dataset `name` from $LTH_DATA_DIR (with an `n_val` validation split) or, when it is not
    there, uniformly random uint8 pixels and labels of 10 classes with the same sizes."""
    d = os.environ.get("LTH_DATA_DIR")
    if d:
        try:
            return load_dataset(DatasetConfig(name=name, val_size=n_val), d), f"real {name}"
        except DataError:
            pass
    return random_dataset(shape, n_train, n_val, n_test), f"random {name}-shaped data"


def random_dataset(shape: tuple[int, ...], n_train: int, n_val: int, n_test: int, num_classes: int = 10) -> Dataset:
    """Uniformly random uint8 pixels and labels: the throughput of a step does not depend on the
    pixels, so this stands in for a dataset too large to carry to the machine being measured."""
    rng = np.random.default_rng(0)
    n = n_train + n_val + n_test
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    y = rng.integers(0, num_classes, size=n).astype(np.int32)
    mean, std = np.full(shape[-1], 0.5, np.float32), np.full(shape[-1], 0.25, np.float32)
    a, b = n_train, n_train + n_val
    return Dataset("random", x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:], num_classes, mean, std, 255.0)


def fresh_states(trainer: Trainer, replicates: int):
    """(states, keys) of `replicates` stacked replicates at step 0 with all-ones masks."""
    keys = replicate_keys(0, replicates)
    v = trainer.init_variables(keys["init"])
    return trainer.create_states(v, jax.vmap(M.ones_like)(v["params"])), keys


def best_rate(fn: Callable[[], object], steps: int, repeats: int) -> float:
    """Best-of-`repeats` steps/s of `fn()`, which runs `steps` steps (after one warm-up call that
    also compiles)."""
    jax.block_until_ready(fn())
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = max(best, steps / (time.perf_counter() - t))
    return best


def timed_levels(cfg, echo: Callable[[str], None] = print) -> tuple[str, dict, list[dict]]:
    """Run the lottery config `cfg` through the real driver (`lth.lottery.levels.run`), timing each
    level by the wall clock between the driver's lines. Returns (run directory, summary.json, rows):
    per level its density, training steps (T at level 0, T - rewind step after), wall seconds (level
    0's include loading and compiling), training + evaluation seconds (the summary's), steps/s of
    those, the mean test accuracy and each replicate's ticket's (`test_accuracies`, by replicate)."""
    import pandas as pd

    from lth.lottery import levels as lottery

    marks = [time.perf_counter()]

    def on_line(line: str) -> None:
        echo(line)
        if line.startswith("level"):
            marks.append(time.perf_counter())

    outcome = lottery.run(cfg, echo=on_line)
    with open(os.path.join(outcome.run_dir, "summary.json")) as f:
        summary = json.load(f)
    tickets = pd.read_csv(os.path.join(outcome.run_dir, "results.csv")).query("kind == 'ticket'").sort_values("replicate")
    T, k = summary["plan"]["total_steps"], summary["plan"]["rewind_step"]
    walls = [b - a for a, b in zip(marks, marks[1:])]
    rows = []
    for level in sorted(int(L) for L in summary["levels"]):
        lv, steps = summary["levels"][str(level)], (T if level == 0 else T - k)
        rows.append({"level": level, "density": lv["density"], "steps": steps,
                     "wall_s": walls[level] if level < len(walls) else float("nan"), "train_s": lv["seconds"],
                     "steps_per_s": steps / lv["seconds"], "test_accuracy": lv["test_accuracy"],
                     "test_accuracies": [float(a) for a in tickets[tickets.level == level].test_accuracy]})
    return outcome.run_dir, summary, rows


def device_line() -> str:
    return f"device: {jax.devices()[0].device_kind} ({jax.default_backend()})"


def write_record(path: str | None, bench: str, rows: list[dict], **info) -> None:
    """Write `{"bench": ..., "device": ..., "rows": [...], **info}` to `path` (if given), the
    machine-readable twin of what the script printed."""
    if not path:
        return
    rec = {"bench": bench, "device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
           "xla_flags": os.environ.get("XLA_FLAGS", ""), **info, "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(rec, f, indent=1)
