"""lth: lottery-ticket experiments on JAX.

The README is the first read; the documentation site (`docs/`, `make docs`: user guide, presets,
"Internals", the map of this package, and an API reference built from these docstrings) the rest;
each module's docstring states the equation it implements. In short: iterative
magnitude pruning with rewinding (`lth.lottery`), rewinding modes and controls as data
(`lth.lottery.rewind`, `lth.lottery.controls`), pruning methods and schedules (`lth.sparsity.methods`, `lth.sparsity.scores`,
`lth.sparsity.pruning`, `lth.sparsity.structured`, `lth.sparsity.ablations`, `lth.sparsity.gradual`), masks as pytrees (`lth.sparsity.masks`),
a jit-compiled, vmapped masked trainer (`lth.train`) and winning-ticket outcomes (`lth.runs.results`).
`experiments/lottery.py` is the Hydra command line; the library itself never imports Hydra.
"""

__version__ = "0.1.0"

from lth.integrations import xla_flags as _xla_flags  # noqa: E402  (before JAX starts: lth.integrations.xla_flags says why)

_xla_flags.apply()

# The Python API (`lth.api`, `lth.analysis.metrics`), imported on first use so that `import lth` stays cheap
# (no JAX): lth.run(config), lth.load_run(dir), lth.load_runs(dirs), lth.ticket_metrics(run).
_LAZY = {"run": "lth.api", "load_run": "lth.runs.reading", "load_runs": "lth.runs.reading", "Run": "lth.runs.reading",
         "varying_settings": "lth.runs.reading", "export_tables": "lth.runs.reading",
         "ticket_metrics": "lth.analysis.metrics",
         "register_method": "lth.sparsity.custom_scores", "ScoreContext": "lth.sparsity.custom_scores"}


# Old module names (one release): each resolves to the very module it became (lth/_aliases.py).
import importlib.abc as _abc  # noqa: E402
import importlib.util as _util  # noqa: E402
import sys as _sys  # noqa: E402

from lth._aliases import OLD_TO_NEW as _OLD_TO_NEW  # noqa: E402


class _Alias(_abc.MetaPathFinder, _abc.Loader):
    """Finds an old module name and loads it as the module it became (the same object)."""

    def find_spec(self, fullname, path=None, target=None):
        return _util.spec_from_loader(fullname, self) if fullname in _OLD_TO_NEW else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        import importlib

        # the import system hands out sys.modules[name] after exec_module: the real module
        _sys.modules[module.__name__] = importlib.import_module(_OLD_TO_NEW[module.__name__])


if not any(isinstance(f, _Alias) for f in _sys.meta_path):
    _sys.meta_path.insert(0, _Alias())  # before any editable-install finder that maps lth.* to files


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    if f"lth.{name}" in _OLD_TO_NEW:  # an old module name as an attribute of lth (one release)
        import importlib

        return importlib.import_module(f"lth.{name}")
    raise AttributeError(f"module 'lth' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
