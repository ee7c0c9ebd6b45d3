"""OCFS2 volumes (Oracle VM repositories and server-pool file systems), read-only.

`Ocfs2Volume` reads the superblock, inodes, extent trees of any depth, inline / block /
indexed directories, symlinks and refcount trees, and reports the slot map, heartbeat region,
journals, orphan dirs and truncate logs. Paths are relative to the root directory; a path
starting with ``//`` is looked up in the system directory instead (as debugfs.ocfs2 does:
``//global_bitmap``, ``//journal:0000``), and `Ocfs2Volume.system_volume` gives a volume whose
root is the system directory (so ``walk`` works there too).

Damage is never fatal where a best effort is safe: bad metaecc checksums, fs-generation
mismatches, overlapping extents and bad directory entries are collected in
``Ocfs2Volume.warnings`` (and shown by ``info()``); blocks past the end of the image, bad
signatures and loops in extent trees are `FormatError`s naming the image and offset.
"""

from __future__ import annotations

import bisect
import re
import stat as stat_mod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..cache import LruCache
from ..errors import (ErrorKind, FormatError, LimitError, Problem, SourceError, TruncatedError,
                      UnsupportedError, VmsiftError, check_limit)
from ..formats.ocfs2 import structs as S
from ..formats.ocfs2.checksum import metaecc_crc, stored_crc
from ..formats.ocfs2.cluster import parse_heartbeat, parse_slot_map
from ..formats.ocfs2.flags import (JOURNAL_DIRTY, STACK_GLOBAL_HEARTBEAT,
                                   DynFeature, ExtentFlag, Incompat, InodeFlag, flag_names)
from ..formats.ocfs2.records import (BLOCK_SIZES, SUPERBLOCK_BLKNO, Inode, RawDirEntry,
                                     Superblock, iter_dirents, parse_extent_list,
                                     parse_inode, parse_superblock)
from ..report import Report, Table, size_field
from ..source import Alloc, ByteSource, Run, clip, merge_runs
from .volume import DirEntry, FileStat, FileType, Volume, normalize, not_a_file

KIND = "ocfs2"
MAX_TREE_DEPTH = 8               # real trees stay below 6
MAX_EXTENT_BLOCKS = 1 << 20      # extent blocks visited for one file
MAX_EXTENTS = 1 << 22            # leaf records of one file (64 MiB of tuples at worst)
MAX_DIR_BYTES = 1 << 30          # a directory larger than this is damage
MAX_WARNINGS = 1000
MAX_PATH_PARTS = 256
READ_CHUNK = 16 << 20
BACKUP_SUPERBLOCKS = tuple(1 << (30 + 2 * i) for i in range(6))  # 1G, 4G ... 1T
INODE_CACHE = 4096
EXTENT_CACHE = 64
SHOWN_REFCOUNT_RECORDS = 1000
# inode flags whose inodes carry more facts (checked as one int: enum `&` is slow per name)
_SPECIAL_FLAGS = int(InodeFlag.ORPHANED | InodeFlag.JOURNAL | InodeFlag.BITMAP | InodeFlag.CHAIN
                     | InodeFlag.LOCAL_ALLOC | InodeFlag.DEALLOC | InodeFlag.SUPER_BLOCK)


def _probe_superblock(src: ByteSource) -> tuple[int, bytes] | None:
    for bs in BLOCK_SIZES:
        head = src.read(SUPERBLOCK_BLKNO * bs, bs)
        if len(head) == bs and head[:8] == S.SUPERBLOCK_SIGNATURE:
            return bs, head
    return None


def probe(src: ByteSource) -> bool:
    """True when ``src`` holds an OCFS2 superblock at block 2 (for a 512 B-4 KiB block
    size) or at the first backup position (1 GiB)."""
    try:
        if _probe_superblock(src):
            return True
        return src.read(BACKUP_SUPERBLOCKS[0], 8) == S.SUPERBLOCK_SIGNATURE
    except Exception:  # noqa: BLE001 - probing never raises
        return False


def open_volume(sources: list[ByteSource]) -> Ocfs2Volume:
    """Open an OCFS2 volume (one device: OCFS2 does not span)."""
    if len(sources) != 1:
        raise UnsupportedError(f"an OCFS2 volume lives on one device, got {len(sources)}",
                               source=sources[0].name if sources else None)
    return Ocfs2Volume(sources[0])


@dataclass
class Extent:
    """One leaf extent of a file, in bytes."""

    offset: int           # in the file
    length: int
    physical: int         # byte offset in the volume
    flags: int

    @property
    def kind(self) -> Alloc:
        return Alloc.ZERO if self.flags & ExtentFlag.UNWRITTEN else Alloc.DATA


_DIRENT_FILETYPE = {1: FileType.FILE, 2: FileType.DIR, 7: FileType.SYMLINK}


class Ocfs2File(ByteSource):
    """The bytes of one OCFS2 file; `extents` comes from the extent tree alone (DATA,
    ZERO for unwritten extents, HOLE for unmapped clusters)."""

    def __init__(self, volume: Ocfs2Volume, inode: Inode, name: str):
        self.volume = volume
        self.inode = inode
        self.name = name
        self.size = inode.size
        self._inline: bytes | None = None
        if inode.is_inline:
            self._inline = volume._inline_bytes(inode)
            self._map: list[Extent] = []
        else:
            self._map = volume.extent_map(inode)
        self._starts = [e.offset for e in self._map]

    def _runs(self, start: int, end: int) -> Iterator[tuple[int, int, Alloc, int | None]]:
        """(offset, length, kind, physical) covering [start, end)."""
        if self._inline is not None:
            if end > start:
                yield start, end - start, Alloc.DATA, None
            return
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        pos = start
        while pos < end:
            if i >= len(self._map) or self._map[i].offset >= end:
                yield pos, end - pos, Alloc.HOLE, None
                return
            e = self._map[i]
            if e.offset > pos:
                yield pos, e.offset - pos, Alloc.HOLE, None
                pos = e.offset
            stop = min(end, e.offset + e.length)
            if stop > pos:
                yield pos, stop - pos, e.kind, e.physical + (pos - e.offset)
                pos = stop
            i += 1

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Run]:
        start, end = clip(self.size, offset, length)
        return merge_runs(Run(o, n, k) for o, n, k, _ in self._runs(start, end))

    def physical_runs(self, offset: int = 0, length: int | None = None
                      ) -> Iterator[tuple[int, int, Alloc, int | None]]:
        """(file offset, length, kind, volume byte offset) of each piece of the file."""
        start, end = clip(self.size, offset, length)
        return self._runs(start, end)

    def prefetch(self, offset: int, length: int) -> None:
        for _, n, kind, phys in self._runs(*clip(self.size, offset, length)):
            if kind is Alloc.DATA and phys is not None:
                self.volume.src.prefetch(phys, n)

    def read(self, offset: int, length: int) -> bytes:
        start, end = clip(self.size, offset, length)
        if self._inline is not None:
            return self._inline[start:end]
        out = []
        pending: list[int] = []   # [physical, length] of a contiguous read being gathered
        for _, n, kind, phys in self._runs(start, end):
            if kind is Alloc.DATA:
                if pending and pending[0] + pending[1] == phys and pending[1] < READ_CHUNK:
                    pending[1] += n
                    continue
                if pending:
                    out.append(self.volume._read_data(pending[0], pending[1], self.name))
                pending = [phys, n]
            else:
                if pending:
                    out.append(self.volume._read_data(pending[0], pending[1], self.name))
                    pending = []
                out.append(bytes(n))
        if pending:
            out.append(self.volume._read_data(pending[0], pending[1], self.name))
        return b"".join(out)


_FREE_BITS = re.compile("0+")  # runs of clear bits of a bitmap written as text


class Ocfs2Volume(Volume):
    """An OCFS2 volume on ``src`` (read-only)."""

    def __init__(self, src: ByteSource, *, _shared: Ocfs2Volume | None = None,
                 _root: int | None = None):
        self.src = src
        self.name = src.name
        if _shared is not None:   # a view of the same volume with another root
            self.__dict__.update({k: v for k, v in _shared.__dict__.items()})
            self.root_blkno = _root
            return
        self.warnings: list[Problem] = []
        found = _probe_superblock(src)
        if found is None:
            found = self._backup_superblock()
        if found is None:
            raise FormatError("no OCFS2 superblock (looked at block 2 for block sizes "
                              "512-4096 and at the backup positions)", source=src.name,
                              offset=0)
        bs, block = found
        self.sb: Superblock = parse_superblock(block, bs, src.name, SUPERBLOCK_BLKNO * bs)
        self.block_size = bs
        self.cluster_size = self.sb.cluster_size
        self.metaecc = self.sb.has(Incompat.META_ECC)
        self.dir_trailers = self.sb.has(Incompat.META_ECC) or self.sb.has(Incompat.INDEXED_DIRS)
        self.volume_bytes = self.sb.clusters * self.cluster_size
        self.block_count = max(self.volume_bytes // bs, 3)
        self.root_blkno = self.sb.root_blkno
        self._inodes = LruCache(INODE_CACHE)
        self._extent_maps = LruCache(EXTENT_CACHE)
        self._dirs = LruCache.for_folders()
        self._names = LruCache.for_folders()
        self._check(block, S.INODE_CHECK, "superblock", self.sb.blkno)
        if src.size < self.volume_bytes:
            self.warn(f"{src.name}: image is {src.size} bytes, the volume "
                      f"{self.volume_bytes}: truncated")
        unknown = self.sb.feature_incompat & ~sum(f.value for f in Incompat)
        if unknown:
            self.warn(f"{src.name}: unknown incompatible features {unknown:#x}; "
                      f"reading may be wrong")
        if self.sb.block_size * self.block_count < self.sb.root_blkno * bs:
            raise FormatError(f"root directory block {self.sb.root_blkno} past the end",
                              source=src.name, offset=SUPERBLOCK_BLKNO * bs)

    def _backup_superblock(self) -> tuple[int, bytes] | None:
        for off in BACKUP_SUPERBLOCKS:
            if off >= self.src.size:
                break
            head = self.src.read(off, 8)
            if head == S.SUPERBLOCK_SIGNATURE:
                for bs in reversed(BLOCK_SIZES):
                    block = self.src.read(off, bs)
                    bits = int.from_bytes(block[S.ID2 + 0x38:S.ID2 + 0x3C], "little")
                    if len(block) == bs and 1 << bits == bs:
                        self.warnings.append(Problem.at(
                            self.src.name, None, f"primary superblock unreadable; using the "
                                                 f"backup at {off:#x}"))
                        return bs, block
        return None

    # ---- low level --------------------------------------------------------------------
    def warn(self, message: str) -> None:
        """Note damage worked around (a `Problem` about this volume, once)."""
        if message not in self.warnings and len(self.warnings) < MAX_WARNINGS:
            if not isinstance(message, Problem):
                message = Problem(message, source=self.name)
            self.warnings.append(message)

    def _check(self, block: bytes, check_at: int, what: str, blkno: int) -> bool | None:
        """Verify a metadata block's CRC when metaecc is on; warn on a mismatch."""
        if not self.metaecc:
            return None
        ok = metaecc_crc(block, check_at) == stored_crc(block, check_at)
        if not ok:
            self.warn(f"{self.name} @ {blkno * self.block_size:#x}: bad metaecc checksum "
                      f"on {what} (block {blkno})")
        return ok

    def block(self, blkno: int, what: str = "block") -> bytes:
        """One metadata block, refusing numbers outside the volume."""
        if not 0 < blkno < self.block_count:
            raise FormatError(f"{what} at block {blkno}, outside the volume (1..{self.block_count - 1})",
                              source=self.name, offset=None)
        return self.src.read_exact(blkno * self.block_size, self.block_size, what)

    def _read_data(self, physical: int, length: int, name: str) -> bytes:
        data = self.src.read(physical, length)
        if len(data) != length:
            raise TruncatedError(f"data of {name} runs past the end of the image "
                                 f"(size {self.src.size})", source=self.name,
                                 offset=physical + len(data))
        return data

    def inode(self, blkno: int) -> Inode:
        """The inode at block ``blkno`` (signature checked, CRC and generation verified)."""
        def load() -> Inode:
            raw = self.block(blkno, f"inode {blkno}")
            ino = parse_inode(raw, blkno, self.name, blkno * self.block_size)
            self._check(raw, S.INODE_CHECK, f"inode {blkno}", blkno)
            if ino.fs_generation != self.sb.fs_generation:
                self.warn(f"{self.name} @ {blkno * self.block_size:#x}: inode {blkno} has fs "
                          f"generation {ino.fs_generation:#x}, the volume "
                          f"{self.sb.fs_generation:#x} (stale or foreign)")
            if ino.self_blkno != blkno:
                self.warn(f"{self.name} @ {blkno * self.block_size:#x}: inode {blkno} says it "
                          f"is block {ino.self_blkno}")
            return ino
        return self._inodes.get_or(blkno, load)

    # ---- extent trees -----------------------------------------------------------------
    def _leaf_records(self, raw: bytes, where: str, offset: int, depth_limit: int,
                      seen: set[int], out: list[tuple[int, int, int, int]]) -> None:
        """Collect the leaf records below the extent list ``raw`` (iteratively)."""
        stack = [(raw, where, offset, depth_limit)]
        while stack:
            raw, where, offset, limit = stack.pop()
            el = parse_extent_list(raw, self.name, offset)
            if el.depth > limit:
                raise FormatError(f"extent list of {where} has depth {el.depth}, its parent "
                                  f"allows at most {limit}", source=self.name, offset=offset)
            if el.depth == 0:
                out.extend(el.records)
                if len(out) > MAX_EXTENTS:
                    raise LimitError(f"{where} has more than {MAX_EXTENTS} extents",
                                     source=self.name, offset=offset)
                continue
            children = []
            for _, _, child, _ in el.records:
                if child in seen:
                    raise FormatError(f"extent tree of {where} visits block {child} twice "
                                      f"(a loop)", source=self.name, offset=offset)
                seen.add(child)
                if len(seen) > MAX_EXTENT_BLOCKS:
                    raise LimitError(f"extent tree of {where} has more than "
                                     f"{MAX_EXTENT_BLOCKS} blocks", source=self.name,
                                     offset=offset)
                block = self.block(child, f"extent block of {where}")
                if block[:8] != S.EXTENT_BLOCK_SIGNATURE:
                    raise FormatError(f"block {child} of {where} is not an extent block "
                                      f"(signature {block[:8]!r})", source=self.name,
                                      offset=child * self.block_size)
                self._check(block, S.EXTENT_BLOCK_CHECK, f"extent block of {where}", child)
                children.append((block[S.EXTENT_BLOCK_LIST:], where,
                                 child * self.block_size + S.EXTENT_BLOCK_LIST, el.depth - 1))
            stack.extend(reversed(children))

    def extent_map(self, inode: Inode) -> list[Extent]:
        """The file's leaf extents in bytes, sorted, clipped to its size; overlaps dropped
        with a warning."""
        def load() -> list[Extent]:
            if inode.is_chain:
                raise UnsupportedError(f"inode {inode.blkno} is a chain allocator (its groups "
                                       f"are described by stat), not a byte stream",
                                       source=self.name)
            if inode.flags & (InodeFlag.LOCAL_ALLOC | InodeFlag.DEALLOC) or \
                    inode.flags & InodeFlag.SUPER_BLOCK:
                return []
            where = f"inode {inode.blkno}"
            records: list[tuple[int, int, int, int]] = []
            self._leaf_records(inode.id2, where, inode.blkno * self.block_size + S.ID2,
                               MAX_TREE_DEPTH, set(), records)
            records.sort()
            cs, bs = self.cluster_size, self.block_size
            out: list[Extent] = []
            end = 0
            for cpos, clusters, blkno, flags in records:
                if not clusters:
                    continue
                start, length, phys = cpos * cs, clusters * cs, blkno * bs
                if start < end:
                    self.warn(f"{self.name}: {where} has overlapping extents at cluster "
                              f"{cpos}; the later one is cut")
                    cut = end - start
                    if cut >= length:
                        continue
                    start, length, phys = start + cut, length - cut, phys + cut
                if start >= inode.size:
                    break
                length = min(length, inode.size - start)
                if phys + length > self.volume_bytes:
                    self.warn(f"{self.name}: {where} has an extent at block {blkno} past "
                              f"the end of the volume")
                out.append(Extent(start, length, phys, flags))
                end = start + length
            return out
        return self._extent_maps.get_or(inode.blkno, load)

    def _inline_bytes(self, inode: Inode) -> bytes:
        h = S.InlineData.parse(inode.id2[:8])
        cap = min(h.count, self.block_size - S.INLINE_DATA)
        if inode.size > cap:
            self.warn(f"{self.name}: inode {inode.blkno} has {inode.size} inline bytes, room "
                      f"for {cap}; cut")
        return inode.id2[8:8 + min(inode.size, cap)]

    # ---- directories ------------------------------------------------------------------
    def _dir_entries(self, inode: Inode, deleted: bool = False) -> list[RawDirEntry]:
        if not stat_mod.S_ISDIR(inode.mode):
            raise FormatError(f"inode {inode.blkno} is not a directory", source=self.name,
                              offset=inode.blkno * self.block_size)

        def load() -> list[RawDirEntry]:
            found: list[RawDirEntry] = []
            if inode.is_inline:
                buf = self._inline_bytes(inode)
                found.extend(iter_dirents(buf, len(buf), deleted=deleted, source=self.name,
                                          offset=inode.blkno * self.block_size + S.INLINE_DATA,
                                          warnings=self.warnings))
                return found
            if inode.size > max(inode.clusters * self.cluster_size, MAX_DIR_BYTES):
                self.warn(f"{self.name} @ {inode.blkno * self.block_size:#x}: directory inode "
                          f"{inode.blkno} claims {inode.size} bytes in {inode.clusters} "
                          f"clusters; only its mapped blocks are read")
            bs = self.block_size
            data = Ocfs2File(self, inode, f"directory inode {inode.blkno}")
            for file_off, n, kind, phys in data.physical_runs():
                if kind is not Alloc.DATA:
                    continue
                for chunk_off in range(0, n, READ_CHUNK):
                    chunk = self._read_data(phys + chunk_off, min(READ_CHUNK, n - chunk_off),
                                            data.name)
                    for b in range(0, len(chunk) - bs + 1, bs):
                        blk = chunk[b:b + bs]
                        blkno = (phys + chunk_off + b) // bs
                        found.extend(self._dir_block(blk, blkno, inode, deleted))
            return found

        key = (inode.blkno, deleted)
        return self._dirs.get_or(key, load)

    def _dir_block(self, blk: bytes, blkno: int, inode: Inode,
                   deleted: bool) -> list[RawDirEntry]:
        bs = self.block_size
        end = bs
        if self.dir_trailers:
            trailer = blk[bs - S.DIR_TRAILER:]
            if trailer[0x10:0x18] == S.DIR_TRAILER_SIGNATURE:
                end = bs - S.DIR_TRAILER
                self._check(blk, bs - S.DIR_TRAILER + S.TRAILER_CHECK,
                            f"directory block of inode {inode.blkno}", blkno)
            else:
                self.warn(f"{self.name} @ {blkno * bs:#x}: directory block of inode "
                          f"{inode.blkno} has no trailer")
        return list(iter_dirents(blk, end, deleted=deleted, source=self.name,
                                 offset=blkno * bs, warnings=self.warnings))

    def _children(self, dir_ino: int) -> dict[bytes, int]:
        return self._names.get_or(dir_ino, lambda: {
            e.name: e.inode for e in self._dir_entries(self.inode(dir_ino))})

    # ---- paths --------------------------------------------------------------------------
    def _split(self, path: str) -> tuple[int, list[str]]:
        if path.startswith("//"):
            start, rest = self.sb.system_dir_blkno, path[2:]
        else:
            start, rest = self.root_blkno, path
        parts = [p for p in normalize(rest).split("/") if p]
        if len(parts) > MAX_PATH_PARTS:
            raise LimitError(f"path has {len(parts)} parts", source=self.name)
        return start, parts

    def inode_number(self, path: str) -> int:
        """The inode number of ``path`` (no symlink is followed)."""
        ino, parts = self._split(path)
        for i, part in enumerate(parts):
            self._need_dir(ino, "/".join(parts[:i]))
            child = self._children(ino).get(part.encode("utf-8", "surrogateescape"))
            if child is None or part in (".", ".."):
                raise SourceError(f"no such file: {'/'.join(parts[:i + 1])!r}",
                                  source=self.name, kind=ErrorKind.NOT_FOUND)
            ino = child
        return ino

    def _need_dir(self, ino: int, path: str) -> None:
        if not stat_mod.S_ISDIR(self.inode(ino).mode):
            raise SourceError(f"{path!r} is not a directory", source=self.name,
                              kind=ErrorKind.NOT_A_DIR)

    def _decode(self, name: bytes) -> str:
        return name.decode("utf-8", "surrogateescape")

    def listdir(self, path: str = "", *, deleted: bool = False) -> list[DirEntry]:
        ino = self.inode_number(path)
        self._need_dir(ino, path)
        entries = []
        for e in self._dir_entries(self.inode(ino), deleted):
            if e.name in (b".", b"..") and not e.deleted:
                continue
            kind = _DIRENT_FILETYPE.get(e.file_type, FileType.OTHER)
            if not e.file_type and not e.deleted:
                kind = FileType.from_mode(self.inode(e.inode).mode)
            entries.append(DirEntry(self._decode(e.name), kind, e.inode or None, e.deleted))
        return sorted(entries, key=lambda e: (e.name, e.deleted))

    def walk(self, path: str = "", *, deleted: bool = False,
             problems: list[str] | None = None) -> Iterator[tuple[str, list[DirEntry]]]:
        """`Volume.walk`; below ``//`` it walks the system directory, folders named ``//...``."""
        if not path.startswith("//"):
            yield from super().walk(path, deleted=deleted, problems=problems)
            return
        for folder, entries in self.system_volume().walk(path[2:], deleted=deleted,
                                                         problems=problems):
            yield "//" + folder, entries

    # ---- files ----------------------------------------------------------------------------
    def stat(self, path: str) -> FileStat:
        ino = self.inode(self.inode_number(path))
        return self._stat(ino, path, detail=True)

    def lookup(self, path: str) -> FileStat:
        return self._stat(self.inode(self.inode_number(path)), path)

    def stat_inode(self, blkno: int) -> FileStat:
        """Facts of the inode at block ``blkno`` (for recovered or orphaned entries)."""
        return self._stat(self.inode(blkno), f"<inode {blkno}>", detail=True)

    def _stat(self, ino: Inode, path: str, detail: bool = False) -> FileStat:
        """The inode's facts; with ``detail`` also its link target and `_extra`."""
        kind = FileType.from_mode(ino.mode)
        target = self._symlink_target(ino) if detail and kind is FileType.SYMLINK else None
        device = stat_mod.S_ISCHR(ino.mode) or stat_mod.S_ISBLK(ino.mode)
        return FileStat(path if path.startswith("<") else
                        ("//" + normalize(path[2:]) if path.startswith("//") else normalize(path)),
                        kind, ino.size, ino.blkno, ino.nlink, stat_mod.S_IMODE(ino.mode),
                        ino.uid, ino.gid, ino.mtime, ino.ctime, ino.atime,
                        ino.clusters * self.cluster_size, target,
                        self._extra(ino) if detail else {}, st_mode=ino.mode,
                        rdev=int.from_bytes(ino.id1, "little") if device else 0)

    def _extra(self, ino: Inode) -> dict[str, Any]:
        x: dict[str, Any] = {
            "generation": ino.generation, "flags": flag_names(ino.flags, InodeFlag),
            "dyn_features": flag_names(ino.dyn_features, DynFeature),
            "clusters": ino.clusters, "suballoc_slot": ino.suballoc_slot,
            "suballoc_bit": ino.suballoc_bit, "attr": ino.attr, "dtime": ino.dtime,
            "inline": ino.is_inline, "fs_generation": ino.fs_generation,
        }
        if self.metaecc:
            raw = self.block(ino.blkno, f"inode {ino.blkno}")
            x["checksum_ok"] = metaecc_crc(raw, S.INODE_CHECK) == stored_crc(raw, S.INODE_CHECK)
        if ino.flags & _SPECIAL_FLAGS and self._special_extra(ino, x):
            return x
        if ino.dyn_features & DynFeature.INDEXED_DIR:
            x["index"] = self._dx_info(ino)
        if not ino.is_inline and not self._fast_symlink(ino):
            ext = self.extent_map(ino)
            x["extents"] = len(ext)
            x["unwritten_bytes"] = sum(e.length for e in ext if e.flags & ExtentFlag.UNWRITTEN)
            shared = [e for e in ext if e.flags & ExtentFlag.REFCOUNTED]
            if ino.dyn_features & DynFeature.HAS_REFCOUNT:
                x["refcount"] = self._refcount_info(ino, shared)
        return x

    def _special_extra(self, ino: Inode, x: dict[str, Any]) -> bool:
        """Facts of orphaned and system inodes into ``x``; True when there is nothing more."""
        if ino.flags & InodeFlag.ORPHANED:
            x["orphaned_slot"] = ino.orphaned_slot
        if ino.flags & InodeFlag.JOURNAL:
            j = S.Id1Journal.parse(ino.id1)
            x["journal"] = {"dirty": bool(j.flags & JOURNAL_DIRTY), "flags": j.flags,
                            "recovery_generation": j.recovery_generation}
        if ino.flags & InodeFlag.BITMAP:
            b = S.Id1Bitmap.parse(ino.id1)
            x["bitmap"] = {"used": b.used, "total": b.total}
        if ino.is_chain:
            x["chains"] = self._chains(ino)
            return True
        if ino.flags & InodeFlag.LOCAL_ALLOC:
            la = S.LocalAlloc.parse(ino.id2[:16])
            x["local_alloc"] = {"bitmap_offset": la.bm_off, "bitmap_bytes": la.size}
            return True
        if ino.flags & InodeFlag.DEALLOC:
            x["truncate_log"] = self._truncate_log(ino)
            return True
        if ino.flags & InodeFlag.SUPER_BLOCK:
            return True
        return False

    def _chains(self, ino: Inode) -> dict[str, Any]:
        cl = S.ChainList.parse(ino.id2[:16])
        used = min(cl.next_free_rec, cl.count, (len(ino.id2) - 16) // 16)
        recs = [S.ChainRec.parse(ino.id2[16 + i * 16:32 + i * 16]) for i in range(used)]
        return {"clusters_per_group": cl.clusters_per_group,
                "bits_per_cluster": cl.bits_per_cluster, "count": cl.count,
                "records": [{"free": r.free, "total": r.total, "first_group": r.blkno}
                            for r in recs]}

    def _truncate_log(self, ino: Inode) -> dict[str, Any]:
        tl = S.TruncateLog.parse(ino.id2[:8])
        used = min(tl.used, tl.count, (len(ino.id2) - 8) // 8)
        recs = [S.TruncateRec.parse(ino.id2[8 + i * 8:16 + i * 8]) for i in range(used)]
        return {"count": tl.count, "used": tl.used,
                "records": [{"start_cluster": r.start, "clusters": r.clusters} for r in recs]}

    def _dx_info(self, ino: Inode) -> dict[str, Any]:
        try:
            raw = self.block(ino.dx_root, f"index root of inode {ino.blkno}")
        except VmsiftError as e:
            self.warn(Problem.of(e))
            return {"root": ino.dx_root, "error": str(e)}
        if raw[:8] != S.DX_ROOT_SIGNATURE:
            self.warn(f"{self.name} @ {ino.dx_root * self.block_size:#x}: index root of "
                      f"inode {ino.blkno} has signature {raw[:8]!r}")
            return {"root": ino.dx_root, "error": "bad signature"}
        self._check(raw, S.DX_CHECK, f"index root of inode {ino.blkno}", ino.dx_root)
        dx = S.DxRoot.parse(raw)
        return {"root": ino.dx_root, "entries": dx.num_entries, "clusters": dx.clusters,
                "inline": bool(dx.flags & S.DX_FLAG_INLINE)}

    def _refcount_info(self, ino: Inode, shared: list[Extent]) -> dict[str, Any]:
        """The refcount tree of ``ino`` and the counts of its shared clusters."""
        info: dict[str, Any] = {"tree": ino.refcount_loc,
                                "shared_extents": len(shared),
                                "shared_bytes": sum(e.length for e in shared)}
        try:
            root = self.block(ino.refcount_loc, f"refcount tree of inode {ino.blkno}")
            if root[:8] != S.REFCOUNT_SIGNATURE:
                raise FormatError(f"refcount block {ino.refcount_loc} has signature "
                                  f"{root[:8]!r}", source=self.name,
                                  offset=ino.refcount_loc * self.block_size)
            self._check(root, S.REFCOUNT_CHECK, "refcount block", ino.refcount_loc)
            rb = S.RefcountBlock.parse(root)
            info["inodes_sharing"] = rb.count
            records = self._refcount_records(root, rb.flags, ino.refcount_loc)
        except VmsiftError as e:
            self.warn(Problem.of(e))
            info["error"] = str(e)
            return info
        cs = self.cluster_size
        wanted = [(e.physical // cs, (e.physical + e.length + cs - 1) // cs) for e in shared]
        shown = []
        for cpos, clusters, count in records:
            if any(lo < cpos + clusters and cpos < hi for lo, hi in wanted):
                shown.append({"cluster": cpos, "clusters": clusters, "refcount": count})
        info["records"] = shown[:SHOWN_REFCOUNT_RECORDS]
        info["shared_clusters"] = sum(r["clusters"] for r in shown if r["refcount"] > 1)
        return info

    def _refcount_records(self, root: bytes, flags: int, blkno: int
                          ) -> list[tuple[int, int, int]]:
        """All (physical cluster, clusters, refcount) records of a refcount tree."""
        leaves: list[bytes] = []
        if flags & S.REFCOUNT_TREE:
            recs: list[tuple[int, int, int, int]] = []
            self._leaf_records(root[S.REFCOUNT_LIST:], f"refcount tree {blkno}",
                               blkno * self.block_size + S.REFCOUNT_LIST, MAX_TREE_DEPTH,
                               set(), recs)
            for _, _, leaf, _ in recs:
                b = self.block(leaf, "refcount leaf")
                if b[:8] != S.REFCOUNT_SIGNATURE:
                    raise FormatError(f"refcount leaf {leaf} has signature {b[:8]!r}",
                                      source=self.name, offset=leaf * self.block_size)
                self._check(b, S.REFCOUNT_CHECK, "refcount leaf", leaf)
                leaves.append(b)
        else:
            leaves.append(root)
        out = []
        for b in leaves:
            h = S.RefcountListHeader.parse(b[S.REFCOUNT_LIST:S.REFCOUNT_LIST + 16])
            n = min(h.used, h.count, (len(b) - S.REFCOUNT_LIST - 16) // 16)
            base = S.REFCOUNT_LIST + 16
            for i in range(n):
                r = S.RefcountRec.parse(b[base + i * 16:base + i * 16 + 16])
                out.append((r.cpos, r.clusters, r.refcount))
        return out

    def _fast_symlink(self, ino: Inode) -> bool:
        return stat_mod.S_ISLNK(ino.mode) and ino.clusters == 0 and not ino.is_inline

    def _symlink_target(self, ino: Inode) -> str:
        if ino.size > 4096:
            raise LimitError(f"symlink inode {ino.blkno} target is {ino.size} bytes",
                             source=self.name, offset=ino.blkno * self.block_size)
        if self._fast_symlink(ino):
            raw = ino.id2[:min(ino.size, len(ino.id2))]
        else:
            raw = Ocfs2File(self, ino, f"symlink inode {ino.blkno}").read(0, ino.size)
        return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")

    def readlink(self, path: str) -> str:
        ino = self.inode(self.inode_number(path))
        if not stat_mod.S_ISLNK(ino.mode):
            raise SourceError(f"{path!r} is not a symbolic link", source=self.name,
                              kind=ErrorKind.NOT_A_LINK)
        return self._symlink_target(ino)

    def open(self, path: str) -> Ocfs2File:
        ino = self.inode(self.inode_number(path))
        if not stat_mod.S_ISREG(ino.mode):
            raise not_a_file(FileType.from_mode(ino.mode), repr(path), self.name)
        return Ocfs2File(self, ino, f"{self.name}:{path}")

    def device_runs(self, path: str) -> list[tuple[int, int, int]]:
        """(file offset, volume offset, length) of the stored data of ``path``, a file or a
        folder: inline data lies in its inode block; holes and unwritten extents are left
        out."""
        inode = self.inode(self.inode_number(path))
        data = Ocfs2File(self, inode, f"{self.name}:{path}")
        if data._inline is not None:
            return [(0, inode.blkno * self.block_size + S.INLINE_DATA, len(data._inline))]
        return [(off, phys, n) for off, n, kind, phys in data.physical_runs()
                if kind is Alloc.DATA and phys is not None]

    def open_inode(self, blkno: int) -> Ocfs2File:
        """The data of the inode at ``blkno`` (an orphan or a recovered deleted entry)."""
        return Ocfs2File(self, self.inode(blkno), f"{self.name}:<inode {blkno}>")

    def system_volume(self) -> Ocfs2Volume:
        """This volume with the system directory as its root."""
        return Ocfs2Volume(self.src, _shared=self, _root=self.sb.system_dir_blkno)

    # ---- volume metadata -----------------------------------------------------------------
    def _system_file(self, name: str) -> Inode | None:
        ino = self._children(self.sb.system_dir_blkno).get(name.encode())
        return self.inode(ino) if ino else None

    def free_ranges(self) -> list[tuple[int, int]]:
        """[start, end) byte ranges of clusters the global bitmap marks free. Each chain of
        ``//global_bitmap`` links group descriptors; bit i of a group is cluster
        ``first + i`` (first: 0 for the group at the superblock's first cluster group, else
        the group descriptor's own cluster); a set bit is a used cluster. Clusters a slot's
        local-alloc window holds count as used."""
        ino = self._system_file("global_bitmap")
        if ino is None or not ino.is_chain:
            raise FormatError("no global_bitmap chain allocator", source=self.name)
        chains = self._chains(ino)
        cs, bs = self.cluster_size, self.block_size
        free: list[tuple[int, int]] = []
        seen: set[int] = set()
        for rec in chains["records"]:
            blkno = rec["first_group"]
            while blkno and blkno not in seen:
                check_limit(len(seen), 1 << 20, "bitmap groups", source=self.name)
                seen.add(blkno)
                raw = self.block(blkno, "bitmap group descriptor")
                g = S.GroupDesc.parse(raw)
                if g.signature != S.GROUP_SIGNATURE:
                    raise FormatError(f"bitmap group {blkno}: bad signature {g.signature!r}",
                                      source=self.name, offset=blkno * bs)
                first = 0 if blkno == self.sb.first_cluster_group else blkno * bs // cs
                bits = min(g.bits, g.size * 8)
                bitmap = int.from_bytes(raw[S.GROUP_BITMAP:S.GROUP_BITMAP + g.size], "little")
                text = format(bitmap, f"0{g.size * 8}b")[::-1][:bits]  # text[i]: bit i
                free += [((first + m.start()) * cs, (first + m.end()) * cs)
                         for m in _FREE_BITS.finditer(text)]
                blkno = g.next_group
        return sorted(free)

    def slot_map(self) -> list[dict[str, Any]]:
        ino = self._system_file("slot_map")
        if ino is None:
            return []
        data = Ocfs2File(self, ino, "slot_map").read(0, min(ino.size, 1 << 20))
        slots = parse_slot_map(data, self.sb.max_slots, self.sb.has(Incompat.EXTENDED_SLOT_MAP))
        return [s.__dict__ for s in slots]

    def heartbeat(self) -> dict[str, Any]:
        ino = self._system_file("heartbeat")
        if ino is None:
            return {"blocks": 0, "nodes": []}
        f = Ocfs2File(self, ino, "heartbeat")
        data = f.read(0, min(ino.size, 255 * 512))
        records = parse_heartbeat(data)
        for r in records:
            if not r.checksum_ok:
                self.warn(f"{self.name}: heartbeat block of node {r.index} has a bad checksum")
        start = next((p for _, _, k, p in f.physical_runs() if k is Alloc.DATA), None)
        return {"region_offset": start, "region_bytes": ino.size, "block_bytes": 512,
                "nodes": [r.to_dict() for r in records]}

    def journals(self) -> list[dict[str, Any]]:
        out = []
        for slot in range(self.sb.max_slots):
            ino = self._system_file(f"journal:{slot:04d}")
            if ino is None:
                continue
            j = S.Id1Journal.parse(ino.id1)
            out.append({"slot": slot, "inode": ino.blkno, "size": ino.size,
                        "dirty": bool(j.flags & JOURNAL_DIRTY),
                        "recovery_generation": j.recovery_generation})
        return out

    def orphans(self) -> list[dict[str, Any]]:
        out = []
        for slot in range(self.sb.max_slots):
            ino = self._system_file(f"orphan_dir:{slot:04d}")
            if ino is None:
                continue
            for e in self._dir_entries(ino):
                if e.name in (b".", b".."):
                    continue
                row: dict[str, Any] = {"slot": slot, "name": self._decode(e.name),
                                       "inode": e.inode}
                try:
                    o = self.inode(e.inode)
                    row.update(size=o.size, mode=o.mode, dtime=o.dtime)
                except VmsiftError as err:
                    row["error"] = str(err)
                out.append(row)
        return out

    def truncate_logs(self) -> list[dict[str, Any]]:
        out = []
        for slot in range(self.sb.max_slots):
            ino = self._system_file(f"truncate_log:{slot:04d}")
            if ino is not None:
                out.append({"slot": slot, **self._truncate_log(ino)})
        return out

    def backup_superblocks(self) -> list[dict[str, Any]]:
        out = []
        for off in BACKUP_SUPERBLOCKS:
            if off + self.block_size > min(self.volume_bytes, self.src.size):
                break
            raw = self.src.read(off, self.block_size)
            entry: dict[str, Any] = {"offset": off,
                                     "present": raw[:8] == S.SUPERBLOCK_SIGNATURE}
            if entry["present"] and self.metaecc:
                entry["checksum_ok"] = metaecc_crc(raw, S.INODE_CHECK) == stored_crc(raw, S.INODE_CHECK)
            out.append(entry)
        return out

    def _cluster_stack(self) -> dict[str, Any]:
        sb = self.sb
        if sb.has(Incompat.LOCAL_MOUNT):
            return {"mode": "local", "stack": None, "cluster": None, "global_heartbeat": False}
        if sb.cluster_stack is None:
            return {"mode": "cluster", "stack": "o2cb", "classic": True, "cluster": None,
                    "global_heartbeat": False}
        return {"mode": "cluster", "stack": sb.cluster_stack, "classic": False,
                "cluster": sb.cluster_name,
                "global_heartbeat": bool(sb.stack_flags & STACK_GLOBAL_HEARTBEAT)}

    def info(self) -> Report:
        sb = self.sb
        data: dict[str, Any] = {"kind": KIND, "version": f"{sb.major_rev}.{sb.minor_rev}",
                                "label": sb.label, "uuid": sb.uuid,
                                "block_size": sb.block_size, "cluster_size": sb.cluster_size,
                                "clusters": sb.clusters, "capacity": self.volume_bytes,
                                "image_size": self.src.size, "max_slots": sb.max_slots,
                                "features": sb.features(), "cluster_stack": self._cluster_stack(),
                                "superblock": sb.to_dict()}
        sections = {"slot_map": self.slot_map, "heartbeat": self.heartbeat,
                    "journals": self.journals, "orphans": self.orphans,
                    "truncate_logs": self.truncate_logs,
                    "backup_superblocks": self.backup_superblocks}
        for key, fn in sections.items():
            try:
                data[key] = fn()
            except VmsiftError as e:
                self.warn(f"{key}: {e}")
                data[key] = None
        for j in data["journals"] or []:
            if j["dirty"]:
                self.warn(f"journal of slot {j['slot']} is dirty: the volume is mounted or was "
                          f"not cleanly unmounted; changes still only in the journal are not "
                          f"shown (vmsift does not replay journals)")
        try:
            gb = self._system_file("global_bitmap")
            if gb is not None:
                b = S.Id1Bitmap.parse(gb.id1)
                data["used_clusters"], data["free_clusters"] = b.used, b.total - b.used
        except VmsiftError as e:
            self.warn(f"global_bitmap: {e}")
        data["checksums"] = {"enabled": self.metaecc,
                             "bad": [w for w in self.warnings if "checksum" in w]}
        data["warnings"] = list(self.warnings)
        stack = data["cluster_stack"]
        fields = {"label": sb.label, "uuid": sb.uuid, "version": data["version"],
                  "block size": sb.block_size, "cluster size": sb.cluster_size,
                  "capacity": size_field(self.volume_bytes), "max slots": sb.max_slots,
                  "mount": stack["mode"],
                  "cluster stack": stack.get("stack"), "cluster name": stack.get("cluster"),
                  "features": " ".join(sum(data["features"].values(), [])),
                  "metaecc": self.metaecc}
        if "free_clusters" in data:
            fields["free"] = size_field(data["free_clusters"] * sb.cluster_size)
        tables = []
        if data["slot_map"]:
            tables.append(Table("slot map", ["slot", "valid", "node"],
                                [[s["slot"], s["valid"], s["node"]] for s in data["slot_map"]]))
        if data["heartbeat"] and data["heartbeat"]["nodes"]:
            tables.append(Table("heartbeat", ["node", "seq", "generation", "dead ms",
                                              "checksum ok"],
                                [[n["index"], n["seq"], f"{n['generation']:#x}", n["dead_ms"],
                                  n["checksum_ok"]] for n in data["heartbeat"]["nodes"]]))
        if data["journals"]:
            tables.append(Table("journals", ["slot", "inode", "size", "dirty"],
                                [[j["slot"], j["inode"], j["size"], j["dirty"]]
                                 for j in data["journals"]]))
        if data["orphans"]:
            tables.append(Table("orphans", ["slot", "inode", "size"],
                                [[o["slot"], o["inode"], o.get("size")]
                                 for o in data["orphans"]]))
        return Report(KIND, f"OCFS2 volume {sb.label!r}", data, fields, tables,
                      list(self.warnings))

    def close(self) -> None:
        self.src.close()
