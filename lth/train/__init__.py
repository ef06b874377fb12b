"""Training: the compiled masked trainer, its train state, optimizers, data orders and device sharding.

May import: lth.config, lth.sparsity, lth.data, lth.models.
"""


# `lth.train` was one module before issue 26's layout: its names stay reachable here for one release
# (`from lth.train import X`), read lazily from lth.train.trainer so that importing this package stays cheap.
def __getattr__(name: str):
    import importlib

    module = importlib.import_module("lth.train.trainer")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module 'lth.train' has no attribute {name!r}") from None
