"""Any image- or text-classification dataset by its TFDS name, read into NumPy without TensorFlow.

Text datasets (string features and a label, e.g. `glue/sst2`, `glue/cola`, pairs such as
`glue/mrpc`, `imdb_reviews`) are tokenised as the built-in text corpora are (`lth.data.text`).

Uses `tfds.data_source` (random-access ArrayRecord files; TFDS downloads and prepares them when
`dataset.download` is true and the machine is online) and reads every example of the train and test
splits into arrays. `tensorflow_datasets` is imported only when this path is used.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from lth.data.dataset import RawSplits, channel_stats
from lth.data.errors import DataError, unknown_dataset_message

if TYPE_CHECKING:
    from lth.config.schema import DatasetConfig

_BATCH = 1024


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(f"reading a TFDS dataset needs the tensorflow-datasets package ({e}); pip install tensorflow-datasets") from None
    return tfds


def get_builder(name: str, data_dir=None, source: str = "auto"):
    """The TFDS builder for `name` (no download); a name TFDS does not know is a `DataError`."""
    tfds = _import_tfds()
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(unknown_dataset_message(name, source)) from None
    except Exception as e:  # unknown config or version, etc.
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"dataset.name={name!r}: TFDS cannot build it: {first_line}") from None


def center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to `size` (bilinear, antialiased) and crop the centre size x size."""
    from PIL import Image

    h, w = image.shape[:2]
    if min(h, w) != size:
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        squeeze = image.ndim == 3 and image.shape[2] == 1
        pil = Image.fromarray(image[..., 0] if squeeze else image)
        image = np.asarray(pil.resize((nw, nh), Image.BILINEAR))
        if squeeze:
            image = image[..., None]
        h, w = nh, nw
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return image[top : top + size, left : left + size]


def _get_examples(source, keys: list[int]):
    getitems = getattr(source, "__getitems__", None)
    if getitems is not None:
        try:
            return list(getitems(keys))
        except TypeError:  # tfds.testing.mock_data installs a __getitems__ with a broken signature
            pass
    return [source[k] for k in keys]


def read_split(source, name: str, split: str, image_size=None) -> tuple[np.ndarray, np.ndarray]:
    """Every example of a data source as (images (N, H, W, C), int32 labels (N,))."""
    n = len(source)
    if n == 0:
        raise DataError(f"dataset {name!r}: TFDS split {split!r} is empty")
    x = y = None
    for start in range(0, n, _BATCH):
        examples = _get_examples(source, list(range(start, min(start + _BATCH, n))))
        for i, ex in enumerate(examples, start):
            if "image" not in ex or "label" not in ex:
                raise DataError(f"dataset {name!r}: TFDS examples have keys {sorted(ex)}, expected 'image' and 'label'")
            img = np.asarray(ex["image"])
            if img.ndim == 2:
                img = img[..., None]
            if image_size:
                img = center_crop_resize(img, image_size)
            if x is None:
                x = np.empty((n,) + img.shape, img.dtype if img.dtype == np.uint8 else np.float32)
                y = np.empty((n,), np.int32)
            if img.shape != x.shape[1:]:
                raise DataError(
                    f"dataset {name!r}: images of split {split!r} differ in shape ({x.shape[1:]} and {img.shape}); "
                    f"set dataset.image_size to resize and centre-crop them to a square"
                )
            x[i] = img
            y[i] = int(ex["label"])
    return x, y


def _prepare_kwargs(tfds, cfg: "DatasetConfig"):
    """How TFDS prepares a dataset it has not prepared yet: from `dataset.tfds_manual_dir` for
    datasets whose archives must be downloaded by hand (imagenet2012's ILSVRC2012_img_*.tar);
    otherwise TFDS's default (`<data_dir>/downloads/manual`)."""
    if not cfg.tfds_manual_dir:
        return None
    manual = os.path.abspath(os.path.expanduser(cfg.tfds_manual_dir))
    if not os.path.isdir(manual):
        raise DataError(f"dataset.tfds_manual_dir={cfg.tfds_manual_dir!r}: no such directory ({manual}); it must hold the "
                        f"archives TFDS asks for when preparing {cfg.name!r} by hand")
    return {"download_config": tfds.download.DownloadConfig(manual_dir=manual)}


def _opener(tfds, cfg: "DatasetConfig", builder):
    """A function split -> TFDS data source (downloading and preparing when allowed), raising a
    `DataError` that says where it looked and what to do."""
    name = cfg.name
    where = f"looked in {builder.data_dir}"
    prepare_kwargs = _prepare_kwargs(tfds, cfg)

    def open_split(split):
        try:
            return tfds.data_source(name, split=split, data_dir=cfg.tfds_data_dir, download=cfg.download,
                                    download_and_prepare_kwargs=prepare_kwargs)
        except Exception as e:
            detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            hint = (
                "it is not prepared there and dataset.download=false; set dataset.download=true on a machine that is online"
                if not cfg.download
                else "TFDS could not download and prepare it (is the machine online? preparing some datasets needs TensorFlow)"
            )
            raise DataError(
                f"dataset {name!r}: cannot open TFDS split {split!r} ({where}, from dataset.tfds_data_dir or TFDS's "
                f"default): {hint}. TFDS said: {type(e).__name__}: {detail}"
            ) from None

    return open_split


def _load_text(tfds, cfg: "DatasetConfig", builder, keys: list[str]) -> RawSplits:
    """A TFDS text-classification dataset as token ids (`lth.data.text`): its first one or two
    text features ([CLS] a [SEP] b [SEP]) and its label."""
    from lth.data.text import Tokenizer, read_tfds_text, text_splits, vocab_path

    name = cfg.name
    tok = Tokenizer(vocab_path(cfg), cfg.max_len)
    open_split = _opener(tfds, cfg, builder)
    out = []
    for split in (cfg.train_split, cfg.test_split):
        source = open_split(split)
        if len(source) == 0:
            raise DataError(f"dataset {name!r}: TFDS split {split!r} is empty")
        examples = [ex for start in range(0, len(source), _BATCH)
                    for ex in _get_examples(source, list(range(start, min(start + _BATCH, len(source)))))]
        first, second, labels = read_tfds_text(examples, keys)
        if (labels < 0).any():
            raise DataError(f"dataset {name!r}: TFDS split {split!r} has no labels (GLUE hides its test labels); "
                            f"set dataset.test_split=validation")
        out.append((tok.encode(first, second), labels))
    (x_train, y_train), (x_test, y_test) = out
    info = {"source": f"tfds: {name} ({', '.join(keys)})", "vocab": tok.path, "max_len": cfg.max_len,
            "test_split": f"TFDS split {cfg.test_split!r}"}
    return text_splits(name, x_train, y_train, x_test, y_test, int(builder.info.features["label"].num_classes), tok, info)


def load_tfds(cfg: "DatasetConfig") -> RawSplits:
    """Train and test splits of TFDS dataset `cfg.name`; per-channel stats over the train split."""
    tfds = _import_tfds()
    name = cfg.name
    builder = get_builder(name, cfg.tfds_data_dir, cfg.source)
    features = builder.info.features
    if features is not None and "label" in features and "image" not in features:
        from lth.data.text import tfds_text_keys

        keys = tfds_text_keys(features)
        if keys:
            return _load_text(tfds, cfg, builder, keys[:2])
    if features is None or "label" not in features or "image" not in features:
        keys = sorted(features.keys()) if features is not None else []
        raise DataError(f"dataset.name={name!r}: a TFDS image-classification dataset needs 'image' and 'label' features; it has {keys}")
    num_classes = int(features["label"].num_classes)
    open_split = _opener(tfds, cfg, builder)
    arrays = [read_split(open_split(split), name, split, cfg.image_size) for split in (cfg.train_split, cfg.test_split)]
    (x_train, y_train), (x_test, y_test) = arrays
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"dataset {name!r}: train images {x_train.shape[1:]} and test images {x_test.shape[1:]} differ; set dataset.image_size")
    scale = 255.0 if x_train.dtype == np.uint8 else 1.0
    mean, std = channel_stats(x_train, scale)
    return RawSplits(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=num_classes,
        mean=mean,
        std=std,
        scale=scale,
    )
