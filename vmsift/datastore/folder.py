"""A plain folder as a datastore (an NFS datastore, or a copy of a VM folder)."""

from __future__ import annotations

import os

from ..errors import ChainError, SourceError
from ..source import ByteSource, FileSource
from .volume import Volume


class FolderVolume(Volume):
    """Files under ``root``; symbolic links that lead outside it are refused."""

    def __init__(self, root: str | os.PathLike):
        self.root = os.path.realpath(root)
        self.name = self.root
        if not os.path.isdir(self.root):
            raise SourceError("not a folder", source=self.root)

    def _host_path(self, path: str) -> str:
        full = os.path.realpath(os.path.join(self.root, path))
        if full != self.root and not full.startswith(self.root + os.sep):
            raise ChainError(f"{path!r} leads outside the datastore folder", source=self.root)
        return full

    def exists(self, path: str) -> bool:
        try:
            return os.path.isfile(self._host_path(path))
        except ChainError:
            return False

    def open(self, path: str) -> ByteSource:
        full = self._host_path(path)
        if not os.path.exists(full):
            raise SourceError("no such file", source=os.path.join(self.root, path))
        return FileSource(full)

    def listdir(self, path: str = "") -> list[str]:
        """Names inside the folder ``path`` (sorted)."""
        full = self._host_path(path)
        try:
            return sorted(os.listdir(full))
        except OSError as e:
            raise SourceError(f"cannot list: {e.strerror}", source=full) from None
