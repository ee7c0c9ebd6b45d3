"""Session fixtures shared by all tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """A per-run cache for built or downloaded fixtures (never inside the repository)."""
    path = Path(os.environ.get("VMSIFT_TEST_CACHE", Path.home() / ".cache" / "vmsift-tests"))
    path.mkdir(parents=True, exist_ok=True)
    return path
