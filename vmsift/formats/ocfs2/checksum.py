"""Checksums of OCFS2 metadata (metaecc) and of disk heartbeat blocks.

metaecc: every metadata block carries ``{crc32e u32, ecc u16, pad u16}`` at a per-kind offset;
the CRC is the reflected CRC-32 (polynomial 0xEDB88320) started at ~0 and **not** inverted at
the end, over the whole block with those 8 bytes zeroed. The 16-bit ecc is a Hamming code used
for single-bit repair; vmsift checks only the CRC.

heartbeat: the CRC-32 of the whole heartbeat block with its checksum field zeroed, started at
0 and not inverted at the end.
"""

from __future__ import annotations

import zlib

from .structs import CHECK, HEARTBEAT_CHECKSUM_AT


def metaecc_crc(block: bytes, check_at: int) -> int:
    """The CRC the block at hand should carry at ``check_at``."""
    zeroed = block[:check_at] + bytes(CHECK) + block[check_at + CHECK:]
    return zlib.crc32(zeroed) ^ 0xFFFFFFFF


def stored_crc(block: bytes, check_at: int) -> int:
    return int.from_bytes(block[check_at:check_at + 4], "little")


def metaecc_ok(block: bytes, check_at: int) -> bool:
    return metaecc_crc(block, check_at) == stored_crc(block, check_at)


def heartbeat_crc(block: bytes) -> int:
    at = HEARTBEAT_CHECKSUM_AT
    zeroed = block[:at] + bytes(4) + block[at + 4:]
    return zlib.crc32(zeroed, 0xFFFFFFFF) ^ 0xFFFFFFFF
