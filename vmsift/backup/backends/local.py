"""A repository in a local folder (or any mounted file system: NFS, SMB, a USB disk).

Layout: ``config`` at the top, ``data/<first two hex digits>/<name>`` (256 folders keep
listings short), ``<kind>/<name>`` for the rest. Objects are written through
`vmsift.publish.atomic_output`: temporary beside the target, fsync, link into place, fsync of
the folder; packs skip the fsync when put (written past the page cache, `vmsift.direct_io`,
or their writeback started) and are fsynced, with their folders, by `flush`, which comes
before any index names them. A pack found cut short (a crash before its flush) is written
again by the next put of it. Temporaries left by a killed writer start with a dot, are never
listed, and are deleted by `remove_leftovers`.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator

from ... import direct_io
from ...errors import MissingObjectError, RepositoryError, SourceError
from ...publish import atomic_output, fsync_dir, write_all, write_file
from . import KINDS, Backend, TransientError

_SYNC_FILE_RANGE = hasattr(os, "sync_file_range")  # Linux: start writeback, do not wait
_TRANSIENT = {errno.EINTR, errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.ESTALE}


def _error(e: OSError, what: str, where: str) -> Exception:
    if e.errno in _TRANSIENT:
        return TransientError(f"{where}: {what}: {e.strerror}")
    return RepositoryError(f"{what}: {e.strerror}", source=where)


class LocalBackend(Backend):
    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.location = self.root
        self._lock = threading.Lock()
        self._unflushed: set[str] = set()  # packs written, not yet fsynced

    def _path(self, kind: str, name: str) -> str:
        if kind not in KINDS or not name or "/" in name or name.startswith("."):
            raise RepositoryError(f"bad object name {kind}/{name}", source=self.root)
        if kind == "config":
            return os.path.join(self.root, "config")
        if kind == "data":
            return os.path.join(self.root, "data", name[:2], name)
        return os.path.join(self.root, kind, name)

    def create(self) -> None:
        """Make the folders of a new repository (the folder itself may exist, empty)."""
        try:
            os.makedirs(self.root, exist_ok=True)
            if os.listdir(self.root):
                raise RepositoryError("folder is not empty; a new repository needs an empty "
                                      "or missing folder", source=self.root)
            for kind in KINDS[1:]:
                os.mkdir(os.path.join(self.root, kind))
            for i in range(256):
                os.mkdir(os.path.join(self.root, "data", f"{i:02x}"))
        except OSError as e:
            raise _error(e, "cannot create the repository", self.root) from None

    def list(self, kind: str) -> Iterator[tuple[str, int]]:
        if kind == "config":
            if os.path.exists(self._path("config", "config")):
                yield "config", os.path.getsize(self._path("config", "config"))
            return
        top = os.path.join(self.root, kind)
        for folder in self._folders(kind):
            try:
                with os.scandir(folder) as it:
                    for entry in it:
                        if not entry.name.startswith(".") and entry.is_file(follow_symlinks=False):
                            yield entry.name, entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                if folder == top:
                    raise RepositoryError(f"the {kind}/ folder is missing",
                                          source=self.root) from None
            except OSError as e:
                raise _error(e, f"cannot list {kind}", folder) from None

    def get(self, kind: str, name: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(kind, name)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise MissingObjectError(f"{kind}/{name} is missing", source=self.root) from None
        except OSError as e:
            raise _error(e, f"cannot open {kind}/{name}", self.root) from None
        try:
            if length is None:
                length = os.fstat(fd).st_size - offset
            parts, pos, end = [], offset, offset + length
            while pos < end:
                part = os.pread(fd, end - pos, pos)
                if not part:
                    raise RepositoryError(f"{kind}/{name} ends at {pos}, {end - pos} bytes "
                                          f"short of what the index says", source=self.root,
                                          offset=pos)
                parts.append(part)
                pos += len(part)
            return b"".join(parts)
        except OSError as e:
            raise _error(e, f"cannot read {kind}/{name}", self.root) from None
        finally:
            os.close(fd)

    def put(self, kind: str, name: str, data: bytes) -> None:
        path = self._path(kind, name)
        try:
            if os.path.exists(path):
                if os.path.getsize(path) >= len(data):
                    return
                # cut short by a crash before it was flushed, and named by no index: replace
                self._write(kind, path, data, overwrite=True)
                return
            self._write(kind, path, data, overwrite=False)
        except SourceError as e:
            if os.path.exists(path):  # another writer stored the same object meanwhile
                return
            raise RepositoryError(f"cannot store {kind}/{name}: {e.message}",
                                  source=self.root) from None
        except OSError as e:
            raise _error(e, f"cannot store {kind}/{name}", self.root) from None

    def _write(self, kind: str, path: str, data: bytes, overwrite: bool) -> None:
        if kind != "data":
            write_file(path, data, mode=0o444, overwrite=overwrite)
            return
        # a pack: written past the page cache (nothing reads it back soon), else the disk
        # starts writing it now; `flush` makes it durable before an index names it, so
        # packs do not wait for the disk's cache flush one by one
        with atomic_output(path, mode=0o444, overwrite=overwrite, sync=False) as fd:
            if not direct_io.write_new(fd, data):
                write_all(fd, data)
                if _SYNC_FILE_RANGE:
                    os.sync_file_range(fd, 0, 0, os.SYNC_FILE_RANGE_WRITE)
        with self._lock:
            self._unflushed.add(path)

    def flush(self) -> None:
        with self._lock:
            paths, self._unflushed = self._unflushed, set()
        try:
            for path in sorted(paths):
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            for path in {os.path.dirname(p): p for p in paths}.values():
                fsync_dir(path)  # each pack folder once: the renames into it
        except OSError as e:
            with self._lock:
                self._unflushed |= paths
            raise _error(e, "cannot flush packs to disk", self.root) from None

    def _folders(self, kind: str) -> list[str]:
        top = os.path.join(self.root, kind)
        if kind != "data":
            return [top]
        return [os.path.join(top, d) for d in sorted(os.listdir(top))] if os.path.isdir(top) \
            else [top]

    def remove_leftovers(self, kind: str, older_than: float = 0.0) -> int:
        if kind == "config":
            return 0  # written once, by init
        freed, cutoff = 0, time.time() - older_than
        for folder in self._folders(kind):
            try:
                with os.scandir(folder) as it:
                    temps = [e for e in it if e.name.startswith(".") and e.name.endswith(".tmp")]
                for entry in temps:
                    st = entry.stat(follow_symlinks=False)
                    if st.st_mtime <= cutoff:
                        os.unlink(entry.path)
                        freed += st.st_size
            except FileNotFoundError:
                continue  # a folder or temporary gone meanwhile
            except OSError as e:
                raise _error(e, f"cannot clean {kind}", folder) from None
        return freed

    def delete(self, kind: str, name: str) -> None:
        try:
            os.unlink(self._path(kind, name))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise _error(e, f"cannot delete {kind}/{name}", self.root) from None

    def exists(self, kind: str, name: str) -> bool:
        return os.path.exists(self._path(kind, name))
