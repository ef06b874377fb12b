"""A researcher's own model, data and pruning score (`lth.user_components`, issue 26): from the
command line by `_target_`, from Python as objects, refused before anything is written when a
target does not import or returns the wrong thing, and part of the run hash."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import lth
from lth import user_components as U
from lth.config import registry
from lth.config.schema import ConfigError, ModelConfig, from_dict
from lth.runs.run_dir import content_hash

REPO = Path(__file__).resolve().parent.parent

USER_CODE = {
    "my_models.py": '''
        import flax.linen as nn

        class TinyNet(nn.Module):
            features: int = 32
            num_classes: int = 10

            @nn.compact
            def __call__(self, x, train: bool = False):
                x = x.reshape((x.shape[0], -1))
                x = nn.relu(nn.Dense(self.features, name="hidden")(x))
                return nn.Dense(self.num_classes, name="out")(x)

        class NoTrainArg(nn.Module):  # __call__ without `train`, default layer names
            num_classes: int = 10

            @nn.compact
            def __call__(self, x):
                return nn.Dense(self.num_classes)(nn.relu(nn.Dense(16)(x)))

        def not_a_module(**kwargs):
            return 42
    ''',
    "my_data.py": '''
        import numpy as np

        def load(n_train: int = 600, n_test: int = 200, seed: int = 0):
            rng = np.random.default_rng(seed)
            centers = rng.normal(size=(4, 20)) * 2
            def draw(n):
                y = rng.integers(0, 4, size=n)
                return (centers[y] + rng.normal(size=(n, 20))).astype(np.float32), y.astype(np.int32)
            x_train, y_train = draw(n_train)
            x_test, y_test = draw(n_test)
            return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    ''',
    "my_scores.py": '''
        import jax
        import jax.numpy as jnp

        def taylor(ctx):
            return jax.tree.map(lambda p, g: jnp.abs(p * g), ctx.params, ctx.grads)

        def magnitude(ctx):
            return jax.tree.map(jnp.abs, ctx.params)
    ''',
}


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("user")
    for name, code in USER_CODE.items():
        (d / name).write_text(textwrap.dedent(code))
    sys.path.insert(0, str(d))
    yield d
    sys.path.remove(str(d))
    for m in ("my_models", "my_data", "my_scores"):
        sys.modules.pop(m, None)


def settings(runs_dir, **extra):
    base = {"levels": 1, "replicates": 1, "pruning": {"fraction": 0.5}, "train": {"duration": "60it", "eval_every": "60it"},
            "paths": {"runs_dir": str(runs_dir)}, "logger": {"wandb": {"mode": "disabled"}, "progress": False}}
    for k, v in extra.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    return base


def arrays(seed=0):
    sys.path.insert(0, "")
    from my_data import load

    return load(n_train=300, n_test=100, seed=seed)


def test_the_command_line_runs_own_model_data_and_score_with_the_head_named_by_its_layer(user_dir, tmp_path):
    """model=custom, dataset=custom and pruning.method=custom in one run of the entry point: the
    `+model.features` argument reaches the module, and `pruning.fractions={head: 0.25}` prunes the
    model's output layer (`out`, found as the last dense layer it calls) at its own rate."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(user_dir), str(REPO)]), "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / "lottery.py"), f"paths.runs_dir={tmp_path}",
                           "logger.progress=false", "logger.wandb.mode=disabled", "levels=1", "replicates=1",
                           "train.duration=60it", "train.eval_every=60it", "pruning.fraction=0.5", "+pruning.fractions={head:0.25}",
                           "model=custom", "model._target_=my_models.TinyNet", "+model.features=24",
                           "dataset=custom", "dataset._target_=my_data.load", "+dataset.n_train=400",
                           "pruning.method=custom", "pruning.score_fn=my_scores.taylor"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = lth.load_run(next(tmp_path.glob("custom-*")))
    assert run.config["model"]["kwargs"] == {"features": 24} and run.config["dataset"]["kwargs"] == {"n_train": 400}
    assert run.config["pruning"]["head"] == "out"
    r = run.results[run.results.kind == "ticket"] if "kind" in run.results else run.results
    assert sorted(set(r.level)) == [0, 1]
    # 24 x 4 = 96 head weights at 25%: 72 left; 20 x 24 = 480 hidden weights at 50%: 240 left.
    assert r[r.level == 1].density.iloc[0] == pytest.approx((72 + 240) / (96 + 480))


def test_a_target_that_does_not_import_or_returns_the_wrong_thing_is_refused_before_anything_is_written(user_dir, tmp_path):
    cases = [({"model": {"name": "custom", "_target_": "my_models.NoSuchNet"}}, "NoSuchNet"),
             ({"model": {"name": "custom", "_target_": "no_such_module.Net"}}, "no_such_module"),
             ({"model": {"name": "custom", "_target_": "my_models.not_a_module"}}, "not a Flax Linen module"),
             ({"dataset": {"name": "custom", "_target_": "my_models.TinyNet"}}, "x_train"),
             ({"pruning": {"method": "custom", "score_fn": "my_scores.nope"}}, "my_scores.nope")]
    for extra, needle in cases:
        with pytest.raises(ConfigError, match=needle):
            lth.run(settings(tmp_path, **extra))
    assert not list(tmp_path.rglob("results.csv")) and not list(tmp_path.rglob("config.yaml"))


def test_the_entry_point_refuses_a_missing_target_with_its_name(user_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(user_dir), str(REPO)]), "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / "lottery.py"), f"paths.runs_dir={tmp_path}",
                           "model=custom", "model._target_=my_models.NoSuchNet"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 2 and "NoSuchNet" in proc.stderr
    assert not list(tmp_path.rglob("results.csv"))


def test_a_registered_score_equal_to_magnitude_makes_the_same_masks_and_python_objects_run(user_dir, tmp_path):
    """From Python: a model object, arrays and a registered method. A score function returning
    |θ| of the final weights prunes exactly as the built-in magnitude method."""
    from my_models import TinyNet
    from my_scores import magnitude

    lth.register_method("mymag", magnitude, scored_at="final")
    try:
        data = arrays()
        ours = lth.run(settings(tmp_path, pruning={"method": "mymag"}), model=TinyNet(features=16), data=data, echo=lambda s: None)
        ref = lth.run(settings(tmp_path), model=TinyNet(features=16), data=data, echo=lambda s: None)
    finally:
        registry.METHODS.pop("mymag")
    assert ours.path != ref.path and ours.config["pruning"]["score_fn"] == "my_scores.magnitude"
    assert ours.config["model"]["_target_"] == "my_models.TinyNet" and ours.config["model"]["kwargs"]["features"] == 16
    cols = ["level", "density", "test_accuracy"]
    pd.testing.assert_frame_equal(ours.results[cols].reset_index(drop=True), ref.results[cols].reset_index(drop=True))


def test_the_hash_follows_the_target_and_its_arguments_and_the_data_content(user_dir):
    def h(**model):
        return content_hash(from_dict({"model": {"name": "custom", "_target_": "my_models.TinyNet", **model}}))

    assert h(features=48) == h(features=48) == h(kwargs={"features": 48})
    assert h(features=48) != h(features=24) != h()
    assert content_hash(from_dict({})) == content_hash(from_dict({"model": {"kwargs": {}, "_target_": None}}))  # old runs keep theirs
    a, b = arrays(), arrays()
    assert U.inputs(U.Supplied(data=a)) == U.inputs(U.Supplied(data=b))
    b["x_train"] = b["x_train"].copy()
    b["x_train"][3, 5] += 1e-3
    assert U.inputs(U.Supplied(data=a)) != U.inputs(U.Supplied(data=b))
    from my_models import TinyNet

    cfg = from_dict({})
    d1, d2 = (U.describe(cfg, U.Supplied(model=TinyNet(features=f))) for f in (8, 9))
    assert d1.model.kwargs["features"] == 8 and content_hash(d1) != content_hash(d2)


def test_a_module_without_train_is_adapted_in_place_and_its_head_found(user_dir):
    model = U.build_model(ModelConfig(name="custom", _target_="my_models.NoTrainArg"), num_classes=3)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 5)), train=False)
    assert sorted(variables["params"]) == ["Dense_0", "Dense_1"]  # not nested under the adapter
    assert model.apply(variables, jnp.ones((2, 5)), train=True).shape == (2, 3)
    # The output layer is the one called last, here Dense_0 (constructed first: `Dense(C)(relu(Dense(16)(x)))`).
    assert variables["params"]["Dense_0"]["kernel"].shape == (16, 3)
    assert U.head_path(model, variables["params"], (5,), 3) == "Dense_0"


def test_unknown_keys_are_arguments_only_with_a_target_and_scores_must_fit():
    cfg = from_dict({"model": {"name": "custom", "_target_": "m.Net", "features": 48}})
    assert cfg.model.kwargs == {"features": 48}
    with pytest.raises(ConfigError, match="widht"):
        from_dict({"model": {"widht": 3}})
    params = {"a": {"kernel": np.ones((2, 3))}}
    with pytest.raises(ConfigError, match="shape"):
        U.checked_scores(cfg, {"a": {"kernel": np.ones((3, 2))}}, params)
    with pytest.raises(ConfigError, match="shaped like"):
        U.checked_scores(cfg, [np.ones((2, 3))], params)
