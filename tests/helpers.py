"""Test helpers: where the public samples live, and tools that must exist under CI."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT.parent / "shared" / "samples"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str) -> None:
    """Skip for a missing oracle or sample locally; fail under CI, where all must exist."""
    if ON_CI:
        pytest.fail(f"{what} is missing under CI=true: .ci/run must provide it")
    pytest.skip(f"{what} is missing")


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        missing(f"tool {name!r}")
    return path


def sample(name: str) -> Path:
    path = SAMPLES / name
    if not path.exists():
        missing(f"sample {path}")
    return path
