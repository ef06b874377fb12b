"""Pruning methods a researcher registers from Python (`lth.register_method`), by name.

`pruning.method=NAME` then scores with their function (`lth.sparsity.custom_scores`), as
`pruning.method=custom pruning.score_fn=module.function` does from the command line. This module
imports nothing from lth, so that the config's validation (`lth.config`) can read the names
without importing the code that runs them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

# What a score function scores: `final` (the previous level's final weights, as magnitude pruning)
# or `init` (the weights at the rewind point, θ0 by default, as SNIP); lth.sparsity.methods calls it `rewind`.
SCORED_AT = ("final", "init")
BUILTIN_AT_REWIND = ("snip", "grasp", "synflow", "magnitude_at_init")


@dataclasses.dataclass(frozen=True)
class UserMethod:
    name: str
    fn: Callable[[Any], Any]
    scored_at: str  # final | init


METHODS: dict[str, UserMethod] = {}


def scored_at(method: str, custom_scored_at: str = "final") -> str:
    """Where method `method` scores the weights, in `lth.sparsity.methods`' terms: `rewind` or `final`
    (`random`: `none`). `custom_scored_at` is `pruning.scored_at`, for `pruning.method=custom`."""
    if method in BUILTIN_AT_REWIND:
        return "rewind"
    if method == "random":
        return "none"
    at = METHODS[method].scored_at if method in METHODS else custom_scored_at if method == "custom" else "final"
    return "rewind" if at == "init" else "final"
