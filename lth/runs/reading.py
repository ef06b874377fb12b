"""Reading runs back: a run directory's tables, histories and settings, one run or many.

`load_run(dir)` returns a `Run` (config, results, per-level summary, histories); `load_runs(dirs)`
one table over many runs with their settings as columns. Below the API (`lth.api`, which runs
experiments) and the analysis (`lth.analysis`: metrics and figures read runs through this module),
so that reading a run never imports what makes one.
"""

from __future__ import annotations

import dataclasses
import glob as _glob
import json
import os
import shutil
from typing import Any, NamedTuple, Optional, Union

import pandas as pd

from lth.runs import sweep_dirs
from lth.runs.sweep_dirs import is_run_dir

HISTORY_KEYS = ["level", "kind", "replicate", "step"]


class Run(NamedTuple):
    results: pd.DataFrame
    history: pd.DataFrame
    config: dict
    summary: dict
    path: str
    instability: Optional[pd.DataFrame]
    curves: Optional[pd.DataFrame]


def load_run(path: Union[str, os.PathLike]) -> Run:
    """The run in directory `path` (a run directory, a branch, or a trimmed copy from
    `export_tables`) as a `Run`; FileNotFoundError when `path` holds no run."""
    import yaml

    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such directory (expected a run directory with results.csv, config.yaml, "
                                "summary.json and level_NN/ folders, as lth.run or experiments/lottery.py write them)")
    if sweep_dirs.is_unfinished_run(path):
        raise FileNotFoundError(f"{path}: {sweep_dirs.IN_PROGRESS} (a run started here, but no level has "
                                "finished yet, so there is no results.csv)")
    if not is_run_dir(path):
        raise FileNotFoundError(f"{path}: not a run directory: no results.csv there (a run directory holds results.csv, "
                                "config.yaml, summary.json and level_NN/; an instability analysis, instability.csv)")
    if os.path.isfile(os.path.join(path, "results.csv")):
        results = pd.read_csv(os.path.join(path, "results.csv"))
    elif os.path.isfile(os.path.join(path, "report.csv")):  # a compression: its size report
        results = pd.read_csv(os.path.join(path, "report.csv"))
    else:  # an instability analysis: no levels
        from lth.runs.results import COLUMNS

        results = pd.DataFrame(columns=COLUMNS)
    summary = _read_json(os.path.join(path, "summary.json")) or {}
    cfg_path = os.path.join(path, "config.yaml")
    if os.path.isfile(cfg_path):
        with open(cfg_path) as f:
            config = yaml.safe_load(f) or {}
    else:
        config = summary.get("config", {})
    return Run(results, read_history(path), config, summary, path,
               _read_csv(os.path.join(path, "instability.csv")), _read_csv(os.path.join(path, "curves.csv")))


def _read_json(path: str) -> Optional[dict]:
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _read_csv(path: str) -> Optional[pd.DataFrame]:
    return pd.read_csv(path) if os.path.isfile(path) else None


def result_files(path: str) -> list[tuple[int, str, str]]:
    """(level, kind, result.json path) of every trained kind of every level on disk."""
    out = []
    for d in sorted(_glob.glob(os.path.join(path, "level_[0-9]*"))):
        name = os.path.basename(d)
        try:
            level = int(name.split("_", 1)[1])
        except ValueError:
            continue
        if os.path.isfile(os.path.join(d, "result.json")):
            out.append((level, "ticket", os.path.join(d, "result.json")))
        for c in sorted(_glob.glob(os.path.join(d, "controls", "*", "result.json"))):
            out.append((level, os.path.basename(os.path.dirname(c)), c))
    return out


def read_history(path: str) -> pd.DataFrame:
    """The long evaluation history of the run at `path` (see the module docstring): from the
    levels' result.json files, else history.csv, else an empty frame."""
    files = result_files(path)
    if not files:
        csv = os.path.join(path, "history.csv")
        if os.path.isfile(csv):
            return pd.read_csv(csv)
        return pd.DataFrame(columns=HISTORY_KEYS)
    frames = []
    for level, kind, f in files:
        with open(f) as fh:
            result = json.load(fh)
        frames.append(history_frame(result, level=level, kind=kind))
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=HISTORY_KEYS)
    return _sort_history(pd.concat(frames, ignore_index=True))


def history_frame(result: dict, *, level: int, kind: str) -> pd.DataFrame:
    """One result.json's history in long form. Member j of every evaluated array is the member of
    the file's row j (its `kind` and `replicate`); without rows, member j is replicate j of `kind`
    at `level`."""
    import numpy as np

    hist = result.get("history") or {}
    steps, evals = hist.get("eval_steps") or [], hist.get("evals") or []
    if not steps or not evals:
        return pd.DataFrame(columns=HISTORY_KEYS)
    metrics = list(dict.fromkeys(k for e in evals for k in e))
    n = len(next(iter(evals[0].values())))
    rows = result.get("rows") or []
    if len(rows) == n:
        levels = np.array([int(r.get("level", level)) for r in rows])
        kinds = np.array([str(r.get("kind", kind)) for r in rows], dtype=object)
        reps = np.array([int(r["replicate"]) for r in rows])
    else:
        levels, kinds, reps = np.full(n, level), np.full(n, kind, dtype=object), np.arange(n)
    E = len(steps)
    data = {"level": np.tile(levels, E), "kind": np.tile(kinds, E), "replicate": np.tile(reps, E),
            "step": np.repeat(np.asarray(steps, dtype=np.int64), n)}
    for m in metrics:
        data[m.replace("/", "_")] = np.concatenate(
            [np.asarray(e[m], dtype=float) if m in e else np.full(n, np.nan) for e in evals])
    return pd.DataFrame(data)


def _sort_history(h: pd.DataFrame) -> pd.DataFrame:
    return h.sort_values(HISTORY_KEYS, kind="stable").reset_index(drop=True)


def find_runs(dirs_or_glob: Union[str, os.PathLike, list]) -> list[str]:
    """Run directories from a list of paths or a glob pattern; a folder that is not a run is searched
    for the runs beneath it; a sweep's folder (`runs/multirun/<date>_<time>`, with `jobs/*.json`),
    given or beneath, gives the run directories of its finished jobs (`lth.runs.sweep_dirs`)."""
    items = [dirs_or_glob] if isinstance(dirs_or_glob, (str, os.PathLike)) else list(dirs_or_glob)
    paths = []
    for item in items:
        item = os.path.expanduser(os.fspath(item))
        matches = sorted(_glob.glob(item)) if _glob.has_magic(item) else [item]
        if not matches:
            raise FileNotFoundError(f"{item}: matches no path")
        for m in matches:
            if is_run_dir(m):
                paths.append(m)
            elif os.path.isdir(m):
                if sweep_dirs.is_sweep_dir(m):  # a multirun's folder: its finished jobs' runs (jobs/*.json)
                    paths.extend(sweep_dirs.run_dirs(m))
                    continue
                walked = [d for d, _, _ in os.walk(m)]
                found = sorted(d for d in walked if is_run_dir(d))
                found += [r for d in sorted(walked) if sweep_dirs.is_sweep_dir(d) for r in sweep_dirs.run_dirs(d)]  # runs_dir/multirun/...
                if not found and not _glob.has_magic(item):
                    raise FileNotFoundError(f"{m}: neither a run directory (no results.csv) nor a folder holding runs")
                paths.extend(found)
            elif not _glob.has_magic(item):
                raise FileNotFoundError(f"{m}: no such directory (expected a run directory with results.csv)")
    seen, out = set(), []
    for p in paths:
        real = os.path.realpath(p)
        if real not in seen:
            seen.add(real)
            out.append(os.path.abspath(p))
    if not out:
        raise FileNotFoundError(f"{dirs_or_glob}: no run directories (folders with results.csv) found")
    return out


def flatten_settings(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config dict as {dotted path: value}: sections of the `Config` schema are flattened; lists
    and open dicts (`pruning.fractions`) become JSON strings, so that they compare and group."""
    from lth.config.schema import Config

    return _flatten(config, Config, prefix)


def _flatten(d: dict[str, Any], cls, prefix: str) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(cls)} if cls is not None else {}
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        f = fields.get(key)
        sub = None
        if f is not None and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
            sub = type(default) if dataclasses.is_dataclass(default) else None
        if isinstance(value, dict) and (sub is not None or (f is None and cls is None and value)):
            out.update(_flatten(value, sub, name + "."))
        elif isinstance(value, (list, tuple, dict)):
            out[name] = json.dumps(value, sort_keys=True, default=str)
        else:
            out[name] = value
    return out


def load_runs(dirs_or_glob: Union[str, os.PathLike, list], *, history: bool = False):
    """The results of many runs in one DataFrame: a column `run` (the directory's name), `path`,
    the results columns, then one column per setting by dotted path (`pruning.fraction`,
    `rewind.mode`, `seed`, `model.name`, ...; lists as JSON strings). `varying_settings(df)` lists
    the settings that differ. With `history=True`, (results, history), both with those columns."""
    paths = find_runs(dirs_or_glob)
    frames, hists, names = [], [], []
    for p in paths:
        r = load_run(p)
        settings = flatten_settings(r.config)
        names.extend(k for k in settings if k not in names)
        frames.append(_with_settings(r.results, p, settings))
        if history:
            hists.append(_with_settings(r.history, p, settings))
    df = pd.concat(frames, ignore_index=True)
    df = df[[c for c in df.columns if c not in names] + names]
    df.attrs["settings"] = list(names)
    if not history:
        return df
    h = pd.concat(hists, ignore_index=True)
    h = h[[c for c in h.columns if c not in names] + [n for n in names if n in h.columns]]
    h.attrs["settings"] = list(names)
    return df, h


def _with_settings(frame: pd.DataFrame, path: str, settings: dict[str, Any]) -> pd.DataFrame:
    cols = {"run": os.path.basename(path.rstrip(os.sep)), "path": path}
    cols.update({k: v for k, v in settings.items() if k not in frame.columns})
    extra = pd.DataFrame({k: [v] * len(frame) for k, v in cols.items()}, index=frame.index)
    return pd.concat([extra[["run", "path"]], frame, extra.drop(columns=["run", "path"])], axis=1)


def setting_columns(df: pd.DataFrame) -> list[str]:
    """The settings columns of a `load_runs` table (kept in `df.attrs`, else recognised by name)."""
    names = df.attrs.get("settings")
    if names:
        return [c for c in names if c in df.columns]
    from lth.config.schema import Config, to_dict

    known = set(flatten_settings(to_dict(Config())))
    top = {k.split(".")[0] for k in known}
    return [c for c in df.columns if c in known or c.split(".")[0] in top and "." in c]


def varying_settings(df: pd.DataFrame, *, ignore: tuple[str, ...] = ("paths.", "logger.")) -> list[str]:
    """The settings columns of `df` (from `load_runs`) whose value differs between runs, except
    those starting with a prefix in `ignore` (where runs went, how they logged)."""
    out = []
    for c in setting_columns(df):
        if any(c.startswith(p) for p in ignore):
            continue
        if df[c].astype(str).nunique(dropna=False) > 1:
            out.append(c)
    return out


def export_tables(run_dir: Union[str, os.PathLike], out_dir: Union[str, os.PathLike], *,
                  history_levels: Optional[list[int]] = None) -> str:
    """Copy a run's tables, without checkpoints, to `out_dir` (for committing under `results/`):
    results.csv, summary.json, config.yaml, instability.csv and curves.csv when present, and
    history.csv, the long evaluation history (levels in `history_levels` only, when given), floats
    rounded to 5 decimals. `load_run(out_dir)` reads it back. Returns `out_dir`."""
    src = load_run(run_dir)
    out = os.path.abspath(os.path.expanduser(os.fspath(out_dir)))
    if os.path.realpath(out) == os.path.realpath(src.path):
        raise ValueError(f"export_tables: out_dir is the run directory itself ({out})")
    os.makedirs(out, exist_ok=True)
    for name in ("results.csv", "summary.json", "config.yaml", "instability.csv", "curves.csv"):
        f = os.path.join(src.path, name)
        if os.path.isfile(f):
            shutil.copyfile(f, os.path.join(out, name))
    h = src.history
    if history_levels is not None:
        h = h[h.level.isin(list(history_levels))]
    from lth.runs.run_dir import write_atomic

    write_atomic(os.path.join(out, "history.csv"), h.round(5).to_csv(index=False))
    return out
