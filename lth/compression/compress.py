"""From a finished level to a small file: Deep Compression's pipeline (Han, Mao & Dally 2016).

For each replicate r of the members `compress.kind` (a ticket or a control) of level L of the
lottery run `compress.source`:

1. start      the level's mask m and final weights W (the pruned network), evaluated;
2. share      per prunable tensor, k-means weight sharing with 2^b − 1 centroids over the
              surviving weights, b = `compress.bits` of the tensor (`lth.compression.quantize.share`);
              pruned weights stay 0 (code 0);
3. fine-tune  `compress.finetune_duration` steps on the training data in which only the
              centroids train, ∂L/∂c_k = Σ_{code_i = k} ∂L/∂W_i (the gradient of the gather
              c[codes], one jit-compiled step), under the source's optimizer at learning rate
              `compress.lr` (default: the source schedule's final rate), without weight decay
              (`lth.compression.centroid_finetune`);
4. code       each tensor in the sparse layout with relative indices of `compress.index_bits`
              bits and filler entries, the weight codes and the relative indices Huffman-coded
              (`lth.compression.coding`), written to `compressed_r<r>.npz`; that file is read back, decoded
              and rebuilt into weights, which must equal the fine-tuned shared weights bit for
              bit, and the rebuilt network is evaluated: the size reported is the size of
              something that decodes to the evaluated network;
5. report     per tensor and in total: bytes as dense float32, sparse float32 (value + relative
              index per entry), after weight sharing (codes + indices + codebook), after Huffman
              coding (both streams + their code tables + codebook), each stage's compression
              ratio against dense float32, and each stage's test accuracy.

Parameters that are not pruned (biases, normalisation) and BatchNorm running statistics (2 floats
per channel; after fine-tuning, the fine-tuned ones, which every later stage evaluates with) are
stored as float32 in every stage and counted in every total. The relative indices walk each kernel
in `compress.index_order` (`flax` (…, in, out), or `caffe` (out, in, …) as Han et al.); the file's
format is `lth.compression.file_format`. `compress.method=int8` replaces 2-3 by symmetric per-channel int8
(`lth.compression.quantize.int8`, codes q + 128 so that code 0 stays the zero/filler) with the same coding
and report. Units: bytes = bits / 8, not rounded, so per-tensor rows add up to the total.

The run directory `<runs_dir>/compress-<model>-<dataset>-<hash>/` (beside the source by default;
hashed over the source's hash, the level, kind and every compress setting) holds config.yaml,
summary.json, report.csv (replicate, tensor, stage, bytes, ratio) and the compressed files.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from lth.compression import coding, quantize
from lth.sparsity import masks as M
from lth.lottery import rewind
from lth.compression.file_format import (
    INDEX_ORDERS,
    hashed_settings,
    load_batch_stats,
    load_weights as coding_load_weights,
    save,
    storage_flat,
)
from lth.compression.centroid_finetune import finetune_centroids
from lth.config.schema import Config, ConfigError, to_dict
from lth.config.durations import parse_duration, to_steps
from lth.integrations import wandb_logger
from lth.runs.run_dir import RunDir, write_atomic, write_json

METHODS = ("kmeans", "int8")
__all__ = ["run", "validate", "coding_load_weights", "load_batch_stats", "INDEX_ORDERS", "STAGES"]
STAGES = ("dense", "sparse", "shared", "huffman")


@dataclasses.dataclass
class Outcome:
    run_dir: str
    report: pd.DataFrame
    summary: dict[str, Any]


def bits_for(path: str, patterns: dict[str, int], setting: str) -> int:
    """The value of the first pattern of `patterns` found in `path`."""
    for pattern, bits in patterns.items():
        if re.search(pattern, path):
            return int(bits)
    raise ConfigError(f"{setting}={dict(patterns)}: no pattern matches the prunable tensor {path!r}; add one "
                      f"(e.g. {setting}={{kernel: 5}})")


def validate(cfg: Config) -> None:
    c = cfg.compress
    if not c.source:
        raise ConfigError("compress.source=null: name the lottery run directory to compress (compress.source=RUN_DIR)")
    if c.level is None:
        raise ConfigError("compress.level=null: name the finished level to compress (compress.level=L)")
    if c.method not in METHODS:
        raise ConfigError(f"compress.method={c.method!r} is not one of {', '.join(METHODS)}")
    if c.index_order not in INDEX_ORDERS:
        raise ConfigError(f"compress.index_order={c.index_order!r} is not one of {', '.join(INDEX_ORDERS)} (the order in "
                          "which the relative indices walk a kernel: Flax's (..., in, out) or Caffe's (out, in, ...))")
    for setting, d in (("compress.bits", c.bits), ("compress.index_bits", c.index_bits)):
        if not d:
            raise ConfigError(f"{setting}={{}}: give at least one pattern, e.g. {setting}={{kernel: 5}}")
        for pattern, b in d.items():
            if not isinstance(b, int) or not 1 <= b <= 16:
                raise ConfigError(f"{setting}[{pattern!r}]={b!r}: bits must be an integer in 1..16")
            try:
                re.compile(pattern)
            except re.error as e:
                raise ConfigError(f"{setting}: {pattern!r} is not a valid regular expression ({e})") from None
    parse_duration(c.finetune_duration, setting="compress.finetune_duration")
    if c.lr is not None and not c.lr > 0:
        raise ConfigError(f"compress.lr={c.lr!r}: the learning rate must be > 0 (or null: the source's final rate)")


def _source(cfg: Config):
    """(source path, summary, stacked {mask, params, batch_stats} of the members to compress)."""
    from lth.lottery.branch import source_summary

    c = cfg.compress
    src, summary = source_summary(c.source, setting="compress.source")
    done = sorted(int(k) for k in summary.get("levels", {}))
    rd_src = RunDir(src, summary["hash"])
    member_dir = rd_src.member_dir(c.level, c.kind)
    if c.level not in done or not os.path.isdir(os.path.join(member_dir, "final")):
        kinds = ", ".join(["ticket"] + list(summary["config"].get("controls", [])))
        raise ConfigError(f"compress.level={c.level}, compress.kind={c.kind!r}: not a finished level of that kind with "
                          f"its weights in {src} (finished levels: {done}; kinds: {kinds})")
    if cfg.replicates > summary["config"]["replicates"]:
        raise ConfigError(f"replicates={cfg.replicates}: the source run has {summary['config']['replicates']} replicate(s)")
    return src, summary, rd_src


def run(cfg: Config, *, echo: Callable[[str], None] = print) -> Outcome:
    """Compress level `compress.level` of `compress.source` (see the module docstring)."""
    from lth.config.schema import resolve

    cfg = resolve(cfg)  # the model's, dataset's and optimizer's own defaults (lth.config.defaults)
    from lth.lottery.level_io import restore_members
    from lth.lottery.plan import prepare
    from lth.train.trainer import replicate_keys

    validate(cfg)
    src, src_summary, rd_src = _source(cfg)
    dataset, plan, trainer = prepare(cfg)
    R, c = cfg.replicates, cfg.compress
    keys = replicate_keys(cfg.seed, R)
    variables = trainer.init_variables(keys["init"])
    states0 = trainer.create_states(variables, jax.vmap(M.ones_like)(variables["params"]))
    template = jax.device_get(rewind.snapshot(states0))
    one = jax.tree.map(lambda x: x[0], variables["params"])
    paths = M.prunable_paths(one, cfg.pruning.prunable, cfg.pruning.exclude)
    bits = {p: bits_for(p, c.bits, "compress.bits") for p in paths} if c.method == "kmeans" else {p: 8 for p in paths}
    index_bits = {p: bits_for(p, c.index_bits, "compress.index_bits") for p in paths}
    steps = to_steps(c.finetune_duration, plan.steps_per_epoch, setting="compress.finetune_duration") if c.method == "kmeans" else 0
    try:
        members = restore_members(rd_src, c.level, c.kind, template)
    except Exception as e:  # another model or dataset than the source's: its tensors do not fit
        raise ConfigError(f"compress.source={c.source!r}: its level {c.level} does not fit this model "
                          f"({type(e).__name__}); leave the model and dataset settings as the source's") from None
    members = jax.tree.map(lambda x: np.asarray(x)[:R], members)

    rd = RunDir.for_config(cfg, plan.as_dict(), hash_extra(cfg, src_summary["hash"]), prefix="compress-")
    rd.create()
    lock = rd.lock()
    try:
        from omegaconf import OmegaConf

        write_atomic(rd.file("config.yaml"), OmegaConf.to_yaml(OmegaConf.create(to_dict(cfg))))
        echo(f"compress {rd.path}\n  level {c.level} ({c.kind}) of {src}: {cfg.model.name} on {dataset.name}, "
             f"{R} replicate(s), method {c.method}"
             + (f", bits {dict(c.bits)}, fine-tuning {steps} steps" if c.method == "kmeans" else "")
             + f", relative indices {dict(c.index_bits)}")
        out = _compress(cfg, rd, trainer, states0, members, paths, bits, index_bits, steps, echo)
        report = pd.DataFrame(out["rows"])
        write_atomic(rd.file("report.csv"), report.to_csv(index=False))
        summary = {"run_dir": rd.path, "hash": rd.hash, "source_dir": src, "source_hash": src_summary["hash"],
                   "level": c.level, "kind": c.kind, "method": c.method, "config": to_dict(cfg),
                   "density": float(np.mean(out["density"])), "bits": bits, "index_bits": index_bits,
                   "finetune_steps": steps, "stages": out["stages"], "tensors": out["tensors"],
                   "replicates": out["replicates"]}
        write_json(rd.file("summary.json"), summary)
        _log_wandb(cfg, rd, report, summary)
        echo(format_report(summary))
        return Outcome(rd.path, report, summary)
    finally:
        lock.close()


def hash_extra(cfg: Config, source_hash: str) -> dict[str, Any]:
    """What a compress run's hash covers beside the training settings: the source, the level, the
    kind and the compress settings (`lth.compression.file_format.hashed_settings`)."""
    c = cfg.compress
    return {"source": source_hash, "level": c.level, "kind": c.kind, "compress": hashed_settings(to_dict(cfg)["compress"])}


# -- the stages --------------------------------------------------------------------------------
def _evaluate(trainer, states0, params, batch_stats) -> np.ndarray:
    """Test accuracy of every replicate of the stacked `params`."""
    R = jax.tree.leaves(params)[0].shape[0]
    base = jax.tree.map(lambda x: x[:R], states0)
    return np.asarray(trainer.evaluate(base.replace(params=jax.tree.map(jnp.asarray, params),
                                                    batch_stats=jax.tree.map(jnp.asarray, batch_stats)), "test")["accuracy"])


def _compress(cfg, rd, trainer, states0, members, paths, bits, index_bits, steps, echo) -> dict[str, Any]:
    R, c = cfg.replicates, cfg.compress
    masks, params, bstats = members["mask"], members["params"], members["batch_stats"]
    params = M.apply_mask(params, masks)
    flat_p = [M.flatten(jax.tree.map(lambda x: x[r], params)) for r in range(R)]
    flat_m = [M.flatten(jax.tree.map(lambda x: x[r], masks)) for r in range(R)]
    acc = {"start": _evaluate(trainer, states0, params, bstats)}
    echo(f"  start:      test accuracy {100 * acc['start'].mean():.2f}%")
    quantised: list[dict[str, Any]] = []
    for r in range(R):
        if c.method == "kmeans":
            quantised.append({p: quantize.share(flat_p[r][p], flat_m[r][p], bits[p]) for p in paths})
        else:
            quantised.append({p: quantize.int8(flat_p[r][p], flat_m[r][p]) for p in paths})
    rebuilt = _stack_params(flat_p, [{p: q.weights() for p, q in qs.items()} for qs in quantised])
    stage2 = "shared" if c.method == "kmeans" else "int8"
    acc[stage2] = _evaluate(trainer, states0, rebuilt, bstats)
    echo(f"  {stage2 + ':':11} test accuracy {100 * acc[stage2].mean():.2f}%")
    if c.method == "kmeans" and steps > 0:
        tuned = []  # the running statistics fine-tuning leaves: evaluated with, stored and counted
        for r in range(R):
            one_b = jax.tree.map(lambda x: x[r], bstats)
            books, stats = finetune_centroids(cfg, trainer, flat_p[r], quantised[r], one_b, steps, r)
            for p, book in books.items():
                quantised[r][p] = dataclasses.replace(quantised[r][p], codebook=book)
            tuned.append(jax.tree.map(np.asarray, stats))
        bstats = _stack(tuned)
        rebuilt = _stack_params(flat_p, [{p: q.weights() for p, q in qs.items()} for qs in quantised])
        acc["finetuned"] = _evaluate(trainer, states0, rebuilt, bstats)
        echo(f"  fine-tuned: test accuracy {100 * acc['finetuned'].mean():.2f}% ({steps} steps)")
    # Coding: write each replicate's file, read it back, decode, rebuild, compare, evaluate.
    rows, decoded_flat, decoded_stats, tensors = [], [], [], {}
    for r in range(R):
        file = rd.file(f"compressed_r{r}.npz")
        enc = {p: _encode(flat_m[r][p], quantised[r][p], bits[p], index_bits[p], c.index_order) for p in paths}
        rest = {p: np.asarray(v, np.float32) for p, v in flat_p[r].items() if p not in paths}
        stats = M.flatten(jax.tree.map(lambda x: np.asarray(x[r], np.float32), bstats)) if bstats else {}
        save(file, enc, rest, {p: _book(quantised[r][p]) for p in paths}, {p: np.shape(flat_p[r][p]) for p in paths},
             method=c.method, index_order=c.index_order, batch_stats=stats)
        weights, stats_back = coding_load_weights(file), load_batch_stats(file)
        if sorted(weights) != sorted(flat_p[r]) or sorted(stats_back) != sorted(stats):
            raise RuntimeError(f"the file {file} does not hold every parameter and BatchNorm statistic")
        for p in paths:
            expect = quantised[r][p].weights()
            if not np.array_equal(weights[p], expect):
                raise RuntimeError(f"the decoded tensor {p} of replicate {r} differs from the compressed weights")
        decoded_flat.append(weights)
        decoded_stats.append(M.unflatten(stats_back) if stats_back else {})
        rows.extend(_size_rows(r, flat_p[r], flat_m[r], quantised[r], enc, paths, bits, index_bits, c, stats))
        tensors = {p: {"bits": bits[p], "index_bits": index_bits[p], "size": int(np.size(flat_p[r][p]))} for p in paths}
    decoded = _stack([M.unflatten(w) for w in decoded_flat])
    acc["huffman"] = _evaluate(trainer, states0, decoded, _stack(decoded_stats))
    echo(f"  decoded:    test accuracy {100 * acc['huffman'].mean():.2f}% (from the Huffman-coded files)")
    report = pd.DataFrame(rows)
    totals = report[report.tensor == "total"]
    stages = {}
    for stage in STAGES:
        b = totals[totals.stage == stage]["bytes"].to_numpy(np.float64)
        stages[stage] = {"bytes": float(b.mean()), "ratio": float(totals[totals.stage == "dense"]["bytes"].mean() / b.mean())}
    stage_acc = {"dense": None, "sparse": "start", "shared": "finetuned" if "finetuned" in acc else stage2,
                 "huffman": "huffman"}
    for stage, key in stage_acc.items():
        if key is not None:
            stages[stage]["accuracy"] = float(acc[key].mean())
    stages["dense"]["accuracy"] = None
    accuracies = {k: float(v.mean()) for k, v in acc.items()}
    per_rep = [{"replicate": r, **{f"{k}_accuracy": float(v[r]) for k, v in acc.items()},
                **{f"{s}_bytes": float(totals[(totals.stage == s) & (totals.replicate == r)]["bytes"].iloc[0]) for s in STAGES}}
               for r in range(R)]
    density = [float(sum(flat_m[r][p].sum() for p in paths) / sum(flat_m[r][p].size for p in paths)) for r in range(R)]
    return {"rows": rows, "stages": {**stages, "accuracy": accuracies}, "tensors": tensors, "replicates": per_rep,
            "density": density}


def _stack(trees: list):
    return jax.tree.map(lambda *xs: np.stack(xs), *trees)


def _stack_params(flat_p: list[dict], replaced: list[dict]):
    trees = [M.unflatten({**fp, **{p: np.asarray(w, np.float32) for p, w in rp.items()}}) for fp, rp in zip(flat_p, replaced)]
    return jax.tree.map(lambda *xs: np.stack(xs), *trees)


def _book(q) -> np.ndarray:
    return q.codebook if isinstance(q, quantize.Shared) else np.asarray(q.scale, np.float32).reshape(-1)


def _codes(q) -> np.ndarray:
    """The weight codes, in the tensor's shape, of the surviving weights' positions (0 = zero)."""
    if isinstance(q, quantize.Shared):
        return q.codes
    return q.q.astype(np.int32) + 128  # q = 0 of a surviving weight is code 128


def _encode(mask, q, bits, index_bits, order):
    mask_flat, codes = storage_flat(np.asarray(mask, bool), order), storage_flat(_codes(q), order)
    return coding.encode_tensor(mask_flat, codes[mask_flat], weight_bits=bits, index_bits=index_bits)


# -- the report --------------------------------------------------------------------------------
def _size_rows(r, flat_p, flat_m, qs, enc, paths, bits, index_bits, c, stats) -> list[dict[str, Any]]:
    """Per tensor and stage its bytes; the unpruned parameters and the BatchNorm running
    statistics (2 floats per channel, as a bias) count as float32 in every stage."""
    rows = []
    totals = dict.fromkeys(STAGES, 0.0)
    for p in paths:
        mask_flat = storage_flat(np.asarray(flat_m[p], bool), c.index_order)
        codes = storage_flat(_codes(qs[p]), c.index_order)[mask_flat]
        book = 2 ** bits[p] - 1 if c.method == "kmeans" else int(np.size(qs[p].scale))
        s = coding.tensor_sizes(mask_flat, codes, weight_bits=bits[p], index_bits=index_bits[p], codebook_size=book)
        assert s["huffman"] == enc[p].bits + 32 * book
        sizes = {"dense": s["dense"], "sparse": s["sparse_float32"], "shared": s["shared"], "huffman": s["huffman"]}
        for stage in STAGES:
            rows.append({"replicate": r, "tensor": p, "stage": stage, "bytes": sizes[stage] / 8,
                         "ratio": sizes["dense"] / sizes[stage], "entries": s["entries"], "fillers": s["fillers"],
                         "nonzero": s["nonzero"]})
            totals[stage] += sizes[stage] / 8
    floats = {"not pruned (float32)": sum(int(np.size(v)) for p, v in flat_p.items() if p not in paths)}
    if stats:
        floats["BatchNorm statistics (float32)"] = sum(int(np.size(v)) for v in stats.values())
    for name, n in floats.items():
        for stage in STAGES:
            rows.append({"replicate": r, "tensor": name, "stage": stage, "bytes": n * 4.0, "ratio": 1.0})
            totals[stage] += n * 4.0
    for stage in STAGES:
        rows.append({"replicate": r, "tensor": "total", "stage": stage, "bytes": totals[stage],
                     "ratio": totals["dense"] / totals[stage]})
    return rows


STAGE_NAMES = {"dense": "dense float32", "sparse": "pruned (sparse float32 + indices)",
               "shared": "weight sharing (codes + indices + codebook)", "huffman": "Huffman coding"}


INT8_NAMES = {**STAGE_NAMES, "shared": "int8 (codes + indices + channel scales)"}


def format_report(summary: dict[str, Any]) -> str:
    """The totals per stage: size (KB = 1,000 bytes, as the paper counts), ratio against dense
    float32, test accuracy (means over replicates)."""
    names = STAGE_NAMES if summary.get("method") != "int8" else INT8_NAMES
    lines = [f"{'stage':46} {'size':>12} {'ratio':>8} {'test accuracy':>14}"]
    for stage in STAGES:
        s = summary["stages"][stage]
        acc = "" if s.get("accuracy") is None else f"{100 * s['accuracy']:.2f}%"
        lines.append(f"{names[stage]:46} {s['bytes'] / 1000:>10.1f} KB {s['ratio']:>7.1f}x {acc:>14}")
    return "\n".join(lines)


def _log_wandb(cfg: Config, rd: RunDir, report: pd.DataFrame, summary: dict[str, Any]) -> None:
    run = wandb_logger.side_run(cfg, rd, "compress")
    if run is None:
        return
    import wandb

    try:
        run.log({"report": wandb.Table(dataframe=report)})
        for stage in STAGES:
            s = summary["stages"][stage]
            run.summary[f"{stage}/bytes"] = s["bytes"]
            run.summary[f"{stage}/ratio"] = s["ratio"]
            if s.get("accuracy") is not None:
                run.summary[f"{stage}/accuracy"] = s["accuracy"]
    finally:
        run.finish()
