"""Partition tables of a disk image: MBR (with the EBR chain of logical partitions) and GPT.

`read_table` decodes whatever table a `ByteSource` starts with (a flattened virtual disk, a
LUN image) and returns a `PartitionTable` whose partitions open as `SliceSource`s. Damage is
worked around where that is safe (backup GPT header, EBR loops, partitions past the end) and
named in ``warnings``; see ``docs/formats/partition.md`` for the layouts.
"""

from __future__ import annotations

import enum
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

from .layout import Array, Bytes, Int8ul, Int16ul, Int32ul, Int64ul, Struct

from ..errors import FormatError, LimitError
from ..report import Report, Table, human_size
from ..source import ByteSource, SliceSource

KIND = "partition-table"
SECTOR = 512
SECTOR_SIZES = (512, 4096)
BOOT_SIGNATURE = b"\x55\xaa"
GPT_SIGNATURE = b"EFI PART"
PROTECTIVE = 0xEE
EXTENDED_TYPES = frozenset({0x05, 0x0F, 0x85})
MAX_EBRS = 256                    # logical partitions followed before giving up
MAX_ENTRY_SIZE = 4096             # bytes per GPT entry (spec: 128 * 2**n; all tools use 128)
MAX_ENTRY_ARRAY = 1 << 20         # bytes of GPT entries read (8192 entries of 128 bytes)

# --- layouts ----------------------------------------------------------------------------

MbrEntry = Struct(
    "status" / Int8ul,             # 0x80 = bootable ("active"), 0x00 = not
    "chs_first" / Bytes(3),
    "type" / Int8ul,
    "chs_last" / Bytes(3),
    "lba_start" / Int32ul,         # MBR: from the disk start; EBR: see _read_logicals
    "sectors" / Int32ul,
)
Mbr = Struct(
    "boot_code" / Bytes(440),
    "disk_signature" / Int32ul,
    "reserved" / Int16ul,
    "entries" / Array(4, MbrEntry),
    "signature" / Bytes(2),
)
assert Mbr.sizeof() == SECTOR

GptHeader = Struct(
    "signature" / Bytes(8),
    "revision" / Int32ul,
    "header_size" / Int32ul,
    "header_crc" / Int32ul,
    "reserved" / Int32ul,
    "my_lba" / Int64ul,
    "alternate_lba" / Int64ul,
    "first_usable_lba" / Int64ul,
    "last_usable_lba" / Int64ul,
    "disk_guid" / Bytes(16),
    "entries_lba" / Int64ul,
    "entry_count" / Int32ul,
    "entry_size" / Int32ul,
    "entries_crc" / Int32ul,
)
GPT_HEADER_SIZE = GptHeader.sizeof()  # 92
GptEntry = Struct(
    "type_guid" / Bytes(16),
    "guid" / Bytes(16),
    "first_lba" / Int64ul,
    "last_lba" / Int64ul,            # inclusive
    "attributes" / Int64ul,
    "name" / Bytes(72),              # UTF-16LE, NUL padded
)
GPT_ENTRY_SIZE = GptEntry.sizeof()  # 128


# --- names -------------------------------------------------------------------------------

MBR_TYPES = {
    0x01: "FAT12", 0x04: "FAT16 <32M", 0x05: "Extended", 0x06: "FAT16",
    0x07: "HPFS/NTFS/exFAT", 0x0B: "W95 FAT32", 0x0C: "W95 FAT32 (LBA)",
    0x0E: "W95 FAT16 (LBA)", 0x0F: "W95 Extended (LBA)", 0x11: "Hidden FAT12",
    0x12: "Compaq diagnostics", 0x14: "Hidden FAT16 <32M", 0x16: "Hidden FAT16",
    0x17: "Hidden HPFS/NTFS", 0x1B: "Hidden W95 FAT32", 0x1C: "Hidden W95 FAT32 (LBA)",
    0x1E: "Hidden W95 FAT16 (LBA)", 0x27: "Hidden NTFS WinRE", 0x42: "Windows dynamic (LDM)",
    0x82: "Linux swap / Solaris", 0x83: "Linux", 0x84: "Intel hibernation",
    0x85: "Linux extended", 0x86: "NTFS volume set", 0x87: "NTFS volume set",
    0x8E: "Linux LVM", 0xA5: "FreeBSD", 0xA6: "OpenBSD", 0xA8: "Darwin UFS", 0xA9: "NetBSD",
    0xAB: "Darwin boot", 0xAF: "HFS / HFS+", 0xBE: "Solaris boot", 0xBF: "Solaris",
    0xDE: "Dell utility", 0xEA: "Linux extended boot", 0xEE: "GPT protective",
    0xEF: "EFI system (FAT)", 0xFB: "VMware VMFS", 0xFC: "VMware vmkcore",
    0xFD: "Linux RAID autodetect",
}

GPT_TYPES = {
    "C12A7328-F81F-11D2-BA4B-00A0C93EC93B": "EFI System",
    "21686148-6449-6E6F-744E-656564454649": "BIOS boot",
    "024DEE41-33E7-11D3-9D69-0008C781F39F": "MBR partition scheme",
    "E3C9E316-0B5C-4DB8-817D-F92DF00215AE": "Microsoft reserved",
    "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7": "Microsoft basic data",
    "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC": "Windows recovery environment",
    "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3": "Microsoft LDM metadata",
    "AF9B60A0-1431-4F62-BC68-3311714A69AD": "Microsoft LDM data",
    "E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D": "Microsoft Storage Spaces",
    "0FC63DAF-8483-4772-8E79-3D69D8477DE4": "Linux filesystem",
    "E6D6D379-F507-44C2-A23C-238F2A3DF928": "Linux LVM",
    "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F": "Linux swap",
    "A19D880F-05FC-4D3B-A006-743F0F84911E": "Linux RAID",
    "44479540-F297-41B2-9AF7-D131D5F0458A": "Linux root (x86)",
    "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709": "Linux root (x86-64)",
    "B921B045-1DF0-41C3-AF44-4C6F280D3FAE": "Linux root (ARM-64)",
    "933AC7E1-2EB4-4F13-B844-0E14E2AEF915": "Linux home",
    "3B8F8425-20E0-4F3B-907F-1A25A76F98E8": "Linux server data",
    "BC13C2FF-59E6-4262-A352-B275FD6F7172": "Linux extended boot",
    "8DA63339-0007-60C0-C436-083AC8230908": "Linux reserved",
    "CA7D7CCB-63ED-4C53-861C-1742536059CC": "Linux LUKS",
    "AA31E02A-400F-11DB-9590-000C2911D1B8": "VMware VMFS",
    "9D275380-40AD-11DB-BF97-000C2911D1B8": "VMware vmkDiagnostic",
    "9198EFFC-31C0-11DB-8F78-000C2911D1B8": "VMware reserved",
    "381CFCCC-7288-11E0-92EE-000C2911D0B2": "VMware vSAN",
    "77719A0C-A4A0-11E3-A47E-000C29745A24": "VMware Virsto",
    "4EB2EA39-7855-4790-A79E-FAE495E21F8D": "VMware ESXi OSDATA",
    "516E7CB4-6ECF-11D6-8FF8-00022D09712B": "FreeBSD data",
    "516E7CB5-6ECF-11D6-8FF8-00022D09712B": "FreeBSD swap",
    "516E7CB6-6ECF-11D6-8FF8-00022D09712B": "FreeBSD UFS",
    "516E7CBA-6ECF-11D6-8FF8-00022D09712B": "FreeBSD ZFS",
    "48465300-0000-11AA-AA11-00306543ECAC": "Apple HFS/HFS+",
    "7C3457EF-0000-11AA-AA11-00306543ECAC": "Apple APFS",
    "6A898CC3-1DD2-11B2-99A6-080020736631": "Solaris /usr & Apple ZFS",
}


class GptAttr(enum.IntFlag):
    """GPT attribute bits with a meaning for every type (bits 48-63 depend on the type)."""

    REQUIRED = 1 << 0            # platform needs it; do not delete
    NO_BLOCK_IO = 1 << 1         # firmware must not expose it as a block device
    LEGACY_BIOS_BOOTABLE = 1 << 2


_ATTR_NAMES = {0: "RequiredPartition", 1: "NoBlockIOProtocol", 2: "LegacyBIOSBootable"}


def attribute_names(attributes: int) -> list[str]:
    """Names of the set attribute bits, spelled as ``sfdisk`` does (``GUID:60`` for bit 60)."""
    names = []
    for bit in range(64):
        if attributes >> bit & 1:
            names.append(_ATTR_NAMES.get(bit, f"GUID:{bit}" if bit >= 48 else f"bit{bit}"))
    return names


def mbr_type_name(type_id: int) -> str:
    return MBR_TYPES.get(type_id, f"unknown (0x{type_id:02x})") if type_id else "Empty"


def gpt_type_name(type_guid: str) -> str:
    return GPT_TYPES.get(type_guid, "unknown")


def guid_str(raw: bytes) -> str:
    """A GUID as stored on disk (first three fields little-endian), upper case."""
    return str(uuid.UUID(bytes_le=raw)).upper()


def utf16_name(raw: bytes) -> str:
    """A GPT partition name: UTF-16LE up to the first NUL (ESXi pads with 0xFFFF)."""
    units = []
    for i in range(0, len(raw) - 1, 2):
        unit = raw[i:i + 2]
        if unit in (b"\0\0", b"\xff\xff"):
            break
        units.append(unit)
    return b"".join(units).decode("utf-16-le", errors="replace")


# --- decoded records ---------------------------------------------------------------------

@dataclass
class Partition:
    """One partition. ``index`` is the number Linux gives it (MBR primaries 1-4, logicals
    from 5, GPT entry number); ``start`` and ``size`` are bytes."""

    index: int
    role: str                  # "primary" | "extended" | "logical" | "gpt"
    start: int
    size: int
    first_lba: int
    sectors: int
    sector_size: int
    type_id: int | None = None        # MBR type byte
    type_guid: str | None = None      # GPT type GUID
    type_name: str = ""
    name: str | None = None           # GPT name
    guid: str | None = None           # GPT unique partition GUID
    bootable: bool = False            # MBR 0x80 flag / GPT legacy BIOS bootable
    attributes: int = 0               # GPT attribute bits
    entry_offset: int = 0             # byte offset of the table entry describing it

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def last_lba(self) -> int:
        return self.first_lba + self.sectors - 1

    @property
    def is_container(self) -> bool:
        """An MBR extended partition: it holds logical partitions, not a file system."""
        return self.role == "extended"

    def open(self, src: ByteSource) -> SliceSource:
        """The partition's bytes, clipped to the end of ``src`` if it runs past it."""
        size = max(0, min(self.size, src.size - self.start))
        return SliceSource(src, min(self.start, src.size), size,
                           name=f"{src.name}#p{self.index}")

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "role": self.role, "start": self.start,
                "size": self.size, "first_lba": self.first_lba, "sectors": self.sectors,
                "type_id": self.type_id, "type_guid": self.type_guid,
                "type_name": self.type_name, "name": self.name, "guid": self.guid,
                "bootable": self.bootable, "attributes": self.attributes,
                "attribute_names": attribute_names(self.attributes),
                "entry_offset": self.entry_offset}


@dataclass
class MbrSlot:
    """One of the four raw MBR entries (also kept for a GPT disk's protective MBR)."""

    slot: int
    status: int
    type_id: int
    lba_start: int
    sectors: int

    @property
    def used(self) -> bool:
        return self.sectors != 0

    def to_dict(self) -> dict[str, Any]:
        return {"slot": self.slot, "status": self.status, "type_id": self.type_id,
                "type_name": mbr_type_name(self.type_id), "lba_start": self.lba_start,
                "sectors": self.sectors}


@dataclass
class MbrInfo:
    disk_signature: int
    slots: list[MbrSlot]

    @property
    def protective(self) -> bool:
        return any(s.used and s.type_id == PROTECTIVE for s in self.slots)

    @property
    def hybrid(self) -> bool:
        """A protective entry beside ordinary ones (a "hybrid MBR")."""
        return self.protective and any(s.used and s.type_id != PROTECTIVE for s in self.slots)

    def to_dict(self) -> dict[str, Any]:
        return {"disk_signature": f"0x{self.disk_signature:08x}",
                "protective": self.protective, "hybrid": self.hybrid,
                "entries": [s.to_dict() for s in self.slots if s.used]}


@dataclass
class GptHeaderInfo:
    """A decoded GPT header and what its checks found."""

    location: str              # "primary" | "backup"
    lba: int                   # where it was read
    revision: int
    header_size: int
    my_lba: int
    alternate_lba: int
    first_usable_lba: int
    last_usable_lba: int
    disk_guid: str
    entries_lba: int
    entry_count: int
    entry_size: int
    header_crc_ok: bool
    entries_crc: int
    entries_crc_ok: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"location": self.location, "lba": self.lba,
                "revision": f"{self.revision >> 16}.{self.revision & 0xFFFF}",
                "header_size": self.header_size, "my_lba": self.my_lba,
                "alternate_lba": self.alternate_lba,
                "first_usable_lba": self.first_usable_lba,
                "last_usable_lba": self.last_usable_lba, "disk_guid": self.disk_guid,
                "entries_lba": self.entries_lba, "entry_count": self.entry_count,
                "entry_size": self.entry_size, "header_crc_ok": self.header_crc_ok,
                "entries_crc_ok": self.entries_crc_ok}


@dataclass
class PartitionTable:
    """The table found on a disk. ``kind`` is None when there is none (``warnings`` say why
    where something table-like was rejected)."""

    kind: str | None
    disk_size: int
    sector_size: int = SECTOR
    disk_id: str | None = None
    partitions: list[Partition] = field(default_factory=list)
    mbr: MbrInfo | None = None
    gpt: GptHeaderInfo | None = None          # the header that was used
    primary_ok: bool | None = None            # GPT: that copy passed every check
    backup_ok: bool | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def header_used(self) -> str | None:
        return self.gpt.location if self.gpt else None

    def partition(self, index: int) -> Partition:
        for p in self.partitions:
            if p.index == index:
                return p
        raise KeyError(index)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "disk_size": self.disk_size,
                "sector_size": self.sector_size, "disk_id": self.disk_id,
                "header_used": self.header_used,
                "gpt": self.gpt.to_dict() if self.gpt else None,
                "primary_ok": self.primary_ok, "backup_ok": self.backup_ok,
                "mbr": self.mbr.to_dict() if self.mbr else None,
                "partitions": [p.to_dict() for p in self.partitions]}


# --- MBR ---------------------------------------------------------------------------------

def parse_mbr(raw: bytes) -> MbrInfo:
    """Decode a 512-byte MBR or EBR (the signature is not checked here)."""
    m = Mbr.parse(raw[:SECTOR])
    return MbrInfo(m.disk_signature, [MbrSlot(i + 1, e.status, e.type, e.lba_start, e.sectors)
                                      for i, e in enumerate(m.entries)])


def looks_like_boot_sector(raw: bytes) -> bool:
    """True for a FAT / NTFS / exFAT boot sector, which also ends with 0x55AA."""
    if len(raw) < 64:
        return False
    if raw[3:11] in (b"NTFS    ", b"EXFAT   "):
        return True
    if raw[0] not in (0xEB, 0xE9):
        return False
    bytes_per_sector = int.from_bytes(raw[11:13], "little")
    per_cluster, fats, media = raw[13], raw[16], raw[21]
    reserved = int.from_bytes(raw[14:16], "little")
    return (bytes_per_sector in (512, 1024, 2048, 4096) and per_cluster != 0
            and per_cluster & (per_cluster - 1) == 0 and reserved >= 1 and fats in (1, 2)
            and (media == 0xF0 or media >= 0xF8))


def mbr_problem(raw: bytes) -> str | None:
    """Why sector 0 is not an MBR partition table, or None when it is one."""
    if len(raw) < SECTOR:
        return "disk is smaller than one sector"
    if raw[510:512] != BOOT_SIGNATURE:
        return "no 0x55AA boot signature at byte 510"
    if looks_like_boot_sector(raw):
        return "sector 0 is a FAT/NTFS/exFAT boot sector, not a partition table"
    bad = [s.slot for s in parse_mbr(raw).slots if s.status not in (0x00, 0x80)]
    if bad:
        return f"entry {bad[0]} has status byte other than 0x00/0x80"
    return None


def _mbr_partition(slot: MbrSlot, index: int, role: str, base_lba: int,
                   entry_offset: int) -> Partition:
    first = base_lba + slot.lba_start
    return Partition(index=index, role=role, start=first * SECTOR, size=slot.sectors * SECTOR,
                     first_lba=first, sectors=slot.sectors, sector_size=SECTOR,
                     type_id=slot.type_id, type_name=mbr_type_name(slot.type_id),
                     bootable=slot.status == 0x80, entry_offset=entry_offset)


def _read_mbr(src: ByteSource, table: PartitionTable, raw: bytes) -> None:
    mbr = parse_mbr(raw)
    table.kind, table.mbr = "mbr", mbr
    table.disk_id = f"0x{mbr.disk_signature:08x}"
    extended: Partition | None = None
    for slot in mbr.slots:
        if not slot.used:
            continue
        offset = 446 + 16 * (slot.slot - 1)
        role = "extended" if slot.type_id in EXTENDED_TYPES else "primary"
        part = _mbr_partition(slot, slot.slot, role, 0, offset)
        if slot.type_id == 0:
            table.warnings.append(f"MBR entry {slot.slot} has type 0 (empty) but "
                                  f"{slot.sectors} sectors")
        if slot.lba_start == 0:
            table.warnings.append(f"partition {slot.slot} starts at LBA 0, over the MBR")
        table.partitions.append(part)
        if role == "extended":
            if extended is None:
                extended = part
            else:
                table.warnings.append(f"extended partition {slot.slot} ignored: partition "
                                      f"{extended.index} is already the extended partition")
    if extended is not None:
        _read_logicals(src, table, extended)


def _read_logicals(src: ByteSource, table: PartitionTable, ext: Partition) -> None:
    """Follow the EBR chain. In an EBR the data entry's start is relative to that EBR,
    the link entry's start relative to the extended partition."""
    seen: set[int] = set()
    ebr_lba = ext.first_lba
    index = 5
    while True:
        offset = ebr_lba * SECTOR
        if ebr_lba in seen:
            table.warnings.append(f"EBR chain loops back to LBA {ebr_lba}; stopped")
            return
        if len(seen) >= MAX_EBRS:
            table.warnings.append(f"EBR chain longer than {MAX_EBRS}; stopped")
            return
        seen.add(ebr_lba)
        raw = src.read(offset, SECTOR)
        if len(raw) < SECTOR:
            table.warnings.append(f"EBR at LBA {ebr_lba} is past the end of the disk")
            return
        if raw[510:512] != BOOT_SIGNATURE:
            if ebr_lba != ext.first_lba or any(raw):  # an empty extended partition is zeros
                table.warnings.append(f"EBR at LBA {ebr_lba} has no 0x55AA signature; "
                                      f"chain stopped")
            return
        ebr = parse_mbr(raw)
        data = [s for s in ebr.slots if s.used and s.type_id not in EXTENDED_TYPES]
        links = [s for s in ebr.slots if s.used and s.type_id in EXTENDED_TYPES]
        if len(data) > 1:
            table.warnings.append(f"EBR at LBA {ebr_lba} has {len(data)} data entries; "
                                  f"only the first is used")
        if len(links) > 1:
            table.warnings.append(f"EBR at LBA {ebr_lba} has {len(links)} link entries; "
                                  f"only the first is followed")
        if data:
            slot = data[0]
            part = _mbr_partition(slot, index, "logical", ebr_lba,
                                  offset + 446 + 16 * (slot.slot - 1))
            if part.first_lba < ext.first_lba or part.end > ext.end:
                table.warnings.append(f"logical partition {index} lies outside the extended "
                                      f"partition {ext.index}")
            table.partitions.append(part)
            index += 1
        if not links:
            return
        ebr_lba = ext.first_lba + links[0].lba_start
        if not ext.first_lba <= ebr_lba < ext.first_lba + ext.sectors:
            table.warnings.append(f"EBR link at LBA {offset // SECTOR} points outside the "
                                  f"extended partition (LBA {ebr_lba})")


# --- GPT ---------------------------------------------------------------------------------

@dataclass
class _Candidate:
    header: GptHeaderInfo | None
    entries: bytes = b""
    problems: list[str] = field(default_factory=list)
    limit: LimitError | None = None
    usable: bool = False       # header and whole entry array were read

    @property
    def rank(self) -> int:
        """0 = all checks pass; 1 = bad entry CRC; 2 = bad header CRC; 3 = both;
        9 = unusable."""
        h = self.header
        if h is None or not self.usable:
            return 9
        return (0 if h.header_crc_ok else 2) + (0 if h.entries_crc_ok else 1)


def _read_gpt_header(src: ByteSource, lba: int, ss: int, location: str) -> _Candidate:
    offset = lba * ss
    raw = src.read(offset, ss)
    where = f"{location} GPT header at LBA {lba}"
    if len(raw) < GPT_HEADER_SIZE:
        return _Candidate(None, problems=[f"{where} is past the end of the disk"])
    if raw[:8] != GPT_SIGNATURE:
        return _Candidate(None, problems=[f"{where} has no 'EFI PART' signature"])
    h = GptHeader.parse(raw[:GPT_HEADER_SIZE])
    if not GPT_HEADER_SIZE <= h.header_size <= len(raw):
        return _Candidate(None, problems=[f"{where} has header size {h.header_size}"])
    body = bytearray(raw[:h.header_size])
    body[16:20] = bytes(4)
    info = GptHeaderInfo(location, lba, h.revision, h.header_size, h.my_lba, h.alternate_lba,
                         h.first_usable_lba, h.last_usable_lba, guid_str(h.disk_guid),
                         h.entries_lba, h.entry_count, h.entry_size,
                         zlib.crc32(body) == h.header_crc, h.entries_crc)
    cand = _Candidate(info)
    if not info.header_crc_ok:
        cand.problems.append(f"{where} has a bad CRC32")
    if h.my_lba != lba:
        cand.problems.append(f"{where} says it is at LBA {h.my_lba}")
    if h.revision >> 16 != 1:
        cand.problems.append(f"{where} has revision {h.revision:#x}")
    size, count = h.entry_size, h.entry_count
    if size < GPT_ENTRY_SIZE or size % GPT_ENTRY_SIZE or size > MAX_ENTRY_SIZE:
        cand.limit = LimitError(f"GPT entry size is {size}, not a multiple of 128 up to "
                                f"{MAX_ENTRY_SIZE}", source=src.name, offset=offset + 84)
    elif count * size > MAX_ENTRY_ARRAY:
        cand.limit = LimitError(f"GPT entry array of {count} x {size} bytes is larger than "
                                f"{MAX_ENTRY_ARRAY}", source=src.name, offset=offset + 80)
    if cand.limit is not None:
        cand.problems.append(f"{where}: {cand.limit.message}")
        return cand
    array_offset = h.entries_lba * ss
    entries = src.read(array_offset, count * size) if array_offset < src.size else b""
    if len(entries) < count * size:
        cand.problems.append(f"{where}: entry array at LBA {h.entries_lba} runs past the "
                             f"end of the disk")
        return cand
    info.entries_crc_ok = zlib.crc32(entries) == h.entries_crc
    if not info.entries_crc_ok:
        cand.problems.append(f"{where}: entry array has a bad CRC32")
    cand.entries, cand.usable = entries, True
    return cand


def _find_gpt(src: ByteSource, head: bytes, search_end: bool) -> tuple[int, bool] | None:
    """(sector size, found at LBA 1) for the first GPT signature at LBA 1 or, when
    ``search_end``, at the last LBA; None when there is none."""
    for ss in SECTOR_SIZES:
        if head[ss:ss + 8] == GPT_SIGNATURE:
            return ss, True
    for ss in SECTOR_SIZES if search_end else ():
        if src.size >= 2 * ss and src.read(src.size // ss * ss - ss, 8) == GPT_SIGNATURE:
            return ss, False
    return None


def _read_gpt(src: ByteSource, table: PartitionTable, ss: int) -> bool:
    """Fill ``table`` from the best GPT header; False when no header is usable."""
    last_lba = src.size // ss - 1
    primary = _read_gpt_header(src, 1, ss, "primary")
    backup_lbas = []
    if primary.header and 1 < primary.header.alternate_lba <= last_lba:
        backup_lbas.append(primary.header.alternate_lba)
    if last_lba > 1 and last_lba not in backup_lbas:
        backup_lbas.append(last_lba)
    backups = [_read_gpt_header(src, lba, ss, "backup") for lba in backup_lbas]
    if primary.header and primary.header.alternate_lba > last_lba:
        primary.problems.append(f"backup GPT header should be at LBA "
                                f"{primary.header.alternate_lba}, past the end of the disk "
                                f"(LBA {last_lba}): disk truncated?")
    backup = min(backups, key=lambda c: c.rank) if backups else _Candidate(
        None, problems=["disk too small for a backup GPT header"])
    best = primary if primary.rank <= backup.rank else backup
    if best.rank == 9:
        limits = [c.limit for c in (primary, backup) if c.limit]
        if limits:
            raise limits[0]
        table.warnings += primary.problems + backup.problems
        return False
    h = best.header
    if best is backup:
        table.warnings.append(f"primary GPT header unusable or damaged; using the backup "
                              f"GPT header at LBA {h.lba}")
    table.warnings += primary.problems + backup.problems
    if backup.header and backup.header.lba != last_lba:
        table.warnings.append(f"backup GPT header is at LBA {backup.header.lba}, not at the "
                              f"last LBA {last_lba}")
    if primary.rank == 0 and backup.rank == 0 and \
            primary.header.entries_crc != backup.header.entries_crc:
        table.warnings.append("primary and backup GPT entry arrays differ")
    table.kind, table.gpt, table.sector_size = "gpt", h, ss
    table.primary_ok, table.backup_ok = primary.rank == 0, backup.rank == 0
    table.disk_id = h.disk_guid
    _gpt_partitions(table, best.entries, h, ss)
    return True


def _gpt_partitions(table: PartitionTable, entries: bytes, h: GptHeaderInfo, ss: int) -> None:
    zero = bytes(16)
    seen_guids: dict[str, int] = {}
    for i in range(h.entry_count):
        pos = i * h.entry_size
        if entries[pos:pos + 16] == zero:
            continue
        e = GptEntry.parse(entries[pos:pos + GPT_ENTRY_SIZE])
        index = i + 1
        sectors = e.last_lba - e.first_lba + 1 if e.last_lba >= e.first_lba else 0
        type_guid = guid_str(e.type_guid)
        part = Partition(index=index, role="gpt", start=e.first_lba * ss, size=sectors * ss,
                         first_lba=e.first_lba, sectors=sectors, sector_size=ss,
                         type_guid=type_guid, type_name=gpt_type_name(type_guid),
                         name=utf16_name(e.name), guid=guid_str(e.guid),
                         bootable=bool(e.attributes & GptAttr.LEGACY_BIOS_BOOTABLE),
                         attributes=e.attributes, entry_offset=h.entries_lba * ss + pos)
        if e.last_lba < e.first_lba:
            table.warnings.append(f"partition {index} ends (LBA {e.last_lba}) before it "
                                  f"starts (LBA {e.first_lba})")
        elif e.first_lba < h.first_usable_lba or e.last_lba > h.last_usable_lba:
            table.warnings.append(f"partition {index} (LBA {e.first_lba}-{e.last_lba}) is "
                                  f"outside the usable area {h.first_usable_lba}-"
                                  f"{h.last_usable_lba}")
        if part.guid in seen_guids:
            table.warnings.append(f"partitions {seen_guids[part.guid]} and {index} have the "
                                  f"same GUID {part.guid}")
        seen_guids.setdefault(part.guid, index)
        table.partitions.append(part)


# --- the whole table ---------------------------------------------------------------------

def _check_layout(table: PartitionTable) -> None:
    """Warnings for partitions past the end of the disk and for overlaps."""
    for p in table.partitions:
        if p.end > table.disk_size:
            table.warnings.append(f"partition {p.index} ends at byte {p.end}, past the end "
                                  f"of the disk ({table.disk_size} bytes)")
    parts = sorted((p for p in table.partitions if p.size and not p.is_container),
                   key=lambda p: (p.start, p.index))
    widest: Partition | None = None
    for p in parts:
        if widest is not None and p.start < widest.end:
            table.warnings.append(f"partitions {widest.index} and {p.index} overlap")
        if widest is None or p.end > widest.end:
            widest = p


def read_table(src: ByteSource) -> PartitionTable:
    """Decode the partition table at the start of ``src``.

    An MBR with ordinary entries wins (a GPT header beside it is stale, as for Linux).
    GPT is read when the MBR is protective, empty or missing and a GPT signature is at
    LBA 1 or (unless sector 0 is a FAT/NTFS boot sector) at the last LBA. A damaged
    primary GPT header falls back to the backup (``gpt.location == "backup"``).
    Raises `FormatError` when a GPT signature is at LBA 1 (or the MBR is protective) but
    no header is usable, `LimitError` when every GPT header asks for an absurd entry array.
    """
    table = PartitionTable(None, src.size)
    head = src.read(0, 2 * max(SECTOR_SIZES))
    problem = mbr_problem(head[:SECTOR])
    mbr = parse_mbr(head) if problem is None else None
    real_mbr = mbr is not None and not mbr.protective and any(s.used for s in mbr.slots)
    if real_mbr and any(head[ss:ss + 8] == GPT_SIGNATURE for ss in SECTOR_SIZES):
        table.warnings.append("GPT header ignored: the MBR is not protective (stale GPT?)")
    # the end of the disk is searched only where no MBR or file system claims sector 0
    found = None if real_mbr or src.size < 2 * SECTOR else _find_gpt(
        src, head, search_end=not looks_like_boot_sector(head[:SECTOR]))
    if found is not None:
        gpt_ss, at_lba1 = found
        table.mbr = mbr
        if _read_gpt(src, table, gpt_ss):
            if mbr is None or not mbr.protective:
                table.warnings.append(f"no protective MBR ({problem or 'no 0xEE entry'})")
            _check_layout(table)
            return table
        if at_lba1 or (mbr is not None and mbr.protective):
            raise FormatError("GPT signature found but no GPT header is usable: "
                              + "; ".join(table.warnings), source=src.name, offset=gpt_ss)
        table.warnings.append("a GPT signature at the last LBA was not a usable header")
    if mbr is None:
        table.warnings.append(problem)
        return table
    if mbr.protective:
        table.warnings.append("protective MBR but no GPT header was found")
    _read_mbr(src, table, head)
    _check_layout(table)
    return table


# --- inspect protocol --------------------------------------------------------------------

def sniff(head: bytes) -> bool:
    """A GPT signature at LBA 1 (512- or 4096-byte sectors), or a sane MBR with entries."""
    try:
        if any(head[ss:ss + 8] == GPT_SIGNATURE for ss in SECTOR_SIZES):
            return True
        if mbr_problem(head[:SECTOR]) is not None:
            return False
        used = [s for s in parse_mbr(head).slots if s.used]
        return bool(used) and all(s.lba_start >= 1 and s.type_id for s in used)
    except Exception:  # noqa: BLE001 - a sniffer never raises
        return False


def inspect(src: ByteSource) -> Report:
    table = read_table(src)
    if table.kind is None:
        raise FormatError(f"no partition table: {'; '.join(table.warnings)}",
                          source=src.name, offset=0)
    fields: dict[str, Any] = {"scheme": table.kind.upper(), "disk id": table.disk_id,
                              "disk size": f"{table.disk_size} bytes",
                              "sector size": table.sector_size,
                              "partitions": len(table.partitions)}
    if table.gpt:
        fields["header used"] = f"{table.gpt.location} (LBA {table.gpt.lba})"
        fields["primary / backup ok"] = f"{table.primary_ok} / {table.backup_ok}"
        fields["usable LBAs"] = f"{table.gpt.first_usable_lba}-{table.gpt.last_usable_lba}"
        if table.mbr and table.mbr.hybrid:
            fields["hybrid MBR"] = True
    rows = [[p.index, p.role, p.first_lba, p.last_lba, p.sectors, human_size(p.size),
             p.type_name, f"0x{p.type_id:02x}" if p.type_guid is None else p.type_guid,
             p.name or "", "boot" if p.bootable else ""] for p in table.partitions]
    tables = [Table("Partitions", ["#", "role", "first LBA", "last LBA", "sectors", "size",
                                   "type", "type id", "name", "flags"], rows)]
    title = "MBR partition table" if table.kind == "mbr" else "GPT partition table"
    return Report(KIND, title, table.to_dict(), fields, tables, list(table.warnings))
