"""A researcher's own data (`dataset=custom dataset._target_=...`, or `lth.run(cfg, data=...)`).

A data target returns a mapping of NumPy arrays `x_train, y_train, x_test, y_test` (optional
`num_classes`); `load_data` checks them (N examples and N integer labels in 0 .. C-1, matching
example shapes) and returns `RawSplits`, so that the validation split, normalisation and
augmentation then apply as for built-in data (`lth.data.load_dataset`). Their content hash
(`lth.config.targets.content_hash`) is recorded in the dataset's info. Bad arrays are a
`ConfigError` naming the target.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from lth.config.schema import ConfigError, DatasetConfig
from lth.config.targets import ARRAYS, content_hash, import_target


def load_data(cfg: DatasetConfig, arrays: Optional[Mapping[str, Any]] = None):
    """`lth.data.RawSplits` of the researcher's arrays: `arrays` (from Python) or what
    `dataset._target_` returns when called with `dataset.kwargs`."""
    from lth.data.dataset import RawSplits, channel_stats

    if arrays is None:
        setting = f"dataset._target_={cfg._target_!r}"
        fn = import_target("dataset._target_", cfg._target_)
        if not callable(fn):
            raise ConfigError(f"{setting} is a {type(fn).__name__}, not a function returning arrays")
        try:
            arrays = fn(**cfg.kwargs)
        except Exception as e:
            raise ConfigError(f"{setting} with arguments {dict(cfg.kwargs)}: {type(e).__name__}: {e}") from None
    else:
        setting = "lth.run(data=...)"
    if not isinstance(arrays, Mapping) or any(k not in arrays for k in ARRAYS):
        got = sorted(arrays) if isinstance(arrays, Mapping) else type(arrays).__name__
        raise ConfigError(f"{setting} gave {got}; it must return a mapping of NumPy arrays {', '.join(ARRAYS)} "
                          "(and optionally num_classes)")
    a = {k: np.asarray(arrays[k]) for k in ARRAYS}
    for split in ("train", "test"):
        x, y = a[f"x_{split}"], a[f"y_{split}"]
        if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or not len(x):
            raise ConfigError(f"{setting}: x_{split} {x.shape} and y_{split} {y.shape} must be N examples and N labels (N > 0)")
        if not np.issubdtype(y.dtype, np.integer):
            raise ConfigError(f"{setting}: y_{split} has dtype {y.dtype}; labels are integer class indices 0 .. C-1")
    if a["x_train"].shape[1:] != a["x_test"].shape[1:]:
        raise ConfigError(f"{setting}: x_train examples have shape {a['x_train'].shape[1:]}, x_test {a['x_test'].shape[1:]}")
    for k in ("x_train", "x_test"):
        if np.issubdtype(a[k].dtype, np.floating) and a[k].dtype != np.float32:
            a[k] = a[k].astype(np.float32)
    ys = np.concatenate([a["y_train"], a["y_test"]])
    num_classes = int(arrays.get("num_classes") or int(ys.max()) + 1)
    if ys.min() < 0 or ys.max() >= num_classes:
        raise ConfigError(f"{setting}: labels run from {ys.min()} to {ys.max()}; they must lie in 0 .. num_classes-1 = {num_classes - 1}")
    scale = 255.0 if a["x_train"].dtype == np.uint8 else 1.0
    x = a["x_train"]
    mean, std = channel_stats(x[..., None] if x.ndim == 2 else x, scale)
    name = cfg._target_.rsplit(".", 1)[0] if cfg._target_ else "custom"
    return RawSplits(name=name, x_train=x, y_train=a["y_train"].astype(np.int32), x_test=a["x_test"],
                     y_test=a["y_test"].astype(np.int32), num_classes=num_classes, mean=mean, std=std, scale=scale,
                     info={"source": cfg._target_ or "lth.run(data=...)", "sha256": content_hash(a)})
