"""SESparse delta extents: our writer's files read by vmsift vs qemu-img convert / map,
alone and in chains mixing hosted sparse, COWD and SESparse links."""

import json
import struct
import subprocess
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.cowd_writer import write_delta_disk
from tests.fixtures.sesparse_writer import write_sesparse, write_sesparse_disk
from tests.test_vmdk_cowd import merged, qemu_base, qemu_kinds, run
from vmsift.datastore.disk import open_disk
from vmsift.datastore.folder import FolderVolume
from vmsift.errors import FormatError, LimitError, TruncatedError, UnsupportedError, VmsiftError
from vmsift.formats.vmdk import sesparse
from vmsift.source import Alloc, BytesSource, FileSource

MiB = 1 << 20
GRAIN = 4096
GT_SPAN = 4096 * GRAIN  # 16 MiB
CAPACITY = 64 * 2048    # sectors
WRITES = [  # partial grain, across a grain and a table boundary, a long run, the last sector
    (GRAIN + 100, b"\x31" * 100), (GT_SPAN - 10, b"\x32" * 20), (30 * MiB, b"\x33" * MiB),
    (64 * MiB - 512, b"\x34" * 512)]
ZERO = [(0, GRAIN), (20 * MiB, 2 * GRAIN)]     # type 2 over base data
UNMAP = [(63 * MiB, GRAIN)]                    # type 1 over base data


def fill_from(path):
    raw = path.read_bytes()
    return lambda offset, length: raw[offset:offset + length]


@pytest.fixture(scope="module")
def disks(tmp_path_factory):
    """base.vmdk (qemu) <- se.vmdk (SESparse; grain numbers from 0x12345)."""
    d = tmp_path_factory.mktemp("sesparse")
    fill = qemu_base(d)
    write_sesparse_disk(d, "se", CAPACITY, WRITES, "base.vmdk", cid=0x5555, fill=fill,
                        zero=ZERO, unmap=UNMAP, first_grain=0x12345)
    run("qemu-img", "convert", "-O", "raw", "se.vmdk", "se.raw", cwd=d)
    return d


def test_equals_qemu(disks):
    with open_disk(FolderVolume(disks), "se.vmdk") as disk:
        assert [link.path for link in disk.chain] == ["se.vmdk", "base.vmdk"]
        assert disk.read(0, disk.size) == (disks / "se.raw").read_bytes()
        ours = merged([(r.offset, r.length, r.kind.value) for r in disk.extents()])
    assert ours == qemu_kinds(disks, "se.vmdk")


def test_zero_unmapped_and_boundary_values(disks):
    with open_disk(FolderVolume(disks), "se.vmdk") as disk:
        assert disk.read(GRAIN - 2, 4) == b"\0\0\x11\x11"            # zero grain over base
        assert disk.read(GRAIN + 98, 4) == b"\x11\x11\x31\x31"        # partial write over base
        assert disk.read(GT_SPAN - 11, 22) == b"\0" + b"\x32" * 20 + b"\0"
        assert disk.read(20 * MiB - 1, 2) == b"\0\0"                  # base 0x12 is zeroed
        assert disk.read(20 * MiB + 2 * GRAIN, 1) == b"\x12"
        assert disk.read(63 * MiB - 1, 2) == b"\0\0"                  # base 0x13 is unmapped
        assert disk.read(63 * MiB + GRAIN, 1) == b"\x13"
        assert disk.read(64 * MiB - 513, 1000) == b"\x13" + b"\x34" * 512
    with FileSource(disks / "se-sesparse.vmdk") as f:
        ext = sesparse.SeSparseExtent(f)
        assert [(r.offset, r.length, r.kind) for r in ext.extents(0, 3 * GRAIN)] == [
            (0, GRAIN, Alloc.ZERO), (GRAIN, GRAIN, Alloc.DATA), (2 * GRAIN, GRAIN, Alloc.HOLE)]
        assert ext.read(GRAIN + 100, 100) == b"\x31" * 100
        assert ext.read(0, 10) == bytes(10)


def test_headers_and_report(disks):
    with FileSource(disks / "se-sesparse.vmdk") as f:
        h = sesparse.read_header(f)
        assert (h.capacity, h.grain_size, h.grain_table_size, h.flags) == (CAPACITY, 8, 64, 0)
        assert h.region("volatile_header") == (1, 1) and h.region("journal") == (2048, 2048)
        assert h.region("grain_directory") == (4096, 2048)
        v = sesparse.read_volatile_header(f, h)
        assert (v.magic, v.replay_journal, v.dirty) == (0xCAFECAFE, 0, False)
        assert sesparse.sniff(f.read(0, 65536))
        report = sesparse.inspect(f)
    assert report.kind == "vmdk-sesparse" and report.warnings == []
    assert report.fields["version"] == "2.1" and report.fields["journal"] == "clean"
    grains = sum(-(-(o % GRAIN + len(b)) // GRAIN) for o, b in WRITES)
    assert report.data["map"]["types"] == {
        "allocated": grains, "zero": 3, "unmapped": 1,
        "unallocated": CAPACITY // 8 - grains - 4}
    assert report.data["map"]["grains"]["zero"] == 4
    assert report.data["map"]["tables_allocated"] == 3  # tables 0, 1 and 3
    assert [row[0] for row in report.tables[0].rows] == list(sesparse.REGIONS)
    json.dumps(report.data)


@pytest.mark.parametrize("order", [("cowd", "sesparse"), ("sesparse", "cowd"),
                                   ("sesparse", "qemu")])
def test_three_deep_mixed_chain(tmp_path, order):
    """base (qemu monolithicSparse) <- middle <- top, each kind of delta over each other."""
    fill = qemu_base(tmp_path)
    parent, cid = "base.vmdk", 0x100
    writes = [[(0, b"\x51" * 3000), (10 * MiB + 512, b"\x52" * MiB)],
              [(1000, b"\x61" * 5000), (10 * MiB, b"\x62" * 4096), (64 * MiB - 512, b"\x63" * 512)]]
    for name, kind, w in zip(("mid", "top"), order, writes):
        if kind == "cowd":
            write_delta_disk(tmp_path, name, CAPACITY, w, parent, cid=cid, fill=fill)
        elif kind == "sesparse":
            write_sesparse_disk(tmp_path, name, CAPACITY, w, parent, cid=cid, fill=fill)
        else:  # a hosted sparse child made by qemu itself
            run("qemu-img", "create", "-q", "-f", "vmdk", "-b", parent, "-F", "vmdk",
                f"{name}.vmdk", cwd=tmp_path)
            run("qemu-io", "-f", "vmdk", *[a for o, b in w for a in
                                           ("-c", f"write -P {b[0]:#x} {o} {len(b)}")],
                f"{name}.vmdk", cwd=tmp_path)
        run("qemu-img", "convert", "-O", "raw", f"{name}.vmdk", f"{name}.raw", cwd=tmp_path)
        fill = fill_from(tmp_path / f"{name}.raw")
        parent, cid = f"{name}.vmdk", cid + 1
    with open_disk(FolderVolume(tmp_path), "top.vmdk") as disk:
        assert [link.path for link in disk.chain] == ["top.vmdk", "mid.vmdk", "base.vmdk"]
        assert [link.descriptor.create_type for link in disk.chain][2] == "monolithicSparse"
        assert disk.read(0, disk.size) == (tmp_path / "top.raw").read_bytes()
        assert disk.read(998, 4) == b"\x51\x51\x61\x61"
        assert disk.read(20 * MiB, 1) == b"\x12"
        ours = merged([(r.offset, r.length, r.kind.value) for r in disk.extents()])
    assert ours == qemu_kinds(tmp_path, "top.vmdk")


# --- dirty journal and damaged input ---------------------------------------------------------

def test_dirty_journal_refused_unless_allowed(tmp_path):
    fill = qemu_base(tmp_path)
    write_sesparse_disk(tmp_path, "d", CAPACITY, WRITES, "base.vmdk", cid=7, fill=fill,
                        dirty=True)
    qemu = subprocess.run(["qemu-img", "convert", "-O", "raw", "d.vmdk", "d.raw"],
                          check=False, cwd=tmp_path, capture_output=True, text=True)
    assert qemu.returncode != 0 and "dirty" in qemu.stderr  # the oracle refuses it too
    with pytest.raises(UnsupportedError, match="journal must be replayed") as e:
        open_disk(FolderVolume(tmp_path), "d.vmdk")
    assert e.value.source.endswith("/d-sesparse.vmdk") and e.value.offset == 512 + 24
    with FileSource(tmp_path / "d-sesparse.vmdk") as f:
        ext = sesparse.SeSparseExtent(f, allow_dirty=True)
        assert len(ext.warnings) == 1 and "journal not replayed" in ext.warnings[0]
        assert ext.read(GRAIN + 100, 2) == b"\x31\x31"
        report = sesparse.inspect(f)
    assert report.data["volatile_header"]["dirty"] is True
    assert report.fields["journal"] == "needs replay (dirty)"
    assert any("replayJournal" in w for w in report.warnings)


def small(tmp_path, **options):
    path = tmp_path / "x-sesparse.vmdk"
    write_sesparse(path, 3 * GT_SPAN // 512, [(0, b"\x41" * 5000), (GT_SPAN, b"\x42" * 10)],
                   zero=[(2 * GT_SPAN, GRAIN)], **options)
    return bytearray(path.read_bytes())


def open_bytes(raw, **kw):
    return sesparse.SeSparseExtent(BytesSource(bytes(raw), "x-sesparse.vmdk"), **kw)


def put(raw, offset, value):
    raw[offset:offset + 8] = struct.pack("<Q", value)
    return raw


GD_AT = 4096 * 512
GT_AT = 6144 * 512


@pytest.mark.parametrize("offset, value, error, message, at", [
    (0, 0xCAFECAFE, FormatError, "bad magic", 0),
    (8, 0x0000000200000002, UnsupportedError, "version 0x0000000200000002", 8),
    (16, 1 << 45, LimitError, "capacity", 16),
    (24, 16, UnsupportedError, "grain size 16", 24),
    (32, 128, UnsupportedError, "grain table size 128", 32),
    (80, 10**9, TruncatedError, "volatile header at sector 1000000000", 80),
    (512, 0xCAFEBABE, FormatError, "bad volatile header magic 0xcafebabe", 512),
    (128, 10**9, TruncatedError, "grain_directory region at sector 1000000000", 128),
    (136, 0, FormatError, "grain directory of 0 sectors is too small for 3", 136),
    (16, 1 << 36, FormatError, "2048 sectors is too small for 2097152 tables", 136),
    (192, 0, FormatError, "grains region starts at sector 0", 192),
])
def test_damaged_headers(tmp_path, offset, value, error, message, at):
    raw = put(small(tmp_path), offset, value)
    with pytest.raises(error, match=message) as e:
        open_bytes(raw)
    assert e.value.source == "x-sesparse.vmdk" and e.value.offset == at
    assert f"x-sesparse.vmdk @ {at:#x}" in str(e.value)


def test_grain_directory_past_the_end(tmp_path):
    raw = put(put(small(tmp_path), 16, 1 << 36), 136, 1 << 16)
    with pytest.raises(TruncatedError, match="directory of 2097152 entries at 0x200000 runs "
                                             "past the end") as e:
        open_bytes(raw)
    assert e.value.offset == GD_AT


@pytest.mark.parametrize("offset, value, message, at", [
    (GD_AT, 0x2000000000000000, "not 0x10000000xxxxxxxx", GD_AT),
    (GD_AT, 0x1000000000000077, "names grain table 119, the grain table area holds 32", GD_AT),
    (GT_AT, 0x4000000000000000, r"entry 0 is 0x4000000000000000 \(type 0x4\)", GT_AT),
    (GT_AT + 8 * 5, 0x0000000000000005, "unallocated entry with stray bits", GT_AT + 40),
    (GT_AT + 8, 0x3FFFFFFFFFFFFFFF, "entry 1 .* beyond any file", GT_AT + 8),
])
def test_damaged_tables(tmp_path, offset, value, message, at):
    raw = put(small(tmp_path), offset, value)
    ext = open_bytes(raw)
    with pytest.raises(FormatError, match=message) as e:
        list(ext.extents())
    assert e.value.offset == at and e.value.source == "x-sesparse.vmdk"
    with pytest.raises(FormatError, match=message):
        ext.read(0, ext.size)


def test_grain_past_the_end_and_truncation(tmp_path):
    raw = small(tmp_path)
    put(raw, GT_AT, (3 << 60) | 0x100)  # grain number 0x100000: 4 GiB in, past the end
    ext = open_bytes(raw)
    assert next(iter(ext.extents())).kind is Alloc.DATA
    with pytest.raises(TruncatedError, match="runs past the end"):
        ext.read(0, 10)
    assert ext.read(GRAIN, 10) == b"\x41" * 10
    full = small(tmp_path)
    for keep in (0, 7, 300, 700, GD_AT + 8, GT_AT + 100, len(full) - 1):
        with pytest.raises(VmsiftError) as e:
            ext = open_bytes(full[:keep])
            list(ext.extents())
            ext.read(0, ext.size)
        assert e.value.source == "x-sesparse.vmdk" and e.value.offset is not None, keep


def test_header_problems_are_warnings(tmp_path):
    raw = put(small(tmp_path), 40, 1)
    put(raw, 48, 5)
    report = sesparse.inspect(BytesSource(bytes(raw), "x-sesparse.vmdk"))
    assert "flags are 0x1, every known file has 0" in report.warnings
    assert "reserved header fields are not zero" in report.warnings
    assert report.data["map"]["grains"]["data"] == 3
    raw = put(small(tmp_path), GD_AT, 0x2000000000000000)
    report = sesparse.inspect(BytesSource(bytes(raw), "x-sesparse.vmdk"))
    assert report.data["header"]["capacity_sectors"] == 3 * GT_SPAN // 512
    assert any(w.startswith("grain map unreadable: x-sesparse.vmdk @ 0x200000")
               for w in report.warnings)


# --- fuzzing and memory ----------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def exercise(raw: bytes) -> None:
    src = BytesSource(raw, "fuzz-sesparse.vmdk")
    try:
        sesparse.inspect(src)
        ext = sesparse.SeSparseExtent(src, allow_dirty=True)
        list(ext.extents(0, 64 * MiB))
        ext.read(0, 256 * 1024)
        ext.read(max(ext.size - 65536, 0), 65536)
    except VmsiftError:
        pass


@pytest.fixture(scope="module")
def seed(tmp_path_factory):
    """The metadata of a small file (grain data cut off, headers and tables kept)."""
    return bytes(small(tmp_path_factory.mktemp("seed")))


@FUZZ
@given(st.data())
def test_fuzz_mutated_writer_output(seed, data):
    raw = bytearray(seed)
    spots = [0, 512, GD_AT, GT_AT, len(raw) - 8]
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.one_of(st.integers(0, len(raw) - 1),
                                  st.sampled_from(spots).map(lambda s: s + 8 * data.draw(
                                      st.integers(0, 40)))))
        pos = min(pos, len(raw) - 1)
        action = data.draw(st.sampled_from(["flip", "cut", "max", "word", "typed"]))
        if action == "flip":
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "cut":
            del raw[pos:]
            if not raw:
                break
        elif action == "max":
            raw[pos:pos + 8] = b"\xff" * 8
        elif action == "word":
            raw[pos:pos + 8] = struct.pack("<Q", data.draw(st.integers(0, (1 << 64) - 1)))
        else:  # an entry of a given type with random payload, where tables are
            entry = data.draw(st.integers(0, 15)) << 60 | data.draw(st.integers(0, (1 << 60) - 1))
            at = data.draw(st.sampled_from([GD_AT, GT_AT])) + 8 * data.draw(st.integers(0, 4))
            raw[at:at + 8] = struct.pack("<Q", entry)
    exercise(bytes(raw))


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_random_bytes_after_magic(data):
    exercise(sesparse.MAGIC_BYTES + data)


def test_absurd_fields_stay_bounded(seed):
    tracemalloc.start()
    try:
        for base in (0, 512, GD_AT, GT_AT):
            for pos in range(base, base + 256, 8):
                exercise(seed[:pos] + b"\xff" * 8 + seed[pos + 8:])
                exercise(seed[:pos] + b"\xff\xff\xff\x0f" + seed[pos + 4:])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * MiB
