"""COWD (vmfsSparse) delta extents: our writer's files read by vmsift vs qemu-img convert / map."""

import json
import struct
import subprocess
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.cowd_writer import header_bytes, write_cowd, write_delta_disk
from tests.helpers import mutate, require_tool
from vmsift.datastore.disk import open_disk
from vmsift.datastore.folder import FolderVolume
from vmsift.errors import FormatError, LimitError, TruncatedError, VmsiftError
from vmsift.formats.vmdk import cowd
from vmsift.source import Alloc, ByteSource, BytesSource, FileSource

MiB = 1 << 20
CAPACITY = 64 * 2048  # sectors
GT_SPAN = 4096 * 512  # one grain table with one-sector grains
WRITES = [  # a partial sector, a write across a grain table boundary, long runs, the last sector
    (512, b"\x21" * 700), (GT_SPAN - 1024, b"\x22" * 2048), (5 * MiB, b"\x23" * (3 * MiB)),
    (40 * MiB + 512, bytes(range(256)) * 8), ((64 * MiB) - 512, b"\x24" * 512)]
BASE_WRITES = [(0x11, 0, MiB), (0x12, 20 * MiB, 65536), (0x13, 63 * MiB, MiB)]


def run(*args, cwd=None):
    return subprocess.run(args, check=True, capture_output=True, text=True, cwd=cwd).stdout


def qemu_base(folder, size="64M", writes=BASE_WRITES):
    """A qemu-made monolithicSparse disk with data, and its bytes as a fill function."""
    require_tool("qemu-img")
    require_tool("qemu-io")
    run("qemu-img", "create", "-q", "-f", "vmdk", "base.vmdk", size, cwd=folder)
    run("qemu-io", "-f", "vmdk", *[a for p, o, n in writes
                                   for a in ("-c", f"write -P {p:#x} {o} {n}")],
        "base.vmdk", cwd=folder)
    run("qemu-img", "convert", "-O", "raw", "base.vmdk", "base.raw", cwd=folder)
    raw = (folder / "base.raw").read_bytes()
    return lambda offset, length: raw[offset:offset + length]


def qemu_kinds(folder, name):
    """qemu's map as (start, length, kind) with our kind names, adjacent runs merged."""
    runs = []
    for m in json.loads(run("qemu-img", "map", "--output=json", name, cwd=folder)):
        kind = "data" if m["data"] else "zero" if m["present"] else "hole"
        runs.append((m["start"], m["length"], kind))
    return merged(runs)


def merged(runs):
    out = []
    for start, length, kind in runs:
        if out and out[-1][2] == kind and out[-1][0] + out[-1][1] == start:
            out[-1] = (out[-1][0], out[-1][1] + length, kind)
        else:
            out.append((start, length, kind))
    return out


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """base.vmdk (qemu) <- one.vmdk (COWD, 1-sector grains) <- two.vmdk (COWD, 64 KiB grains)."""
    d = tmp_path_factory.mktemp("cowd")
    fill = qemu_base(d)
    write_delta_disk(d, "one", CAPACITY, WRITES, "base.vmdk", cid=0x1111, fill=fill)
    run("qemu-img", "convert", "-O", "raw", "one.vmdk", "one.raw", cwd=d)
    one = (d / "one.raw").read_bytes()
    write_delta_disk(d, "two", CAPACITY,
                     [(100_000, b"\x31" * 5000), (32 * 65536 - 10, b"\x32" * 20)], "one.vmdk", cid=0x2222, grain_sectors=128,
                     fill=lambda o, n: one[o:o + n])
    run("qemu-img", "convert", "-O", "raw", "two.vmdk", "two.raw", cwd=d)
    return d


@pytest.mark.parametrize("top", ["one.vmdk", "two.vmdk"])
def test_chain_equals_qemu(chain, top):
    with open_disk(FolderVolume(chain), top) as disk:
        assert disk.size == 64 * MiB
        assert disk.read(0, disk.size) == (chain / top.replace(".vmdk", ".raw")).read_bytes()
        ours = merged([(r.offset, r.length, r.kind.value) for r in disk.extents()])
    assert ours == qemu_kinds(chain, top)


def test_values_at_grain_and_table_boundaries(chain):
    with open_disk(FolderVolume(chain), "one.vmdk") as disk:
        assert [link.path for link in disk.chain] == ["one.vmdk", "base.vmdk"]
        assert disk.read(500, 20) == b"\x11" * 12 + b"\x21" * 8      # base under a partial sector
        assert disk.read(1212 - 2, 4) == b"\x21\x21\x11\x11"          # rest of the grain: base
        assert disk.read(GT_SPAN - 1026, 4) == b"\0\0\x22\x22"        # across tables
        assert disk.read(GT_SPAN + 1022, 4) == b"\x22\x22\0\0"
        assert disk.read(64 * MiB - 513, 2) == b"\x13\x24"            # the last sector
        assert disk.read(64 * MiB - 1, 100) == b"\x24"
    with FileSource(chain / "one-delta.vmdk") as f:
        ext = cowd.CowdExtent(f)
        runs = [(r.offset, r.length, r.kind) for r in ext.extents(0, 2048)]
        assert runs == [(0, 512, Alloc.HOLE), (512, 1024, Alloc.DATA), (1536, 512, Alloc.HOLE)]


def test_header_fields(chain):
    with FileSource(chain / "one-delta.vmdk") as f:
        h = cowd.read_header(f)
        assert (h.version, int(h.flags), h.capacity, h.grain_size, h.gd_offset) == (
            1, 3, CAPACITY, 1, 4)
        assert h.num_gd_entries == 32 and h.gd_entries_needed() == 32
        assert h.next_free_sector * 512 == f.size
        assert h.root and h.geometry == (8, 255, 63) and h.parent_file_name is None
        assert (h.name, h.description, h.unclean_shutdown) == ("vmsift", "test delta", 0)
    child = header_bytes(2048, 1, 4, 1, 8, flags=2, parent_file_name="/vmfs/volumes/x/base.vmdk")
    h = cowd.parse_header(child)
    assert not h.root and h.geometry is None
    assert (h.parent_file_name, h.parent_generation) == ("/vmfs/volumes/x/base.vmdk", 7)


def test_inspect_report(chain):
    with FileSource(chain / "one-delta.vmdk") as f:
        head = f.read(0, 65536)
        assert cowd.sniff(head) and not cowd.sniff(b"KDMV" + head[4:])
        report = cowd.inspect(f)
    assert report.kind == "vmdk-cowd" and report.warnings == []
    data = report.data
    assert data["header"]["capacity_sectors"] == CAPACITY
    assert data["header"]["flag_names"] == ["ROOT", "CHECK_CAPABLE"]
    assert data["header"]["geometry"] == {"cylinders": 8, "heads": 255, "sectors": 63}
    sectors = sum(-(-(o % 512 + len(b)) // 512) for o, b in WRITES)
    assert data["map"]["grains"] == {"data": sectors, "zero": 0, "hole": CAPACITY - sectors}
    assert data["map"]["tables_allocated"] == 6  # tables 0, 1, 2, 3, 20, 31
    assert report.tables[0].rows[:2] == [[0, 512, "hole"], [512, 1024, "data"]]
    json.dumps(data)


class CountingSource(ByteSource):
    def __init__(self, inner):
        self.inner, self.name, self.size, self.reads = inner, inner.name, inner.size, 0

    def read(self, offset, length):
        self.reads += 1
        return self.inner.read(offset, length)


def test_contiguous_grains_are_read_at_once(chain):
    with FileSource(chain / "one-delta.vmdk") as f:
        counting = CountingSource(f)
        ext = cowd.CowdExtent(counting)
        ext.read(0, 1)
        before = counting.reads
        data = ext.read(5 * MiB, 3 * MiB)  # 6144 grains, laid out in order, crossing 2 tables
        assert data == b"\x23" * (3 * MiB)
        assert counting.reads - before <= 6  # grain tables + at most one read per layout run


# --- damaged input ---------------------------------------------------------------------------

def small_cowd(tmp_path, **options):
    path = tmp_path / "x-delta.vmdk"
    write_cowd(path, 4096 * 3, [(0, b"\x41" * 1024), (GT_SPAN + 512, b"\x42" * 512)], **options)
    return bytearray(path.read_bytes())


def open_bytes(raw):
    return cowd.CowdExtent(BytesSource(bytes(raw), "x-delta.vmdk"))


def patch(raw, offset, value):
    raw[offset:offset + 4] = struct.pack("<I", value)
    return raw


@pytest.mark.parametrize("field, value, error, message, at", [
    (0, 0x4B444D56, FormatError, "bad magic", 0),
    (16, 0, FormatError, "grain size 0", 16),
    (16, 1 << 20, FormatError, "grain size", 16),
    (24, 0xFFFFFFFF, LimitError, "grain directory entries is 4294967295", 24),
    (24, 1, FormatError, "has 1 entries, 12288 sectors need 3", 24),
    (12, 0xFFFFFFFF, FormatError, "need 1048576", 24),
    (20, 10**6, TruncatedError, "runs past the end", 10**6 * 512),
    (20, 1, FormatError, "overlaps the header", 20),
])
def test_damaged_header(tmp_path, field, value, error, message, at):
    raw = patch(small_cowd(tmp_path), field, value)
    with pytest.raises(error, match=message) as e:
        open_bytes(raw)
    assert e.value.source == "x-delta.vmdk" and e.value.offset == at
    assert f"x-delta.vmdk @ {at:#x}" in str(e.value)


def test_table_and_grain_pointers_past_the_end(tmp_path):
    raw = small_cowd(tmp_path)
    patch(raw, 2048 + 4, 10**6)  # GD[1] -> far away
    ext = open_bytes(raw)
    assert ext.read(0, 2) == b"\x41\x41"
    with pytest.raises(TruncatedError, match="entry 1 points to a grain table") as e:
        list(ext.extents())
    assert e.value.offset == 2048 + 4
    raw = small_cowd(tmp_path)
    gt0 = struct.unpack_from("<I", raw, 2048)[0] * 512
    patch(raw, gt0 + 4, 10**6)  # grain 1 -> far away; the map still reads from tables only
    ext = open_bytes(raw)
    assert [r.kind for r in ext.extents(0, 1024)] == [Alloc.DATA]
    with pytest.raises(TruncatedError, match="runs past the end") as e:
        ext.read(0, 1024)
    assert e.value.offset == 10**6 * 512


@pytest.mark.parametrize("keep", [0, 3, 100, 2047, 2049])
def test_truncated_files(tmp_path, keep):
    raw = small_cowd(tmp_path)[:keep]
    with pytest.raises(VmsiftError) as e:
        ext = open_bytes(raw)
        ext.read(0, ext.size)
    assert e.value.source == "x-delta.vmdk" and e.value.offset is not None


def test_truncated_delta_in_a_chain(chain, tmp_path):
    for name in ("base.vmdk", "one.vmdk"):
        (tmp_path / name).write_bytes((chain / name).read_bytes())
    (tmp_path / "one-delta.vmdk").write_bytes((chain / "one-delta.vmdk").read_bytes()[:5000])
    with pytest.raises(TruncatedError, match="one-delta.vmdk @ 0x"), \
            open_disk(FolderVolume(tmp_path), "one.vmdk") as disk:
        disk.read(0, disk.size)


def test_capacity_mismatch_with_descriptor(chain, tmp_path):
    for name in ("base.vmdk", "one-delta.vmdk"):
        (tmp_path / name).write_bytes((chain / name).read_bytes())
    text = (chain / "one.vmdk").read_text().replace(f"RW {CAPACITY} ", "RW 2048 ")
    (tmp_path / "one.vmdk").write_text(text)
    with pytest.raises(FormatError, match="says 2048 sectors, the vmfssparse header 131072"):
        open_disk(FolderVolume(tmp_path), "one.vmdk")


# --- fuzzing and memory ----------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def exercise(raw: bytes) -> None:
    src = BytesSource(raw, "fuzz-delta.vmdk")
    try:
        cowd.inspect(src)
        ext = cowd.CowdExtent(src)
        list(ext.extents(0, 8 * MiB))
        ext.read(0, 256 * 1024)
        ext.read(max(ext.size - 65536, 0), 65536)
    except VmsiftError:
        pass


@pytest.fixture(scope="module")
def seed(tmp_path_factory):
    return bytes(small_cowd(tmp_path_factory.mktemp("seed")))


@FUZZ
@given(st.data())
def test_fuzz_mutated_writer_output(seed, data):
    raw = mutate(data, seed, rounds=6)
    exercise(raw)


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_random_bytes_after_magic(data):
    exercise(b"COWD" + data)


def test_absurd_fields_stay_bounded(seed):
    tracemalloc.start()
    try:
        for pos in range(4, 2048 + 16, 4):
            exercise(seed[:pos] + b"\xff\xff\xff\xff" + seed[pos + 4:])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * MiB
