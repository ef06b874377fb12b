#!/usr/bin/env python
"""Deep Compression of a finished level (`lth.compression.compress`; Han, Mao & Dally 2016).

    python experiments/compress.py compress.source=runs/<run> compress.level=5
    python experiments/compress.py compress.source=RUN compress.level=5 "compress.bits={kernel: 6}" "compress.index_bits={kernel: 5}"
    python experiments/compress.py compress.source=RUN compress.level=5 compress.method=int8
    python experiments/compress.py compress.source=RUN compress.level=5 compress.kind=reinit    # a control

The settings start from the source run's `config.yaml` (the overrides on this command line replace
what they name); the run directory goes beside the source unless `paths.runs_dir` is given. It
prints the size of every stage (dense float32, sparse, weight-shared, Huffman-coded), the
compression ratios and the test accuracy after each stage, and writes them to `summary.json` and
`report.csv`. Bad values end with one line naming the setting, exit status 2, and nothing written.
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


def compress_config(composed: DictConfig, overrides: list[str]) -> Config:
    """The settings of this run (`experiments/common.py`: a source run's config + the overrides)."""
    from experiments.common import settings

    return settings(composed, overrides, "compress", required=True)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(dcfg: DictConfig) -> None:
    from experiments.common import run_or_exit

    def work():
        from lth.compression import compress

        return compress.run(compress_config(dcfg, list(HydraConfig.get().overrides.task)))

    outcome = run_or_exit(work)
    if outcome is None:  # a sweep's job that failed: recorded, and the other jobs go on
        return
    print(f"\nsummary: {os.path.join(outcome.run_dir, 'summary.json')}")
    print(f"run directory: {outcome.run_dir}")


if __name__ == "__main__":
    main()
