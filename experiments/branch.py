#!/usr/bin/env python
"""Train the tickets of a finished lottery run under other settings (`lth.lottery.branch`).

    python experiments/branch.py branch.source=runs/mlp-mnist1d-<hash> branch.levels=[2,4]
    python experiments/branch.py branch.source=RUN branch.levels=[3] dataset=fashion_mnist   # ticket transfer
    python experiments/branch.py branch.source=RUN branch.levels=[3] branch.mask=shuffle_layerwise seed=1
    python experiments/branch.py branch.source=RUN branch.levels=[3] branch.weights=final optimizer.lr=1e-4

The branch starts from the source run's own `config.yaml`; the overrides on this command line (a
config group such as `dataset=fashion_mnist`, or a key such as `train.duration=2ep`) replace what
they name and nothing else. Its run directory goes beside the source run unless
`paths.runs_dir` is given. Bad values end with one line naming the setting, exit status 2, and
nothing written.
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# Jobs in other processes (the joblib and submitit launchers) import lth and experiments.* from here too.
os.environ["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != ROOT])

import hydra  # noqa: E402
from hydra.core.config_store import ConfigStore  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from lth.config.schema import Config, structured_schema  # noqa: E402

ConfigStore.instance().store(name="lth_schema", node=structured_schema())


def branch_config(composed: DictConfig, overrides: list[str]) -> Config:
    """The settings of this run (`experiments/common.py`: a source run's config + the overrides)."""
    from experiments.common import settings

    return settings(composed, overrides, "branch", required=True)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(dcfg: DictConfig) -> None:
    from experiments.common import run_or_exit

    def work():
        from lth.lottery import branch

        return branch.run(branch_config(dcfg, list(HydraConfig.get().overrides.task)))

    outcome = run_or_exit(work)
    if outcome is None:  # a sweep's job that failed: recorded, and the other jobs go on
        return
    from lth.runs import results

    print()  # the lottery run's table format (experiments/lottery.py), with the source ticket beside each level
    print(results.format_summary(outcome.summary))
    print(results.verdict_legend(outcome.summary))
    print(f"\nresults: {os.path.join(outcome.run_dir, 'results.csv')}")
    print(f"run directory: {outcome.run_dir}")


if __name__ == "__main__":
    main()
