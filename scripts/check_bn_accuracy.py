#!/usr/bin/env python
"""How close ResNet-20's float32 training gradients and running statistics come to a float64
computation, with Flax's BatchNorm and with `lth.models.batch_norm_vjp` (issue 31).

One batch of 128 random 32x32x3 images, cross-entropy, training mode; per leaf, the norm-wise
relative error of the float32 result against the same model in float64 (Flax's BatchNorm), then
the largest and the median over the leaves. Run on a CPU (elsewhere both paths are Flax's).

    python scripts/check_bn_accuracy.py
"""

from __future__ import annotations

import bench_common  # noqa: F401 - puts the repo on sys.path
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from lth.config.schema import ModelConfig  # noqa: E402
from lth.models import batch_norm_vjp, build_model  # noqa: E402


def main() -> None:
    model = build_model(ModelConfig(name="resnet20", bn_scale_init="uniform"), 10)
    x = jax.random.normal(jax.random.PRNGKey(0), (128, 32, 32, 3), jnp.float32)
    y = jax.random.randint(jax.random.PRNGKey(1), (128,), 0, 10)
    variables = model.init(jax.random.PRNGKey(2), x)

    def grads(ours: bool, dtype):
        batch_norm_vjp.ENABLED = ours
        cast = lambda tree: jax.tree.map(lambda a: a.astype(dtype), tree)  # noqa: E731

        def loss(params):
            out, upd = model.apply({"params": params, "batch_stats": cast(variables["batch_stats"])}, x.astype(dtype),
                                   train=True, mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(out, y).mean(), upd

        return jax.tree.leaves(jax.jit(jax.grad(loss, has_aux=True))(cast(variables["params"])))

    exact = [np.asarray(a, np.float64) for a in grads(False, jnp.float64)]
    for name, ours in (("Flax's BatchNorm", False), ("lth.models.batch_norm_vjp", True)):
        err = np.array([np.linalg.norm(np.asarray(a, np.float64) - e) / (np.linalg.norm(e) + 1e-30)
                        for a, e in zip(grads(ours, jnp.float32), exact)])
        print(f"{name:28s} float32 vs float64 over {len(err)} leaves (gradients, running statistics): "
              f"largest {err.max():.2e}, median {np.median(err):.2e}")
    batch_norm_vjp.ENABLED = True


if __name__ == "__main__":
    main()
