"""The documentation: a README that fits a first read, a site under docs/ that builds strictly, and
nothing in the README, docs or notebooks that points outside the repository.

`mkdocs build --strict` fails on a broken link, a missing anchor or image, or an API reference
(mkdocstrings) that does not resolve, so building it here is the test of every link in docs/.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 400


def documentation_files() -> list[Path]:
    """The README, every page under docs/ and every notebook (with its README)."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "notebooks").glob("*.ipynb")),
            *sorted((ROOT / "notebooks").glob("*.md"))]


def test_readme_fits_a_first_read():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; move what a first read does not need to docs/"


def test_nothing_points_outside_the_repository():
    bad = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in documentation_files()
           for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\.\./shared|\.\./\.\./", line)]
    assert not bad, "documentation points outside the repository:\n" + "\n".join(bad)


def github_anchor(title: str) -> str:
    """A heading's anchor as GitHub and the site (mkdocs.yml: toc slugify) make it."""
    title = re.sub(r"[`*]", "", title).strip().lower()
    return re.sub(r"[^\w\- ]", "", title).replace(" ", "-")


def test_readme_links_into_docs_exist():
    """The README's relative links (docs/..., notebooks/..., figures) name files that exist, and
    its anchors into docs pages name headings there (the README is not part of the site build)."""
    text = (ROOT / "README.md").read_text()
    targets = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not t.startswith(("http", "#"))]
    assert targets and any(t.startswith("docs/") for t in targets)
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, f"README links to missing files: {missing}"
    for target in (t for t in targets if "#" in t):
        page, anchor = target.split("#")
        headings = re.findall(r"^#+ (.*)$", (ROOT / page).read_text(), flags=re.M)
        assert anchor in {github_anchor(h) for h in headings}, f"README links to {target}: no such heading in {page}"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
                    reason="mkdocs/mkdocstrings not installed (they are in the dev extras: pip install -e '.[dev]')")
def test_the_site_builds_strictly_with_an_api_reference(tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert (site / "index.html").is_file()
    reference = (site / "reference" / "index.html").read_text()
    assert "lth.runs.reading.load_run" in reference and "lth.api.run" in reference
    assert list((site / "figures").rglob("*.png")), "the reproduced results' figures are not in the site"
