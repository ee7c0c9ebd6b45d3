"""`Volume`: a read-only file tree (a plain folder, a VMFS or OCFS2 image) that VMs live on.

Paths inside a volume are POSIX-style, relative to its root ("" is the root). Names read from
files (descriptor extents, parent hints, vmx disk paths) are resolved with `Volume.resolve`,
which refuses anything that would leave the volume. Lookups never follow symbolic links;
`readlink` tells where one points.

A volume implements `info`, `listdir`, `stat`, `open` and `readlink`; `exists`, `walk` and
`resolve` are built on those.
"""

from __future__ import annotations

import enum
import posixpath
import re
import stat as stat_mod
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import ChainError, VmsiftError
from ..report import Report
from ..source import ByteSource

_ESX_ABSOLUTE = re.compile(r"^/vmfs/volumes/[^/]+/(.+)$")
MAX_DEPTH = 64  # directory depth `walk` descends to; deeper means a loop or damage
# folder entries a volume keeps decoded (about 200 bytes each): bounds memory however many
# big folders a (hostile) image has; one folder larger than this is still kept alone
CACHED_DIR_ENTRIES = 200_000


class FileType(enum.Enum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    OTHER = "other"  # devices, sockets, VMFS RDM mapping files and other special files

    @classmethod
    def from_mode(cls, mode: int) -> FileType:
        """The type of a POSIX ``st_mode``."""
        if stat_mod.S_ISREG(mode):
            return cls.FILE
        if stat_mod.S_ISDIR(mode):
            return cls.DIR
        if stat_mod.S_ISLNK(mode):
            return cls.SYMLINK
        return cls.OTHER


class LruCache(OrderedDict):
    """A bounded cache of decoded metadata (inodes, directories, pointer blocks): at most
    ``limit`` values, or with ``weight`` (folders: their entry count) values weighing at most
    ``limit`` together; the newest value stays even when it alone weighs more. Safe to
    share between threads (FUSE mounts read several files at once)."""

    def __init__(self, limit: int, weight: Callable[[Any], int] | None = None):
        super().__init__()
        self.limit = limit
        self.weight = weight
        self.total = 0
        self._lock = threading.RLock()

    @classmethod
    def for_folders(cls) -> LruCache:
        """A cache of decoded folders (entry lists or name indexes), `CACHED_DIR_ENTRIES`
        entries in all (each folder counts one more, so empty ones are bounded too)."""
        return cls(CACHED_DIR_ENTRIES, lambda entries: len(entries) + 1)

    def _weigh(self, value) -> int:
        return self.weight(value) if self.weight else 1

    def put(self, key, value):
        with self._lock:
            if key in self:
                self.total -= self._weigh(self[key])
            self[key] = value
            self.total += self._weigh(value)
            self.move_to_end(key)
            while self.total > self.limit and len(self) > 1:
                self.total -= self._weigh(self.popitem(last=False)[1])
            return value

    def clear(self) -> None:
        with self._lock:
            super().clear()
            self.total = 0

    def get_or(self, key, make):
        """The cached value of ``key``, or ``make()`` stored under it."""
        with self._lock:
            if key in self:
                self.move_to_end(key)
                return self[key]
        return self.put(key, make())


@dataclass
class DirEntry:
    """One name in a directory. ``deleted`` entries are recovered, not live."""

    name: str
    type: FileType
    inode: int | str | None = None
    deleted: bool = False


@dataclass
class FileStat:
    """What a volume knows of one file; ``extra`` holds format-specific facts (VMFS lock
    holder, OCFS2 flags, refcount tree ...)."""

    path: str
    type: FileType
    size: int
    inode: int | str | None = None
    nlink: int | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    mtime: float | None = None
    ctime: float | None = None
    atime: float | None = None
    allocated: int | None = None  # bytes the file takes on the volume, where known
    symlink_target: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("path", "size", "inode", "nlink", "mode", "uid", "gid",
                                           "mtime", "ctime", "atime", "allocated",
                                           "symlink_target")}
        return {**d, "type": self.type.value, "extra": self.extra}


def normalize(path: str) -> str:
    """The canonical form of a volume path ("" for the root); ``..`` may not climb out."""
    path = posixpath.normpath("/" + path.strip("/")) if path.strip("/") else "/"
    return path.lstrip("/")


class Volume:
    """Interface of a datastore file tree."""

    name: str = "<volume>"

    def info(self) -> Report:
        """The volume's metadata (kind, UUIDs, label, sizes, heartbeats ...)."""
        raise NotImplementedError

    def listdir(self, path: str = "", *, deleted: bool = False) -> list[DirEntry]:
        """The entries of the directory ``path`` (without ``.`` and ``..``), sorted by name;
        with ``deleted``, recoverable deleted entries too."""
        raise NotImplementedError

    def stat(self, path: str) -> FileStat:
        """Facts of ``path`` itself (a symbolic link is not followed)."""
        raise NotImplementedError

    def open(self, path: str) -> ByteSource:
        """The contents of the regular file ``path``, with its allocation map."""
        raise NotImplementedError

    def readlink(self, path: str) -> str:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def exists(self, path: str) -> bool:
        """True when ``path`` is a regular file."""
        try:
            return self.stat(path).type is FileType.FILE
        except VmsiftError:
            return False

    def walk(self, path: str = "", *, deleted: bool = False,
             problems: list[str] | None = None) -> Iterator[tuple[str, list[DirEntry]]]:
        """(directory, entries) for ``path`` and every directory below it, top down; each
        directory once (by inode), at most `MAX_DEPTH` deep. With ``problems``, a directory
        that cannot be read is noted there and skipped instead of ending the walk."""
        seen: set = set()
        stack = [(normalize(path), 0)]
        while stack:
            current, depth = stack.pop()
            try:
                entries = self.listdir(current, deleted=deleted)
            except VmsiftError as e:
                if problems is None or current == normalize(path):
                    raise
                problems.append(f"folder {current!r} skipped: {e}")
                continue
            yield current, entries
            if depth >= MAX_DEPTH:
                continue
            for entry in reversed(entries):
                if entry.type is FileType.DIR and not entry.deleted:
                    key = entry.inode if entry.inode is not None else posixpath.join(
                        current, entry.name)
                    if key not in seen:
                        seen.add(key)
                        stack.append((posixpath.join(current, entry.name), depth + 1))

    def resolve(self, base_dir: str, ref: str) -> str:
        """The volume path a file at ``base_dir`` means by ``ref``.

        Relative names are joined to ``base_dir``. Absolute ESXi names
        (``/vmfs/volumes/<datastore>/<dir>/<file>``) are tried as ``<dir>/<file>`` from the
        root, then as ``<file>`` beside the referring file (a copied VM folder).
        """
        if ref.startswith("/"):
            candidates = []
            if m := _ESX_ABSOLUTE.match(ref):
                candidates.append(posixpath.normpath(m[1]))
            candidates.append(posixpath.join(base_dir, posixpath.basename(ref)))
            for candidate in candidates:
                if not candidate.startswith("../") and self.exists(candidate):
                    return candidate.lstrip("/") or "."
            raise ChainError(f"{ref!r} is not on this datastore (looked for "
                             f"{' and '.join(candidates)})", source=self.name)
        path = posixpath.normpath(posixpath.join(base_dir, ref))
        if path == ".." or path.startswith("../") or path.startswith("/"):
            raise ChainError(f"{ref!r} (from {base_dir or '.'}) leaves the datastore",
                             source=self.name)
        return path
