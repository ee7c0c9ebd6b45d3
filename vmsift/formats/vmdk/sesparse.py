"""SESparse extents: ``-sesparse.vmdk`` files of ESXi 6.5+ snapshots (``createType="seSparse"``).

VMware does not publish this format; what is known comes from qemu's read-only driver and
from ESXi's own log lines (see docs/formats/vmdk-deltas.md). All fields are little-endian
uint64, offsets and sizes in 512-byte sectors:

* sector 0, the constant header: magic 0xCAFEBABE, version 2.1, capacity, grain size (8
  sectors), grain table size (64 sectors = 4096 entries), flags, then (offset, size) of the
  volatile header, journal header, journal, grain directory, grain tables, free bitmap,
  back map and grains;
* the volatile header: magic 0xCAFECAFE, free GT number, next transaction number and
  ``replayJournal`` (non-zero: the journal holds updates not yet applied to the tables);
* GD entries: 0 = no table, else 0x10000000_xxxxxxxx with the GT number in the low 32 bits;
* GT entries: the top nibble is the type: 0 not allocated (read the parent), 1 unmapped
  (SCSI UNMAP), 2 zero, 3 allocated with a grain number split across the other bits.

We read unmapped grains (type 1) as zeros, like qemu: falling through to the parent would
bring back pre-snapshot data the guest had discarded (see the format document).
"""

from __future__ import annotations

import array
from dataclasses import dataclass
from typing import Any

from ..layout import Array, Bytes, Int64ul, Struct

from ...errors import FormatError, TruncatedError, UnsupportedError, VmsiftError, check_limit
from ...report import Report, Table
from ...source import ByteSource
from .cowd import ZERO_ENTRY, GrainMapExtent, first_runs_table, table_summary, uint_array

KIND = "vmdk-sesparse"
SECTOR = 512
CONST_MAGIC = 0xCAFEBABE
VOLATILE_MAGIC = 0xCAFECAFE
VERSION = 0x0000000200000001
GRAIN_SECTORS = 8
GT_SECTORS = 64
MAGIC_BYTES = CONST_MAGIC.to_bytes(8, "little")
MAX_CAPACITY_SECTORS = 1 << 37     # 64 TiB, the format's ceiling
MAX_SECTOR = (1 << 54) - 1         # byte offsets stay below 2^63
GD_ALLOCATED = 0x1000000000000000
TYPE_UNALLOCATED, TYPE_UNMAPPED, TYPE_ZERO, TYPE_ALLOCATED = range(4)
TYPE_NAMES = {0: "unallocated", 1: "unmapped", 2: "zero", 3: "allocated"}

REGIONS = ("volatile_header", "journal_header", "journal", "grain_directory", "grain_tables",
           "free_bitmap", "back_map", "grains")
Region = Struct("offset" / Int64ul, "size" / Int64ul)
ConstHeaderStruct = Struct(
    "magic" / Int64ul,
    "version" / Int64ul,
    "capacity" / Int64ul,
    "grain_size" / Int64ul,
    "grain_table_size" / Int64ul,
    "flags" / Int64ul,
    "reserved" / Array(4, Int64ul),
    "regions" / Array(len(REGIONS), Region),
    "pad" / Bytes(304),
)
VolatileHeaderStruct = Struct(
    "magic" / Int64ul,
    "free_gt_number" / Int64ul,
    "next_txn_seq_number" / Int64ul,
    "replay_journal" / Int64ul,
    "pad" / Bytes(480),
)
assert ConstHeaderStruct.sizeof() == VolatileHeaderStruct.sizeof() == SECTOR
REGION_FIELD = {name: 80 + 16 * i for i, name in enumerate(REGIONS)}  # byte offset of offset


@dataclass
class SeSparseHeader:
    """The constant header (sector 0)."""

    magic: int
    version: int
    capacity: int           # sectors
    grain_size: int         # sectors
    grain_table_size: int   # sectors
    flags: int
    reserved: list[int]
    regions: dict[str, tuple[int, int]]   # name -> (offset, size) in sectors
    pad_clean: bool

    def region(self, name: str) -> tuple[int, int]:
        return self.regions[name]

    def to_dict(self) -> dict[str, Any]:
        return {"magic": f"{self.magic:#x}",
                "version": f"{self.version >> 32}.{self.version & 0xFFFFFFFF}",
                "version_raw": self.version, "capacity_sectors": self.capacity,
                "grain_sectors": self.grain_size, "grain_table_sectors": self.grain_table_size,
                "flags": self.flags, "reserved": self.reserved, "pad_is_zero": self.pad_clean,
                "regions": {k: {"offset": o, "sectors": n} for k, (o, n) in self.regions.items()}}


@dataclass
class VolatileHeader:
    magic: int
    free_gt_number: int
    next_txn_seq_number: int
    replay_journal: int
    pad_clean: bool

    @property
    def dirty(self) -> bool:
        return self.replay_journal != 0

    def to_dict(self) -> dict[str, Any]:
        return {"magic": f"{self.magic:#x}", "free_gt_number": self.free_gt_number,
                "next_txn_seq_number": self.next_txn_seq_number,
                "replay_journal": self.replay_journal, "dirty": self.dirty,
                "pad_is_zero": self.pad_clean}


def parse_header(raw: bytes, source: str = "<bytes>") -> SeSparseHeader:
    """Decode the 512-byte constant header."""
    if raw[:8] != MAGIC_BYTES:
        raise FormatError(f"bad magic {raw[:8].hex()}, expected {MAGIC_BYTES.hex()} "
                          f"(SESparse constant header)", source=source, offset=0)
    if len(raw) < SECTOR:
        raise TruncatedError(f"SESparse header needs {SECTOR} bytes, the file has {len(raw)}",
                             source=source, offset=len(raw))
    h = ConstHeaderStruct.parse(raw[:SECTOR])
    regions = {name: (r.offset, r.size) for name, r in zip(REGIONS, h.regions)}
    return SeSparseHeader(h.magic, h.version, h.capacity, h.grain_size, h.grain_table_size,
                          h.flags, list(h.reserved), regions, not any(h.pad))


def read_header(src: ByteSource) -> SeSparseHeader:
    return parse_header(src.read(0, SECTOR), src.name)


def read_volatile_header(src: ByteSource, header: SeSparseHeader) -> VolatileHeader:
    """Decode the volatile header; a wrong magic is a `FormatError`."""
    sector = header.region("volatile_header")[0]
    offset = sector * SECTOR
    if sector == 0:
        raise FormatError("volatile header offset is 0, the constant header's own sector",
                          source=src.name, offset=REGION_FIELD["volatile_header"])
    if offset + SECTOR > src.size:
        raise TruncatedError(f"volatile header at sector {sector} is outside the file "
                             f"({src.size:#x} bytes)", source=src.name,
                             offset=REGION_FIELD["volatile_header"])
    v = VolatileHeaderStruct.parse(src.read_exact(offset, SECTOR, "volatile header"))
    if v.magic != VOLATILE_MAGIC:
        raise FormatError(f"bad volatile header magic {v.magic:#x}, expected "
                          f"{VOLATILE_MAGIC:#x}", source=src.name, offset=offset)
    return VolatileHeader(v.magic, v.free_gt_number, v.next_txn_seq_number, v.replay_journal,
                          not any(v.pad))


def header_problems(header: SeSparseHeader, file_size: int) -> list[str]:
    """Departures from every known file that do not stop reading."""
    problems = []
    if header.flags:
        problems.append(f"flags are {header.flags:#x}, every known file has 0")
    if any(header.reserved):
        problems.append("reserved header fields are not zero")
    if not header.pad_clean:
        problems.append("header padding is not zero")
    end = -(-file_size // SECTOR)
    for name, (offset, size) in header.regions.items():
        if offset > end:
            problems.append(f"{name} starts at sector {offset}, past the end of the file "
                            f"({end} sectors)")
    return problems


def _check_layout(src: ByteSource, header: SeSparseHeader) -> None:
    """The checks without which the tables cannot be read: errors naming the field."""
    if header.version != VERSION:
        raise UnsupportedError(f"SESparse version {header.version:#018x} is not 2.1",
                               source=src.name, offset=8)
    if header.grain_size != GRAIN_SECTORS:
        raise UnsupportedError(f"grain size {header.grain_size} sectors (only "
                               f"{GRAIN_SECTORS} is known)", source=src.name, offset=24)
    if header.grain_table_size != GT_SECTORS:
        raise UnsupportedError(f"grain table size {header.grain_table_size} sectors (only "
                               f"{GT_SECTORS} is known)", source=src.name, offset=32)
    check_limit(header.capacity, MAX_CAPACITY_SECTORS, "capacity (sectors)", source=src.name,
                offset=16)
    for name in ("grain_directory", "grain_tables", "grains"):
        offset = header.region(name)[0]
        if offset == 0:
            raise FormatError(f"{name} region starts at sector 0, inside the header",
                              source=src.name, offset=REGION_FIELD[name])
        if offset * SECTOR > src.size:
            raise TruncatedError(f"{name} region at sector {offset} starts past the end of "
                                 f"the file ({src.size:#x} bytes)", source=src.name,
                                 offset=REGION_FIELD[name])


class SeSparseExtent(GrainMapExtent):
    """An SESparse extent as ``capacity`` bytes: unallocated grains are HOLE (read the parent),
    zero and unmapped grains are ZERO, allocated grains DATA.

    A dirty journal (``replayJournal`` set) means the tables may lack updates that only the
    journal holds: that is an `UnsupportedError` unless ``allow_dirty=True``, which reads the
    tables as they are and records a warning in ``warnings``.
    """

    def __init__(self, src: ByteSource, header: SeSparseHeader | None = None, *,
                 allow_dirty: bool = False):
        self.file = src
        self.name = src.name
        self.warnings: list[str] = []
        self.header = header = header or read_header(src)
        _check_layout(src, header)
        self.volatile = read_volatile_header(src, header)
        if self.volatile.dirty:
            where = header.region("volatile_header")[0] * SECTOR + 24
            if not allow_dirty:
                raise UnsupportedError(
                    "the journal must be replayed first (replayJournal is set: the disk was "
                    "not closed cleanly); pass allow_dirty=True to read the tables as they are",
                    source=src.name, offset=where)
            self.warnings.append(f"{src.name}: journal not replayed (replayJournal @ "
                                 f"{where:#x}); recent writes may be missing")
        self.size = header.capacity * SECTOR
        self.grain_sectors = header.grain_size
        self.per_gt = header.grain_table_size * SECTOR // 8
        self._init_map()
        gd_sector, gd_sectors = header.region("grain_directory")
        needed = -(-header.capacity // (self.per_gt * self.grain_sectors))
        if needed * 8 > gd_sectors * SECTOR:
            raise FormatError(f"grain directory of {gd_sectors} sectors is too small for "
                              f"{needed} tables", source=src.name,
                              offset=REGION_FIELD["grain_directory"] + 8)
        gd_at = gd_sector * SECTOR
        if gd_at + needed * 8 > src.size:
            raise TruncatedError(f"grain directory of {needed} entries at {gd_at:#x} runs past "
                                 f"the end of the file ({src.size:#x})", source=src.name,
                                 offset=gd_at)
        self.gd = uint_array("Q", src.read_exact(gd_at, needed * 8, "grain directory"))
        gts_sector, gts_sectors = header.region("grain_tables")
        self._gts_at = gts_sector * SECTOR
        self._gt_count = gts_sectors // header.grain_table_size
        grains_sector, _ = header.region("grains")
        self._grains_sector = grains_sector

    def _raw_table(self, index: int) -> tuple[array.array, int] | None:
        """GT ``index`` as stored (uint64 entries) and its file offset; None when absent."""
        entry = self.gd[index]
        if entry == 0:
            return None
        where = self.header.region("grain_directory")[0] * SECTOR + 8 * index
        if entry >> 32 != GD_ALLOCATED >> 32:
            raise FormatError(f"grain directory entry {index} is {entry:#018x}: not 0 and "
                              f"not 0x10000000xxxxxxxx", source=self.name, offset=where)
        number = entry & 0xFFFFFFFF
        if number >= self._gt_count:
            raise FormatError(f"grain directory entry {index} names grain table {number}, "
                              f"the grain table area holds {self._gt_count}", source=self.name,
                              offset=where)
        offset = self._gts_at + number * self.per_gt * 8
        if offset + self.per_gt * 8 > self.file.size:
            raise TruncatedError(f"grain table {number} at {offset:#x} runs past the end of "
                                 f"the file ({self.file.size:#x})", source=self.name,
                                 offset=where)
        return uint_array("Q", self.file.read_exact(offset, self.per_gt * 8, "grain table")), \
            offset

    def _load_table(self, index: int) -> array.array | None:
        found = self._raw_table(index)
        return None if found is None else self._decode(*found)

    def _decode(self, raw: array.array, table_at: int) -> array.array:
        """GT entries to grain-map values (0 hole, ZERO_ENTRY zero, else file sector)."""
        out = array.array("q", bytes(8 * len(raw)))
        if raw.count(0) == len(raw):
            return out
        base, g = self._grains_sector, self.grain_sectors
        for i, e in enumerate(raw):
            kind = e >> 60
            if kind == TYPE_ALLOCATED:
                number = ((e >> 48) & 0xFFF) | ((e & 0x0000FFFFFFFFFFFF) << 12)
                sector = base + number * g
                if sector > MAX_SECTOR:
                    raise FormatError(f"grain table entry {i} ({e:#018x}) points to sector "
                                      f"{sector}, beyond any file", source=self.name,
                                      offset=table_at + 8 * i)
                out[i] = sector
            elif kind in (TYPE_ZERO, TYPE_UNMAPPED):
                out[i] = ZERO_ENTRY
            elif e != 0:
                what = "unallocated entry with stray bits" if kind == 0 else f"type {kind:#x}"
                raise FormatError(f"grain table entry {i} is {e:#018x} ({what})",
                                  source=self.name, offset=table_at + 8 * i)
        return out

    def type_counts(self) -> dict[str, int]:
        """Grains per GT entry type (unmapped told apart from zero), from the tables only."""
        counts = dict.fromkeys(TYPE_NAMES.values(), 0)
        for index in range(len(self.gd)):
            found = self._raw_table(index)
            if found is None:
                continue
            raw, at = found
            decoded = self._decode(raw, at)  # refuses unknown types
            usable = min(self.per_gt, self.grains - index * self.per_gt)
            raw, decoded = raw[:usable], decoded[:usable]
            zeros = decoded.count(ZERO_ENTRY)
            unmapped = raw.count(TYPE_UNMAPPED << 60)
            if unmapped + raw.count(TYPE_ZERO << 60) != zeros:  # type bits with other bits set
                unmapped = sum(1 for e in raw if e >> 60 == TYPE_UNMAPPED)
            counts["unmapped"] += unmapped
            counts["zero"] += zeros - unmapped
            counts["allocated"] += usable - zeros - decoded.count(0)
        counts["unallocated"] = (self.grains - counts["unmapped"] - counts["zero"]
                                 - counts["allocated"])
        return counts

    def allocation_counts(self) -> dict[str, int]:
        return grains_by_kind(self.type_counts())


def grains_by_kind(types: dict[str, int]) -> dict[str, int]:
    """GT entry type counts folded into map kinds (unmapped reads as zero)."""
    return {"data": types["allocated"], "zero": types["zero"] + types["unmapped"],
            "hole": types["unallocated"]}


def sniff(head: bytes) -> bool:
    return head[:8] == MAGIC_BYTES


def inspect(src: ByteSource) -> Report:
    header = read_header(src)
    warnings = header_problems(header, src.size)
    fields: dict[str, Any] = {
        "capacity": f"{header.capacity * SECTOR} bytes ({header.capacity} sectors)",
        "version": header.to_dict()["version"],
        "grain": f"{header.grain_size * SECTOR} bytes",
        "grain table": f"{header.grain_table_size * SECTOR // 8} entries"}
    data: dict[str, Any] = {"header": header.to_dict(), "volatile_header": None, "map": None}
    regions = Table("regions (sectors)", ["region", "offset", "sectors"],
                    [[k, o, n] for k, (o, n) in header.regions.items()])
    tables = [regions]
    try:
        volatile = read_volatile_header(src, header)
        data["volatile_header"] = volatile.to_dict()
        fields["journal"] = "needs replay (dirty)" if volatile.dirty else "clean"
        if volatile.dirty:
            warnings.append("replayJournal is set: the journal holds updates the tables lack")
        if not volatile.pad_clean:
            warnings.append("volatile header padding is not zero")
        ext = SeSparseExtent(src, header, allow_dirty=True)
        data["map"] = summary = table_summary(ext)
        summary["types"] = t = ext.type_counts() if summary["counted"] else None
        summary["grains"] = None
        fields["grain tables"] = summary["tables_allocated"]
        if t is not None:
            summary["grains"] = grains_by_kind(t)
            fields["allocated"] = f"{summary['grains']['data'] * ext.grain_bytes} bytes"
            tables.append(first_runs_table(ext))
    except VmsiftError as e:
        warnings.append(f"grain map unreadable: {e}")
    return Report(KIND, "VMDK SESparse delta extent (seSparse)", data, fields, tables, warnings)
