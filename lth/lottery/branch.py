"""Branches after the fact: the tickets of a finished lottery run, trained under other settings.

For a source run S and each of its finished levels L in `branch.levels`, replicate r:

    m  = S's ticket mask of level L                    (`branch.mask=ticket`)
         or each prunable tensor's mask permuted at random (`shuffle_layerwise`: same densities)
    W  = S's weights at its rewind point θk            (`branch.weights=rewind`)
         or S's final weights of level L               (`final`)
         or a fresh draw from the initialiser          (`reinit`, the branch's seed)
    θ  = m ⊙ W, trained for the steps k .. T-1 of the branch's own settings (dataset, optimizer,
         durations, rewind point, seed), with a fresh optimizer state (or, with
         `rewind.optimizer_state=rewound` and `weights=rewind`, S's state at k).

Changing the dataset is ticket transfer (Morcos et al. 2019: MNIST → Fashion-MNIST, CIFAR-10 →
SVHN). The classifier (`head/...`, the models' convention) of a dataset with another number of
classes no longer fits: it is drawn fresh from the initialiser, with a random mask keeping the
source tensor's density. Any other tensor that does not fit is refused, each named.

A branch is a run of its own: `<runs_dir>/branch-<model>-<dataset>-<hash>/`, hashed over its
settings, the source run's hash, `branch.weights` and `branch.mask` (not `branch.levels`: asking
for more levels extends it). Its `results.csv` has `kind=branch` and the columns `source_run` (the
source directory's name) and `source_level`; its `level` column is the source level.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Callable

import jax
import numpy as np
import pandas as pd

from lth.runs import checkpoints, results, writer
from lth.lottery import controls as C, rewind
from lth.sparsity import flops, masks as M
from lth.config.schema import Config, ConfigError, from_dict, to_dict
from lth.runs.run_dir import RunDir, write_atomic, write_json
from lth.train.trainer import replicate_keys, stacked_density, train_level

if TYPE_CHECKING:
    from lth.lottery.levels import Outcome

HEAD = "head/"


def source_config(source: str, *, setting: str = "branch.source") -> Config:
    """The config a source run was made with (its `config.yaml`); `setting` names the source in errors."""
    from omegaconf import OmegaConf

    _exists(source, setting)
    path = os.path.join(os.path.expanduser(source), "config.yaml")
    if not os.path.isfile(path):
        raise ConfigError(f"{setting}={source!r}: not a lottery run directory (no config.yaml there)")
    return from_dict(OmegaConf.to_container(OmegaConf.load(path), resolve=True))


def _exists(source: str, setting: str) -> None:
    """ConfigError unless `source` is a directory: one that does not exist is named as such."""
    path = os.path.abspath(os.path.expanduser(source))
    if not os.path.exists(path):
        raise ConfigError(f"{setting}={source!r}: does not exist ({path}); give the directory of a finished "
                          "lottery run (runs/<model>-<dataset>-<hash>)")
    if not os.path.isdir(path):
        raise ConfigError(f"{setting}={source!r}: not a directory ({path}); give the directory of a finished "
                          "lottery run (runs/<model>-<dataset>-<hash>)")


def source_summary(source: str, *, setting: str) -> tuple[str, dict[str, Any]]:
    """(absolute path, summary.json) of the finished lottery run `source`, named by `setting` in errors."""
    _exists(source, setting)
    src = os.path.abspath(os.path.expanduser(source))
    path = os.path.join(src, "summary.json")
    if not os.path.isfile(path):
        raise ConfigError(f"{setting}={source!r}: not a lottery run directory (no summary.json there)")
    with open(path) as f:
        return src, json.load(f)


def _check(cfg: Config) -> tuple[str, dict[str, Any]]:
    b = cfg.branch
    if not b.source:
        raise ConfigError("branch.source=null: name the lottery run directory to branch from (branch.source=RUN_DIR)")
    src, summary = source_summary(b.source, setting="branch.source")
    if not b.levels:
        raise ConfigError("branch.levels=[]: list the source levels to branch from, e.g. branch.levels=[2,4]")
    done = sorted(int(k) for k in summary.get("levels", {}))
    missing = [lv for lv in b.levels if lv not in done or not os.path.isdir(os.path.join(src, f"level_{lv:02d}", "mask"))]
    if missing:
        raise ConfigError(f"branch.levels={b.levels}: level(s) {missing} are not finished in {src} (finished: {done})")
    if cfg.replicates > summary["config"]["replicates"]:
        raise ConfigError(f"replicates={cfg.replicates}: the source run has {summary['config']['replicates']} replicate(s) to branch from")
    return src, summary


def run(cfg: Config, *, echo: Callable[[str], None] = print) -> "Outcome":
    """Train the branch `cfg` (`cfg.branch` says from what); returns its directory and tables."""
    from lth.config.schema import resolve

    cfg = resolve(cfg)  # the model's, dataset's and optimizer's own defaults (lth.config.defaults)
    from lth.lottery.levels import Outcome
    from lth.lottery.plan import prepare

    src, src_summary = _check(cfg)
    dataset, plan, trainer = prepare(cfg)
    R, b = cfg.replicates, cfg.branch
    keys = replicate_keys(cfg.seed, R)
    variables = trainer.init_variables(keys["init"])
    states0 = trainer.create_states(variables, jax.vmap(M.ones_like)(variables["params"]))
    one = jax.tree.map(lambda x: x[0], variables["params"])
    paths = M.prunable_paths(one, cfg.pruning.prunable, cfg.pruning.exclude)
    template = jax.device_get(rewind.snapshot(states0))
    saved_raw = checkpoints.restore(os.path.join(src, "rewind"), None)
    if cfg.rewind.optimizer_state == "rewound":
        if b.weights != "rewind":
            raise ConfigError(f"rewind.optimizer_state=rewound: only a branch with branch.weights=rewind can take the source's "
                              f"optimizer state (branch.weights={b.weights!r}); set rewind.optimizer_state=reset")
        try:
            saved_opt = checkpoints.restore(os.path.join(src, "rewind"), template)["opt_state"]
            saved_opt = jax.tree.map(lambda x: x[:R], saved_opt)
        except Exception as e:  # another optimizer or model: its state does not fit
            raise ConfigError(f"rewind.optimizer_state=rewound: the source's optimizer state does not fit this branch's "
                              f"model and optimizer ({type(e).__name__}); set rewind.optimizer_state=reset") from None
    else:
        saved_opt = template["opt_state"]
    saved = {"opt_state": saved_opt, "step": np.full((R,), plan.rewind_step, np.int32)}
    # Every level's tensors are checked against the model before anything is written.
    starts = {lv: _start(cfg, src, lv, saved_raw, variables, paths, trainer) for lv in b.levels}

    source_run = os.path.basename(src)
    rd = RunDir.for_config(cfg, plan.as_dict(), {"source": src_summary["hash"], "weights": b.weights, "mask": b.mask},
                           prefix="branch-")
    rd.create()
    lock = rd.lock()
    try:
        from omegaconf import OmegaConf

        write_atomic(rd.file("config.yaml"), OmegaConf.to_yaml(OmegaConf.create(to_dict(cfg))))
        summary = {"run_dir": rd.path, "hash": rd.hash, "source_run": source_run, "source_dir": src,
                   "source_hash": src_summary["hash"], "config": to_dict(cfg), "plan": plan.as_dict(), "levels": {}}
        echo(f"branch {rd.path}\n  from {src} levels {b.levels}: {b.mask} mask, {b.weights} weights; "
             f"{cfg.model.name} on {dataset.name}, {R} replicate(s), steps {plan.rewind_step}..{plan.total_steps}")
        from lth.integrations.wandb_logger import WandbLogger

        wb = cfg.logger.wandb
        label = os.path.basename(rd.path)
        logger = WandbLogger(mode=wb.mode if writer.primary() else "disabled", project=wb.project, entity=wb.entity,
                             group=wb.group or label, tags=wb.tags + ["branch"],
                             config={**to_dict(cfg), "run_hash": rd.hash, "run_dir": rd.path, "source_run": source_run,
                                     "plan": plan.as_dict()},
                             directory=rd.path, log_every=plan.log_every, label=label, run_id=f"lth-{rd.hash}")
        try:
            source_tickets = _source_results(src)
            rows = _branch_levels(cfg, rd, plan, trainer, keys, states0, saved, starts, paths, source_run, summary, logger,
                                  echo, source_tickets)
            df = results.to_frame(rows)
            table = results.beside_source(results.summarize(df, kind="branch"), df, source_tickets)
            logger.log_results(df, table)
            logger.finish()
        except BaseException:
            logger.finish(failed=True)
            raise
        return Outcome(rd.path, df, table)
    finally:
        lock.close()


def _source_results(src: str) -> pd.DataFrame:
    """The source run's results table (its tickets are what a branch is compared with)."""
    path = os.path.join(src, "results.csv")
    return pd.read_csv(path) if os.path.isfile(path) else results.to_frame([])


def _level_line(level: int, rows: list[dict], source: pd.DataFrame, seconds: float | None) -> str:
    """One source level's line: the branch's final accuracy, mean ± population std over replicates
    (as a lottery level's line), and the source ticket's at the same level and replicates beside it."""
    df = results.to_frame(rows)
    t = results.beside_source(results.summarize(df, kind="branch"), df, source).loc[level]
    line = (f"source level {level:2d}: density {100 * t.density:6.2f}%  test acc {100 * t.test_acc:.2f} "
            f"± {100 * t.test_acc_std:.2f}")
    if np.isfinite(t.source_test_acc):
        line += (f"  (source ticket {100 * t.source_test_acc:.2f} ± {100 * t.source_test_acc_std:.2f}, "
                 f"gap {100 * t.gap_source:+.2f})")
    return line + ("  done already, skipped" if seconds is None else f"  {seconds:.1f}s")


def _branch_levels(cfg, rd, plan, trainer, keys, states0, saved, starts, paths, source_run, summary, logger, echo,
                   source) -> list[dict]:
    """Train (or skip, when done) each requested source level, logging to W&B; returns all rows."""
    rows = []
    for lv in sorted(set(cfg.branch.levels)):
        if rd.level_done(lv):
            with open(os.path.join(rd.level_dir(lv), "result.json")) as f:
                done = json.load(f)
            echo(_level_line(lv, done["rows"], source, None))
        else:
            weights, masks = starts[lv]
            states = rewind.restart(states0, weights["params"], weights["batch_stats"], saved, masks,
                                    optimizer_state=cfg.rewind.optimizer_state)
            logger.start_level(lv, float(stacked_density(states.mask, paths).mean()))
            states, hist, _ = train_level(trainer, states, keys, start=plan.rewind_step, end=plan.total_steps,
                                          eval_every=plan.eval_every, on_eval=logger.log_eval, on_train=logger.log_train)
            host = jax.device_get(states)
            checkpoints.save(os.path.join(rd.level_dir(lv), "mask"), host.mask)
            checkpoints.save(os.path.join(rd.level_dir(lv), "final"), {"params": host.params, "batch_stats": host.batch_stats})
            level_rows = results.level_rows(lv, "branch", stacked_density(host.mask, paths), hist,
                                            start=plan.rewind_step, end=plan.total_steps,
                                            flops=flops.member_flops(trainer.model, trainer.dataset.input_shape, host))
            for r in level_rows:
                r.update(source_run=source_run, source_level=lv)
            done = {"rows": level_rows,  # with the evaluation history, as a lottery level's (lth.api.load_run)
                    "history": {"eval_steps": hist.eval_steps, "evals": [{k: v.tolist() for k, v in e.items()} for e in hist.evals]}}
            write_json(os.path.join(rd.level_dir(lv), "result.json"), done)
            acc = np.mean([r["test_accuracy"] for r in level_rows])
            logger.end_level({"density": level_rows[0]["density"], "test_accuracy": float(acc), "source_level": lv})
            echo(_level_line(lv, level_rows, source, hist.seconds))
        rows.extend(done["rows"])
        summary["levels"][str(lv)] = {"density": float(np.mean([r["density"] for r in done["rows"]])),
                                      "test_accuracy": float(np.mean([r["test_accuracy"] for r in done["rows"]]))}
        write_atomic(rd.file("results.csv"), results.to_frame(rows).to_csv(index=False))
        write_json(rd.file("summary.json"), summary)
    return rows


def _start(cfg: Config, src: str, level: int, saved_raw, variables, paths, trainer) -> tuple[dict, Any]:
    """(weights {"params", "batch_stats"}, masks) of one source level for this branch, stacked over
    the branch's replicates."""
    R, b = cfg.replicates, cfg.branch
    ldir = os.path.join(src, f"level_{level:02d}")
    src_mask = M.flatten(checkpoints.restore(os.path.join(ldir, "mask"), None))
    if b.weights == "rewind":
        w = saved_raw
    elif b.weights == "final":
        w = checkpoints.restore(os.path.join(ldir, "final"), None)
    else:  # reinit: the branch's own draw (not θ0 of its seed, which is the source's θ0 when the seed is kept)
        w = C.fresh_weights(trainer, cfg.seed, R, "branch_reinit", level)
    src_params, src_bs = M.flatten(w["params"]), M.flatten(w.get("batch_stats") or {})
    model_params, model_bs = M.flatten(variables["params"]), M.flatten(variables.get("batch_stats", {}) or {})
    problems, params, bstats, masks = [], {}, {}, {}
    fresh = []
    for p, v in model_params.items():
        shape = np.shape(v)[1:]
        have = p in src_params and p in src_mask
        if have and np.shape(src_params[p])[1:] == shape:
            params[p] = np.asarray(src_params[p][:R])
            masks[p] = np.asarray(src_mask[p][:R], bool)
        elif p.startswith(HEAD):
            params[p] = np.asarray(v)
            density = float(np.asarray(src_mask[p]).mean()) if p in src_mask else 1.0
            alive = int(round(density * int(np.prod(shape))))
            masks[p] = np.stack([C.exact_keep(int(np.prod(shape)), alive, C.control_rng(cfg.seed, r, "branch_head", level)).reshape(shape)
                                 for r in range(R)])
            fresh.append(p)
        else:
            got = np.shape(src_params[p])[1:] if p in src_params else "missing"
            problems.append(f"params/{p}: source {got} vs model {shape}")
    for p, v in model_bs.items():
        if p in src_bs and np.shape(src_bs[p])[1:] == np.shape(v)[1:]:
            bstats[p] = np.asarray(src_bs[p][:R])
        elif p.startswith(HEAD):
            bstats[p] = np.asarray(v)
        else:
            problems.append(f"batch_stats/{p}: source {np.shape(src_bs.get(p, ()))[1:] or 'missing'} vs model {np.shape(v)[1:]}")
    if problems:
        raise ConfigError(f"branch.source={b.source!r}: the source's level {level} does not fit this branch's model:\n  "
                          + "\n  ".join(problems))
    mask = M.unflatten(masks)
    if b.mask == "shuffle_layerwise":
        mask = M.stack([C.shuffle_layerwise(m, paths, C.control_rng(cfg.seed, r, "shuffle_layerwise", level))
                        for r, m in enumerate(M.unstack(mask, R))])
    return {"params": M.unflatten(params), "batch_stats": M.unflatten(bstats) if bstats else {}}, mask
