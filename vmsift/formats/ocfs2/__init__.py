"""OCFS2 (Oracle Cluster File System 2): on-disk layouts and decoders.

`structs` holds the layouts, `records` decodes superblock / inode / extent list / directory
blocks into dataclasses, `cluster` the slot map and heartbeat region, `checksum` the metaecc
and heartbeat CRCs, `flags` the feature and flag names. The volume reader built on them is
`vmsift.datastore.ocfs2.Ocfs2Volume`; docs/formats/ocfs2.md describes the format.
"""

from __future__ import annotations

from ...report import Report
from ...source import ByteSource
from .records import BLOCK_SIZES, SUPERBLOCK_BLKNO
from .structs import SUPERBLOCK_SIGNATURE

KIND = "ocfs2"


def sniff(head: bytes) -> bool:
    """True when ``head`` (the first 64 KiB) holds an OCFS2 superblock at block 2."""
    try:
        return any(head[SUPERBLOCK_BLKNO * bs:SUPERBLOCK_BLKNO * bs + 8] == SUPERBLOCK_SIGNATURE
                   for bs in BLOCK_SIZES)
    except Exception:  # noqa: BLE001 - sniffing never raises
        return False


def inspect(src: ByteSource) -> Report:
    """The volume report (superblock, slot map, heartbeat, journals, orphans ...)."""
    from ...datastore.ocfs2 import Ocfs2Volume  # the reader lives in the datastore layer

    return Ocfs2Volume(src).info()
