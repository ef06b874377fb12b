"""Int8 export (issue 29, lth.export.int8_source): a compress run (`compress.method=int8`) as
`export.source` gives an ONNX model with int8 weights (DequantizeLinear) and a serialized JAX
program whose outputs equal lth's decoded int8 network; refusals name the setting."""

import dataclasses

import jax
import numpy as np
import pytest

from conftest import small_config
from lth.compression import compress
from lth.config.schema import CompressConfig, ConfigError, ExportConfig, PruningConfig
from lth.export import export, graph, onnx_graph, shrink, stablehlo
from lth.lottery import levels as lottery
from lth.models import build_model
from lth.sparsity import masks as M


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("int8")
    cfg = small_config(tmp, levels=1, replicates=1, pruning=PruningConfig(fraction=0.5, granularity="neuron"))
    src = lottery.run(cfg, echo=lambda _: None)
    c = dataclasses.replace(cfg, compress=CompressConfig(source=src.run_dir, level=1, method="int8"))
    return tmp, cfg, src, compress.run(c, echo=lambda _: None)


def _cfg(cfg, comp, tmp, **changes):
    e = ExportConfig(**{"source": comp.run_dir, "repeats": 1, **changes})
    return dataclasses.replace(cfg, export=e, paths=dataclasses.replace(cfg.paths, runs_dir=str(tmp)))


@pytest.mark.parametrize("fmt", ["onnx", "stablehlo"])
def test_int8_export_equals_the_decoded_int8_network(int8_run, fmt):
    tmp, cfg, src, comp = int8_run
    out = export.run(_cfg(cfg, comp, tmp / fmt, format=fmt), echo=lambda _: None)
    s = out.summary
    assert s["weights"] == "int8" and s["compress_source"] == comp.run_dir and s["level"] == 1
    assert s["max_abs_diff"] <= 1e-5 and s["test_accuracy_exported"] == s["test_accuracy_masked"]
    # the masked network of an int8 export is lth's decoded int8 network: its accuracy is the compress run's
    assert s["test_accuracy_masked"] == pytest.approx(comp.summary["stages"]["accuracy"]["huffman"], abs=1e-6)
    n_exp = s["parameters"]["exported"]
    kernels = 40 * 32 + 32 * 32 + 32 * 10
    assert s["bytes"]["exported"] == kernels + 4 * (n_exp - kernels) + 4 * (32 + 32 + 10)  # int8 codes + float32 rest + scales
    if fmt == "onnx":
        import onnx

        assert s["file_bytes"] < 0.5 * 4 * n_exp  # int8 codes in the file

        m = onnx.load(f"{out.run_dir}/model.onnx")
        assert sum(n.op_type == "DequantizeLinear" for n in m.graph.node) == 3
        assert {i.name for i in m.graph.initializer if i.data_type == onnx.TensorProto.INT8} >= {"fc1.kernel_int8", "head.kernel_int8"}
        assert s["max_abs_diff_onnxruntime_fused_int8"] is not None  # measured, and said, not hidden


def test_int8_onnx_of_a_conv_net_equals_the_int8_network_exactly():
    """Per-channel DequantizeLinear on a Conv (axis 0 of ONNX's (out, in, h, w)) and a Gemm (axis 1),
    against the Flax model run on the dequantised weights (lth's int8 network)."""
    from lth.compression import quantize
    from lth.config.schema import ModelConfig

    rng = np.random.default_rng(0)
    cfg = ModelConfig(name="lenet5")
    model = build_model(cfg, 10)
    params = jax.tree.map(np.asarray, model.init(jax.random.key(0), np.zeros((1, 28, 28, 1)))["params"])
    flat = M.flatten(params)
    scales = {}
    for p in [p for p in flat if p.endswith("kernel")]:
        q = quantize.int8(flat[p], rng.random(flat[p].shape) > 0.7)
        flat[p], scales[p] = q.weights(), np.asarray(q.scale, np.float32)
    int8_params = M.unflatten(flat)
    from lth.export import int8_source

    ops = shrink.shrink(int8_source.quantize(graph.layers(cfg, int8_params), scales))
    x = rng.normal(size=(5, 28, 28, 1)).astype(np.float32)
    ref = np.asarray(model.apply({"params": int8_params}, x))
    np.testing.assert_allclose(np.asarray(graph.forward(ops, x)), ref, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(onnx_graph.run(onnx_graph.session(onnx_graph.to_onnx(ops, (28, 28, 1), 10)), x), ref,
                               atol=1e-5, rtol=1e-5)
    assert graph.count(ops)["bytes"] < 0.3 * 4 * graph.count(ops)["parameters"]
    # the serialized JAX program holds int8 constants: a quarter of the float32 program's size, about
    float_ops = [dataclasses.replace(op, scale=None) if isinstance(op, (graph.Dense, graph.Conv)) else op for op in ops]
    assert len(stablehlo.serialize(ops, (28, 28, 1))) < 0.4 * len(stablehlo.serialize(float_ops, (28, 28, 1)))


@pytest.mark.parametrize("change,match", [
    ({"level": 3}, r"export.level=3: the compress run .* compressed level 1"),
    ({"kind": "reinit"}, r"export.kind='reinit': the compress run .* compressed the 'ticket' members"),
    ({"replicate": 2}, r"export.replicate=2: the compress run .* holds 1 replicate"),
])
def test_a_compress_source_that_disagrees_is_refused(int8_run, change, match):
    tmp, cfg, src, comp = int8_run
    with pytest.raises(ConfigError, match=match):
        export.run(_cfg(cfg, comp, tmp / "refused", **change), echo=lambda _: None)
    assert not (tmp / "refused").exists()
