"""The checks of a budget's settings (`budget.weights`, `budget.flops`) that need no pruning counts: their
values, and the pruning settings a budget needs. `lth.config.schema.validate` calls `validate`, so every
entry point that validates a config refuses a bad budget before any work.

Whether a run's last level fits its budget needs the model's exact pruning counts: that check is
`lth.sparsity.budget.enforce`, made by the level loop once the model is built. It lives above the
configuration (issue 26: imports run from the entry points down; the config imports nothing of
sparsity)."""

from __future__ import annotations

from typing import Any

from lth.config.errors import ConfigError

SCHEDULES = ("iterative", "oneshot", "linear")  # the pruning schedules whose counts a budget is checked from


def validate(cfg: Any) -> None:
    """The budget's values and the settings it needs; raises `ConfigError` naming the setting."""
    b = cfg.budget
    for key in ("weights", "flops"):
        value = getattr(b, key)
        if value is not None and not 0.0 < value <= 1.0:
            raise ConfigError(f"budget.{key}={value!r}: a budget is a fraction of the dense network's count, in (0, 1] "
                              "(or null: none)")
    if b.weights is None and b.flops is None:
        return
    if cfg.pruning.granularity != "weight":
        raise ConfigError(f"pruning.granularity={cfg.pruning.granularity!r}: a budget (budget.weights, budget.flops) "
                          "counts single weights; it needs pruning.granularity=weight")
    if cfg.pruning.schedule not in SCHEDULES:
        raise ConfigError(f"pruning.schedule={cfg.pruning.schedule!r}: a budget (budget.weights, budget.flops) is "
                          f"checked from the counts of the {', '.join(SCHEDULES)} schedules only")
