"""Runs on disk: run directories (content-hashed), checkpoints, in-level progress, result tables and interruption.

May import: lth.config, lth.sparsity.
"""
