"""Sparsity: masks, pruning scores and methods, exact-count pruning steps, sparsity schedules, structured units, ablations, fresh random draws (`draws`), FLOPs and budgets: the part a researcher could use in their own training loop.

May import: lth.config.
"""
