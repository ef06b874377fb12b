"""Configuration: the typed schema of every setting, group defaults, durations and files shipped inside installed packages.

`schema` gathers the names to import: `sections` (the dataclasses), `convert` (from and to dicts,
group defaults filled in), `validation` (`validate`), `choices` (allowed values), `hashing` (which
settings name a run directory), `errors` (ConfigError, raised by every check). Beside them: `defaults`,
`durations`, `method_settings`, `budget_settings` (a budget's checks that need no pruning counts; the
counted check is `lth.sparsity.budget.enforce`, above the config), `package_files`, `registry` (pruning
methods registered from Python) and `targets` (a researcher's own `_target_`s: import, identity, checks).

May import: nothing of lth outside lth.config (the bottom layer, beside lth.data and lth.models).
"""


from lth._aliases import reexport as _reexport

# `lth.config` was one module before issue 26's layout: its names stay reachable here for one release.
__getattr__ = _reexport("lth.config", "lth.config.schema")
