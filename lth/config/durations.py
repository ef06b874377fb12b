"""Durations as configs write them (`50000it`, `40ep`, `500it`, `2ep`), converted once to steps.

Inside the library everything counts optimizer steps; epochs exist only here, where the number of
steps per epoch (training examples // batch size, the last partial batch dropped) is known.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_PATTERN = re.compile(r"^\s*(\d+)\s*(it|ep)\s*$")


class Duration(NamedTuple):
    value: int
    unit: str  # "it" (steps) or "ep" (epochs)

    def to_steps(self, steps_per_epoch: int) -> int:
        return self.value if self.unit == "it" else self.value * steps_per_epoch

    def __str__(self) -> str:
        return f"{self.value}{self.unit}"


def parse_duration(text: str | int, *, setting: str = "duration") -> Duration:
    """Parse `"500it"` or `"2ep"` (a bare integer means steps).

    >>> parse_duration("2ep").to_steps(steps_per_epoch=916)
    1832
    """
    from lth.config.errors import ConfigError

    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ConfigError(f"{setting}={text!r}: a duration must be >= 0")
        return Duration(text, "it")
    m = _PATTERN.match(str(text))
    if not m:
        raise ConfigError(
            f"{setting}={text!r} is not a duration: write a whole number of iterations or epochs, "
            "e.g. '50000it' or '40ep'"
        )
    return Duration(int(m.group(1)), m.group(2))


def to_steps(text: str | int, steps_per_epoch: int, *, setting: str = "duration") -> int:
    return parse_duration(text, setting=setting).to_steps(steps_per_epoch)
