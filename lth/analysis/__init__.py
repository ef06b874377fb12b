"""Analysis of finished runs: ticket metrics, figures, instability analysis.

May import: everything below it (lth.config, lth.sparsity, lth.train, lth.runs, lth.lottery).
"""
