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

import os
from typing import Any, Callable

# Reading runs lives below this module (lth.runs.reading); its names stay importable from here.
from lth.runs.reading import (  # noqa: F401
    Run,
    export_tables,
    find_runs,
    flatten_settings,
    history_frame,
    is_run_dir,
    load_run,
    load_runs,
    read_history,
    result_files,
    setting_columns,
    varying_settings,
)

# -- running ---------------------------------------------------------------------------------------

EXPERIMENTS = ("auto", "lottery", "branch", "instability", "compress", "export")


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
    `Run.results` is the size report, report.csv); `export` is a level as an ONNX file or a serialized
    JAX program (`lth.export.export.run`, from `export.source`'s config; `Run.results` is the speed
    and size report, report.csv). A lottery run takes a researcher's own `model`
    (a Flax module object) and `data` (a mapping of arrays x_train, y_train, x_test, y_test) in
    place of the config's (`lth.user_components`)."""
    from lth.config.schema import Config, ConfigError

    if experiment not in EXPERIMENTS:
        raise ConfigError(f"lth.run: experiment={experiment!r} is not one of {', '.join(EXPERIMENTS)}")
    if isinstance(config, Config):
        cfg = config
    elif isinstance(config, dict):
        cfg = config_from_dict(config, source_key=experiment if experiment in ("instability", "compress", "export") else "branch")
    else:
        raise TypeError(f"lth.run: config must be an lth.config.schema.Config or a dict of settings, not {type(config).__name__}")
    if experiment == "instability":
        from lth.analysis import instability as module
    elif experiment == "compress":
        from lth.compression import compress as module
    elif experiment == "export":
        from lth.export import export as module
    elif experiment == "branch" or (experiment == "auto" and cfg.branch.source):
        from lth.lottery import branch as module
    else:
        from lth.lottery import levels as module
    if model is not None or data is not None:
        if module.__name__ != "lth.lottery.levels":
            raise ConfigError(f"lth.run: model= and data= are for a lottery run, not {module.__name__}; name the model and "
                              "data by model._target_ and dataset._target_ in the config instead")
    from lth.analysis import reports

    # The W&B reports (ticket metrics and figures) are asked for here, by the caller: the loop draws nothing.
    asked = {"lth.lottery.levels": reports.lottery, "lth.analysis.instability": reports.instability}.get(module.__name__)
    extra = {"reports": asked} if asked is not None else {}
    if model is not None or data is not None:
        extra.update(model=model, data=data)
    return load_run(module.run(cfg, echo=echo, **extra).run_dir)


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


# -- many runs -------------------------------------------------------------------------------------


# -- trimmed copies --------------------------------------------------------------------------------

