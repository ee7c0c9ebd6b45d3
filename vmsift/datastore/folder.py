"""A plain folder as a datastore (an NFS datastore, or a copy of a VM folder).

Symbolic links are listed and never followed, as on every volume: each folder of a path is
opened relative to the one before with ``O_NOFOLLOW`` (a link there is not a folder), and a
file is opened with ``O_NOFOLLOW`` after `lstat` says it is regular. So no name can reach
outside the folder, and a link swapped in after the check is refused by the kernel.
"""

from __future__ import annotations

import contextlib
import os
import stat as stat_mod
from collections.abc import Iterator

from ..errors import ErrorKind, SourceError
from ..report import Report, size_field
from ..source import ByteSource, FileSource, special_file_error
from .volume import DirEntry, FileStat, FileType, Volume, normalize, not_a_file

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class FolderVolume(Volume):
    """Files under ``root`` (the folder itself may be reached through a link)."""

    def __init__(self, root: str | os.PathLike):
        self.root = os.path.realpath(root)
        self.name = self.root
        if not os.path.isdir(self.root):
            raise SourceError("not a folder", source=self.root, kind=ErrorKind.NOT_A_DIR)

    def _error(self, what: str, path: str, e: OSError) -> SourceError:
        kind = ErrorKind.from_errno(e.errno)
        message = {ErrorKind.NOT_FOUND: "no such file",
                   ErrorKind.NOT_A_DIR: "a part of the path is not a folder",
                   ErrorKind.IS_A_LINK: "a part of the path is a symbolic link"}.get(kind, "")
        if kind is ErrorKind.IS_A_LINK:  # a link where a folder was needed
            kind = ErrorKind.NOT_A_DIR
        return SourceError(f"cannot {what}: {message or e.strerror}",
                           source=os.path.join(self.root, path), kind=kind)

    @contextlib.contextmanager
    def _parent(self, path: str, what: str) -> Iterator[tuple[int, str]]:
        """(fd of the folder holding ``path``, its last name); every folder on the way is
        opened without following links. The root is ``(fd of root, ".")``."""
        rel = normalize(path)
        parts = rel.split("/") if rel else []
        leaf = parts.pop() if parts else "."
        try:
            fd = os.open(self.root, _DIR_FLAGS)
        except OSError as e:
            raise SourceError(f"cannot {what}: {e.strerror}", source=self.root,
                              kind=ErrorKind.from_errno(e.errno)) from None
        try:
            for i, part in enumerate(parts):
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    raise self._error(what, "/".join(parts[:i + 1]), e) from None
                os.close(fd)
                fd = child
            yield fd, leaf
        finally:
            os.close(fd)

    def info(self) -> Report:
        usage = os.statvfs(self.root)
        data = {"kind": "folder", "path": self.root,
                "capacity": usage.f_blocks * usage.f_frsize,
                "free": usage.f_bavail * usage.f_frsize}
        return Report("folder", "plain folder (NFS datastore or a copy)", data,
                      {"path": self.root, "capacity": size_field(data["capacity"]),
                       "free": size_field(data["free"])})

    def listdir(self, path: str = "", *, deleted: bool = False) -> list[DirEntry]:
        rel = normalize(path)
        with self._parent(rel, "list") as (parent, leaf):
            try:
                fd = os.open(leaf, _DIR_FLAGS, dir_fd=parent)
            except OSError as e:
                raise self._error("list", rel, e) from None
            try:
                with os.scandir(fd) as it:
                    entries = [DirEntry(e.name, FileType.from_mode(
                        e.stat(follow_symlinks=False).st_mode), e.inode()) for e in it]
            except OSError as e:
                raise self._error("list", rel, e) from None
            finally:
                os.close(fd)
        return sorted(entries, key=lambda e: e.name)

    def _lstat(self, path: str, what: str) -> tuple[os.stat_result, str | None]:
        """The host lstat of ``path`` and, for a link, its target."""
        rel = normalize(path)
        with self._parent(rel, what) as (parent, leaf):
            try:
                st = os.lstat(leaf, dir_fd=parent)
                target = os.readlink(leaf, dir_fd=parent) if stat_mod.S_ISLNK(st.st_mode) \
                    else None
            except OSError as e:
                raise self._error(what, rel, e) from None
        return st, target

    def stat(self, path: str) -> FileStat:
        st, target = self._lstat(path, "stat")
        kind = FileType.from_mode(st.st_mode)
        return FileStat(normalize(path), kind, st.st_size, st.st_ino, st.st_nlink,
                        stat_mod.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime,
                        st.st_ctime, st.st_atime, st.st_blocks * 512, target,
                        st_mode=st.st_mode, rdev=st.st_rdev)

    def readlink(self, path: str) -> str:
        st, target = self._lstat(path, "read link")
        if target is None:
            raise SourceError("not a symbolic link", source=os.path.join(self.root,
                                                                         normalize(path)),
                              kind=ErrorKind.NOT_A_LINK)
        return target

    def exists(self, path: str) -> bool:
        try:
            return stat_mod.S_ISREG(self._lstat(path, "stat")[0].st_mode)
        except SourceError:
            return False

    def open(self, path: str) -> ByteSource:
        rel = normalize(path)
        full = os.path.join(self.root, rel)
        with self._parent(rel, "open") as (parent, leaf):
            try:
                st = os.lstat(leaf, dir_fd=parent)
                kind = FileType.from_mode(st.st_mode)
                if kind is FileType.OTHER:
                    raise special_file_error(st.st_mode, full)
                if kind is not FileType.FILE:
                    raise not_a_file(kind, "it", full)
                fd = os.open(leaf, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                             dir_fd=parent)
            except OSError as e:
                raise self._error("open", rel, e) from None
        return FileSource.from_fd(fd, full)
