"""Reads and writes past the page cache (``O_DIRECT``), for streaming a whole disk or pack.

On Linux a buffered read or write copies every byte between the page cache and the
process, and on a virtual machine that copy can cost the kernel more CPU than hashing and
compressing the same bytes (docs/benchmarks.md: an 8 GiB backup spent 20 s of system time
in it). ``O_DIRECT`` moves the bytes between the device and an aligned buffer of the
process instead. It needs the offset, the length and the buffer aligned to the device's
block (`ALIGN` covers every block size in use); each thread keeps one page-aligned buffer
(`BUFFER` bytes, an anonymous map, allocated once) through which the bytes pass.

Reads go direct only inside `streaming` (the backup's readers, many reads in flight); writes
of new files that nothing reads back soon (packs, exported and restored disks) always do.
The helpers open the file again with ``O_DIRECT`` through ``/proc/self/fd`` (the same open
file, not the path) and say when a file system refuses it (some FUSE and network file
systems, tmpfs before Linux 6.6), so that the caller can go on buffered.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import threading
from collections.abc import Iterator

MIN_LENGTH = 1 << 20  # reads at least this long, made while `streaming`, go past the cache
ALIGN = 4096         # offset, length and buffer alignment O_DIRECT asks for
BUFFER = 16 << 20    # each thread's aligned buffer; longer transfers are split


def _round_up(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


class _Buffer(threading.local):
    buffer: mmap.mmap | None = None
    streaming = False

    def get(self) -> mmap.mmap:
        if self.buffer is None:
            self.buffer = mmap.mmap(-1, BUFFER)
        return self.buffer


_buffer = _Buffer()


@contextlib.contextmanager
def streaming() -> Iterator[None]:
    """While this block runs, long reads of a `FileSource` in this thread go past the page
    cache. For readers with many reads in flight (the backup's pool): a lone sequential
    reader (an export, a FUSE request) is faster with the kernel's read-ahead."""
    before, _buffer.streaming = _buffer.streaming, True
    try:
        yield
    finally:
        _buffer.streaming = before


def wanted(length: int) -> bool:
    """Whether a read of ``length`` bytes in this thread should go past the page cache."""
    return length >= MIN_LENGTH and _buffer.streaming


def reopen(fd: int, flags: int) -> int:
    """``fd``'s open file again with ``flags | O_DIRECT``; -1 where that is refused."""
    if not hasattr(os, "O_DIRECT"):
        return -1
    try:
        return os.open(f"/proc/self/fd/{fd}", flags | os.O_DIRECT | os.O_CLOEXEC)
    except OSError:
        return -1


def read(fd: int, start: int, end: int, chunks: list[bytes]) -> int | None:
    """Read ``[start, end)`` of the ``O_DIRECT`` descriptor ``fd`` into ``chunks``. Returns
    where it stopped (``end``, or earlier at the end of the file), or None when the reads
    were refused (``EINVAL``: alignment) before any byte came. Other errors are raised."""
    buffer = _buffer.get()
    pos = start
    while pos < end:
        base = pos - pos % ALIGN
        want = min(BUFFER, _round_up(end - base))
        try:
            got = os.preadv(fd, [memoryview(buffer)[:want]], base)
        except OSError as e:
            if e.errno == errno.EINVAL:
                return None if pos == start else pos
            raise
        usable = min(got, end - base)
        if usable <= pos - base:
            return pos
        chunks.append(buffer[pos - base:usable])
        pos = base + usable
        if got < want:
            return pos
    return pos


def aligned(offset: int, length: int) -> bool:
    """Whether a transfer of ``length`` bytes at ``offset`` may go through ``O_DIRECT``."""
    return offset % ALIGN == 0 and length % ALIGN == 0


def write_at(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write ``data`` at ``offset`` of the ``O_DIRECT`` descriptor ``fd``; the length is
    padded with zeros to `ALIGN` (the offset must be `aligned`). Errors are raised; an
    ``EINVAL`` before any byte is written means the file system refuses the alignment."""
    view, buffer = memoryview(data), _buffer.get()
    pos = 0
    while pos < len(view):
        n = min(BUFFER, len(view) - pos)
        padded = _round_up(n)
        buffer[:n] = view[pos:pos + n]
        buffer[n:padded] = bytes(padded - n)
        done = 0
        while done < padded:
            done += os.pwrite(fd, memoryview(buffer)[done:padded], offset + pos + done)
        pos += n


def write_new(fd: int, data: bytes | memoryview) -> bool:
    """Write ``data`` as the whole content of the new, empty file ``fd`` past the page
    cache (the last block padded with zeros, then the file cut to ``len(data)``). Returns
    False, with the file still empty, where ``O_DIRECT`` is refused; other errors raise.
    The bytes are on the device, not yet durable: an ``fsync`` still has to follow."""
    direct = reopen(fd, os.O_WRONLY)
    if direct < 0:
        return False
    try:
        write_at(direct, data, 0)
    except OSError as e:
        if e.errno != errno.EINVAL or os.fstat(fd).st_size:
            raise
        return False
    finally:
        os.close(direct)
    os.ftruncate(fd, len(data))
    return True
