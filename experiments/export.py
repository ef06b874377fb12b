#!/usr/bin/env python
"""A finished level as a deployable model (`lth.export.export`, issue 29).

    python experiments/export.py export.source=runs/<run> export.level=2 export.format=onnx
    python experiments/export.py export.source=RUN export.level=2 export.format=stablehlo
    python experiments/export.py export.source=RUN export.level=2 export.kind=random_prune export.replicate=1
    python experiments/export.py export.source=COMPRESS_RUN   # a compress.method=int8 run: int8 weights

Structured tickets (`pruning.granularity=neuron|channel`) become physically smaller networks; the
model file (`model.onnx` or `model.jax_export`) is read back, run on the test set and compared
with the masked network; latency and throughput of the dense, masked and exported networks in XLA
and onnxruntime are printed and written to `report.csv` and `summary.json`. The settings start
from the source run's `config.yaml`; the run directory goes beside the source unless
`paths.runs_dir` is given. Bad values end with one line naming the setting, exit status 2, and
nothing written.
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != ROOT])

import hydra  # noqa: E402
from hydra.core.config_store import ConfigStore  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from lth.config.schema import structured_schema  # noqa: E402

ConfigStore.instance().store(name="lth_schema", node=structured_schema())


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(dcfg: DictConfig) -> None:
    from experiments.common import run_or_exit, settings

    def work():
        from lth.export import export

        return export.run(settings(dcfg, list(HydraConfig.get().overrides.task), "export", required=True))

    outcome = run_or_exit(work)
    if outcome is None:  # a sweep's job that failed: recorded, and the other jobs go on
        return
    print(f"\nsummary: {os.path.join(outcome.run_dir, 'summary.json')}")
    print(f"run directory: {outcome.run_dir}")


if __name__ == "__main__":
    main()
