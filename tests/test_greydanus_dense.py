"""The Greydanus preset's dense training is the MNIST-1D lottery notebook's `train_model`.

greydanus/mnist1d `notebooks/train.py` + `notebooks/lottery-tickets.ipynb` (dense round, sparsity 0):
`SparseMLP` h = relu(W1 x + b1); h = h + relu(W2 h + b2); y = W3 h + b3, `nn.CrossEntropyLoss` (mean,
no label smoothing), `torch.optim.Adam(lr=2e-2)` (betas 0.9/0.999, eps 1e-8, no weight decay) and
the batch of step t is x[bix:bix+100] with bix = (t * 100) % n (stored order, no shuffling). Here that
loop is written out in float64 NumPy (backward pass by hand, PyTorch's Adam update) and run from the
preset's own θ0 on MNIST-1D-shaped data (40 inputs, 10 classes); the preset's trainer must give the
same weights. (The preset's dense accuracy, ~64%, against the notebook's own dense rounds: README,
Fidelity.)
"""

from __future__ import annotations

import jax
import numpy as np

from lth.sparsity import masks as M
from tests.conftest import make_tiny_dataset


def notebook_train(params: dict, x: np.ndarray, y: np.ndarray, steps: int, lr=2e-2, bs=100, b1=0.9, b2=0.999, eps=1e-8):
    """The notebook's training loop on `params` ({layer: {kernel (in, out), bias}}), float64."""
    p = {k: {n: np.asarray(a, np.float64) for n, a in v.items()} for k, v in params.items()}
    m = {k: {n: np.zeros_like(a) for n, a in v.items()} for k, v in p.items()}
    v2 = {k: {n: np.zeros_like(a) for n, a in v.items()} for k, v in p.items()}
    relu = lambda z: np.maximum(z, 0)
    for step in range(steps):
        bix = (step * bs) % len(x)
        xb, yb = x[bix:bix + bs].astype(np.float64), y[bix:bix + bs]
        a1 = xb @ p["fc1"]["kernel"] + p["fc1"]["bias"]
        h1 = relu(a1)
        a2 = h1 @ p["fc2"]["kernel"] + p["fc2"]["bias"]
        h2 = h1 + relu(a2)
        out = h2 @ p["head"]["kernel"] + p["head"]["bias"]
        prob = np.exp(out - out.max(-1, keepdims=True))
        prob /= prob.sum(-1, keepdims=True)
        g = prob
        g[np.arange(len(yb)), yb] -= 1
        g /= len(yb)
        gh2 = g @ p["head"]["kernel"].T
        ga2 = gh2 * (a2 > 0)
        gh1 = gh2 + ga2 @ p["fc2"]["kernel"].T
        ga1 = gh1 * (a1 > 0)
        grads = {"head": {"kernel": h2.T @ g, "bias": g.sum(0)}, "fc2": {"kernel": h1.T @ ga2, "bias": ga2.sum(0)},
                 "fc1": {"kernel": xb.T @ ga1, "bias": ga1.sum(0)}}
        t = step + 1
        for k in p:
            for n in p[k]:
                gr = grads[k][n]
                m[k][n] = b1 * m[k][n] + (1 - b1) * gr
                v2[k][n] = b2 * v2[k][n] + (1 - b2) * gr * gr
                denom = np.sqrt(v2[k][n]) / np.sqrt(1 - b2**t) + eps  # torch.optim.Adam, step t
                p[k][n] = p[k][n] - lr / (1 - b1**t) * m[k][n] / denom
    return p


def test_preset_dense_training_is_the_notebooks_train_model(compose):
    from lth.models import build_model
    from lth.train.optim import make_optimizer
    from lth.train.trainer import Trainer, replicate_keys
    import optax

    cfg = compose("experiment=greydanus_mnist1d_lottery")
    # MNIST-1D's shape; 400 examples so that 10 steps wrap around the stored order twice
    ds = make_tiny_dataset(n_train=400, n_val=0, n_test=100, features=40, classes=10, seed=1)
    assert not cfg.dataset.normalize and cfg.dataset.val_size == 0  # raw inputs, as the notebook
    trainer = Trainer(build_model(cfg.model, 10), ds, make_optimizer(cfg.optimizer), optax.constant_schedule(cfg.optimizer.lr),
                      batch_size=cfg.train.batch_size, shuffle=cfg.dataset.shuffle, drop_last=cfg.train.drop_last, scan=True)
    keys = replicate_keys(0, 1)
    v = trainer.init_variables(keys["init"])
    states0 = trainer.create_states(v, jax.vmap(M.ones_like)(v["params"]))
    steps = 10
    states, _ = trainer.run(states0, keys, 0, steps)
    theta0 = jax.tree.map(lambda a: np.asarray(a)[0], v["params"])
    ref = notebook_train(theta0, ds.x_train, ds.y_train, steps)
    got = jax.tree.map(lambda a: np.asarray(a)[0], states.params)
    for layer in ("fc1", "fc2", "head"):
        for name in ("kernel", "bias"):
            moved = np.abs(ref[layer][name] - theta0[layer][name]).max()
            assert moved > 0.05, (layer, name)  # trained: 10 Adam steps of 2e-2
            # float32 against float64: a few weights whose gradients are ~0 differ by ~1e-4 (Adam normalises them)
            np.testing.assert_allclose(got[layer][name], ref[layer][name], atol=5e-4, err_msg=f"{layer}/{name}")
