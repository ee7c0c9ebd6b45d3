"""Hosted sparse extents read by vmsift vs qemu-img convert / map on qemu-made files."""

import json
import subprocess

import pytest

from tests.helpers import require_tool, sample
from vmsift.errors import FormatError, LimitError
from vmsift.formats.vmdk import sparse
from vmsift.source import Alloc, BytesSource, FileSource

GRAIN = 65536
WRITES = [  # (pattern, offset, length): grain boundaries, partial grains, the last sector
    (0x11, 0, GRAIN), (0x22, 1 << 20, 100_000), (0x33, 33 << 20, 512),
    (0x44, (100 << 20) - 512, 512), (0x55, 32 * 1024 * 1024 - 512, 1024)]


def qemu(*args, cwd=None):
    return subprocess.run(args, check=True, capture_output=True, text=True, cwd=cwd).stdout


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    require_tool("qemu-img")
    require_tool("qemu-io")
    d = tmp_path_factory.mktemp("sparse")
    qemu("qemu-img", "create", "-q", "-f", "vmdk", str(d / "plain.vmdk"), "100M")
    qemu("qemu-io", "-f", "vmdk", *[a for p, o, n in WRITES
                                    for a in ("-c", f"write -P {p:#x} {o} {n}")],
         str(d / "plain.vmdk"))
    qemu("qemu-img", "convert", "-O", "raw", str(d / "plain.vmdk"), str(d / "plain.raw"))
    qemu("qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized",
         str(d / "plain.raw"), str(d / "stream.vmdk"))
    qemu("qemu-img", "create", "-q", "-f", "vmdk", "-o", "zeroed_grain=on",
         str(d / "zeroed.vmdk"), "10M")
    qemu("qemu-io", "-f", "vmdk", "-c", "write -P 0x66 0 128k", "-c", "write -z 64k 64k",
         str(d / "zeroed.vmdk"))
    return d


def qemu_map(path):
    return json.loads(qemu("qemu-img", "map", "--output=json", str(path)))


@pytest.mark.parametrize("name", ["plain.vmdk", "stream.vmdk"])
def test_bytes_equal_qemu_convert(images, name):
    with FileSource(images / name) as f:
        ext = sparse.SparseExtent(f)
        assert ext.read(0, ext.size) == (images / "plain.raw").read_bytes()
        assert ext.read((1 << 20) + 99_990, 20) == b"\x22" * 10 + b"\0" * 10


@pytest.mark.parametrize("name", ["plain.vmdk", "stream.vmdk", "zeroed.vmdk"])
def test_map_agrees_with_qemu_map(images, name):
    with FileSource(images / name) as f:
        ours = [(r.offset, r.length, r.kind is Alloc.DATA, r.kind is Alloc.ZERO)
                for r in sparse.SparseExtent(f).extents()]
    theirs = []
    for m in qemu_map(images / name):
        # qemu reports unallocated grains as zero (no backing); we say HOLE
        theirs.append((m["start"], m["length"], m["data"], m["zero"] and m["present"]))
    assert ours == theirs


def test_zeroed_grain_entries_are_zero_runs(images):
    with FileSource(images / "zeroed.vmdk") as f:
        ext = sparse.SparseExtent(f)
        assert [(r.offset, r.length, r.kind) for r in ext.extents(0, 3 * GRAIN)] == [
            (0, GRAIN, Alloc.DATA), (GRAIN, GRAIN, Alloc.ZERO), (2 * GRAIN, GRAIN, Alloc.HOLE)]
        assert ext.read(GRAIN - 2, 4) == b"\x66\x66\0\0"


def test_public_sample_partial_last_grain():
    with FileSource(sample("dfvfs_image_2014.vmdk")) as f:
        ext = sparse.SparseExtent(f)
        assert ext.size == 200 * 512
        data = ext.read(0, ext.size)
    assert len(data) == 102400
    with FileSource(sample("dfvfs_ext2.vmdk")) as f:
        ext = sparse.SparseExtent(f)
        assert ext.read(1080, 2) == b"\x53\xef"  # ext2 superblock magic
        assert b"ext2_test" in ext.read(1024, 1024)


def _header(**changes) -> bytearray:
    fields = dict(version=1, flags=3, capacity=2048, grain_size=128, descriptor_offset=0,
                  descriptor_size=0, num_gtes_per_gt=512, rgd_offset=0, gd_offset=1,
                  overhead=2, unclean_shutdown=0, newline_check=b"\n \r\n",
                  compress_algorithm=0, pad=bytes(433))
    fields.update(changes)
    return bytearray(sparse.SparseHeader.build(fields))


@pytest.mark.parametrize("changes, message", [
    (dict(grain_size=3), "grain size"),
    (dict(capacity=1 << 62), "capacity"),
    (dict(gd_offset=10**9), "grain directory"),
    (dict(capacity=1 << 39), "grain directory of 8388608 entries at 0x200 runs past"),
    (dict(num_gtes_per_gt=0), "entries per table"),
])
def test_damaged_headers_are_clear_errors(changes, message):
    raw = bytes(_header(**changes)) + bytes(1024)
    with pytest.raises(FormatError, match=message) as e:
        sparse.SparseExtent(BytesSource(raw, "bad.vmdk"))
    assert "bad.vmdk @ 0x" in str(e.value)


def test_grain_pointers_past_the_end():
    raw = _header() + (4).to_bytes(4, "little") + bytes(508)  # GD[0] -> GT at sector 4
    gt = bytearray(2048)
    gt[0:4] = (10**6).to_bytes(4, "little")  # grain 0 far past the end
    data = bytes(raw) + bytes(1024) + bytes(gt)
    ext = sparse.SparseExtent(BytesSource(data, "past.vmdk"))
    assert list(ext.extents(0, GRAIN))[0].kind is Alloc.DATA
    with pytest.raises(FormatError, match="past the end"):
        ext.read(0, 10)
    raw = _header() + (10**6).to_bytes(4, "little") + bytes(508)
    ext = sparse.SparseExtent(BytesSource(bytes(raw), "gd.vmdk"))
    with pytest.raises(FormatError, match="directory entry 0 points past the end"):
        list(ext.extents())


def test_capacity_limit_is_a_limit_error():
    with pytest.raises(LimitError):
        sparse.SparseExtent(BytesSource(bytes(_header(capacity=1 << 45)) + bytes(512)))


def test_check_finds_shared_and_misplaced_grains():
    raw = _header(capacity=4 * 128) + (4).to_bytes(4, "little") + bytes(508)
    gt = bytearray(2048)
    for i, sector in enumerate([128, 128, 1, 10**6]):  # shared, in metadata, past the end
        gt[4 * i:4 * i + 4] = sector.to_bytes(4, "little")
    data = bytes(raw) + bytes(1024) + bytes(gt) + bytes(128 * 512 - 3072 + 128 * 512)
    ext = sparse.SparseExtent(BytesSource(data, "bad.vmdk"))
    problems = ext.check()
    assert problems == [
        "grain 1 (table entry at 0x804) shares sector 128 with another grain",
        "grain 2 (table entry at 0x808) points into the metadata (sector 1)",
        "grain 3 (table entry at 0x80c) points past the end of the file (sector 1000000)"]


def test_check_is_clean_on_qemu_files(images):
    for name in ("plain.vmdk", "stream.vmdk", "zeroed.vmdk"):
        with FileSource(images / name) as f:
            assert sparse.SparseExtent(f).check() == []


def test_entry_runs_agree_with_each_entry():
    """The runs of a grain table, found with searches, are those of its entries one by one
    (values whose low bytes are zero included: 256, 2**16, 2**24)."""
    import array
    import random

    def one_by_one(values, zeroed):
        runs = []
        for e in values:
            kind = Alloc.HOLE if e == 0 else Alloc.ZERO if e == 1 and zeroed else Alloc.DATA
            runs[-1:] = [(runs[-1][0] + 1, kind)] if runs and runs[-1][1] is kind else \
                runs[-1:] + [(1, kind)]
        return runs

    def merged(runs):
        out = []
        for count, kind in runs:
            out[-1:] = [(out[-1][0] + count, kind)] if out and out[-1][1] is kind else \
                out[-1:] + [(count, kind)]
        return out

    rng = random.Random(7)
    for _ in range(2000):
        values = [rng.choice([0, 0, 0, 1, 5, 256, 1 << 16, 1 << 24, 0xFFFFFFFF])
                  for _ in range(rng.randrange(40))]
        for zeroed in (False, True):
            assert merged(sparse._entry_runs(array.array("I", values), zeroed)) == \
                one_by_one(values, zeroed), (values, zeroed)
