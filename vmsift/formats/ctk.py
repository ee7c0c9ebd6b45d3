"""VMware change tracking files (``-ctk.vmdk``, Changed Block Tracking).

No public specification exists. What is documented (libvmdk's format notes) is only the first
60 bytes of the header: a 4-byte signature ``a2 72 19 f6``, a uint32 1 at offset 4, 0x200 at
offset 12 and a 16-byte GUID at offset 44. File sizes seen on datastores are 512 plus a table
proportional to the disk size (40 GiB -> 2,621,952 bytes, 200 GiB -> 6,554,112 bytes). The rest
of the layout below is a *hypothesis*, written down in ``docs/formats/ctk.md``:

* the header is ``header_size`` (offset 12) bytes long and the table follows it;
* offset 16: disk capacity in sectors, 24: the disk's current change sequence, 32: number of
  tracked blocks, 36: block (granularity) size in sectors, 40: unknown;
* the table holds one little-endian uint32 per block: the change sequence of the last write
  to the block (0 = not written since tracking began and not pre-filled as allocated).

`read` checks the hypothesis against the header itself (block count x block size must cover
the capacity exactly) and against the file size; the result says ``layout_consistent``. The
table is streamed, never loaded: `iter_changed` / `changed_since` give byte ranges whose
blocks changed after a sequence number; blocks missing from a truncated file count as changed
(the safe answer for a backup change hint).
"""

from __future__ import annotations

import re
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .layout import Bytes, Int32ul, Int64ul, Struct

from ..errors import FormatError, LimitError, TruncatedError
from ..report import Report, Table, human_size
from ..source import ByteSource

KIND = "ctk"
MAGIC = b"\xa2\x72\x19\xf6"           # libvmdk notes: "unknown (signature?)"
SECTOR = 512
ENTRY_SIZE = 4                         # hypothesis: one uint32 sequence per block
EXPECTED_HEADER_SIZE = 0x200
MAX_HEADER_SIZE = 1 << 20
MAX_DISK_SECTORS = 1 << 47             # 64 PiB, far beyond any VMware disk (62 TB)
READ_BLOCK = 1 << 20                   # table bytes read at a time
REPORT_RANGES = 10_000                 # changed ranges listed in a report

CtkHeaderStruct = Struct(
    "magic" / Bytes(4),
    "version" / Int32ul,               # observed 1
    "unknown_8" / Int32ul,             # observed 0
    "header_size" / Int32ul,           # observed 0x200; hypothesis: offset of the table
    "disk_sectors" / Int64ul,          # hypothesis
    "change_seq" / Int64ul,            # hypothesis
    "block_count" / Int32ul,           # hypothesis
    "block_sectors" / Int32ul,         # hypothesis
    "unknown_40" / Int32ul,
    "change_uuid" / Bytes(16),         # libvmdk notes: "GUID?"
)
HEADER_FIELDS_SIZE = CtkHeaderStruct.sizeof()
assert HEADER_FIELDS_SIZE == 60

#: How much each decoded field is worth: ``documented`` (libvmdk notes give offset and value),
#: ``observed`` (a value seen, meaning unknown), ``inferred`` (follows from public file sizes),
#: ``hypothesis`` (our reading, unconfirmed on a real file).
CONFIDENCE = {
    "magic": "documented", "version": "observed", "unknown_8": "observed",
    "header_size": "inferred", "disk_sectors": "hypothesis", "change_seq": "hypothesis",
    "block_count": "hypothesis", "block_sectors": "hypothesis", "unknown_40": "unknown",
    "change_uuid": "documented", "table": "hypothesis",
}

_CHANGE_ID = re.compile(r"^\s*((?:[0-9a-fA-F]{2}[ -]?){16})\s*/\s*(\d+)\s*$")


@dataclass
class Ctk:
    """A decoded change tracking file; ``src`` stays open for the table reads."""

    src: ByteSource
    version: int
    unknown_8: int
    header_size: int
    disk_sectors: int
    change_seq: int
    block_count: int
    block_sectors: int
    unknown_40: int
    change_uuid: bytes
    header_tail_nonzero: int = 0        # nonzero bytes between offset 60 and header_size
    layout_consistent: bool = False
    entries_present: int = 0            # table entries actually in the file
    warnings: list[str] = field(default_factory=list)

    @property
    def block_size(self) -> int:
        return self.block_sectors * SECTOR

    @property
    def disk_size(self) -> int:
        return self.disk_sectors * SECTOR

    @property
    def table_offset(self) -> int:
        return self.header_size

    @property
    def entries_missing(self) -> int:
        return max(self.block_count - self.entries_present, 0)

    @property
    def change_id(self) -> str:
        """The vSphere-style change id ``"52 ab ... 0f-10 ... 1f/<seq>"`` (hypothesis)."""
        return format_change_id(self.change_uuid, self.change_seq)


def format_uuid(raw: bytes) -> str:
    """16 bytes in VMware's spaced form: ``"52 ed 45 cf 23 2c 6a f0-a5 26 59 71 b7 9f 1f b3"``."""
    h = [f"{b:02x}" for b in raw]
    return " ".join(h[:8]) + "-" + " ".join(h[8:])


def format_change_id(uuid: bytes, seq: int) -> str:
    return f"{format_uuid(uuid)}/{seq}"


def parse_change_id(text: str) -> tuple[bytes, int]:
    """Split a vSphere ``changeId`` (``"<16 hex bytes>/<sequence>"``) into (uuid, sequence)."""
    m = _CHANGE_ID.match(text)
    if not m:
        raise FormatError(f"not a change id: {text[:80]!r}")
    return bytes.fromhex(re.sub(r"[ -]", "", m.group(1))), int(m.group(2))


def sniff(head: bytes) -> bool:
    return head[:4] == MAGIC


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def read(src: ByteSource, strict: bool = True) -> Ctk:
    """Decode the header and check the hypothesised table layout.

    Strict mode raises on anything the hypothesis cannot explain (`FormatError`), on a table
    cut short (`TruncatedError`) and on absurd sizes (`LimitError`); otherwise those become
    warnings and ``layout_consistent`` / ``entries_present`` say what can be trusted.
    """
    raw = src.read_exact(0, HEADER_FIELDS_SIZE, "CTK header")
    h = CtkHeaderStruct.parse(raw)
    if h.magic != MAGIC:
        raise FormatError(f"bad CTK signature {h.magic.hex()} (expected {MAGIC.hex()})",
                          source=src.name, offset=0)
    ctk = Ctk(src=src, version=h.version, unknown_8=h.unknown_8, header_size=h.header_size,
              disk_sectors=h.disk_sectors, change_seq=h.change_seq, block_count=h.block_count,
              block_sectors=h.block_sectors, unknown_40=h.unknown_40,
              change_uuid=bytes(h.change_uuid))
    problems: list[tuple[type, str, int]] = []
    if h.version != 1:
        ctk.warnings.append(f"version {h.version}; only 1 has been seen")
    if not HEADER_FIELDS_SIZE <= h.header_size <= MAX_HEADER_SIZE:
        problems.append((LimitError, f"header size {h.header_size} outside "
                         f"{HEADER_FIELDS_SIZE}..{MAX_HEADER_SIZE}", 12))
    elif h.header_size != EXPECTED_HEADER_SIZE:
        ctk.warnings.append(f"header size {h.header_size:#x}; only {EXPECTED_HEADER_SIZE:#x} "
                            "has been seen")
    if h.disk_sectors > MAX_DISK_SECTORS:
        problems.append((LimitError, f"disk size {h.disk_sectors} sectors is beyond any "
                         "VMware disk", 16))
    if h.block_sectors == 0:
        problems.append((FormatError, "block size is 0 sectors", 36))
    elif h.block_count != _ceil_div(h.disk_sectors, h.block_sectors):
        problems.append((FormatError, f"{h.block_count} blocks of {h.block_sectors} sectors "
                         f"do not cover {h.disk_sectors} sectors; the header does not follow "
                         "the hypothesised layout", 32))
    if not problems:
        tail_len = h.header_size - HEADER_FIELDS_SIZE
        tail = src.read(HEADER_FIELDS_SIZE, tail_len)
        ctk.header_tail_nonzero = tail_len - tail.count(0)
        if len(tail) < tail_len:
            problems.append((TruncatedError, f"header needs {h.header_size} bytes, file has "
                             f"{src.size}", HEADER_FIELDS_SIZE + len(tail)))
    if problems:
        cls, msg, off = problems[0]
        if strict:
            raise cls(msg, source=src.name, offset=off)
        ctk.warnings += [m for _, m, _ in problems] + ["table not decoded"]
        return ctk
    ctk.layout_consistent = True
    room = max(src.size - ctk.table_offset, 0) // ENTRY_SIZE
    ctk.entries_present = min(room, ctk.block_count)
    if ctk.entries_missing:
        msg = (f"table of {ctk.block_count} entries is cut after {ctk.entries_present}; "
               "the missing blocks count as changed")
        if strict:
            raise TruncatedError(msg, source=src.name,
                                 offset=ctk.table_offset + ctk.entries_present * ENTRY_SIZE)
        ctk.warnings.append(msg)
    extra = src.size - (ctk.table_offset + ctk.block_count * ENTRY_SIZE)
    if extra > 0:
        ctk.warnings.append(f"{extra} bytes after the table")
    return ctk


def _require_table(ctk: Ctk) -> None:
    if not ctk.layout_consistent:
        raise FormatError("the block table layout of this file is not understood",
                          source=ctk.src.name, offset=32)


def iter_entries(ctk: Ctk) -> Iterator[tuple[int, array]]:
    """Yield (first block index, uint32 sequences) for the table, a megabyte at a time."""
    _require_table(ctk)
    per_read = READ_BLOCK // ENTRY_SIZE
    for first in range(0, ctk.entries_present, per_read):
        n = min(per_read, ctk.entries_present - first)
        data = ctk.src.read_exact(ctk.table_offset + first * ENTRY_SIZE, n * ENTRY_SIZE,
                                  "CTK block table")
        seqs = array("I", data)
        if sys.byteorder != "little":
            seqs.byteswap()
        yield first, seqs


def iter_changed(ctk: Ctk, seq: int) -> Iterator[tuple[int, int]]:
    """Yield merged (byte offset, length) ranges of blocks whose sequence is above ``seq``.

    Ranges are clipped to the disk size. Blocks whose entries are missing from a truncated
    file are reported as changed.
    """
    _require_table(ctk)
    bs, disk = ctk.block_size, ctk.disk_size
    run_start: int | None = None
    run_end = 0

    def flush() -> Iterator[tuple[int, int]]:
        start, end = run_start * bs, min(run_end * bs, disk)
        if end > start:
            yield start, end - start

    for first, seqs in iter_entries(ctk):
        for i, value in enumerate(seqs):
            if value > seq:
                block = first + i
                if run_start is not None and block == run_end:
                    run_end += 1
                else:
                    if run_start is not None:
                        yield from flush()
                    run_start, run_end = block, block + 1
    if ctk.entries_missing:
        if run_start is not None and run_end == ctk.entries_present:
            run_end = ctk.block_count
        else:
            if run_start is not None:
                yield from flush()
            run_start, run_end = ctk.entries_present, ctk.block_count
    if run_start is not None:
        yield from flush()


def changed_since(ctk: Ctk, seq: int) -> list[tuple[int, int]]:
    """Byte ranges of the disk changed after change sequence ``seq`` (0: every tracked write)."""
    return list(iter_changed(ctk, seq))


@dataclass
class TableStats:
    changed_blocks: int = 0             # entries above 0
    max_seq: int = 0
    min_nonzero_seq: int | None = None
    above_header_seq: int = 0           # entries larger than the header's change sequence

    def to_dict(self) -> dict[str, Any]:
        return {"changed_blocks": self.changed_blocks, "max_seq": self.max_seq,
                "min_nonzero_seq": self.min_nonzero_seq,
                "above_header_seq": self.above_header_seq}


def table_stats(ctk: Ctk) -> TableStats:
    st = TableStats()
    for _, seqs in iter_entries(ctk):
        for value in seqs:
            if value:
                st.changed_blocks += 1
                if value > st.max_seq:
                    st.max_seq = value
                if st.min_nonzero_seq is None or value < st.min_nonzero_seq:
                    st.min_nonzero_seq = value
                if value > ctk.change_seq:
                    st.above_header_seq += 1
    return st


def inspect(src: ByteSource) -> Report:
    ctk = read(src, strict=False)
    warnings = list(ctk.warnings)
    stats: TableStats | None = None
    ranges: list[tuple[int, int]] = []
    truncated_list = False
    changed_bytes = 0
    if ctk.layout_consistent:
        stats = table_stats(ctk)
        if stats.above_header_seq:
            warnings.append(f"{stats.above_header_seq} blocks carry a sequence above the "
                            f"header's {ctk.change_seq}")
        for rng in iter_changed(ctk, 0):
            changed_bytes += rng[1]
            if len(ranges) < REPORT_RANGES:
                ranges.append(rng)
            else:
                truncated_list = True
    header_hex = src.read(0, HEADER_FIELDS_SIZE).hex()
    data: dict[str, Any] = {
        "magic": MAGIC.hex(), "version": ctk.version, "unknown_8": ctk.unknown_8,
        "header_size": ctk.header_size, "disk_sectors": ctk.disk_sectors,
        "disk_size": ctk.disk_size, "change_seq": ctk.change_seq,
        "block_count": ctk.block_count, "block_sectors": ctk.block_sectors,
        "block_size": ctk.block_size, "unknown_40": ctk.unknown_40,
        "change_uuid": format_uuid(ctk.change_uuid), "change_id": ctk.change_id,
        "header_tail_nonzero": ctk.header_tail_nonzero,
        "layout_consistent": ctk.layout_consistent,
        "entries_present": ctk.entries_present, "entries_missing": ctk.entries_missing,
        "table": stats.to_dict() if stats else None,
        "changed_bytes": changed_bytes if stats else None,
        "changed_ranges": [list(r) for r in ranges],
        "changed_ranges_truncated": truncated_list,
        "header_hex": header_hex,
        "confidence": dict(CONFIDENCE),
    }
    fields: dict[str, Any] = {
        "layout": "consistent with the hypothesis (see docs/formats/ctk.md)"
        if ctk.layout_consistent else "NOT understood; raw header only",
        "version": ctk.version,
        "disk size (hypothesis)": f"{human_size(ctk.disk_size)} ({ctk.disk_sectors} sectors)",
        "block size (hypothesis)": f"{human_size(ctk.block_size)} x {ctk.block_count} blocks",
        "change id (hypothesis)": ctk.change_id,
    }
    if stats is not None:
        fields["changed blocks"] = (f"{stats.changed_blocks} of {ctk.block_count} "
                                    f"({human_size(changed_bytes)})")
        fields["sequences"] = (f"{stats.min_nonzero_seq}..{stats.max_seq}"
                               if stats.changed_blocks else "none")
    tables = [Table("changed ranges (sequence > 0)", ["offset", "length"],
                    [list(r) for r in ranges])] if ranges else []
    return Report(kind=KIND, title=f"VMware change tracking file {src.name}", data=data,
                  fields=fields, tables=tables, warnings=warnings)


__all__ = ["KIND", "MAGIC", "Ctk", "CtkHeaderStruct", "changed_since", "format_change_id",
           "inspect", "iter_changed", "iter_entries", "parse_change_id", "read", "sniff",
           "table_stats"]
