"""Python API: run an experiment and read runs back, without a command line.

    import lth
    run = lth.run({"levels": 3, "pruning": {"fraction": 0.5}, "controls": ["reinit"]})
    run.results                      # results.csv as a DataFrame (also run[0])
    run.history                      # every evaluation: level, kind, replicate, step, test_accuracy, ...
    df = lth.load_runs("runs/frankle2021_pai_mnist1d")   # many runs, one table, settings as columns
    lth.api.varying_settings(df)     # the settings that differ between them

`run(config)` takes a `lth.config.schema.Config` or a nested dict of settings over the defaults the
command line has (the schema's, with the chosen model's, dataset's and optimizer's own from
`conf/`: `lth.config.defaults`); keys may also be dotted (`{"pruning.fraction": 0.5}`), and
`{"experiment": "lth_lenet_mnist", ...}` starts from a preset, composed by Hydra as on the
command line (`compose` does the same for a list of command-line overrides). With `branch.source` set it is a branch (`lth.lottery.branch`): a dict then
starts from the source run's config, as `experiments/branch.py` does; `experiment="instability"`
runs the instability analysis (`lth.analysis.instability`). It returns `load_run` of the run directory.

`load_run(dir)` reads a run directory (or a trimmed copy written by `export_tables`) into a `Run`:

    results      results.csv: one row per level x replicate x kind (no rows for an instability analysis)
    history      the evaluation history in long form: columns level, kind, replicate, step, then one
                 column per evaluated metric with '/' replaced by '_' (test_accuracy, test_loss,
                 val_accuracy, val_loss); from each level's result.json (tickets in level_NN/,
                 each control in level_NN/controls/<kind>/: member j of a file's history is its
                 row j, so kind and replicate come from the rows), else from history.csv
    config       config.yaml as a dict
    summary      summary.json as a dict ({} when absent)
    path         the directory
    instability  instability.csv (`lth.analysis.instability`) or None
    curves       curves.csv or None

Nothing here imports JAX unless an experiment is run.
"""

from __future__ import annotations

import dataclasses
import glob as _glob
import json
import os
import shutil
from typing import Any, Callable, NamedTuple, Optional, Union

import pandas as pd

HISTORY_KEYS = ["level", "kind", "replicate", "step"]


class Run(NamedTuple):
    results: pd.DataFrame
    history: pd.DataFrame
    config: dict
    summary: dict
    path: str
    instability: Optional[pd.DataFrame]
    curves: Optional[pd.DataFrame]


# -- running ---------------------------------------------------------------------------------------

EXPERIMENTS = ("auto", "lottery", "branch", "instability", "compress")


def run(config: Any, *, echo: Callable[[str], None] = print, experiment: str = "auto", model: Any = None,
        data: Any = None) -> Run:
    """Run (or continue: finished levels are skipped) the experiment `config` and return its `Run`.

    `config` is a `lth.config.schema.Config` or a nested dict of settings; a dict is typed and checked by
    the schema Hydra uses (a misspelt key or a wrongly typed value raises `ConfigError`), then every
    value by `lth.config.schema.validate`, before anything is written. `experiment`: `auto` is a lottery
    run, or a branch of the lottery run `branch.source` when that is set (`lth.lottery.branch.run`);
    `instability` is the instability analysis (`lth.analysis.instability.run`; a dict with
    `instability.source` starts from that run's config, as a branch does); `compress` is Deep
    Compression of a level (`lth.compression.compress.run`, from `compress.source`'s config likewise; its
    `Run.results` is the size report, report.csv). A lottery run takes a researcher's own `model`
    (a Flax module object) and `data` (a mapping of arrays x_train, y_train, x_test, y_test) in
    place of the config's (`lth.config.user_components`)."""
    from lth.config.schema import Config, ConfigError

    if experiment not in EXPERIMENTS:
        raise ConfigError(f"lth.run: experiment={experiment!r} is not one of {', '.join(EXPERIMENTS)}")
    if isinstance(config, Config):
        cfg = config
    elif isinstance(config, dict):
        cfg = config_from_dict(config, source_key=experiment if experiment in ("instability", "compress") else "branch")
    else:
        raise TypeError(f"lth.run: config must be an lth.config.schema.Config or a dict of settings, not {type(config).__name__}")
    if experiment == "instability":
        from lth.analysis import instability as module
    elif experiment == "compress":
        from lth.compression import compress as module
    elif experiment == "branch" or (experiment == "auto" and cfg.branch.source):
        from lth.lottery import branch as module
    else:
        from lth.lottery import levels as module
    if model is not None or data is not None:
        if module.__name__ != "lth.lottery.levels":
            raise ConfigError(f"lth.run: model= and data= are for a lottery run, not {module.__name__}; name the model and "
                              "data by model._target_ and dataset._target_ in the config instead")
        return load_run(module.run(cfg, echo=echo, model=model, data=data).run_dir)
    return load_run(module.run(cfg, echo=echo).run_dir)


def config_from_dict(settings: dict[str, Any], *, source_key: str = "branch"):
    """A `Config` from a nested (or dotted-key) dict over the schema's defaults; with
    `<source_key>.source` (`branch.source`, `instability.source`), over that run's config (its
    runs_dir beside the source unless given)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from lth.config.schema import ConfigError, from_dict, structured_schema, to_dict

    nested = _nest(settings)
    source = (nested.get(source_key) or {}).get("source")
    preset = nested.pop("experiment", None)
    try:
        base = structured_schema()
        if preset is not None:
            base = OmegaConf.merge(base, to_dict(compose([f"experiment={preset}"])))
        if source:
            from lth.lottery.branch import source_config

            src = to_dict(source_config(source))
            if "runs_dir" not in (nested.get("paths") or {}):
                src["paths"]["runs_dir"] = os.path.dirname(os.path.abspath(os.path.expanduser(source)))
            base = OmegaConf.merge(base, src)
        merged = OmegaConf.merge(base, OmegaConf.create(nested))
        return from_dict(OmegaConf.to_container(merged, resolve=True))
    except OmegaConfBaseException as e:
        msg = str(e).splitlines()[0]
        raise ConfigError(f"lth.run: {msg}") from None


def compose(overrides: list[str] = ()) -> "Config":
    """The `Config` the command line `python experiments/lottery.py OVERRIDES...` runs (Hydra's
    compose API over `conf/`, e.g. `compose(["experiment=lth_lenet_mnist", "levels=2"])`)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from lth.config import defaults
    from lth.config.schema import ConfigError, from_dict, structured_schema

    ConfigStore.instance().store(name="lth_schema", node=structured_schema())
    try:
        if GlobalHydra.instance().is_initialized():  # inside a Hydra app (over the same conf/) or a test's
            composed = hydra_compose("config", overrides=list(overrides))
        else:
            with initialize_config_dir(config_dir=defaults.CONF_DIR, version_base="1.3"):
                composed = hydra_compose("config", overrides=list(overrides))
    except Exception as e:  # noqa: BLE001  (Hydra's errors: an unknown preset, a misspelt key)
        raise ConfigError(f"lth.api.compose({list(overrides)}): {str(e).splitlines()[0]}") from None
    return from_dict(OmegaConf.to_container(composed, resolve=True))


def _nest(settings: dict[str, Any]) -> dict[str, Any]:
    """{"a.b": 1, "c": {"d": 2}} -> {"a": {"b": 1}, "c": {"d": 2}} (dotted keys split)."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            value = _nest(value)
        parts = str(key).split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]] = {**node[parts[-1]], **value}
        else:
            node[parts[-1]] = value
    return out


# -- loading ---------------------------------------------------------------------------------------

def is_run_dir(path: str) -> bool:
    """A lottery run or a branch (results.csv), an instability analysis (instability.csv) or a
    compression (report.csv)."""
    return any(os.path.isfile(os.path.join(path, f)) for f in ("results.csv", "instability.csv", "report.csv"))


def load_run(path: Union[str, os.PathLike]) -> Run:
    """The run in directory `path` (a run directory, a branch, or a trimmed copy from
    `export_tables`) as a `Run`; FileNotFoundError when `path` holds no run."""
    import yaml

    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such directory (expected a run directory with results.csv, config.yaml, "
                                "summary.json and level_NN/ folders, as lth.run or experiments/lottery.py write them)")
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


# -- many runs -------------------------------------------------------------------------------------

def find_runs(dirs_or_glob: Union[str, os.PathLike, list]) -> list[str]:
    """Run directories from a list of paths or a glob pattern; a folder that is not a run is searched
    for the runs beneath it; a sweep's folder (`runs/multirun/<date>_<time>`, with `jobs/*.json`),
    given or beneath, gives the run directories of its finished jobs (`lth.integrations.sweeps`)."""
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
                from lth.integrations import sweeps

                if sweeps.is_sweep_dir(m):  # a multirun's folder: its finished jobs' runs (jobs/*.json)
                    paths.extend(sweeps.run_dirs(m))
                    continue
                walked = [d for d, _, _ in os.walk(m)]
                found = sorted(d for d in walked if is_run_dir(d))
                found += [r for d in sorted(walked) if sweeps.is_sweep_dir(d) for r in sweeps.run_dirs(d)]  # runs_dir/multirun/...
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


# -- trimmed copies --------------------------------------------------------------------------------

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
