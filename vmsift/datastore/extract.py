"""Copy files out of a volume into a host folder, safely.

Names come from the evidence, so each is checked: no ``/``, no NUL, not ``.`` or ``..``.
Nothing already in the target is followed: files are created with ``O_EXCL|O_NOFOLLOW``,
folders with ``mkdir`` and checked to be real folders. Symbolic links are recreated as links
(never followed, never written through). File data is written sparse (holes skipped).

Each file, folder and link keeps the source's modification and access times, and files and
folders its permission bits (set-user-ID and set-group-ID dropped); owners are not changed.
Extracting the volume's root puts its contents straight into the target folder, as
``cp -r``, ``tar -C`` and ``debugfs rdump`` do.

Extraction goes on past what cannot be read (a damaged file, a folder, data on a missing
device of a spanned volume) or written (a file larger than the output file system allows):
each is named in ``failed``. A full or read-only output ends it.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat as stat_mod
from dataclasses import dataclass, field

from ..errors import SourceError, UnsupportedError, VmsiftError
from .export import FILE_BLOCK, export_raw
from .volume import FileStat, FileType, Volume, normalize


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


_SET_ID = stat_mod.S_ISUID | stat_mod.S_ISGID


def _times(st: FileStat) -> tuple[float, float] | None:
    """(atime, mtime) for `os.utime`; one stands in for the other where only one is known."""
    if st.mtime is None and st.atime is None:
        return None
    return (st.atime if st.atime is not None else st.mtime,
            st.mtime if st.mtime is not None else st.atime)


def _keep(target: int | str, st: FileStat, link: bool = False) -> None:
    """Give ``target`` (an open descriptor or a path) the mode bits and times of ``st``."""
    try:
        if st.mode is not None and not link:
            os.chmod(target, stat_mod.S_IMODE(st.mode) & ~_SET_ID)
        if times := _times(st):
            os.utime(target, times, follow_symlinks=not link)
    except OSError as e:
        raise SourceError(f"cannot set mode or times: {e.strerror}", source=str(target)) from e


def _copy_file(volume: Volume, path: str, target: str, stats: ExtractStats) -> None:
    st = volume.stat(path)
    with volume.open(path) as src:
        # O_CREAT|O_EXCL: never overwrites, never follows a link; no fsync per file (like cp)
        out = export_raw(src, target, sync=False, block=FILE_BLOCK,
                         finish=lambda fd: _keep(fd, st))
    stats.files += 1
    stats.bytes_written += out.written


def _volume_path(path: str) -> str:
    """``path`` normalised; OCFS2's ``//`` (its system directory) is kept."""
    return "//" + normalize(path[2:]) if path.startswith("//") else normalize(path)


def extract(volume: Volume, path: str, out_dir: str) -> ExtractStats:
    """Copy ``path`` (a file, or a folder and all below it) into ``out_dir``; the contents of
    the root go into ``out_dir`` itself."""
    stats = ExtractStats()
    path = _volume_path(path)
    _mkdir(out_dir)
    top = volume.stat(path)
    name = posixpath.basename(path)
    if top.type is FileType.DIR:
        target = os.path.join(out_dir, _safe_name(name, path)) if name else out_dir
        _extract_tree(volume, path, target, stats, keep_top=bool(name))
    else:
        _extract_one(volume, path, top.type, os.path.join(out_dir, _safe_name(name, path)),
                     stats)
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
        _keep(target, volume.stat(path), link=True)
        stats.links += 1
    else:
        stats.skipped.append(f"{path}: special file, not extracted")


def _extract_tree(volume: Volume, path: str, target: str, stats: ExtractStats,
                  keep_top: bool = True) -> None:
    """Copy the folder ``path`` to ``target``; folders get their mode and times last (writing
    inside a folder changes its time; a read-only one could not be filled)."""
    _mkdir(target)
    stats.dirs += 1
    folders: list[tuple[str, str]] = [(target, path)] if keep_top else []
    try:
        _fill_tree(volume, path, target, stats, folders)
    finally:
        for dst, src in reversed(folders):
            try:
                _keep(dst, volume.stat(src))
            except VmsiftError as e:
                stats.failed.append(f"{src}: {e}")


def _fill_tree(volume: Volume, path: str, target: str, stats: ExtractStats,
               folders: list[tuple[str, str]]) -> None:
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
                folders.append((dst, src))
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
