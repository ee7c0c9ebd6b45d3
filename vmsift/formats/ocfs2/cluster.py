"""The cluster-membership system files: the slot map and the disk heartbeat region."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from . import structs as S
from .checksum import heartbeat_crc

EMPTY_SLOT = 0xFFFF
MAX_NODES = 255            # o2nm node numbers 0..254: one heartbeat block each
HEARTBEAT_BLOCK = 512      # the kernel writes one logical sector per node; 512 on images


@dataclass
class Slot:
    slot: int
    valid: bool
    node: int | None


def parse_slot_map(data: bytes, max_slots: int, extended: bool) -> list[Slot]:
    """Slots of the ``slot_map`` file: extended (8-byte {valid, node u32} records, as many
    as the file holds) or old-style (u16 node per slot, 0xFFFF empty)."""
    slots = []
    if extended:
        n = min(len(data) // 8, max_slots)
        for i in range(n):
            r = S.ExtendedSlot.parse(data[i * 8:i * 8 + 8])
            slots.append(Slot(i, bool(r.valid), r.node if r.valid else None))
    else:
        n = min(len(data) // 2, max_slots)
        for i in range(n):
            node = int.from_bytes(data[i * 2:i * 2 + 2], "little")
            slots.append(Slot(i, node != EMPTY_SLOT, None if node == EMPTY_SLOT else node))
    return slots


@dataclass
class HeartbeatRecord:
    index: int            # block number inside the region (= node number)
    node: int             # what the block says
    seq: int
    generation: int
    dead_ms: int
    checksum: int
    checksum_ok: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_heartbeat(data: bytes, block: int = HEARTBEAT_BLOCK) -> list[HeartbeatRecord]:
    """The heartbeat blocks a node has written (any non-zero one), in node order."""
    out = []
    for i in range(min(len(data) // block, MAX_NODES)):
        raw = data[i * block:(i + 1) * block]
        if not any(raw):
            continue
        h = S.HeartbeatBlock.parse(raw)
        out.append(HeartbeatRecord(i, h.node, h.seq, h.generation, h.dead_ms, h.checksum,
                                   heartbeat_crc(raw) == h.checksum))
    return out
