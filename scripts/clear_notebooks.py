#!/usr/bin/env python
"""Clear the outputs of notebooks before committing them (outputs are never committed: `make test`
executes the notebooks instead, so they cannot rot).

    python scripts/clear_notebooks.py                  # clear notebooks/*.ipynb in place
    python scripts/clear_notebooks.py a.ipynb b.ipynb  # those files
    python scripts/clear_notebooks.py --check          # list notebooks with outputs; exit 1 if any

Clears every code cell's outputs and execution count and the execution timings Jupyter keeps in
cell metadata, and trims the notebook's `language_info` to its name (a kernel writes its Python
version there); writes as nbformat does (JSON, indent 1, sorted keys). Plain JSON: no Jupyter needed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dirty(nb: dict) -> bool:
    """True when a code cell has outputs, an execution count or execution timings, or the notebook
    more `language_info` than its name."""
    if set(nb.get("metadata", {}).get("language_info", {})) - {"name"}:
        return True
    return any(c.get("cell_type") == "code" and (c.get("outputs") or c.get("execution_count") is not None
                                                  or "execution" in c.get("metadata", {}))
               for c in nb.get("cells", []))


def clear(nb: dict) -> dict:
    for c in nb.get("cells", []):
        if c.get("cell_type") == "code":
            c["outputs"], c["execution_count"] = [], None
            c.get("metadata", {}).pop("execution", None)
    info = nb.get("metadata", {}).get("language_info")
    if info:
        nb["metadata"]["language_info"] = {"name": info.get("name", "python")}
    return nb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", help="default: notebooks/*.ipynb")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 when a notebook has outputs")
    args = ap.parse_args(argv)
    paths = args.notebooks or sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
    found = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            nb = json.load(f)
        if not dirty(nb):
            continue
        found.append(path)
        if not args.check:
            with open(path, "w", encoding="utf-8") as f:
                f.write(json.dumps(clear(nb), indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    for path in found:
        print(f"{os.path.relpath(path)}: {'has outputs' if args.check else 'cleared'}")
    if args.check and found:
        print("clear them with: python scripts/clear_notebooks.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
