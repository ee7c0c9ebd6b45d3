"""A tar archive (an OVA, an Oracle VM template ``.tar``) as a read-only `Volume`: so `ds
ls|cat|extract|vms` and `mount` read an OVA as they read a datastore.

The headers are indexed once (`vmsift.formats.tar`); every regular member opens as a slice
of the archive, so nothing is extracted. Folders the archive does not list are implied by
the members' names. Hard links open as the member they name.
"""

from __future__ import annotations

import posixpath

from ..errors import ErrorKind, SourceError, UnsupportedError
from ..formats import tar
from ..report import Report, size_field
from ..source import ByteSource
from .volume import DirEntry, FileStat, FileType, Volume, normalize, not_a_file

KIND = "tar"


def probe(src: ByteSource) -> bool:
    """A tar archive (an OVA): a ustar header at the start."""
    return tar.sniff(src.read(0, tar.BLOCK))


def open_volume(sources: list[ByteSource]) -> TarVolume:
    """The archive as a volume (`vmsift.datastore.detect` tries it after VMFS and OCFS2)."""
    if len(sources) != 1:
        raise UnsupportedError(f"a tar archive is one file, got {len(sources)}",
                               source=sources[0].name if sources else None)
    return TarVolume(sources[0])


_TYPES = {"file": FileType.FILE, "dir": FileType.DIR, "symlink": FileType.SYMLINK,
          "hardlink": FileType.FILE, "other": FileType.OTHER}


class TarVolume(Volume):
    """The members of the tar archive ``src`` (which the volume owns and closes)."""

    def __init__(self, src: ByteSource):
        self.src = src
        self.name = src.name
        self.index = tar.index(src)
        self.warnings = list(self.index.warnings)
        self._members = self.index.by_name()
        self._dirs: dict[str, dict[str, tar.Member | None]] = {"": {}}
        for m in self.index.members:
            parts = m.name.split("/")
            for depth in range(len(parts)):
                parent = "/".join(parts[:depth])
                child = parts[depth]
                self._dirs.setdefault(parent, {})
                if depth < len(parts) - 1:
                    self._dirs.setdefault(posixpath.join(parent, child), {})
                    self._dirs[parent].setdefault(child, None)
                else:
                    self._dirs[parent][child] = m
                    if m.type == "dir":
                        self._dirs.setdefault(m.name, {})

    def info(self) -> Report:
        files = [m for m in self._members.values() if m.type == "file"]
        data = {"kind": "tar", "path": self.name, "size": self.src.size,
                "members": len(self.index.members),
                "data_bytes": sum(m.size for m in files)}
        return Report("tar", "tar archive (read in place)", data,
                      {"path": self.name, "size": size_field(self.src.size),
                       "members": data["members"]}, warnings=[str(w) for w in self.warnings])

    def _missing(self, path: str) -> SourceError:
        """NOT_FOUND for ``path``, or NOT_A_DIR when a folder on its way is not one (a
        file, or a link: links are not followed)."""
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in self._members and parent not in self._dirs:
                return SourceError("a part of the path is not a folder",
                                   source=f"{self.name}/{path}", kind=ErrorKind.NOT_A_DIR)
        return SourceError("no such member", source=f"{self.name}/{path}",
                           kind=ErrorKind.NOT_FOUND)

    def listdir(self, path: str = "", *, deleted: bool = False) -> list[DirEntry]:
        rel = normalize(path)
        if rel not in self._dirs:
            if rel in self._members:
                raise SourceError("not a folder", source=f"{self.name}/{rel}",
                                  kind=ErrorKind.NOT_A_DIR)
            raise self._missing(rel)
        out = []
        for child, m in self._dirs[rel].items():
            full = posixpath.join(rel, child)
            kind = FileType.DIR if full in self._dirs else _TYPES[m.type] if m else FileType.DIR
            out.append(DirEntry(child, kind, m.header_offset if m else full))
        return sorted(out, key=lambda e: e.name)

    def stat(self, path: str) -> FileStat:
        rel = normalize(path)
        m = self._members.get(rel)
        if rel in self._dirs:
            return FileStat(rel, FileType.DIR, 0, m.header_offset if m else rel,
                            mode=m.mode if m else 0o755, mtime=m.mtime if m else None)
        if m is None:
            raise self._missing(rel)
        target = self._link_target(m)
        size = target.size if target is not None else m.size
        return FileStat(rel, _TYPES[m.type], size, m.header_offset, 1, m.mode, mtime=m.mtime,
                        allocated=size,
                        symlink_target=m.linkname if m.type == "symlink" else None,
                        extra={"archive_offset": m.offset})

    def _link_target(self, m: tar.Member) -> tar.Member | None:
        if m.type != "hardlink":
            return None
        target = self._members.get(normalize(m.linkname))
        return target if target is not None and target.type == "file" else None

    def readlink(self, path: str) -> str:
        rel = normalize(path)
        m = self._members.get(rel)
        if m is None and rel not in self._dirs:
            raise self._missing(rel)
        if m is None or m.type != "symlink":
            raise SourceError("not a symbolic link", source=f"{self.name}/{path}",
                              kind=ErrorKind.NOT_A_LINK)
        return m.linkname

    def open(self, path: str) -> ByteSource:
        rel = normalize(path)
        m = self._members.get(rel)
        if m is None:
            if rel in self._dirs:
                raise not_a_file(FileType.DIR, "it", f"{self.name}/{rel}")
            raise self._missing(rel)
        if m.type == "hardlink":
            target = self._link_target(m)
            if target is None:
                raise SourceError(f"hard link to {m.linkname!r}, which is not a member",
                                  source=f"{self.name}/{rel}")
            m = target
        if m.type != "file":
            raise not_a_file(_TYPES[m.type], "it", f"{self.name}/{rel}")
        return tar.member_source(self.src, m, f"{self.name}/{rel}")

    def close(self) -> None:
        self.src.close()
