"""MkDocs hook (mkdocs.yml `hooks:`): the reproduced results' figures, committed under
results/figures/ (`make figures`), appear in the site as figures/ without a copy in docs/.

Adding them as files of the build (not copying after it) lets `mkdocs build --strict` check every
image a page links to: a missing figure fails the build like a missing page.
"""
from pathlib import Path

from mkdocs.structure.files import File

RESULTS = Path(__file__).resolve().parent.parent / "results"


def on_files(files, config):
    for png in sorted((RESULTS / "figures").rglob("*.png")):
        files.append(File(png.relative_to(RESULTS).as_posix(), src_dir=str(RESULTS), dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files
