"""Unstructured tickets on a sparse-matrix path: what their zeros buy when stored sparse.

An unstructured ticket (`pruning.granularity=weight`) cannot shrink: its zeros are scattered, so
the only way to skip them is a sparse matrix product. Two are tried here:

- **XLA, `jax.experimental.sparse` BCSR**: each Dense kernel W (in, out) is stored as the BCSR
  matrix Wᵀ (out, in) of its nonzero entries, and `x @ W = (Wᵀ @ xᵀ)ᵀ` (a sparse-dense product);
  convolutions stay dense (BCSR has no convolution). `bcsr_fn(ops)` is the network's function on
  that path, `bcsr_bytes(ops)` its stored size (values, column indices, row pointers, 4 bytes
  each; the rest float32).
- **onnxruntime sparse initialisers**: `to_onnx_sparse` moves each Gemm kernel into the graph's
  `sparse_initializer` list (COO values and flat indices). onnxruntime accepts such a model but
  turns every sparse initialiser back into a dense tensor when the session loads (no sparse
  Gemm kernel runs), so it is a storage format there, not a speed-up; the export times it to show
  that.

The results equal the dense network's up to float32 summation order (tests compare them).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from lth.export.graph import Dense, Op, _apply


@dataclasses.dataclass
class SparseDense:
    name: str
    kernel_t: object  # jax.experimental.sparse.BCSR of the kernel transposed, (out, in)
    bias: np.ndarray


def to_bcsr(ops: list[Op]) -> list:
    """`ops` with each Dense layer's kernel stored as a BCSR matrix (a `SparseDense`)."""
    from jax.experimental import sparse

    return [SparseDense(op.name, sparse.BCSR.fromdense(jnp.asarray(op.kernel.T)), op.bias) if isinstance(op, Dense) else op
            for op in ops]


def forward_bcsr(sparse_ops: list, x):
    """The network's logits for `x` from `to_bcsr`'s layers (sparse-dense products for Dense)."""
    x = jnp.asarray(x, jnp.float32)
    for op in sparse_ops:
        if isinstance(op, SparseDense):
            x = (op.kernel_t @ x.T).T + jnp.asarray(op.bias)
        else:
            x = _apply([op], x)
    return x


def bcsr_fn(ops: list[Op]):
    """The network on the BCSR path as a function of a JAX array (jit it to time it)."""
    sparse_ops = to_bcsr(ops)
    return lambda x: forward_bcsr(sparse_ops, x)


def bcsr_bytes(ops: list[Op]) -> int:
    """Bytes of the network with its Dense kernels in CSR (value and column index per nonzero, a
    row pointer per output unit + 1, 4 bytes each) and everything else float32."""
    from lth.export.graph import count

    n = 0
    for op in ops:
        if isinstance(op, Dense):
            nnz = int(np.count_nonzero(op.kernel))
            n += 8 * nnz + 4 * (op.kernel.shape[1] + 1) + 4 * op.bias.size
        else:
            n += count([op])["bytes"]
    return n


def to_onnx_sparse(ops: list[Op], input_shape: tuple[int, ...], num_classes: int):
    """The ONNX model of `ops` with every Gemm kernel a sparse initialiser (COO: nonzero values and
    their flat indices into the (in, out) kernel)."""
    import onnx
    from onnx import helper, numpy_helper

    from lth.export.onnx_graph import to_onnx

    model = to_onnx(ops, input_shape, num_classes)
    kernels = {f"{op.name}.kernel" for op in ops if isinstance(op, Dense) and op.scale is None}
    keep = []
    for init in model.graph.initializer:
        if init.name not in kernels:
            keep.append(init)
            continue
        dense = numpy_helper.to_array(init)
        flat = np.flatnonzero(dense)
        values = numpy_helper.from_array(dense.reshape(-1)[flat].astype(np.float32), init.name)
        indices = numpy_helper.from_array(flat.astype(np.int64), f"{init.name}.indices")
        model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, list(dense.shape)))
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    onnx.checker.check_model(model)
    return model


def max_abs_diff(ops: list[Op], x: np.ndarray, batch: int = 1000) -> float:
    """Largest |BCSR path - dense path| over the logits of `x`."""
    sparse_f, dense_f = jax.jit(bcsr_fn(ops)), jax.jit(lambda v: _apply(ops, v))
    return float(max(np.abs(np.asarray(sparse_f(x[i:i + batch])) - np.asarray(dense_f(x[i:i + batch]))).max()
                     for i in range(0, len(x), batch)))


def report_rows(ops: list[Op], input_shape, num_classes: int, repeats: int) -> list[dict]:
    """report.csv's rows of the sparse path (network `sparse`): BCSR in XLA (runtime `xla`) and
    sparse initialisers in onnxruntime (runtime `onnxruntime`), with their stored bytes."""
    from lth.export import graph, onnx_graph, timing

    c = graph.count(ops)
    model = to_onnx_sparse(ops, input_shape, num_classes)
    size = {"parameters": c["parameters"], "nonzero_parameters": c["nonzero"]}
    return [
        {"network": "sparse", "runtime": "xla", **timing.measure(timing.xla(bcsr_fn(ops)), input_shape, repeats),
         **size, "bytes": bcsr_bytes(ops), "format": "BCSR (jax.experimental.sparse)"},
        {"network": "sparse", "runtime": "onnxruntime",
         **timing.measure(timing.onnxruntime(onnx_graph.session(model)), input_shape, repeats), **size,
         "bytes": sum(len(t.SerializeToString()) for t in model.graph.sparse_initializer)
         + sum(4 * int(np.prod(t.dims)) for t in model.graph.initializer), "format": "ONNX sparse initialisers (COO)"},
    ]


def verdict(rows: list[dict]) -> dict:
    """Per runtime, the sparse path against the masked network (same runtime): speed-ups at batch
    256 (throughput) and batch 1 (latency), and whether it is faster at each."""
    by = {(r["network"], r["runtime"]): r for r in rows}
    out = {}
    for rt in ("xla", "onnxruntime"):
        s, m = by[("sparse", rt)], by[("masked", rt)]
        t = s["throughput_batch_256"] / m["throughput_batch_256"]
        lat = m["latency_batch_1_ms"] / s["latency_batch_1_ms"]
        out[rt] = {"format": s["format"], "speedup_batch_256": t, "speedup_batch_1": lat,
                   "faster_at_batch_256": bool(t > 1), "faster_at_batch_1": bool(lat > 1), "bytes": s["bytes"]}
    return out
