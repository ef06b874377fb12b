"""Shared test fixtures."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir() -> str:
    """The offline datasets beside the checkout (`<repo>/../shared/datasets`); skip when absent."""
    path = (Path(__file__).resolve().parent.parent / ".." / "shared" / "datasets").resolve()
    if not path.is_dir():
        pytest.skip(f"offline datasets not found at {path}")
    return str(path)
