"""Hosted sparse VMDK extents ("KDMV"): header and embedded descriptor.

Used by monolithicSparse, twoGbMaxExtentSparse (``-s001.vmdk``) and streamOptimized disks.
The 512-byte header is packed little-endian; sizes and offsets are in 512-byte sectors.
``gdOffset`` may be ``GD_AT_END`` in streamOptimized files written by VMware; the real value
is then in the footer, a copy of the header 1024 bytes before the end of the file.
"""

from __future__ import annotations

import array
import enum
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..layout import Bytes, Const, Int8ul, Int16ul, Int32ul, Int64ul, Struct

from ...cache import LruCache
from ...errors import FormatError, Problem, TruncatedError, check_limit
from ...report import Report, Table
from ...source import Alloc, ByteSource, Run, clip, inside, merge_runs
from . import descriptor as descriptor_mod

try:  # zlib-ng inflates grains 4-5x faster than zlib (docs/benchmarks.md); same streams
    from zlib_ng import zlib_ng as zlib
except ImportError:  # pragma: no cover - the dependency is optional at run time
    import zlib  # type: ignore[no-redef]

KIND = "vmdk-sparse"
MAGIC = b"KDMV"
SECTOR = 512
GD_AT_END = 0xFFFFFFFFFFFFFFFF
MAX_DESCRIPTOR_SECTORS = 2048  # 1 MiB; real descriptors are a few sectors

SparseHeader = Struct(
    "magic" / Const(MAGIC),
    "version" / Int32ul,
    "flags" / Int32ul,
    "capacity" / Int64ul,
    "grain_size" / Int64ul,
    "descriptor_offset" / Int64ul,
    "descriptor_size" / Int64ul,
    "num_gtes_per_gt" / Int32ul,
    "rgd_offset" / Int64ul,
    "gd_offset" / Int64ul,
    "overhead" / Int64ul,
    "unclean_shutdown" / Int8ul,
    "newline_check" / Bytes(4),
    "compress_algorithm" / Int16ul,
    "pad" / Bytes(433),
)
assert SparseHeader.sizeof() == SECTOR


class SparseFlags(enum.IntFlag):
    VALID_NEWLINE_TEST = 0x1
    REDUNDANT_GD = 0x2
    ZEROED_GRAIN_GTE = 0x4
    COMPRESSED = 0x10000
    MARKERS = 0x20000


@dataclass
class Header:
    version: int
    flags: SparseFlags
    capacity: int
    grain_size: int
    descriptor_offset: int
    descriptor_size: int
    num_gtes_per_gt: int
    rgd_offset: int
    gd_offset: int
    overhead: int
    unclean_shutdown: bool
    newline_ok: bool
    compress_algorithm: int

    @property
    def stream_optimized(self) -> bool:
        return bool(self.flags & SparseFlags.MARKERS)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "flags": int(self.flags),
                "flag_names": [f.name for f in SparseFlags if f in self.flags],
                "capacity_sectors": self.capacity, "grain_sectors": self.grain_size,
                "descriptor_offset": self.descriptor_offset,
                "descriptor_sectors": self.descriptor_size,
                "gtes_per_gt": self.num_gtes_per_gt, "rgd_offset": self.rgd_offset,
                "gd_offset": None if self.gd_offset == GD_AT_END else self.gd_offset,
                "gd_at_end": self.gd_offset == GD_AT_END, "overhead_sectors": self.overhead,
                "unclean_shutdown": self.unclean_shutdown, "newline_check_ok": self.newline_ok,
                "compress_algorithm": self.compress_algorithm}


def parse_header(raw: bytes, source: str = "<bytes>", offset: int = 0) -> Header:
    """Decode a 512-byte KDMV header."""
    if raw[:4] != MAGIC:
        raise FormatError(f"bad magic {raw[:4]!r}, expected {MAGIC!r}", source=source, offset=offset)
    if len(raw) < SECTOR:
        raise FormatError("sparse header is cut short", source=source, offset=offset + len(raw))
    h = SparseHeader.parse(raw[:SECTOR])
    return Header(h.version, SparseFlags(h.flags), h.capacity, h.grain_size,
                  h.descriptor_offset, h.descriptor_size, h.num_gtes_per_gt, h.rgd_offset,
                  h.gd_offset, h.overhead, bool(h.unclean_shutdown),
                  h.newline_check == b"\n \r\n", h.compress_algorithm)


def read_header(src: ByteSource) -> Header:
    return parse_header(src.read_exact(0, SECTOR, "sparse header"), src.name)


def embedded_descriptor(src: ByteSource, header: Header) -> descriptor_mod.Descriptor | None:
    """The descriptor text stored inside the extent, or None when it has none."""
    if header.descriptor_offset == 0 or header.descriptor_size == 0:
        return None
    if header.descriptor_size > MAX_DESCRIPTOR_SECTORS:
        raise FormatError(f"embedded descriptor of {header.descriptor_size} sectors is "
                          f"larger than {MAX_DESCRIPTOR_SECTORS}", source=src.name, offset=36)
    offset = header.descriptor_offset * SECTOR
    if offset >= src.size:
        raise FormatError(f"descriptor offset {offset:#x} is past the end ({src.size:#x})",
                          source=src.name, offset=28)
    data = src.read(offset, header.descriptor_size * SECTOR)
    return descriptor_mod.parse(data, f"{src.name} (embedded descriptor @ {offset:#x})")


def header_problems(header: Header) -> list[str]:
    """Plausibility checks that do not stop decoding."""
    problems = []
    g = header.grain_size
    if g == 0 or g & (g - 1) or g < 8:
        problems.append(f"grain size {g} sectors is not a power of two >= 8")
    if header.num_gtes_per_gt != 512:
        problems.append(f"{header.num_gtes_per_gt} grain table entries per table, expected 512")
    if header.version not in (1, 2, 3):
        problems.append(f"unknown sparse version {header.version}")
    if not header.newline_ok and header.flags & SparseFlags.VALID_NEWLINE_TEST:
        problems.append("newline check bytes are damaged (file was transferred in text mode?)")
    if header.unclean_shutdown:
        problems.append("the extent was not closed cleanly (unclean shutdown flag set)")
    return problems


def sniff(head: bytes) -> bool:
    return head[:4] == MAGIC


def inspect(src: ByteSource) -> Report:
    header = read_header(src)
    warnings = header_problems(header)
    desc = embedded_descriptor(src, header)
    fields = {"capacity": f"{header.capacity * SECTOR} bytes ({header.capacity} sectors)",
              "grain": f"{header.grain_size * SECTOR} bytes", "version": header.version,
              "stream optimized": header.stream_optimized}
    tables: list[Table] = []
    data: dict[str, Any] = {"header": header.to_dict(), "descriptor": None}
    if desc is not None:
        desc_fields, tables = descriptor_mod.report_parts(desc)
        fields.update(desc_fields)
        data["descriptor"] = desc.to_dict()
        warnings += desc.warnings
        if desc.capacity_sectors and desc.capacity_sectors != header.capacity and \
                len(desc.extents) == 1:
            warnings.append(f"descriptor extent has {desc.capacity_sectors} sectors, "
                            f"header capacity is {header.capacity}")
    title = "VMDK streamOptimized extent" if header.stream_optimized else "VMDK sparse extent"
    return Report(KIND, title, data, fields, tables, warnings)


# --- reading grains -----------------------------------------------------------------------

MAX_GRAIN_SECTORS = 2048          # 1 MiB; VMware uses 128
MAX_CAPACITY_SECTORS = 1 << 40    # 512 TiB, far above any hosted sparse disk
MAX_GD_BYTES = 256 << 20
GT_CACHE = 4096                   # grain tables kept in memory (2 KiB each for 512 entries)

_UNREAD = object()
GrainMarker = Struct("lba" / Int64ul, "size" / Int32ul)  # layout; read by hand on hot paths
MetaMarker = Struct("sectors" / Int64ul, "size" / Int32ul, "type" / Int32ul)


class MarkerType(enum.IntEnum):
    EOS = 0
    GRAIN_TABLE = 1
    GRAIN_DIRECTORY = 2
    FOOTER = 3


def _entry_runs(entries: array.array, zeroed_grains: bool) -> list[tuple[int, Alloc]]:
    """(count, kind) runs of grain table ``entries``: 0 is a HOLE, 1 a ZERO grain where the
    header says so, anything else DATA. Runs of zeros are found with C-speed searches (a
    map of a 2 TiB disk has 33 million entries)."""
    raw = entries.tobytes()
    runs: list[tuple[int, Alloc]] = []
    pos, n = 0, len(entries)
    while pos < n:
        try:
            zero = entries.index(0, pos)
        except ValueError:
            zero = n
        if zero > pos:  # entries [pos, zero) are not 0
            data = entries[pos:zero]
            if zeroed_grains and 1 in data:
                runs += [(1, Alloc.ZERO if e == 1 else Alloc.DATA) for e in data]
            else:
                runs.append((zero - pos, Alloc.DATA))
        if zero == n:
            break
        rest = raw[zero * 4:].lstrip(b"\0")  # from the first byte of an entry that is not 0
        pos = (len(raw) - len(rest)) // 4
        runs.append((pos - zero, Alloc.HOLE))
    return runs


def _uint32s(raw: bytes) -> array.array:
    table = array.array("I")
    table.frombytes(raw)
    if sys.byteorder == "big":
        table.byteswap()
    return table


def _assemble(start: int, end: int, pieces: list[tuple[int, bytes]]) -> bytes:
    """Join (offset, bytes) pieces into [start, end), zeros between them, copying once."""
    if len(pieces) == 1 and pieces[0][0] == start and len(pieces[0][1]) == end - start:
        return pieces[0][1]
    parts, pos = [], start
    for vstart, data in sorted(pieces, key=lambda p: p[0]):
        if vstart > pos:
            parts.append(bytes(vstart - pos))
        parts.append(data)
        pos = vstart + len(data)
    if pos < end:
        parts.append(bytes(end - pos))
    return b"".join(parts)


class SparseExtent(ByteSource):
    """A hosted sparse extent (monolithicSparse, -s001, streamOptimized) as ``capacity`` bytes.

    Unallocated grains are HOLE runs (they fall through to a parent disk); zeroed-grain
    entries are ZERO runs. Grain tables are read lazily and the allocation map never reads
    grain data. Compressed grains (streamOptimized) are inflated one at a time.
    """

    def __init__(self, src: ByteSource, header: Header | None = None, *, salvage: bool = False):
        self.file = src
        self.name = src.name
        self.salvage = salvage
        self.damaged: list[Problem] = []  # with salvage: what read as zeros, and why
        header = header or read_header(src)
        if header.gd_offset == GD_AT_END:
            header = self._footer(src)
        self.header = header
        self.compressed = bool(header.flags & SparseFlags.COMPRESSED)
        self.zeroed_grains = bool(header.flags & SparseFlags.ZEROED_GRAIN_GTE)
        g = header.grain_size
        if g < 1 or g > MAX_GRAIN_SECTORS or g & (g - 1):
            raise FormatError(f"grain size {g} sectors is not a power of two up to "
                              f"{MAX_GRAIN_SECTORS}", source=src.name, offset=20)
        check_limit(header.capacity, MAX_CAPACITY_SECTORS, "capacity (sectors)",
                    source=src.name, offset=12)
        check_limit(header.num_gtes_per_gt, 4096, "grain table entries per table",
                    source=src.name, offset=44)
        if header.num_gtes_per_gt == 0:
            raise FormatError("zero grain table entries per table", source=src.name, offset=44)
        self.size = header.capacity * SECTOR
        self.grain_bytes = g * SECTOR
        self.gt_span = header.num_gtes_per_gt * self.grain_bytes
        self.gd = self._read_gd(header.gd_offset)
        self._gt_cache = LruCache(GT_CACHE)  # shared by reading threads, like the next one
        self._last_grain: tuple[int, bytes] | None = None  # replaced whole, never changed

    @staticmethod
    def _footer(src: ByteSource) -> Header:
        """The copy of the header near the end of a streamOptimized file (real gdOffset)."""
        offset = src.size - 2 * SECTOR
        if offset < SECTOR:
            raise FormatError("grain directory is at the end but the file has no footer",
                              source=src.name, offset=56)
        footer = parse_header(src.read_exact(offset, SECTOR, "footer"), src.name, offset)
        if footer.gd_offset == GD_AT_END:
            raise FormatError("footer has no grain directory offset", source=src.name,
                              offset=offset + 56)
        return footer

    def _read_gd(self, gd_sector: int) -> array.array:
        count = -(-self.size // self.gt_span)
        nbytes = count * 4
        offset = gd_sector * SECTOR
        check_limit(nbytes, MAX_GD_BYTES, "grain directory size", source=self.name, offset=56)
        if offset + nbytes > self.file.size:
            raise FormatError(f"grain directory of {count} entries at {offset:#x} runs past "
                              f"the end of the file ({self.file.size:#x})",
                              source=self.name, offset=offset)
        return _uint32s(self.file.read_exact(offset, nbytes, "grain directory"))

    def _gt(self, index: int) -> array.array | None:
        """Grain table ``index``; None where the directory has no table or it is all zero."""
        sector = self.gd[index]
        if sector == 0:
            return None
        table = self._gt_cache.get(index, _UNREAD)
        if table is _UNREAD:
            nbytes = self.header.num_gtes_per_gt * 4
            offset = sector * SECTOR
            if offset + nbytes > self.file.size:
                error = FormatError(f"grain directory entry {index} points past the end "
                                    f"({offset:#x})", source=self.name,
                                    offset=self.header.gd_offset * SECTOR + 4 * index)
                if not self.salvage:
                    raise error
                self._record(index * self.gt_span, self.gt_span, error)
                self._gt_cache.put(index, None)
                return None
            raw = self.file.read_exact(offset, nbytes, "grain table")
            table = None if raw == bytes(nbytes) else _uint32s(raw)
            self._gt_cache.put(index, table)
        return table

    def close(self) -> None:
        self.file.close()

    def _record(self, offset: int, length: int, error: FormatError) -> None:
        """Salvage: note a range that reads as zeros because its grains are damaged."""
        if len(self.damaged) < 1000:
            note = Problem(f"{offset:#x}+{length:#x} read as zeros: {error}",
                           source=error.source, offset=error.offset, kind=error.kind)
            if note not in self.damaged:
                self.damaged.append(note)

    def check(self, limit: int = 20) -> list[str]:
        """Problems of the grain tables, found without reading grain data: grains that start
        inside the metadata, run past the end of the file, or share file space (up to
        ``limit`` messages). Memory: one bit per grain-sized slot of the file."""
        problems: list[str] = []
        g = self.header.grain_size
        file_sectors = -(-self.file.size // SECTOR)
        used = bytearray(file_sectors // g // 8 + 1)
        per_gt = self.header.num_gtes_per_gt
        for gt_index in range(len(self.gd)):
            table = self._gt(gt_index)
            if table is None:
                continue
            table_offset = self.gd[gt_index] * SECTOR
            for i, entry in enumerate(table):
                if self._kind(entry) is not Alloc.DATA:
                    continue
                grain = gt_index * per_gt + i
                where = f"grain {grain} (table entry at {table_offset + 4 * i:#x})"
                if entry < self.header.overhead:
                    problems.append(f"{where} points into the metadata (sector {entry})")
                elif entry >= file_sectors or (not self.compressed and entry + g > file_sectors
                                               and grain * self.grain_bytes + self.grain_bytes
                                               <= self.size):
                    problems.append(f"{where} points past the end of the file (sector {entry})")
                elif not self.compressed and entry % g == 0:
                    slot = entry // g
                    if used[slot >> 3] & (1 << (slot & 7)):
                        problems.append(f"{where} shares sector {entry} with another grain")
                    used[slot >> 3] |= 1 << (slot & 7)
                if len(problems) >= limit:
                    return problems + ["(more problems not listed)"]
        return problems

    def _kind(self, entry: int) -> Alloc:
        if entry == 0:
            return Alloc.HOLE
        if entry == 1 and self.zeroed_grains:
            return Alloc.ZERO
        return Alloc.DATA

    def grain_entries(self, start: int, end: int) -> Iterator[tuple[int, int, int]]:
        """(first grain, table entry, grain count) covering grains [start, end): one triple per
        grain, or one per table where the table is missing or empty."""
        per_gt = self.header.num_gtes_per_gt
        grain = start
        while grain < end:
            gt_index, first = divmod(grain, per_gt)
            stop = min(end, (gt_index + 1) * per_gt)
            table = self._gt(gt_index)
            if table is None:
                yield grain, 0, stop - grain
            else:
                base = gt_index * per_gt
                for i in range(first, first + stop - grain):
                    yield base + i, table[i], 1
            grain = stop

    def _data_grains(self, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
        """(grain, table entry, lo, hi) of each DATA grain holding bytes of [start, end),
        ``[lo, hi)`` being its part of that range (virtual offsets)."""
        gb = self.grain_bytes
        for grain, entry, _ in self.grain_entries(start // gb, -(-end // gb)):
            if self._kind(entry) is Alloc.DATA:
                yield grain, entry, max(grain * gb, start), min((grain + 1) * gb, end)

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Run]:
        start, end = clip(self.size, offset, length)
        gb, per_gt = self.grain_bytes, self.header.num_gtes_per_gt

        def runs() -> Iterator[Run]:
            grain, last = start // gb, -(-end // gb)
            while grain < last:  # table by table
                gt_index, first = divmod(grain, per_gt)
                stop = min(last, (gt_index + 1) * per_gt)
                table = self._gt(gt_index)
                entries = _entry_runs(table[first:first + stop - grain], self.zeroed_grains) \
                    if table is not None else [(stop - grain, Alloc.HOLE)]
                for count, kind in entries:
                    lo, hi = max(grain * gb, start), min((grain + count) * gb, end)
                    yield Run(lo, hi - lo, kind)
                    grain += count

        return merge_runs(runs()) if end > start else iter(())

    def _grain_data(self, grain: int, entry: int,
                    window: tuple[int, bytes] | None = None) -> bytes:
        """The bytes of one allocated grain (inflated when compressed). ``window`` is an
        already read (file offset, bytes) span that may hold the grain's marker."""
        offset = entry * SECTOR
        if not self.compressed:
            return self.file.read(offset, self.grain_bytes)
        last = self._last_grain  # one read: another thread may replace it meanwhile
        if last and last[0] == grain:
            return last[1]
        limit = self.grain_bytes + 4096 + self.grain_bytes // 8
        head = None
        if window and window[0] <= offset and offset + 12 <= window[0] + len(window[1]):
            head = window[1][offset - window[0]:offset - window[0] + 12]
        if head is None:
            head = self.file.read_exact(offset, 12, "grain marker")
        size = int.from_bytes(head[8:12], "little")
        if size == 0 or size > limit:
            raise FormatError(f"grain marker of grain {grain} claims {size} compressed bytes",
                              source=self.name, offset=offset + 8)
        rel = offset + 12 - window[0] if window else -1
        if window and rel >= 0 and rel + size <= len(window[1]):
            packed = window[1][rel:rel + size]
        else:
            packed = self.file.read_exact(offset + 12, size, "compressed grain")
        try:
            data = zlib.decompressobj().decompress(packed, self.grain_bytes)
        except zlib.error as e:
            raise FormatError(f"compressed grain {grain} is damaged: {e}", source=self.name,
                              offset=offset + 12) from None
        self._last_grain = (grain, data)
        return data

    def _window(self, entries: list[int]) -> tuple[int, bytes] | None:
        """One read covering the markers of several compressed grains, when they lie close
        together (as they do in a stream); None when they are scattered."""
        first, last = min(entries) * SECTOR, max(entries) * SECTOR
        span = last - first + 12 + self.grain_bytes + self.grain_bytes // 8 + 4096
        if span > 2 * len(entries) * self.grain_bytes + (1 << 20):
            return None
        return first, self.file.read(first, span)

    def _inflate(self, packed: list[tuple[int, int, int, int]]) -> list[tuple[int, bytes]]:
        """Inflate compressed grains, reading their markers in one go where they are close."""
        gb = self.grain_bytes

        def one(task: tuple[int, int, int, int]) -> tuple[int, bytes]:
            lo, hi, grain, entry = task
            try:
                data = self._grain_data(grain, entry, window)
                piece = data[lo - grain * gb:hi - grain * gb]
                if len(piece) < hi - lo:
                    raise FormatError(f"compressed grain {grain} inflates to {len(data)} "
                                      f"bytes", source=self.name, offset=entry * SECTOR)
            except FormatError as e:
                if not self.salvage:
                    raise
                self._record(lo, hi - lo, e)
                piece = bytes(hi - lo)
            return lo, piece

        window = self._window([t[3] for t in packed]) if len(packed) > 1 else None
        # one thread: grains inflate in ~30 µs, and handing them to a pool costs more (measured)
        return [one(t) for t in packed]

    def prefetch(self, offset: int, length: int) -> None:
        if self.compressed:  # where a compressed grain ends is known once it is read
            return
        start, end = clip(self.size, offset, length)
        for grain, entry, lo, hi in self._data_grains(start, end):
            self.file.prefetch(entry * SECTOR + lo - grain * self.grain_bytes, hi - lo)

    def read_many(self, ranges: Sequence[tuple[int, int]], what: str = "data") -> list[bytes]:
        """The grains of all ranges in one `read_many` of the file: grains that lie side by
        side there (written one after another) are read as one."""
        if self.compressed or not inside(self.size, ranges):
            return super().read_many(ranges, what)
        gb = self.grain_bytes
        pieces: list[tuple[int, int, int, int]] = []  # (range, virtual offset, file offset, n)
        for k, (offset, length) in enumerate(ranges):
            for grain, entry, lo, hi in self._data_grains(offset, offset + length):
                pieces.append((k, lo, entry * SECTOR + lo - grain * gb, hi - lo))
        try:
            data = self.file.read_many([(f, n) for _, _, f, n in pieces], "grain data")
        except TruncatedError:  # range by range: `read` says which grain (or salvages it)
            return super().read_many(ranges, what)
        found: list[list[tuple[int, bytes]]] = [[] for _ in ranges]
        for (k, lo, _, _), piece in zip(pieces, data):
            found[k].append((lo, piece))
        return [_assemble(offset, offset + length, got)
                for (offset, length), got in zip(ranges, found)]

    def read(self, offset: int, length: int) -> bytes:
        start, end = clip(self.size, offset, length)
        gb = self.grain_bytes
        pieces: list[tuple[int, bytes]] = []  # (virtual offset, bytes) of stored data
        pending: list[int] = []  # [virtual start, file offset, length] of a coalesced read

        def flush() -> None:
            if pending:
                vstart, foff, n = pending
                data = self.file.read(foff, n)
                if len(data) < n:
                    error = TruncatedError(f"grain data at {foff:#x}+{n:#x} runs past the end "
                                           f"of the file", source=self.name,
                                           offset=foff + len(data))
                    if not self.salvage:
                        raise error
                    self._record(vstart + len(data), n - len(data), error)
                pieces.append((vstart, data))
                pending.clear()

        packed: list[tuple[int, int, int, int]] = []  # (lo, hi, grain, entry) to inflate
        for grain, entry, lo, hi in self._data_grains(start, end):
            if self.compressed:
                packed.append((lo, hi, grain, entry))
                continue
            foff = entry * SECTOR + (lo - grain * gb)
            if pending and pending[1] + pending[2] == foff and pending[0] + pending[2] == lo:
                pending[2] += hi - lo
            else:
                flush()
                pending[:] = [lo, foff, hi - lo]
        flush()
        if packed:
            pieces += self._inflate(packed)
        return _assemble(start, end, pieces)
