"""OCFS2 flag and feature values, with the names ocfs2-tools prints for them."""

from __future__ import annotations

import enum
import functools

COMPAT = {0x1: "backup-super", 0x2: "strict-journal-super"}
INCOMPAT = {0x2: "heartbeat-device", 0x4: "aborted-resize", 0x8: "local", 0x10: "sparse",
            0x20: "aborted-tunefs", 0x40: "inline-data", 0x80: "userspace-stack",
            0x100: "extended-slotmap", 0x200: "xattr", 0x400: "indexed-dirs",
            0x800: "metaecc", 0x1000: "refcount", 0x2000: "discontig-bg",
            0x4000: "clusterinfo", 0x8000: "append-dio"}
RO_COMPAT = {0x1: "unwritten", 0x2: "usrquota", 0x4: "grpquota"}


class Incompat(enum.IntFlag):
    HEARTBEAT_DEV = 0x2
    RESIZE_INPROG = 0x4
    LOCAL_MOUNT = 0x8
    SPARSE = 0x10
    TUNEFS_INPROG = 0x20
    INLINE_DATA = 0x40
    USERSPACE_STACK = 0x80
    EXTENDED_SLOT_MAP = 0x100
    XATTR = 0x200
    INDEXED_DIRS = 0x400
    META_ECC = 0x800
    REFCOUNT = 0x1000
    DISCONTIG_BG = 0x2000
    CLUSTERINFO = 0x4000
    APPEND_DIO = 0x8000


class InodeFlag(enum.IntFlag):
    VALID = 0x1
    ORPHANED = 0x4
    SYSTEM = 0x10
    SUPER_BLOCK = 0x20
    LOCAL_ALLOC = 0x40
    BITMAP = 0x80
    JOURNAL = 0x100
    HEARTBEAT = 0x200
    CHAIN = 0x400
    DEALLOC = 0x800
    QUOTA = 0x1000
    DIO_ORPHANED = 0x2000


class DynFeature(enum.IntFlag):
    INLINE_DATA = 0x1
    HAS_XATTR = 0x2
    INLINE_XATTR = 0x4
    INDEXED_DIR = 0x8
    HAS_REFCOUNT = 0x10


class ExtentFlag(enum.IntFlag):
    UNWRITTEN = 0x1     # allocated, reads as zeros
    REFCOUNTED = 0x2    # shared with another inode (reflink), copy-on-write


JOURNAL_DIRTY = 0x1     # ij_flags: the journal needs recovery
STACK_GLOBAL_HEARTBEAT = 0x1

# dirent file_type values
DIRENT_TYPES = {1: "file", 2: "dir", 3: "chr", 4: "blk", 5: "fifo", 6: "sock", 7: "symlink"}


def names(value: int, table: dict[int, str]) -> list[str]:
    """Feature names set in ``value``; unknown bits as ``0x..``."""
    out = [name for bit, name in table.items() if value & bit]
    unknown = value & ~sum(table)
    if unknown:
        out.append(f"unknown-{unknown:#x}")
    return out


def flag_names(value: int, flag_type: type[enum.IntFlag]) -> list[str]:
    return list(_flag_names(value, flag_type))


@functools.lru_cache(maxsize=1024)  # a listing asks for the same few values thousands of times
def _flag_names(value: int, flag_type: type[enum.IntFlag]) -> tuple[str, ...]:
    out = [f.name.lower() for f in flag_type if value & f.value]
    unknown = value & ~sum(f.value for f in flag_type)
    if unknown:
        out.append(f"unknown-{unknown:#x}")
    return tuple(out)
