"""The package's shape (issue 26): imports run one way between layers, no import cycle, no module
over 400 lines, few modules directly in `lth/`, and every module name from before the layout still
imports as the module it became (`lth/_aliases.py`)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from lth._aliases import OLD_TO_NEW

ROOT = Path(__file__).resolve().parents[1] / "lth"
# Layers, top to bottom: a module may import its own layer's packages and any below, never above.
LAYERS = [("api", "user_components"), ("lottery", "analysis", "compression", "export"),
          ("train", "sparsity", "runs", "integrations"), ("config", "data", "models")]
LAYER = {pkg: i for i, pkgs in enumerate(LAYERS) for pkg in pkgs}


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = p.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _imports(path: Path, known: set[str]) -> set[str]:
    """The lth modules a file imports at its top level or inside functions (both are edges)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from lth.data import checksums` is an edge to lth.data.checksums, not to lth.data's __init__
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names]
        for n in names:
            while n and n not in known:
                n = n.rpartition(".")[0]
            if n.startswith("lth.") or n == "lth":
                found.add(n)
    return found


def _package(mod: str) -> str:
    return mod.split(".")[1] if mod.count(".") else "lth"


def test_no_module_is_over_400_lines_and_few_sit_directly_in_lth():
    mods = _modules()
    long = {m: n for m, p in mods.items() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
    top = [p.name for p in ROOT.glob("*.py")]
    assert len(top) <= 12, top


def test_imports_run_one_way_between_layers():
    mods = _modules()
    against = []
    for mod, path in mods.items():
        src = _package(mod)
        if src not in LAYER:
            continue
        for dst in _imports(path, set(mods)):
            tgt = _package(dst)
            if tgt in LAYER and LAYER[tgt] < LAYER[src]:
                against.append(f"{mod} -> {dst}")
    assert not against, against


def test_no_import_cycle():
    mods = _modules()
    graph = {m: {d for d in _imports(p, set(mods)) if d != m and d != "lth" and d != "lth._aliases"} for m, p in mods.items()}
    state, cycle = {}, []

    def visit(m, stack):
        state[m] = 1
        for d in graph.get(m, ()):
            if state.get(d) == 1:
                cycle.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert not cycle, cycle[:3]


@pytest.mark.parametrize("old", sorted(OLD_TO_NEW))
def test_old_module_names_are_the_new_modules(old):
    assert importlib.import_module(old) is importlib.import_module(OLD_TO_NEW[old])


def test_old_from_imports_keep_working():
    from lth.config import Config, validate  # noqa: F401  (lth.config was a module)
    from lth.lottery import run  # noqa: F401
    from lth.train import Trainer  # noqa: F401
    from lth.masks import flatten
    from lth.sparsity.masks import flatten as new

    assert flatten is new


def test_every_module_imports_first_in_a_fresh_interpreter():
    """Each module of lth imported before any other lth module (as a joblib/loky worker does when it
    unpickles a function of `lth.config.convert`): a package's re-export hook (`lth._aliases.reexport`)
    must not turn `from lth.config import defaults` into a circular import of the former module."""
    import subprocess
    import sys

    code = r"""
import importlib, pkgutil, sys
import lth
names = sorted(m.name for m in pkgutil.walk_packages(lth.__path__, "lth."))
bad = []
for n in names:
    for k in [k for k in sys.modules if k == "lth" or k.startswith("lth.")]:
        del sys.modules[k]
    try:
        importlib.import_module(n)
    except Exception as e:
        bad.append(f"{n}: {e!r}"[:200])
print(len(names)); print("\n".join(bad))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True).stdout.split("\n")
    assert int(out[0]) > 100
    assert [line for line in out[1:] if line] == []
