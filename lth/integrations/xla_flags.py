"""XLA flags lth sets before JAX starts: reductions on a CPU that do not depend on the batch.

XLA:CPU (jaxlib 0.10) hands reductions to YNNPACK, whose summation order depends on the shape of
the whole reduction. A level's members are a leading batch axis, so the sum over a batch of
examples in one member's bias gradient rounded differently with 4 members than with 2: the same
member, the same data, last-bit differences after one step (measured: 2.9e-11 in a bias
gradient, 1.9e-6 in a plain `sum(axis=1)` of (4, 100, 500) vs (2, 100, 500) normal values).
Adam turns last bits into sign flips and training amplifies them: MNIST-1D test accuracies after
200 steps differed by up to 1.1% between a run on one device and the same run with its members
split over two (`lth.train.sharding`). With YNNPACK's reduction fusion off, a member's results are the
same bit for bit whatever the number of members beside it or the number of devices, and training
was no slower on this 2-core CPU (`python scripts/bench_ynn.py`, medians of alternating runs,
steps/s with the flag vs XLA's default: MNIST-1D MLP R=2 232 vs 220, R=4 98 vs 85; LeNet-5 on
MNIST R=2 7.7 vs 6.1).

`apply()` adds `--xla_cpu_experimental_ynn_fusion_type=` to `XLA_FLAGS` when nothing there
mentions that flag, only for the jaxlib versions it was checked on (an unknown flag stops XLA at
start-up), and only before JAX has created its CPU backend (flags are read then). Set
`LTH_XLA_FLAGS=keep` to leave `XLA_FLAGS` alone. It is called on `import lth`.
"""

from __future__ import annotations

import os
import sys

FLAG = "--xla_cpu_experimental_ynn_fusion_type="
CHECKED = ("0.10.",)  # jaxlib versions that know the flag and were measured with it


def _jaxlib_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("jaxlib")
    except Exception:  # noqa: BLE001 - not installed: nothing to set
        return None


def apply() -> bool:
    """Add the flag when allowed; True when `XLA_FLAGS` now carries it."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "ynn_fusion_type" in flags:  # the user's own choice
        return FLAG in flags.split()
    if os.environ.get("LTH_XLA_FLAGS") == "keep":
        return False
    v = _jaxlib_version()
    if v is None or not v.startswith(CHECKED):
        return False
    if "jax" in sys.modules and _backend_started():
        return False
    os.environ["XLA_FLAGS"] = (flags + " " + FLAG).strip()
    return True


def _backend_started() -> bool:
    try:
        from jax._src import xla_bridge

        return bool(getattr(xla_bridge, "_backends", {}))
    except Exception:  # noqa: BLE001
        return True  # unknown: do not change flags that may already be in use
