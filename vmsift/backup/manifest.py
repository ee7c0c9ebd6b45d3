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

import bisect
import struct
from collections.abc import Sequence

from ..errors import IntegrityError
from ..source import Alloc

LEAF_CELLS = 1024
_COUNT = struct.Struct("<I")
_DATA_LEN = 33  # a DATA record: tag and chunk id
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

    def copy(self, leaf: Leaf, lo: int, hi: int) -> int:
        """Cells ``[lo, hi)`` of ``leaf`` as they are there, the records between the first
        and the last one as bytes (the same leaf as adding the cells one by one: the first
        and the last go through `data` / `empty`, so runs join); returns the DATA cells."""
        first, last = leaf.holding(lo), leaf.holding(hi - 1)
        data = self._part(leaf, first, lo, hi)
        if last > first + 1:
            self._flush_run()
            self.parts.append(leaf.raw[leaf.offsets[first + 1]:leaf.offsets[last]])
            self.cells += leaf.starts[last] - leaf.starts[first + 1]
            data += leaf.data_before[last] - leaf.data_before[first + 1]
        if last > first:
            data += self._part(leaf, last, lo, hi)
        return data

    def _part(self, leaf: Leaf, r: int, lo: int, hi: int) -> int:
        kind, _, chunk_id = leaf.record(r)
        if kind is Alloc.DATA:
            self.data(chunk_id)
            return 1
        self.empty(kind, min(hi, leaf.starts[r + 1]) - max(lo, leaf.starts[r]))
        return 0

    def finish(self) -> bytes:
        self._flush_run()
        return b"".join(self.parts)


class Leaf:
    """A stored leaf, indexed without a tuple per record: for each record its first cell,
    its byte offset and the DATA cells before it (each list ends with the leaf's totals).
    Checked as it is indexed: every record whole, no empty runs, exactly ``cells`` cells."""

    def __init__(self, raw: bytes, cells: int, what: str):
        self.raw = raw
        self.starts: Sequence[int]
        self.offsets: Sequence[int]
        self.data_before: Sequence[int]
        if len(raw) == _DATA_LEN * cells and raw[::_DATA_LEN] == bytes(cells):
            # every cell DATA (a disk's written regions): no scan
            self.starts = self.data_before = range(cells + 1)
            self.offsets = range(0, len(raw) + 1, _DATA_LEN)
            return
        starts, offsets, data_before = [], [], []
        pos = cell = data = 0
        while pos < len(raw):  # every record adds a cell or more: at most `cells` rounds
            if cell >= cells:
                raise IntegrityError(f"{what}: covers more than {cells} cells")
            starts.append(cell)
            offsets.append(pos)
            data_before.append(data)
            tag = raw[pos]
            if tag == 0 and pos + _DATA_LEN <= len(raw):
                # a row of DATA records: where the tags at their stride stop being zero
                room = min((len(raw) - pos) // _DATA_LEN, cells - cell)
                tags = raw[pos:pos + room * _DATA_LEN:_DATA_LEN]
                n = len(tags) - len(tags.lstrip(b"\0"))
                starts += range(cell + 1, cell + n)
                offsets += range(pos + _DATA_LEN, pos + n * _DATA_LEN, _DATA_LEN)
                data_before += range(data + 1, data + n)
                pos, cell, data = pos + n * _DATA_LEN, cell + n, data + n
            elif tag in (1, 2) and pos + 5 <= len(raw) and _COUNT.unpack_from(raw, pos + 1)[0]:
                pos, cell = pos + 5, cell + _COUNT.unpack_from(raw, pos + 1)[0]
            else:
                raise IntegrityError(f"{what}: bad record at byte {pos}")
        if cell != cells:
            raise IntegrityError(f"{what}: covers {cell} cells, not {cells}")
        self.starts, self.offsets = starts + [cell], offsets + [pos]
        self.data_before = data_before + [data]

    def record(self, r: int) -> tuple[Alloc, int, bytes | None]:
        """(kind, cell count, chunk id or None) of record ``r``."""
        pos = self.offsets[r]
        tag = self.raw[pos]
        if tag == 0:
            return Alloc.DATA, 1, self.raw[pos + 1:pos + _DATA_LEN]
        return _KINDS[tag], self.starts[r + 1] - self.starts[r], None

    def records(self) -> list[tuple[Alloc, int, bytes | None]]:
        if isinstance(self.offsets, range):
            raw = self.raw
            return [(Alloc.DATA, 1, raw[p + 1:p + _DATA_LEN]) for p in self.offsets[:-1]]
        return [self.record(r) for r in range(len(self.offsets) - 1)]

    def is_data(self, cell: int) -> bool:
        return self.raw[self.offsets[self.holding(cell)]] == 0

    def holding(self, cell: int) -> int:
        """The record that holds ``cell``."""
        return bisect.bisect_right(self.starts, cell) - 1


def decode_leaf(raw: bytes, cells: int, what: str) -> list[tuple[Alloc, int, bytes | None]]:
    """(kind, cell count, chunk id or None) records of a leaf expected to hold ``cells``."""
    return Leaf(raw, cells, what).records()


def leaf_cells(index: int, total_cells: int) -> int:
    """How many cells leaf ``index`` of a stream of ``total_cells`` covers."""
    return min(LEAF_CELLS, total_cells - index * LEAF_CELLS)

