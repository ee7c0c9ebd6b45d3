"""A stream's cell list (the manifest of a disk or a file), stored as leaves.

Leaf ``i`` covers cells ``[i * LEAF_CELLS, (i + 1) * LEAF_CELLS)``; cutting leaves at fixed
cell numbers means a region that did not change gives the same leaf, which is stored once:
a backup that changes a few regions of a disk writes only their leaves. A leaf is a TREE
blob whose plaintext is a sequence of records::

    0x00 | chunk id (32 bytes)     one DATA cell
    0x01 | count (u32 LE)          count ZERO cells
    0x02 | count (u32 LE)          count HOLE cells

The records of a leaf cover exactly its cells (the last leaf: up to the stream's end).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from ..errors import IntegrityError
from ..source import Alloc

LEAF_CELLS = 1024
_COUNT = struct.Struct("<I")
_TAGS = {Alloc.DATA: 0, Alloc.ZERO: 1, Alloc.HOLE: 2}
_KINDS = {v: k for k, v in _TAGS.items()}


class LeafBuilder:
    """Accumulates the cells of one leaf, in order."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.cells = 0
        self._run: tuple[Alloc, int] | None = None

    def _flush_run(self) -> None:
        if self._run is not None:
            kind, count = self._run
            self.parts.append(bytes([_TAGS[kind]]) + _COUNT.pack(count))
            self._run = None

    def data(self, chunk_id: bytes) -> None:
        self._flush_run()
        self.parts.append(b"\x00" + chunk_id)
        self.cells += 1

    def empty(self, kind: Alloc, count: int) -> None:
        if self._run is not None and self._run[0] is kind:
            self._run = (kind, self._run[1] + count)
        else:
            self._flush_run()
            self._run = (kind, count)
        self.cells += count

    def finish(self) -> bytes:
        self._flush_run()
        return b"".join(self.parts)


def decode_leaf(raw: bytes, cells: int, what: str) -> list[tuple[Alloc, int, bytes | None]]:
    """(kind, cell count, chunk id or None) records of a leaf expected to hold ``cells``."""
    out: list[tuple[Alloc, int, bytes | None]] = []
    pos = total = 0
    while pos < len(raw):
        tag = raw[pos]
        if tag == 0 and pos + 33 <= len(raw):
            out.append((Alloc.DATA, 1, raw[pos + 1:pos + 33]))
            pos, total = pos + 33, total + 1
        elif tag in (1, 2) and pos + 5 <= len(raw):
            (count,) = _COUNT.unpack_from(raw, pos + 1)
            out.append((_KINDS[tag], count, None))
            pos, total = pos + 5, total + count
        else:
            raise IntegrityError(f"{what}: bad record at byte {pos}")
    if total != cells:
        raise IntegrityError(f"{what}: covers {total} cells, not {cells}")
    return out


def leaf_cells(index: int, total_cells: int) -> int:
    """How many cells leaf ``index`` of a stream of ``total_cells`` covers."""
    return min(LEAF_CELLS, total_cells - index * LEAF_CELLS)


def iter_cells(records: list[tuple[Alloc, int, bytes | None]], first: int
               ) -> Iterator[tuple[int, int, Alloc, bytes | None]]:
    """(first cell, count, kind, id) of each record, numbered from ``first``."""
    cell = first
    for kind, count, chunk_id in records:
        yield cell, count, kind, chunk_id
        cell += count
