"""OCFS2 on-disk layouts (little-endian), as `vmsift.formats.layout` Structs.

Offsets follow the kernel's on-disk header (``fs/ocfs2/ocfs2_fs.h``) and ocfs2-tools'
``ocfs2_heartbeat.h``, described in docs/formats/ocfs2.md. Every metadata block starts with an
8-byte signature; the inode is one block and its number is its block number.
"""

from __future__ import annotations

from ..layout import Array, Bytes, Int8ul, Int16ul, Int32ul, Int64ul, Padding, Struct

SUPERBLOCK_SIGNATURE = b"OCFSV2\0\0"
INODE_SIGNATURE = b"INODE01\0"
EXTENT_BLOCK_SIGNATURE = b"EXBLK01\0"
GROUP_SIGNATURE = b"GROUP01\0"
DIR_TRAILER_SIGNATURE = b"DIRTRL1\0"
DX_ROOT_SIGNATURE = b"DXDIR01\0"
DX_LEAF_SIGNATURE = b"DXLEAF1\0"
REFCOUNT_SIGNATURE = b"REFCNT1\0"
XATTR_SIGNATURE = b"XATTR01\0"

ID2 = 0xC0                 # start of the inode's type-dependent union
INLINE_DATA = 0xC8         # inline file / dir bytes (after the 8-byte inline header)
CHECK = 8                  # size of the block check {crc32e u32, ecc u16, pad u16}
INODE_CHECK = 0x80        # block check offset in an inode
EXTENT_BLOCK_CHECK = 0x8
DX_CHECK = 0x8
REFCOUNT_CHECK = 0x20
TRAILER_CHECK = 0x38      # inside the 64-byte dir block trailer

BlockCheck = Struct("crc32e" / Int32ul, "ecc" / Int16ul, Padding(2))

Dinode = Struct(
    "signature" / Bytes(8),
    "generation" / Int32ul,
    "suballoc_slot" / Int16ul,
    "suballoc_bit" / Int16ul,
    "links_count_hi" / Int16ul,
    "xattr_inline_size" / Int16ul,
    "clusters" / Int32ul,
    "uid" / Int32ul,
    "gid" / Int32ul,
    "size" / Int64ul,
    "mode" / Int16ul,
    "links_count" / Int16ul,
    "flags" / Int32ul,
    "atime" / Int64ul,
    "ctime" / Int64ul,
    "mtime" / Int64ul,
    "dtime" / Int64ul,
    "blkno" / Int64ul,
    "last_eb_blk" / Int64ul,
    "fs_generation" / Int32ul,
    "atime_nsec" / Int32ul,
    "ctime_nsec" / Int32ul,
    "mtime_nsec" / Int32ul,
    "attr" / Int32ul,
    "orphaned_slot" / Int16ul,
    "dyn_features" / Int16ul,
    "xattr_loc" / Int64ul,
    "check" / BlockCheck,
    "dx_root" / Int64ul,
    "refcount_loc" / Int64ul,
    "suballoc_loc" / Int64ul,
    "dio_orphaned_slot" / Int16ul,
    Padding(6 + 16),
    "id1" / Bytes(8),          # rdev / bitmap used+total / journal flags+recovery generation
)
assert Dinode.sizeof() == ID2

Id1Bitmap = Struct("used" / Int32ul, "total" / Int32ul)
Id1Journal = Struct("flags" / Int32ul, "recovery_generation" / Int32ul)

ClusterInfo = Struct(
    "stack" / Bytes(4),
    "stack_flags" / Int8ul,
    Padding(3),
    "cluster" / Bytes(16),
)

SuperBlock = Struct(                     # at inode + 0xC0
    "major_rev" / Int16ul,
    "minor_rev" / Int16ul,
    "mnt_count" / Int16ul,
    "max_mnt_count" / Int16ul,
    "state" / Int16ul,
    "errors" / Int16ul,
    "checkinterval" / Int32ul,
    "lastcheck" / Int64ul,
    "creator_os" / Int32ul,
    "feature_compat" / Int32ul,
    "feature_incompat" / Int32ul,
    "feature_ro_compat" / Int32ul,
    "root_blkno" / Int64ul,
    "system_dir_blkno" / Int64ul,
    "blocksize_bits" / Int32ul,
    "clustersize_bits" / Int32ul,
    "max_slots" / Int16ul,
    "tunefs_flag" / Int16ul,
    "uuid_hash" / Int32ul,
    "first_cluster_group" / Int64ul,
    "label" / Bytes(64),
    "uuid" / Bytes(16),
    "cluster_info" / ClusterInfo,
    "xattr_inline_size" / Int16ul,
    Padding(2),
    "dx_seed" / Array(3, Int32ul),
)
assert SuperBlock.sizeof() == 0xC8

ExtentListHeader = Struct(
    "tree_depth" / Int16ul,
    "count" / Int16ul,
    "next_free_rec" / Int16ul,
    Padding(2 + 8),
)
EXTENT_LIST_HEADER = 16

ExtentRec = Struct(                      # leaf form; interior records read the middle u32
    "cpos" / Int32ul,
    "leaf_clusters" / Int16ul,
    Padding(1),
    "flags" / Int8ul,
    "blkno" / Int64ul,
)
ExtentRecInterior = Struct("cpos" / Int32ul, "clusters" / Int32ul, "blkno" / Int64ul)
EXTENT_REC = 16

ExtentBlock = Struct(
    "signature" / Bytes(8),
    "check" / BlockCheck,
    "suballoc_slot" / Int16ul,
    "suballoc_bit" / Int16ul,
    "fs_generation" / Int32ul,
    "blkno" / Int64ul,
    "suballoc_loc" / Int64ul,
    "next_leaf_blk" / Int64ul,
)
EXTENT_BLOCK_LIST = 0x30
assert ExtentBlock.sizeof() == EXTENT_BLOCK_LIST

InlineData = Struct("count" / Int16ul, Padding(6))

ChainList = Struct(
    "clusters_per_group" / Int16ul,
    "bits_per_cluster" / Int16ul,
    "count" / Int16ul,
    "next_free_rec" / Int16ul,
    Padding(8),
)
ChainRec = Struct("free" / Int32ul, "total" / Int32ul, "blkno" / Int64ul)

GroupDesc = Struct(
    "signature" / Bytes(8),
    "size" / Int16ul,
    "bits" / Int16ul,
    "free_bits" / Int16ul,
    "chain" / Int16ul,
    "generation" / Int32ul,
    "contig_free_bits" / Int16ul,
    Padding(2),
    "next_group" / Int64ul,
    "parent_dinode" / Int64ul,
    "blkno" / Int64ul,
    "check" / BlockCheck,
    Padding(8),
)
GROUP_BITMAP = 0x40

LocalAlloc = Struct("bm_off" / Int32ul, "size" / Int16ul, Padding(10))
TruncateLog = Struct("count" / Int16ul, "used" / Int16ul, Padding(4))
TruncateRec = Struct("start" / Int32ul, "clusters" / Int32ul)

DirEntryHeader = Struct(
    "inode" / Int64ul,
    "rec_len" / Int16ul,
    "name_len" / Int8ul,
    "file_type" / Int8ul,
)
DIRENT_HEADER = 12

DirTrailer = Struct(                     # last 64 bytes of a dir block (metaecc / indexed)
    "compat_inode" / Int64ul,
    "compat_rec_len" / Int16ul,
    "compat_name_len" / Int8ul,
    Padding(3),
    "free_rec_len" / Int16ul,
    "signature" / Bytes(8),
    Padding(8),
    "free_next" / Int64ul,
    "blkno" / Int64ul,
    "parent_dinode" / Int64ul,
    "check" / BlockCheck,
)
DIR_TRAILER = 64
assert DirTrailer.sizeof() == DIR_TRAILER

DxRoot = Struct(
    "signature" / Bytes(8),
    "check" / BlockCheck,
    "suballoc_slot" / Int16ul,
    "suballoc_bit" / Int16ul,
    "fs_generation" / Int32ul,
    "blkno" / Int64ul,
    "last_eb_blk" / Int64ul,
    "clusters" / Int32ul,
    "flags" / Int8ul,
    Padding(3),
    "dir_blkno" / Int64ul,
    "num_entries" / Int32ul,
    Padding(4),
    "free_blk" / Int64ul,
    "suballoc_loc" / Int64ul,
    Padding(14 * 8),
)
DX_ROOT_LIST = 0xC0
assert DxRoot.sizeof() == DX_ROOT_LIST
DX_FLAG_INLINE = 0x1

DxLeaf = Struct(
    "signature" / Bytes(8),
    "check" / BlockCheck,
    "blkno" / Int64ul,
    "fs_generation" / Int32ul,
    Padding(12),
)
DX_LEAF_LIST = 0x28
assert DxLeaf.sizeof() == DX_LEAF_LIST

DxEntryList = Struct("reserved" / Int32ul, "count" / Int16ul, "num_used" / Int16ul)
DxEntry = Struct("major_hash" / Int32ul, "minor_hash" / Int32ul, "dirent_blk" / Int64ul)

RefcountBlock = Struct(
    "signature" / Bytes(8),
    "suballoc_slot" / Int16ul,
    "suballoc_bit" / Int16ul,
    "fs_generation" / Int32ul,
    "blkno" / Int64ul,
    "parent" / Int64ul,
    "check" / BlockCheck,
    "last_eb_blk" / Int64ul,
    "count" / Int32ul,
    "flags" / Int32ul,
    "clusters" / Int32ul,
    "cpos" / Int32ul,
    "generation" / Int32ul,
    Padding(4),
    "suballoc_loc" / Int64ul,
    Padding(6 * 8),
)
REFCOUNT_LIST = 0x80
assert RefcountBlock.sizeof() == REFCOUNT_LIST
REFCOUNT_LEAF = 0x1
REFCOUNT_TREE = 0x2

RefcountListHeader = Struct("count" / Int16ul, "used" / Int16ul, Padding(12))
RefcountRec = Struct("cpos" / Int64ul, "clusters" / Int32ul, "refcount" / Int32ul)

ExtendedSlot = Struct("valid" / Int8ul, Padding(3), "node" / Int32ul)

HeartbeatBlock = Struct(
    "seq" / Int64ul,
    "node" / Int8ul,
    Padding(3),
    "checksum" / Int32ul,
    "generation" / Int64ul,
    "dead_ms" / Int32ul,
)
HEARTBEAT_CHECKSUM_AT = 0xC
