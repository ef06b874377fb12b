"""Analysis of finished runs: ticket metrics, figures, instability analysis, and the W&B reports the entry
points ask for after a run (`reports`: the level loop and the instability analysis draw nothing themselves).

May import: everything below it (lth.config, lth.sparsity, lth.train, lth.runs, lth.lottery).
"""
