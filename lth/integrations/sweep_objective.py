"""The numbers a sweep optimises, one per finished lottery run, from its per-level table.

A sweep engine (W&B's agent, Hydra's Optuna sweeper) compares runs by one number. Two are defined,
from `lth.runs.results.summarize`'s table of the tickets (one row per level, means over replicates):

- `sweep/final_test_accuracy` = mean over replicates of the tickets' final test accuracy at the
  run's last level L (maximise). Meaningful when the runs compared reach the same density (a fixed
  ladder: `conf/wandb_sweep/bayes.yaml`; or a per-layer search under a budget:
  `conf/search/layer_rates_flops.yaml`, whose objective it is).
- `sweep/sparsest_matching_density` = min { density_l : level l >= 1 is matching }, and 1.0 (the
  dense network) when no pruned level matches (minimise). Matching is `summarize`'s rule: the
  level's mean final test accuracy >= the dense level's minus one standard deviation over its
  replicates, so it needs >= 2 replicates (with one there is no verdict and the value is 1.0).
  Meaningful when the runs compared prune differently (rate, rewind point: `grid.yaml`,
  `random.yaml`): how sparse a ticket gets before it falls behind the dense network.

A lottery run logs both to its W&B summary run's summary (under a W&B agent, the agent's run:
`lth.integrations.wandb_logger`); `experiments/lottery.py` returns `final_test_accuracy` to Hydra's
sweeper.
"""

from __future__ import annotations

import pandas as pd

FINAL_TEST_ACCURACY = "sweep/final_test_accuracy"
SPARSEST_MATCHING_DENSITY = "sweep/sparsest_matching_density"
GOALS = {FINAL_TEST_ACCURACY: "maximize", SPARSEST_MATCHING_DENSITY: "minimize"}


def objectives(summary_table: pd.DataFrame) -> dict[str, float]:
    """Both numbers (module doc) from `lth.runs.results.summarize(results)` (index: level)."""
    if summary_table.empty:
        raise ValueError("the run's table has no levels: nothing to optimise")
    last = summary_table.loc[summary_table.index.max()]
    matching = summary_table.get("matching")
    sparsest = 1.0
    if matching is not None:
        ok = summary_table[(summary_table.index >= 1) & matching.fillna(False).astype(bool)]
        if not ok.empty:
            sparsest = float(ok.density.min())
    return {FINAL_TEST_ACCURACY: float(last.test_acc), SPARSEST_MATCHING_DENSITY: sparsest}
