"""`Report`: what a decoder tells about one file, for people (fields, tables) and scripts (data).

Formats build reports; the CLI renders them as text or as the JSON document described in
``docs/json.md``. A report holds no I/O and no formatting of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def human_size(n: float | None) -> str:
    """A byte count for people, four significant digits: ``512 bytes``, ``1.125 GiB`` (``-``
    when unknown)."""
    if n is None:
        return "-"
    if n < 1024:
        return f"{n:.0f} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        n /= 1024
        if n < 1024 or unit == "PiB":
            break
    return f"{n:.4g} {unit}"


def size_field(n: int) -> str:
    """A byte count exact and for people, for report fields: ``1258291200 (1.172 GiB)``."""
    return f"{n} ({human_size(n)})" if n >= 1024 else f"{n} bytes"


@dataclass
class Table:
    """A titled table of rows; cells are plain values (str, int, bool, None)."""

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)


@dataclass
class Report:
    """The decoded summary of one file.

    ``kind`` is a stable identifier (``vmx``, ``vmsd``, ``nvram`` ...); ``data`` is the
    JSON-ready document for that kind; ``fields`` and ``tables`` are the readable summary;
    ``warnings`` name damage that was worked around.
    """

    kind: str
    title: str
    data: dict[str, Any]
    fields: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    detected_by: str = "content"
