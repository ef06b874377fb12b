"""What the Hydra entry points share.

`run_or_exit`: quiet library logging, and a bad setting, missing data or a locked run ends with
one line on stderr and exit status 2 (nothing written). `overlay`: the settings of a run that
starts from a finished lottery run (a branch, an instability analysis under a ticket's mask): the
source run's own `config.yaml`, with the command line's overrides applied. A group override
(`dataset=fashion_mnist`) takes the composed group wholesale, a key override
(`train.duration=200it`) the composed value of that key; nothing else changes.

In a Hydra multirun (`-m`), a job that fails or is refused is recorded (`<sweep dir>/jobs/<n>.json`)
and returns, so that every other job still runs, on every launcher (Hydra's basic launcher would
stop the sweep at a refusal's `sys.exit`, and raise after the batch at an exception);
`lth.integrations.sweep_callbacks.SweepSummary` prints the table of job statuses at the end and makes the
sweep's exit status non-zero when a job did not finish. Each job's W&B runs carry the tag
`sweep:<sweep folder name>` (`sweep_tagged`)."""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from lth.config.schema import Config, ConfigError, from_dict, to_dict

NOT_FROM_A_SOURCE = ("experiment", "debug")


def overlay(composed: DictConfig, overrides: list[str], source: str, *, setting: str) -> Config:
    """The config of the run at `source` (named by the override `setting`) with `overrides`, as
    composed in `composed`; its run directory goes beside the source unless `paths.runs_dir` is
    given."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from lth.lottery.branch import source_config

    merged = OmegaConf.create(to_dict(source_config(source, setting=setting)))
    runs_dir_given = False
    for ov in OverridesParser.create().parse_overrides(overrides):
        key = ov.key_or_group
        if key in NOT_FROM_A_SOURCE:
            raise ConfigError(f"{key}={ov.value()}: presets do not apply with {setting}, which starts from the source's "
                              "config; override the keys themselves (e.g. train.duration=200it)")
        if ov.is_delete() or ov.is_add() or ov.is_force_add():
            raise ConfigError(f"{ov.input_line}: with {setting}, plain overrides only (key=value or group=option)")
        runs_dir_given |= key in ("paths", "paths.runs_dir")
        OmegaConf.update(merged, key, OmegaConf.select(composed, key), merge=False)
    if not runs_dir_given:
        merged.paths.runs_dir = os.path.dirname(os.path.abspath(os.path.expanduser(source)))
    return from_dict(OmegaConf.to_container(merged, resolve=True))


def run_or_exit(work: Callable[[], Any]) -> Any:
    """`work()`, with library logging at WARNING; a `ConfigError`, `DataError` or `RunLocked`
    becomes `error: ...` on stderr and exit status 2. In a Hydra multirun, each job's overrides,
    run directory and status are printed and recorded (`record_job`: `running`, then `done`,
    `refused`, `failed` or `interrupted`), and a refused or failed job returns None instead of
    ending the process, so the sweep's other jobs still run (the sweep's exit status says it:
    `lth.integrations.sweep_callbacks`)."""
    import logging
    import traceback

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax reports every save at INFO
    from lth.integrations import distributed
    from lth.data import DataError
    from lth.runs.interrupt import Interrupted
    from lth.runs.run_dir import RunLocked

    in_sweep = sweep_name() is not None
    record_job("running")  # a job killed outright (OOM, a node lost) keeps this status
    try:
        distributed.maybe_initialize()  # a multi-host job (SLURM tasks, LTH_DISTRIBUTED=1): before JAX starts
        out = work()
    except (ConfigError, DataError, RunLocked) as e:
        record_job("refused", error=str(e))
        print(f"error: {e}", file=sys.stderr)
        if in_sweep:
            return None
        distributed.exit_now(2)  # one process of several: no waiting for the others at exit
        sys.exit(2)
    except Interrupted as e:  # SIGTERM / SIGINT: the level in progress was checkpointed (lth.runs.interrupt)
        record_job("interrupted", error=str(e))
        print(f"lth: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except Exception as e:  # noqa: BLE001
        record_job("failed", error=f"{type(e).__name__}: {e}")
        if in_sweep:
            traceback.print_exc()
            return None
        if distributed.initialized():  # the others wait in a collective: exit now (the launcher stops them)
            traceback.print_exc()
            distributed.exit_now(1)
        raise
    except BaseException as e:  # Ctrl-C, SystemExit, a pre-emption signal: the sweep stops too
        record_job("interrupted", error=type(e).__name__)
        raise
    record_job("done", run_dir=getattr(out, "run_dir", None))
    return out


def sweep_name() -> str | None:
    """In a Hydra multirun, the name of the sweep's folder (`hydra.sweep.dir`'s last component, by
    default its start time `2026-11-27_04-05-06`; `hydra.sweep.dir=runs/multirun/NAME` names it);
    otherwise None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):  # not under Hydra (a test, the Python API)
        return None
    if hc.mode != RunMode.MULTIRUN:
        return None
    return os.path.basename(os.path.normpath(str(hc.sweep.dir)))


def sweep_tagged(cfg: Config) -> Config:
    """`cfg` with the W&B tag `sweep:<name>` of the multirun it runs in (`sweep_name`), so the W&B
    runs of all the sweep's jobs can be found and grouped together (each run's W&B `group` stays
    its run directory's name, which groups its levels). `sweep:` tags are lth's own: one taken
    over from a source run's config (a branch of a swept run) is dropped, and outside a multirun
    there is none. Tags are not part of the run's content hash: the sweep's runs are the runs a
    plain command makes."""
    import dataclasses

    name = sweep_name()
    tags = [t for t in cfg.logger.wandb.tags if not str(t).startswith("sweep:")] + ([f"sweep:{name}"] if name else [])
    if tags == list(cfg.logger.wandb.tags):
        return cfg
    wandb = dataclasses.replace(cfg.logger.wandb, tags=tags)
    return dataclasses.replace(cfg, logger=dataclasses.replace(cfg.logger, wandb=wandb))


def record_job(status: str, **fields: Any) -> None:
    """In a Hydra multirun: print which overrides went to which run directory and write it to
    `<sweep dir>/jobs/<job number>.json` (each sweep has a folder of its own, named by its start
    time: `hydra.sweep.dir`, so a later sweep never overwrites it); outside a multirun, nothing."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):  # not under Hydra (a test, the Python API)
        return
    if hc.mode != RunMode.MULTIRUN:
        return
    from lth.integrations import distributed
    from lth.runs.run_dir import write_json

    if not distributed.is_primary():  # the other processes of a multi-host job: task 0 records it
        return

    overrides = list(hc.overrides.task)
    record = {"job": hc.job.num, "overrides": overrides, "status": status, **fields}
    write_json(os.path.join(hc.sweep.dir, "jobs", f"{hc.job.num:04d}.json"), record)
    if status == "running":  # the start is recorded, the outcome printed
        return
    where = fields.get("run_dir") or fields.get("error", "")
    print(f"[sweep {hc.sweep.dir}] job {hc.job.num} ({' '.join(overrides) or 'no overrides'}): {status} {where}".rstrip())


def settings(composed: DictConfig, overrides: list[str], section: str, *, required: bool) -> Config:
    """The run's config: with `<section>.source` set, that run's config with `overrides`
    (`overlay`); without it, the composed config, or a refusal when the section needs a source."""
    source = composed[section].source
    if source:
        return sweep_tagged(overlay(composed, overrides, source, setting=f"{section}.source"))
    if required:
        raise ConfigError(f"{section}.source=null: name the lottery run directory to start from ({section}.source=RUN_DIR)")
    return sweep_tagged(from_dict(OmegaConf.to_container(composed, resolve=True)))
