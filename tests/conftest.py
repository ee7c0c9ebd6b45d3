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


@pytest.fixture(scope="session")
def kernel_images(cache_dir):
    """OCFS2 images the Linux kernel wrote in a guest, with their manifests
    (tests/fixtures/ocfs2_kernel.py)."""
    from tests.fixtures import ocfs2_kernel
    from tests.helpers import missing

    gone = ocfs2_kernel.missing_tools()
    if gone:
        missing(f"tools for the OCFS2 kernel images: {', '.join(gone)}")
    try:
        return ocfs2_kernel.build_images(cache_dir)
    except ocfs2_kernel.GuestBuildError as e:
        missing(f"kernel-built OCFS2 images ({str(e)[:200]})")
