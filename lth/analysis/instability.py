"""Instability analysis: linear mode connectivity (Frankle, Dziugaite, Roy & Carbin 2020).

For a rewind point k (a step), replicate r, and a mask m (all ones: the dense network; or the
ticket mask of level L of a finished lottery run, `instability.source` / `instability.level`, the
paper's section 4 for IMP subnetworks):

    W_k      = the parent: replicate r's dense network trained from θ0 for k steps (its own
               initialisation and data order, the same as the lottery run's dense level 0)
    W1, W2   = two copies of m ⊙ W_k, each trained under m from step k to the end T with its own
               data order and augmentation randomness (copy c's keys: fold_in(replicate key, 1 + c));
               step counter, learning-rate schedule and BatchNorm statistics continue from k, the
               optimizer state is fresh or the parent's at k (`rewind.optimizer_state`)
    E(α)     = test error of (1 − α)·W1 + α·W2, α = 0, 1/(n−1), ..., 1 (n = `instability.alphas`, 30)
    barrier  = max_α E(α) − (E(0) + E(1)) / 2     (the error barrier; "stable at k" when < 2%)

Pruned weights are zero in both copies, so every network on the path has the mask m.

BatchNorm: the running statistics of an interpolated network are not those of its activations, so
for each α they are recomputed from `instability.bn_batches` training batches (a fixed
permutation, augmented as in training): each BatchNorm's mean and variance become the average of
the per-batch means and (biased) variances over those batches, the cumulative average that
PyTorch's `torch.optim.swa_utils.update_bn` computes. All α, end points included, are evaluated
this way, so the barrier compares like with like; the copies' own test errors with their trained
statistics are reported beside (`error_trained_1`, `error_trained_2`). `bn_batches=0` keeps the
interpolated running statistics.

A run directory `<runs_dir>/lmc-<model>-<dataset>-<hash>/` (hashed over the training settings,
`instability.alphas`, `instability.bn_batches` and the source run's hash and level; not over the
points, so asking for more points extends it) holds:
    config.yaml, summary.json     settings; per point the barrier's mean, std (population), min, max
    instability.csv               one row per point x replicate: point, step, replicate, level,
                                  density, barrier, error_start, error_end, max_error, alpha_max,
                                  error_trained_1, error_trained_2
    curves.csv                    one row per point x replicate x α: point, step, replicate, alpha,
                                  test_error, test_loss
    points/<step>.json            each finished point (a re-run skips it)
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from lth.runs import checkpoints
from lth.sparsity import masks as M
from lth.lottery import rewind
from lth.config.schema import Config, ConfigError, to_dict
from lth.config.durations import to_steps
from lth.runs.run_dir import RunDir, write_atomic, write_json
from lth.train.trainer import replicate_keys, stacked_density, train_level

STABLE = 0.02  # Frankle et al. 2020: stable when the error barrier is below 2%
CSV_COLUMNS = ["point", "step", "replicate", "level", "density", "barrier", "error_start", "error_end", "max_error",
               "alpha_max", "error_trained_1", "error_trained_2"]


@dataclasses.dataclass
class Outcome:
    run_dir: str
    table: pd.DataFrame  # instability.csv
    curves: pd.DataFrame  # curves.csv


def error_barrier(errors: np.ndarray) -> float:
    """max_α E(α) − (E(0) + E(1)) / 2 of errors E along the path (first and last are the ends)."""
    errors = np.asarray(errors, np.float64)
    return float(errors.max() - 0.5 * (errors[0] + errors[-1]))


def interpolate(p1, p2, alpha: float):
    """(1 − α)·p1 + α·p2, leaf by leaf."""
    return jax.tree.map(lambda a, b: (1.0 - alpha) * a + alpha * b, p1, p2)


def point_steps(cfg: Config, steps_per_epoch: int, total: int) -> list[tuple[str, int]]:
    """The rewind points as (label, step), sorted by step; each must lie in [0, T)."""
    pts = cfg.instability.points
    if not pts:
        raise ConfigError("instability.points=[]: list the rewind points to analyse, e.g. instability.points=[0it,500it,2000it]")
    out = {}
    for i, p in enumerate(pts):
        k = to_steps(p, steps_per_epoch, setting=f"instability.points[{i}]")
        if k >= total:
            raise ConfigError(f"instability.points[{i}]={p!r} is step {k}, not before the end of training "
                              f"(train.duration={cfg.train.duration!r} = {total} steps)")
        out.setdefault(k, str(p))
    return [(label, k) for k, label in sorted(out.items())]


def validate(cfg: Config) -> None:
    i = cfg.instability
    if not isinstance(i.alphas, int) or i.alphas < 2:
        raise ConfigError(f"instability.alphas={i.alphas!r}: the path needs at least 2 points (the two ends); the paper uses 30")
    if not isinstance(i.bn_batches, int) or i.bn_batches < 0:
        raise ConfigError(f"instability.bn_batches={i.bn_batches!r}: must be an integer >= 0 (0 keeps the interpolated statistics)")
    if (i.source is None) != (i.level is None):
        raise ConfigError(f"instability.source={i.source!r}, instability.level={i.level!r}: give both (the copies train under "
                          "the ticket mask of that level) or neither (dense)")
    if cfg.pruning.schedule in ("gradual", "dynamic"):
        raise ConfigError(f"pruning.schedule={cfg.pruning.schedule}: instability analysis trains fixed masks (dense, or a "
                          "lottery level's)")


# -- BatchNorm statistics along the path -------------------------------------------------------
def recompute_batch_stats(model, params, batch_stats, batches: jax.Array):
    """The running statistics of the network (`params`, one replicate) recomputed as the average
    of the per-batch statistics over `batches` (B, batch, ...) of normalised inputs. Each batch's
    statistics are read directly, whatever the model's `model.bn_momentum`: the model is applied
    in training mode as a copy with momentum 0, whose update m·old + (1 − m)·batch is exactly the
    batch's statistic (a BatchNorm model carries its momentum as the field `bn_momentum`)."""
    if not hasattr(model, "bn_momentum"):
        raise TypeError(f"{type(model).__name__} has BatchNorm statistics but no bn_momentum field: the statistics "
                        "along the path cannot be recomputed (give the model a bn_momentum field passed to its BatchNorms)")
    direct = model.clone(bn_momentum=0.0)
    zeros = jax.tree.map(jnp.zeros_like, batch_stats)  # 0·old: stale values (even inf or nan) cannot leak in

    def one(x):
        _, upd = direct.apply({"params": params, "batch_stats": zeros}, x, train=True, mutable=["batch_stats"])
        return upd["batch_stats"]

    stats = jax.lax.map(one, batches)
    return jax.tree.map(lambda s: jnp.mean(s, axis=0), stats)


# -- the run -----------------------------------------------------------------------------------
def _source(cfg: Config, template) -> tuple[dict[str, Any], Any, float]:
    """(the source's summary, its level's stacked ticket mask (R, ...), mean density) or dense."""
    i = cfg.instability
    from lth.lottery.branch import source_summary

    src, summary = source_summary(i.source, setting="instability.source")
    done = sorted(int(k) for k in summary.get("levels", {}))
    mask_dir = os.path.join(src, f"level_{i.level:02d}", "mask")
    if i.level not in done or not checkpoints.exists(mask_dir):
        raise ConfigError(f"instability.level={i.level}: not a finished level with a mask in {src} (finished: {done})")
    if cfg.replicates > summary["config"]["replicates"]:
        raise ConfigError(f"replicates={cfg.replicates}: the source run has {summary['config']['replicates']} replicate(s)")
    src_params = {k: summary["config"][k] for k in ("dataset", "model", "seed")}
    mine = {k: to_dict(cfg)[k] for k in ("dataset", "model", "seed")}
    if src_params != mine:
        raise ConfigError(f"instability.source={i.source!r}: its dataset/model/seed differ from this run's; the dense "
                          "network the copies start from must be the source's (leave those settings as the source's)")
    mask = checkpoints.restore(mask_dir, jax.tree.map(lambda p: np.zeros(np.shape(p), bool), template["params"]))
    return summary, jax.tree.map(lambda x: x[: cfg.replicates], mask), summary["levels"][str(i.level)]["density"]


def _bn_batches(trainer, cfg: Config, key) -> jax.Array | None:
    n = cfg.instability.bn_batches
    if n == 0:
        return None
    bs = trainer.batch_size
    N = trainer.x_train.shape[0]
    idx = jax.random.permutation(key, N)[: min(n * bs, (N // bs) * bs)]
    x = trainer.x_train[idx]
    if trainer.augment is not None:
        x = trainer.augment(jax.random.fold_in(key, 1), x)
    x = trainer.dataset.normalize(x)
    return x.reshape(-1, bs, *x.shape[1:])


def run(cfg: Config, *, echo: Callable[[str], None] = print, reports: Callable[..., None] | None = None) -> Outcome:
    """Run (or extend) the instability analysis `cfg`; returns its directory and tables. `reports(wandb_run,
    table, curves, echo)`: what the caller wants added to the analysis's W&B run when W&B is on
    (`lth.analysis.reports.instability`: the figures; `lth.api.run` and `experiments/instability.py` pass it)."""
    from lth.config.schema import resolve

    cfg = resolve(cfg)  # the model's, dataset's and optimizer's own defaults (lth.config.defaults)
    from lth.lottery.plan import prepare

    validate(cfg)
    dataset, plan, trainer = prepare(cfg)
    T, R = plan.total_steps, cfg.replicates
    points = point_steps(cfg, plan.steps_per_epoch, T)
    keys = replicate_keys(cfg.seed, R)
    variables = trainer.init_variables(keys["init"])
    states0 = trainer.create_states(variables, jax.vmap(M.ones_like)(variables["params"]))
    template = jax.device_get(rewind.snapshot(states0))
    inst = cfg.instability
    extra: dict[str, Any] = {"instability": {"alphas": inst.alphas, "bn_batches": inst.bn_batches}}
    if inst.source is not None:
        src_summary, mask, density = _source(cfg, template)
        extra["source"] = {"hash": src_summary["hash"], "level": inst.level}
        level = inst.level
    else:
        mask, density, level = jax.device_get(jax.vmap(M.ones_like)(variables["params"])), 1.0, -1
    rd = RunDir.for_config(cfg, plan.as_dict(), extra, prefix="lmc-")
    rd.create()
    lock = rd.lock()
    try:
        from omegaconf import OmegaConf

        write_atomic(rd.file("config.yaml"), OmegaConf.to_yaml(OmegaConf.create(to_dict(cfg))))
        os.makedirs(rd.file("points"), exist_ok=True)
        echo(f"instability {rd.path}\n  {cfg.model.name} on {dataset.name}, {R} replicate(s) x 2 copies, "
             f"{'dense' if level < 0 else f'mask of level {level} of {inst.source} ({100 * density:.2f}%)'}, "
             f"points {[p for p, _ in points]}, {inst.alphas} alphas, {T} steps")
        logger = _Logger(cfg, rd)
        try:
            done = _points(cfg, rd, trainer, keys, states0, mask, points, level, logger, echo, plan)
        except BaseException:
            logger.finish(failed=True)
            raise
        table = pd.DataFrame([r for d in done for r in d["rows"]], columns=CSV_COLUMNS)
        curves = pd.DataFrame([r for d in done for r in d["curve"]])
        write_atomic(rd.file("instability.csv"), table.to_csv(index=False))
        write_atomic(rd.file("curves.csv"), curves.to_csv(index=False))
        summary = {"run_dir": rd.path, "hash": rd.hash, "config": to_dict(cfg), "plan": plan.as_dict(),
                   "source": extra.get("source"), "density": density, "points": summarize(table)}
        write_json(rd.file("summary.json"), summary)
        logger.log_tables(table, curves, summary["points"], reports)
        return Outcome(rd.path, table, curves)
    finally:
        lock.close()


def summarize(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Per point: the barrier's mean, population std, min and max over replicates, and whether
    the mean is below the 2% stability threshold."""
    out = []
    for (point, step), g in table.groupby(["point", "step"], sort=False):
        b = g["barrier"].to_numpy(np.float64)
        out.append({"point": point, "step": int(step), "barrier_mean": float(b.mean()), "barrier_std": float(b.std()),
                    "barrier_min": float(b.min()), "barrier_max": float(b.max()), "stable": bool(b.mean() < STABLE),
                    "replicates": int(len(b))})
    return sorted(out, key=lambda d: d["step"])


def _points(cfg, rd, trainer, keys, states0, mask, points, level, logger, echo, plan) -> list[dict]:
    """Train the parent to each point in turn and, for each point not done yet, the two copies
    and the path between them. Finished points are read back, not retrained."""
    done, todo = [], []
    for label, k in points:
        path = rd.file("points", f"{k}.json")
        if os.path.exists(path):
            with open(path) as f:
                done.append(json.load(f))
            echo(f"point {label:>8}: done already, skipped")
        else:
            todo.append((label, k))
    parent, at = states0, 0
    for label, k in todo:
        if k > at:  # the parent, trained dense from where it stood to k
            parent, _, _ = train_level(trainer, parent, keys, start=at, end=k, eval_every=plan.eval_every)
            at = k
        saved = jax.device_get(rewind.snapshot(parent))
        result = _copies(cfg, trainer, keys, states0, saved, mask, label, k, level, plan)
        write_json(rd.file("points", f"{k}.json"), result)
        done.append(result)
        b = np.array([r["barrier"] for r in result["rows"]])
        echo(f"point {label:>8} (step {k}): error barrier {100 * b.mean():.2f} ± {100 * b.std():.2f}%  "
             f"(ends {100 * np.mean([r['error_start'] for r in result['rows']]):.2f}% / "
             f"{100 * np.mean([r['error_end'] for r in result['rows']]):.2f}%)  "
             f"{'stable' if b.mean() < STABLE else 'unstable'}  {result['seconds']:.1f}s")
        logger.log_point(k, result)
    return sorted(done, key=lambda d: d["step"])


def _copies(cfg, trainer, keys, states0, saved, mask, label, k, level, plan) -> dict[str, Any]:
    R, T, n_alpha = cfg.replicates, plan.total_steps, cfg.instability.alphas
    two = lambda tree: jax.tree.map(lambda x: np.concatenate([x, x]), tree)  # members: copy 1 r0..rR-1, copy 2 r0..
    masks2 = two(mask)
    states = rewind.restart(states0, two(saved["params"]), two(saved["batch_stats"]), two(saved),
                            masks2, optimizer_state=cfg.rewind.optimizer_state)
    copy_keys = {name: jnp.concatenate([jax.vmap(lambda kk: jax.random.fold_in(kk, 1 + c))(keys[name]) for c in (0, 1)])
                 for name in ("data", "aug")}
    states, hist, _ = train_level(trainer, states, copy_keys, start=k, end=T, eval_every=plan.eval_every)
    trained_err = 1.0 - np.asarray(hist.evals[-1]["test/accuracy"], np.float64)
    dens = stacked_density(states.mask, M.prunable_paths(jax.tree.map(lambda x: x[0], states.params),
                                                         cfg.pruning.prunable, cfg.pruning.exclude))
    p1 = jax.tree.map(lambda x: x[:R], states.params)
    p2 = jax.tree.map(lambda x: x[R:], states.params)
    b1 = jax.tree.map(lambda x: x[:R], states.batch_stats)
    b2 = jax.tree.map(lambda x: x[R:], states.batch_stats)
    alphas = np.linspace(0.0, 1.0, n_alpha)
    bn = _bn_batches(trainer, cfg, jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 10_007)) if b1 else None
    errors, losses = path_errors(trainer, jax.tree.map(lambda x: x[:R], states), (p1, b1), (p2, b2), alphas, bn)
    rows, curve = [], []
    for r in range(R):
        e = errors[:, r]
        rows.append({"point": label, "step": k, "replicate": r, "level": level, "density": float(dens[r]),
                     "barrier": error_barrier(e), "error_start": float(e[0]), "error_end": float(e[-1]),
                     "max_error": float(e.max()), "alpha_max": float(alphas[int(np.argmax(e))]),
                     "error_trained_1": float(trained_err[r]), "error_trained_2": float(trained_err[R + r])})
        curve.extend({"point": label, "step": k, "replicate": r, "alpha": float(a), "test_error": float(e[i]),
                      "test_loss": float(losses[i, r])} for i, a in enumerate(alphas))
    return {"point": label, "step": k, "rows": rows, "curve": curve, "seconds": round(hist.seconds, 3)}


def path_errors(trainer, base, end1, end2, alphas, bn_batches=None) -> tuple[np.ndarray, np.ndarray]:
    """Test error and loss (each (A, R)) of (1 − α)·W1 + α·W2 for every α in `alphas`, for R
    stacked pairs: `end1`, `end2` = (params, batch_stats) of the two ends; `base` supplies the
    rest of a stacked train state. With `bn_batches` (B, batch, ...) normalised training inputs,
    BatchNorm statistics are recomputed on them for every α (`recompute_batch_stats`); else the
    interpolated running statistics are used."""
    errors, losses = [], []
    for a in alphas:
        params = interpolate(end1[0], end2[0], float(a))
        stats = interpolate(end1[1], end2[1], float(a))
        if bn_batches is not None:
            stats = _recompute(trainer, params, stats, bn_batches)
        ev = trainer.evaluate(base.replace(params=params, batch_stats=stats), "test")
        errors.append(1.0 - np.asarray(ev["accuracy"], np.float64))
        losses.append(np.asarray(ev["loss"], np.float64))
    return np.stack(errors), np.stack(losses)


_RECOMPUTE: dict[int, Callable] = {}


def _recompute(trainer, params, stats, batches):
    """`recompute_batch_stats` for every replicate of stacked `params` (compiled once per trainer)."""
    fn = _RECOMPUTE.get(id(trainer))
    if fn is None:
        fn = jax.jit(lambda p, s, x: trainer.over_replicates(
            lambda pp, ss: recompute_batch_stats(trainer.model, pp, ss, x), p, s))
        _RECOMPUTE.clear()
        _RECOMPUTE[id(trainer)] = fn
    return fn(params, stats, batches)


class _Logger:
    """W&B for an instability run (offline by default, as every run): the barrier against the
    rewind step, each point's curve, and the tables."""

    def __init__(self, cfg: Config, rd: RunDir):
        wb = cfg.logger.wandb
        self.run = None
        if wb.mode == "disabled":
            return
        import wandb

        self.run = wandb.init(mode=wb.mode, project=wb.project, entity=wb.entity, group=wb.group or os.path.basename(rd.path),
                              name=f"{os.path.basename(rd.path)}-instability", job_type="instability", tags=wb.tags,
                              dir=rd.path, config={**to_dict(cfg), "run_dir": rd.path, "run_hash": rd.hash},
                              settings=wandb.Settings(silent=True, console="off"), reinit="create_new")

    def log_point(self, k: int, result: dict[str, Any]) -> None:
        if self.run is None:
            return
        b = np.array([r["barrier"] for r in result["rows"]])
        self.run.log({"rewind_step": k, "barrier": float(b.mean()), "barrier_std": float(b.std()),
                      **{f"barrier_r{r}": float(x) for r, x in enumerate(b)}})

    def log_tables(self, table, curves, points, reports=None) -> None:
        if self.run is None:
            return
        import wandb

        self.run.log({"instability": wandb.Table(dataframe=table), "curves": wandb.Table(dataframe=curves)})
        for p in points:
            self.run.summary[f"barrier/{p['point']}"] = p["barrier_mean"]
        if reports is not None:  # the caller's (lth.analysis.reports.instability: the figures as images)
            reports(self.run, table, curves, print)
        self.finish()

    def finish(self, failed: bool = False) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1 if failed else 0)
            self.run = None
