"""Configuration: the typed schema of every setting, group defaults, durations and files shipped inside installed packages.

`schema` gathers the names to import: `sections` (the dataclasses), `convert` (from and to dicts,
group defaults filled in), `validation` (`validate`), `choices` (allowed values), `hashing` (which
settings name a run directory), `errors` (ConfigError, raised by every check). Beside them: `defaults`,
`durations`, `method_settings`, `budget_settings` (a budget's checks that need no pruning counts; the
counted check is `lth.sparsity.budget.enforce`, above the config), `package_files`, `registry` (pruning
methods registered from Python) and `targets` (a researcher's own `_target_`s: import, identity, checks).

May import: nothing of lth outside lth.config (the bottom layer, beside lth.data and lth.models).
"""


# `lth.config` was one module before issue 26's layout: its names stay reachable here for one release
# (`from lth.config import X`), read lazily from lth.config.schema so that importing this package stays cheap.
def __getattr__(name: str):
    import importlib

    module = importlib.import_module("lth.config.schema")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module 'lth.config' has no attribute {name!r}") from None
