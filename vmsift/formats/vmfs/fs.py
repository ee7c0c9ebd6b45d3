"""VMFS file-system structures: descriptor, heartbeats, locks, file descriptors, directories.

Offsets are inside the logical volume (LV). Everything is little-endian and packed.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import NamedTuple

from ..layout import Array, Bytes, Int8ul, Int16ul, Int32ul, Int64ul, Padding, Struct

from .lvm import ScsiDiskId, cstr, format_uuid

FS_DESCRIPTOR_OFFSET = 0x200000
HEARTBEAT_OFFSET = 0x300000
MAGIC_VMFS = 0x2FABF15E
MAGIC_VMFS_L = 0x2FABF15F  # "local" VMFS (VMFS-L, ESXi OSDATA)
MAGICS = (MAGIC_VMFS, MAGIC_VMFS_L, 0x2FABF160, 0x2FABF161)
VMFS6_MAJOR = 24  # FS major versions below are laid out like VMFS3/5
HB_FREE = 0xABCDEF01
HB_LIVE = 0xABCDEF02
FDMD_SIGNATURE = 0x66646D64  # "fdmd", VMFS6 file metadata
RFMD_SIGNATURE = 0x72666D64  # "rfmd", VMFS6 resource file metadata

# Fixed FD addresses of the system files (cluster 0, resource n).
ROOT_DIR = 0x00000004
SYSTEM_FILES = {
    ".fbb.sf": 0x00400004, ".fdc.sf": 0x00800004, ".pbc.sf": 0x00C00004, ".sbc.sf": 0x01000004,
    ".vh.sf": 0x01400004, ".pb2.sf": 0x01800004, ".sdd.sf": 0x01C00004, ".jbc.sf": 0x02000004,
    ".unmap.sf": 0x02400004,
}


class Config(enum.IntFlag):
    DENSE_SBPC = 0x4  # sub-block address uses two more bits for the resource number
    MAINTENANCE = 0x8
    LOCAL = 0x100
    SHARED = 0x400
    OSDATA = 0x800
    VSAN = 0x1000


class DescType(enum.IntEnum):
    INVALID = 0
    VOLUME = 1
    DIRECTORY = 2
    REGFILE = 3
    SYMLINK = 4
    SYSFILE = 5
    RDM = 6


class AddrType(enum.IntEnum):
    INVALID = 0
    FB = 1  # file block (VMFS6: small file block, SFB)
    SB = 2  # sub-block
    PB = 3  # pointer block
    FD = 4  # file descriptor
    PB2 = 5  # second pointer-block pool
    JB = 6  # journal block
    LFB = 7  # large file block (VMFS6)


class Zla(enum.IntEnum):
    """Zero-level address type: how the FD's pointer array is read."""

    FILE_BLOCK = 1
    SUB_BLOCK = 2
    POINTER_BLOCK = 3
    POINTER2_BLOCK = 5
    DOUBLE_INDIRECT = 0x10D0
    RESIDENT = 0x10D1


FsDescriptor = Struct(
    "magic" / Int32ul,  # 0x00
    "major" / Int32ul,
    "minor" / Int8ul,  # 0x08
    "uuid" / Bytes(16),  # 0x09
    "config" / Int32ul,  # 0x19
    "label" / Bytes(128),  # 0x1d
    "disk_block_size" / Int32ul,  # 0x9d
    "file_block_size" / Int64ul,  # 0xa1
    "creation_time" / Int32ul,  # 0xa9
    "snap_id" / Int32ul,  # 0xad
    "lv_uuid" / Bytes(16),  # 0xb1
    "lv_snap_id" / Int32ul,
    Padding(12),
    "fdc_cluster_group_offset" / Int32ul,  # 0xd1
    "fdc_clusters_per_group" / Int32ul,  # 0xd5
    "sub_block_size" / Int32ul,  # 0xd9
    "max_journal_slots_per_txn" / Int32ul,  # 0xdd
    "pb2_vol_addr" / Int64ul,  # 0xe1
    "pb2_fd_addr" / Int32ul,  # 0xe9
    "host_uuid" / Bytes(16),  # 0xed
    "gbl_generation" / Int64ul,  # 0xfd
    "sdd_vol_addr" / Int64ul,  # 0x105
    "sdd_fd_addr" / Int32ul,  # 0x10d
    "checksum_type" / Int8ul,  # 0x111
    "unmap_priority" / Int16ul,  # 0x112
    Padding(4),
    "checksum_gen" / Int64ul,  # 0x118
    "checksum" / Int64ul,  # 0x120
    "checksum_checksum_gen" / Int64ul,
    "phys_disk_block_size" / Int32ul,  # 0x130
    "md_alignment" / Int32ul,  # 0x134
    "sfb_to_lfb_shift" / Int16ul,  # 0x138
    Padding(4),
    "ptr_block_shift" / Int16ul,  # 0x13e
    "sfb_addr_bits" / Int16ul,  # 0x140
    Padding(2),
    "tbz_granularity" / Int32ul,  # 0x144
    "journal_block_size" / Int32ul,  # 0x148
    "lease_interval_ms" / Int32ul,  # 0x14c
    "reclaim_window_ms" / Int32ul,  # 0x150
    "local_stamp_us" / Int64ul,  # 0x154
    "local_mount_owner_mac" / Bytes(6),  # 0x15c
)
assert FsDescriptor.sizeof() == 0x162

Heartbeat = Struct(
    "state" / Int32ul,  # 0x00
    "addr" / Int64ul,  # own LV offset
    "generation" / Int64ul,  # 0x0c
    "stamp_us" / Int64ul,  # 0x14 holder's uptime
    "owner" / Bytes(16),  # 0x1c
    "journal_addr" / Int32ul,  # 0x2c
    "drive_major" / Int32ul,  # 0x30
    "drive_minor" / Int8ul,
    "lock_impl" / Int8ul,  # 0x35
    "ip" / Bytes(46),  # 0x36
    "journal_vol_addr" / Int64ul,  # 0x64
    "replay_host" / Bytes(16),  # 0x6c
    Padding(24),
    "replay_host_hb" / Int64ul,  # 0x94
    "replay_host_hb_gen" / Int64ul,  # 0x9c
)
assert Heartbeat.sizeof() == 0xA4

LockHolder = Struct("hb_addr" / Int64ul, "hb_gen" / Int64ul, "host" / Bytes(16))

DiskLock = Struct(
    "type" / Int32ul,  # 0x00
    "addr" / Int64ul,  # 0x04 LV offset of the locked object
    "hb_addr" / Int64ul,  # 0x0c heartbeat slot of the holder, 0 = free
    "hb_gen" / Int64ul,  # 0x14
    "token" / Int64ul,  # 0x1c
    "mode" / Int32ul,  # 0x24
    "owner" / Bytes(16),  # 0x28
    "mtime_us" / Int64ul,  # 0x38
    "num_holders" / Int32ul,  # 0x40
    "holders" / Array(8, LockHolder),  # 0x44
)
assert DiskLock.sizeof() == 0x144

FileMetadata = Struct(
    "desc_addr" / Int32ul,  # 0x00
    "generation" / Int32ul,
    "link_count" / Int32ul,
    "type" / Int32ul,  # 0x0c
    "flags" / Int32ul,
    "length" / Int64ul,  # 0x14
    "block_size" / Int64ul,  # 0x1c
    "num_blocks" / Int64ul,  # 0x24
    "mtime" / Int32ul,  # 0x2c
    "ctime" / Int32ul,
    "atime" / Int32ul,
    "uid" / Int32ul,  # 0x38
    "gid" / Int32ul,
    "mode" / Int32ul,  # 0x40
    "zla" / Int32ul,  # 0x44
    "tbz_lo" / Int32ul,  # 0x48
    "cow_lo" / Int32ul,
    "new_since_epoch_lo" / Int32ul,
    "tbz_hi" / Int32ul,  # 0x54
    "cow_hi" / Int32ul,
    "num_pointer_blocks" / Int32ul,  # 0x5c
    "new_since_epoch_hi" / Int32ul,
    "signature" / Int32ul,  # 0x64
    "affinity_fd" / Int32ul,
    "tbz_granularity_shift" / Int32ul,  # 0x6c
    "parent_fd" / Int32ul,  # 0x70
    "last_sfb_cluster" / Int32ul,
    Padding(16),  # 0x78
    Padding(1),  # 0x88
    "block_offset_shift" / Int8ul,  # 0x89
    Padding(2),
    "num_lfb" / Int32ul,  # 0x8c
)
assert FileMetadata.sizeof() == 0x90


# `DiskLock` and `FileMetadata` again as `struct` layouts: every file descriptor is decoded
# with them (one per name in `ls -l` and in the lock scan of `ds info`): tuples with the
# holders cut to `num_holders`, no dicts. tests/test_vmfs.py checks both readings agree.
class Holder(NamedTuple):
    hb_addr: int
    hb_gen: int
    host: bytes


class Lock(NamedTuple):
    type: int
    addr: int
    hb_addr: int
    hb_gen: int
    token: int
    mode: int
    owner: bytes
    mtime_us: int
    num_holders: int
    holders: tuple[Holder, ...]


class Meta(NamedTuple):
    desc_addr: int
    generation: int
    link_count: int
    type: int
    flags: int
    length: int
    block_size: int
    num_blocks: int
    mtime: int
    ctime: int
    atime: int
    uid: int
    gid: int
    mode: int
    zla: int
    tbz_lo: int
    cow_lo: int
    new_since_epoch_lo: int
    tbz_hi: int
    cow_hi: int
    num_pointer_blocks: int
    new_since_epoch_hi: int
    signature: int
    affinity_fd: int
    tbz_granularity_shift: int
    parent_fd: int
    last_sfb_cluster: int
    block_offset_shift: int
    num_lfb: int


_LOCK_HEAD = struct.Struct("<IQQQQI16sQI")
_HOLDER = struct.Struct("<QQ16s")
_META = struct.Struct("<5I3Q19I17xB2xI")
assert _LOCK_HEAD.size + 8 * _HOLDER.size == DiskLock.sizeof() and _META.size == 0x90


def parse_lock(raw: bytes) -> Lock:
    """The `DiskLock` at the start of ``raw``, with its first ``num_holders`` (at most 8)
    holders."""
    head = _LOCK_HEAD.unpack_from(raw)
    end = _LOCK_HEAD.size + min(head[-1], 8) * _HOLDER.size
    return Lock(*head, tuple(map(Holder._make, _HOLDER.iter_unpack(raw[_LOCK_HEAD.size:end]))))


def parse_meta(raw: bytes, offset: int) -> Meta:
    """The `FileMetadata` at ``offset`` of ``raw``."""
    return Meta._make(_META.unpack_from(raw, offset))


DirEntry5 = Struct(
    "type" / Int32ul, "addr" / Int32ul, "generation" / Int32ul, "name" / Bytes(128),
)
DIRENT5_SIZE = DirEntry5.sizeof()
assert DIRENT5_SIZE == 140

DirEntry6 = Struct(
    "type" / Int32ul,
    "addr" / Int32ul,
    "generation" / Int32ul,
    "hash_index" / Int16ul,
    "link_hash" / Int16ul,
    "offset" / Int64ul,
    "name" / Bytes(256),
    Padding(8),
)
DIRENT6_SIZE = DirEntry6.sizeof()
assert DIRENT6_SIZE == 288

DIR6_HEADER_BLOCK = 0x10000
DIR6_VERSIONS = (0xF50001, 0xFDC001)
DirHeader6 = Struct(
    "version" / Int32ul,
    "num_entries" / Int32ul,
    "num_allocated" / Int32ul,
    "num_alloc_map_blocks" / Int32ul,
    "alloc_map_blocks" / Array(128, Int32ul),
    Padding(408),
    "checksum" / Int64ul,  # 0x3a8
    "checksum_gen" / Int64ul,
    "self_entry" / DirEntry6,  # 0x3b8
    "parent_entry" / DirEntry6,  # 0x4d8
)
assert DirHeader6.sizeof() == 0x5F8

DirBlockHeader6 = Struct(
    "version" / Int16ul, "type" / Int16ul, "total_slots" / Int16ul, "free_slots" / Int16ul,
    "bitmap" / Bytes(56),
)
DIR6_BLOCK_HEADER = DirBlockHeader6.sizeof()
DIR6_BLOCK_DIRENT, DIR6_BLOCK_LINK, DIR6_BLOCK_ALLOC = 1, 2, 3

RawDiskMap = ScsiDiskId

#: VMFS3/5 resource cluster metadata, this far into a cluster header (after its lock):
#: cluster number, resource count, free count, next free (u32 each), 64-byte free bitmap.
CLUSTER_META = 512
CLUSTER_META_SIZE = 80


@dataclass(frozen=True)
class FdLayout:
    """Where the parts of a file descriptor sit, per VMFS generation."""

    fd_size: int
    meta_offset: int
    data_offset: int  # resident data area
    data_size: int
    ptr_offset: int  # pointer array
    ptr_count: int
    ptr_width: int  # 4 (VMFS3/5) or 8 (VMFS6)
    pb_size: int  # bytes of one pointer block
    cluster_header: int  # per-cluster header in resource files (lock + metadata)

    @property
    def ptrs_per_pb(self) -> int:
        return self.pb_size // self.ptr_width

    @classmethod
    def for_fs(cls, vmfs6: bool, md_alignment: int) -> FdLayout:
        if not vmfs6:
            return cls(2048, 512, 1024, 1024, 1024, 256, 4, 4096, 1024)
        ptr_bytes = 2560 if md_alignment <= 0x1000 else md_alignment // 2
        fd_size = 2 * md_alignment
        pb_size = 0x10000 if md_alignment < 0x10000 else md_alignment
        return cls(fd_size, md_alignment, fd_size - (md_alignment - 512), md_alignment - 512,
                   fd_size - ptr_bytes, ptr_bytes // 8, 8, pb_size, 2 * md_alignment)


# --- addresses ------------------------------------------------------------------------------

def addr_type(addr: int) -> int:
    return addr & 7


def fd_addr_parts(addr: int) -> tuple[int, int]:
    """(cluster, resource) of a file-descriptor address."""
    return (addr >> 6) & 0xFFFF, (addr >> 22) & 0x3FF


def cluster_resource(addr: int, vmfs6: bool, dense: bool = False) -> tuple[int, int]:
    """(cluster, resource) of an SB, PB or PB2 address."""
    if vmfs6:
        return (addr >> 6) & 0xFFFFFFFFF, (addr >> 56) & 0xFF
    resource = (addr >> 28) & 0xF
    if dense and addr_type(addr) == AddrType.SB:
        resource |= (addr & 0x18) << 1
    return (addr >> 6) & 0x3FFFFF, resource


def fb_parts(addr: int) -> tuple[int, bool]:
    """(block number, to-be-zeroed) of a VMFS3/5 file-block address."""
    return (addr >> 6) & 0x3FFFFFF, bool(addr & 0x20)


def sfb_parts(addr: int) -> tuple[int, int, int]:
    """(cluster, resource, TBZ bitmap) of a VMFS6 small-file-block address."""
    return (addr >> 15) & 0x7FFFFFFF, (addr >> 51) & 0x1FFF, (addr >> 7) & 0xFF


def lfb_parts(addr: int) -> tuple[int, int]:
    """(block number, TBZ bitmap) of a VMFS6 large-file-block address."""
    return (addr >> 15) & 0x7FFFFFFF, (addr >> 7) & 0xFF


# --- small decoders -------------------------------------------------------------------------

def uuid_str(raw: bytes) -> str:
    return format_uuid(raw)


def name_str(raw: bytes) -> str:
    return cstr(raw)


def version_string(magic: int, major: int, minor: int) -> str:
    """The version VMware prints: VMFS-3.31, VMFS-5.81, VMFS-6.82, VMFS-L ..."""
    generation = 6 if major >= VMFS6_MAJOR else (5 if major >= 5 else 3)
    local = "L" if magic in (MAGIC_VMFS_L, 0x2FABF161) else ""
    return f"VMFS{local}-{generation}.{minor}"


LOCK_MODES = {0: "free", 1: "exclusive", 2: "read-only", 3: "multi-writer"}
LOCK_TYPES = {0x10C00001: "file descriptor", 0x10C00002: "file block cluster",
              0x10C00003: "sub-block cluster", 0x10C00004: "pointer block cluster",
              0x10C00005: "file descriptor cluster", 0x10C00006: "pointer block 2 cluster"}
