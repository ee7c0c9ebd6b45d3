"""A plain folder as a datastore (an NFS datastore, or a copy of a VM folder)."""

from __future__ import annotations

import os
import stat as stat_mod

from ..errors import ChainError, SourceError
from ..report import Report, size_field
from ..source import ByteSource, FileSource
from .volume import DirEntry, FileStat, FileType, Volume, normalize


class FolderVolume(Volume):
    """Files under ``root``. Symbolic links are listed, never followed: a name whose host
    path leads outside the folder is refused."""

    def __init__(self, root: str | os.PathLike):
        self.root = os.path.realpath(root)
        self.name = self.root
        if not os.path.isdir(self.root):
            raise SourceError("not a folder", source=self.root)

    def _host_path(self, path: str, *, follow_last: bool = True) -> str:
        rel = normalize(path)
        parent, leaf = os.path.split(os.path.join(self.root, rel))
        full = os.path.join(os.path.realpath(parent), leaf) if not follow_last else \
            os.path.realpath(os.path.join(self.root, rel))
        if full != self.root and not full.startswith(self.root + os.sep):
            raise ChainError(f"{path!r} leads outside the datastore folder", source=self.root)
        return full

    def info(self) -> Report:
        usage = os.statvfs(self.root)
        data = {"kind": "folder", "path": self.root,
                "capacity": usage.f_blocks * usage.f_frsize,
                "free": usage.f_bavail * usage.f_frsize}
        return Report("folder", "plain folder (NFS datastore or a copy)", data,
                      {"path": self.root, "capacity": size_field(data["capacity"]),
                       "free": size_field(data["free"])})

    def listdir(self, path: str = "", *, deleted: bool = False) -> list[DirEntry]:
        full = self._host_path(path)
        try:
            with os.scandir(full) as it:
                entries = [DirEntry(e.name, FileType.from_mode(e.stat(follow_symlinks=False).st_mode),
                                    e.inode()) for e in it]
        except OSError as e:
            raise SourceError(f"cannot list: {e.strerror}", source=full) from None
        return sorted(entries, key=lambda e: e.name)

    def stat(self, path: str) -> FileStat:
        full = self._host_path(path, follow_last=False)
        try:
            st = os.lstat(full)
        except OSError as e:
            raise SourceError(f"cannot stat: {e.strerror}", source=full) from None
        kind = FileType.from_mode(st.st_mode)
        return FileStat(normalize(path), kind, st.st_size, st.st_ino, st.st_nlink,
                        stat_mod.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime,
                        st.st_ctime, st.st_atime, st.st_blocks * 512,
                        os.readlink(full) if kind is FileType.SYMLINK else None)

    def readlink(self, path: str) -> str:
        full = self._host_path(path, follow_last=False)
        try:
            return os.readlink(full)
        except OSError as e:
            raise SourceError(f"not a symbolic link: {e.strerror}", source=full) from None

    def exists(self, path: str) -> bool:
        try:
            return os.path.isfile(self._host_path(path))
        except ChainError:
            return False

    def open(self, path: str) -> ByteSource:
        full = self._host_path(path)
        if not os.path.exists(full):
            raise SourceError("no such file", source=os.path.join(self.root, normalize(path)))
        return FileSource(full)
