"""The public command line: presets compose over the typed schema, bad input is refused clearly
before anything is written, and `debug=fast` runs the whole pipeline."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from lth.config.schema import from_dict, validate

REPO = Path(__file__).resolve().parent.parent
CONF = str(REPO / "conf")
PRESETS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))


def lottery(tmp_path, *overrides, timeout=300):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, str(REPO / "experiments" / "lottery.py"), f"paths.runs_dir={tmp_path / 'runs'}",
                           "logger.progress=false", *overrides],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=timeout)


@pytest.fixture(autouse=True, scope="module")
def _register_schema():
    from hydra.core.config_store import ConfigStore

    from lth.config.schema import structured_schema

    ConfigStore.instance().store(name="lth_schema", node=structured_schema())
    yield


def compose_cfg(*overrides):
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        dcfg = compose(config_name="config", overrides=list(overrides))
    return from_dict(OmegaConf.to_container(dcfg, resolve=True))


def test_presets_exist():
    assert {"lth_lenet_mnist", "mnist1d_mlp"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_validates(preset):
    cfg = compose_cfg(f"experiment={preset}")
    validate(cfg)
    assert cfg.name == preset


def test_lenet_preset_is_the_papers_protocol():
    cfg = compose_cfg("experiment=lth_lenet_mnist")
    assert (cfg.dataset.name, cfg.dataset.val_size, cfg.model.name, cfg.model.init) == ("mnist", 5000, "lenet_300_100", "glorot_normal")
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.train.batch_size, cfg.train.duration) == ("adam", 0.0012, 60, "50000it")
    assert (cfg.pruning.scope, cfg.pruning.fraction, cfg.pruning.fractions) == ("layerwise", 0.2, {"head": 0.1})
    assert cfg.rewind.point == "0it"


def test_command_line_overrides_reach_the_config():
    cfg = compose_cfg("dataset=mnist", "model=lenet_300_100", "levels=7", "replicates=3", "seed=5", "pruning.fraction=0.3",
                      "pruning.scope=global", "rewind.point=2ep", "train.duration=40ep", "train.batch_size=128",
                      "train.eval_every=1ep", "optimizer=momentum", "optimizer.lr=0.05", "logger.wandb.mode=disabled",
                      "paths.runs_dir=/tmp/x", "paths.data_dir=/tmp/d")
    assert (cfg.levels, cfg.replicates, cfg.seed, cfg.pruning.fraction, cfg.pruning.scope) == (7, 3, 5, 0.3, "global")
    assert (cfg.rewind.point, cfg.train.duration, cfg.train.batch_size, cfg.train.eval_every) == ("2ep", "40ep", 128, "1ep")
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.logger.wandb.mode) == ("momentum", 0.05, "disabled")
    assert (cfg.paths.runs_dir, cfg.paths.data_dir) == ("/tmp/x", "/tmp/d")


def test_rewinding_controls_and_init_overrides_reach_the_config():
    cfg = compose_cfg("rewind=lr", "rewind.point=500it", "rewind.optimizer_state=rewound", "controls=[reinit,random_prune]",
                      "init.checkpoint=/x/final", "init.replicate=2", "init.reinit_patterns=[head]")
    assert (cfg.rewind.mode, cfg.rewind.point, cfg.rewind.optimizer_state) == ("lr", "500it", "rewound")
    assert cfg.controls == ["reinit", "random_prune"]
    assert (cfg.init.checkpoint, cfg.init.replicate, cfg.init.reinit_patterns) == ("/x/final", 2, ["head"])
    assert compose_cfg("rewind=finetune").rewind.mode == "finetune" and compose_cfg().rewind.mode == "weights"
    assert compose_cfg("rewind.mode=lr").rewind.point == "0it"


@pytest.mark.parametrize("preset,dataset", [("mnist1d_rewinding", "mnist1d"), ("lenet_rewinding", "mnist")])
def test_rewinding_presets_sweep_the_three_modes_with_both_controls(preset, dataset):
    """`-m experiment=<preset>` runs weights, lr and finetune (the preset's sweeper parameters);
    each with >= 3 replicates, >= 8 levels, both controls and a decaying schedule (without one,
    fine-tuning at the final rate would be LR rewinding)."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        dcfg = compose(config_name="config", overrides=[f"experiment={preset}"], return_hydra_config=True)
    assert dict(dcfg.hydra.sweeper.params) == {"rewind.mode": "weights,lr,finetune"}
    cfg = compose_cfg(f"experiment={preset}")
    assert cfg.dataset.name == dataset and cfg.replicates >= 3 and cfg.levels >= 8
    assert cfg.controls == ["reinit", "random_prune"] and cfg.optimizer.schedule.name == "step"


@pytest.mark.parametrize("preset,dataset,methods", [
    ("frankle2021_pai_mnist1d", "mnist1d", "magnitude,snip,grasp,synflow,magnitude_at_init,random"),
    ("frankle2021_pai_lenet", "mnist", "magnitude,snip,grasp,synflow,magnitude_at_init,random"),
    ("frankle2021_pai_resnet20", "cifar10", "snip,grasp,synflow,magnitude_at_init,random"),
])
def test_pruning_at_init_presets_sweep_the_methods_on_one_ladder(preset, dataset, methods):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        dcfg = compose(config_name="config", overrides=[f"experiment={preset}"], return_hydra_config=True)
    assert dict(dcfg.hydra.sweeper.params) == {"pruning.method": methods}
    cfg = compose_cfg(f"experiment={preset}")
    assert cfg.dataset.name == dataset and cfg.replicates >= 3 and cfg.levels >= 5
    assert (cfg.pruning.scope, cfg.pruning.schedule, cfg.rewind.point, cfg.rewind.mode) == ("global", "iterative", "0it", "weights")
    for m in methods.split(","):  # every swept method validates with the preset
        validate(compose_cfg(f"experiment={preset}", f"pruning.method={m}"))


# Han et al. 2015's per-layer densities and the exact weight counts each preset's ladder keeps after
# its levels (round(fraction x remaining) per level), as the presets' headers state them.
HAN_PRESETS = {
    "han_lenet300_mnist": ("lenet_300_100", {"fc1/kernel": (18_813, 235_200, 0.08), "fc2/kernel": (2_700, 30_000, 0.09),
                                             "head/kernel": (260, 1_000, 0.26)}),
    "han_lenet5_mnist": ("lenet5", {"conv1/kernel": (330, 500, 0.66), "conv2/kernel": (3_000, 25_000, 0.12),
                                    "fc1/kernel": (31_995, 400_000, 0.08), "head/kernel": (950, 5_000, 0.19)}),
}


@pytest.mark.parametrize("preset", sorted(HAN_PRESETS))
def test_han_presets_reach_the_papers_per_layer_densities(preset):
    """Deep Compression's pruning stage: Caffe's lenet_solver (SGD 0.01, momentum 0.9, wd 5e-4, inv
    1e-4/0.75, batch 64, 10k it), xavier init, fine-tuning, layer-wise fractions whose ladder ends
    at Han et al.'s densities (to the weight; biases unpruned)."""
    import jax
    import jax.numpy as jnp

    from lth.sparsity import masks as M
    from lth.models import build_model
    from lth.sparsity.pruning import ladder_counts, groups

    model_name, want = HAN_PRESETS[preset]
    cfg = compose_cfg(f"experiment={preset}")
    validate(cfg)
    o = cfg.optimizer
    assert (cfg.dataset.name, cfg.model.name, cfg.model.init) == ("mnist", model_name, "xavier")
    assert (o.name, o.lr, o.momentum, o.weight_decay, o.schedule.name, o.schedule.inv_gamma, o.schedule.inv_power) == (
        "momentum", 0.01, 0.9, 0.0005, "inv", 0.0001, 0.75)
    assert (cfg.train.batch_size, cfg.train.duration, cfg.rewind.mode, cfg.pruning.scope) == (64, "10000it", "finetune", "layerwise")

    model = build_model(cfg.model, 10)
    params = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32))["params"]
    paths = M.prunable_paths(params, cfg.pruning.prunable, cfg.pruning.exclude)
    assert sorted(paths) == sorted(want)  # every weight tensor, no bias
    assert all(len(g) == 1 for g, _ in groups(paths, cfg.pruning))  # each by its own fraction
    mask = jax.tree.map(lambda a: jnp.ones(a.shape, bool), params)
    kept = dict(zip([g[0] for g, _ in groups(paths, cfg.pruning)], ladder_counts(mask, cfg.pruning, paths, cfg.levels)))
    assert {p: (k, want[p][1]) for p, k in kept.items()} == {p: (k, n) for p, (k, n, _) in want.items()}
    for p, (k, n, density) in want.items():
        assert abs(k / n - density) < 1e-4, p
    assert 0.08 < sum(kept.values()) / sum(n for _, n, _ in want.values()) < 0.085  # about 8% overall (12x)


def test_gradual_preset_and_pruning_overrides_reach_the_config():
    cfg = compose_cfg("experiment=zhu_gupta_gradual_mnist1d")
    assert (cfg.levels, cfg.pruning.schedule, cfg.pruning.gradual.begin, cfg.pruning.gradual.end,
            cfg.pruning.gradual.every) == (0, "gradual", "150it", "1125it", "75it")
    validate(cfg)
    cfg = compose_cfg("pruning.method=grasp", "pruning.granularity=neuron", "pruning.ablation=invert", "pruning.score_batches=4",
                      "pruning.synflow_rounds=10", "pruning.grasp_temperature=1.0")
    assert (cfg.pruning.method, cfg.pruning.granularity, cfg.pruning.ablation, cfg.pruning.score_batches,
            cfg.pruning.synflow_rounds, cfg.pruning.grasp_temperature) == ("grasp", "neuron", "invert", 4, 10, 1.0)
    cfg = compose_cfg("levels=1", "pruning.schedule=oneshot", "pruning.target_density=0.1")
    assert (cfg.pruning.schedule, cfg.pruning.target_density) == ("oneshot", 0.1)


def test_the_readme_form_of_per_tensor_fractions_works_as_written():
    """`pruning.fractions={head:0.1}` as the README writes it (no `+`), alone and on a preset
    (where Hydra merges it into the preset's fractions); values stay typed."""
    assert compose_cfg("pruning.fractions={head:0.1}").pruning.fractions == {"head": 0.1}
    assert compose_cfg("experiment=lth_lenet_mnist", "pruning.fractions={fc1:0.3}").pruning.fractions == {"head": 0.1, "fc1": 0.3}
    with pytest.raises(Exception, match="abc"):
        compose_cfg("pruning.fractions={head:abc}")
    with pytest.raises(Exception, match="fractoin"):
        compose_cfg("pruning.fractoin=3")  # the rest of the schema stays closed


def test_misspelt_key_fails_at_compose():
    with pytest.raises(Exception, match="pruning.fractoin|fractoin"):
        compose_cfg("pruning.fractoin=0.3")


BAD = [
    ("fraction", ["pruning.fraction=1.5"]),
    ("fraction", ["pruning.fraction=0"]),
    ("model", ["model=no_such_model"]),
    ("dataset", ["dataset=no_such_dataset"]),
    ("dataset", ["dataset.name=no_such_dataset"]),
    ("rewind", ["rewind.point=999999it", "train.duration=100it"]),
    ("levels", ["levels=-1"]),
    ("replicates", ["replicates=0"]),
    ("optimizer", ["optimizer=no_such_opt"]),
    ("duration", ["train.duration=abc"]),
    ("levels", ["levels=abc"]),
    ("augment", ["dataset.augment=true"]),  # MNIST-1D examples are not images
    ("image_size", ["dataset=tfds", "dataset.name=mnist", "dataset.image_size=0"]),
    ("tfds_manual_dir", ["dataset=tfds", "dataset.name=mnist", "dataset.tfds_manual_dir=/no/such/dir"]),
]


@pytest.mark.parametrize("word,overrides", BAD, ids=[" ".join(o) for _, o in BAD])
def test_bad_input_is_refused_clearly_and_writes_nothing(tmp_path, word, overrides):
    r = lottery(tmp_path, *overrides)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert word in out.lower(), out
    assert "Traceback" not in out, out
    assert not (tmp_path / "runs").exists()
    assert os.listdir(tmp_path) == []  # not even a Hydra log or .hydra folder


def test_debug_fast_runs_end_to_end(tmp_path):
    r = lottery(tmp_path, "debug=fast", "model.widths=[32]")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "winning (vs dense)" in r.stdout and "run directory:" in r.stdout
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.name != "dense"]  # dense/: the shared level 0
    assert (run / "results.csv").exists() and (run / "summary.json").exists() and (run / "config.yaml").exists()
