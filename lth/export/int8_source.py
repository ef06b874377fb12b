"""Exporting an int8 ticket: `export.source` names a compress run (`compress.method=int8`).

Why the compress run and not a quantisation of its own: the compress run is where lth's int8
network lives (`lth.compression.quantize.int8`, symmetric per output channel, written Huffman-coded
to `compressed_r<r>.npz` and decoded back); exporting *that* network, decoded from its file, means
the exported model is the one whose size and accuracy the compress report gives. The compress
run's summary names its lottery source, level and member kind, so `export.level` may be left null
(or must equal the compress level) and `export.kind` must equal the compressed kind.

`resolve` reads the compress run's summary; `decoded` rebuilds one replicate's weights, BatchNorm
statistics and per-channel scales from its file (`lth.compression.file_format.load_weights`);
`quantize` marks the Dense/Conv layers of an op list whose kernels are int8 (`graph.Dense.scale`),
so the ONNX writer stores int8 codes with DequantizeLinear and the serialized JAX program holds
int8 constants.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from lth.config.schema import ConfigError
from lth.export.graph import Conv, Dense, Op, Residual


@dataclasses.dataclass
class CompressSource:
    path: str  # the compress run directory
    summary: dict[str, Any]  # its summary.json
    lottery: str  # the lottery run it compressed
    level: int
    kind: str
    replicates: int


def is_compress_run(summary: dict[str, Any]) -> bool:
    """Whether a run's summary.json is a compress run's (it has a method and compression stages)."""
    return "method" in summary and "stages" in summary and "source_dir" in summary


def resolve(path: str, summary: dict[str, Any], export_cfg) -> CompressSource:
    """The compress run at `path` as an export source; refuses kmeans runs and a level, kind or
    replicate that disagrees with the run, naming the setting."""
    e = export_cfg
    if summary["method"] != "int8":
        raise ConfigError(f"export.source={e.source!r}: a compress run with compress.method={summary['method']!r}; export "
                          "reads int8 compress runs (compress.method=int8) or lottery runs")
    if e.level is not None and e.level != summary["level"]:
        raise ConfigError(f"export.level={e.level}: the compress run {path} compressed level {summary['level']} "
                          "(leave export.level out, or give that level)")
    if e.kind != summary["kind"]:
        raise ConfigError(f"export.kind={e.kind!r}: the compress run {path} compressed the {summary['kind']!r} members "
                          f"(export.kind={summary['kind']})")
    n = len(summary.get("replicates", [])) or 1
    if e.replicate >= n:
        raise ConfigError(f"export.replicate={e.replicate}: the compress run {path} holds {n} replicate(s), 0..{n - 1}")
    lottery = summary["source_dir"]
    if not os.path.isdir(lottery):
        raise ConfigError(f"export.source={e.source!r}: its lottery run {lottery} is not there any more")
    return CompressSource(path, summary, lottery, int(summary["level"]), summary["kind"], n)


def decoded(src: CompressSource, replicate: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(weights, BatchNorm statistics, per-channel scales of the int8 tensors), each {path: array},
    of `replicate` as its compressed file decodes."""
    from lth.compression.file_format import load_batch_stats, load_weights

    file = os.path.join(src.path, f"compressed_r{replicate}.npz")
    if not os.path.isfile(file):
        raise ConfigError(f"export.source={src.path!r}: no compressed file {os.path.basename(file)} there")
    with np.load(file) as z:
        scales = {k[: -len("|book")]: np.asarray(z[k], np.float32) for k in z.files if k.endswith("|book")}
    return load_weights(file), load_batch_stats(file), scales


def quantize(ops: list[Op], scales: dict[str, np.ndarray]) -> list[Op]:
    """A copy of `ops` in which each Dense/Conv whose `name/kernel` has int8 scales carries them."""
    out = []
    for op in ops:
        if isinstance(op, Residual):
            op = dataclasses.replace(op, body=quantize(op.body, scales), shortcut=quantize(op.shortcut, scales))
        elif isinstance(op, (Dense, Conv)) and f"{op.name}/kernel" in scales:
            op = dataclasses.replace(op, scale=scales[f"{op.name}/kernel"].reshape(op.kernel.shape[-1]))
        out.append(op)
    return out
