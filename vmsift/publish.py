"""Publish an output file atomically: it is written under a temporary name beside its target,
flushed, and only then renamed into place.

A failed write removes the temporary and leaves whatever was at the target untouched; a
reader never sees a half-written file under the final name. Every writer of vmsift (disk
export, VMDK writer, datastore extract, backup restore, the local repository backend) goes
through `atomic_output`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from .errors import SourceError


def temp_path(out: str) -> str:
    """A fresh hidden name beside ``out`` for its temporary."""
    head, tail = os.path.split(out)
    return os.path.join(head, f".{tail}.{os.urandom(4).hex()}.tmp")


def fsync_dir(path: str) -> None:
    """Flush the folder holding ``path`` so that a rename in it survives a crash."""
    try:
        fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish(tmp: str, out: str, overwrite: bool) -> None:
    """Move the finished ``tmp`` to ``out``; without ``overwrite`` never clobber ``out``."""
    try:
        if overwrite:
            os.replace(tmp, out)
            return
        try:
            os.link(tmp, out)  # atomic, and fails if ``out`` appeared meanwhile
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links
            if os.path.lexists(out):
                raise FileExistsError(out) from None
            os.rename(tmp, out)
            return
        os.unlink(tmp)
    except FileExistsError:
        raise SourceError("output exists (--force replaces it)", source=out) from None
    except OSError as e:
        raise SourceError(f"cannot move output into place: {e.strerror}", source=out) from None


@contextlib.contextmanager
def atomic_output(out: str | os.PathLike, *, overwrite: bool = False, mode: int = 0o644,
                  sync: bool = True) -> Iterator[int]:
    """Yield a file descriptor open for writing a temporary beside ``out``; when the block
    ends without error the file is flushed (``sync``) and renamed to ``out``. Without
    ``overwrite`` an existing ``out`` is an error, before anything is written."""
    out = os.fspath(out)
    if not overwrite and os.path.lexists(out):
        raise SourceError("output exists (--force replaces it)", source=out)
    tmp = temp_path(out)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     mode)
    except OSError as e:
        raise SourceError(f"cannot create output: {e.strerror}", source=out) from None
    done = False
    try:
        yield fd
        if sync:
            try:
                os.fsync(fd)
            except OSError as e:
                raise SourceError(f"cannot flush output: {e.strerror}", source=out) from e
        os.close(fd)
        fd = -1
        publish(tmp, out, overwrite)
        if sync:
            fsync_dir(out)
        done = True
    finally:
        if fd >= 0:
            os.close(fd)
        if not done:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may take less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_file(out: str | os.PathLike, data: bytes, *, overwrite: bool = False,
               mode: int = 0o644, sync: bool = True) -> None:
    """``data`` as the file ``out``, published atomically (`atomic_output`)."""
    with atomic_output(out, overwrite=overwrite, mode=mode, sync=sync) as fd:
        write_all(fd, data)
