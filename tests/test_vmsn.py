"""VMware checkpoint files (.vmss / .vmsn): container, memory map, cpu, embedded files.

Files come from tests/fixtures/vmsn_writer.py (no public sample exists). Volatility 3's VMware
layer is the independent oracle for the region mapping.
"""

from __future__ import annotations

import json
import struct
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures import vmsn_writer as w
from tests.helpers import mutate, volatility_vmware_layer
from vmsift.errors import FormatError, LimitError, TruncatedError, UnsupportedError, VmsiftError
from vmsift.formats import vmsn
from vmsift.formats.memory import physical_view
from vmsift.source import Alloc, BytesSource, FileSource

GIB = 1 << 30
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="session")
def files(cache_dir) -> dict[str, Path]:
    d = cache_dir / "vmsn"
    d.mkdir(exist_ok=True)
    return {"vmss": w.write_vmss(d / "suspended.vmss"),
            "vmss_sep": w.write_vmss(d / "separate.vmss", embed_memory=False),
            "vmsn": w.write_vmsn(d / "lab-Snapshot1.vmsn"),
            "vmem": w.write_vmem(d / "lab-Snapshot1.vmem")}


@pytest.fixture
def vmss(files):
    with FileSource(files["vmss"]) as src:
        yield src


@pytest.fixture
def vmsn_src(files):
    with FileSource(files["vmsn"]) as src:
        yield src


@pytest.fixture(scope="session")
def vmsn_bytes(files) -> bytes:
    return files["vmsn"].read_bytes()


# --- container ------------------------------------------------------------------------------

def test_header_and_group_table(vmss):
    cp = vmsn.read(vmss)
    assert (cp.magic, cp.variant, cp.version, cp.size_bytes) == (0xBED2BED2, "normal", 8, 8)
    assert [g.name for g in cp.groups] == ["Checkpoint", "main", "cpu", "memory", "SVGA"]
    assert cp.groups[0].tags_offset == 12 + 5 * 80
    for a, b in zip(cp.groups, cp.groups[1:]):  # writer lays groups back to back
        assert a.tags_offset + a.size == b.tags_offset
    assert [len(g.tags) for g in cp.groups] == [2, 6, 39, 9, 2]
    assert all(g.error is None for g in cp.groups) and cp.warnings == []


def test_inline_values_and_indices(vmss):
    main = vmsn.read(vmss).group("main")
    got = [(t.name, t.indices, t.type, t.size, t.value) for t in main.tags]
    assert got == [
        ("one", (), vmsn.TagType.VALUE, 1, 0x7F),
        ("two", (3,), vmsn.TagType.VALUE, 2, 0xBEEF),
        ("eight", (1, 2), vmsn.TagType.VALUE, 8, 0x0123456789ABCDEF),
        ("sixteen", (), vmsn.TagType.VALUE, 16, int.from_bytes(bytes(range(16)), "little")),
        ("maxinline", (4, 5, 6), vmsn.TagType.VALUE, 61, 0),
        ("empty", (), vmsn.TagType.VALUE, 0, 0),
    ]
    d = main.tags[3].to_dict()
    assert d["value"] is None and d["hex"] == bytes(range(16)).hex()  # > 8 bytes: hex only
    assert main.tags[2].to_dict()["value"] == 0x0123456789ABCDEF
    assert main.tags[4].label == "maxinline[4][5][6]"


def test_blocks_located_and_opened(vmss):
    cp = vmsn.read(vmss)
    cpu = cp.group("cpu")
    gp = cpu.find("gpregs", 1)
    assert gp.type is vmsn.TagType.BLOCK and gp.size == gp.mem_size == 128
    assert gp.data_offset % 16 == 0 and gp.pad == gp.data_offset - (gp.offset + 2 + 6 + 4 + 18)
    assert vmsn.open_block(vmss, gp).read(0, 128) == struct.pack("<16Q", *range(16, 32))
    idtr = cpu.find("IDTR", 0)
    assert vmsn.read_block(vmss, idtr) == struct.pack("<HQ", 0xFFF, 0xFFFFF80000001000)
    apic = cpu.find("APIC", 1)
    assert apic.indices == (1, 1, 2) and apic.value == 0xFEE00000


def test_compressed_block(vmss):
    fb = vmsn.read(vmss).group("SVGA").find("fb", 0)
    assert fb.type is vmsn.TagType.COMPRESSED and fb.mem_size == 4096 and fb.size < 100
    assert vmsn.read_block(vmss, fb) == b"\x11\x22" * 2048
    with pytest.raises(UnsupportedError):
        vmsn.open_block(vmss, fb)
    with pytest.raises(LimitError):
        vmsn.read_block(vmss, fb, limit=1000)


def test_compressed_block_of_unknown_compression_is_reported_not_guessed():
    raw = w.to_bytes([w.G("x", [w.T("blob", block=b"\xAA" * 40)])])
    raw = raw.replace(b"\x3f\x04blob", b"\x3e\x04blob", 1)  # tag word: block -> compressed
    src = BytesSource(raw, "odd.vmss")
    tag = vmsn.read(src).group("x").tags[0]
    assert tag.type is vmsn.TagType.COMPRESSED
    with pytest.raises(UnsupportedError, match="not a zlib stream"):
        vmsn.read_block(src, tag)


def test_huge_memory_block_is_never_read(files):
    """The 1.1 GiB sparse .vmss is listed with bounded memory."""
    tracemalloc.start()
    try:
        with FileSource(files["vmss"]) as src:
            report = vmsn.inspect(src)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.data["memory"]["block"]["size"] == 1152 << 20
    assert peak < 8 << 20


# --- memory map -----------------------------------------------------------------------------

def test_memory_regions(vmss):
    mm = vmsn.memory_regions(vmsn.read(vmss))
    assert mm.regions_count == 2 and not mm.linear and mm.align_mask == 0xFFFF
    assert [(r.ppn, r.page_num, r.pages) for r in mm.regions] == w.REGIONS
    assert mm.regions[1].guest_start - (mm.regions[0].guest_start + mm.regions[0].length) \
        == 3 * GIB
    assert mm.size == 1152 << 20 and mm.warnings == []
    assert mm.block.name == "Memory" and mm.block.indices == (0, 0)
    assert mm.block.data_offset % 4096 == 0 and mm.block.size == mm.size


def test_physical_view_of_embedded_memory(vmss):
    mm = vmsn.memory_regions(vmsn.read(vmss))
    phys = physical_view(vmsn.open_block(vmss, mm.block), mm)
    assert phys.size == 4 * GIB + (128 << 20)
    for ppn in w.marked_pages():
        assert phys.read(ppn * 4096, 32) == w.page_marker(ppn)
    assert phys.read(2 * GIB, 4096) == bytes(4096)  # inside the hole
    edge = phys.read(GIB - 4096, 8192)  # last page of region 0, then the hole
    assert edge[:32] == w.page_marker(0x3FFFF) and edge[4096:] == bytes(4096)
    runs = list(phys.extents())
    assert sum(r.length for r in runs) == phys.size
    assert all(a.end == b.offset for a, b in zip(runs, runs[1:]))
    hole = next(r for r in runs if r.offset <= GIB < r.end)
    assert hole.kind is Alloc.HOLE and hole.end >= 4 * GIB
    for ppn in w.marked_pages():
        run = next(r for r in runs if r.offset <= ppn * 4096 < r.end)
        assert run.kind is Alloc.DATA


def test_vmem_and_embedded_block_agree(vmss, files):
    mm = vmsn.memory_regions(vmsn.read(vmss))
    with FileSource(files["vmem"]) as vmem:
        a = physical_view(vmem, mm)
        b = physical_view(vmsn.open_block(vmss, mm.block), mm)
        for addr in (0, 4096, GIB - 64, 4 * GIB, 4 * GIB + (64 << 20), a.size - 100):
            assert a.read(addr, 200) == b.read(addr, 200)


@pytest.mark.parametrize("meta", ["vmsn", "vmss_sep"])
def test_region_mapping_matches_volatility(files, meta):
    oracle = volatility_vmware_layer(files["vmem"], files[meta])
    with FileSource(files[meta]) as msrc, FileSource(files["vmem"]) as vmem:
        phys = physical_view(vmem, vmsn.memory_regions(vmsn.read(msrc)))
        assert oracle.maximum_address + 1 == phys.size
        addrs = [p * 4096 for p in w.marked_pages()]
        addrs += [GIB - 16, 4 * GIB - 4096 * 3, 4 * GIB + 5, phys.size - 4096, 12345]
        for addr in addrs:
            n = min(4096, phys.size - addr)
            assert oracle.read(addr, n, pad=True) == phys.read(addr, n), hex(addr)
        # the hole: volatility has no mapping there, we read zeros and map HOLE
        assert not oracle.is_valid(2 * GIB)
        assert [r.kind for r in phys.extents(2 * GIB, 4096)] == [Alloc.HOLE]


def test_linear_memory_without_regions():
    image = b"".join(w.page_marker(i).ljust(4096, b"\0") for i in range(4))
    raw = w.to_bytes([w.G("memory", [w.T("Memory", (0, 0), block=image, align=4096)])])
    src = BytesSource(raw, "old.vmss")
    mm = vmsn.memory_regions(vmsn.read(src))
    assert mm.linear and mm.regions == [] and mm.regions_count is None and mm.size == 4 * 4096
    phys = physical_view(vmsn.open_block(src, mm.block), mm)
    assert phys.size == 4 * 4096 and phys.read(2 * 4096, 32) == w.page_marker(2)


def test_incomplete_region_is_warned():
    raw = w.to_bytes([w.G("memory", [w.T("regionsCount", value=2),
                                     w.T("regionPageNum", (0,), 0), w.T("regionPPN", (0,), 0),
                                     w.T("regionSize", (0,), 16),
                                     w.T("regionPPN", (1,), 0x100)])])
    mm = vmsn.memory_regions(vmsn.read(BytesSource(raw)))
    assert [(r.ppn, r.pages) for r in mm.regions] == [(0, 16)]
    assert mm.warnings == ["region 1 lacks regionPageNum, regionPPN or regionSize"]


# --- cpu, config, screenshot, report ---------------------------------------------------------

def test_cpu_summary(vmss):
    cpu = vmsn.cpu_summary(vmsn.read(vmss))
    assert cpu.num_vcpus == 2
    assert [(v.index, v.rip, v.cr3) for v in cpu.vcpus] == \
        [(0, w.RIPS[0], w.CR3[0]), (1, w.RIPS[1], w.CR3[1])]


def test_embedded_config_and_files(vmsn_src):
    cp = vmsn.read(vmsn_src)
    cfg = vmsn.embedded_config(cp, vmsn_src)
    assert cfg.get("displayName") == w.DISPLAY_NAME and cfg.get("guestOS") == "windows9-64"
    assert cfg.dump() == w.vmx_text()  # trailing NUL stripped, text intact
    files = vmsn.embedded_files(cp)
    assert set(files) == {"config", "nvram", "extended_config"}
    assert vmsn.read_block(vmsn_src, files["nvram"]) == bytes((i * 7) & 0xFF for i in range(8192))
    assert files["extended_config"].type is vmsn.TagType.COMPRESSED
    assert vmsn.read_block(vmsn_src, files["extended_config"]).startswith(b"<?xml")
    assert vmsn.embedded_config(vmsn.read(BytesSource(w.to_bytes(w.common_groups()))),
                                BytesSource(b"")) is None


def test_screenshot(vmsn_src):
    shot = vmsn.screenshot(vmsn.read(vmsn_src), vmsn_src)
    png = w.png(16, 12)
    assert (shot.group, shot.tag, shot.format, shot.width, shot.height, shot.size) == \
        ("MKSVMX", "imageData", "png", 16, 12, len(png))
    assert vmsn_src.read(shot.offset, shot.size) == png


def test_inspect_vmsn_report(vmsn_src):
    r = vmsn.inspect(vmsn_src)
    assert r.kind == "vmsn" and r.title == "VMware snapshot state (.vmsn)" and r.warnings == []
    assert r.fields["vCPUs"] == 2 and r.fields["display name"] == w.DISPLAY_NAME
    assert r.fields["memory"] == "1.125 GiB, 2 regions, separate .vmem"
    assert r.fields["screenshot"].startswith("png 16x12")
    d = json.loads(json.dumps(r.data))
    assert d["state"] == "snapshot" and d["memsize_mb"] == 1152 and d["size_field_bytes"] == 8
    assert d["config"]["display_name"] == w.DISPLAY_NAME
    assert d["config"]["entries"]["numvcpus"] == "2"
    assert [g["name"] for g in d["groups"]] == \
        ["Checkpoint", "main", "cpu", "Snapshot", "MKSVMX", "memory"]
    assert len(d["tags"]) == sum(g["tag_count"] for g in d["groups"])
    image = next(t for t in d["tags"] if t["name"] == "imageData")
    assert (image["type"], image["size"], image["data_offset"]) == \
        ("block", len(w.png(16, 12)), r.data["screenshot"]["offset"])
    assert d["memory"]["regions"][1] == {"ppn": 0x100000, "page_num": 0x40000, "pages": 0x8000,
                                         "guest_start": 4 * GIB,
                                         "guest_end": 4 * GIB + (128 << 20),
                                         "file_offset": GIB, "length": 128 << 20}
    titles = [t.title for t in r.tables]
    assert titles == ["groups", "memory regions", "vCPUs", "compressed blocks"]


def test_state_by_content_and_name(vmss, vmsn_bytes):
    assert vmsn.inspect(BytesSource(vmsn_bytes, "evidence.bin")).data["state"] == "snapshot"
    small = w.to_bytes(w.common_groups())
    assert vmsn.inspect(BytesSource(small, "evidence.bin")).data["state"] == "checkpoint"
    assert vmsn.inspect(BytesSource(small, "x.VMSS")).title == "VMware suspend state (.vmss)"


@pytest.mark.parametrize("magic", list(vmsn.Magic))
def test_every_magic_and_block_width(magic):
    groups = [w.G("main", [w.T("v", (1,), 5)]), w.G("blk", [w.T("b", (0, 1), block=b"xyz" * 9)])]
    src = BytesSource(w.to_bytes(groups, magic=magic))
    assert vmsn.sniff(src.read(0, 64))
    cp = vmsn.read(src)
    assert cp.size_bytes == (4 if magic & 0xF == 0 else 8)
    assert cp.variant == vmsn.VARIANTS[magic]
    b = cp.group("blk").tags[0]
    head = 2 + 1 + 8 + 2 * cp.size_bytes + 2
    assert (b.size, b.mem_size, b.data_offset - b.offset) == (27, 27, head)
    assert vmsn.read_block(src, b) == b"xyz" * 9


def test_sniff():
    assert not vmsn.sniff(b"") and not vmsn.sniff(b"\xd2\xbe\xd2\xbe")  # shorter than a header
    assert not vmsn.sniff(b"KDMV" + bytes(60))
    assert vmsn.sniff(struct.pack("<III", 0xBED3BED3, 0, 0))
    with pytest.raises(FormatError, match="bad magic"):
        vmsn.read(BytesSource(b"KDMV" + bytes(60)))


# --- damage -----------------------------------------------------------------------------------

def test_truncated_group_table(vmsn_bytes):
    src = BytesSource(vmsn_bytes[:12 + 80 * 3], "cut.vmsn")
    with pytest.raises(TruncatedError) as e:
        vmsn.read(src)
    assert e.value.offset == 12 and "cut.vmsn @ 0xc" in str(e.value)


def test_truncated_tag_names_offset(vmsn_bytes):
    cp = vmsn.read(BytesSource(vmsn_bytes))
    cpu = cp.group("cpu")
    tag = cpu.find("eflags", 1)
    k = cpu.tags.index(tag)
    src = BytesSource(vmsn_bytes[:tag.offset + 4], "cut.vmsn")  # inside the tag's name
    with pytest.raises(TruncatedError) as e:
        vmsn.read(src)
    assert e.value.offset == tag.offset + 2  # where the name starts
    # best effort: the groups before keep their tags, cpu keeps those before the cut
    part = vmsn.read(src, strict=False)
    assert [len(g.tags) for g in part.groups[:3]] == [2, 6, k]
    assert part.groups[2].error is not None
    assert any(f"@ {tag.offset + 2:#x}" in m for m in part.warnings)
    assert vmsn.inspect(src).warnings[0].startswith("group 'cpu': cut.vmsn @ ")


def test_truncated_block_names_tag(vmsn_bytes):
    nvram = vmsn.embedded_files(vmsn.read(BytesSource(vmsn_bytes)))["nvram"]
    src = BytesSource(vmsn_bytes[:nvram.data_offset + 100], "cut.vmsn")
    with pytest.raises(TruncatedError, match="block 'nvram' of 8192 bytes") as e:
        vmsn.read(src)
    assert e.value.offset == nvram.offset


def _set_group(raw: bytes, index: int, offset: int | None = None, size: int | None = None) -> bytes:
    raw = bytearray(raw)
    at = 12 + 80 * index + 64
    if offset is not None:
        raw[at:at + 8] = offset.to_bytes(8, "little")
    if size is not None:
        raw[at + 8:at + 16] = size.to_bytes(8, "little")
    return bytes(raw)


@pytest.mark.parametrize("target", [0, 12, 12 + 80 + 5])
def test_tags_offset_into_group_table(vmsn_bytes, target):
    src = BytesSource(_set_group(vmsn_bytes, 2, offset=target), "loop.vmsn")
    with pytest.raises(FormatError, match="inside the header and group table") as e:
        vmsn.read(src)
    assert e.value.offset == 12 + 2 * 80 + 64
    part = vmsn.read(src, strict=False)
    assert part.groups[2].tags == [] and len(part.groups[3].tags) == 3


def test_group_without_null_tag_before_its_size(vmsn_bytes):
    cp = vmsn.read(BytesSource(vmsn_bytes))
    main = cp.group("main")
    src = BytesSource(_set_group(vmsn_bytes, 1, size=main.tags[2].offset - main.tags_offset))
    with pytest.raises(FormatError, match="no NULL tag before its end") as e:
        vmsn.read(src)
    assert e.value.offset == main.tags[2].offset


def test_tags_past_end_of_file(vmsn_bytes):
    src = BytesSource(_set_group(vmsn_bytes, 4, offset=len(vmsn_bytes) + 10), "x.vmsn")
    with pytest.raises(TruncatedError, match="past the end of the file"):
        vmsn.read(src)


def test_endless_tags_hit_the_limit(monkeypatch):
    monkeypatch.setattr(vmsn, "MAX_TAGS_PER_GROUP", 1000)
    body = bytes([1, 1]) + b"x" + b"\x07"  # valsize 1, name "x": 4 bytes per tag, no NULL
    raw = struct.pack("<III", vmsn.Magic.NORMAL, 0, 1) + b"g".ljust(64, b"\0") + \
        struct.pack("<QQ", 92, 0) + body * 5000
    with pytest.raises(LimitError, match="more than 1000 tags") as e:
        vmsn.read(BytesSource(raw))
    assert e.value.offset == 92 + 1000 * 4


def test_absurd_counts_and_sizes_stay_bounded(vmsn_bytes):
    with pytest.raises(LimitError):
        vmsn.read(BytesSource(struct.pack("<III", vmsn.Magic.NORMAL, 0, 0xFFFFFFFF)))
    huge = w.to_bytes([w.G("g", [w.T("b", block=b"abc")])])
    at = 12 + 80 + 2 + 1  # block header follows the tag word and the name "b"
    raw = huge[:at] + b"\xff" * 16 + huge[at + 16:]
    with pytest.raises(TruncatedError, match="runs past the end"):
        vmsn.read(BytesSource(raw))
    tracemalloc.start()
    try:
        head = vmsn_bytes[:2048]
        for width in (2, 4, 8):
            for pos in range(0, 1200, width):
                try:
                    vmsn.inspect(BytesSource(head[:pos] + b"\xff" * width + head[pos + width:]
                                             + vmsn_bytes[2048:]))
                except VmsiftError:
                    pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20


@FUZZ
@given(st.sampled_from(vmsn.MAGIC_BYTES), st.binary(max_size=4096))
def test_fuzz_random_after_magic(magic, body):
    try:
        vmsn.inspect(BytesSource(magic + body, "fuzz.vmss"))
    except VmsiftError:
        pass


@FUZZ
@given(st.data())
def test_fuzz_mutated_checkpoint(vmsn_bytes, data):
    raw = mutate(data, vmsn_bytes)
    try:
        report = vmsn.inspect(BytesSource(raw, "fuzz.vmsn"))
        json.dumps(report.data)
    except VmsiftError:
        pass
