"""Pruning methods: which scores a pruning step ranks (`pruning.method`).

With m_{L-1} the previous level's mask, θ_{L-1} its final weights and θk the weights at the rewind
point (θ0 with the default `rewind.point=0it`), level L keeps the highest scores (`lth.sparsity.pruning`):

- `magnitude` (IMP; Frankle & Carbin 2019):    s = |θ_{L-1}|
- `random`:                                       s ~ U[0, 1) i.i.d., drawn per (seed, replicate, level)
- `magnitude_at_init`:                            s = |m_{L-1} ⊙ θk|
- `snip` (Lee et al. 2019):                       s = |g ⊙ θ|,   g = ∂L/∂θ at θ = m_{L-1} ⊙ θk
- `grasp` (Wang et al. 2020):                     s = θ ⊙ Hg     (GraSP removes the highest −θ ⊙ Hg)
- `synflow` (Tanaka et al. 2020):                 s = |∂R/∂θ ⊙ θ|, R = 1ᵀ(∏ₗ|θₗ|)1, recomputed over
  `pruning.synflow_rounds` rounds whose survivor counts fall exponentially to the level's target.

The methods scored at the rewind point are pruning at initialisation (Frankle et al. 2021) when
k = 0. Each of their levels prunes the *dense* network θk in one step (SynFlow: its rounds) to the
level's counts, exactly those IMP reaches at that level, so a run's levels are the papers' one-shot
curve at IMP's densities (or those a `pruning.distribution` or N:M gives: `lth.sparsity.level_counts`), sharing one dense level 0 (`m_{L-1}` above is then the dense mask);
they train from θk, so they need `rewind.mode=weights`. SNIP and GraSP average their gradients
over `pruning.score_batches` training batches, replicate r's first batches of its own data order
(the batches its level 0 trained on first), or for GraSP with `pruning.grasp_samples_per_class`
the released code's class-balanced halves (`lth.sparsity.class_balanced`); GraSP's g covers the prunable
tensors, or with `pruning.grasp_weights=all` every kernel (the release's conv/linear weights). `magnitude` and `random` prune the previous level's
mask, IMP's iteration.
The score equations themselves are in `lth.sparsity.scores`; here each method is data (`METHODS`) and
`next_masks` turns one into the masks of a level for all replicates, each step compiled and vmapped
over the replicates. `pruning.ablation` (`lth.sparsity.ablations`) acts on the scores (`invert`) or the masks.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lth.sparsity import ablations, class_balanced, custom_scores, level_counts, masks as M, pruning, scores
from lth.config import registry
from lth.sparsity.draws import control_key
from lth.config.schema import Config

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Method:
    """One pruning method. `scored_at`: the weights it scores, the previous level's `final` ones,
    those at the `rewind` point, or `none` (random). `rounds`: pruned over many rounds (SynFlow)."""

    name: str
    scored_at: str
    rounds: bool = False


METHODS: dict[str, Method] = {
    "magnitude": Method("magnitude", scored_at="final"),
    "random": Method("random", scored_at="none"),
    "magnitude_at_init": Method("magnitude_at_init", scored_at="rewind"),
    "snip": Method("snip", scored_at="rewind"),
    "grasp": Method("grasp", scored_at="rewind"),
    "synflow": Method("synflow", scored_at="rewind", rounds=True),
}


def method_of(cfg: Config) -> Method:
    """The method `pruning.method` names: a built-in one, `custom` (`pruning.score_fn`) or one
    registered from Python (`lth.register_method`; both: `lth.sparsity.custom_scores`)."""
    name = cfg.pruning.method
    return METHODS[name] if name in METHODS else Method(name, scored_at=registry.scored_at(name, cfg.pruning.scored_at))


@dataclasses.dataclass
class Context:
    """What scoring needs besides the weights: the config, the trainer (model, data, loss), the
    replicates' data keys, the prunable paths (`paths`) and the ones this granularity prunes."""

    cfg: Config
    trainer: Any
    data_keys: jax.Array
    paths: list[str]
    prune_paths: list[str]
    replicates: tuple[int, ...] | None = None  # which replicates (default: 0 .. cfg.replicates - 1); data_keys are theirs

    @property
    def ids(self) -> tuple[int, ...]:
        return self.replicates if self.replicates is not None else tuple(range(self.cfg.replicates))


def score_batches(trainer, data_keys: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """Replicate r's first `n` training batches in its own data order (steps 0 .. n-1), normalised:
    xs (R, n, batch, ...), ys (R, n, batch)."""
    spe, bs = trainer.steps_per_epoch, trainer.batch_size
    idx, perms = [], {}
    for step in range(n):
        epoch = step // spe
        if epoch not in perms:  # one permutation per epoch, not per batch
            perms[epoch] = trainer._epoch_perms(data_keys, jnp.asarray(epoch, jnp.int32))  # (R, N)
        idx.append(perms[epoch][:, (step % spe) * bs:(step % spe + 1) * bs])
    idx = jnp.stack(idx, axis=1)  # (R, n, batch)
    return trainer.dataset.normalize(trainer.dataset.centered(trainer.x_train[idx])), trainer.y_train[idx]


def _logits(model, params, batch_stats, x, *, train: bool):
    variables = {"params": params}
    if batch_stats:
        variables["batch_stats"] = batch_stats
        if train:
            return model.apply(variables, x, train=True, mutable=["batch_stats"])[0]
    return model.apply(variables, x, train=train)


@functools.lru_cache(maxsize=None)
def _compiled(model, kind: str, temperature: float, input_shape: tuple[int, ...], paths: tuple[str, ...] = ()):
    """The vmapped, jitted score function of one replicate: (params, batch_stats, mask, xs, ys) for
    the data-driven methods, (params, batch_stats, mask) for SynFlow. SNIP and GraSP see the network
    in training mode (batch statistics, as their released code), SynFlow in evaluation mode with
    |running statistics| (Tanaka et al. linearise every buffer too)."""
    if kind == "synflow":
        def one(params, batch_stats, mask):
            bs = jax.tree.map(jnp.abs, batch_stats)
            return scores.synflow(lambda p, x: _logits(model, p, bs, x, train=False), params, mask, input_shape)

        return jax.jit(jax.vmap(one))

    def one(params, batch_stats, mask, xs, ys):
        fn = lambda p, x: _logits(model, p, batch_stats, x, train=True)
        if kind == "snip":
            return scores.snip(fn, params, mask, xs, ys)
        return scores.grasp(fn, params, mask, xs, ys, temperature=temperature, paths=list(paths))  # g over the prunable kernels

    return jax.jit(jax.vmap(one))


def next_masks(method: Method, ctx: Context, level: int, prev_mask: PyTree, final: dict | None, saved: dict | None) -> PyTree:
    """The level-`level` masks of all replicates (stacked, host numpy), a subset of `prev_mask`.
    `final`: the previous level's {"params", "batch_stats"}; `saved`: the rewind point's."""
    cfg, R = ctx.cfg, len(ctx.ids)
    if method.scored_at == "rewind":  # pruning at initialisation: from the dense mask, to level L's counts
        prev_mask = jax.tree.map(lambda m: np.ones(np.shape(m), bool), prev_mask)
    masks = M.unstack(prev_mask, R)
    # each group's count at this level (lth.sparsity.level_counts: schedule, distribution, n:m)
    keep = [level_counts.keep_counts(cfg.pruning, m, ctx.prune_paths, level, level if method.scored_at == "rewind" else 1)
            for m in masks]
    ablation = ablations.ABLATIONS[cfg.pruning.ablation]
    if method.rounds:
        new = _synflow_rounds(ctx, masks, keep, saved, ablation)
    else:
        sc = _scores(method, ctx, level, prev_mask, final, saved)
        new = [pruning.prune_to(ablation.scores(s), m, cfg.pruning, ctx.prune_paths, k)
               for s, m, k in zip(M.unstack(sc, R), masks, keep)]
    new = [ablation.mask(n, m, ctx.prune_paths, cfg, r, level) for r, n, m in zip(ctx.ids, new, masks)]
    return M.stack(new)


def _scores(method: Method, ctx: Context, level: int, prev_mask, final, saved) -> PyTree:
    """Stacked scores (R, ...) of every parameter for one of the single-step methods."""
    cfg, R = ctx.cfg, len(ctx.ids)
    if method.name == "magnitude":
        return pruning.magnitudes(final["params"])
    if method.name == "random":
        keys = jnp.stack([control_key(cfg.seed, r, "method:random", level) for r in ctx.ids])
        return jax.device_get(jax.jit(jax.vmap(scores.random))(keys, saved["params"]))
    if method.name not in METHODS:
        return _user_scores(ctx, level, prev_mask, final if method.scored_at == "final" else saved)
    params = M.apply_mask(saved["params"], prev_mask)
    if method.name == "magnitude_at_init":
        return pruning.magnitudes(params)
    p = cfg.pruning
    if method.name == "grasp" and p.grasp_samples_per_class is not None:  # the release's class-balanced halves
        xs, ys = class_balanced.batches(ctx.trainer, ctx.data_keys, p.score_batches, p.grasp_samples_per_class)
    else:
        xs, ys = score_batches(ctx.trainer, ctx.data_keys, p.score_batches)
    fn = _compiled(ctx.trainer.model, method.name, float(p.grasp_temperature), tuple(ctx.trainer.dataset.input_shape),
                   tuple(grasp_paths(cfg, params, ctx.paths)))
    return jax.device_get(fn(params, saved["batch_stats"], prev_mask, xs, ys))


def grasp_paths(cfg: Config, params: PyTree, prunable: list[str]) -> list[str]:
    """The leaves GraSP's g covers: the prunable tensors, or with `pruning.grasp_weights=all` every
    kernel, pruned or not (the released code's conv/linear weights: an excluded head counts too)."""
    if cfg.pruning.grasp_weights == "prunable":
        return list(prunable)
    return [p for p in M.flatten(params) if p.rsplit("/", 1)[-1] == "kernel"]


@functools.lru_cache(maxsize=None)
def _gradient(model):
    """The vmapped, jitted mean loss gradient of one replicate, (params, batch_stats, mask, xs, ys)."""
    def one(params, batch_stats, mask, xs, ys):
        return scores.loss_gradient(lambda p, x: _logits(model, p, batch_stats, x, train=True), params, mask, xs, ys)

    return jax.jit(jax.vmap(one))


def _user_scores(ctx: Context, level: int, prev_mask, weights: dict) -> PyTree:
    """Stacked scores (R, ...) of a researcher's score function (`lth.sparsity.custom_scores`), called
    once per replicate with a `ScoreContext` at `weights` (masked by `prev_mask`)."""
    cfg, model = ctx.cfg, ctx.trainer.model
    fn = custom_scores.score_function(cfg)
    params = M.apply_mask(weights["params"], prev_mask)
    xs, ys = score_batches(ctx.trainer, ctx.data_keys, cfg.pruning.score_batches)
    grads = _gradient(model)(params, weights["batch_stats"], prev_mask, xs, ys)
    out = []
    for i, r in enumerate(ctx.ids):
        one = functools.partial(jax.tree.map, lambda x: x[i])
        sc = custom_scores.ScoreContext(
            params=one(params), grads=one(grads), key=control_key(cfg.seed, r, f"method:{cfg.pruning.method}", level),
            mask=one(prev_mask), batch_stats=one(weights["batch_stats"]), level=level, replicate=r, xs=xs[i], ys=ys[i],
            model=model, paths=tuple(ctx.paths))
        out.append(custom_scores.checked_scores(cfg, fn(sc), sc.params))
    return M.stack(out)


def _synflow_rounds(ctx: Context, masks: list[PyTree], targets: list[list[int]], saved: dict, ablation) -> list[PyTree]:
    """SynFlow's iterative pruning: `synflow_rounds` rounds, each rescoring the network under the
    current mask and pruning every group to alive_j = alive_0 (target / alive_0)^(j / rounds)
    (rounded half up; the last round exactly the level's target count)."""
    cfg, R = ctx.cfg, len(ctx.ids)
    fn = _compiled(ctx.trainer.model, "synflow", 0.0, tuple(ctx.trainer.dataset.input_shape))
    rounds = cfg.pruning.synflow_rounds
    starts = [pruning.alive_counts(m, cfg.pruning, ctx.prune_paths) for m in masks]
    ladder = [[scores.synflow_densities(a, t, rounds) for a, t in zip(s, tg)] for s, tg in zip(starts, targets)]
    current = list(masks)
    for j in range(rounds):
        stacked = M.stack(current)
        sc = M.unstack(jax.device_get(fn(M.apply_mask(saved["params"], stacked), saved["batch_stats"], stacked)), R)
        current = [pruning.prune_to(ablation.scores(s), m, cfg.pruning, ctx.prune_paths, [lad[j] for lad in ladder[r]])
                   for r, (s, m) in enumerate(zip(sc, current))]
    return current

