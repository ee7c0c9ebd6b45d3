"""Tell what a file is by its content and decode it into a `Report`.

Each format module that `inspect` knows offers three names:

* ``KIND``: the stable identifier used in JSON (``"vmx"``, ``"nvram"`` ...);
* ``sniff(head: bytes) -> bool``: True when the first bytes (up to `HEAD_SIZE`) are this
  format; it must be cheap and never raise;
* ``inspect(src: ByteSource) -> Report``: decode the whole file.

Formats without any header (raw memory, swap) also name ``EXTENSIONS``; those are used only
when no content test matched, and the report then says ``detected_by = "extension"``.
"""

from __future__ import annotations

import os
from types import ModuleType

from .errors import SourceError, UnsupportedError
from .report import Report
from .source import ByteSource, FileSource

HEAD_SIZE = 64 * 1024


def _detectors() -> list[ModuleType]:
    """Format modules in the order they are tried: binary magics first, loose text last."""
    from .formats import vmsd, vmx
    from .formats.vmdk import descriptor, sparse
    return [sparse, descriptor, vmsd, vmx]


def detect(src: ByteSource) -> tuple[ModuleType, str]:
    """Return the format module for ``src`` and how it was recognised."""
    head = src.read(0, HEAD_SIZE)
    detectors = _detectors()
    for module in detectors:
        if module.sniff(head):
            return module, "content"
    ext = os.path.splitext(src.name)[1].lower()
    for module in detectors:
        if ext in getattr(module, "EXTENSIONS", ()):
            return module, "extension"
    tried = ", ".join(m.KIND for m in detectors)
    raise UnsupportedError(f"not a file vmsift can decode (tried: {tried})", source=src.name)


def inspect_source(src: ByteSource) -> Report:
    module, how = detect(src)
    report = module.inspect(src)
    report.detected_by = how
    return report


def inspect_path(path: str | os.PathLike) -> Report:
    """Decode the file at ``path`` (opened read-only)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise UnsupportedError("is a folder; inspect takes one file", source=path)
    if not os.path.exists(path):
        raise SourceError("no such file", source=path)
    with FileSource(path) as src:
        return inspect_source(src)
