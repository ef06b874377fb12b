"""The model registry: `ModelConfig.name` -> a Flax Linen module.

Every model follows the conventions the trainer and the pruning presets rely on:

- `model.apply(variables, x, train=False)`: `x` is a normalised float32 batch (B, *input_shape),
  images NHWC; the result is logits (B, num_classes). With BatchNorm, training mode needs
  `mutable=["batch_stats"]`.
- Parameter names: the classifier is `head`, hidden dense layers `fc1`, `fc2`, ..., convolutions
  contain `conv`, BatchNorms `bn`; weights are `kernel`, biases `bias`, BN `scale`/`bias`.
- BatchNorm (PyTorch constants) keeps running statistics in `batch_stats`; models without
  BatchNorm have no such collection.
- Pure functions of their inputs: jit- and vmap-able (replicates are vmapped inits and steps).
- A `dtype` field, the compute dtype (`train.dtype`): float32 by default; bfloat16 keeps float32
  parameters, BatchNorm statistics and logits (`lth.models.precision`).

Example:

    >>> import jax, jax.numpy as jnp
    >>> from lth.config import ModelConfig
    >>> from lth.models import build_model
    >>> model = build_model(ModelConfig(name="mlp", widths=[500, 500]), num_classes=10)
    >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 40)))
    >>> model.apply(variables, jnp.zeros((8, 40))).shape
    (8, 10)

May import: lth.config (the bottom layer, with lth.config and lth.data).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from flax import linen as nn

from lth.config import defaults
from lth.config.schema import ConfigError, ModelConfig
from lth.models.bert import bert
from lth.models.conv import conv2, conv4, conv6
from lth.models.lenet5 import lenet5
from lth.models.mlp import lenet_300_100, mlp
from lth.models.resnet_cifar import resnet20, resnet32, resnet44, resnet56, resnet110
from lth.models.resnet_imagenet import resnet18, resnet50
from lth.models.vgg import vgg11, vgg13, vgg16, vgg19

ModelBuilder = Callable[[ModelConfig, int], nn.Module]

MODELS: dict[str, ModelBuilder] = {
    # fully connected
    "mlp": mlp,
    "lenet_300_100": lenet_300_100,
    # Frankle & Carbin (2019) CIFAR-10 convnets
    "conv2": conv2,
    "conv4": conv4,
    "conv6": conv6,
    # Caffe's MNIST LeNet-5 (Han et al. 2015, 2016)
    "lenet5": lenet5,
    # He et al. (2016) CIFAR ResNets (OpenLTH cifar_resnet_N)
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "resnet110": resnet110,
    # CIFAR VGGs (OpenLTH cifar_vgg_N)
    "vgg11": vgg11,
    "vgg13": vgg13,
    "vgg16": vgg16,
    "vgg19": vgg19,
    # ImageNet-style ResNets (torchvision)
    "resnet18": resnet18,
    "resnet50": resnet50,
    # transformers on token ids (Devlin et al. 2019; Chen et al. 2020's tickets in pre-trained BERT)
    "bert": bert,
}


def build_model(cfg: ModelConfig, num_classes: int, obj: nn.Module | None = None) -> nn.Module:
    """The module `cfg.name` with a `num_classes`-way head. Raises ConfigError for an unknown
    `model.name` or `model.init` / `model.bn_scale_init`. `model=custom`: a researcher's own
    module, `obj` or `model._target_` (`lth.models.custom`)."""
    if cfg.name == "custom":
        from lth.models import custom

        return custom.build_model(cfg, num_classes, obj)
    if cfg.name not in MODELS:
        raise ConfigError(f"model.name={cfg.name!r} is not one of {', '.join(sorted(MODELS))}")
    return MODELS[cfg.name](defaults.fill(cfg, "model"), num_classes)  # the model's own defaults (conf/model)


def check_fits_data(cfg: ModelConfig, model: nn.Module, dataset, *, dtype: str = "float32") -> None:
    """Refuse a model that cannot read `dataset` (an `lth.data.Dataset`): token ids to a model
    without a vocabulary or the reverse, a vocabulary or sequence longer than the model's, an
    objective the model has no method for, a compute dtype it does not support. ConfigError."""
    takes_tokens = getattr(model, "vocab_size", None) is not None
    if dataset.tokens and not takes_tokens:
        raise ConfigError(f"model.name={cfg.name!r}: dataset {dataset.name!r} is text (token ids); it needs a model "
                          f"that reads tokens: model=bert")
    if takes_tokens and not dataset.tokens:
        raise ConfigError(f"model.name={cfg.name!r} reads token ids, but dataset {dataset.name!r} is not text "
                          f"(dataset=text dataset.name=sentiment|trec|20newsgroups, or a TFDS text dataset)")
    if dataset.tokens:
        vocab = int(dataset.info.get("vocab_size", 0))
        if vocab > model.vocab_size:
            raise ConfigError(f"model.vocab_size={model.vocab_size}: the dataset's vocabulary ({dataset.info.get('vocab')}) "
                              f"has {vocab} tokens; set model.vocab_size >= {vocab}")
        if dataset.input_shape[0] > model.max_len:
            raise ConfigError(f"dataset.max_len={dataset.input_shape[0]} is longer than model.max_len={model.max_len} "
                              "(the model's position embeddings)")
    objective = getattr(dataset, "objective", None)
    if objective is not None and not hasattr(model, objective.method):
        raise ConfigError(f"dataset.task=mlm: model.name={cfg.name!r} has no {objective.method} head (model=bert has)")
    if dtype != "float32" and not hasattr(model, "dtype"):
        raise ConfigError(f"train.dtype={dtype}: model.name={cfg.name!r} ({type(model).__name__}) has no `dtype` field, so it "
                          f"computes in float32 only; the built-in models ({', '.join(MODELS)}) support {dtype}, and a "
                          "module of your own does when it has a `dtype` field it computes in (see lth/models/precision.py)")


def has_batch_norm(variables: Mapping[str, Any]) -> bool:
    """Whether `variables` (a model's init result) hold a non-empty `batch_stats` collection."""
    return bool(variables.get("batch_stats"))


__all__ = ["MODELS", "ModelBuilder", "build_model", "check_fits_data", "has_batch_norm"]
