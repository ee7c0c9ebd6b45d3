"""Copy files out of a volume into a host folder, safely.

Names come from the evidence, so each is checked: no ``/``, no NUL, not ``.`` or ``..``.
Nothing already in the target is followed: files are created with ``O_EXCL|O_NOFOLLOW``,
folders with ``mkdir`` and checked to be real folders. Symbolic links are recreated as links
(never followed, never written through). File data is written sparse (holes skipped).
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field

from ..errors import SourceError, UnsupportedError
from .export import FILE_BLOCK, export_raw
from .volume import FileType, Volume, normalize


@dataclass
class ExtractStats:
    files: int = 0
    dirs: int = 0
    links: int = 0
    bytes_written: int = 0
    skipped: list[str] = field(default_factory=list)


def _safe_name(name: str, where: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise UnsupportedError(f"refusing the unsafe name {name!r}", source=where)
    return name


def _mkdir(path: str) -> None:
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        if os.path.islink(path) or not os.path.isdir(path):
            raise SourceError("exists and is not a folder (not followed)", source=path) \
                from None
    except OSError as e:
        raise SourceError(f"cannot create folder: {e.strerror}", source=path) from None


def _copy_file(volume: Volume, path: str, target: str, stats: ExtractStats) -> None:
    with volume.open(path) as src:
        # O_CREAT|O_EXCL: never overwrites, never follows a link; no fsync per file (like cp)
        out = export_raw(src, target, sync=False, block=FILE_BLOCK)
    stats.files += 1
    stats.bytes_written += out.written


def extract(volume: Volume, path: str, out_dir: str) -> ExtractStats:
    """Copy ``path`` (a file, or a folder and all below it) into ``out_dir``."""
    stats = ExtractStats()
    path = normalize(path)
    _mkdir(out_dir)
    top = volume.stat(path)
    name = _safe_name(posixpath.basename(path) or "root", path)
    _extract_one(volume, path, top.type, os.path.join(out_dir, name), stats)
    return stats


def _extract_one(volume: Volume, path: str, kind: FileType, target: str,
                 stats: ExtractStats) -> None:
    if kind is FileType.FILE:
        _copy_file(volume, path, target, stats)
    elif kind is FileType.SYMLINK:
        os.symlink(volume.readlink(path), target)
        stats.links += 1
    elif kind is FileType.DIR:
        _mkdir(target)
        stats.dirs += 1
        for folder, entries in volume.walk(path):
            base = os.path.join(target, os.path.relpath(folder or ".", path or "."))
            for entry in entries:
                src = posixpath.join(folder, entry.name)
                try:
                    dst = os.path.join(base, _safe_name(entry.name, src))
                except UnsupportedError as e:
                    stats.skipped.append(str(e))
                    continue
                if entry.type is FileType.DIR:
                    _mkdir(dst)
                    stats.dirs += 1
                elif entry.type in (FileType.FILE, FileType.SYMLINK):
                    _extract_one(volume, src, entry.type, dst, stats)
                else:
                    stats.skipped.append(f"{src}: special file, not extracted")
    else:
        stats.skipped.append(f"{path}: special file, not extracted")
