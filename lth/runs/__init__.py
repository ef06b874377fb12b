"""Runs on disk: run directories (content-hashed), checkpoints, in-level progress, result tables, interruption, and reading finished runs back (`reading`: load_run, Run, load_runs; `sweep_dirs`).

May import: lth.config, lth.sparsity.
"""
