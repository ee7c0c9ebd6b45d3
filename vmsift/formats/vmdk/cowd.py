"""COWD sparse extents: the ``-delta.vmdk`` files of ESX snapshots (``createType="vmfsSparse"``).

Layout (little-endian, sizes and offsets in 512-byte sectors, see docs/formats/vmdk-deltas.md):
a 2048-byte header, a grain directory (GD) of ``numGDEntries`` uint32 sector numbers of grain
tables, grain tables (GT) of 4096 uint32 sector numbers of grains, and the grains. A GT or grain
number of 0 means "not in this file": the data comes from the parent disk. All fields are
32-bit, so a COWD extent is at most 2 TiB. ESX uses grains of one sector.

`GrainMapExtent` holds the two-level lookup shared with SESparse (`sesparse.py`): it yields
the allocation map from the tables alone and coalesces contiguous grains into large reads.
"""

from __future__ import annotations

import array
import enum
import itertools
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..layout import Bytes, Const, Int32ul, Struct

from ...cache import LruCache
from ...errors import FormatError, TruncatedError, VmsiftError, check_limit
from ...report import Report, Table
from ...source import Alloc, ByteSource, Run, clip, merge_runs

KIND = "vmdk-cowd"
MAGIC = b"COWD"
SECTOR = 512
HEADER_SIZE = 2048
GTES_PER_GT = 4096
MAX_GRAIN_SECTORS = 1 << 16        # 32 MiB; ESX writes 1
MAX_GD_ENTRIES = 1 << 20           # 2^32 sectors / 4096 entries of one sector
TABLE_CACHE = 256                  # grain tables kept in memory (at most 8 MiB)
READ_CHUNK = 16 << 20              # largest single read of grain data

CowdHeaderStruct = Struct(
    "magic" / Const(MAGIC),
    "version" / Int32ul,
    "flags" / Int32ul,
    "capacity" / Int32ul,
    "grain_size" / Int32ul,
    "gd_offset" / Int32ul,
    "num_gd_entries" / Int32ul,
    "next_free_sector" / Int32ul,
    "link" / Bytes(1028),  # root: geometry; child: parent file name + generation
    "generation" / Int32ul,
    "name" / Bytes(60),
    "description" / Bytes(512),
    "saved_generation" / Int32ul,
    "reserved" / Bytes(8),
    "unclean_shutdown" / Int32ul,
    "pad" / Bytes(396),
)
assert CowdHeaderStruct.sizeof() == HEADER_SIZE

RootPart = Struct("cylinders" / Int32ul, "heads" / Int32ul, "sectors" / Int32ul)
ChildPart = Struct("parent_file_name" / Bytes(1024), "parent_generation" / Int32ul)


class CowdFlags(enum.IntFlag):
    ROOT = 0x1            # the 1028-byte union holds a geometry, not a parent name
    CHECK_CAPABLE = 0x2
    INCONSISTENT = 0x4


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


@dataclass
class CowdHeader:
    version: int
    flags: CowdFlags
    capacity: int           # sectors
    grain_size: int         # sectors
    gd_offset: int          # sector of the grain directory
    num_gd_entries: int
    next_free_sector: int
    geometry: tuple[int, int, int] | None   # root extents: cylinders, heads, sectors
    parent_file_name: str | None            # child extents (empty on modern ESX)
    parent_generation: int | None
    generation: int
    name: str
    description: str
    saved_generation: int
    unclean_shutdown: int

    @property
    def root(self) -> bool:
        return bool(self.flags & CowdFlags.ROOT)

    def gd_entries_needed(self) -> int:
        span = GTES_PER_GT * max(self.grain_size, 1)
        return -(-self.capacity // span)

    def to_dict(self) -> dict[str, Any]:
        geometry = None
        if self.geometry is not None:
            geometry = dict(zip(("cylinders", "heads", "sectors"), self.geometry))
        return {"version": self.version, "flags": int(self.flags),
                "flag_names": [f.name for f in CowdFlags if f in self.flags],
                "capacity_sectors": self.capacity, "grain_sectors": self.grain_size,
                "gd_offset": self.gd_offset, "gd_entries": self.num_gd_entries,
                "next_free_sector": self.next_free_sector, "root": self.root,
                "geometry": geometry, "parent_file_name": self.parent_file_name,
                "parent_generation": self.parent_generation, "generation": self.generation,
                "name": self.name, "description": self.description,
                "saved_generation": self.saved_generation,
                "unclean_shutdown": self.unclean_shutdown}


def parse_header(raw: bytes, source: str = "<bytes>") -> CowdHeader:
    """Decode the 2048-byte COWD header."""
    if raw[:4] != MAGIC:
        raise FormatError(f"bad magic {raw[:4]!r}, expected {MAGIC!r}", source=source, offset=0)
    if len(raw) < HEADER_SIZE:
        raise TruncatedError(f"COWD header needs {HEADER_SIZE} bytes, the file has {len(raw)}",
                             source=source, offset=len(raw))
    h = CowdHeaderStruct.parse(raw[:HEADER_SIZE])
    flags = CowdFlags(h.flags)
    geometry = name = generation = None
    if flags & CowdFlags.ROOT:
        g = RootPart.parse(h.link)
        geometry = (g.cylinders, g.heads, g.sectors)
    else:
        c = ChildPart.parse(h.link)
        name, generation = _text(c.parent_file_name), c.parent_generation
    return CowdHeader(h.version, flags, h.capacity, h.grain_size, h.gd_offset,
                      h.num_gd_entries, h.next_free_sector, geometry, name, generation,
                      h.generation, _text(h.name), _text(h.description), h.saved_generation,
                      h.unclean_shutdown)


def read_header(src: ByteSource) -> CowdHeader:
    return parse_header(src.read(0, HEADER_SIZE), src.name)


def header_problems(header: CowdHeader) -> list[str]:
    """Plausibility checks that do not stop decoding."""
    problems = []
    if header.version != 1:
        problems.append(f"unknown COWD version {header.version}")
    if header.num_gd_entries != header.gd_entries_needed():
        problems.append(f"header says {header.num_gd_entries} grain directory entries, the "
                        f"capacity needs {header.gd_entries_needed()}")
    if header.flags & CowdFlags.INCONSISTENT:
        problems.append("the INCONSISTENT flag is set")
    if header.unclean_shutdown:
        problems.append("the extent was not closed cleanly (uncleanShutdown is set)")
    return problems


# --- the two-level grain map, shared with SESparse -----------------------------------------

ZERO_ENTRY = -1  # decoded table value of a grain that reads as zeros without data


def _gallop(ok: Callable[[int], bool], limit: int) -> int:
    """The largest n in [1, limit] with ok(n), given ok(1) and that ok is monotone."""
    good, n = 1, 2
    while n <= limit and ok(n):
        good, n = n, n * 2
    bad = min(n, limit + 1)
    while bad - good > 1:
        mid = (good + bad) // 2
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good


def same_run(table: array.array, i: int, limit: int, value: int) -> int:
    """How many entries from ``table[i]`` (== value) on equal ``value``, at most ``limit``."""
    return _gallop(lambda k: table[i:i + k].count(value) == k, limit)


def contiguous_run(table: array.array, i: int, limit: int, step: int) -> int:
    """How many entries from ``table[i]`` on go up by ``step`` each, at most ``limit``."""
    first = table[i]
    top = (1 << (8 * table.itemsize - table.typecode.islower())) - 1
    limit = min(limit, (top - first) // step + 1)
    return _gallop(lambda k: table[i:i + k] == array.array(
        table.typecode, range(first, first + k * step, step)), limit)


class GrainMapExtent(ByteSource):
    """A sparse extent addressed through a grain directory of grain tables.

    Subclasses set ``file``, ``name``, ``size``, ``grain_sectors``, ``per_gt``, ``gd`` (the
    directory as an array; 0 = no table) and implement `_load_table` (one GT as an array of
    decoded values: 0 = not here (HOLE), `ZERO_ENTRY` = reads as zeros (ZERO), otherwise the
    file sector of the grain (DATA)).
    """

    file: ByteSource
    grain_sectors: int
    per_gt: int
    gd: array.array

    def _init_map(self) -> None:
        self.grain_bytes = self.grain_sectors * SECTOR
        self.grains = -(-self.size // self.grain_bytes)
        self._tables = LruCache(TABLE_CACHE)  # thread-safe: reading threads share it

    def _load_table(self, index: int) -> array.array | None:
        raise NotImplementedError

    def table(self, index: int) -> array.array | None:
        """Grain table ``index`` decoded, or None where the directory has none (cached)."""
        return self._tables.get_or(index, lambda: self._load_table(index))

    def grain_runs(self, start: int, end: int) -> Iterator[tuple[int, int, Alloc, int]]:
        """(first grain, count, kind, file sector) for grains [start, end); DATA runs are
        contiguous in the file too, HOLE/ZERO runs have sector 0."""
        per_gt, g = self.per_gt, self.grain_sectors
        grain = start
        while grain < end:
            index, i = divmod(grain, per_gt)
            stop = min(end - index * per_gt, per_gt)
            table = self.table(index)
            if table is None:  # this and the following empty directory entries: one HOLE
                tables = same_run(self.gd, index, -(-end // per_gt) - index, 0)
                stop = min(end, (index + tables) * per_gt)
                yield grain, stop - grain, Alloc.HOLE, 0
                grain = stop
                continue
            while i < stop:
                entry = table[i]
                limit = stop - i
                if entry == 0:
                    n = same_run(table, i, limit, 0)
                    yield index * per_gt + i, n, Alloc.HOLE, 0
                elif entry == ZERO_ENTRY:
                    n = same_run(table, i, limit, ZERO_ENTRY)
                    yield index * per_gt + i, n, Alloc.ZERO, 0
                else:
                    n = contiguous_run(table, i, limit, g)
                    yield index * per_gt + i, n, Alloc.DATA, entry
                i += n
            grain = index * per_gt + stop

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Run]:
        start, end = clip(self.size, offset, length)
        if end <= start:
            return iter(())
        gb = self.grain_bytes

        def runs() -> Iterator[Run]:
            for grain, count, kind, _ in self.grain_runs(start // gb, -(-end // gb)):
                lo, hi = max(grain * gb, start), min((grain + count) * gb, end)
                yield Run(lo, hi - lo, kind)

        return merge_runs(runs())

    def read(self, offset: int, length: int) -> bytes:
        start, end = clip(self.size, offset, length)
        out = bytearray(end - start)
        gb = self.grain_bytes
        for grain, count, kind, sector in self.grain_runs(start // gb, -(-end // gb)):
            if kind is not Alloc.DATA:
                continue
            lo, hi = max(grain * gb, start), min((grain + count) * gb, end)
            foff = sector * SECTOR + (lo - grain * gb)
            for pos in range(lo, hi, READ_CHUNK):
                n = min(READ_CHUNK, hi - pos)
                data = self.file.read(foff + pos - lo, n)
                if len(data) < n:
                    raise TruncatedError(
                        f"grain data for virtual offset {pos:#x} at {foff + pos - lo:#x}+{n:#x} "
                        f"runs past the end of the file ({self.file.size:#x})",
                        source=self.name, offset=foff + pos - lo + len(data))
                out[pos - start:pos - start + n] = data
        return bytes(out)

    def allocation_counts(self) -> dict[str, int]:
        """Grains per kind (data, zero, hole), from the tables only."""
        counts = {"data": 0, "zero": 0, "hole": 0}
        for _, count, kind, _ in self.grain_runs(0, self.grains):
            counts[kind.value] += count
        return counts

    def close(self) -> None:
        self.file.close()


def uint_array(typecode: str, raw: bytes) -> array.array:
    """Little-endian unsigned integers as an array."""
    table = array.array(typecode)
    table.frombytes(raw)
    if sys.byteorder == "big":
        table.byteswap()
    return table


class CowdExtent(GrainMapExtent):
    """A COWD extent as ``capacity`` bytes: unallocated grains are HOLE (they fall through to
    the parent disk), every other grain is DATA. COWD has no zero-grain marker."""

    def __init__(self, src: ByteSource, header: CowdHeader | None = None):
        self.file = src
        self.name = src.name
        self.header = header = header or read_header(src)
        g = header.grain_size
        if not 1 <= g <= MAX_GRAIN_SECTORS:
            raise FormatError(f"grain size {g} sectors is outside 1..{MAX_GRAIN_SECTORS}",
                              source=src.name, offset=16)
        check_limit(header.num_gd_entries, MAX_GD_ENTRIES, "number of grain directory entries",
                    source=src.name, offset=24)
        self.size = header.capacity * SECTOR
        self.grain_sectors = g
        self.per_gt = GTES_PER_GT
        self._init_map()
        needed = header.gd_entries_needed()
        if header.num_gd_entries < needed:
            raise FormatError(f"the grain directory has {header.num_gd_entries} entries, "
                              f"{header.capacity} sectors need {needed}",
                              source=src.name, offset=24)
        gd_at = header.gd_offset * SECTOR
        if gd_at < HEADER_SIZE and needed:
            raise FormatError(f"grain directory at sector {header.gd_offset} overlaps the "
                              f"header", source=src.name, offset=20)
        if gd_at + needed * 4 > src.size:
            raise TruncatedError(f"grain directory of {needed} entries at {gd_at:#x} runs past "
                                 f"the end of the file ({src.size:#x})", source=src.name,
                                 offset=gd_at)
        self.gd = uint_array("I", src.read_exact(gd_at, needed * 4, "grain directory"))

    def _load_table(self, index: int) -> array.array | None:
        sector = self.gd[index]
        if sector == 0:
            return None
        offset = sector * SECTOR
        nbytes = GTES_PER_GT * 4
        if offset + nbytes > self.file.size:
            raise TruncatedError(f"grain directory entry {index} points to a grain table at "
                                 f"{offset:#x}, past the end of the file ({self.file.size:#x})",
                                 source=self.name,
                                 offset=self.header.gd_offset * SECTOR + 4 * index)
        return uint_array("I", self.file.read_exact(offset, nbytes, "grain table"))


# --- inspect ---------------------------------------------------------------------------------

MAX_TABLES_COUNTED = 4096  # walk at most this many grain tables for the report


def first_runs_table(ext: ByteSource, count: int = 50) -> Table:
    """The first ``count`` runs of an extent's allocation map, for inspect reports."""
    runs = itertools.islice(ext.extents(), count)
    return Table(f"allocation map (first {count} runs)", ["offset", "length", "kind"],
                 [[r.offset, r.length, r.kind.value] for r in runs])


def table_summary(ext: GrainMapExtent) -> dict[str, Any]:
    """Directory entries in use, tables allocated, and whether counting grains is cheap."""
    tables = len(ext.gd) - ext.gd.count(0)
    return {"gd_entries_used": len(ext.gd), "tables_allocated": tables,
            "grain_bytes": ext.grain_bytes, "counted": tables <= MAX_TABLES_COUNTED}


def sniff(head: bytes) -> bool:
    return head[:4] == MAGIC


def inspect(src: ByteSource) -> Report:
    header = read_header(src)
    warnings = header_problems(header)
    fields: dict[str, Any] = {
        "capacity": f"{header.capacity * SECTOR} bytes ({header.capacity} sectors)",
        "grain": f"{header.grain_size * SECTOR} bytes", "version": header.version,
        "flags": ", ".join(f.name for f in CowdFlags if f in header.flags) or "none",
        "grain directory": f"sector {header.gd_offset}, {header.num_gd_entries} entries"}
    if header.parent_file_name:
        fields["parent file name"] = header.parent_file_name
    data: dict[str, Any] = {"header": header.to_dict(), "map": None}
    tables: list[Table] = []
    try:
        ext = CowdExtent(src, header)
        data["map"] = summary = table_summary(ext)
        summary["grains"] = ext.allocation_counts() if summary["counted"] else None
        fields["grain tables"] = summary["tables_allocated"]
        if summary["grains"] is not None:
            fields["allocated"] = f"{summary['grains']['data'] * ext.grain_bytes} bytes"
            tables.append(first_runs_table(ext))
    except VmsiftError as e:
        warnings.append(f"grain map unreadable: {e}")
    return Report(KIND, "VMDK COWD delta extent (vmfsSparse)", data, fields, tables, warnings)
