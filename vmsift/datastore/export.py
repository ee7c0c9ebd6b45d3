"""Copy a disk (any `ByteSource`) out to a host file.

Raw output is sparse: HOLE and ZERO runs, and DATA blocks that are all zeros, are skipped
with a seek, never written; the file is then cut to the disk's size.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import SourceError
from ..source import Alloc, ByteSource

BLOCK = 4 << 20


@dataclass
class ExportStats:
    size: int
    written: int      # bytes actually written (data)
    skipped: int      # bytes left as holes


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def export_raw(src: ByteSource, out_path: str | os.PathLike, *, overwrite: bool = False,
               progress: Callable[[int], None] | None = None) -> ExportStats:
    """Write ``src`` to ``out_path`` as a sparse raw image."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(out_path, flags, 0o644)
    except OSError as e:
        raise SourceError(f"cannot create output: {e.strerror}", source=os.fspath(out_path)) \
            from None
    written = 0
    zero_block = bytes(BLOCK)
    try:
        for run in src.extents():
            if run.kind is not Alloc.DATA:
                if progress:
                    progress(run.length)
                continue
            pos = run.offset
            while pos < run.end:
                n = min(BLOCK, run.end - pos)
                data = src.read_exact(pos, n, "disk data")
                if data != zero_block[:n]:
                    _write_all(fd, data, pos)
                    written += n
                pos += n
                if progress:
                    progress(n)
        os.ftruncate(fd, src.size)
        os.fsync(fd)
    except OSError as e:
        raise SourceError(f"write failed: {e.strerror}", source=os.fspath(out_path)) from None
    finally:
        os.close(fd)
    return ExportStats(src.size, written, src.size - written)
