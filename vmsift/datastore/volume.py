"""`Volume`: a read-only file tree (a plain folder, a VMFS or OCFS2 image) that VMs live on.

Paths inside a volume are POSIX-style, relative to its root ("" is the root). Names read from
files (descriptor extents, parent hints, vmx disk paths) are resolved with `Volume.resolve`,
which refuses anything that would leave the volume. Lookups never follow symbolic links, on
every volume: a link in the middle of a path is not a folder, and opening one is an error of
kind `ErrorKind.IS_A_LINK`; `readlink` tells where one points.

A volume implements `info`, `listdir`, `stat`, `lookup`, `open` and `readlink`; `exists`,
`walk` and `resolve` are built on those.

Two stats: `lookup(path)` is the cheap one (what a file system asks on every call: type,
``st_mode`` with its type bits, size, inode, links, owner, times, ``rdev``); it decodes no
locks, RDM facts, refcounts or checksums, and leaves ``extra`` empty and ``symlink_target``
unread. `stat(path)` adds all of those (``ds stat``, ``ds ls -l``).

Lookups fail with `SourceError`s whose `kind` says why: NOT_FOUND (no such name), NOT_A_DIR
(a component, or what listdir was given, is no folder), IS_A_DIR (open of a folder),
IS_A_LINK (open of a symbolic link), NOT_A_LINK (readlink of something else), NOT_A_FILE
(open of a device, socket or fifo). A VMFS raw device mapping is type `FileType.RDM` (a
regular file to ``st_mode``); opening it is an `UnsupportedError` (its data is on the LUN).
Damage is a `FormatError` (kind DAMAGED).
"""

from __future__ import annotations

import enum
import posixpath
import re
import stat as stat_mod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..cache import LruCache  # noqa: F401 - its old home: callers may still import it here
from ..errors import ChainError, ErrorKind, Problem, SourceError, VmsiftError
from ..report import Report
from ..source import ByteSource

_ESX_ABSOLUTE = re.compile(r"^/vmfs/volumes/[^/]+/(.+)$")
MAX_DEPTH = 64  # directory depth `walk` descends to; deeper means a loop or damage


class FileType(enum.Enum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    RDM = "rdm"      # a VMFS raw device mapping file: its data is on a LUN elsewhere
    OTHER = "other"  # devices, sockets, fifos and other special files

    @property
    def ifmt(self) -> int:
        """The ``st_mode`` type bits of this type (0 for OTHER: the mode itself tells)."""
        return _IFMT[self]

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


_IFMT = {FileType.FILE: stat_mod.S_IFREG, FileType.DIR: stat_mod.S_IFDIR,
         FileType.SYMLINK: stat_mod.S_IFLNK, FileType.RDM: stat_mod.S_IFREG, FileType.OTHER: 0}


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
    holder, OCFS2 flags, refcount tree ...). ``mode`` is the permission bits, ``st_mode`` the
    full POSIX mode (type bits included; made from ``type`` and ``mode`` when not given),
    ``rdev`` the device number of a device file."""

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
    st_mode: int = 0
    rdev: int = 0

    def __post_init__(self) -> None:
        if not self.st_mode:
            self.st_mode = self.type.ifmt | (self.mode or 0)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("path", "size", "inode", "nlink", "mode", "uid", "gid",
                                           "mtime", "ctime", "atime", "allocated",
                                           "symlink_target")}
        return {**d, "type": self.type.value, "extra": self.extra}


_REFUSED = {FileType.DIR: (ErrorKind.IS_A_DIR, "is a folder, not a regular file"),
            FileType.SYMLINK: (ErrorKind.IS_A_LINK, "is a symbolic link, not a regular file "
                                                    "(links are not followed)")}


def not_a_file(kind: FileType, what: str, source: str) -> SourceError:
    """The error for opening ``what`` (of type ``kind``, not FILE) as a regular file."""
    error, why = _REFUSED.get(kind, (ErrorKind.NOT_A_FILE, "is not a regular file"))
    return SourceError(f"{what} {why}", source=source, kind=error)


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
        """All facts of ``path`` itself (a symbolic link is not followed)."""
        raise NotImplementedError

    def lookup(self, path: str) -> FileStat:
        """The cheap facts of ``path`` (see the module docstring): by default `stat`."""
        return self.stat(path)

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
             problems: list[Problem] | None = None) -> Iterator[tuple[str, list[DirEntry]]]:
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
                problems.append(Problem.of(e, f"folder {current!r} skipped: "))
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
