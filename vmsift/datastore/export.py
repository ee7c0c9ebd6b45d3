"""Copy a disk (any `ByteSource`) out to a host file.

Raw output is sparse: HOLE and ZERO runs, and 64 KiB pieces of data that are all zeros, are
skipped with a seek, never written; the file is then cut to the disk's size and synced. Data
is written past the page cache where the file system allows (`vmsift.direct_io`). When the
export fails, the partial output is removed and what was at the target stays
(`vmsift.publish`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import errno
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from .. import direct_io
from ..errors import SourceError
from ..publish import atomic_output
from ..source import Alloc, ByteSource

BLOCK = 4 << 20  # read size for virtual disks (grains and inflated chunks join well here)
FILE_BLOCK = 1 << 20  # read size for datastore files: one VMFS file block, read without a join
ZERO_GRAIN = 64 << 10  # all-zero pieces this size inside data are left as holes too
IN_FLIGHT = 4  # blocks queued for the writer: bounds memory to a few BLOCKs


@dataclass
class ExportStats:
    size: int
    written: int      # bytes actually written (data)
    skipped: int      # bytes left as holes


def nonzero_spans(data: bytes) -> list[tuple[int, int]]:
    """[start, end) spans of ``data`` that hold non-zero bytes, at `ZERO_GRAIN` granularity
    (all-zero grains between them stay holes in the output)."""
    zero = bytes(ZERO_GRAIN)
    spans: list[tuple[int, int]] = []
    for start in range(0, len(data), ZERO_GRAIN):
        end = min(start + ZERO_GRAIN, len(data))
        # startswith at an offset is a memcmp without copying the grain out
        if data.startswith(zero if end - start == ZERO_GRAIN else zero[:end - start], start):
            continue
        if spans and spans[-1][1] == start:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


class _Writer:
    """Writes pieces at their offsets: aligned ones past the page cache (`direct_io`), the
    rest (and all of them where ``O_DIRECT`` is refused) buffered, with writeback started
    at once when the output is to be synced, so the final fsync finds little left."""

    def __init__(self, fd: int, sync: bool):
        self.fd, self.sync = fd, sync
        self.direct = direct_io.reopen(fd, os.O_WRONLY)

    def write(self, data: bytes | memoryview, offset: int) -> None:
        if self.direct >= 0 and direct_io.aligned(offset, len(data)):
            try:
                direct_io.write_at(self.direct, data, offset)
                return
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                self.close()  # alignment refused: buffered from now on
        view = memoryview(data)
        pos = offset
        while view:
            n = os.pwrite(self.fd, view, pos)
            view, pos = view[n:], pos + n
        if self.sync:
            _start_writeback(self.fd, offset, len(data))

    def close(self) -> None:
        if self.direct >= 0:
            os.close(self.direct)
            self.direct = -1


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``[offset, offset + length)`` out now (it does not
    wait): writeback then overlaps reading and inflating instead of following them."""
    with contextlib.suppress(OSError, AttributeError):
        # DONTNEED starts asynchronous writeback of the dirty pages of the range on Linux
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def export_raw(src: ByteSource, out_path: str | os.PathLike, *, overwrite: bool = False,
               progress: Callable[[int], None] | None = None, sync: bool = True,
               block: int = BLOCK, finish: Callable[[int], None] | None = None) -> ExportStats:
    """Write ``src`` to ``out_path`` as a sparse raw image, reading ``block`` bytes at a time
    (fsynced unless ``sync`` is off, as when many files are extracted). ``finish`` is called
    with the output's descriptor once its data is written, before it is published (extract
    sets the source's mode and times there)."""
    return export_pieces(_data_blocks(src, block, progress), src.size, out_path,
                         overwrite=overwrite, progress=progress, sync=sync, finish=finish)


def _data_blocks(src: ByteSource, block: int, progress: Callable[[int], None] | None
                 ) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) of the DATA runs of ``src``, ``block`` bytes at a time; the other
    runs only count as progress."""
    for run in src.extents():
        if run.kind is not Alloc.DATA:
            if progress:
                progress(run.length)
            continue
        for pos in range(run.offset, run.end, block):
            yield pos, src.read_exact(pos, min(block, run.end - pos), "disk data")


def export_pieces(pieces: Iterable[tuple[int, bytes]], size: int,
                  out_path: str | os.PathLike, *, overwrite: bool = False,
                  progress: Callable[[int], None] | None = None, sync: bool = True,
                  finish: Callable[[int], None] | None = None) -> ExportStats:
    """Write (offset, bytes) pieces of a ``size``-byte disk as a sparse raw image: what is
    not given, and zeros inside what is, stay holes."""
    written = 0
    pending: collections.deque[concurrent.futures.Future] = collections.deque()
    with atomic_output(out_path, overwrite=overwrite, sync=sync) as fd:
        out = _Writer(fd, sync)
        try:
            # reads (and inflating) overlap with writes: one writer thread, a few blocks ahead
            with concurrent.futures.ThreadPoolExecutor(1, "vmsift-export") as writer:
                for pos, data in pieces:
                    for start, end in nonzero_spans(data):
                        piece = memoryview(data)[start:end]
                        pending.append(writer.submit(out.write, piece, pos + start))
                        written += end - start
                    while len(pending) > IN_FLIGHT:  # bounds memory to a few blocks
                        pending.popleft().result()
                    if progress:
                        progress(len(data))
                while pending:
                    pending.popleft().result()
            os.ftruncate(fd, size)
            if finish:
                finish(fd)
        except OSError as e:  # the OSError stays as the cause: callers read its errno
            for future in pending:
                future.cancel()
            raise SourceError(f"write failed: {e.strerror}", source=os.fspath(out_path)) from e
        finally:
            out.close()
    return ExportStats(size, written, size - written)
