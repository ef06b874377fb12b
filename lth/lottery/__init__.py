"""The lottery-ticket run: the level loop (`levels`; its plan and checks `plan`, levels on disk `level_io`,
summaries `summaries`), members and controls, rewinding modes, the shared dense level, replicates, pre-trained starts and branches.

May import: lth.config, lth.sparsity, lth.train, lth.runs, lth.integrations, lth.data, lth.models.
"""


from lth._aliases import reexport as _reexport

# `lth.lottery` was one module before issue 26's layout: its names stay reachable here for one release.
__getattr__ = _reexport("lth.lottery", "lth.lottery.levels")
