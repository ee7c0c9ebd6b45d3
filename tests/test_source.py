"""ByteSource implementations on real sparse host files."""

import os

import pytest

from vmsift.errors import LimitError, SourceError, TruncatedError
from vmsift.source import (Alloc, BytesSource, ConcatSource, FileSource, Run, SliceSource,
                           ZeroSource, merge_runs)

MiB = 1 << 20


@pytest.fixture
def sparse_file(tmp_path):
    """8 MiB file: data at [1 MiB, 1 MiB + 64 KiB) and in the last 4 KiB, holes elsewhere."""
    path = tmp_path / "sparse.bin"
    with open(path, "wb") as f:
        f.truncate(8 * MiB)
        f.seek(MiB)
        f.write(b"A" * 65536)
        f.seek(8 * MiB - 4096)
        f.write(b"Z" * 4096)
    return path


def test_file_source_reads_and_maps_holes(sparse_file):
    with FileSource(sparse_file) as src:
        assert src.size == 8 * MiB
        assert src.read(MiB - 2, 4) == b"\0\0AA"
        assert src.read(8 * MiB - 2, 100) == b"ZZ"  # short only at the end
        assert src.read(9 * MiB, 10) == b""
        runs = list(src.extents())
    data = [r for r in runs if r.kind is Alloc.DATA]
    # file systems allocate in blocks: the data runs must cover what we wrote and stay small
    assert any(r.offset <= MiB and r.end >= MiB + 65536 for r in data)
    assert any(r.end == 8 * MiB for r in data)
    assert sum(r.length for r in data) < 2 * MiB
    assert runs[0] == Run(0, runs[0].length, Alloc.HOLE) and runs[0].length >= MiB - 4096
    assert sum(r.length for r in runs) == 8 * MiB
    assert all(a.end == b.offset for a, b in zip(runs, runs[1:]))


def test_file_source_extents_of_a_window(sparse_file):
    with FileSource(sparse_file) as src:
        runs = list(src.extents(MiB + 4096, 8192))
    assert runs == [Run(MiB + 4096, 8192, Alloc.DATA)]


def test_file_source_is_read_only(sparse_file):
    before = os.stat(sparse_file)
    with FileSource(sparse_file) as src:
        with pytest.raises(OSError):
            os.write(src._fd, b"x")
    after = os.stat(sparse_file)
    assert (before.st_mtime_ns, before.st_size) == (after.st_mtime_ns, after.st_size)


def test_missing_file_is_a_source_error(tmp_path):
    with pytest.raises(SourceError) as e:
        FileSource(tmp_path / "nope")
    assert "nope" in str(e.value) and e.value.exit_code == 6


def test_read_exact_names_source_and_offset():
    src = BytesSource(b"abc", "x.bin")
    with pytest.raises(TruncatedError) as e:
        src.read_exact(2, 10, "header")
    assert str(e.value).startswith("x.bin @ 0x2: header needs 10 bytes")


def test_read_all_refuses_big_sources():
    with pytest.raises(LimitError):
        ZeroSource(10 * MiB).read_all(MiB, "config")


def test_slice_source(sparse_file):
    with FileSource(sparse_file) as f:
        s = SliceSource(f, MiB - 10, 20)
        assert s.read(0, 100) == b"\0" * 10 + b"A" * 10
        # MiB is block aligned, so the host file's hole ends exactly there
        assert list(s.extents()) == [Run(0, 10, Alloc.HOLE), Run(10, 10, Alloc.DATA)]
        tail = SliceSource(f, 8 * MiB - 10, 100)  # reaches past the end of its parent
        assert tail.read(0, 10) == b"Z" * 10
        with pytest.raises(TruncatedError) as e:
            tail.read(0, 100)
        assert f"@ {8 * MiB:#x}" in str(e.value)
        assert list(tail.extents())[-1] == Run(10, 90, Alloc.DATA)


def test_zero_source():
    z = ZeroSource(5000)
    assert z.read(4990, 100) == bytes(10)
    assert list(z.extents(100, 200)) == [Run(100, 200, Alloc.ZERO)]


def test_concat_source_reads_across_parts_and_merges_runs():
    parts = [BytesSource(b"a" * 10), ZeroSource(5), ZeroSource(5), BytesSource(b"b" * 10)]
    c = ConcatSource(parts)
    assert c.size == 30
    assert c.read(8, 14) == b"aa" + bytes(10) + b"bb"
    assert list(c.extents()) == [Run(0, 10, Alloc.DATA), Run(10, 10, Alloc.ZERO),
                                 Run(20, 10, Alloc.DATA)]
    assert list(c.extents(12, 10)) == [Run(12, 8, Alloc.ZERO), Run(20, 2, Alloc.DATA)]


def test_concat_of_real_files(sparse_file, tmp_path):
    other = tmp_path / "b.bin"
    other.write_bytes(b"B" * 4096)
    with FileSource(sparse_file) as a, FileSource(other) as b:
        c = ConcatSource([a, b])
        assert c.read(8 * MiB - 1, 2) == b"ZB"
        runs = list(c.extents(8 * MiB - 8192))
        assert runs[-1].end == 8 * MiB + 4096 and runs[-1].kind is Alloc.DATA


def test_merge_runs():
    runs = [Run(0, 1, Alloc.HOLE), Run(1, 2, Alloc.HOLE), Run(3, 0, Alloc.DATA),
            Run(3, 1, Alloc.DATA)]
    assert list(merge_runs(iter(runs))) == [Run(0, 3, Alloc.HOLE), Run(3, 1, Alloc.DATA)]
