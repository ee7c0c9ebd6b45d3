"""Fixed, aligned chunking over an allocation map.

A stream (a disk, a file) is cut into cells of ``cell_size`` bytes at multiples of
``cell_size`` (the last cell may be shorter), so a changed block always maps to the same cell
and unchanged cells of the next backup give the same chunks. From the map alone, each cell is
DATA (some byte of it is DATA: the cell is read whole), else ZERO (some of it is known zero)
else HOLE; ZERO and HOLE cells are never read. A DATA cell that reads as all zeros is
recorded as ZERO by the archiver.
"""

from __future__ import annotations

import bisect
import concurrent.futures
from collections.abc import Iterator
from typing import NamedTuple

from ..source import Alloc, ByteSource
from .ahead import Ahead

_RANK = {Alloc.HOLE: 0, Alloc.ZERO: 1, Alloc.DATA: 2}


class Segment(NamedTuple):
    first: int   # cell number
    count: int   # cells
    kind: Alloc


def cell_count(size: int, cell_size: int) -> int:
    return -(-size // cell_size)


def _cells_of(src: ByteSource, cell_size: int, start: int, end: int
              ) -> Iterator[tuple[int, int, Alloc]]:
    """(first cell, count, kind) from each run; a cell shared by two runs is reported once,
    with the stronger kind (DATA over ZERO over HOLE)."""
    pending: tuple[int, Alloc] | None = None  # the cell the previous run ended inside of
    for run in src.extents(start, end - start):
        first, last = run.offset // cell_size, (run.end - 1) // cell_size
        ends_inside = run.end % cell_size != 0 and run.end != end
        if pending is not None:
            cell, kind = pending
            pending = None
            if cell == first:  # this run goes on inside that cell
                kind = max(kind, run.kind, key=_RANK.__getitem__)
                if first == last and ends_inside:
                    pending = (cell, kind)
                    continue
                first += 1
            yield cell, 1, kind
            if first > last:
                continue
        if ends_inside:
            if last > first:
                yield first, last - first, run.kind
            pending = (last, run.kind)
        else:
            yield first, last - first + 1, run.kind
    if pending is not None:
        yield pending[0], 1, pending[1]


def segments(src: ByteSource, cell_size: int, first: int = 0, count: int | None = None
             ) -> Iterator[Segment]:
    """Runs of cells of one kind covering cells ``[first, first + count)`` of ``src`` (all
    of it by default) exactly, in order."""
    total = cell_count(src.size, cell_size)
    last = total if count is None else min(total, first + count)
    start, end = first * cell_size, min(src.size, last * cell_size)
    if end <= start:
        return
    current: Segment | None = None
    for first, count, kind in _cells_of(src, cell_size, start, end):
        if current and current.kind is kind and current.first + current.count == first:
            current = Segment(current.first, current.count + count, kind)
            continue
        if current:
            yield current
        current = Segment(first, count, kind)
    if current:
        yield current


class MapWindow:
    """`segments` of many small spans of one source, asked in increasing order (a change
    hint's scattered cells): the map is asked once per window of ``window`` cells (windows
    at multiples of it), each by a job of ``pool``, the next two ahead (see `ahead`; 12,000
    ``SEEK_DATA`` and ``SEEK_HOLE`` calls on a flat extent cost the archiver's thread 0.4 s).
    Each window is asked for once at most, so the map is walked no more than once in all."""

    def __init__(self, src: ByteSource, cell_size: int, window: int,
                 pool: concurrent.futures.Executor):
        self.src, self.cell_size, self.window = src, cell_size, window
        self._windows = Ahead(pool, self._window, limit=3)

    def _window(self, k: int) -> tuple[list[Segment], list[int]]:
        segs = list(segments(self.src, self.cell_size, k * self.window, self.window))
        return segs, [s.first for s in segs]

    def segments(self, first: int, count: int) -> Iterator[Segment]:
        """As `segments` (src, cell_size, first, count)."""
        end = first + count
        if count >= self.window:
            yield from segments(self.src, self.cell_size, first, count)
            return
        for k in range(first // self.window, -(-end // self.window)):
            self._windows.want(k + 1)
            self._windows.want(k + 2)
            segs, firsts = self._windows.get(k)
            for seg in segs[max(bisect.bisect_right(firsts, first) - 1, 0):]:
                lo, hi = max(seg.first, first), min(seg.first + seg.count, end)
                if lo >= end:
                    break
                if hi > lo:
                    yield Segment(lo, hi - lo, seg.kind)
