"""Datasets for lottery-ticket runs: built-in loaders for offline files, and TFDS for the rest.

`load_dataset(cfg.dataset, lth.config.schema.data_dir(cfg))` returns a `Dataset` with raw-dtype arrays,
a seeded validation split and the normalisation constants; `lth.data.augment` holds the on-device
CIFAR augmentation. Every failure is a `DataError` with a message meant for the user.

May import: lth.config (the bottom layer, with lth.config and lth.models).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lth.data.dataset import Dataset, RawSplits, split_validation, validation_indices
from lth.data.errors import BUILTIN, DataError, unknown_dataset_message

if TYPE_CHECKING:
    from lth.config.schema import DatasetConfig

__all__ = ["BUILTIN", "DataError", "Dataset", "load_dataset", "load_raw", "split_validation"]

SOURCES = ("auto", "files", "tfds")
# ImageNet's per-channel statistics, which OpenLTH's CIFAR-10 also normalises with
# (`open_lth/datasets/cifar10.py`), for `dataset.normalization=imagenet`.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_TFDS_ONLY_DEFAULTS = {"train_split": "train", "test_split": "test", "image_size": None}
TEXT_ONLY_DEFAULTS = {"max_len": 64, "vocab": None, "task": "classify"}


def _load_builtin(cfg: "DatasetConfig", data_dir: str) -> RawSplits:
    if cfg.name == "imagenet_standin":  # generated; honours image_size and imagenet2012's split name
        from lth.data.imagenet_standin import load_imagenet_standin

        return load_imagenet_standin(cfg)
    changed = [f"dataset.{k}={getattr(cfg, k)!r}" for k, v in _TFDS_ONLY_DEFAULTS.items() if getattr(cfg, k) != v]
    if changed:
        raise DataError(
            f"{', '.join(changed)} applies to TFDS datasets only; the built-in dataset {cfg.name!r} is read from "
            f"files (set dataset.source=tfds to read it through TFDS instead)"
        )
    from lth.data.text import TEXT_DATASETS

    if cfg.name in TEXT_DATASETS:
        from lth.data.text import load_text

        return load_text(cfg, data_dir)
    _refuse_text_settings(cfg)
    if cfg.name == "mnist1d":
        from lth.data.mnist1d import load_mnist1d

        return load_mnist1d(data_dir)
    if cfg.name in ("mnist", "fashion_mnist"):
        from lth.data.idx import load_idx_dataset

        return load_idx_dataset(cfg.name, data_dir)
    from lth.data.cifar10 import load_cifar10

    return load_cifar10(data_dir)


def _refuse_text_settings(cfg: "DatasetConfig") -> None:
    changed = [f"dataset.{k}={getattr(cfg, k)!r}" for k, v in TEXT_ONLY_DEFAULTS.items() if getattr(cfg, k) != v]
    if changed:
        raise DataError(f"{', '.join(changed)} applies to text datasets only (dataset=text: sentiment, trec, "
                        f"20newsgroups; or a TFDS text dataset), not to {cfg.name!r}")


def load_raw(cfg: "DatasetConfig", data_dir: str) -> RawSplits:
    """Full train and test splits of `cfg.name` from the source `cfg.source` says.

    `auto`: the built-in loader for a built-in name, else TFDS; `files`: built-in names only;
    `tfds`: always TFDS (downloading when `cfg.download` and online).
    """
    if cfg.source not in SOURCES:
        raise DataError(f"dataset.source={cfg.source!r} is not one of {', '.join(SOURCES)}")
    if cfg.name == "custom":  # a researcher's own arrays (lth.data.custom)
        from lth.data.custom import load_data

        return load_data(cfg)
    if cfg.source != "tfds" and cfg.name in BUILTIN:
        return _load_builtin(cfg, data_dir)
    if cfg.source == "files":
        raise DataError(unknown_dataset_message(cfg.name, "files"))
    from lth.data.tfds import load_tfds

    raw = load_tfds(cfg)
    if not raw.tokens:
        _refuse_text_settings(cfg)
    return raw


def load_dataset(cfg: "DatasetConfig", data_dir: str, arrays=None) -> Dataset:
    """Load dataset `cfg.name`, hold out `cfg.val_size` training examples, set up normalisation.

    `data_dir` is where built-in datasets live (`lth.config.schema.data_dir(cfg)`: `paths.data_dir`, else
    `$LTH_DATA_DIR`, else `~/.cache/lth/datasets`). Normalisation statistics are those of the full
    training split (published values where they exist), so they do not depend on the split seed.
    `arrays`: a researcher's own (`lth.data.custom.load_data`), for `dataset.name=custom`.
    """
    from lth.config import defaults

    cfg = defaults.fill(cfg, "dataset")  # the dataset's own val_size (conf/dataset)
    if arrays is not None:
        from lth.data.custom import load_data

        raw = load_data(cfg, arrays)
    elif getattr(cfg, "stream", False):  # the training set read from disk per batch (lth.data.stream)
        from lth.data.stream import load_streamed

        raw = load_streamed(cfg, data_dir, load_raw)
    else:
        raw = load_raw(cfg, data_dir)
    objective = None
    if cfg.task == "mlm":
        if not raw.tokens:
            raise DataError(f"dataset.task=mlm: masked-language modelling needs a text dataset, not {raw.name!r}")
        from lth.data.mlm import MaskedLM

        objective = MaskedLM.for_vocab(raw.info)
    from lth.data.stream import StreamedRows

    if isinstance(raw.x_train, StreamedRows):  # streamed: the training rows stay on disk, the validation rows are read now
        train_idx, val_idx = validation_indices(len(raw.x_train), cfg.val_size, cfg.split_seed, raw.name)
        x_train, y_train, x_val, y_val = raw.x_train.view(train_idx), raw.y_train[train_idx], raw.x_train[val_idx], raw.y_train[val_idx]
    else:
        x_train, y_train, x_val, y_val = split_validation(raw.x_train, raw.y_train, cfg.val_size, cfg.split_seed, raw.name)
    x_test = raw.x_test
    crop = getattr(cfg, "crop", None)
    if crop is not None:  # ImageNet: evaluation sees the centre crop (lth.data.imagenet_augment)
        from lth.data.imagenet_augment import check_croppable, center_crop

        check_croppable(raw.name, tuple(x_train.shape[1:]), crop)
        x_val, x_test = (np.ascontiguousarray(center_crop(x, crop)) for x in (x_val, x_test))
    normalization = getattr(cfg, "normalization", "dataset")
    if cfg.normalize and normalization == "imagenet":
        if np.shape(raw.mean) != (3,):
            raise DataError(f"dataset.normalization=imagenet: ImageNet's per-channel statistics need RGB images, but dataset "
                            f"{raw.name!r} has {np.size(raw.mean)} channel(s); use dataset.normalization=dataset")
        mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    elif cfg.normalize:
        mean, std = raw.mean, raw.std
    else:
        mean, std = np.zeros_like(raw.mean), np.ones_like(raw.std)
    return Dataset(
        name=raw.name,
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=raw.y_test,
        num_classes=raw.num_classes,
        mean=np.asarray(mean, np.float32),
        std=np.asarray(std, np.float32),
        scale=float(raw.scale),
        per_image=bool(cfg.normalize and normalization == "per_image"),
        unit_l2=bool(cfg.normalize and normalization == "per_image_l2"),
        tokens=raw.tokens,
        objective=objective,
        crop=crop,
        info={**raw.info, "val_split": f"{cfg.val_size} of the training examples, numpy default_rng({cfg.split_seed}).permutation"}
        if raw.tokens else dict(raw.info),
    )
