#!/usr/bin/env python
"""Instability analysis, linear mode connectivity (`lth.analysis.instability`; Frankle et al. 2020).

    python experiments/instability.py "instability.points=[0it,100it,500it]"                  # dense MNIST-1D MLP
    python experiments/instability.py experiment=lth_lenet_mnist "instability.points=[0it,1000it]" replicates=3
    python experiments/instability.py instability.source=RUN_DIR instability.level=8 "instability.points=[0it,500it]"

For each rewind point k, two copies of the network at step k train to the end with different data
orders; `instability.csv` holds each point's error barrier along the straight line between them
(per replicate), `curves.csv` the test error at each of `instability.alphas` points of the line.
With `instability.source`, the settings start from that lottery run's `config.yaml` (the overrides
on this command line replace what they name) and the copies train under the ticket mask of
`instability.level`; the run directory goes beside the source unless `paths.runs_dir` is given.
Bad values end with one line naming the setting, exit status 2, and nothing written.
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


def instability_config(composed: DictConfig, overrides: list[str]) -> Config:
    """The settings of this run (`experiments/common.py`: a source run's config + the overrides)."""
    from experiments.common import settings

    return settings(composed, overrides, "instability", required=False)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(dcfg: DictConfig) -> None:
    from experiments.common import run_or_exit

    def work():
        from lth.analysis import instability, reports

        return instability.run(instability_config(dcfg, list(HydraConfig.get().overrides.task)), reports=reports.instability)

    outcome = run_or_exit(work)
    if outcome is None:  # a sweep's job that failed: recorded, and the other jobs go on
        return
    from lth.analysis.instability import summarize

    print()
    for p in summarize(outcome.table):
        print(f"k = {p['point']:>8}: error barrier {100 * p['barrier_mean']:.2f} ± {100 * p['barrier_std']:.2f}% "
              f"(min {100 * p['barrier_min']:.2f}, max {100 * p['barrier_max']:.2f}, {p['replicates']} replicates)"
              f"{'  stable' if p['stable'] else ''}")
    print(f"\ninstability: {os.path.join(outcome.run_dir, 'instability.csv')}")
    print(f"run directory: {outcome.run_dir}")


if __name__ == "__main__":
    main()
