"""The lottery-ticket run: the level loop (`levels`; its plan and checks `plan`, levels on disk `level_io`,
summaries `summaries`), members and controls, rewinding modes, the shared dense level, replicates, pre-trained starts and branches.

May import: lth.config, lth.sparsity, lth.train, lth.runs, lth.integrations, lth.data, lth.models.
"""


# `lth.lottery` was one module before issue 26's layout: its names stay reachable here for one release
# (`from lth.lottery import X`), read lazily from lth.lottery.levels so that importing this package stays cheap.
def __getattr__(name: str):
    import importlib

    module = importlib.import_module("lth.lottery.levels")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module 'lth.lottery' has no attribute {name!r}") from None
