"""Partition tables (MBR + EBR chain, GPT) read by vmsift vs sfdisk / sgdisk / fdisk / dd.

Images are made at test time by the real tools (tests/fixtures/partition_images.py); damaged
variants are made by patching copies of them, or by the fixture writer for layouts no tool
makes. `sfdisk --json` (util-linux) is the independent oracle for the decoded tables, `dd`
for the bytes behind each partition.
"""

from __future__ import annotations

import struct
import subprocess
import tracemalloc
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures import partition_images as F
from tests.helpers import require_tool
from vmsift.errors import FormatError, LimitError, VmsiftError
from vmsift.formats import partition as P
from vmsift.source import BytesSource, FileSource

LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
VMFS = "AA31E02A-400F-11DB-9590-000C2911D1B8"


# --- images --------------------------------------------------------------------------------

def dd_write(path: Path, lba: int, data: bytes) -> None:
    subprocess.run(["dd", f"of={path}", "bs=512", f"seek={lba}", "conv=notrunc",
                    "status=none"], input=data, check=True)


def dd_read(path: Path, lba: int, sectors: int, bs: int = 512) -> bytes:
    return subprocess.run(["dd", f"if={path}", f"bs={bs}", f"skip={lba}", f"count={sectors}",
                           "status=none"], check=True, capture_output=True).stdout


def stamp(index: int, sectors: int) -> tuple[bytes, bytes]:
    """The known first and last sector written into partition ``index``."""
    first = f"partition {index} starts here".encode().ljust(512, bytes([index]))
    last = bytes([0xA0 + index]) * 511 + b"\n"
    return first, last


def stamped(path: Path) -> Path:
    """Write ``stamp`` patterns into every data partition, at the oracle's offsets."""
    for p in F.sfdisk_json(path)["partitions"]:
        if p["type"] in ("5", "f", "85"):
            continue
        index = node_index(path, p)
        first, last = stamp(index, p["size"])
        dd_write(path, p["start"], first)
        dd_write(path, p["start"] + p["size"] - 1, last)
    return path


def node_index(path: Path, row: dict) -> int:
    return int(row["node"][len(str(path)):])


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    for tool in ("sfdisk", "sgdisk", "fdisk", "dd"):
        require_tool(tool)
    d = tmp_path_factory.mktemp("partition")
    stamped(F.sfdisk_image(d / "mbr.img", F.MBR_SCRIPT))
    stamped(F.sfdisk_image(d / "gpt.img", F.GPT_SCRIPT))
    stamped(F.sgdisk_esxi_like(d / "esxi.img"))
    F.fdisk_4k(d / "4k.img")
    return d


def copy(images: Path, name: str, new: str) -> Path:
    dest = images / new
    subprocess.run(["cp", "--sparse=always", str(images / name), str(dest)], check=True)
    return dest


def patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def table_of(path: Path) -> P.PartitionTable:
    with FileSource(path) as src:
        return P.read_table(src)


def as_oracle(table: P.PartitionTable) -> list[dict]:
    """Our partitions in the shape of `sfdisk --json` rows (without node)."""
    rows = []
    for p in table.partitions:
        row = {"index": p.index, "start": p.first_lba, "size": p.sectors}
        if table.kind == "mbr":
            row["type"] = f"{p.type_id:x}"
            if p.bootable:
                row["bootable"] = True
        else:
            row.update(type=p.type_guid, uuid=p.guid)
            if p.name:
                row["name"] = p.name
            if p.attributes:
                row["attrs"] = " ".join(P.attribute_names(p.attributes))
        rows.append(row)
    return rows


def oracle(path: Path) -> list[dict]:
    rows = []
    for r in F.sfdisk_json(path)["partitions"]:
        r = dict(r, index=node_index(path, r))
        del r["node"]
        rows.append(r)
    return rows


# --- decoded tables vs the tools -----------------------------------------------------------

def test_mbr_with_logical_partitions_matches_sfdisk(images):
    table = table_of(images / "mbr.img")
    assert table.kind == "mbr" and table.warnings == []
    assert table.disk_id == F.sfdisk_json(images / "mbr.img")["id"] == "0x5eed1234"
    assert as_oracle(table) == oracle(images / "mbr.img")
    assert [(p.index, p.role, p.type_name) for p in table.partitions] == [
        (1, "primary", "Linux"), (2, "primary", "VMware VMFS"),
        (3, "extended", "W95 Extended (LBA)"), (4, "primary", "HPFS/NTFS/exFAT"),
        (5, "logical", "VMware vmkcore"), (6, "logical", "Linux swap / Solaris"),
        (7, "logical", "Linux LVM"), (8, "logical", "Linux")]
    p5 = table.partition(5)
    assert p5.start == 28672 * 512 and p5.size == 8192 * 512
    # the data entry of the first EBR (at the extended partition's first sector)
    assert p5.entry_offset == 26624 * 512 + 446
    assert table.partition(1).bootable and not table.partition(2).bootable


def test_gpt_matches_sfdisk(images):
    path = images / "gpt.img"
    table = table_of(path)
    theirs = F.sfdisk_json(path)
    assert table.kind == "gpt" and table.warnings == []
    assert table.header_used == "primary" and table.primary_ok and table.backup_ok
    assert table.disk_id == theirs["id"]
    assert (table.gpt.first_usable_lba, table.gpt.last_usable_lba) == (
        theirs["firstlba"], theirs["lastlba"])
    assert (table.gpt.entry_count, table.gpt.entry_size, table.gpt.alternate_lba) == (
        128, 128, 64 * 2048 - 1)
    assert as_oracle(table) == oracle(path)
    names = {p.index: (p.type_name, p.name) for p in table.partitions}
    assert names == {1: ("EFI System", "EFI System Partition"), 2: ("VMware VMFS", "datastore1"),
                     3: ("VMware vmkDiagnostic", "vmkDiagnostic"),
                     4: ("Linux LVM", "LVM été ☃"), 5: ("Linux swap", "swap"),
                     6: ("BIOS boot", "bios")}
    assert table.partition(3).attributes == 1 | 1 << 60
    assert table.partition(5).bootable  # legacy BIOS bootable attribute
    assert table.mbr.protective and not table.mbr.hybrid


def test_sgdisk_esxi_layout(images):
    path = images / "esxi.img"
    assert "No problems found" in F.sgdisk_verify(path)
    table = table_of(path)
    assert table.warnings == [] and as_oracle(table) == oracle(path)
    assert [(p.index, p.type_name, p.name) for p in table.partitions] == [
        (1, "EFI System", "BOOT"), (5, "Microsoft basic data", "BOOTBANK1"),
        (6, "Microsoft basic data", "BOOTBANK2"), (7, "VMware ESXi OSDATA", "OSDATA"),
        (8, "VMware VMFS", "datästore☃1")]
    assert table.partition(8).guid == "0E5C0000-0000-4000-8000-000000000008"
    assert table.partition(7).attributes == 1 and table.partition(5).attributes == 1 << 63


def test_hybrid_mbr(images):
    path = copy(images, "esxi.img", "hybrid.img")
    subprocess.run(["sgdisk", "-h", "1:EE", str(path)], check=True, capture_output=True)
    table = table_of(path)
    assert table.kind == "gpt" and table.mbr.hybrid
    assert [(e.type_id, e.lba_start) for e in table.mbr.slots if e.used] == [(0xEF, 64),
                                                                             (0xEE, 1)]
    assert as_oracle(table) == oracle(path)
    assert P.inspect(FileSource(path)).fields["hybrid MBR"] is True


def test_4k_sector_gpt_matches_fdisk(images):
    path = images / "4k.img"
    table = table_of(path)
    assert table.kind == "gpt" and table.sector_size == 4096 and table.warnings == []
    theirs = F.fdisk_list_4k(path)
    assert [(p.first_lba, p.last_lba, p.sectors, p.type_guid, p.guid) for p in table.partitions] \
        == [(r["start"], r["end"], r["sectors"], r["type"], r["uuid"]) for r in theirs]
    assert [p.name for p in table.partitions] == ["four k one", "four k two"]
    assert table.partition(2).start == 1024 * 4096 and table.partition(2).size == 2 << 20
    with FileSource(path) as src:
        assert P.sniff(src.read(0, 65536))
        part = table.partition(2).open(src)
        part_bytes = part.read(0, part.size)
    assert part_bytes == dd_read(path, 1024, 512, bs=4096)


@pytest.mark.parametrize("name", ["mbr.img", "gpt.img", "esxi.img"])
def test_partition_bytes_match_dd(images, name):
    path = images / name
    rows = {node_index(path, r): r for r in F.sfdisk_json(path)["partitions"]}
    with FileSource(path) as src:
        table = P.read_table(src)
        assert sorted(rows) == [p.index for p in table.partitions]
        for p in table.partitions:
            row = rows[p.index]
            part = p.open(src)
            assert part.size == row["size"] * 512
            assert part.read(0, part.size) == dd_read(path, row["start"], row["size"])
            assert sum(r.length for r in part.extents()) == part.size
            assert part.read(part.size, 10) == b""
            if not p.is_container:
                first, last = stamp(p.index, p.sectors)
                assert part.read(0, 512) == first
                assert part.read(part.size - 512, 512) == last


def test_inspect_report(images):
    with FileSource(images / "gpt.img") as src:
        report = P.inspect(src)
    assert report.kind == "partition-table" and report.title == "GPT partition table"
    assert report.fields["scheme"] == "GPT" and report.fields["partitions"] == 6
    assert report.fields["header used"] == "primary (LBA 1)"
    assert set(report.data) == {"kind", "disk_size", "sector_size", "disk_id", "header_used",
                                "gpt", "primary_ok", "backup_ok", "mbr", "partitions"}
    part = report.data["partitions"][2]
    assert part["attribute_names"] == ["RequiredPartition", "GUID:60"]
    assert part["type_name"] == "VMware vmkDiagnostic" and part["size"] == 8192 * 512
    assert report.data["gpt"]["revision"] == "1.0"
    assert [row[0] for row in report.tables[0].rows] == [1, 2, 3, 4, 5, 6]
    with FileSource(images / "mbr.img") as src:
        report = P.inspect(src)
    assert report.data["mbr"]["disk_signature"] == "0x5eed1234"
    assert report.data["gpt"] is None and report.data["partitions"][2]["role"] == "extended"


# --- what is and is not a partition table --------------------------------------------------

def test_sniff_tool_images(images):
    for name in ("mbr.img", "gpt.img", "esxi.img", "4k.img"):
        assert P.sniff((images / name).read_bytes()[:65536]), name


@pytest.mark.parametrize("fat", ["12", "16", "32"])
def test_fat_boot_sector_is_not_a_partition_table(tmp_path, fat):
    require_tool("mkfs.vfat")
    path = tmp_path / "fat.img"
    with open(path, "wb") as f:
        f.truncate(40 << 20)
    subprocess.run(["mkfs.vfat", "-F", fat, "-i", "12345678", str(path)], check=True,
                   capture_output=True)
    head = path.read_bytes()[:65536]
    assert head[510:512] == b"\x55\xaa"
    assert not P.sniff(head)
    table = table_of(path)
    assert table.kind is None and "boot sector" in table.warnings[0]
    with pytest.raises(FormatError, match="no partition table"):
        P.inspect(FileSource(path))


def test_ntfs_boot_sector_with_table_like_bytes():
    # an NTFS boot sector whose boot code happens to look like an entry at byte 446
    code = b"\xebR\x90NTFS    " + bytes(429)
    raw = F.mbr_sector([F.mbr_entry(0x07, 63, 1000)], code=code) + bytes(4096)
    assert not P.sniff(raw)
    assert P.read_table(BytesSource(raw)).kind is None


@pytest.mark.parametrize("raw", [b"", b"\x55\xaa", bytes(511), bytes(4096),
                                 F.mbr_sector([]) + bytes(512),
                                 F.mbr_sector([F.mbr_entry(0x83, 1, 8, status=0x12)])])
def test_not_tables(raw):
    assert not P.sniff(raw)


def test_empty_mbr_is_a_table_without_partitions():
    table = P.read_table(BytesSource(F.mbr_sector([], disk_signature=7) + bytes(512)))
    assert table.kind == "mbr" and table.partitions == [] and table.disk_id == "0x00000007"


@pytest.mark.parametrize("size", [0, 100, 511])
def test_tiny_sources(size):
    table = P.read_table(BytesSource(bytes(size), "tiny.img"))
    assert table.kind is None
    with pytest.raises(FormatError, match="tiny.img @ 0x0: no partition table"):
        P.inspect(BytesSource(bytes(size), "tiny.img"))


# --- damaged inputs --------------------------------------------------------------------------

def test_ebr_loop_on_sfdisk_image(images):
    path = copy(images, "mbr.img", "loop.img")
    good = table_of(images / "mbr.img")
    ext = good.partition(3)
    last_ebr = good.partition(8).entry_offset - 446
    # the last EBR's link slot now points back at the first EBR
    patch(path, last_ebr + 446 + 16, F.mbr_entry(0x05, 0, 2048 + 8192))
    table = table_of(path)
    assert [p.index for p in table.partitions] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert any(f"loops back to LBA {ext.first_lba}" in w for w in table.warnings)


def test_ebr_chain_limit():
    count = P.MAX_EBRS + 50
    img = bytearray((count * 2 + 2100) * 512)
    img[:512] = F.mbr_sector([F.mbr_entry(0x0F, 2048, count * 2)])
    F.ebr_chain(img, 2048, [F.Logical(0x83, 1, gap=1)] * count)
    table = P.read_table(BytesSource(bytes(img)))
    logicals = [p for p in table.partitions if p.role == "logical"]
    assert len(logicals) == P.MAX_EBRS and logicals[-1].index == P.MAX_EBRS + 4
    assert f"EBR chain longer than {P.MAX_EBRS}; stopped" in table.warnings


def test_writer_mbr_agrees_with_sfdisk(tmp_path):
    require_tool("sfdisk")
    img = bytearray(100_000 * 512)
    img[:512] = F.mbr_sector([F.mbr_entry(0x83, 2048, 1000, 0x80),
                              F.mbr_entry(0x05, 4096, 50_000)], disk_signature=0xABCDEF01)
    F.ebr_chain(img, 4096, [F.Logical(0x83, 1000), F.Logical(0x82, 2000, gap=63),
                            F.Logical(0x07, 500)])
    (tmp_path / "w.img").write_bytes(img)
    table = table_of(tmp_path / "w.img")
    assert table.warnings == [] and as_oracle(table) == oracle(tmp_path / "w.img")
    assert [p.first_lba for p in table.partitions if p.role == "logical"] == [6144, 7207, 11255]


def test_gpt_bad_primary_header_crc_uses_backup(images):
    path = copy(images, "gpt.img", "badhdr.img")
    patch(path, 512 + 56, b"\xff")  # a byte of the disk GUID; CRC no longer matches
    table = table_of(path)
    assert table.header_used == "backup" and table.gpt.lba == 64 * 2048 - 1
    assert not table.primary_ok and table.backup_ok
    assert table.warnings[0] == (f"primary GPT header unusable or damaged; using the backup "
                                 f"GPT header at LBA {64 * 2048 - 1}")
    assert "primary GPT header at LBA 1 has a bad CRC32" in table.warnings
    assert as_oracle(table) == oracle(path) == oracle(images / "gpt.img")  # libfdisk agrees
    assert table.disk_id == "6A0C2D3E-1111-4222-8333-000000000001"
    report = P.inspect(FileSource(path))
    assert report.data["header_used"] == "backup" and report.warnings == table.warnings


def test_gpt_bad_primary_entries_use_backup(images):
    path = copy(images, "gpt.img", "badent.img")
    entry2 = table_of(images / "gpt.img").partition(2).entry_offset
    patch(path, entry2 + 56, "XX".encode("utf-16-le"))  # the name of partition 2
    with FileSource(path) as src:
        assert src.read(entry2 + 56, 4) == "XX".encode("utf-16-le")
        table = P.read_table(src)
    assert table.header_used == "backup" and table.partition(2).name == "datastore1"
    assert "primary GPT header at LBA 1: entry array has a bad CRC32" in table.warnings


def test_gpt_bad_backup_keeps_primary(images):
    path = copy(images, "gpt.img", "badbak.img")
    patch(path, (64 * 2048 - 1) * 512 + 56, b"\x00\x01")
    table = table_of(path)
    assert table.header_used == "primary" and table.primary_ok and not table.backup_ok
    assert table.warnings == [f"backup GPT header at LBA {64 * 2048 - 1} has a bad CRC32"]
    assert as_oracle(table) == oracle(images / "gpt.img")


def test_gpt_both_headers_damaged_best_effort(images):
    path = copy(images, "gpt.img", "badboth.img")
    patch(path, 512 + 56, b"\xff")
    patch(path, (64 * 2048 - 1) * 512 + 56, b"\xff")
    table = table_of(path)
    assert table.header_used == "primary" and not table.primary_ok and not table.backup_ok
    assert len(table.partitions) == 6
    assert sum("bad CRC32" in w for w in table.warnings) == 2


def test_gpt_primary_zeroed(images):
    path = copy(images, "gpt.img", "noprimary.img")
    patch(path, 512, bytes(33 * 512))
    table = table_of(path)
    assert table.header_used == "backup"
    assert "primary GPT header at LBA 1 has no 'EFI PART' signature" in table.warnings
    assert as_oracle(table) == oracle(images / "gpt.img")
    # nothing at LBA 1 and a protective MBR: the backup at the end is still found
    assert P.sniff(path.read_bytes()[:65536])


def _set_header_field(path: Path, lba: int, offset: int, fmt: str, value: int) -> None:
    img = bytearray(path.read_bytes())
    struct.pack_into(fmt, img, lba * 512 + offset, value)
    F.refresh_gpt_crcs(img, lba)
    path.write_bytes(img)


def test_absurd_entry_count_falls_back_then_limits(tmp_path):
    img = F.gpt_disk(400, [F.gpt_entry(LINUX, "0A000000-0000-4000-8000-000000000001", 40,
                                       300, name="data")])
    path = tmp_path / "absurd.img"
    path.write_bytes(img)
    _set_header_field(path, 1, 80, "<I", 0xFFFFFFFF)  # entry count, CRC made valid again
    table = table_of(path)
    assert table.header_used == "backup" and table.partition(1).name == "data"
    assert any("entry array of 4294967295 x 128 bytes is larger than" in w
               for w in table.warnings)
    _set_header_field(path, 399, 80, "<I", 0xFFFFFFFF)
    tracemalloc.start()
    try:
        with pytest.raises(LimitError, match="entry array") as e:
            table_of(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20
    assert str(e.value).startswith(f"{path} @ 0x250: ")


@pytest.mark.parametrize("size", [0, 64, 129, 1 << 31])
def test_bad_entry_size_is_a_limit(tmp_path, size):
    img = F.gpt_disk(200, [])
    path = tmp_path / "esize.img"
    path.write_bytes(img)
    _set_header_field(path, 1, 84, "<I", size)
    _set_header_field(path, 199, 84, "<I", size)
    with pytest.raises(LimitError, match=f"GPT entry size is {size}"):
        table_of(path)


def test_unusable_headers_are_a_format_error():
    img = F.gpt_disk(200, [])
    struct.pack_into("<I", img, 512 + 12, 10)          # header size 10 < 92
    struct.pack_into("<I", img, 199 * 512 + 12, 10)
    with pytest.raises(FormatError, match="no GPT header is usable.*header size 10"):
        P.read_table(BytesSource(bytes(img), "hdr.img"))


def test_truncated_gpt_disk(images, tmp_path):
    path = tmp_path / "cut.img"
    full = (images / "gpt.img").read_bytes()
    path.write_bytes(full[:12 << 20])  # 24576 sectors: partitions 3-6 run past the end
    table = table_of(path)
    assert table.header_used == "primary" and not table.backup_ok
    assert len(table.partitions) == 6
    assert any("past the end of the disk (LBA 24575): disk truncated?" in w
               for w in table.warnings)
    assert f"partition 3 ends at byte {30720 * 512}, past the end of the disk " \
           f"({12 << 20} bytes)" in table.warnings
    with FileSource(path) as src:
        part3 = table.partition(3).open(src)
        assert part3.size == (24576 - 22528) * 512
        assert part3.read(0, part3.size) == full[22528 * 512:12 << 20]
        assert table.partition(5).open(src).size == 0


def test_truncated_mbr_disk(images, tmp_path):
    path = tmp_path / "cutmbr.img"
    path.write_bytes((images / "mbr.img").read_bytes()[:40000 * 512])
    table = table_of(path)
    assert [p.index for p in table.partitions] == [1, 2, 3, 4, 5, 6]
    assert "EBR at LBA 49152 is past the end of the disk" in table.warnings
    assert any(w.startswith("partition 6 ends at byte") for w in table.warnings)


def test_stale_gpt_behind_a_real_mbr(images):
    path = copy(images, "gpt.img", "stale.img")
    patch(path, 0, F.mbr_sector([F.mbr_entry(0x83, 2048, 100_000, 0x80)], 0x1234))
    table = table_of(path)
    assert table.kind == "mbr" == {"dos": "mbr"}[F.sfdisk_json(path)["label"]]
    assert table.warnings == ["GPT header ignored: the MBR is not protective (stale GPT?)"]
    assert as_oracle(table) == oracle(path)


def test_gpt_without_protective_mbr(images):
    path = copy(images, "gpt.img", "nopmbr.img")
    patch(path, 0, bytes(512))
    table = table_of(path)
    assert table.kind == "gpt" and len(table.partitions) == 6
    assert table.warnings == ["no protective MBR (no 0x55AA boot signature at byte 510)"]


def test_only_the_backup_header_survives(images, tmp_path):
    path = tmp_path / "wiped.img"
    raw = bytearray((images / "gpt.img").read_bytes())
    raw[:1 << 20] = bytes(1 << 20)  # first MiB zeroed: MBR, primary header and entries
    path.write_bytes(raw)
    table = table_of(path)
    assert table.kind == "gpt" and table.header_used == "backup"
    assert as_oracle(table) == oracle(images / "gpt.img")
    assert "no protective MBR (no 0x55AA boot signature at byte 510)" in table.warnings


def test_gpt_signature_at_the_end_of_a_file_system_is_ignored():
    fat = bytearray(F.mbr_sector([], code=b"\xeb\x3c\x90mkfs.fat" + struct.pack(
        "<HBHBHHBH", 512, 4, 1, 2, 512, 0, 0xF8, 16)))
    img = bytes(fat) + bytes(98 * 512) + b"EFI PART" + bytes(504)
    table = P.read_table(BytesSource(img))
    assert table.kind is None
    assert table.warnings == ["sector 0 is a FAT/NTFS/exFAT boot sector, not a partition table"]
    junk = bytes(99 * 512) + b"EFI PART" + bytes(504)  # no MBR, a stray signature at the end
    table = P.read_table(BytesSource(junk))
    assert table.kind is None
    assert "a GPT signature at the last LBA was not a usable header" in table.warnings


def test_protective_mbr_without_any_gpt(tmp_path):
    img = bytes(F.mbr_sector([F.mbr_entry(0xEE, 1, 99)])) + bytes(99 * 512)
    table = P.read_table(BytesSource(img))
    assert table.kind == "mbr" and table.partitions[0].type_name == "GPT protective"
    assert "protective MBR but no GPT header was found" in table.warnings


def test_mbr_layout_warnings():
    entries = [F.mbr_entry(0x83, 100, 1000), F.mbr_entry(0x07, 900, 200),
               F.mbr_entry(0x0F, 2000, 100), F.mbr_entry(0x05, 3000, 10)]
    img = bytearray(2500 * 512)
    img[:512] = F.mbr_sector(entries)
    img[2000 * 512:2001 * 512] = F.mbr_sector([F.mbr_entry(0x83, 50, 200)])  # leaves the ext.
    table = P.read_table(BytesSource(bytes(img)))
    assert [(p.index, p.role) for p in table.partitions] == [
        (1, "primary"), (2, "primary"), (3, "extended"), (4, "extended"), (5, "logical")]
    assert set(table.warnings) == {
        "extended partition 4 ignored: partition 3 is already the extended partition",
        "logical partition 5 lies outside the extended partition 3",
        "partitions 1 and 2 overlap",
        f"partition 4 ends at byte {3010 * 512}, past the end of the disk ({2500 * 512} bytes)",
    }


def test_gpt_entry_warnings_and_names():
    guid = "0B000000-0000-4000-8000-00000000000{}".format
    entries = [F.gpt_entry(LINUX, guid(1), 50, 40),                     # ends before start
               F.gpt_entry(LINUX, guid(2), 10, 60),                     # before first usable
               F.gpt_entry(LINUX, guid(2), 100, 120, name="dup"),       # duplicate GUID
               F.gpt_entry(VMFS, guid(4), 130, 140)[:56] + b"a\0b\0" + b"\xff" * 68,  # ESXi pads
               F.gpt_entry("12345678-0000-4000-8000-000000000000", guid(5), 150, 160)]
    table = P.read_table(BytesSource(bytes(F.gpt_disk(300, entries))))
    assert [(p.index, p.sectors, p.name, p.type_name) for p in table.partitions] == [
        (1, 0, "", "Linux filesystem"), (2, 51, "", "Linux filesystem"),
        (3, 21, "dup", "Linux filesystem"), (4, 11, "ab", "VMware VMFS"), (5, 11, "", "unknown")]
    assert set(table.warnings) == {
        "partition 1 ends (LBA 40) before it starts (LBA 50)",
        "partition 2 (LBA 10-60) is outside the usable area 34-266",
        f"partitions 2 and 3 have the same GUID {guid(2)}"}


def test_writer_gpt_agrees_with_sfdisk_and_sgdisk(tmp_path):
    require_tool("sgdisk")
    entries = [F.gpt_entry(LINUX, "0C000000-0000-4000-8000-000000000001", 40, 99, name="one"),
               F.gpt_entry(LINUX, "0C000000-0000-4000-8000-000000000002", 100, 200, 1 << 62)]
    path = tmp_path / "w.img"
    path.write_bytes(F.gpt_disk(300, entries))
    assert "No problems found" in F.sgdisk_verify(path)
    table = table_of(path)
    assert table.warnings == [] and as_oracle(table) == oracle(path)


def test_gpt_crc_is_standard_crc32():
    img = F.gpt_disk(100, [])
    header = bytearray(img[512:512 + 92])
    stored = int.from_bytes(header[16:20], "little")
    header[16:20] = bytes(4)
    assert stored == zlib.crc32(header)
    assert P.read_table(BytesSource(bytes(img))).gpt.header_crc_ok


# --- fuzzing ---------------------------------------------------------------------------------

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(raw: bytes) -> None:
    """Only vmsift errors escape, and every partition opens inside the disk."""
    assert isinstance(P.sniff(raw[:65536]), bool)
    src = BytesSource(raw, "fuzz.img")
    try:
        table = P.read_table(src)
        P.inspect(src)
    except VmsiftError:
        return
    for p in table.partitions:
        part = p.open(src)
        assert 0 <= part.size <= src.size and part.start + part.size <= src.size
        assert len(part.read(0, 4096)) == min(4096, part.size)


def _seed_gpt() -> bytes:
    return bytes(F.gpt_disk(120, [
        F.gpt_entry(LINUX, "0D000000-0000-4000-8000-000000000001", 34, 60, 5, "a"),
        F.gpt_entry(VMFS, "0D000000-0000-4000-8000-000000000002", 61, 85, 0, "vmfs")], count=16))


def _seed_mbr() -> bytes:
    img = bytearray(200 * 512)
    img[:512] = F.mbr_sector([F.mbr_entry(0x83, 1, 10, 0x80), F.mbr_entry(0x05, 20, 150)])
    F.ebr_chain(img, 20, [F.Logical(0x83, 10, 2), F.Logical(0xFC, 10, 5),
                          F.Logical(0x07, 20, 1)])
    return bytes(img)


SEEDS = [_seed_gpt(), _seed_mbr()]


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_random_bytes(raw):
    check(raw)


@FUZZ
@given(st.sampled_from(range(len(SEEDS))), st.data())
def test_fuzz_mutated_tables(seed, data):
    raw = bytearray(SEEDS[seed])
    interesting = [0, 446, 512, 1024, 20 * 512 + 446, len(raw) - 512, len(raw) - 512 * 2]
    for _ in range(data.draw(st.integers(1, 10))):
        base = data.draw(st.sampled_from(interesting))
        pos = min(base + data.draw(st.integers(0, 200)), len(raw) - 1)
        action = data.draw(st.sampled_from(["flip", "byte", "max", "cut", "word"]))
        if action == "flip":
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "byte":
            raw[pos] = data.draw(st.integers(0, 255))
        elif action == "max":
            raw[pos:pos + 8] = b"\xff" * 8
        elif action == "word":
            raw[pos:pos + 4] = data.draw(st.integers(0, 2**32 - 1)).to_bytes(4, "little")
        else:
            del raw[max(pos, 1):]
    if seed == 0 and len(raw) == len(SEEDS[0]) and data.draw(st.booleans()):
        F.refresh_gpt_crcs(raw, 1)  # get past the CRC checks into the entry logic
        F.refresh_gpt_crcs(raw, len(raw) // 512 - 1)
    check(bytes(raw))


def test_absurd_fields_stay_bounded():
    """Every 4- and 8-byte window of both seeds' metadata set to 0xFF..: bounded memory."""
    tracemalloc.start()
    try:
        for raw in SEEDS:
            for width in (4, 8):
                for pos in [*range(440, 512, width), *range(512, 604, width),
                            *range(20 * 512 + 446, 20 * 512 + 512, width)]:
                    mutated = bytearray(raw)
                    mutated[pos:pos + width] = b"\xff" * width
                    if raw is SEEDS[0]:
                        F.refresh_gpt_crcs(mutated, 1)
                    check(bytes(mutated))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_report_rows_are_readable(images):
    with FileSource(images / "mbr.img") as src:
        rows = P.inspect(src).tables[0].rows
    assert rows[1] == [2, "primary", 10240, 26623, 16384, "8 MiB", "VMware VMFS", "0xfb", "",
                       ""]
    assert rows[0][-1] == "boot"
