"""Packs: many sealed blobs in one immutable ``data`` object.

Layout of a pack::

    blob 0 | blob 1 | ... | header (sealed, aad "pack header") | header length (u32 LE)

The header lists every blob as a 49-byte record ``type (u8) | id (32) | offset (u64 LE) |
stored length (u32 LE) | plaintext length (u32 LE)``, so the index can be rebuilt from the
packs alone. The pack's name is the blake3 of all its bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import IntegrityError
from .crypto import Keys, object_name

ENTRY = struct.Struct("<B32sQII")
TAIL = struct.Struct("<I")
HEADER_AAD = b"pack header"
#: a pack is closed when it holds this many bytes: 16 MiB keeps listings and partly used
#: packs small while each put moves enough to be efficient (restic's default too)
TARGET_SIZE = 16 << 20
MAX_BLOBS = 20_000  # and at most this many blobs (compressible cells are small)
MAX_HEADER = 64 << 20


class BlobType:
    DATA = 0   # a chunk of a disk or of a file
    TREE = 1   # a manifest leaf (a disk's cell list)


@dataclass(frozen=True)
class PackEntry:
    type: int
    id: bytes
    offset: int
    length: int       # stored (sealed) bytes
    raw_length: int   # plaintext bytes


class PackWriter:
    """Collects sealed blobs until the pack is big enough, then gives its bytes."""

    def __init__(self, keys: Keys):
        self.keys = keys
        self.parts: list[bytes] = []
        self.entries: list[PackEntry] = []
        self.size = 0

    def add(self, type_: int, blob_id: bytes, sealed: bytes, raw_length: int) -> None:
        self.entries.append(PackEntry(type_, blob_id, self.size, len(sealed), raw_length))
        self.parts.append(sealed)
        self.size += len(sealed)

    @property
    def full(self) -> bool:
        return self.size >= TARGET_SIZE

    def finish(self) -> tuple[str, bytes, list[PackEntry]]:
        """(name, bytes, entries) of the finished pack."""
        header = b"".join(ENTRY.pack(e.type, e.id, e.offset, e.length, e.raw_length)
                          for e in self.entries)
        sealed = self.keys.seal(header, HEADER_AAD)
        data = b"".join([*self.parts, sealed, TAIL.pack(len(sealed))])
        return object_name(data), data, self.entries


def read_header(keys: Keys, data: bytes, name: str) -> list[PackEntry]:
    """The entries of a whole pack's bytes, checked to lie inside it."""
    what = f"pack {name}"
    if len(data) < TAIL.size:
        raise IntegrityError(f"{what} is {len(data)} bytes, too short for a pack")
    (hlen,) = TAIL.unpack_from(data, len(data) - TAIL.size)
    start = len(data) - TAIL.size - hlen
    if hlen > MAX_HEADER or start < 0:
        raise IntegrityError(f"{what}: header length {hlen} does not fit the pack")
    raw = keys.unseal(data[start:len(data) - TAIL.size], HEADER_AAD, f"{what} header")
    if len(raw) % ENTRY.size:
        raise IntegrityError(f"{what}: header is {len(raw)} bytes, not whole records")
    entries = [PackEntry(*ENTRY.unpack_from(raw, i)) for i in range(0, len(raw), ENTRY.size)]
    for e in entries:
        if e.offset + e.length > start:
            raise IntegrityError(f"{what}: blob {e.id.hex()[:16]} lies past the blobs")
    return entries
