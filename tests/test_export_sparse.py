"""The sparse-matrix path of unstructured tickets (issue 29, lth.export.sparse): BCSR in XLA and
sparse initialisers in onnxruntime compute the dense network's logits, at densities down to an
all-zero layer, and their stored size counts only the nonzeros."""

import numpy as np
import pytest

from lth.export import graph, onnx_graph, sparse


def _mlp(density, seed=0, dims=(784, 300, 100, 10)):
    rng = np.random.default_rng(seed)
    ops = [graph.Flatten()]
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        k = (rng.normal(size=(a, b)) * (rng.random((a, b)) < density)).astype(np.float32) / np.sqrt(a * density + 1)
        ops += [graph.Dense(f"fc{i + 1}", k, rng.normal(size=b).astype(np.float32)), graph.Relu()]
    return ops[:-1]


@pytest.mark.parametrize("density", [1.0, 0.1, 0.01, 0.0])
def test_bcsr_and_sparse_initialisers_equal_the_dense_network(density):
    ops = _mlp(density)
    x = np.random.default_rng(1).normal(size=(33, 28, 28, 1)).astype(np.float32)
    ref = np.asarray(graph.forward(ops, x))
    assert sparse.max_abs_diff(ops, x) <= 1e-5
    np.testing.assert_allclose(np.asarray(sparse.bcsr_fn(ops)(x)), ref, atol=1e-5, rtol=1e-5)
    model = sparse.to_onnx_sparse(ops, (28, 28, 1), 10)
    assert len(model.graph.sparse_initializer) == 3 and not any(i.name.endswith(".kernel") for i in model.graph.initializer)
    np.testing.assert_allclose(onnx_graph.run(onnx_graph.session(model), x), ref, atol=1e-5, rtol=1e-5)


def test_bcsr_bytes_count_the_nonzeros():
    ops = _mlp(0.05)
    nnz = sum(int(np.count_nonzero(op.kernel)) for op in ops if isinstance(op, graph.Dense))
    assert sparse.bcsr_bytes(ops) == 8 * nnz + 4 * (301 + 101 + 11) + 4 * (300 + 100 + 10)
