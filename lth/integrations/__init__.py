"""Integrations: W&B logging and artifacts, Hydra sweeps, multi-host start-up, XLA flags.

May import: lth.config, lth.sparsity, lth.runs.
"""
