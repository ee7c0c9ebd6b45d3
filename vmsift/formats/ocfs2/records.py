"""Decoders from OCFS2 blocks to dataclasses (no I/O: each takes the bytes of a block)."""

from __future__ import annotations

import struct

import uuid as uuid_mod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ...errors import FormatError, Problem, TruncatedError
from . import structs as S
from .flags import COMPAT, INCOMPAT, RO_COMPAT, DynFeature, InodeFlag, names

BLOCK_SIZES = (512, 1024, 2048, 4096)
SUPERBLOCK_BLKNO = 2
MAX_CLUSTER_BITS = 20       # 1 MiB


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


@dataclass
class Superblock:
    blkno: int
    block_size: int
    cluster_size: int
    clusters: int
    fs_generation: int
    major_rev: int
    minor_rev: int
    mnt_count: int
    max_mnt_count: int
    state: int
    errors: int
    checkinterval: int
    lastcheck: int
    creator_os: int
    feature_compat: int
    feature_incompat: int
    feature_ro_compat: int
    root_blkno: int
    system_dir_blkno: int
    max_slots: int
    tunefs_flag: int
    uuid_hash: int
    first_cluster_group: int
    label: str
    uuid: str
    cluster_stack: str | None
    cluster_name: str | None
    stack_flags: int
    xattr_inline_size: int
    dx_seed: list[int]
    check_crc: int
    check_ecc: int

    def has(self, incompat_bit: int) -> bool:
        return bool(self.feature_incompat & incompat_bit)

    @property
    def uuid_hex(self) -> str:
        """The UUID as debugfs.ocfs2 prints it (32 upper-case hex digits)."""
        return self.uuid.replace("-", "").upper()

    def features(self) -> dict[str, list[str]]:
        return {"compat": names(self.feature_compat, COMPAT),
                "incompat": names(self.feature_incompat, INCOMPAT),
                "ro_compat": names(self.feature_ro_compat, RO_COMPAT)}

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["version"] = f"{self.major_rev}.{self.minor_rev}"
        d["features"] = self.features()
        return d


def parse_superblock(block: bytes, block_size: int, source: str = "<bytes>",
                     offset: int = 0) -> Superblock:
    """Decode the superblock inode (block 2 for a volume of ``block_size`` blocks)."""
    if block[:8] != S.SUPERBLOCK_SIGNATURE:
        raise FormatError(f"no OCFS2 superblock signature (found {block[:8]!r})",
                          source=source, offset=offset)
    ino = S.Dinode.parse(block)
    sb = S.SuperBlock.parse(block[S.ID2:])
    if not 9 <= sb.blocksize_bits <= 12 or 1 << sb.blocksize_bits != block_size:
        raise FormatError(f"superblock block size bits {sb.blocksize_bits} do not match "
                          f"its position (block size {block_size})", source=source, offset=offset)
    if not 12 <= sb.clustersize_bits <= MAX_CLUSTER_BITS:
        raise FormatError(f"cluster size bits {sb.clustersize_bits} outside 12..20",
                          source=source, offset=offset)
    stack = name = None
    if sb.feature_incompat & (0x80 | 0x4000):   # userspace stack / clusterinfo
        stack = _text(sb.cluster_info.stack)
        name = _text(sb.cluster_info.cluster)
    return Superblock(
        blkno=ino.blkno, block_size=block_size, cluster_size=1 << sb.clustersize_bits,
        clusters=ino.clusters, fs_generation=ino.fs_generation, major_rev=sb.major_rev,
        minor_rev=sb.minor_rev, mnt_count=sb.mnt_count, max_mnt_count=sb.max_mnt_count,
        state=sb.state, errors=sb.errors, checkinterval=sb.checkinterval,
        lastcheck=sb.lastcheck, creator_os=sb.creator_os, feature_compat=sb.feature_compat,
        feature_incompat=sb.feature_incompat, feature_ro_compat=sb.feature_ro_compat,
        root_blkno=sb.root_blkno, system_dir_blkno=sb.system_dir_blkno,
        max_slots=sb.max_slots, tunefs_flag=sb.tunefs_flag, uuid_hash=sb.uuid_hash,
        first_cluster_group=sb.first_cluster_group, label=_text(sb.label),
        uuid=str(uuid_mod.UUID(bytes=bytes(sb.uuid))), cluster_stack=stack,
        cluster_name=name, stack_flags=sb.cluster_info.stack_flags,
        xattr_inline_size=sb.xattr_inline_size, dx_seed=list(sb.dx_seed),
        check_crc=ino.check.crc32e, check_ecc=ino.check.ecc)


@dataclass
class Inode:
    blkno: int            # where it was read (== inode number)
    generation: int
    suballoc_slot: int
    suballoc_bit: int
    clusters: int
    uid: int
    gid: int
    size: int
    mode: int
    nlink: int
    flags: int
    atime: float
    ctime: float
    mtime: float
    dtime: int
    self_blkno: int       # what the inode says its own block is
    last_eb_blk: int
    fs_generation: int
    attr: int
    orphaned_slot: int
    dyn_features: int
    xattr_loc: int
    check_crc: int
    dx_root: int
    refcount_loc: int
    id1: bytes
    id2: bytes = field(repr=False)     # the rest of the block (extent list, inline data ...)

    @property
    def is_inline(self) -> bool:
        return bool(self.dyn_features & DynFeature.INLINE_DATA)

    @property
    def is_chain(self) -> bool:
        return bool(self.flags & InodeFlag.CHAIN)

    @property
    def valid(self) -> bool:
        return bool(self.flags & InodeFlag.VALID)


# the `S.Dinode` layout as a plain struct, unpacked into a tuple (parse_inode runs once per
# name in `ls -l`: no dict of 37 fields per inode)
_DINODE = struct.Struct("<8sIHHHHIIIQHHIQQQQQQIIIIIHHQIH2xQQQH22x8s")
assert _DINODE.size == S.Dinode.sizeof()


def parse_inode(block: bytes, blkno: int, source: str = "<bytes>",
                offset: int = 0) -> Inode:
    if block[:8] != S.INODE_SIGNATURE:
        raise FormatError(f"block {blkno} is not an inode (signature {block[:8]!r})",
                          source=source, offset=offset)
    if len(block) < S.ID2:
        raise TruncatedError(f"inode block {blkno} is {len(block)} bytes", source=source,
                             offset=offset)
    (_, generation, suballoc_slot, suballoc_bit, links_hi, _, clusters, uid, gid, size, mode,
     links, flags, atime, ctime, mtime, dtime, self_blkno, last_eb_blk, fs_generation,
     atime_ns, ctime_ns, mtime_ns, attr, orphaned_slot, dyn_features, xattr_loc, crc, _,
     dx_root, refcount_loc, _, _, id1) = _DINODE.unpack_from(block)
    return Inode(
        blkno=blkno, generation=generation, suballoc_slot=suballoc_slot,
        suballoc_bit=suballoc_bit, clusters=clusters, uid=uid, gid=gid, size=size,
        mode=mode, nlink=links | (links_hi << 16), flags=flags,
        atime=atime + atime_ns / 1e9, ctime=ctime + ctime_ns / 1e9,
        mtime=mtime + mtime_ns / 1e9, dtime=dtime, self_blkno=self_blkno,
        last_eb_blk=last_eb_blk, fs_generation=fs_generation, attr=attr,
        orphaned_slot=orphaned_slot, dyn_features=dyn_features, xattr_loc=xattr_loc,
        check_crc=crc, dx_root=dx_root, refcount_loc=refcount_loc,
        id1=id1, id2=block[S.ID2:])


@dataclass
class ExtentList:
    depth: int
    count: int
    used: int
    records: list[tuple[int, int, int, int]]   # (cpos, clusters, blkno, flags)


def parse_extent_list(raw: bytes, source: str = "<bytes>", offset: int = 0) -> ExtentList:
    """An extent list header and its used records (leaf: u16 clusters + flags; interior:
    u32 clusters, flags 0). Records that would run past ``raw`` are an error."""
    h = S.ExtentListHeader.parse(raw)
    capacity = (len(raw) - S.EXTENT_LIST_HEADER) // S.EXTENT_REC
    if h.next_free_rec > min(h.count, capacity):
        raise FormatError(f"extent list claims {h.next_free_rec} records, room for "
                          f"{min(h.count, capacity)}", source=source, offset=offset)
    recs = []
    pos = S.EXTENT_LIST_HEADER
    for _ in range(h.next_free_rec):
        if h.tree_depth:
            r = S.ExtentRecInterior.parse(raw[pos:pos + S.EXTENT_REC])
            recs.append((r.cpos, r.clusters, r.blkno, 0))
        else:
            r = S.ExtentRec.parse(raw[pos:pos + S.EXTENT_REC])
            recs.append((r.cpos, r.leaf_clusters, r.blkno, r.flags))
        pos += S.EXTENT_REC
    return ExtentList(h.tree_depth, h.count, h.next_free_rec, recs)


@dataclass
class RawDirEntry:
    offset: int          # inside the block / inline area
    inode: int
    rec_len: int
    name: bytes
    file_type: int
    deleted: bool = False


_DIRENT_HEADER = struct.Struct("<QHBB")
assert _DIRENT_HEADER.size == S.DIRENT_HEADER == S.DirEntryHeader.sizeof()


def dirent_min_len(name_len: int) -> int:
    return (S.DIRENT_HEADER + name_len + 3) & ~3


def iter_dirents(buf: bytes, end: int, *, deleted: bool = False,
                 source: str = "<bytes>", offset: int = 0,
                 warnings: list[Problem] | None = None) -> Iterator[RawDirEntry]:
    """Walk the entries of one directory block (or inline area) up to ``end``.

    Live entries have inode != 0. With ``deleted``, also yields entries whose inode was
    zeroed (a deleted first entry) and ones carved from the slack after a live entry's name
    (a deleted entry merged into its predecessor's rec_len). The kernel zeroes the inode
    number of a deleted entry, so recovered entries usually have inode 0.
    """
    pos = 0
    header = _DIRENT_HEADER.unpack_from  # the DirEntryHeader layout; struct on this hot path
    while pos + S.DIRENT_HEADER <= end:
        inode, rec_len, name_len, file_type = header(buf, pos)
        if rec_len < S.DIRENT_HEADER or rec_len % 4 or pos + rec_len > end \
                or dirent_min_len(name_len) > rec_len:
            if warnings is not None:
                warnings.append(Problem.at(source, offset + pos, f"bad directory entry "
                                           f"(rec_len {rec_len}, name_len {name_len}); rest "
                                           f"of block skipped"))
            return
        name = bytes(buf[pos + S.DIRENT_HEADER:pos + S.DIRENT_HEADER + name_len])
        if inode:
            yield RawDirEntry(pos, inode, rec_len, name, file_type)
        elif deleted and name_len:
            yield RawDirEntry(pos, 0, rec_len, name, file_type, deleted=True)
        if deleted:
            yield from _carve(buf, pos + dirent_min_len(name_len), pos + rec_len)
        pos += rec_len


def _carve(buf: bytes, start: int, end: int) -> Iterator[RawDirEntry]:
    """Deleted entries in the slack ``[start, end)`` of a live entry: a name of plausible
    length and type (the inode number may be zero)."""
    pos = start
    while pos + S.DIRENT_HEADER <= end:
        h = S.DirEntryHeader.parse(buf[pos:pos + S.DIRENT_HEADER])
        need = dirent_min_len(h.name_len)
        name = bytes(buf[pos + S.DIRENT_HEADER:pos + S.DIRENT_HEADER + h.name_len])
        plausible = (h.name_len and 1 <= h.file_type <= 7
                     and h.rec_len >= need and h.rec_len % 4 == 0 and pos + need <= end
                     and b"\0" not in name and b"/" not in name)
        if plausible:
            yield RawDirEntry(pos, h.inode, h.rec_len, name, h.file_type, deleted=True)
            pos += need   # an entry deleted before this one may sit in its slack
        else:
            pos += 4
