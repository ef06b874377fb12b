"""Training: the compiled masked trainer, its train state, optimizers, data orders and device sharding.

May import: lth.config, lth.sparsity, lth.data, lth.models.
"""


from lth._aliases import reexport as _reexport

# `lth.train` was one module before issue 26's layout: its names stay reachable here for one release.
__getattr__ = _reexport("lth.train", "lth.train.trainer")
