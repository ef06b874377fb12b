"""Tickets that ship (issue 29): a finished level as a smaller, faster model in deployment formats.

`graph` (the network as a list of layers), `shrink` (structured tickets without their dead units),
`onnx_graph` (ONNX, run by onnxruntime), `stablehlo` (a serialized `jax.export` program), `timing`
(latency and throughput), `export` (the run: `experiments/export.py`).

May import: lth.lottery, lth.train, lth.sparsity, lth.runs, lth.config, lth.data, lth.models.
"""
