"""VMFS LVM: the device header at 1 MiB of a VMFS partition, its volumes and extents.

A device (a partition, "extent" in vSphere terms) holds one header (magic ``0xC001D00D``),
a table of volume descriptors (one per logical volume with extents here) and a table of
physical extents (PEs) mapping device byte ranges to logical-volume ranges. A logical volume
spread over several devices (a spanned datastore) has one descriptor with the same LV id on
each of them; the union of their PEs, ordered by logical offset, is the volume.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..layout import Bytes, Int8ul, Int16ul, Int32ul, Int64ul, Padding, Struct

from ...errors import FormatError, LimitError, TruncatedError, VmsiftError
from ...report import human_size
from ...source import ByteSource

MAGIC = 0xC001D00D
HEADER_OFFSET = 0x100000
MAX_VOLUMES_LVM5 = 512  # volume-table entries reserved on LVM 3-5 devices
MAX_VOLUMES_LVM6 = 1
VOLUME_ENTRY_SIZE = 512
PE_ENTRY_SIZE = 128
PES_PER_MAP = 8192
SD_ENTRY_SIZE = 256
SD_ENTRIES = 32
PE_BITMAP_LVM5 = PES_PER_MAP // 8
MAX_EXT_REGIONS = 64  # extended metadata regions followed before calling it a loop
MAX_PES = 1 << 20  # PE entries read per device; a real device has a few hundred at most

Uuid = Struct("time_lo" / Int32ul, "time_hi" / Int32ul, "rand" / Int16ul, "mac" / Bytes(6))

ScsiDiskId = Struct(
    "type" / Int8ul,
    "len" / Int8ul,
    "lun" / Int16ul,
    "device_type" / Int8ul,
    "scsi_level" / Int8ul,
    "vendor" / Bytes(8),
    "model" / Bytes(16),
    "revision" / Bytes(4),
    "id" / Bytes(44),
)
assert ScsiDiskId.sizeof() == 78

DeviceHeader = Struct(
    "magic" / Int32ul,  # 0x00
    "major" / Int32ul,
    "minor" / Int32ul,
    "disk_id" / ScsiDiskId,  # 0x0c
    "disk_block_size" / Int32ul,  # 0x5a
    "total_bytes" / Int64ul,  # 0x5e
    "num_volumes" / Int32ul,  # 0x66
    "num_pes" / Int32ul,  # 0x6a
    "last_pe_index" / Int32ul,
    "generation" / Int64ul,  # 0x72
    "data_offset" / Int64ul,  # 0x7a
    "device_uuid" / Bytes(16),  # 0x82
    "init_time_us" / Int64ul,  # 0x92
    "mod_time_us" / Int64ul,  # 0x9a
    "locked_by" / Bytes(16),  # 0xa2
    "locked_when_us" / Int64ul,  # 0xb2
    Padding(4),  # 0xba
    "num_pe_maps" / Int32ul,  # 0xbe
    "ext_metadata_offset" / Int64ul,  # 0xc2
    "md_alignment" / Int32ul,  # 0xca (LVM6)
    "num_pes6" / Int32ul,  # 0xce (LVM6)
    "flags" / Int32ul,  # 0xd2: 1 = VMFS-L
)
assert DeviceHeader.sizeof() == 0xD6

ExtMetadata = Struct(
    "magic" / Int32ul, "num_pe_maps" / Int32ul, "data_offset" / Int64ul, "next_offset" / Int64ul,
)

VolumeDescriptor = Struct(
    "logical_size" / Int64ul,  # 0x00
    "generation" / Int64ul,
    "state" / Int32ul,  # 0x10
    "name" / Bytes(64),  # 0x14
    "lv_uuid" / Bytes(16),  # 0x54
    "snap_id" / Int32ul,  # 0x64
    "creation_time_us" / Int64ul,  # 0x68
    "volume_id" / Int32ul,  # 0x70
    "num_pes" / Int32ul,  # 0x74 (in 256 MiB units)
    "first_pe" / Int64ul,  # 0x78
    "last_pe" / Int64ul,  # 0x80
    "mod_time_us" / Int64ul,  # 0x88
    "num_devs" / Int32ul,  # 0x90
    Padding(124),
    "consumed_pes" / Int32ul,  # 0x110
    Padding(236),
)
assert VolumeDescriptor.sizeof() == VOLUME_ENTRY_SIZE

PeEntry = Struct(
    "used" / Int8ul,
    "pe_id" / Int32ul,
    "volume_id" / Int32ul,
    "physical_offset" / Int64ul,  # absolute offset on the device
    "logical_offset" / Int64ul,  # offset inside the logical volume
    "length" / Int64ul,
    "version" / Int32ul,
)
assert PeEntry.sizeof() == 0x25

VOLUME_STATES = {0: "invalid", 1: "normal", 2: "resignature pending", 3: "resignature done"}


def format_uuid(raw: bytes) -> str:
    """A VMware UUID as ESXi prints it: ``timeLo-timeHi-rand-mac`` in hex."""
    u = Uuid.parse(raw)
    return f"{u.time_lo:08x}-{u.time_hi:08x}-{u.rand:04x}-{u.mac.hex()}"


def cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


@dataclass
class Extent:
    """One physical extent: ``length`` bytes at ``physical`` on a device = ``logical`` in the LV."""

    logical: int
    physical: int
    length: int
    pe_id: int


@dataclass
class LogicalVolumeEntry:
    """A volume descriptor as one device records it."""

    lv_uuid: str
    snap_id: int
    name: str
    size: int
    state: str
    generation: int
    volume_id: int
    first_pe: int
    last_pe: int
    num_devs: int
    creation_time_us: int

    @property
    def key(self) -> tuple[str, int]:
        return self.lv_uuid, self.snap_id


@dataclass
class Device:
    """The decoded LVM header of one device."""

    name: str
    major: int
    minor: int
    uuid: str
    size: int
    data_offset: int
    md_alignment: int
    flags: int
    generation: int
    init_time_us: int
    mod_time_us: int
    locked_by: str
    disk_vendor: str
    disk_model: str
    disk_id: str
    volumes: list[LogicalVolumeEntry] = field(default_factory=list)
    extents: dict[int, list[Extent]] = field(default_factory=dict)  # volume_id -> extents
    device_names: list[str] = field(default_factory=list)  # SD table (LVM5+, device zero)

    @property
    def is_local(self) -> bool:
        return bool(self.flags & 1)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "uuid": self.uuid, "lvm_version": f"{self.major}.{self.minor}",
            "size": self.size, "data_offset": self.data_offset, "flags": self.flags,
            "generation": self.generation, "init_time_us": self.init_time_us,
            "mod_time_us": self.mod_time_us, "locked_by": self.locked_by,
            "disk": {"vendor": self.disk_vendor, "model": self.disk_model, "id": self.disk_id},
            "device_names": self.device_names,
            "volumes": [vars(v) for v in self.volumes],
        }


def probe(src: ByteSource) -> bool:
    """True when ``src`` carries an LVM device header (cheap, never raises)."""
    try:
        head = src.read(HEADER_OFFSET, 4)
    except VmsiftError:
        return False
    return len(head) == 4 and int.from_bytes(head, "little") == MAGIC


def read_device(src: ByteSource) -> Device:
    """Decode the LVM header, volume table and PE table of one device."""
    raw = src.read_exact(HEADER_OFFSET, DeviceHeader.sizeof(), "LVM device header")
    h = DeviceHeader.parse(raw)
    if h.magic != MAGIC:
        raise FormatError(f"no VMFS LVM header (magic {h.magic:#010x}, expected {MAGIC:#010x})",
                          source=src.name, offset=HEADER_OFFSET)
    if not 3 <= h.major <= 6:
        raise FormatError(f"unknown LVM major version {h.major}", source=src.name,
                          offset=HEADER_OFFSET + 4)
    if h.major >= 6:
        md_block = h.md_alignment
        if md_block < 512 or md_block > (1 << 20) or md_block & (md_block - 1):
            raise FormatError(f"LVM6 metadata alignment {md_block} is not a power of two "
                              f"between 512 and 1 MiB", source=src.name, offset=HEADER_OFFSET + 0xCA)
        max_volumes, bitmap_size = MAX_VOLUMES_LVM6, max(md_block, PE_BITMAP_LVM5)
    else:
        md_block, max_volumes, bitmap_size = 512, MAX_VOLUMES_LVM5, PE_BITMAP_LVM5
    if h.num_volumes > max_volumes:
        raise LimitError(f"{h.num_volumes} volumes on one device, at most {max_volumes}",
                         source=src.name, offset=HEADER_OFFSET + 0x66)
    dev = Device(
        src.name, h.major, h.minor, format_uuid(h.device_uuid), h.total_bytes, h.data_offset,
        h.md_alignment if h.major >= 6 else 0, h.flags if h.major >= 6 else 0, h.generation,
        h.init_time_us, h.mod_time_us, format_uuid(h.locked_by), cstr(h.disk_id.vendor).strip(),
        cstr(h.disk_id.model).strip(), cstr(h.disk_id.id[:h.disk_id.len or 44]).strip())

    try:
        _read_tables(src, h, dev, md_block, max_volumes, bitmap_size)
    except TruncatedError as e:
        if src.size >= dev.size:
            raise
        raise TruncatedError(f"{cut_copy(src.size, dev.size)}: {e.message}", source=src.name,
                             offset=e.offset) from None
    return dev


def cut_copy(have: int, device_size: int) -> str:
    """Says that an image holds ``have`` bytes of a device its LVM header makes larger."""
    missing = device_size - have
    return (f"the image is shorter than its volume says: its LVM header gives the device "
            f"{device_size} bytes ({human_size(device_size)}), the file holds {have} "
            f"({human_size(have)}), {missing} bytes ({human_size(missing)}) missing")


def _read_tables(src: ByteSource, h, dev: Device, md_block: int, max_volumes: int,
                 bitmap_size: int) -> None:
    """The volume table, device names and PE tables of ``dev`` (read_device's second half)."""
    table = HEADER_OFFSET + md_block
    raw_table = src.read_exact(table, h.num_volumes * VOLUME_ENTRY_SIZE, "LVM volume table")
    for i in range(h.num_volumes):
        v = VolumeDescriptor.parse(raw_table[i * VOLUME_ENTRY_SIZE:(i + 1) * VOLUME_ENTRY_SIZE])
        dev.volumes.append(LogicalVolumeEntry(
            format_uuid(v.lv_uuid), v.snap_id, cstr(v.name), v.logical_size,
            VOLUME_STATES.get(v.state, f"unknown ({v.state})"), v.generation, v.volume_id,
            v.first_pe, v.last_pe, v.num_devs, v.creation_time_us))

    # Layout after the volume table (computed, not stored): reserved space, the SD table
    # (device names), then (PE bitmap, PE table) pairs, more in extended metadata regions.
    unused = (1024 - max_volumes) * 512
    sd_table = md_block + max_volumes * VOLUME_ENTRY_SIZE + unused - SD_ENTRY_SIZE * SD_ENTRIES
    first_map = sd_table + SD_ENTRY_SIZE * SD_ENTRIES
    if h.major >= 5 and any(v.first_pe == 0 for v in dev.volumes):
        raw_sd = src.read(HEADER_OFFSET + sd_table, SD_ENTRY_SIZE * SD_ENTRIES)
        for i in range(len(raw_sd) // SD_ENTRY_SIZE):
            name = cstr(raw_sd[i * SD_ENTRY_SIZE:(i + 1) * SD_ENTRY_SIZE])
            if name:
                dev.device_names.append(name)

    pair = bitmap_size + PES_PER_MAP * PE_ENTRY_SIZE
    regions = [(HEADER_OFFSET + first_map, h.num_pe_maps or 1)]
    next_offset, seen = h.ext_metadata_offset, set()
    while next_offset:
        if next_offset in seen or len(regions) > MAX_EXT_REGIONS:
            raise FormatError("extended LVM metadata regions form a loop or are too many",
                              source=src.name, offset=next_offset)
        seen.add(next_offset)
        ext = ExtMetadata.parse(src.read_exact(next_offset, ExtMetadata.sizeof(),
                                               "extended LVM metadata"))
        if ext.magic != MAGIC:
            raise FormatError(f"bad extended LVM metadata magic {ext.magic:#010x}",
                              source=src.name, offset=next_offset)
        regions.append((next_offset + first_map, ext.num_pe_maps))
        next_offset = ext.next_offset

    wanted = h.num_pes
    if wanted > MAX_PES:
        raise LimitError(f"{wanted} physical extents on one device, at most {MAX_PES}",
                         source=src.name, offset=HEADER_OFFSET + 0x6A)
    read = 0
    for base, maps in regions:
        for m in range(min(maps, 64)):
            if read >= wanted:
                break
            n = min(wanted - read, PES_PER_MAP)
            start = base + m * pair + bitmap_size
            raw_pes = src.read_exact(start, n * PE_ENTRY_SIZE, "LVM physical extent table")
            for i in range(n):
                pe = PeEntry.parse(raw_pes[i * PE_ENTRY_SIZE:i * PE_ENTRY_SIZE + PeEntry.sizeof()])
                if pe.used and pe.length:
                    dev.extents.setdefault(pe.volume_id, []).append(
                        Extent(pe.logical_offset, pe.physical_offset, pe.length, pe.pe_id))
            read += n
