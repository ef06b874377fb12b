"""lth: lottery-ticket experiments on JAX.

The README (quick start, overrides, presets, and "Internals", the map of this package) is the
documentation; each module's docstring states the equation it implements. In short: iterative
magnitude pruning with rewinding (`lth.lottery`), rewinding modes and controls as data
(`lth.rewind`, `lth.controls`), pruning methods and schedules (`lth.methods`, `lth.scores`,
`lth.pruning`, `lth.structured`, `lth.ablations`, `lth.gradual`), masks as pytrees (`lth.masks`),
a jit-compiled, vmapped masked trainer (`lth.train`) and winning-ticket outcomes (`lth.results`).
`experiments/lottery.py` is the Hydra command line; the library itself never imports Hydra.
"""

__version__ = "0.1.0"

from lth import xla_flags as _xla_flags  # noqa: E402  (before JAX starts: lth.xla_flags says why)

_xla_flags.apply()

# The Python API (`lth.api`, `lth.metrics`), imported on first use so that `import lth` stays cheap
# (no JAX): lth.run(config), lth.load_run(dir), lth.load_runs(dirs), lth.ticket_metrics(run).
_LAZY = {"run": "lth.api", "load_run": "lth.api", "load_runs": "lth.api", "Run": "lth.api",
         "varying_settings": "lth.api", "export_tables": "lth.api", "ticket_metrics": "lth.metrics",
         "register_method": "lth.user_components", "ScoreContext": "lth.user_components"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lth' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
