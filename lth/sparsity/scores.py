"""Pruning-at-initialisation scores: one number per weight, "keep-importance".

Every function returns a tree with the structure of the params, one score per weight; the pruning
code removes the *lowest* scores among the alive weights. Scores of dead (masked) weights are 0
(finite; the caller ignores them). All functions take one replicate's (unstacked) trees and are
pure JAX: they run under `jax.jit` and `jax.vmap` (the caller vmaps over replicates).

Notation: θ = mask ⊙ params (pruned weights exactly 0), L(θ) = mean softmax cross-entropy of
`logits_fn(θ, x)` against the integer labels, averaged over the B batches `xs[b], ys[b]`.

- **SNIP** (Lee et al. 2019, connection sensitivity):

      score = |g ⊙ θ|,   g = ∂L/∂θ = (1/B) Σ_b ∇_θ L_b(θ).

  (= |∂L/∂c| at c = 1 for the multiplicative mask variables c of the paper.)

- **GraSP** (Wang et al. 2020, gradient signal preservation). The paper's score is
  S = −θ ⊙ (H g) and GraSP removes the weights with the *highest* S, so the keep-importance
  returned here is

      score = −S = θ ⊙ (H g),

      g   = stop_gradient((1/B) Σ_b ∇_θ L_b^T(θ)),
      H g = (1/B) Σ_b ∇_θ (gᵀ ∇_θ L_b^T(θ))      (a Hessian-vector product, forward-over-reverse),

  where L^T is the loss of the logits divided by a temperature T: the released code
  (github.com/alecwangcq/GraSP, `pruner/GraSP.py`, `GraSP(..., T=200)`) computes
  `net.forward(inputs) / T` for both g and Hg, T = 200. To first order, zeroing weight q changes
  the squared gradient norm ‖∇L‖² by −2 θ_q (Hg)_q = 2 S_q: GraSP removes the weights whose removal
  reduces the gradient flow least (or increases it most). The released code restricts g to the
  conv/linear weights (z = Σ_weights g_w · ∇_w L); pass `paths=` (the prunable paths) for that,
  otherwise g covers every leaf (biases, BN scales). (The released code sums g and Hg over its
  batches where this averages: a positive factor, the same ranking.)

- **SynFlow** (Tanaka et al. 2020, iterative synaptic flow, data-free). Linearise the network:
  every leaf is replaced by its absolute value (biases and BN scales too, as the released code
  does with `param.abs_()` over the whole `state_dict`), and the mask is applied:
  θ̃ = mask ⊙ |params|. With an all-ones input 𝟙 of shape (1, *input_shape),

      R(θ̃) = 𝟙ᵀ f(θ̃, 𝟙)   (= 𝟙ᵀ (∏ₗ |θₗ|) 𝟙 for a bias-free linear/ReLU network),
      score = |∂R/∂θ̃ ⊙ θ̃|.

  No data and no labels. BatchNorm: `forward_fn` should run it in inference mode (the released
  code's `model.eval()`) with the running statistics; at initialisation (mean 0, variance 1) the
  released code's absolute value of those statistics changes nothing, so the caller may close over
  them as they are. SynFlow is meant to be applied over many rounds with an exponential schedule
  of densities (`synflow_densities`); the loop lives with the pruning code.

  Overflow: R is a product over layers and exceeds float32 (3.4e38) in deep nets (ResNet-56 with
  Kaiming init: ~27 per layer; measured on lth's ResNet-56 at init: float32 scores all inf/NaN,
  float64 ones finite, up to ~4e69). By default (`x64=True`) the linearised forward and backward run in
  float64 inside `jax.enable_x64(True)` (a context that works inside `jit`/`vmap` from JAX 0.8 on;
  older JAX: `jax.experimental.enable_x64`, which may not apply under an outer `jit`), and the
  scores come back as float64 so that the ranking survives. With `x64=False` everything is float32
  and R may overflow to inf (scores inf or NaN). Float64 scores are for the host (`np.asarray`,
  as the numpy pruning code does): JAX operations on them outside an x64 context truncate them to
  float32 (with a warning), which overflows again.

- **Magnitude**: score = |θ| (magnitude pruning at initialisation, and IMP's criterion).
- **Random**: iid uniform [0, 1) scores, one `jax.random` key per leaf split from `key`.

Example:

    >>> import jax, jax.numpy as jnp
    >>> from lth import scores
    >>> params = {"fc0": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)}}
    >>> mask = jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)
    >>> forward = lambda p, x: jax.nn.relu(x @ p["fc0"]["kernel"] + p["fc0"]["bias"])
    >>> scores.synflow(forward, params, mask, (3,))["fc0"]["kernel"][0, 0]
    Array(1., dtype=float64)
    >>> scores.synflow_densities(1000, 100, 2)
    [316, 100]
"""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

PyTree = Any
LogitsFn = Callable[[PyTree, jax.Array], jax.Array]


def _path_str(key_path) -> str:
    """The `/`-joined name of a leaf (`lth.sparsity.masks.flatten`'s convention) from a JAX key path."""
    parts = []
    for k in key_path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def _leaf_paths(tree: PyTree) -> list[str]:
    return [_path_str(k) for k, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _masked(params: PyTree, mask: PyTree) -> PyTree:
    return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, mask)


def _dead_to_zero(scores: PyTree, mask: PyTree, dtype=jnp.float32) -> PyTree:
    """Scores as `dtype`, 0 where the mask is False (no inf * 0 = NaN leaking out)."""
    return jax.tree.map(lambda s, m: jnp.where(m, s, jnp.zeros_like(s)).astype(dtype), scores, mask)


def _batch_loss(logits_fn: LogitsFn, theta: PyTree, x, y, temperature: float = 1.0):
    logits = logits_fn(theta, x)
    if temperature != 1.0:
        logits = logits / temperature
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _mean_over_batches(fn: Callable, theta: PyTree, xs, ys) -> PyTree:
    """(1/B) Σ_b fn(xs[b], ys[b]), a tree like `theta`, accumulated by `lax.scan` (memory does not
    grow with B)."""
    n = xs.shape[0]
    zeros = jax.tree.map(jnp.zeros_like, theta)

    def body(acc, xy):
        return jax.tree.map(jnp.add, acc, fn(*xy)), None

    total, _ = jax.lax.scan(body, zeros, (xs, ys))
    return jax.tree.map(lambda t: t / n, total)


def _check_batches(xs, ys) -> None:
    if jnp.ndim(xs) < 2 or jnp.ndim(ys) != 2 or jnp.shape(xs)[:2] != jnp.shape(ys)[:2]:
        raise ValueError(
            f"xs and ys must be batches of batches, shapes (B, batch, ...) and (B, batch); "
            f"got xs {jnp.shape(xs)}, ys {jnp.shape(ys)}"
        )


def loss_gradient(logits_fn: LogitsFn, params: PyTree, mask: PyTree, xs, ys, *, temperature: float = 1.0) -> PyTree:
    """g = ∂L/∂θ at θ = mask ⊙ params, L the mean cross-entropy of `logits_fn(θ, x) / temperature`
    averaged over the batches `xs` (B, batch, ...), `ys` (B, batch)."""
    _check_batches(xs, ys)
    theta = _masked(params, mask)
    grad = jax.grad(lambda t, x, y: _batch_loss(logits_fn, t, x, y, temperature))
    return _mean_over_batches(lambda x, y: grad(theta, x, y), theta, xs, ys)


def snip(logits_fn: LogitsFn, params: PyTree, mask: PyTree, xs, ys) -> PyTree:
    """SNIP connection sensitivity |∂L/∂θ ⊙ θ| at θ = mask ⊙ params, the gradient averaged over the
    B batches `xs` (B, batch, ...) and `ys` (B, batch) (Lee et al. 2019).

    `logits_fn(params, x) -> logits` is the network (closing over BatchNorm state and mode).
    """
    theta = _masked(params, mask)
    g = loss_gradient(logits_fn, params, mask, xs, ys)
    return _dead_to_zero(jax.tree.map(lambda gi, t: jnp.abs(gi * t), g, theta), mask)


def hessian_gradient_product(
    logits_fn: LogitsFn,
    params: PyTree,
    mask: PyTree,
    xs,
    ys,
    *,
    temperature: float = 200.0,
    paths: Optional[Sequence[str]] = None,
) -> tuple[PyTree, PyTree]:
    """(g, H g) at θ = mask ⊙ params for GraSP: g the batch-averaged gradient of the tempered loss
    (a constant), H g the batch-averaged Hessian-vector product ∇_θ(gᵀ∇_θ L_b). With `paths`, g is
    zero outside those (`/`-joined) leaves, as in the released code (weights only)."""
    _check_batches(xs, ys)
    if paths is not None:
        keep, names = set(paths), set(_leaf_paths(params))
        if keep - names:
            raise ValueError(f"grasp: paths {sorted(keep - names)} are not parameter paths; allowed: {sorted(names)}")
    theta = _masked(params, mask)
    g = jax.lax.stop_gradient(loss_gradient(logits_fn, params, mask, xs, ys, temperature=temperature))
    if paths is not None:
        g = jax.tree_util.tree_map_with_path(lambda k, v: v if _path_str(k) in keep else jnp.zeros_like(v), g)
    grad = jax.grad(lambda t, x, y: _batch_loss(logits_fn, t, x, y, temperature))

    def hvp(x, y):
        return jax.jvp(lambda t: grad(t, x, y), (theta,), (g,))[1]

    return g, _mean_over_batches(hvp, theta, xs, ys)


def grasp(
    logits_fn: LogitsFn,
    params: PyTree,
    mask: PyTree,
    xs,
    ys,
    *,
    temperature: float = 200.0,
    paths: Optional[Sequence[str]] = None,
) -> PyTree:
    """GraSP keep-importance θ ⊙ (H g) = −S (Wang et al. 2020): removing the lowest is GraSP's
    "remove the highest S = −θ ⊙ Hg". g and Hg use the loss of logits / `temperature` (200 in the
    released code), averaged over the B batches `xs` (B, batch, ...), `ys` (B, batch); `paths`
    restricts g to those leaves (the released code's conv/linear weights)."""
    theta = _masked(params, mask)
    _, hg = hessian_gradient_product(logits_fn, params, mask, xs, ys, temperature=temperature, paths=paths)
    return _dead_to_zero(jax.tree.map(lambda h, t: t * h, hg, theta), mask)


def _x64_context():
    """A context in which float64 is available: `jax.enable_x64(True)` from JAX 0.8 on (x64 became
    a trace-local setting there, so it works inside an outer `jit`/`vmap`), else the older
    `jax.experimental.enable_x64()`."""
    version = tuple(int(v) for v in jax.__version__.split(".")[:2])
    if version >= (0, 8):
        return jax.enable_x64(True)
    from jax import experimental  # pragma: no cover - JAX < 0.8

    return experimental.enable_x64()  # pragma: no cover


def synflow(
    forward_fn: Callable[[PyTree, jax.Array], jax.Array],
    params: PyTree,
    mask: PyTree,
    input_shape: Sequence[int],
    *,
    x64: bool = True,
) -> PyTree:
    """SynFlow scores |∂R/∂θ̃ ⊙ θ̃| (Tanaka et al. 2020): θ̃ = mask ⊙ |params| (every leaf in
    absolute value), R = Σ forward_fn(θ̃, ones((1, *input_shape))). Data-free.

    `forward_fn(params, x)` is the network output (BatchNorm in inference mode). With `x64` (the
    default) the computation and the returned scores are float64, so that R does not overflow in
    deep networks; with `x64=False` they are float32.
    """
    ctx = _x64_context() if x64 else contextlib.nullcontext()
    with ctx:
        dtype = jnp.float64 if x64 else jnp.float32
        theta = jax.tree.map(lambda p, m: jnp.where(m, jnp.abs(p), 0).astype(dtype), params, mask)
        x = jnp.ones((1, *tuple(input_shape)), dtype)
        dr = jax.grad(lambda t: jnp.sum(forward_fn(t, x)))(theta)
        scores = jax.tree.map(lambda d, t: jnp.abs(d.astype(dtype) * t), dr, theta)
        return _dead_to_zero(scores, mask, dtype)


def magnitude(params: PyTree) -> PyTree:
    """|θ|: magnitude pruning (at initialisation, or of the final weights in IMP)."""
    return jax.tree.map(lambda p: jnp.abs(p).astype(jnp.float32), params)


def random(key: jax.Array, params: PyTree) -> PyTree:
    """iid uniform [0, 1) scores: random pruning. One key per leaf, split from `key` in the tree's
    leaf order (path-sorted for dicts): the same key gives the same scores."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, max(len(leaves), 1))
    out = [jax.random.uniform(k, jnp.shape(p), jnp.float32) for k, p in zip(keys, leaves)]
    return jax.tree_util.tree_unflatten(treedef, out)


def synflow_densities(start_count: int, final_count: int, rounds: int) -> list[int]:
    """Weights alive after each of `rounds` SynFlow rounds: alive_j = start · (final/start)^(j/rounds)
    for j = 1..rounds, rounded half up, non-increasing, the last exactly `final_count`.

    >>> synflow_densities(100, 1, 2)
    [10, 1]
    """
    for name, value in (("start_count", start_count), ("final_count", final_count), ("rounds", rounds)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"synflow_densities: {name} must be an int, got {value!r}")
    start_count, final_count, rounds = int(start_count), int(final_count), int(rounds)
    if rounds < 1:
        raise ValueError(f"synflow_densities: rounds={rounds} must be >= 1")
    if start_count < 1 or not 0 <= final_count <= start_count:
        raise ValueError(
            f"synflow_densities: need start_count >= 1 and 0 <= final_count <= start_count; "
            f"got start_count={start_count}, final_count={final_count}"
        )
    ratio = final_count / start_count
    out, prev = [], start_count
    for j in range(1, rounds + 1):
        alive = final_count if j == rounds else int(math.floor(start_count * ratio ** (j / rounds) + 0.5))
        alive = min(prev, max(final_count, alive))
        out.append(alive)
        prev = alive
    return out
