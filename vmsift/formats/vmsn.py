"""VMware checkpoint state files: ``.vmsn`` (snapshot state) and ``.vmss`` (suspend state).

A checkpoint file is a tree of *groups* holding *tags*. A 12-byte header names the magic and
the group count; the group table follows (80 bytes per group: NUL-padded name, absolute offset
of the group's tags, byte size of the group). A group's tags run one after the other until a
NULL tag (two zero bytes). Each tag is a 16-bit word (value size in bits 0-5, number of array
indices in bits 6-7, name length in bits 8-15), the name, up to three uint32 indices, then
either an inline little-endian value of 1..61 bytes, or a *block* (value size 63) or
*compressed block* (value size 62): on-disk size, in-memory size, a 16-bit pad length, the
padding, then the data. The old format (magic low nibble 0) stores the two block sizes in
32 bits. See ``docs/formats/vmsn.md`` for sources and what is uncertain.

Blocks are located, never loaded: guest RAM (the ``Memory`` block of group ``memory``) can be
gigabytes. `open_block` gives an uncompressed block as a `SliceSource`.
"""

from __future__ import annotations

import enum
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .layout import Bytes, Int16ul, Int32ul, Int64ul, Struct

from ..errors import (FormatError, LimitError, TruncatedError, UnsupportedError, VmsiftError,
                      check_limit)
from ..report import Report, Table, human_size
from ..source import ByteSource, SliceSource
from . import dictfile

KIND = "vmsn"
PAGE = 4096


class Magic(enum.IntEnum):
    """File magics, as little-endian uint32 (CRASH-VMSS; VOL3-VMW adds OLD_ALT)."""

    OLD = 0xBED0BED0          # 32-bit block sizes
    OLD_ALT = 0xBED2BED0      # accepted by Volatility as version 0 (32-bit block sizes)
    NORMAL = 0xBED2BED2
    PARTIAL = 0xBED3BED3
    RESTORED = 0xBAD1BAD1
    NO_RESTORE = 0xBAD2BAD2


VARIANTS = {Magic.OLD: "old (32-bit sizes)", Magic.OLD_ALT: "old (32-bit sizes)",
            Magic.NORMAL: "normal", Magic.PARTIAL: "partial",
            Magic.RESTORED: "restored", Magic.NO_RESTORE: "no-restore"}
MAGIC_BYTES = tuple(struct.pack("<I", m) for m in Magic)

FileHeader = Struct("magic" / Int32ul, "version" / Int32ul, "group_count" / Int32ul)
GroupEntry = Struct("name" / Bytes(64), "tags_offset" / Int64ul, "size" / Int64ul)
TagWord = Struct("flags" / Int16ul)  # | name length (8) | indices (2) | value size (6) |
BlockHead64 = Struct("nbytes" / Int64ul, "mem_bytes" / Int64ul, "pad" / Int16ul)
BlockHead32 = Struct("nbytes" / Int32ul, "mem_bytes" / Int32ul, "pad" / Int16ul)
HEADER_SIZE = FileHeader.sizeof()
GROUP_SIZE = GroupEntry.sizeof()
assert (HEADER_SIZE, GROUP_SIZE) == (12, 80)

VALSIZE_BLOCK = 63
VALSIZE_COMPRESSED = 62

MAX_GROUPS = 65536            # real files have a few hundred
MAX_TAGS_PER_GROUP = 1 << 20  # a cpu group of a very wide VM has a few hundred thousand
MAX_TAGS = 1 << 21
MAX_REGIONS = 4096            # VMware writes a handful
MAX_CONFIG_BYTES = 16 << 20   # an embedded .vmx is a few KiB
MAX_INFLATE_BYTES = 16 << 20  # compressed blocks inflated on request only up to this size


class TagType(enum.Enum):
    VALUE = "value"
    BLOCK = "block"
    COMPRESSED = "compressed-block"


@dataclass(slots=True)
class Tag:
    """One tag. For blocks ``size`` is the on-disk byte count at ``data_offset``."""

    group: str
    name: str
    indices: tuple[int, ...]
    type: TagType
    offset: int                 # file offset of the tag word
    data_offset: int            # file offset of the inline value or of the block data
    size: int                   # inline value size, or block bytes on disk
    raw: bytes | None = None    # inline value bytes
    mem_size: int | None = None  # block bytes in memory (after decompression)
    pad: int = 0

    @property
    def is_block(self) -> bool:
        return self.type is not TagType.VALUE

    @property
    def value(self) -> int | None:
        """The inline value as a little-endian unsigned integer (None for blocks)."""
        return None if self.raw is None else int.from_bytes(self.raw, "little")

    @property
    def label(self) -> str:
        return self.name + "".join(f"[{i}]" for i in self.indices)

    def to_dict(self) -> dict[str, Any]:
        small = self.raw is not None and len(self.raw) <= 8
        return {"group": self.group, "name": self.name, "indices": list(self.indices),
                "type": self.type.value, "offset": self.offset,
                "data_offset": self.data_offset, "size": self.size,
                "mem_size": self.mem_size, "pad": self.pad,
                "value": self.value if small else None,
                "hex": self.raw.hex() if self.raw is not None else None}


@dataclass
class Group:
    index: int
    name: str
    tags_offset: int
    size: int
    tags: list[Tag] = field(default_factory=list)
    error: VmsiftError | None = None

    def find(self, name: str, *indices: int) -> Tag | None:
        """The first tag named ``name`` (exact) whose indices start with ``indices``."""
        for tag in self.tags:
            if tag.name == name and tag.indices[:len(indices)] == indices:
                return tag
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "tags_offset": self.tags_offset,
                "size": self.size, "tag_count": len(self.tags),
                "error": None if self.error is None else str(self.error)}


@dataclass
class Checkpoint:
    source: str
    magic: int
    version: int
    groups: list[Group]
    warnings: list[str] = field(default_factory=list)

    @property
    def variant(self) -> str:
        return VARIANTS.get(self.magic, "unknown")

    @property
    def size_bytes(self) -> int:
        """Width of block size fields: 4 in the old format, else 8."""
        return 4 if self.magic & 0xF == 0 else 8

    def group(self, name: str) -> Group | None:
        """The first group called ``name`` (case-insensitive)."""
        for g in self.groups:
            if g.name.lower() == name.lower():
                return g
        return None

    def tags(self) -> Iterator[Tag]:
        for g in self.groups:
            yield from g.tags


# --- reading --------------------------------------------------------------------------------

class _Cursor:
    """Sequential reads through a 64 KiB window, so tag walks do not issue a read per field."""

    WINDOW = 64 * 1024

    def __init__(self, src: ByteSource, pos: int):
        self.src = src
        self.pos = pos
        self._base = 0
        self._buf = b""

    def take(self, n: int, what: str) -> bytes:
        rel = self.pos - self._base
        if rel < 0 or rel + n > len(self._buf):
            self._base = self.pos
            self._buf = self.src.read(self.pos, max(n, self.WINDOW))
            rel = 0
        data = self._buf[rel:rel + n]
        if len(data) < n:
            raise TruncatedError(f"{what} needs {n} bytes, only {len(data)} before the end "
                                 f"(size {self.src.size})", source=self.src.name, offset=self.pos)
        self.pos += n
        return data


def sniff(head: bytes) -> bool:
    return len(head) >= HEADER_SIZE and head[:4] in MAGIC_BYTES


def _read_tags(src: ByteSource, group: Group, wide: bool, table_end: int, budget: int) -> None:
    """Walk a group's tags into ``group.tags`` (kept even when an error stops the walk)."""
    name = src.name
    if group.tags_offset < table_end:
        raise FormatError(f"tags of group {group.name!r} start at {group.tags_offset:#x}, "
                          f"inside the header and group table (ends {table_end:#x})",
                          source=name, offset=HEADER_SIZE + group.index * GROUP_SIZE + 64)
    if group.tags_offset >= src.size:
        raise TruncatedError(f"tags of group {group.name!r} start at {group.tags_offset:#x}, "
                             f"past the end of the file ({src.size:#x})", source=name,
                             offset=HEADER_SIZE + group.index * GROUP_SIZE + 64)
    end = group.tags_offset + group.size if group.size else None
    block_head = BlockHead32 if not wide else BlockHead64
    block_head_size = 10 if not wide else 18
    cur = _Cursor(src, group.tags_offset)
    limit = min(MAX_TAGS_PER_GROUP, budget)
    while True:
        at = cur.pos
        word = TagWord.parse(cur.take(2, "tag")).flags
        if word == 0:
            return
        if end is not None and at >= end:
            raise FormatError(f"group {group.name!r} has no NULL tag before its end at "
                              f"{end:#x}", source=name, offset=at)
        if len(group.tags) >= limit:
            raise LimitError(f"group {group.name!r} has more than {limit} tags", source=name,
                             offset=at)
        valsize, nindx, namelen = word & 0x3F, (word >> 6) & 3, word >> 8
        tag_name = cur.take(namelen, "tag name").decode("ascii", "backslashreplace")
        indices = struct.unpack(f"<{nindx}I", cur.take(4 * nindx, "tag indices"))
        if valsize in (VALSIZE_BLOCK, VALSIZE_COMPRESSED):
            head = block_head.parse(cur.take(block_head_size, "block header"))
            data_offset = cur.pos + head.pad
            if data_offset + head.nbytes > src.size:
                raise TruncatedError(
                    f"block {tag_name!r} of {head.nbytes} bytes at {data_offset:#x} runs past "
                    f"the end of the file ({src.size:#x})", source=name, offset=at)
            kind = TagType.BLOCK if valsize == VALSIZE_BLOCK else TagType.COMPRESSED
            group.tags.append(Tag(group.name, tag_name, indices, kind, at, data_offset,
                                  head.nbytes, None, head.mem_bytes, head.pad))
            cur.pos = data_offset + head.nbytes
        else:
            data_offset = cur.pos
            raw = cur.take(valsize, "tag value")
            group.tags.append(Tag(group.name, tag_name, indices, TagType.VALUE, at,
                                  data_offset, valsize, raw))


def read(src: ByteSource, strict: bool = True) -> Checkpoint:
    """Decode the header, the group table and every tag of every group.

    With ``strict`` the first damaged group raises; otherwise its error is kept in
    ``Group.error``, the tags read before it are kept, and a warning names it.
    """
    head = src.read_exact(0, HEADER_SIZE, "checkpoint header")
    h = FileHeader.parse(head)
    if h.magic not in Magic._value2member_map_:
        raise FormatError(f"bad magic {h.magic:#010x}, not a VMware checkpoint file",
                          source=src.name, offset=0)
    check_limit(h.group_count, MAX_GROUPS, "group count", source=src.name, offset=8)
    table_end = HEADER_SIZE + h.group_count * GROUP_SIZE
    if table_end > src.size:
        raise TruncatedError(f"group table of {h.group_count} groups ends at {table_end:#x}, "
                             f"past the end of the file ({src.size:#x})", source=src.name,
                             offset=HEADER_SIZE)
    table = src.read_exact(HEADER_SIZE, table_end - HEADER_SIZE, "group table")
    cp = Checkpoint(src.name, h.magic, h.version, [])
    for i in range(h.group_count):
        g = GroupEntry.parse(table[i * GROUP_SIZE:(i + 1) * GROUP_SIZE])
        gname = g.name.split(b"\0", 1)[0].decode("ascii", "backslashreplace")
        cp.groups.append(Group(i, gname, g.tags_offset, g.size))
    total = 0
    for group in cp.groups:
        try:
            _read_tags(src, group, cp.size_bytes == 8, table_end, MAX_TAGS - total)
        except VmsiftError as e:
            if strict:
                raise
            group.error = e
            cp.warnings.append(f"group {group.name!r}: {e}")
        total += len(group.tags)
    return cp


def open_block(src: ByteSource, tag: Tag) -> ByteSource:
    """An uncompressed block as a source (nothing is read until the caller reads)."""
    if tag.type is not TagType.BLOCK:
        raise UnsupportedError(f"tag {tag.label!r} is a {tag.type.value}, not an uncompressed "
                               "block", source=src.name, offset=tag.offset)
    return SliceSource(src, tag.data_offset, tag.size,
                       name=f"{src.name}:{tag.group}/{tag.label}")


def read_block(src: ByteSource, tag: Tag, limit: int = MAX_INFLATE_BYTES) -> bytes:
    """A block's bytes. Compressed blocks are inflated only when they are zlib streams
    (the one compression recognised) and their in-memory size is at most ``limit``."""
    if tag.type is TagType.VALUE:
        return tag.raw or b""
    if tag.type is TagType.BLOCK:
        check_limit(tag.size, limit, f"block {tag.label!r} size", source=src.name,
                    offset=tag.offset)
        return src.read_exact(tag.data_offset, tag.size, f"block {tag.label!r}")
    check_limit(tag.mem_size or 0, limit, f"block {tag.label!r} size in memory",
                source=src.name, offset=tag.offset)
    packed = src.read_exact(tag.data_offset, min(tag.size, limit), f"block {tag.label!r}")
    if len(packed) < 2 or packed[0] & 0x0F != 8 or int.from_bytes(packed[:2], "big") % 31:
        raise UnsupportedError(f"compressed block {tag.label!r} is not a zlib stream "
                               "(compression unknown)", source=src.name, offset=tag.data_offset)
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(packed, limit + 1)
    except zlib.error as e:
        raise FormatError(f"compressed block {tag.label!r} does not inflate: {e}",
                          source=src.name, offset=tag.data_offset) from None
    if len(data) > limit:
        raise LimitError(f"block {tag.label!r} inflates to more than {limit} bytes",
                         source=src.name, offset=tag.data_offset)
    if tag.mem_size is not None and len(data) != tag.mem_size:
        raise FormatError(f"compressed block {tag.label!r} inflates to {len(data)} bytes, "
                          f"its header says {tag.mem_size}", source=src.name,
                          offset=tag.data_offset)
    return data


# --- memory ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class MemoryRegion:
    """Guest pages ``ppn .. ppn+pages`` stored from page ``page_num`` of the memory image."""

    ppn: int
    page_num: int
    pages: int

    @property
    def guest_start(self) -> int:
        return self.ppn * PAGE

    @property
    def file_offset(self) -> int:
        """Byte offset inside the memory image (the .vmem, or the Memory block)."""
        return self.page_num * PAGE

    @property
    def length(self) -> int:
        return self.pages * PAGE

    def to_dict(self) -> dict[str, Any]:
        return {"ppn": self.ppn, "page_num": self.page_num, "pages": self.pages,
                "guest_start": self.guest_start, "guest_end": self.guest_start + self.length,
                "file_offset": self.file_offset, "length": self.length}


@dataclass
class MemoryMap:
    """The memory group's view of guest RAM.

    ``linear`` maps guest physical 0.. straight onto the memory image (no regions listed);
    ``block`` is the embedded ``Memory`` block when the RAM is inside this file.
    """

    regions: list[MemoryRegion]
    regions_count: int | None
    linear: bool
    align_mask: int | None
    block: Tag | None
    warnings: list[str] = field(default_factory=list)

    @property
    def size(self) -> int | None:
        """Guest RAM bytes described, when known."""
        if self.regions:
            return sum(r.length for r in self.regions)
        if self.block is not None:
            return self.block.mem_size if self.block.mem_size is not None else self.block.size
        return None

    def to_dict(self) -> dict[str, Any]:
        b = self.block
        return {"regions_count": self.regions_count, "linear": self.linear,
                "align_mask": self.align_mask, "size": self.size,
                "regions": [r.to_dict() for r in self.regions],
                "block": None if b is None else {
                    "offset": b.data_offset, "size": b.size, "mem_size": b.mem_size,
                    "compressed": b.type is TagType.COMPRESSED}}


def _values(group: Group, name: str) -> dict[int, int]:
    """Inline values of ``name[i]`` by first index."""
    return {t.indices[0]: t.value for t in group.tags
            if t.name == name and t.indices and t.raw is not None}


def _inline(group: Group | None, name: str) -> int | None:
    if group is None:
        return None
    tag = group.find(name)
    return tag.value if tag is not None and tag.raw is not None else None


def memory_regions(cp: Checkpoint) -> MemoryMap | None:
    """The region map of the ``memory`` group, or None when the file has no such group."""
    group = cp.group("memory")
    if group is None:
        return None
    blocks = [t for t in group.tags if t.name == "Memory" and t.is_block]
    mm = MemoryMap([], _inline(group, "regionsCount"), False, _inline(group, "align_mask"),
                   blocks[0] if blocks else None)
    if len(blocks) > 1:
        mm.warnings.append(f"{len(blocks)} Memory blocks; the first is used")
    count = mm.regions_count or 0
    if count > MAX_REGIONS:
        mm.warnings.append(f"regionsCount {count} is more than {MAX_REGIONS}; regions ignored")
        count = 0
    if count == 0:
        mm.linear = True
        return mm
    starts, ppns, sizes = (_values(group, n) for n in ("regionPageNum", "regionPPN", "regionSize"))
    for i in range(count):
        if i not in starts or i not in ppns or i not in sizes:
            mm.warnings.append(f"region {i} lacks regionPageNum, regionPPN or regionSize")
            continue
        if sizes[i] == 0:
            mm.warnings.append(f"region {i} is empty")
            continue
        mm.regions.append(MemoryRegion(ppns[i], starts[i], sizes[i]))
    mm.regions.sort(key=lambda r: r.ppn)
    for a, b in zip(mm.regions, mm.regions[1:]):
        if a.ppn + a.pages > b.ppn:
            mm.warnings.append(f"regions at guest page {a.ppn:#x} and {b.ppn:#x} overlap")
    by_file = sorted(mm.regions, key=lambda r: r.page_num)
    for a, b in zip(by_file, by_file[1:]):
        if a.page_num + a.pages > b.page_num:
            mm.warnings.append(f"regions at file page {a.page_num:#x} and {b.page_num:#x} "
                               "share file pages")
    if mm.block is not None and mm.block.type is TagType.BLOCK:
        end = max(r.file_offset + r.length for r in mm.regions) if mm.regions else 0
        if end > mm.block.size:
            mm.warnings.append(f"regions need {end} bytes of memory image, the Memory block "
                               f"holds {mm.block.size}")
    return mm


# --- cpu, embedded files, screenshot ----------------------------------------------------------

@dataclass
class Vcpu:
    index: int
    rip: int | None = None
    cr3: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "rip": self.rip, "cr3": self.cr3}


@dataclass
class CpuSummary:
    num_vcpus: int | None
    vcpus: list[Vcpu]

    def to_dict(self) -> dict[str, Any]:
        return {"num_vcpus": self.num_vcpus, "vcpus": [v.to_dict() for v in self.vcpus]}


def cpu_summary(cp: Checkpoint) -> CpuSummary | None:
    """vCPU count and each vCPU's rip and CR3 (``CR64[cpu][3]``) where stored inline."""
    group = cp.group("cpu")
    if group is None:
        return None
    count = _inline(group, "cpu:numVCPUs")
    vcpus: dict[int, Vcpu] = {}
    for tag in group.tags:
        if tag.raw is None or not tag.indices:
            continue
        if tag.name == "rip":
            vcpus.setdefault(tag.indices[0], Vcpu(tag.indices[0])).rip = tag.value
        elif tag.name == "CR64" and tag.indices[1:2] == (3,):
            vcpus.setdefault(tag.indices[0], Vcpu(tag.indices[0])).cr3 = tag.value
    return CpuSummary(count, [vcpus[k] for k in sorted(vcpus)])


#: Blocks of the ``Snapshot`` group and what they hold (VOLATILITY-BLOG; names partly assumed).
SNAPSHOT_FILES = {"cfgFile": "config", "nvram": "nvram", "extendedConfigFile": "extended_config"}


def embedded_files(cp: Checkpoint) -> dict[str, Tag]:
    """The copies of VM files a .vmsn carries in its ``Snapshot`` group, by role."""
    group = cp.group("Snapshot")
    found: dict[str, Tag] = {}
    if group is None:
        return found
    for tag in group.tags:
        role = SNAPSHOT_FILES.get(tag.name)
        if role and tag.is_block and role not in found:
            found[role] = tag
    return found


def embedded_config(cp: Checkpoint, src: ByteSource) -> dictfile.Dictionary | None:
    """The .vmx copy stored in the ``Snapshot`` group (``cfgFile``), parsed; None if absent."""
    tag = embedded_files(cp).get("config")
    if tag is None:
        return None
    data = read_block(src, tag, MAX_CONFIG_BYTES)
    return dictfile.parse(data.rstrip(b"\0"), f"{src.name}:{tag.group}/{tag.label}")


@dataclass
class Screenshot:
    group: str
    tag: str
    offset: int
    size: int
    format: str
    width: int | None = None
    height: int | None = None
    compressed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "tag": self.tag, "offset": self.offset, "size": self.size,
                "format": self.format, "width": self.width, "height": self.height,
                "compressed": self.compressed}


_IMAGE_MAGICS = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"BM", "bmp"))


def screenshot(cp: Checkpoint, src: ByteSource) -> Screenshot | None:
    """The screen thumbnail (``MKSVMX/imageData``, else any block starting like an image in a
    group whose name starts with MKS or SVGA); format from its magic, size from a PNG IHDR."""
    candidates = []
    for group in cp.groups:
        if group.name.upper().startswith(("MKS", "SVGA")):
            for tag in group.tags:
                if tag.is_block:
                    candidates.append(tag)
    candidates.sort(key=lambda t: (t.group != "MKSVMX", t.name != "imageData"))
    for tag in candidates:
        head = src.read(tag.data_offset, min(tag.size, 24))
        fmt = next((f for m, f in _IMAGE_MAGICS if head.startswith(m)), None)
        if tag.type is TagType.COMPRESSED:
            if tag.group == "MKSVMX" and tag.name == "imageData":
                return Screenshot(tag.group, tag.label, tag.data_offset, tag.size, "unknown",
                                  compressed=True)
            continue
        if fmt is None and not (tag.group == "MKSVMX" and tag.name == "imageData"):
            continue
        shot = Screenshot(tag.group, tag.label, tag.data_offset, tag.size, fmt or "unknown")
        if fmt == "png" and len(head) >= 24 and head[12:16] == b"IHDR":
            shot.width, shot.height = struct.unpack(">II", head[16:24])
        return shot
    return None


def checkpoint_state(cp: Checkpoint, name: str = "") -> str:
    """``snapshot`` (a Snapshot group, or a .vmsn name), ``suspend`` (.vmss) or ``checkpoint``."""
    if cp.group("Snapshot") is not None:
        return "snapshot"
    ext = os.path.splitext(name)[1].lower()
    return {".vmsn": "snapshot", ".vmss": "suspend"}.get(ext, "checkpoint")


# --- report ---------------------------------------------------------------------------------

def inspect(src: ByteSource) -> Report:
    cp = read(src, strict=False)
    warnings = list(cp.warnings)
    mm = memory_regions(cp)
    cpu = cpu_summary(cp)
    files = embedded_files(cp)
    config = None
    try:
        config = embedded_config(cp, src)
    except VmsiftError as e:
        warnings.append(f"embedded config: {e}")
    shot = screenshot(cp, src)
    state = checkpoint_state(cp, src.name)

    fields: dict[str, Any] = {
        "magic": f"{cp.magic:#010x} ({cp.variant})", "header version": cp.version,
        "groups": len(cp.groups), "tags": sum(len(g.tags) for g in cp.groups)}
    if cpu is not None:
        fields["vCPUs"] = cpu.num_vcpus
        rips = [f"{v.index}: {v.rip:#x}" for v in cpu.vcpus if v.rip is not None]
        if rips:
            fields["rip"] = ", ".join(rips)
    if mm is not None:
        warnings += [f"memory: {w}" for w in mm.warnings]
        size = mm.size
        where = "separate .vmem"
        if mm.block is not None:
            where = (f"embedded Memory block @ {mm.block.data_offset:#x}"
                     + (" (compressed)" if mm.block.type is TagType.COMPRESSED else ""))
        layout = f"{len(mm.regions)} regions" if not mm.linear else "linear"
        fields["memory"] = (f"{human_size(size)}, " if size is not None else "") + \
            f"{layout}, {where}"
    fields["embedded config"] = config is not None
    if config is not None:
        fields["display name"] = config.get("displayName")
    fields["screenshot"] = (f"{shot.format} {shot.width}x{shot.height}, {shot.size} bytes "
                            f"@ {shot.offset:#x}" if shot and shot.width is not None else
                            f"{shot.format}, {shot.size} bytes @ {shot.offset:#x}" if shot
                            else False)

    tables = [Table("groups", ["#", "name", "tags offset", "size", "tags"],
                    [[g.index, g.name, g.tags_offset, g.size, len(g.tags)]
                     for g in cp.groups])]
    if mm is not None and mm.regions:
        tables.append(Table("memory regions", ["guest start", "guest end", "file offset",
                                               "pages", "bytes"],
                            [[r.guest_start, r.guest_start + r.length, r.file_offset,
                              r.pages, r.length] for r in mm.regions]))
    if cpu is not None and cpu.vcpus:
        tables.append(Table("vCPUs", ["vcpu", "rip", "cr3"],
                            [[v.index, None if v.rip is None else f"{v.rip:#x}",
                              None if v.cr3 is None else f"{v.cr3:#x}"] for v in cpu.vcpus]))
    compressed = [t for t in cp.tags() if t.type is TagType.COMPRESSED]
    if compressed:
        tables.append(Table("compressed blocks", ["group", "tag", "offset", "size", "mem size"],
                            [[t.group, t.label, t.data_offset, t.size, t.mem_size]
                             for t in compressed]))

    checkpoint = cp.group("Checkpoint")
    data: dict[str, Any] = {
        "magic": cp.magic, "variant": cp.variant, "header_version": cp.version,
        "size_field_bytes": cp.size_bytes, "state": state,
        "memsize_mb": _inline(checkpoint, "memSize"),
        "groups": [g.to_dict() for g in cp.groups],
        "memory": None if mm is None else mm.to_dict(),
        "cpu": None if cpu is None else cpu.to_dict(),
        "embedded_files": {role: {"tag": t.label, "offset": t.data_offset, "size": t.size,
                                  "mem_size": t.mem_size,
                                  "compressed": t.type is TagType.COMPRESSED}
                           for role, t in files.items()},
        "config": None if config is None else {
            "display_name": config.get("displayName"), "guest_os": config.get("guestOS"),
            "entries": dict(config.items())},
        "screenshot": None if shot is None else shot.to_dict(),
        "tags": [t.to_dict() for t in cp.tags()],
    }
    title = {"snapshot": "VMware snapshot state (.vmsn)",
             "suspend": "VMware suspend state (.vmss)"}.get(state, "VMware checkpoint state")
    return Report(KIND, title, data, fields, tables, warnings)


__all__ = ["KIND", "Magic", "Tag", "TagType", "Group", "Checkpoint", "MemoryRegion", "MemoryMap",
           "CpuSummary", "Vcpu", "Screenshot", "sniff", "read", "open_block", "read_block",
           "memory_regions", "cpu_summary", "embedded_files", "embedded_config", "screenshot",
           "checkpoint_state", "inspect"]
