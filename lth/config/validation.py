"""The checks of the values a type cannot express (ranges, durations, names, combinations): `validate(cfg)`
raises `ConfigError` naming the setting, its value and what is allowed, before any work starts.
"""

from __future__ import annotations

import os
import re
from typing import Any

from lth.config import budget_settings as _budget_settings, defaults as _defaults, method_settings as _settings
from lth.config import pattern_settings as _pattern_settings
from lth.config.choices import (
    ABLATIONS,
    BIAS_INITS,
    BN_SCALE_INITS,
    BRANCH_MASKS,
    BRANCH_WEIGHTS,
    CONTROLS,
    DATA_ORDERS,
    DATA_SOURCES,
    DISTRIBUTIONS,
    DROP_DECAYS,
    DYNAMIC_METHODS,
    DTYPES,
    DYNAMIC_METHODS,
    GRANULARITIES,
    INITS,
    METHODS,
    NORMALIZATIONS,
    OPTIMIZER_STATE_MODES,
    OPTIMIZERS,
    PRUNING_SCHEDULES,
    REWIND_MODES,
    SCHEDULES,
    SCOPES,
    TEXT_TASKS,
    WANDB_MODES,
)
from lth.config.convert import resolve
from lth.config.durations import parse_duration
from lth.config.errors import ConfigError
from lth.config.sections import Config


def _choice(setting: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{setting}={value!r} is not one of {', '.join(allowed)}")


def validate(cfg: Config) -> None:
    """Check every value a type cannot check. Raises `ConfigError` naming the setting, the value
    and what is allowed. Durations are checked for syntax here; that the rewind point lies before
    the end of training is checked once the dataset size is known (`lth.lottery.plan.make_plan`). Checks
    `resolve(cfg)`: the values the run will use."""
    cfg = resolve(cfg)
    for group, section in (("model", cfg.model), ("optimizer", cfg.optimizer)):
        bad = _defaults.unused(section, group)
        if bad:
            used = ", ".join(f"{group}.{f}" for f in _defaults.uses(group, section.name)) or "none of them"
            raise ConfigError(f"{group}.{bad[0]}={getattr(section, bad[0])!r}: {group}={section.name} does not use this setting "
                              f"(it uses {used}); leave it out")
    if not isinstance(cfg.levels, int) or cfg.levels < 0:
        raise ConfigError(f"levels={cfg.levels!r}: the number of pruning levels must be an integer >= 0")
    if not isinstance(cfg.replicates, int) or cfg.replicates < 1:
        raise ConfigError(f"replicates={cfg.replicates!r}: the number of replicates must be an integer >= 1")
    p = cfg.pruning
    if not 0.0 < p.fraction < 1.0:
        raise ConfigError(f"pruning.fraction={p.fraction!r}: the fraction of remaining weights pruned per level must lie in (0, 1)")
    for pattern, frac in p.fractions.items():
        if not 0.0 <= frac < 1.0:
            raise ConfigError(f"pruning.fractions[{pattern!r}]={frac!r}: a per-tensor fraction must lie in [0, 1)")
    _choice("pruning.scope", p.scope, SCOPES)
    _validate_distribution(p)
    _validate_pruning_method(cfg)
    _pattern_settings.validate(cfg)  # distributions and n:m / block against the other settings
    _settings.validate(cfg)
    _budget_settings.validate(cfg)
    import re

    for setting, patterns in (("pruning.prunable", p.prunable), ("pruning.exclude", p.exclude), ("pruning.fractions", list(p.fractions))):
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ConfigError(f"{setting}: {pattern!r} is not a valid regular expression ({e})") from None
    _choice("rewind.optimizer_state", cfg.rewind.optimizer_state, OPTIMIZER_STATE_MODES)
    _choice("rewind.mode", cfg.rewind.mode, REWIND_MODES)
    for i, c in enumerate(cfg.controls):
        _choice(f"controls[{i}]", c, CONTROLS)
    if len(set(cfg.controls)) != len(cfg.controls):
        raise ConfigError(f"controls={cfg.controls!r}: a control is listed twice")
    if cfg.init.replicate < 0:
        raise ConfigError(f"init.replicate={cfg.init.replicate!r}: must be >= 0 (which replicate of a run's checkpoint)")
    for pattern in cfg.init.reinit_patterns:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ConfigError(f"init.reinit_patterns: {pattern!r} is not a valid regular expression ({e})") from None
    if cfg.init.checkpoint is not None:
        from lth.config.package_files import resolve as resolve_file

        if not os.path.exists(resolve_file(cfg.init.checkpoint, setting="init.checkpoint")):
            raise ConfigError(f"init.checkpoint={cfg.init.checkpoint!r}: no such file or directory "
                              "(a run's level_NN/final checkpoint, an .npz or a .safetensors file, or pkg:PACKAGE/PATH)")
    _choice("branch.weights", cfg.branch.weights, BRANCH_WEIGHTS)
    _choice("branch.mask", cfg.branch.mask, BRANCH_MASKS)
    o = cfg.optimizer
    _choice("optimizer.name", o.name, OPTIMIZERS)
    if o.lr is None or not o.lr > 0:
        raise ConfigError(f"optimizer.lr={o.lr!r}: the learning rate must be > 0")
    if o.momentum is not None and not 0 <= o.momentum < 1:
        raise ConfigError(f"optimizer.momentum={o.momentum!r}: must lie in [0, 1)")
    if o.weight_decay is not None and o.weight_decay < 0:
        raise ConfigError(f"optimizer.weight_decay={o.weight_decay!r}: must be >= 0")
    _choice("optimizer.schedule.name", o.schedule.name, SCHEDULES)
    if o.schedule.name == "step" and not o.schedule.milestones:
        raise ConfigError("optimizer.schedule.milestones=[]: a step schedule needs at least one milestone (e.g. [32000it, 48000it])")
    for i, m in enumerate(o.schedule.milestones):
        parse_duration(m, setting=f"optimizer.schedule.milestones[{i}]")
    parse_duration(o.schedule.warmup, setting="optimizer.schedule.warmup")
    for key in ("inv_gamma", "inv_power"):
        if getattr(o.schedule, key) < 0:
            raise ConfigError(f"optimizer.schedule.{key}={getattr(o.schedule, key)!r}: the inv schedule's gamma and power must be >= 0")
    t = cfg.train
    if parse_duration(t.duration, setting="train.duration").value <= 0:
        raise ConfigError(f"train.duration={t.duration!r}: training must last at least one step")
    ck = cfg.checkpoint
    if ck.every not in ("eval", "off") and parse_duration(ck.every, setting="checkpoint.every").value <= 0:
        raise ConfigError(f"checkpoint.every={ck.every!r}: must be 'eval', 'off' or a duration of at least one step")
    if not ck.min_seconds >= 0:
        raise ConfigError(f"checkpoint.min_seconds={ck.min_seconds!r}: must be >= 0 (seconds between checkpoints)")
    if ck.keep < 1:
        raise ConfigError(f"checkpoint.keep={ck.keep!r}: must be >= 1 (checkpoints of the level in progress kept)")
    if cfg.devices.count < 0:
        raise ConfigError(f"devices.count={cfg.devices.count!r}: must be >= 0 (0: all local devices)")
    _choice("devices.shard", cfg.devices.shard, ("members", "batch"))
    _validate_stream(cfg.dataset)
    if parse_duration(t.eval_every, setting="train.eval_every").value <= 0:
        raise ConfigError(f"train.eval_every={t.eval_every!r}: must be at least one step")
    parse_duration(cfg.rewind.point, setting="rewind.point")
    _choice("train.replicates_as", t.replicates_as, ("auto", "vmap", "loop"))
    _choice("train.data_order", t.data_order, DATA_ORDERS)
    if t.batch_size < 1:
        raise ConfigError(f"train.batch_size={t.batch_size!r}: must be >= 1")
    if t.eval_batch_size < 1:
        raise ConfigError(f"train.eval_batch_size={t.eval_batch_size!r}: must be >= 1")
    _choice("train.dtype", t.dtype, DTYPES)
    if isinstance(t.unroll, bool) or not isinstance(t.unroll, int) or t.unroll < 1:
        raise ConfigError(f"train.unroll={t.unroll!r}: must be an integer >= 1 (training steps per iteration of the compiled loop)")
    d = cfg.dataset
    _choice("dataset.source", d.source, DATA_SOURCES)
    _choice("dataset.normalization", d.normalization, NORMALIZATIONS)
    _choice("dataset.task", d.task, TEXT_TASKS)
    if d.max_len < 3:
        raise ConfigError(f"dataset.max_len={d.max_len!r}: a sequence holds [CLS], [SEP] and at least one token, so >= 3")
    if d.val_size is None or d.val_size < 0:
        raise ConfigError(f"dataset.val_size={d.val_size!r}: must be >= 0")
    if d.image_size is not None and d.image_size < 1:
        raise ConfigError(f"dataset.image_size={d.image_size!r}: must be a side length in pixels >= 1 (or null: keep the images' size)")
    if d.crop is not None and (isinstance(d.crop, bool) or not isinstance(d.crop, int) or d.crop < 1):
        raise ConfigError(f"dataset.crop={d.crop!r}: must be a side length in pixels >= 1 (or null: no crop)")
    m = cfg.model
    if m.name != "custom":  # a researcher's own module initialises itself
        _choice("model.init", m.init, INITS)
    if m.bn_scale_init is not None:
        _choice("model.bn_scale_init", m.bn_scale_init, BN_SCALE_INITS)
    if m.head_init is not None:
        _choice("model.head_init", m.head_init, INITS)
    _choice("model.bias_init", m.bias_init, BIAS_INITS)
    if m.bn_momentum is not None and not 0.0 <= m.bn_momentum < 1.0:
        raise ConfigError(f"model.bn_momentum={m.bn_momentum!r}: must lie in [0, 1) (running = m * running + (1 - m) * batch; "
                          "PyTorch's momentum 0.1 is 0.9 here)")
    if m.residual and len(set(m.widths or [])) > 1:
        raise ConfigError(f"model.residual=true with model.widths={m.widths!r}: a residual layer adds its output to its "
                          "input, so every hidden width must be the same (e.g. [500, 500])")
    if m.width_multiplier is not None and m.width_multiplier < 1:
        raise ConfigError(f"model.width_multiplier={m.width_multiplier!r}: must be >= 1")
    if m.name == "mlp" and not m.widths:
        raise ConfigError(f"model.widths={m.widths!r}: model=mlp needs its hidden widths, e.g. model.widths=[500,500]")
    if any(w < 1 for w in m.widths or []):
        raise ConfigError(f"model.widths={m.widths!r}: every width must be >= 1")
    for key in ("layers", "hidden", "heads", "intermediate", "vocab_size", "max_len"):
        if getattr(m, key) is not None and getattr(m, key) < 1:
            raise ConfigError(f"model.{key}={getattr(m, key)!r}: must be >= 1")
    if m.hidden is not None and m.heads is not None and m.hidden % m.heads:
        raise ConfigError(f"model.hidden={m.hidden} is not divisible by model.heads={m.heads}: each attention head "
                          "gets hidden / heads dimensions")
    if m.pooling is not None:
        _choice("model.pooling", m.pooling, ("cls", "mean"))
    if m.dropout is not None and not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"model.dropout={m.dropout!r}: must lie in [0, 1)")
    _choice("logger.wandb.mode", cfg.logger.wandb.mode, WANDB_MODES)
    parse_duration(cfg.logger.wandb.log_every, setting="logger.wandb.log_every")


def _validate_stream(d) -> None:
    """`dataset.stream` and `dataset.stream_dir` (lth.data.stream)."""
    if not isinstance(d.stream, bool):
        raise ConfigError(f"dataset.stream={d.stream!r}: must be true or false")
    if d.stream_dir is not None and not d.stream:
        raise ConfigError(f"dataset.stream_dir={d.stream_dir!r} applies only with dataset.stream=true (now false); "
                          f"set dataset.stream=true or leave dataset.stream_dir out")
    if d.stream and d.name == "custom":
        raise ConfigError("dataset.stream=true with dataset.name='custom': a researcher's own arrays are already in memory; "
                          "streaming takes a built-in dataset (mnist1d, mnist, fashion_mnist, cifar10) or a TFDS one")
    if d.stream_dir is not None and os.path.isfile(os.path.expanduser(d.stream_dir)):
        raise ConfigError(f"dataset.stream_dir={d.stream_dir!r} is a file; it must be a folder (for the prepared copies)")


def _validate_distribution(p) -> None:
    """`pruning.distribution` and the per-tensor `pruning.densities` of `custom`."""
    _choice("pruning.distribution", p.distribution, DISTRIBUTIONS)
    if p.distribution == "custom" and not p.densities:
        raise ConfigError("pruning.distribution=custom needs per-tensor densities, e.g. "
                          "pruning.densities='{fc1/kernel: 0.05, head: 0.5}' (pattern -> density)")
    if p.densities and p.distribution != "custom":
        raise ConfigError(f"pruning.densities={dict(p.densities)} is for pruning.distribution=custom, not "
                          f"pruning.distribution={p.distribution}")
    for pattern, d in p.densities.items():
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 <= d <= 1.0:
            raise ConfigError(f"pruning.densities[{pattern!r}]={d!r}: a per-tensor density must lie in [0, 1]")
        try:
            re.compile(pattern)
        except re.error as e:
            raise ConfigError(f"pruning.densities: {pattern!r} is not a valid regular expression ({e})") from None


def _validate_ste(cfg: Config) -> None:
    """`pruning.schedule=dynamic` and straight-through pruning (`method=magnitude_ste`, `ste_decay`:
    `lth.sparsity.ste`): one training run (levels=0) at pruning.target_density."""
    p = cfg.pruning
    d = p.ste_decay
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not d >= 0:
        raise ConfigError(f"pruning.ste_decay={d!r}: SR-STE's decay λ_W of the pruned weights must be a number >= 0 "
                          "(0: plain STE; Zhou et al. 2021 use 2e-4)")
    if d != 0 and p.method != "magnitude_ste":
        raise ConfigError(f"pruning.ste_decay={d!r} is for pruning.method=magnitude_ste (SR-STE), not "
                          f"pruning.method={p.method}; leave it at 0")
    if p.method == "magnitude_ste" and p.schedule != "dynamic":
        raise ConfigError(f"pruning.schedule={p.schedule!r}: pruning.method=magnitude_ste trains dense weights through a "
                          "mask recomputed every step, in one run; it needs pruning.schedule=dynamic")
    if p.schedule != "dynamic":
        return
    if p.method not in DYNAMIC_METHODS:
        raise ConfigError(f"pruning.method={p.method!r}: pruning.schedule=dynamic trains with one of "
                          f"{', '.join(DYNAMIC_METHODS)}")
    if cfg.levels != 0:
        raise ConfigError(f"levels={cfg.levels!r}: pruning.schedule=dynamic trains one run at pruning.target_density, "
                          "so it needs levels=0")
    grans = ("weight", "n:m") if p.method == "magnitude_ste" else ("weight", "n:m", "block")  # lth.sparsity.dynamic_patterns
    for setting, value, allowed in (("pruning.granularity", p.granularity, grans),
                                    ("pruning.ablation", p.ablation, ("none",)),
                                    ("pruning.scope", p.scope, (None, "layerwise", "global"))):
        if value not in allowed:
            raise ConfigError(f"{setting}={value!r}: pruning.method={p.method} allows "
                              f"{' or '.join(str(a) for a in allowed)}")
    if p.fractions:
        raise ConfigError(f"pruning.fractions={dict(p.fractions)}: pruning.method={p.method} takes per-tensor densities "
                          "as pruning.distribution=custom with pruning.densities (pattern -> density)")
    if p.granularity == "n:m" and (p.target_density is None or abs(p.target_density - p.n_m[0] / p.n_m[1]) > 1e-9):
        raise ConfigError(f"pruning.target_density={p.target_density!r} with pruning.granularity=n:m and "
                          f"pruning.n_m={list(p.n_m)}: an N:M mask has density n/m = {p.n_m[0] / p.n_m[1]:g}; "
                          f"set pruning.target_density={p.n_m[0] / p.n_m[1]:g}")


def _validate_pruning_method(cfg: Config) -> None:
    """The method, schedule, granularity and ablation, and the settings each needs."""
    p = cfg.pruning
    from lth.config import registry

    _choice("pruning.method", p.method, METHODS + tuple(registry.METHODS))
    _choice("pruning.scored_at", p.scored_at, registry.SCORED_AT)
    if (p.method == "custom" and p.score_fn is None) or (p.score_fn is not None and p.method in METHODS[:-1]):
        raise ConfigError(f"pruning.method={p.method} with pruning.score_fn={p.score_fn!r}: a score function "
                          "(pruning.score_fn=module.function) goes with pruning.method=custom, and only with it")
    _choice("pruning.schedule", p.schedule, PRUNING_SCHEDULES)
    _choice("pruning.granularity", p.granularity, GRANULARITIES)
    _choice("pruning.ablation", p.ablation, ABLATIONS)
    _validate_ste(cfg)
    _validate_dynamic(cfg)
    if p.schedule in ("iterative", "linear"):
        if p.target_density is not None:
            raise ConfigError(f"pruning.target_density={p.target_density!r} is for pruning.schedule=oneshot, gradual or dynamic; "
                              f"the {p.schedule} schedule removes pruning.fraction of the "
                              f"{'remaining' if p.schedule == 'iterative' else 'dense'} weights per level")
    elif not (p.target_density is None and p.schedule == "oneshot" and p.granularity == "n:m"):  # n:m one-shot: n/m
        if p.target_density is None or not 0.0 < p.target_density < 1.0:
            raise ConfigError(f"pruning.target_density={p.target_density!r}: pruning.schedule={p.schedule} needs the "
                              "density to reach, a number in (0, 1), e.g. pruning.target_density=0.1")
    if p.schedule == "oneshot" and cfg.levels != 1:
        raise ConfigError(f"levels={cfg.levels!r}: pruning.schedule=oneshot prunes once, from the dense level 0 to "
                          "pruning.target_density, so it needs levels=1 (sweep pruning.target_density for a one-shot curve)")
    if p.schedule == "gradual":
        if cfg.levels != 0:
            raise ConfigError(f"levels={cfg.levels!r}: pruning.schedule=gradual prunes during level 0's training, so it "
                              "needs levels=0")
        for setting, value, default in (("pruning.method", p.method, "magnitude"), ("pruning.granularity", p.granularity, "weight"),
                                        ("pruning.ablation", p.ablation, "none")):
            if value != default:
                raise ConfigError(f"{setting}={value!r}: pruning.schedule=gradual is gradual magnitude pruning of single "
                                  f"weights (Zhu & Gupta 2017); it allows only {setting}={default}")
        g = p.gradual
        if not 0.0 < g.initial_density <= 1.0:
            raise ConfigError(f"pruning.gradual.initial_density={g.initial_density!r}: must lie in (0, 1]")
        if g.initial_density <= p.target_density:
            raise ConfigError(f"pruning.gradual.initial_density={g.initial_density!r} must be above "
                              f"pruning.target_density={p.target_density!r}: the density only falls")
        parse_duration(g.begin, setting="pruning.gradual.begin")
        if g.end is not None:
            parse_duration(g.end, setting="pruning.gradual.end")
        if g.every is not None and parse_duration(g.every, setting="pruning.gradual.every").value <= 0:
            raise ConfigError(f"pruning.gradual.every={g.every!r}: must be at least one step")
    if registry.scored_at(p.method, p.scored_at) == "rewind" and cfg.rewind.mode != "weights":
        raise ConfigError(f"rewind.mode={cfg.rewind.mode!r}: pruning.method={p.method} prunes the weights at the rewind "
                          "point and trains them from there, so it needs rewind.mode=weights")
    if p.ablation == "shuffle_layerwise" and p.granularity != "weight":
        raise ConfigError(f"pruning.ablation=shuffle_layerwise permutes single weights; it needs pruning.granularity=weight, "
                          f"not {p.granularity!r}")
    if p.score_batches < 1:
        raise ConfigError(f"pruning.score_batches={p.score_batches!r}: SNIP and GraSP average over >= 1 training batch")
    if p.synflow_rounds < 1:
        raise ConfigError(f"pruning.synflow_rounds={p.synflow_rounds!r}: SynFlow needs >= 1 pruning round per level")
    if not p.grasp_temperature > 0:
        raise ConfigError(f"pruning.grasp_temperature={p.grasp_temperature!r}: must be > 0")


def _validate_dynamic(cfg: Config) -> None:
    """`pruning.schedule=dynamic` (`lth.sparsity.dynamic`) and its methods, which go only together."""
    p = cfg.pruning
    if (p.schedule == "dynamic") != (p.method in DYNAMIC_METHODS):
        if p.schedule == "dynamic":
            raise ConfigError(f"pruning.method={p.method!r}: pruning.schedule=dynamic trains a moving sparse mask; it needs "
                              f"pruning.method in {', '.join(DYNAMIC_METHODS)}")
        raise ConfigError(f"pruning.method={p.method!r} is dynamic sparse training: it needs pruning.schedule=dynamic, not "
                          f"pruning.schedule={p.schedule}")
    if p.schedule != "dynamic":
        return
    if cfg.levels != 0:
        raise ConfigError(f"levels={cfg.levels!r}: pruning.schedule=dynamic trains one sparse network (level 0), so it "
                          "needs levels=0")
    _validate_dynamic_steps(p.dynamic)
    if p.method == "magnitude_ste":  # its granularity, scope and fractions: _validate_ste
        return
    # pruning.granularity (weight, n:m or block: lth.sparsity.dynamic_patterns) and n:m's density: _validate_ste
    for setting, value, default in (("pruning.ablation", p.ablation, "none"), ("pruning.fractions", dict(p.fractions), {})):
        if value != default:
            raise ConfigError(f"{setting}={value!r}: pruning.schedule=dynamic allows only {setting}={default} (per-tensor "
                              "densities: pruning.distribution=erk|er|custom with pruning.densities)")
    if p.scope not in (None, "layerwise"):
        raise ConfigError(f"pruning.scope={p.scope!r}: pruning.schedule=dynamic keeps an exact count per tensor (spread "
                          "by pruning.distribution), so it allows pruning.scope=layerwise (or null) only")


def _validate_dynamic_steps(d) -> None:
    """`pruning.dynamic`: when and how much the mask moves."""
    if parse_duration(d.every, setting="pruning.dynamic.every").value <= 0:
        raise ConfigError(f"pruning.dynamic.every={d.every!r}: must be at least one step")
    parse_duration(d.begin, setting="pruning.dynamic.begin")
    if d.end is not None:
        parse_duration(d.end, setting="pruning.dynamic.end")
    if isinstance(d.drop_fraction, bool) or not isinstance(d.drop_fraction, (int, float)) or not 0.0 < d.drop_fraction < 1.0:
        raise ConfigError(f"pruning.dynamic.drop_fraction={d.drop_fraction!r}: the fraction of each tensor's active weights "
                          "dropped (and grown) at an update must lie in (0, 1)")
    _choice("pruning.dynamic.drop_decay", d.drop_decay, DROP_DECAYS)
