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
