"""lth: lottery-ticket experiments on JAX.

The science (DESIGN.md): iterative magnitude pruning with rewinding (`lth.lottery`), masks as
pytrees (`lth.masks`, `lth.pruning`), a jit-compiled, vmapped masked trainer (`lth.train`),
weight rewinding (`lth.rewind`) and winning-ticket outcomes (`lth.results`). `experiments/lottery.py`
is the Hydra command line; the library itself never imports Hydra.
"""

__version__ = "0.1.0"
