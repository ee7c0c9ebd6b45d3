"""Copy files out of a volume into a host folder, safely.

Names come from the evidence, so each is checked: no ``/``, no NUL, not ``.`` or ``..``.
Nothing already in the target is followed: files are created with ``O_EXCL|O_NOFOLLOW``,
folders with ``mkdir`` and checked to be real folders. Symbolic links are recreated as links
(never followed, never written through). File data is written sparse (holes skipped).

Extraction goes on past what cannot be read (a damaged file, a folder, data on a missing
device of a spanned volume) or written (a file larger than the output file system allows):
each is named in ``failed``. A full or read-only output ends it.
"""

from __future__ import annotations

import errno
import os
import posixpath
from dataclasses import dataclass, field

from ..errors import SourceError, UnsupportedError, VmsiftError
from .export import FILE_BLOCK, export_raw
from .volume import FileType, Volume, normalize


@dataclass
class ExtractStats:
    files: int = 0
    dirs: int = 0
    links: int = 0
    bytes_written: int = 0
    skipped: list[str] = field(default_factory=list)  # special files and unsafe names
    failed: list[str] = field(default_factory=list)  # what could not be read or written


# output errors after which no other file can be written either
_OUTPUT_FATAL = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}


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
    target = os.path.join(out_dir, _safe_name(posixpath.basename(path) or "root", path))
    if top.type is FileType.DIR:
        _extract_tree(volume, path, target, stats)
    else:
        _extract_one(volume, path, top.type, target, stats)
    return stats


def _extract_one(volume: Volume, path: str, kind: FileType, target: str,
                 stats: ExtractStats) -> None:
    if kind is FileType.FILE:
        _copy_file(volume, path, target, stats)
    elif kind is FileType.SYMLINK:
        try:
            os.symlink(volume.readlink(path), target)
        except OSError as e:
            raise SourceError(f"cannot create link: {e.strerror}", source=target) from e
        stats.links += 1
    else:
        stats.skipped.append(f"{path}: special file, not extracted")


def _extract_tree(volume: Volume, path: str, target: str, stats: ExtractStats) -> None:
    _mkdir(target)
    stats.dirs += 1
    problems: list[str] = []
    for folder, entries in volume.walk(path, problems=problems):
        inside = posixpath.relpath(folder or ".", path or ".")
        base = os.path.normpath(os.path.join(target, inside))
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
                continue
            try:
                _extract_one(volume, src, entry.type, dst, stats)
            except VmsiftError as e:
                cause = e.__cause__
                if isinstance(cause, OSError) and cause.errno in _OUTPUT_FATAL:
                    raise
                stats.failed.append(f"{src}: {e}")
    stats.failed += problems
