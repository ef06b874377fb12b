"""From a finished level to a deployable model: smaller where the ticket's structure allows,
in ONNX or as a serialized JAX program, with its outputs checked and its speed measured.

For member `export.kind` (the ticket or a control), replicate `export.replicate`, of level
`export.level` of the lottery run `export.source`:

1. read     the level's mask and final weights; the masked network (`mask ⊙ W`, BatchNorm running
            statistics) is what lth evaluates, and the reference for everything below;
2. shrink   structured tickets (`pruning.granularity=neuron|channel`) lose their dead units, their
            BatchNorm channels and the next layers' matching inputs (`lth.export.shrink`): a dense
            network with fewer parameters and the same outputs. Unstructured tickets (`weight`)
            keep their shape (their zeros stay stored, dense); the summary says which;
3. write    `export.format=onnx`: `model.onnx` (`lth.export.onnx_graph`), or `stablehlo`:
            `model.jax_export` (`lth.export.stablehlo`); the file is read back and run
            (onnxruntime, or `jax.export.deserialize`) on the whole test set;
4. compare  `max_abs_diff` of its logits against the masked network's in lth, and both test
            accuracies (`test_accuracy_masked`, `test_accuracy_exported`);
5. time     the dense network (the level's weights at full size, unmasked), the masked one and
            the exported one, in XLA and in onnxruntime: latency at batch 1, throughput at batch 256
            (`lth.export.timing`); `speedup_batch_256` is the exported network's throughput over the
            dense one's in the format's runtime (onnxruntime for onnx, XLA for stablehlo).
            Unstructured tickets are also timed on a sparse-matrix path (network `sparse`:
            BCSR in XLA, sparse initialisers in onnxruntime; `lth.export.sparse`), and
            summary.json's `sparse_path` says per runtime where it is faster than the masked one.

Int8 tickets: `export.source` may name a compress run (`compress.method=int8`,
`lth.export.int8_source`); it stands for its level and kind, and the network exported and compared
against is the int8 one its compressed file decodes to (the masked network is then that int8
network, run in float32 by lth), stored in ONNX as int8 codes with per-channel DequantizeLinear and
in the JAX program as int8 constants; `bytes` counts 1 byte per int8 weight.

The run directory `<runs_dir>/export-<model>-<dataset>-<hash>/` (beside the source by default;
hashed over the source's hash, the level, kind, replicate and the export settings) holds
config.yaml, the model file, summary.json and report.csv (network, runtime, latency, throughput,
parameters, bytes). A source that is not a finished level of that kind, or a bad setting, is
refused before anything is written.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from lth.config.schema import Config, ConfigError, to_dict
from lth.export import graph, int8_source, onnx_graph, shrink, sparse, stablehlo, timing
from lth.integrations import wandb_logger
from lth.runs.run_dir import RunDir, write_atomic, write_json
from lth.sparsity import masks as M

FORMATS = ("onnx", "stablehlo")
STRUCTURED = ("neuron", "channel")
NETWORKS = ("dense", "masked", "exported")
RUNTIMES = ("xla", "onnxruntime")
RUNTIME_OF = {"onnx": "onnxruntime", "stablehlo": "xla"}


@dataclasses.dataclass
class Outcome:
    run_dir: str
    report: pd.DataFrame
    summary: dict[str, Any]


def validate(cfg: Config) -> None:
    """Bad export settings, named with their value and what is allowed."""
    e = cfg.export
    if not e.source:
        raise ConfigError("export.source=null: name the lottery run directory to export from (export.source=RUN_DIR)")
    if e.format not in FORMATS:
        raise ConfigError(f"export.format={e.format!r} is not one of {', '.join(FORMATS)}")
    if not isinstance(e.replicate, int) or e.replicate < 0:
        raise ConfigError(f"export.replicate={e.replicate!r}: a replicate index must be an integer >= 0")
    if not isinstance(e.repeats, int) or e.repeats < 1:
        raise ConfigError(f"export.repeats={e.repeats!r}: the timed runs per measurement must be an integer >= 1")
    if e.format == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as err:
            raise ConfigError(f"export.format=onnx needs the packages onnx and onnxruntime ({err}); "
                              "pip install onnx onnxruntime") from None


def _source(cfg: Config):
    """(lottery run path, its summary, its RunDir, the level, the compress source or None, the
    hash the export's hash covers); a compress run as `export.source` stands for its level."""
    from lth.lottery.branch import source_summary

    e = cfg.export
    src, summary = source_summary(e.source, setting="export.source")
    comp, level = None, e.level
    if int8_source.is_compress_run(summary):
        comp = int8_source.resolve(src, summary, e)
        src, summary = source_summary(comp.lottery, setting="export.source")
        level = comp.level
    elif level is None:
        raise ConfigError("export.level=null: name the finished level to export (export.level=L)")
    done = sorted(int(k) for k in summary.get("levels", {}))
    rd_src = RunDir(src, summary["hash"])
    if level not in done or not os.path.isdir(os.path.join(rd_src.member_dir(level, e.kind), "final")):
        kinds = ", ".join(["ticket"] + list(summary["config"].get("controls", [])))
        raise ConfigError(f"export.level={level}, export.kind={e.kind!r}: not a finished level of that kind with its "
                          f"weights in {src} (finished levels: {done}; kinds: {kinds})")
    if e.replicate >= summary["config"]["replicates"]:
        raise ConfigError(f"export.replicate={e.replicate}: the source run has {summary['config']['replicates']} "
                          f"replicate(s), 0..{summary['config']['replicates'] - 1}")
    return src, summary, rd_src, level, comp, (comp.summary if comp else summary)["hash"]


def hash_extra(cfg: Config, source_hash: str) -> dict[str, Any]:
    """What an export run's hash covers beside the training settings."""
    return {"source": source_hash, "export": {k: v for k, v in to_dict(cfg)["export"].items() if k != "source"}}


def run(cfg: Config, *, echo: Callable[[str], None] = print) -> Outcome:
    """Export level `export.level` of `export.source` (see the module docstring)."""
    from lth.config.schema import resolve

    cfg = resolve(cfg)
    validate(cfg)
    from lth.lottery import rewind
    from lth.lottery.level_io import restore_members
    from lth.lottery.plan import prepare
    from lth.train.trainer import replicate_keys

    src, src_summary, rd_src, level, comp, source_hash = _source(cfg)
    e = cfg.export
    dataset, plan, trainer = prepare(cfg)
    R = src_summary["config"]["replicates"]
    variables = trainer.init_variables(replicate_keys(cfg.seed, R)["init"])
    template = jax.device_get(rewind.snapshot(trainer.create_states(variables, jax.vmap(M.ones_like)(variables["params"]))))
    try:
        members = restore_members(rd_src, level, e.kind, template)
    except Exception as err:  # another model or dataset than the source's: its tensors do not fit
        raise ConfigError(f"export.source={e.source!r}: its level {level} does not fit this model "
                          f"({type(err).__name__}); leave the model and dataset settings as the source's") from None
    one = jax.tree.map(lambda x: np.asarray(x)[e.replicate], members)
    mask, params, bstats = one["mask"], one["params"], one["batch_stats"] or {}
    scales = {}
    if comp:  # the int8 network as the compress run's file decodes: the reference and what is exported
        weights, stats, scales = int8_source.decoded(comp, e.replicate)
        masked = M.unflatten(weights)
        bstats = M.unflatten(stats) if stats else bstats
    else:
        masked = jax.tree.map(np.asarray, M.apply_mask(params, mask))
    ops = {"dense": graph.layers(cfg.model, params, bstats), "masked": graph.layers(cfg.model, masked, bstats)}
    structured = cfg.pruning.granularity in STRUCTURED
    quantized = int8_source.quantize(ops["masked"], scales)
    ops["exported"] = shrink.shrink(quantized) if structured else quantized

    rd = RunDir.for_config(cfg, plan.as_dict(), hash_extra(cfg, source_hash), prefix="export-")
    rd.create()
    lock = rd.lock()
    try:
        from omegaconf import OmegaConf

        write_atomic(rd.file("config.yaml"), OmegaConf.to_yaml(OmegaConf.create(to_dict(cfg))))
        echo(f"export {rd.path}\n  level {level} ({e.kind}, replicate {e.replicate}) of {src}: {cfg.model.name} on "
             f"{dataset.name}, granularity {cfg.pruning.granularity}, format {e.format}"
             + (f", int8 weights of {comp.path}" if comp else ""))
        shape, classes = dataset.input_shape, dataset.num_classes
        model_file, run_exported = _write(rd, e.format, ops["exported"], shape, classes)
        x_test = np.asarray(dataset.normalize(dataset.x_test), np.float32)
        y_test = np.asarray(dataset.y_test)
        apply = jax.jit(lambda p, x: trainer.model.apply({"params": p, **({"batch_stats": bstats} if bstats else {})}, x))
        ref = np.concatenate([np.asarray(apply(masked, jnp.asarray(x_test[i:i + 1000])))
                              for i in range(0, len(x_test), 1000)])
        out = run_exported(x_test)
        acc_masked, acc_exported = float(np.mean(ref.argmax(-1) == y_test)), float(np.mean(out.argmax(-1) == y_test))
        diff = float(np.abs(out - ref).max())
        fused = None  # int8 in onnxruntime's default optimizations: DequantizeLinear + MatMul fused (another function)
        if comp and e.format == "onnx":
            fused = float(np.abs(onnx_graph.run(onnx_graph.session(model_file, fuse_int8=True), x_test) - ref).max())
            echo(f"  int8 in onnxruntime with its extended optimizations (DequantizeLinear fused): max |diff| = {fused:.3g}")
        echo(f"  outputs: max |exported - masked| = {diff:.3g} over {len(x_test)} test examples; test accuracy "
             f"masked {100 * acc_masked:.2f}%, exported {100 * acc_exported:.2f}%")
        rows = _measure(cfg, trainer.model, params, masked, bstats, ops, shape, classes, echo)
        sparse_path = None
        if not structured and any(isinstance(op, graph.Dense) for op in ops["masked"]):
            rows += sparse.report_rows(ops["masked"], shape, classes, e.repeats)  # the zeros stored sparse
            sparse_path = {"max_abs_diff": sparse.max_abs_diff(ops["masked"], x_test), **sparse.verdict(rows)}
            echo("  timed sparse (BCSR in XLA, sparse initialisers in onnxruntime)")
        report = pd.DataFrame(rows)
        write_atomic(rd.file("report.csv"), report.to_csv(index=False))
        counts = {n: graph.count(ops[n]) for n in NETWORKS}
        runtime = RUNTIME_OF[e.format]
        thr = {(r["network"], r["runtime"]): r["throughput_batch_256"] for r in rows}
        summary = {
            "run_dir": rd.path, "hash": rd.hash, "source_dir": src, "source_hash": src_summary["hash"],
            "compress_source": comp.path if comp else None, "weights": "int8" if comp else "float32",
            "level": level, "kind": e.kind, "replicate": e.replicate, "format": e.format, "model": cfg.model.name,
            "file": os.path.basename(model_file), "file_bytes": os.path.getsize(model_file),
            "granularity": cfg.pruning.granularity, "structured": structured,
            "shapes": ("dead units removed: a smaller dense network" if structured else
                       "unstructured ticket: the network keeps its shape, pruned weights are stored as zeros"),
            "widths_dense": graph.widths(ops["dense"]), "widths_exported": graph.widths(ops["exported"]),
            "max_abs_diff": diff, "max_abs_diff_onnxruntime_fused_int8": fused, "test_accuracy_masked": acc_masked, "test_accuracy_exported": acc_exported,
            "speedup_runtime": runtime,
            "speedup_batch_256": thr[("exported", runtime)] / thr[("dense", runtime)],
            "speedup_batch_256_by_runtime": {r: thr[("exported", r)] / thr[("dense", r)] for r in RUNTIMES},
            "parameters": {n: counts[n]["parameters"] for n in NETWORKS},
            "nonzero_parameters": {n: counts[n]["nonzero"] for n in NETWORKS},
            "bytes": {n: counts[n]["bytes"] for n in NETWORKS},
            "sparse_path": sparse_path,
            "config": to_dict(cfg),
        }
        write_json(rd.file("summary.json"), summary)
        _log_wandb(cfg, rd, report, summary)
        echo(format_report(summary, report))
        return Outcome(rd.path, report, summary)
    finally:
        lock.close()


def _write(rd: RunDir, fmt: str, ops, shape, classes):
    """Write the model file, read it back; (its path, a function running the file's model)."""
    if fmt == "onnx":
        path = rd.file("model.onnx")
        write_atomic(path, onnx_graph.to_onnx(ops, shape, classes).SerializeToString())
        sess = onnx_graph.session(path)
        return path, lambda x: onnx_graph.run(sess, x)
    path = rd.file(stablehlo.FILE)
    write_atomic(path, stablehlo.serialize(ops, shape))
    with open(path, "rb") as f:
        exp = stablehlo.load(f.read())
    return path, lambda x: stablehlo.run(exp, x)


def _measure(cfg, model, params, masked, bstats, ops, shape, classes, echo) -> list[dict[str, Any]]:
    """report.csv's rows: each network in each runtime, with its size."""
    extra = {"batch_stats": bstats} if bstats else {}
    xla_fns = {
        "dense": lambda x: model.apply({"params": params, **extra}, x),  # the level's weights, nothing masked
        "masked": lambda x: model.apply({"params": masked, **extra}, x),  # as lth evaluates it
        "exported": lambda x: graph.forward(ops["exported"], x),
    }
    rows = []
    for net in NETWORKS:
        c = graph.count(ops[net])
        size = {"parameters": c["parameters"], "nonzero_parameters": c["nonzero"], "bytes": c["bytes"]}
        for runtime in RUNTIMES:
            f = (timing.xla(xla_fns[net]) if runtime == "xla"
                 else timing.onnxruntime(onnx_graph.session(onnx_graph.to_onnx(ops[net], shape, classes))))
            rows.append({"network": net, "runtime": runtime, **timing.measure(f, shape, cfg.export.repeats), **size})
            echo(f"  timed {net} in {runtime}")
    return rows


def format_report(summary: dict[str, Any], report: pd.DataFrame) -> str:
    """The table printed at the end: per network and runtime, latency, throughput and size."""
    lines = [f"{'network':9} {'runtime':12} {'latency b=1':>12} {'throughput b=256':>17} {'parameters':>11} {'nonzero':>10}"]
    for r in report.to_dict("records"):
        lines.append(f"{r['network']:9} {r['runtime']:12} {r['latency_batch_1_ms']:>9.3f} ms {r['throughput_batch_256']:>11.0f} ex/s "
                     f"{r['parameters']:>11,} {r['nonzero_parameters']:>10,}")
    lines.append(f"speed-up at batch 256 ({summary['speedup_runtime']}): {summary['speedup_batch_256']:.2f}x; "
                 f"{summary['shapes']}; widths {summary['widths_exported']}")
    for rt, v in (summary.get("sparse_path") or {}).items():
        if isinstance(v, dict):
            lines.append(f"sparse path in {rt} ({v['format']}) against masked: {v['speedup_batch_256']:.2f}x at batch 256, "
                         f"{v['speedup_batch_1']:.2f}x at batch 1 ({'faster' if v['faster_at_batch_256'] else 'slower'} at 256)")
    return "\n".join(lines)


def _log_wandb(cfg: Config, rd: RunDir, report: pd.DataFrame, summary: dict[str, Any]) -> None:
    run = wandb_logger.side_run(cfg, rd, "export")
    if run is None:
        return
    import wandb

    try:
        run.log({"report": wandb.Table(dataframe=report)})
        for k in ("max_abs_diff", "test_accuracy_masked", "test_accuracy_exported", "speedup_batch_256"):
            run.summary[k] = summary[k]
    finally:
        run.finish()
