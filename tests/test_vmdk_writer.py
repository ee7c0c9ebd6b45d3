"""Our VMDK writer (monolithicSparse, streamOptimized) checked by qemu-img, libvmdk, dissect and
our own reader, on sources built with qemu-img / qemu-io."""

import json
import os
import struct
import subprocess
import tempfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import missing, require_tool
from vmsift.errors import SourceError, UnsupportedError
from vmsift.formats.vmdk import descriptor, sparse, writer
from vmsift.source import Alloc, ByteSource, BytesSource, FileSource, Run, clip

GRAIN = 65536
MiB = 1 << 20
SUBFORMATS = ["monolithicSparse", "streamOptimized"]

# (name, size, qemu-io writes (pattern, offset, length)); every image is a raw file
SOURCES = {
    "patterns": (100 * MiB + 7 * 512, [
        (0x11, 0, GRAIN),                          # exactly grain 0
        (0x22, 2 * GRAIN - 100, 200),              # straddles grains 1 and 2
        (0x33, MiB, 100_000),                      # partial grains
        (0x00, 10 * MiB, 4 * GRAIN),               # allocated but all zeros: not stored
        (0x44, 32 * MiB - 512, 1024),              # across a grain table span (32 MiB)
        (0x55, 100 * MiB, 7 * 512),                # the partial last grain, to the last sector
    ]),
    "big": (2 << 30, [                             # 2 GiB, mostly empty
        (0x66, 0, MiB), (0x77, 1 << 30, 3 * GRAIN + 512), (0x88, (2 << 30) - 512, 512)]),
}


def run(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def tools():
    require_tool("qemu-img")
    require_tool("qemu-io")


@pytest.fixture(scope="module")
def sources(tools, tmp_path_factory):
    d = tmp_path_factory.mktemp("vmdk-writer-src")
    paths = {}
    for name, (size, writes) in SOURCES.items():
        path = d / f"{name}.raw"
        run("qemu-img", "create", "-q", "-f", "raw", str(path), str(size))
        run("qemu-io", "-f", "raw", *[a for p, o, n in writes
                                       for a in ("-c", f"write -P {p:#x} {o} {n}")], str(path))
        paths[name] = path
    odd = d / "odd.raw"  # not a whole number of sectors: the writer pads with zeros
    odd.write_bytes(b"\x99" * 70_001)
    paths["odd"] = odd
    return paths


@pytest.fixture(scope="module")
def written(sources, tmp_path_factory):
    """Every source written in both subformats: {(name, subformat): (path, stats)}."""
    d = tmp_path_factory.mktemp("vmdk-writer-out")
    out = {}
    for name, src_path in sources.items():
        for sub in SUBFORMATS:
            path = d / f"{name}-{sub}.vmdk"
            with FileSource(src_path) as src:
                out[name, sub] = path, writer.write_vmdk(src, path, sub, threads=3)
    return out


def nonzero_grains(path: Path) -> set[int]:
    """Grains of a raw file holding any non-zero byte (reads only its allocated runs)."""
    grains = set()
    with FileSource(path) as src:
        for r in src.extents():
            if r.kind is not Alloc.DATA:
                continue
            lo = r.offset - r.offset % GRAIN
            for g in range(lo, r.end, GRAIN):
                if src.read(g, GRAIN).strip(b"\0"):
                    grains.add(g // GRAIN)
    return grains


def same_bytes(a: Path, b: Path, length: int) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        pos = 0
        while pos < length:
            x, y = fa.read(16 * MiB), fb.read(16 * MiB)
            if x != y[:len(x)] or len(y) < len(x):
                return False
            if not x:
                break
            pos += len(x)
        return fb.read(1) == b"" or not fb.read().strip(b"\0")


CASES = [(n, s) for n in ("patterns", "big", "odd") for s in SUBFORMATS]


@pytest.mark.parametrize("name,sub", CASES)
def test_qemu_img_check_passes(written, name, sub):
    path, _ = written[name, sub]
    res = subprocess.run(["qemu-img", "check", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "No errors were found" in res.stdout


@pytest.mark.parametrize("name,sub", CASES)
def test_qemu_convert_gives_source_bytes(written, sources, tmp_path, name, sub):
    path, stats = written[name, sub]
    raw = tmp_path / "back.raw"
    run("qemu-img", "convert", "-O", "raw", str(path), str(raw))
    size = sources[name].stat().st_size
    assert raw.stat().st_size == stats.size == -(-size // 512) * 512
    assert same_bytes(sources[name], raw, size)
    if name == "odd":
        assert raw.read_bytes() == b"\x99" * 70_001 + bytes(stats.size - 70_001)


@pytest.mark.parametrize("name,sub", [c for c in CASES if c[0] != "odd"])
def test_qemu_img_compare_identical(written, sources, name, sub):
    path, _ = written[name, sub]
    res = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vmdk",
                          str(sources[name]), str(path)], capture_output=True, text=True)
    assert res.returncode == 0 and "identical" in res.stdout, res.stdout + res.stderr


@pytest.mark.parametrize("name,sub", CASES)
def test_qemu_map_shows_data_only_where_source_has_data(written, sources, name, sub):
    path, stats = written[name, sub]
    mapped = set()
    for m in json.loads(run("qemu-img", "map", "--output=json", str(path))):
        if m["data"]:
            assert m["start"] % GRAIN == 0
            mapped.update(range(m["start"] // GRAIN, -(-(m["start"] + m["length"]) // GRAIN)))
        else:
            assert m["zero"] and not m["present"]
    expect = nonzero_grains(sources[name])
    assert mapped == expect
    assert stats.grains_stored == len(expect)
    if name == "patterns":  # grains 0, 1, 2, 16..17, 511..512, 1600 (last) ...
        assert {0, 1, 2, 16, 17, 511, 512, 1600} <= mapped
        assert not mapped & set(range(160, 164))  # the zero-filled DATA run
        assert stats.zero_grains_skipped >= 4


@pytest.mark.parametrize("name,sub", CASES)
def test_our_reader_reads_it_back(written, sources, name, sub):
    path, stats = written[name, sub]
    size = sources[name].stat().st_size
    with FileSource(path) as f, FileSource(sources[name]) as src:
        ext = sparse.SparseExtent(f)
        assert ext.size == stats.size
        assert ext.header.stream_optimized == (sub == "streamOptimized")
        data_grains = set()
        for r in ext.extents():
            assert r.kind in (Alloc.DATA, Alloc.HOLE)
            if r.kind is Alloc.DATA:
                data_grains.update(range(r.offset // GRAIN, r.end // GRAIN + (r.end % GRAIN > 0)))
                assert ext.read(r.offset, r.length) == \
                    src.read(r.offset, r.length).ljust(r.length, b"\0")
            else:
                assert r.offset >= size or not src.read(r.offset, min(r.length, 4 * MiB)).strip(b"\0")
        assert data_grains == nonzero_grains(sources[name])
        if name != "big":
            assert ext.read(0, size) == src.read(0, size)


@pytest.mark.parametrize("name,sub", [("patterns", s) for s in SUBFORMATS])
def test_libvmdk_and_dissect_read_it_back(written, sources, name, sub):
    try:  # two independent readers: libvmdk-python (LGPL) and dissect.hypervisor (AGPL)
        import pyvmdk
        from dissect.hypervisor.disk import vmdk
    except ImportError as e:
        missing(f"test oracle {e.name}")
    path, _ = written[name, sub]
    expect = sources[name].read_bytes()
    handle = pyvmdk.handle()
    handle.open(str(path))
    handle.open_extent_data_files()
    assert handle.get_media_size() == len(expect)
    assert handle.read_buffer_at_offset(len(expect), 0) == expect
    handle.close()
    with open(path, "rb") as fh:
        disk = vmdk.VMDK(fh)
        assert disk.size == len(expect)
        aligned = len(expect) - len(expect) % 4096  # dissect reads whole 4 KiB blocks and
        assert disk.read(aligned) == expect[:aligned]  # fails on a disk that ends mid-block


@pytest.mark.parametrize("name,sub", CASES)
def test_qemu_info_and_descriptor(written, sources, name, sub):
    path, stats = written[name, sub]
    info = json.loads(run("qemu-img", "info", "--output=json", str(path)))
    assert info["format"] == "vmdk"
    assert info["virtual-size"] == stats.size == stats.capacity_sectors * 512
    data = info["format-specific"]["data"]
    assert data["create-type"] == sub
    assert data["cid"] == int(stats.cid, 16)
    assert data["parent-cid"] == 0xFFFFFFFF
    assert data["extents"][0].get("compressed", False) == (sub == "streamOptimized")
    with FileSource(path) as f:
        header = sparse.read_header(f)
        desc = sparse.embedded_descriptor(f, header)
    assert desc.create_type == sub and desc.cid == int(stats.cid, 16)
    assert desc.parent_cid == 0xFFFFFFFF and not desc.has_parent
    [extent] = desc.extents
    assert (extent.access, extent.sectors, extent.type, extent.filename) == \
        ("RW", stats.capacity_sectors, "SPARSE", path.name)
    assert desc.ddb_get("adapterType") == "lsilogic"
    assert desc.ddb_get("virtualHWVersion") == "4"
    assert desc.ddb_get("longContentID").endswith(stats.cid)
    assert len(desc.ddb_get("longContentID")) == 32
    cyl, heads, spt = writer.geometry(stats.capacity_sectors, "lsilogic")
    assert (desc.ddb_get("geometry.cylinders"), desc.ddb_get("geometry.heads"),
            desc.ddb_get("geometry.sectors")) == (str(cyl), str(heads), str(spt))
    uuid = desc.ddb_get("uuid")
    assert len(bytes.fromhex(uuid.replace(" ", "").replace("-", ""))) == 16 and uuid[23] == "-"
    assert desc.warnings == []


def test_header_fields(written):
    path, _ = written["patterns", "monolithicSparse"]
    with FileSource(path) as f:
        h = sparse.read_header(f)
    assert (h.version, int(h.flags), h.grain_size, h.num_gtes_per_gt, h.compress_algorithm) == \
        (1, 0x3, 128, 512, 0)
    assert (h.descriptor_offset, h.descriptor_size, h.rgd_offset) == (1, 20, 21)
    assert h.newline_ok and not h.unclean_shutdown
    assert h.gd_offset > h.rgd_offset and h.overhead % 128 == 0
    assert sparse.header_problems(h) == []
    raw = path.read_bytes()
    gd = struct.unpack_from("<4I", raw, h.gd_offset * 512)
    rgd = struct.unpack_from("<4I", raw, h.rgd_offset * 512)
    for i in range(4):  # both directories point at identical pre-placed tables
        assert raw[gd[i] * 512:gd[i] * 512 + 2048] == raw[rgd[i] * 512:rgd[i] * 512 + 2048]
        assert gd[i] - rgd[i] == h.gd_offset - h.rgd_offset


def walk_stream(raw: bytes):
    """Walk a streamOptimized file in order: [("grain", sector, lba, size) | (kind, sector, n)]."""
    h = sparse.parse_header(raw[:512])
    pos, items = h.overhead * 512, []
    while pos < len(raw):
        lba, size = struct.unpack_from("<QI", raw, pos)
        if size:
            items.append(("grain", pos // 512, lba, size))
            pos += -(-(12 + size) // 512) * 512
            continue
        kind = sparse.MarkerType(struct.unpack_from("<I", raw, pos + 12)[0])
        items.append((kind.name, pos // 512, lba))
        pos += 512 * (1 + lba)
    return items


def test_stream_layout_follows_vmware(written):
    path, stats = written["patterns", "streamOptimized"]
    raw = path.read_bytes()
    h = sparse.parse_header(raw[:512])
    assert (h.version, int(h.flags), h.compress_algorithm, h.rgd_offset) == (3, 0x30001, 1, 0)
    assert h.gd_offset == sparse.GD_AT_END and h.overhead == 128
    items = walk_stream(raw)
    kinds = [i[0] for i in items]
    assert kinds[-3:] == ["GRAIN_DIRECTORY", "FOOTER", "EOS"]
    assert items[-1][1] * 512 == len(raw) - 512  # EOS is the last sector
    assert items[-2][1] * 512 == len(raw) - 1536 and items[-2][2] == 1
    footer = sparse.parse_header(raw[-1024:-512])
    assert footer.gd_offset == items[-3][1] + 1 and footer.capacity == h.capacity
    assert (footer.version, int(footer.flags), footer.overhead) == (3, 0x30001, 128)
    gd = struct.unpack_from(f"<{-(-h.capacity // (512 * 128))}I", raw, footer.gd_offset * 512)
    # each grain table comes right after the grains of its 32 MiB span, and only if it has any
    span_of_grains, grains = [], 0
    for item in items[:-3]:
        if item[0] == "grain":
            span = item[2] // 128 // 512
            assert not span_of_grains or span_of_grains[-1][0] <= span
            if not span_of_grains or span_of_grains[-1][0] != span:
                span_of_grains.append([span, None])
            grains += 1
        else:
            assert item[0] == "GRAIN_TABLE" and item[2] == 4
            assert span_of_grains[-1][1] is None
            span_of_grains[-1][1] = item[1] + 1
    assert grains == stats.grains_stored
    assert {s: gt for s, gt in span_of_grains} == {i: e for i, e in enumerate(gd) if e}
    for span, gt_sector in span_of_grains:
        gt = struct.unpack_from("<512I", raw, gt_sector * 512)
        for i, entry in enumerate(gt):
            if entry:
                assert struct.unpack_from("<Q", raw, entry * 512)[0] == (span * 512 + i) * 128


def test_two_gib_sparse_is_small_and_memory_bounded(sources, tmp_path):
    for sub in SUBFORMATS:
        out = tmp_path / f"big-{sub}.vmdk"
        with FileSource(sources["big"]) as src:
            tracemalloc.start()
            try:
                stats = writer.write_vmdk(src, out, sub, threads=2)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        assert stats.size == 2 << 30 and stats.grains_stored == 16 + 4 + 1
        assert peak < 24 * MiB, peak
        limit = 2 * MiB if sub == "monolithicSparse" else 256 * 1024
        assert out.stat().st_size == stats.file_size < limit


class PatternSource(ByteSource):
    """A large dense disk made on the fly: every 4 KiB holds its own offset, then a fill byte."""

    def __init__(self, size: int):
        self.size, self.name = size, "<pattern>"

    def read(self, offset: int, length: int) -> bytes:
        start, end = clip(self.size, offset, length)
        out = bytearray((end - start))
        for pos in range(start - start % 4096, end, 4096):
            block = pos.to_bytes(8, "little") + bytes([pos >> 12 & 0xFF or 1]) * 4088
            lo, hi = max(pos, start), min(pos + 4096, end)
            out[lo - start:hi - start] = block[lo - pos:hi - pos]
        return bytes(out)


@pytest.mark.parametrize("sub", SUBFORMATS)
def test_dense_source_memory_is_bounded(tmp_path, sub):
    src = PatternSource(192 * MiB)
    out = tmp_path / "dense.vmdk"
    tracemalloc.start()
    try:
        stats = writer.write_vmdk(src, out, sub, threads=2, level=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats.grains_stored == 192 * 16 and stats.data_bytes == 192 * MiB
    assert peak < 40 * MiB, peak
    with FileSource(out) as f:
        ext = sparse.SparseExtent(f)
        for off in (0, 77 * MiB + 4096 * 3 + 5, 192 * MiB - 4096):
            assert ext.read(off, 8192) == src.read(off, 8192)


def test_zero_grains_of_a_vmdk_source_are_not_stored(tools, tmp_path):
    """A VMDK (with zeroed-grain entries) as the source: its ZERO and HOLE runs cost nothing."""
    srcpath = tmp_path / "z.vmdk"
    run("qemu-img", "create", "-q", "-f", "vmdk", "-o", "zeroed_grain=on", str(srcpath), "10M")
    run("qemu-io", "-f", "vmdk", "-c", "write -P 0x66 0 192k", "-c", "write -z 64k 64k",
        str(srcpath))
    with FileSource(srcpath) as f:
        ext = sparse.SparseExtent(f)
        assert [r.kind for r in ext.extents(0, 3 * GRAIN)] == [Alloc.DATA, Alloc.ZERO, Alloc.DATA]
        for sub in SUBFORMATS:
            out = tmp_path / f"{sub}.vmdk"
            stats = writer.write_vmdk(ext, out, sub)
            assert stats.grains_stored == 2 and stats.zero_grains_skipped == 0
            res = subprocess.run(["qemu-img", "compare", str(srcpath), str(out)],
                                 capture_output=True, text=True)
            assert res.returncode == 0, res.stdout + res.stderr


class RunsSource(BytesSource):
    """Bytes with a given allocation map (runs need not be grain aligned)."""

    def __init__(self, data: bytes, runs: list[Run]):
        super().__init__(data, "<runs>")
        self.runs = runs

    def extents(self, offset=0, length=None):
        start, end = clip(self.size, offset, length)
        for r in self.runs:
            lo, hi = max(r.offset, start), min(r.end, end)
            if hi > lo:
                yield Run(lo, hi - lo, r.kind)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.integers(1, 40 * GRAIN),
       writes=st.lists(st.tuples(st.integers(0, 40 * GRAIN), st.integers(1, 3 * GRAIN),
                                 st.integers(0, 255)), max_size=6),
       sub=st.sampled_from(SUBFORMATS))
def test_random_sources_round_trip(size, writes, sub):
    data = bytearray(size)
    runs = []
    for off, n, byte in writes:
        off = min(off, size - 1)
        n = min(n, size - off)
        data[off:off + n] = bytes([byte]) * n
        runs.append(Run(off, n, Alloc.DATA))
    runs.sort()
    merged = []
    for r in runs:  # the map must not overlap: merge touching runs
        if merged and r.offset <= merged[-1].end:
            merged[-1] = Run(merged[-1].offset, max(merged[-1].end, r.end) - merged[-1].offset,
                             Alloc.DATA)
        else:
            merged.append(r)
    src = RunsSource(bytes(data), merged)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "r.vmdk"
        stats = writer.write_vmdk(src, out, sub, threads=2, cid=0x12345678,
                                  disk_uuid=bytes(range(16)))
        assert stats.cid == "12345678"
        with FileSource(out) as f:
            ext = sparse.SparseExtent(f)
            assert ext.size == -(-size // 512) * 512
            assert ext.read(0, ext.size) == bytes(data).ljust(ext.size, b"\0")
            stored = set()
            for r in ext.extents():
                if r.kind is Alloc.DATA:
                    stored.update(range(r.offset // GRAIN, -(-r.end // GRAIN)))
        expect = {g for g in range(-(-size // GRAIN))
                  if any(data[g * GRAIN:(g + 1) * GRAIN])}
        assert stored == expect
        assert os.listdir(d) == ["r.vmdk"]


def test_geometry_like_vmware():
    assert writer.geometry(3 * 2 ** 30 // 512, "lsilogic") == (391, 255, 63)  # as qemu writes
    assert writer.geometry(512 * MiB // 512, "lsilogic") == (512, 64, 32)
    assert writer.geometry(209714, "buslogic") == (102, 64, 32)
    assert writer.geometry(1536 * MiB // 512, "pvscsi") == (768, 128, 32)
    assert writer.geometry(83886080, "ide") == (83220, 16, 63)  # a 40 GiB Workstation IDE disk
    assert writer.geometry(8192, "ide") == (8, 16, 63)
    assert writer.format_uuid(bytes.fromhex("6000c29a8187b45aa059e69ddab6d047")) == \
        "60 00 c2 9a 81 87 b4 5a-a0 59 e6 9d da b6 d0 47"


def test_ide_adapter_and_hw_version(tmp_path):
    src = BytesSource(b"\x01" * 4096 + bytes(4 * MiB - 4096))
    out = tmp_path / "ide.vmdk"
    writer.write_vmdk(src, out, "streamOptimized", adapter="ide", hw_version=21)
    with FileSource(out) as f:
        desc = sparse.embedded_descriptor(f, sparse.read_header(f))
    assert desc.ddb_get("adapterType") == "ide" and desc.ddb_get("virtualHWVersion") == "21"
    assert desc.ddb_get("geometry.heads") == "16" and desc.ddb_get("geometry.cylinders") == "8"
    assert descriptor.parse(desc.dump()).dump() == desc.dump()


@pytest.mark.parametrize("sub", SUBFORMATS)
def test_output_is_reproducible_with_fixed_ids(tmp_path, sub):
    src = BytesSource(b"\x03" * 3 * GRAIN + bytes(GRAIN) + b"abc" * 1000)
    a, b = tmp_path / "a.vmdk", tmp_path / "b.vmdk"
    for out in (a, b):
        writer.write_vmdk(src, out, sub, cid=0xCAFE, disk_uuid=b"U" * 16)
    raw = a.read_bytes()
    assert raw == b.read_bytes().replace(b'"b.vmdk"', b'"a.vmdk"')
    assert b'CID=0000cafe' in raw and b'ddb.uuid = "55 55 55 55 55 55 55 55-55' in raw
    writer.write_vmdk(src, b, sub, overwrite=True)  # random ids by default
    assert b.read_bytes() != raw.replace(b'"a.vmdk"', b'"b.vmdk"')


def test_refuses_to_overwrite(tmp_path):
    out = tmp_path / "x.vmdk"
    out.write_bytes(b"keep me")
    src = BytesSource(b"\x05" * GRAIN)
    with pytest.raises(SourceError, match="exists"):
        writer.write_vmdk(src, out)
    assert out.read_bytes() == b"keep me"
    stats = writer.write_vmdk(src, out, "streamOptimized", overwrite=True)
    assert out.read_bytes()[:4] == b"KDMV" and stats.grains_stored == 1
    assert sorted(os.listdir(tmp_path)) == ["x.vmdk"]


class FailingSource(BytesSource):
    def read(self, offset, length):
        if offset >= 3 * MiB:
            raise SourceError("disk went away", source=self.name, offset=offset)
        return super().read(offset, length)


@pytest.mark.parametrize("sub", SUBFORMATS)
def test_no_half_file_on_error(tmp_path, sub):
    out = tmp_path / "half.vmdk"
    with pytest.raises(SourceError, match="disk went away"):
        writer.write_vmdk(FailingSource(b"\x07" * 8 * MiB), out, sub)
    assert os.listdir(tmp_path) == []


def test_bad_arguments(tmp_path):
    src = BytesSource(bytes(GRAIN))
    for kwargs in ({"subformat": "monolithicFlat"}, {"adapter": "nvme"},
                   {"hw_version": "4\nx"}, {"cid": 0xFFFFFFFF}, {"disk_uuid": b"short"}):
        with pytest.raises(UnsupportedError):
            writer.write_vmdk(src, tmp_path / "a.vmdk", **kwargs)
    with pytest.raises(UnsupportedError, match="quote"):
        writer.write_vmdk(src, tmp_path / 'a"b.vmdk')
    with pytest.raises(SourceError):
        writer.write_vmdk(src, tmp_path / "missing-dir" / "a.vmdk")
    assert os.listdir(tmp_path) == []


def test_monolithic_sparse_refuses_2tib(tmp_path):
    class Huge(ByteSource):
        size, name = 4 << 40, "<huge>"

        def read(self, offset, length):
            return bytes(min(length, self.size - offset))

        def extents(self, offset=0, length=None):
            yield Run(0, self.size, Alloc.HOLE)

    with pytest.raises(UnsupportedError, match="2 TiB"):
        writer.write_vmdk(Huge(), tmp_path / "h.vmdk")
    stats = writer.write_vmdk(Huge(), tmp_path / "h.vmdk", "streamOptimized")  # streams may
    assert stats.grains_stored == 0 and stats.size == 4 << 40
    with FileSource(tmp_path / "h.vmdk") as f:
        ext = sparse.SparseExtent(f)
        assert list(ext.extents()) == [Run(0, 4 << 40, Alloc.HOLE)]


def test_progress_adds_up_to_capacity(sources):
    seen = []
    with FileSource(sources["patterns"]) as src, tempfile.TemporaryDirectory() as d:
        stats = writer.write_vmdk(src, Path(d) / "p.vmdk", progress=seen.append)
    assert sum(seen) == stats.size and all(n > 0 for n in seen)

