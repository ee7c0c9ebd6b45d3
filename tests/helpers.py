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


def mutate(data, raw: bytes, *, hot: int | None = None, rounds: int = 8) -> bytes:
    """Damage ``raw`` with hypothesis ``data``: flipped bits, cuts, insertions, and fields set
    to all ones, zero or a random 32-bit value. With ``hot``, half the damage lands in the
    first ``hot`` bytes (the headers and tables that matter most)."""
    from hypothesis import strategies as st

    out = bytearray(raw)
    for _ in range(data.draw(st.integers(1, rounds))):
        if not out:
            break
        end = min(len(out), hot) if hot and data.draw(st.booleans()) else len(out)
        pos = data.draw(st.integers(0, end - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert", "max", "zero", "word"]))
        if action == "flip":
            out[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "cut":
            del out[pos:]
        elif action == "insert":
            out[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        elif action == "max":
            out[pos:pos + 8] = b"\xff" * 8
        elif action == "zero":
            out[pos:pos + 4] = bytes(4)
        else:
            out[pos:pos + 4] = data.draw(st.integers(0, (1 << 32) - 1)).to_bytes(4, "little")
    return bytes(out)
