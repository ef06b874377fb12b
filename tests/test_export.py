"""Export (issue 29, lth.export): structured tickets shrink to smaller networks with the masked
network's outputs (MLP, LeNet-5, Conv-2, VGG with BatchNorm), ONNX and serialized-JAX round trips,
a whole export of a small neuron-pruned run, and refusals with nothing written."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import small_config
from lth.config.schema import ConfigError, ExportConfig, ModelConfig, PruningConfig
from lth.export import export, graph, onnx_graph, shrink, stablehlo
from lth.lottery import levels as lottery
from lth.models import build_model
from lth.sparsity import masks as M, structured

FAMILIES = [("mlp", (40,), {"widths": [32, 16]}), ("lenet5", (28, 28, 1), {}), ("conv2", (16, 16, 3), {}),
            ("vgg11", (16, 16, 3), {}), ("resnet20", (16, 16, 3), {})]


def _structured_ticket(name, shape, extra, seed=0):
    """A model with ~60% of its hidden units removed as `lth.sparsity.structured` removes them
    (kernel slice, bias, BatchNorm scale and bias), BatchNorm statistics made non-trivial."""
    rng = np.random.default_rng(seed)
    cfg = ModelConfig(name=name, **extra)
    model = build_model(cfg, 10)
    v = model.init(jax.random.key(seed), jnp.zeros((1, *shape)))
    params = jax.tree.map(np.asarray, v["params"])
    bs = jax.tree.map(lambda a: np.asarray(a) + 0.1 * rng.normal(size=a.shape).astype(np.float32) ** 2, v.get("batch_stats", {}))
    flat = M.flatten(params)
    mask = {p: np.ones(a.shape, bool) for p, a in flat.items()}
    for p in [p for p in flat if p.endswith("kernel") and not p.startswith("head")]:
        mask.update(structured.remove_units(mask, p, rng.random(flat[p].shape[-1]) > 0.6))
    masked = M.unflatten({p: np.where(mask[p], flat[p], 0) for p in flat})
    x = rng.normal(size=(6, *shape)).astype(np.float32)
    ref = np.asarray(model.apply({"params": masked, **({"batch_stats": bs} if bs else {})}, x))
    return cfg, masked, bs, x, ref


@pytest.mark.parametrize("name,shape,extra", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_shrunk_network_and_its_onnx_equal_the_masked_network(name, shape, extra):
    cfg, masked, bs, x, ref = _structured_ticket(name, shape, extra)
    ops = graph.layers(cfg, masked, bs)
    small = shrink.shrink(ops)
    np.testing.assert_allclose(np.asarray(graph.forward(ops, x)), ref, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(graph.forward(small, x)), ref, atol=1e-5, rtol=1e-5)
    before, after = graph.widths(ops), graph.widths(small)
    assert after["head"] == before["head"] == 10
    # ResNets: the blocks' inner units go, the residual stream (stem, conv2s, shortcuts) keeps its width
    shrinks = [k for k in before if k != "head" and (not name.startswith("resnet") or k.endswith("block0/conv1")
                                                     or k.endswith("block1/conv1") or k.endswith("block2/conv1"))]
    assert all(after[k] < before[k] for k in shrinks) and all(after[k] == before[k] for k in before if k not in shrinks)
    assert graph.count(small)["parameters"] < (0.7 if name.startswith("resnet") else 0.5) * graph.count(ops)["parameters"]
    if name in ("mlp", "vgg11", "resnet20"):  # onnxruntime on the smallest and the BatchNorm families
        y = onnx_graph.run(onnx_graph.session(onnx_graph.to_onnx(small, shape, 10)), x)
        np.testing.assert_allclose(y, ref, atol=1e-5, rtol=1e-5)


def test_unread_units_are_removed_and_a_layer_keeps_one_unit():
    rng = np.random.default_rng(1)
    k1, k2, k3 = (rng.normal(size=s).astype(np.float32) for s in ((5, 4), (4, 3), (3, 2)))
    k2[[0, 2], :] = 0  # fc1's units 0 and 2 are read by nothing
    k3[:] = 0  # nothing of fc2 is read: it keeps one unit, and the head outputs its bias
    ops = [graph.Dense("fc1", k1, np.ones(4, np.float32)), graph.Relu(), graph.Dense("fc2", k2, np.ones(3, np.float32)),
           graph.Relu(), graph.Dense("head", k3, np.arange(2, dtype=np.float32))]
    small = shrink.shrink(ops)
    assert graph.widths(small) == {"fc1": 2, "fc2": 1, "head": 2}
    x = rng.normal(size=(7, 5)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(graph.forward(small, x)), np.asarray(graph.forward(ops, x)), atol=1e-6)


def test_imagenet_resnets_and_residual_mlps_are_refused_by_name():
    with pytest.raises(ConfigError, match="model.name='resnet18'.*ImageNet ResNets"):
        graph.layers(ModelConfig(name="resnet18"), {})
    with pytest.raises(ConfigError, match="residual MLP"):
        graph.layers(ModelConfig(name="mlp", widths=[8, 8], residual=True), {})


def test_serialized_jax_program_runs_without_lth(tmp_path):
    cfg, masked, bs, x, ref = _structured_ticket("vgg11", (32, 32, 3), {})
    path = tmp_path / stablehlo.FILE
    path.write_bytes(stablehlo.serialize(shrink.shrink(graph.layers(cfg, masked, bs)), (32, 32, 3)))
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, importlib.abc\n"
            "class NoLth(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'lth' or name.startswith('lth.'): raise ImportError('lth is blocked')\n"
            "sys.meta_path.insert(0, NoLth())\n"
            "import jax, numpy as np\n"
            f"exp = jax.export.deserialize(bytearray(open({str(path)!r}, 'rb').read()))\n"
            f"np.save({str(tmp_path / 'y.npy')!r}, np.asarray(exp.call(np.load({str(tmp_path / 'x.npy')!r}))))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env=env)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ref, atol=1e-5, rtol=1e-5)


# -- whole exports of small lottery runs ------------------------------------------------------------
@pytest.fixture(scope="module")
def neuron_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    cfg = small_config(tmp, levels=1, replicates=1, pruning=PruningConfig(fraction=0.5, granularity="neuron"))
    return tmp, cfg, lottery.run(cfg, echo=lambda _: None)


def _export_cfg(cfg, src, tmp, **changes):
    e = ExportConfig(**{"source": src.run_dir, "level": 1, "repeats": 2, **changes})
    return dataclasses.replace(cfg, export=e, paths=dataclasses.replace(cfg.paths, runs_dir=str(tmp)))


@pytest.mark.parametrize("fmt", ["onnx", "stablehlo"])
def test_export_of_a_neuron_ticket(neuron_run, fmt):
    tmp, cfg, src = neuron_run
    out = export.run(_export_cfg(cfg, src, tmp / fmt, format=fmt), echo=lambda _: None)
    s = json.load(open(os.path.join(out.run_dir, "summary.json")))
    assert os.path.basename(out.run_dir).startswith("export-mlp-mnist1d-")
    assert s["structured"] and s["widths_exported"] == {"fc1": 32, "fc2": 32, "head": 10}
    assert s["max_abs_diff"] <= 1e-5 and s["test_accuracy_masked"] == s["test_accuracy_exported"]
    assert s["parameters"]["exported"] == 40 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10
    assert s["parameters"]["dense"] == s["parameters"]["masked"] == 40 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10
    assert s["speedup_batch_256"] > 0 and set(s["speedup_batch_256_by_runtime"]) == {"xla", "onnxruntime"}
    assert os.path.isfile(os.path.join(out.run_dir, "model.onnx" if fmt == "onnx" else stablehlo.FILE))
    report = out.report
    assert len(report) == 6 and set(report.network) == {"dense", "masked", "exported"}
    assert (report.latency_batch_1_ms > 0).all() and (report.throughput_batch_256 > 0).all()
    again = export.run(_export_cfg(cfg, src, tmp / fmt, format=fmt), echo=lambda _: None)
    assert again.run_dir == out.run_dir  # a content hash of the settings


@pytest.mark.slow  # ~45 s (a whole lottery run, then both formats and the sparse path)
def test_an_unstructured_ticket_keeps_its_shape(tmp_path):
    cfg = small_config(tmp_path, levels=1, replicates=1)
    src = lottery.run(cfg, echo=lambda _: None)
    out = export.run(_export_cfg(cfg, src, tmp_path / "x"), echo=lambda _: None)
    s = out.summary
    assert not s["structured"] and "keeps its shape" in s["shapes"]
    assert s["parameters"]["exported"] == s["parameters"]["dense"] and s["max_abs_diff"] <= 1e-5
    assert s["nonzero_parameters"]["exported"] < s["parameters"]["exported"]
    # the sparse-matrix path: timed in both runtimes, its outputs the masked network's
    assert s["sparse_path"]["max_abs_diff"] <= 1e-5 and set(s["sparse_path"]) == {"max_abs_diff", "xla", "onnxruntime"}
    assert set(out.report[out.report.network == "sparse"].runtime) == {"xla", "onnxruntime"}
    assert all(isinstance(s["sparse_path"][rt]["faster_at_batch_256"], bool) for rt in ("xla", "onnxruntime"))


@pytest.mark.parametrize("change,match", [
    ({"level": 5}, r"export.level=5, export.kind='ticket': not a finished level.*finished levels: \[0, 1\]"),
    ({"kind": "reinit"}, r"export.kind='reinit': not a finished level"),
    ({"format": "tflite"}, r"export.format='tflite' is not one of onnx, stablehlo"),
    ({"replicate": 3}, r"export.replicate=3: the source run has 1 replicate"),
    ({"level": None}, r"export.level=null"),
])
def test_bad_input_refused_with_nothing_written(neuron_run, change, match):
    tmp, cfg, src = neuron_run
    before = sorted(os.listdir(src.run_dir))
    runs = tmp / "refused"
    with pytest.raises(ConfigError, match=match):
        export.run(_export_cfg(cfg, src, runs, **change), echo=lambda _: None)
    assert not runs.exists() and sorted(os.listdir(src.run_dir)) == before


def test_python_api_and_command_line(neuron_run):
    import lth

    tmp, cfg, src = neuron_run
    run = lth.run({"export.source": src.run_dir, "export.level": 1, "export.format": "stablehlo", "export.repeats": 1,
                   "paths.runs_dir": str(tmp / "api")}, experiment="export", echo=lambda _: None)
    assert set(run.results.network) == {"dense", "masked", "exported"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "experiments/export.py", f"export.source={src.run_dir}", "export.level=1",
                           "export.format=tflite", f"paths.runs_dir={tmp / 'cli'}"], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 2 and "export.format='tflite' is not one of onnx, stablehlo" in proc.stderr
    assert not (tmp / "cli").exists()
