#!/usr/bin/env python
"""Run a lottery-ticket experiment (iterative magnitude pruning with rewinding).

    python experiments/lottery.py                                  # small MNIST-1D run
    python experiments/lottery.py experiment=lth_lenet_mnist       # Frankle & Carbin 2019
    python experiments/lottery.py dataset=mnist model=lenet_300_100 levels=5 pruning.fraction=0.2
    python experiments/lottery.py experiment=lth_lenet_mnist --cfg job   # show the composed config

Hydra composes `conf/` over the typed schema in `lth.config` (a misspelt key or a wrongly typed
value fails at compose time); this file converts the result once to a `lth.config.schema.Config` and
hands it to `lth.lottery.levels.run`, asking for the W&B reports (ticket metrics, figures:
`lth.analysis.reports.lottery`). Bad values end with one line naming the setting, exit status 2, and
nothing written.

The function returns the run's objective for Hydra's sweepers (the Optuna search of per-layer rates,
`+search=layer_rates_flops`): the tickets' final test accuracy at the last level
(`lth.integrations.sweep_objective`). In a multirun, a job whose settings exceed `budget.*` (`lth.sparsity.budget`) is
not trained and returns minus its excess over the budget (below any accuracy), so that the sweep
goes on.
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
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from lth.config.schema import from_dict, structured_schema  # noqa: E402

ConfigStore.instance().store(name="lth_schema", node=structured_schema())


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(dcfg: DictConfig) -> float | None:
    from experiments.common import run_or_exit, sweep_tagged
    from lth.sparsity import budget
    from lth.runs import results
    from lth.integrations import sweep_objective

    def work():
        from lth.analysis import reports
        from lth.lottery import levels as lottery

        try:
            return lottery.run(sweep_tagged(from_dict(OmegaConf.to_container(dcfg, resolve=True))), reports=reports.lottery)
        except budget.OverBudget as e:
            if not _multirun():
                raise
            infeasible.append(budget.infeasible_objective(e))
            print(f"infeasible, objective {infeasible[0]:.4f}: {e}", file=sys.stderr)
            return None

    infeasible: list[float] = []
    outcome = run_or_exit(work)
    if outcome is None:  # a sweep's job that failed (recorded; the other jobs go on) or was over budget
        return infeasible[0] if infeasible else None
    print()
    print(results.format_summary(outcome.summary))
    print(results.verdict_legend(outcome.summary))
    print(f"\nresults: {os.path.join(outcome.run_dir, 'results.csv')}")
    print(f"run directory: {outcome.run_dir}")
    return sweep_objective.objectives(outcome.summary)[sweep_objective.FINAL_TEST_ACCURACY]


def _multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


if __name__ == "__main__":
    main()
