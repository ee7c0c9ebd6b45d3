"""`ByteSource`: the one random-access interface every layer of vmsift reads through.

A source has a ``size``, ``read(offset, length)`` (short only at the end) and
``extents(offset, length)``, which yields its allocation map as `Run`s of DATA, ZERO (known
to read as zeros) and HOLE (unallocated: reads as zeros, or falls through to a parent disk).
Layers pass the map through instead of reading zeros. ``prefetch(offset, length)`` is a
hint that a range will be read soon (`FileSource`: ``POSIX_FADV_WILLNEED``), passed down the
same way; it changes no read. ``read_many(ranges)`` reads several ranges whole at once (a
change hint's scattered cells): a layer that maps them onto the source below passes them
down together, so that the pieces that lie side by side there are read as one.

Inside ``direct_io.streaming()`` (the backup's readers), a `FileSource` reads 1 MiB or more
at once past the page cache (`vmsift.direct_io`): such reads stream a whole disk, would only
evict what the cache holds, and cost the kernel several times the CPU of a direct read.
"""

from __future__ import annotations

import bisect
import contextlib
import enum
import errno
import os
import stat
import threading
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from . import direct_io
from .errors import (ErrorKind, LimitError, SourceError, TruncatedError, UnsupportedError,
                     VmsiftError)


class Alloc(enum.Enum):
    DATA = "data"
    ZERO = "zero"
    HOLE = "hole"


class Run(NamedTuple):
    offset: int
    length: int
    kind: Alloc

    @property
    def end(self) -> int:
        return self.offset + self.length


def clip(size: int, offset: int, length: int | None) -> tuple[int, int]:
    """Clip a requested range to ``[0, size)``; return (offset, end)."""
    if offset < 0 or (length is not None and length < 0):
        raise ValueError("negative offset or length")
    end = size if length is None else min(size, offset + length)
    return min(offset, size), end


def inside(size: int, ranges: Sequence[tuple[int, int]]) -> bool:
    """Whether every ``(offset, length)`` of ``ranges`` lies within ``[0, size)``."""
    return all(offset >= 0 and length >= 0 and offset + length <= size
               for offset, length in ranges)


def merge_runs(runs: Iterator[Run]) -> Iterator[Run]:
    """Join adjacent runs of the same kind."""
    pending: Run | None = None
    for run in runs:
        if run.length == 0:
            continue
        if pending and pending.kind == run.kind and pending.end == run.offset:
            pending = Run(pending.offset, pending.length + run.length, run.kind)
            continue
        if pending:
            yield pending
        pending = run
    if pending:
        yield pending


class ByteSource:
    """Read-only random access to ``size`` bytes, named for error messages."""

    name: str = "<source>"
    size: int = 0

    def read(self, offset: int, length: int) -> bytes:
        """Return ``length`` bytes at ``offset``; fewer only when the end is reached."""
        raise NotImplementedError

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Run]:
        """Yield the allocation map of ``[offset, offset+length)`` as merged runs."""
        start, end = clip(self.size, offset, length)
        if end > start:
            yield Run(start, end - start, Alloc.DATA)

    def prefetch(self, offset: int, length: int) -> None:
        """Say that ``[offset, offset+length)`` will be read soon, so that the storage below
        may start fetching it (a change hint's scattered cells are read one after another
        by each job: told first, the disk has them all in its queue at once). Only a hint:
        it changes no read; the storage's own errors are ignored, and the only ones it
        raises are those a map lookup on the way meets (damaged metadata, as `extents`
        would). Layers pass it down where their map allows; here it does nothing."""

    def read_many(self, ranges: Sequence[tuple[int, int]], what: str = "data") -> list[bytes]:
        """The bytes of each ``(offset, length)`` of ``ranges``, whole (`TruncatedError`
        otherwise, as `read_exact`). Ranges that meet end to end are read as one; when
        several reads remain they are all `prefetch`-ed first (but those long enough to go
        past the page cache), so that the storage has them in its queue at once. Layers
        that map ranges onto another source pass them down this way."""
        order = sorted(range(len(ranges)), key=lambda i: ranges[i][0])
        joined: list[list] = []  # [offset, length, indices of the ranges it holds]
        for i in order:
            offset, length = ranges[i]
            if joined and joined[-1][0] + joined[-1][1] == offset and length:
                joined[-1][1] += length
                joined[-1][2].append(i)
            else:
                joined.append([offset, length, [i]])
        if len(joined) > 1:
            with contextlib.suppress(VmsiftError):  # damage: for the reads to report
                for offset, length, _ in joined:
                    if length < direct_io.MIN_LENGTH:
                        self.prefetch(offset, length)
        out: list[bytes] = [b""] * len(ranges)
        for offset, length, held in joined:
            data = self.read_exact(offset, length, what)
            if len(held) == 1:
                out[held[0]] = data
                continue
            view = memoryview(data)
            for i in held:
                start = ranges[i][0] - offset
                out[i] = view[start:start + ranges[i][1]].tobytes()
        return out

    def stored_bytes(self) -> int:
        """Bytes this source holds as DATA, from its allocation map alone."""
        return sum(r.length for r in self.extents() if r.kind is Alloc.DATA)

    def read_exact(self, offset: int, length: int, what: str = "data") -> bytes:
        """Read exactly ``length`` bytes or raise `TruncatedError` naming this source."""
        data = self.read(offset, length)
        if len(data) != length:
            raise TruncatedError(
                f"{what} needs {length} bytes, only {len(data)} before the end "
                f"(size {self.size})", source=self.name, offset=offset)
        return data

    def read_all(self, limit: int, what: str = "file") -> bytes:
        """Read the whole source, refusing sources larger than ``limit`` bytes."""
        if self.size > limit:
            raise LimitError(f"{what} is {self.size} bytes, more than the {limit} allowed",
                             source=self.name)
        return self.read_exact(0, self.size, what)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} size={self.size}>"


class BytesSource(ByteSource):
    """A source over bytes already in memory (small metadata, tests)."""

    def __init__(self, data: bytes, name: str = "<bytes>"):
        self._data = bytes(data)
        self.size = len(self._data)
        self.name = name

    def read(self, offset: int, length: int) -> bytes:
        start, end = clip(self.size, offset, length)
        return self._data[start:end]


_KIND_NAMES = {stat.S_IFIFO: "a named pipe", stat.S_IFCHR: "a character device",
               stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


def special_file_error(mode: int, name: str) -> SourceError:
    """The error for a file that is neither regular nor a block device (a read of a pipe or
    a character device may never end)."""
    kind = _KIND_NAMES.get(stat.S_IFMT(mode), "a special file")
    return SourceError(f"not a regular file or block device ({kind}): refused, a read of it "
                       "may never end", source=name, kind=ErrorKind.NOT_A_FILE)


class FileSource(ByteSource):
    """A host file or block device, opened read-only.

    The allocation map comes from ``SEEK_DATA``/``SEEK_HOLE``: holes in the host file are
    HOLE runs. Where the file system cannot tell, the whole file is DATA.

    Long streaming reads go through a second descriptor opened with ``O_DIRECT`` when first
    needed; where the file system refuses it (some FUSE file systems) they stay buffered.
    """

    _direct_fd: int | None = None  # the O_DIRECT descriptor; -1: refused; None: not tried
    _buffered_only = False         # set when a direct read was refused (EINVAL)

    def __init__(self, path: str | os.PathLike, *, fd: int | None = None):
        self.name = os.fspath(path)
        if fd is not None:
            self._fd = fd
        else:
            try:
                # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below)
                self._fd = os.open(self.name, os.O_RDONLY | os.O_NONBLOCK |
                                   getattr(os, "O_CLOEXEC", 0))
            except OSError as e:
                raise SourceError(f"cannot open: {e.strerror}", source=self.name,
                                  kind=ErrorKind.from_errno(e.errno)) from None
        mode = os.fstat(self._fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            os.close(self._fd)
            raise special_file_error(mode, self.name)
        os.set_blocking(self._fd, True)
        try:
            self.size = os.lseek(self._fd, 0, os.SEEK_END)
        except OSError as e:
            os.close(self._fd)
            raise SourceError(f"cannot find size: {e.strerror}", source=self.name) from None

    @classmethod
    def from_fd(cls, fd: int, name: str) -> FileSource:
        """A source over the open descriptor ``fd`` (read-only), which it now owns."""
        return cls(name, fd=fd)

    def prefetch(self, offset: int, length: int) -> None:
        start, end = clip(self.size, offset, length)
        if end > start and hasattr(os, "posix_fadvise"):
            with contextlib.suppress(OSError):  # a hint: a closed or odd file ignores it
                os.posix_fadvise(self._fd, start, end - start, os.POSIX_FADV_WILLNEED)

    def read(self, offset: int, length: int) -> bytes:
        start, end = clip(self.size, offset, length)
        chunks = []
        if direct_io.wanted(end - start) and not self._buffered_only:
            if (fd := self._direct()) >= 0:
                start = self._read_direct(fd, start, end, chunks)
        while start < end:
            try:
                chunk = os.pread(self._fd, end - start, start)
            except OSError as e:
                raise SourceError(f"read failed: {e.strerror}", source=self.name,
                                  offset=start) from None
            if not chunk:
                break
            chunks.append(chunk)
            start += len(chunk)
        return b"".join(chunks)

    def _direct(self) -> int:
        """The ``O_DIRECT`` descriptor, opened on first use; -1 where it is refused."""
        if self._direct_fd is None:
            fd = direct_io.reopen(self._fd, os.O_RDONLY)
            with _open_lock:
                if self._direct_fd is None:
                    self._direct_fd, fd = fd, -1
            if fd >= 0:
                os.close(fd)  # another thread opened it first
        return self._direct_fd

    def _read_direct(self, fd: int, start: int, end: int, chunks: list[bytes]) -> int:
        """Read from ``start`` towards ``end`` into ``chunks`` past the page cache; return
        where it stopped (the caller reads on, buffered, from there)."""
        try:
            stop = direct_io.read(fd, start, end, chunks)
        except OSError as e:
            raise SourceError(f"read failed: {e.strerror}", source=self.name,
                              offset=start) from None
        if stop is None:
            self._buffered_only = True  # alignment refused: buffered from now on
            return start
        return stop

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Run]:
        start, end = clip(self.size, offset, length)
        pos = start
        while pos < end:
            try:
                data = os.lseek(self._fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:  # no data after pos
                    yield Run(pos, end - pos, Alloc.HOLE)
                    return
                yield Run(pos, end - pos, Alloc.DATA)  # no SEEK_DATA support
                return
            if data > pos:
                yield Run(pos, min(data, end) - pos, Alloc.HOLE)
                pos = min(data, end)
                if pos >= end:
                    return
            hole = os.lseek(self._fd, pos, os.SEEK_HOLE)
            yield Run(pos, min(hole, end) - pos, Alloc.DATA)
            pos = min(hole, end)

    def close(self) -> None:
        if self._direct_fd is not None and self._direct_fd >= 0:
            os.close(self._direct_fd)
        self._direct_fd = -1
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


_open_lock = threading.Lock()


class SliceSource(ByteSource):
    """The byte range ``[start, start+length)`` of another source.

    A slice that reaches past the end of its parent (a truncated flat extent) maps that part
    as DATA and reading it is a `TruncatedError`, so the loss is never silent.
    """

    def __init__(self, parent: ByteSource, start: int, length: int, name: str | None = None):
        if start < 0 or length < 0:
            raise ValueError("negative slice")
        self.parent = parent
        self.start = start
        self.size = length
        self.name = name or f"{parent.name}[{start:#x}+{length:#x}]"

    def read(self, offset: int, length: int) -> bytes:
        start, end = clip(self.size, offset, length)
        data = self.parent.read(self.start + start, end - start)
        if len(data) < end - start:
            raise TruncatedError(f"{self.parent.name} ends at {self.parent.size:#x}, inside "
                                 f"the range this slice needs", source=self.parent.name,
                                 offset=self.start + start + len(data))
        return data

    def prefetch(self, offset: int, length: int) -> None:
        start, end = clip(self.size, offset, length)
        self.parent.prefetch(self.start + start, end - start)

    def read_many(self, ranges: Sequence[tuple[int, int]], what: str = "data") -> list[bytes]:
        if not inside(self.size, ranges):
            return super().read_many(ranges, what)  # which says what is missing
        return self.parent.read_many([(self.start + o, n) for o, n in ranges], what)

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Run]:
        start, end = clip(self.size, offset, length)
        covered = start
        for run in self.parent.extents(self.start + start, end - start):
            yield Run(run.offset - self.start, run.length, run.kind)
            covered = run.end - self.start
        if covered < end:  # past the end of the parent: missing data, not a hole
            yield Run(covered, end - covered, Alloc.DATA)


class ZeroSource(ByteSource):
    """``size`` bytes of zeros, all one ZERO run."""

    def __init__(self, size: int, name: str = "<zero>"):
        if size < 0:
            raise ValueError("negative size")
        self.size = size
        self.name = name

    def read(self, offset: int, length: int) -> bytes:
        start, end = clip(self.size, offset, length)
        return bytes(end - start)

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Run]:
        start, end = clip(self.size, offset, length)
        if end > start:
            yield Run(start, end - start, Alloc.ZERO)


class ConcatSource(ByteSource):
    """Several sources one after the other, as one."""

    def __init__(self, parts: Sequence[ByteSource], name: str | None = None):
        self.parts = list(parts)
        self._starts = []
        pos = 0
        for part in self.parts:
            self._starts.append(pos)
            pos += part.size
        self.size = pos
        self.name = name or "+".join(p.name for p in self.parts)

    def _pieces(self, start: int, end: int) -> Iterator[tuple[int, ByteSource, int, int]]:
        """Yield (virtual offset, part, offset in part, length) covering [start, end)."""
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        pos = start
        while pos < end and i < len(self.parts):
            part, base = self.parts[i], self._starts[i]
            n = min(end, base + part.size) - pos
            if n > 0:
                yield pos, part, pos - base, n
                pos += n
            i += 1

    def read(self, offset: int, length: int) -> bytes:
        start, end = clip(self.size, offset, length)
        out = []
        for pos, part, inner, n in self._pieces(start, end):
            out.append(part.read_exact(inner, n, "extent data"))
        return b"".join(out)

    def prefetch(self, offset: int, length: int) -> None:
        for _, part, inner, n in self._pieces(*clip(self.size, offset, length)):
            part.prefetch(inner, n)

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Run]:
        start, end = clip(self.size, offset, length)

        def shifted() -> Iterator[Run]:
            for pos, part, inner, n in self._pieces(start, end):
                for run in part.extents(inner, n):
                    yield Run(run.offset - inner + pos, run.length, run.kind)

        return merge_runs(shifted())

    def close(self) -> None:
        for part in self.parts:
            part.close()


class OverlaySource(ByteSource):
    """A delta disk over its parent: the top's HOLE runs read through to the parent.

    DATA and ZERO runs of the top win. Where the parent is shorter than the top (a disk grown
    after the snapshot), the rest reads as zeros and maps as HOLE.
    """

    def __init__(self, top: ByteSource, parent: ByteSource, name: str | None = None):
        self.top = top
        self.parent = parent
        self.size = top.size
        self.name = name or top.name

    def read(self, offset: int, length: int) -> bytes:
        start, end = clip(self.size, offset, length)
        out = []
        for run in self.top.extents(start, end - start):
            if run.kind is Alloc.DATA:
                out.append(self.top.read_exact(run.offset, run.length))
            elif run.kind is Alloc.ZERO:
                out.append(bytes(run.length))
            else:
                data = self.parent.read(run.offset, run.length)
                out.append(data + bytes(run.length - len(data)))
        return b"".join(out)

    def prefetch(self, offset: int, length: int) -> None:
        start, end = clip(self.size, offset, length)
        for run in self.top.extents(start, end - start):
            if run.kind is Alloc.DATA:
                self.top.prefetch(run.offset, run.length)
            elif run.kind is Alloc.HOLE:
                self.parent.prefetch(run.offset, run.length)

    def read_many(self, ranges: Sequence[tuple[int, int]], what: str = "data") -> list[bytes]:
        """The top's pieces of all ranges in one `read_many` of the top, the parent's in one
        of the parent."""
        if not inside(self.size, ranges):
            return super().read_many(ranges, what)  # which says what is missing
        wanted: tuple[list, list] = ([], [])  # the top's pieces, the parent's
        plans = []  # per range: (0 top | 1 parent | None zeros, index, length) pieces
        for offset, length in ranges:
            plan = []
            for run in self.top.extents(offset, length):
                below = min(run.length, max(self.parent.size - run.offset, 0))
                src = 0 if run.kind is Alloc.DATA else 1 if run.kind is Alloc.HOLE and \
                    below else None
                n = run.length if src == 0 else below if src == 1 else 0
                if src is not None:
                    plan.append((src, len(wanted[src]), n))
                    wanted[src].append((run.offset, n))
                if run.length > n:  # zeros, or what lies past a shorter parent
                    plan.append((None, 0, run.length - n))
            plans.append(plan)
        got = (self.top.read_many(wanted[0], what) if wanted[0] else [],
               self.parent.read_many(wanted[1], what) if wanted[1] else [])
        return [b"".join(bytes(n) if src is None else got[src][i] for src, i, n in plan)
                for plan in plans]

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Run]:
        start, end = clip(self.size, offset, length)

        def runs() -> Iterator[Run]:
            for run in self.top.extents(start, end - start):
                if run.kind is not Alloc.HOLE:
                    yield run
                    continue
                covered = run.offset
                for inner in self.parent.extents(run.offset, run.length):
                    yield inner
                    covered = inner.end
                if covered < run.end:
                    yield Run(covered, run.end - covered, Alloc.HOLE)

        return merge_runs(runs())

    def close(self) -> None:
        self.top.close()
        self.parent.close()


class UnavailableSource(ByteSource):
    """Bytes that exist but are not here (a raw device mapping's LUN): the map says DATA,
    and any read is an `UnsupportedError` giving ``reason``."""

    def __init__(self, size: int, name: str, reason: str):
        self.size = size
        self.name = name
        self.reason = reason

    def read(self, offset: int, length: int) -> bytes:
        start, end = clip(self.size, offset, length)
        if end <= start:
            return b""
        raise UnsupportedError(self.reason, source=self.name, offset=start)
