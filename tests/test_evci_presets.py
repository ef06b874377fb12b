"""The dynamic-sparse-training presets (`evci_rigl_*`): what each resolves to, against the released
RigL code (google-research/rigl: rigl/mnist/mnist_train_eval.py, rigl/cifar_resnet/resnet_train_eval.py)
and the MNIST-1D presets they sit beside, and the sweep each `-m` runs."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from lth.lottery.levels import make_plan
from lth.train.optim import make_schedule

NUM_TRAIN = {"mnist": 60_000, "cifar10": 50_000, "mnist1d": 4000}  # training examples (val_size 0)


def _lr(cfg, plan, steps):
    fn = make_schedule(cfg.optimizer, total_steps=plan.total_steps, steps_per_epoch=plan.steps_per_epoch)
    return [float(fn(s)) for s in steps]


def _sweep(name):
    return OmegaConf.load(f"conf/experiment/{name}.yaml").hydra.sweeper.params


@pytest.mark.parametrize("name", ["evci_rigl_mnist1d", "evci_rigl_lenet", "evci_rigl_resnet20_cifar10"])
def test_sweep_is_methods_by_distributions_by_densities(compose, name):
    cfg = compose(f"experiment={name}")
    assert (cfg.levels, cfg.replicates, cfg.pruning.schedule) == (0, 3, "dynamic")
    p = _sweep(name)
    assert p["pruning.method"] == "static,set,rigl" and p["pruning.distribution"] == "uniform,erk"
    assert p["pruning.target_density"] == "0.1,0.05"
    for m in ("static", "set", "rigl"):  # every swept combination validates
        for dist in ("uniform", "erk"):
            compose(f"experiment={name}", f"pruning.method={m}", f"pruning.distribution={dist}", "pruning.target_density=0.05")


def test_lenet_preset_is_the_released_mnist_code(compose):
    cfg = compose("experiment=evci_rigl_lenet")
    plan = make_plan(cfg, NUM_TRAIN[cfg.dataset.name])
    assert (cfg.model.name, cfg.dataset.name, cfg.train.batch_size, cfg.dataset.val_size) == ("lenet_300_100", "mnist", 100, 0)
    assert plan.steps_per_epoch == 600 and plan.total_steps == 200 * 600
    o = cfg.optimizer
    assert (o.name, o.momentum, o.nesterov, o.weight_decay) == ("momentum", 0.9, True, 1e-4)
    # lr 0.2, divided by 3 at epochs 60, 70, 80 (the code's boundaries for sparse training)
    got = _lr(cfg, plan, [0, 60 * 600 - 1, 60 * 600, 70 * 600, 80 * 600, plan.total_steps - 1])
    assert got == pytest.approx([0.2, 0.2, 0.2 / 3, 0.2 / 9, 0.2 / 27, 0.2 / 27], rel=1e-6)
    assert plan.dynamic == (0, 50000, 100)  # maskupdate_begin_step, maskupdate_end_step, maskupdate_frequency
    d = cfg.pruning.dynamic
    assert (d.drop_fraction, d.drop_decay) == (0.3, "cosine")


def test_resnet20_preset_is_the_released_cifar_code(compose):
    cfg = compose("experiment=evci_rigl_resnet20_cifar10")
    plan = make_plan(cfg, NUM_TRAIN[cfg.dataset.name])
    assert plan.total_steps == 97656 and cfg.train.batch_size == 128 and cfg.dataset.augment
    o = cfg.optimizer
    assert (o.name, o.momentum, o.nesterov, o.weight_decay) == ("momentum", 0.9, True, 5e-4)
    got = _lr(cfg, plan, [0, 29999, 30000, 60000, 90000])
    assert got == pytest.approx([0.1, 0.1, 0.02, 0.004, 0.0008], rel=1e-6)
    assert plan.dynamic == (0, 75000, 100)
    assert (cfg.pruning.dynamic.drop_fraction, cfg.pruning.dynamic.drop_decay) == (0.3, "constant")
    assert cfg.pruning.exclude == ["^conv1/"]  # the first layer stays dense (prune_first_layer=False)


def test_mnist1d_preset_matches_the_other_mnist1d_presets(compose):
    cfg, zg = compose("experiment=evci_rigl_mnist1d"), compose("experiment=zhu_gupta_gradual_mnist1d")
    for section in ("model", "optimizer", "dataset"):
        assert getattr(cfg, section) == getattr(zg, section)
    assert (cfg.train.duration, cfg.train.batch_size) == (zg.train.duration, zg.train.batch_size)
    assert make_plan(cfg, NUM_TRAIN["mnist1d"]).dynamic == (0, 1125, 100)  # ΔT = 100 until 3/4 of training


def test_sparse_table_groups_runs_at_the_requested_densities(tmp_path):
    """scripts/sparse_table.py: a dynamic run's final mask and the IMP level nearest each density."""
    import subprocess
    import sys

    import pandas as pd
    import yaml

    def run(name, pruning, rows):
        d = tmp_path / name
        d.mkdir()
        (d / "config.yaml").write_text(yaml.safe_dump({"pruning": pruning}))
        pd.DataFrame(rows).to_csv(d / "results.csv", index=False)

    run("rigl", {"schedule": "dynamic", "method": "rigl", "distribution": "erk"},
        [{"level": 0, "replicate": r, "kind": "ticket", "density": 0.1, "test_accuracy": a, "mask_turnover": 0.5}
         for r, a in enumerate([0.7, 0.8])])
    run("imp", {"schedule": "iterative", "method": "magnitude", "scope": "global", "fraction": 0.2},
        [{"level": lv, "replicate": 0, "kind": k, "density": d, "test_accuracy": a}
         for lv, d, a in [(9, 0.1342, 0.5), (10, 0.1001, 0.6), (11, 0.0801, 0.4)] for k in ("ticket", "reinit")])
    out = subprocess.run([sys.executable, "scripts/sparse_table.py", "--densities", "0.1", "--", str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    assert "| RigL, ERK | 75.0 ± 7.1 (2), turnover 0.50 |" in out
    assert "| IMP (global, 0.2 per level) | 60.0 ± 0.0 (1) |" in out
