"""Hosted sparse VMDK extents ("KDMV"): header and embedded descriptor.

Used by monolithicSparse, twoGbMaxExtentSparse (``-s001.vmdk``) and streamOptimized disks.
The 512-byte header is packed little-endian; sizes and offsets are in 512-byte sectors.
``gdOffset`` may be ``GD_AT_END`` in streamOptimized files written by VMware; the real value
is then in the footer, a copy of the header 1024 bytes before the end of the file.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from construct import Bytes, Const, Int8ul, Int16ul, Int32ul, Int64ul, Struct

from ...errors import FormatError
from ...report import Report, Table
from ...source import ByteSource
from . import descriptor as descriptor_mod

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
