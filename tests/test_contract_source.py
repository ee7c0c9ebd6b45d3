"""The `ByteSource` contract, one suite run on every kind of source (as restic's backend tests
run one suite on every backend).

`check_source` is the contract (test_contract_volume.py runs it on volume files too):

* ``read`` returns exactly what was asked, shorter only at the end; at or past the end it
  returns nothing; a negative offset or length is a `ValueError`.
* ``extents(offset, length)`` tiles the range clipped to ``[0, size)`` exactly: sorted, no
  gap, no overlap, adjacent runs of one kind merged; the runs of a sub-range are the whole
  map cut to it.
* the map agrees with the bytes: ZERO and HOLE runs read as zeros; with an oracle, every
  byte is the oracle's.
* ``read_many`` gives each range whole, in the order asked (ranges that meet end to end as
  well), the same bytes as ``read``; a range past the end is a `TruncatedError`.

Work is bounded: at most a few MiB are read per source, spread over its runs.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import subprocess

import pytest

from tests.fixtures import qemu_vmdk
from tests.fixtures.cowd_writer import write_cowd
from tests.fixtures.sesparse_writer import write_sesparse
from tests.helpers import require_tool
from vmsift.errors import ErrorKind, TruncatedError, UnsupportedError
from vmsift.formats.vmdk import cowd, sesparse, sparse
from vmsift.source import (
    Alloc,
    BytesSource,
    ConcatSource,
    FileSource,
    OverlaySource,
    Run,
    SliceSource,
    UnavailableSource,
    ZeroSource,
    clip,
)

MiB = 1 << 20
PROBE = 64 << 10      # bytes read at each end of a run
MAX_RUNS = 64         # runs whose bytes are read (spread over the map)


def check_map(runs: list[Run], start: int, end: int) -> None:
    """``runs`` tile [start, end) exactly, sorted and merged."""
    pos = start
    for i, run in enumerate(runs):
        assert isinstance(run.kind, Alloc) and run.length > 0, run
        assert run.offset == pos, f"gap or overlap at {pos:#x}: {run}"
        if i:
            assert runs[i - 1].kind is not run.kind, f"not merged: {runs[i - 1]} {run}"
        pos = run.end
    assert pos == end, f"map ends at {pos:#x}, not {end:#x}"


def cut(runs: list[Run], start: int, end: int) -> list[Run]:
    """The map ``runs`` restricted to [start, end)."""
    out = []
    for r in runs:
        lo, hi = max(r.offset, start), min(r.end, end)
        if lo < hi:
            out.append(Run(lo, hi - lo, r.kind))
    return out


def check_source(src, expected: bytes | None = None, *, seed: int = 0,
                 readable: bool = True) -> list[Run]:
    """Check ``src`` against the contract (``expected``: all its bytes, when known; not
    ``readable``: only the map and the end, as for a LUN that is not here). Returns the map."""
    size = src.size
    rng = random.Random(seed)
    assert src.read(size, 1) == b"" and src.read(size + 4096, 10) == b""
    assert src.read(0, 0) == b""
    for bad in ((-1, 1), (0, -1)):
        with pytest.raises(ValueError):
            src.read(*bad)
        with pytest.raises(ValueError):
            list(src.extents(*bad))
    runs = list(src.extents())
    check_map(runs, 0, size)
    assert list(src.extents(size, 10)) == [] and list(src.extents(0, 0)) == []
    # sub-ranges: across run boundaries, at random, and reaching past the end
    edges = sorted({r.offset for r in runs} | {size})
    ranges = [(max(e - 1000, 0), 2000) for e in edges[:20]]
    ranges += [(rng.randrange(size), rng.randrange(1, 3 * MiB)) for _ in range(20)] if size else []
    ranges.append((max(size - 100, 0), 10_000))
    for offset, length in ranges:
        sub = list(src.extents(offset, length))
        end = min(size, offset + length)
        check_map(sub, offset, end)
        assert sub == cut(runs, offset, end), (offset, length)
    assert src.stored_bytes() == sum(r.length for r in runs if r.kind is Alloc.DATA)
    for offset, length in ranges + [(size, 10), (0, 0), (0, size)]:
        assert src.prefetch(offset, length) is None  # a hint: returns nothing, changes no read
    if not readable:
        return runs
    # short reads only at the end
    for offset, length in ranges:
        data = src.read(offset, length)
        assert len(data) == min(length, size - offset), (offset, length)
        if expected is not None:
            assert data == expected[offset:offset + length], (offset, length)
    assert len(src.read(max(size - 1, 0), 10)) == min(size, 1)
    # several ranges at once: out of order, and end to end
    asked = [(o, min(n, size - o)) for o, n in ranges if o < size][::-1]
    asked += [(o, 100) for o in range(0, min(size, 1000) - 100, 100)] + [(0, 0)]
    got = src.read_many(asked)
    assert got == [src.read(o, n) for o, n in asked]
    if expected is not None:
        assert got == [expected[o:o + n] for o, n in asked]
    with pytest.raises(TruncatedError):
        src.read_many([(0, min(size, 1)), (max(size - 1, 0), 2)])
    # bytes agree with the map: both ends of runs spread over the whole map
    step = max(len(runs) // MAX_RUNS, 1)
    for run in runs[::step]:
        for offset in sorted({run.offset, max(run.end - PROBE, run.offset)}):
            n = min(PROBE, run.end - offset)
            data = src.read(offset, n)
            assert len(data) == n
            if run.kind is not Alloc.DATA:
                assert data == bytes(n), f"{run.kind.value} run {run} reads non-zero"
            if expected is not None:
                assert data == expected[offset:offset + n], run
    if expected is not None and size <= 64 * MiB:
        whole = b"".join(src.read(o, 4 * MiB) for o in range(0, size, 4 * MiB))
        assert hashlib.sha256(whole).digest() == hashlib.sha256(expected).digest()
    return runs


# --- the sources ----------------------------------------------------------------------------

PATTERN = bytes(range(256)) * 16  # 4 KiB


@pytest.fixture(scope="module")
def host_file(tmp_path_factory):
    """A sparse host file: 1 MiB data, 3 MiB hole, 4 KiB data, 1 MiB hole at the end."""
    path = tmp_path_factory.mktemp("src") / "sparse.bin"
    with open(path, "wb") as f:
        f.write(PATTERN * 256)
        f.seek(4 * MiB)
        f.write(PATTERN)
        f.truncate(5 * MiB + 4096)
    return path


@pytest.fixture(scope="module")
def qemu_disks(cache_dir):
    """qemu-made VMDKs with data (monolithicSparse and streamOptimized from the same raw),
    and the raw bytes they hold."""
    for tool in ("qemu-img", "qemu-io"):
        require_tool(tool)
    made = qemu_vmdk.build_set(cache_dir / "qemu-vmdk")
    raw = made["converted-stream"].parent / "data.raw"
    mono = raw.with_name("converted-sparse.vmdk")
    if not mono.exists():
        subprocess.run(["qemu-img", "convert", "-O", "vmdk", str(raw), str(mono)], check=True)
    return {"stream": made["converted-stream"], "sparse": mono, "raw": raw.read_bytes(),
            "chain": made["chain-2"]}


def _delta(tmp_path, writer, name, writes, capacity, opener):
    path = tmp_path / name
    writer(path, capacity, writes)
    expected = bytearray(capacity * 512)
    for offset, data in writes:
        expected[offset:offset + len(data)] = data
    return opener(FileSource(path)), bytes(expected)


WRITES = [(0, b"\x41" * 1024), (3 * MiB + 512, b"\x42" * 512), (7 * MiB, PATTERN)]


def _sources(name, host_file, qemu_disks, tmp_path):
    """(source, expected bytes or None, readable) for each kind."""
    raw = host_file.read_bytes()
    if name == "bytes":
        return BytesSource(raw[:10_000]), raw[:10_000], True
    if name == "empty":
        return BytesSource(b""), b"", True
    if name == "file":
        return FileSource(host_file), raw, True
    if name == "slice":
        return SliceSource(FileSource(host_file), 4096 + 7, 4 * MiB), raw[4103:4103 + 4 * MiB], True
    if name == "zero":
        return ZeroSource(3 * MiB + 5), bytes(3 * MiB + 5), True
    if name == "concat":
        parts = [BytesSource(b"abc"), ZeroSource(MiB), SliceSource(FileSource(host_file), 0, 2 * MiB),
                 ZeroSource(0), BytesSource(b"xyz")]
        return ConcatSource(parts), b"abc" + bytes(MiB) + raw[:2 * MiB] + b"xyz", True
    if name == "overlay":
        top = SliceSource(FileSource(host_file), 0, len(raw))  # holes fall through
        parent = BytesSource(b"\x77" * (2 * MiB))
        expected = raw[:MiB] + b"\x77" * MiB + raw[2 * MiB:]
        return OverlaySource(top, parent), expected, True
    if name == "unavailable":
        return UnavailableSource(MiB, "lun", "the LUN is not here"), None, False
    if name == "sparse":
        src = sparse.SparseExtent(FileSource(qemu_disks["sparse"]))
        return src, qemu_disks["raw"], True
    if name == "stream":
        src = sparse.SparseExtent(FileSource(qemu_disks["stream"]))
        return src, qemu_disks["raw"], True
    if name == "repository":  # the sparse disk backed up, with a cut last cell
        from vmsift.backup.archiver import BlobWriter, store_stream
        from vmsift.backup.repository import Repository

        repo = Repository.init(str(tmp_path / "repo"), encryption="none", cell_size=4096)
        disk = ConcatSource([sparse.SparseExtent(FileSource(qemu_disks["sparse"])),
                             BytesSource(b"tail")])
        writer = BlobWriter(repo)
        stream, _ = store_stream(repo, writer, disk)
        writer.finish()
        assert len(stream.leaves) > 2  # several leaves, the last one short
        return repo.open_stream(stream, "disk"), qemu_disks["raw"] + b"tail", True
    if name == "cowd":
        src, expected = _delta(tmp_path, write_cowd, "c-delta.vmdk", WRITES, 16384,
                               cowd.CowdExtent)
        return src, expected, True
    if name == "sesparse":
        src, expected = _delta(tmp_path, write_sesparse, "s-sesparse.vmdk", WRITES, 16384,
                               sesparse.SeSparseExtent)
        return src, expected, True
    raise AssertionError(name)


KINDS = ["bytes", "empty", "file", "slice", "zero", "concat", "overlay", "unavailable",
         "sparse", "stream", "cowd", "sesparse", "repository"]


@pytest.mark.parametrize("name", KINDS)
def test_source_contract(name, host_file, qemu_disks, tmp_path, monkeypatch):
    monkeypatch.setenv("VMSIFT_CACHE_DIR", str(tmp_path / "cache"))
    src, expected, readable = _sources(name, host_file, qemu_disks, tmp_path)
    with src:
        runs = check_source(src, expected, readable=readable)
    if name in ("file", "sparse", "cowd", "sesparse", "repository"):  # maps with holes
        assert {r.kind for r in runs} >= {Alloc.DATA, Alloc.HOLE}, runs


def test_virtual_disk_contract(qemu_disks):
    """A whole qemu chain (base <- child1 <- child2, all empty) opened as one disk."""
    from vmsift.datastore.disk import open_disk
    from vmsift.datastore.folder import FolderVolume

    chain = qemu_disks["chain"]
    with open_disk(FolderVolume(chain.parent), chain.name) as disk:
        assert check_source(disk) == [Run(0, 64 * MiB, Alloc.HOLE)]


def test_prefetch_reaches_the_file_that_holds_the_bytes(tmp_path, monkeypatch):
    """A hint for a range of a delta disk over a flat base goes to the file the bytes live
    in, at their place there: the delta's grain where the delta has it, the base's extent
    where it falls through (what a hinted backup asks before reading its scattered cells)."""
    from vmsift.datastore.disk import open_disk
    from vmsift.datastore.folder import FolderVolume

    for tool in ("qemu-img", "qemu-io"):
        require_tool(tool)
    run = functools.partial(subprocess.run, check=True, capture_output=True)
    run(["qemu-img", "create", "-f", "vmdk", "-o", "subformat=monolithicFlat",
         str(tmp_path / "base.vmdk"), "16M"])
    run(["qemu-img", "create", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk",
         str(tmp_path / "delta.vmdk")])
    run(["qemu-io", "-c", "write -P 0x5a 1M 64k", str(tmp_path / "delta.vmdk")])
    calls = []

    def advise(fd, offset, length, advice):
        calls.append((os.path.basename(os.readlink(f"/proc/self/fd/{fd}")), offset, length,
                      advice))

    with open_disk(FolderVolume(tmp_path), "delta.vmdk") as disk:
        monkeypatch.setattr(os, "posix_fadvise", advise)
        disk.prefetch(MiB, 64 * 1024)
        disk.prefetch(3 * MiB + 512, 4096)
        monkeypatch.undo()
        (name, offset, length, advice), flat = calls
        assert (name, length, advice) == ("delta.vmdk", 64 * 1024, os.POSIX_FADV_WILLNEED)
        with open(tmp_path / "delta.vmdk", "rb") as f:  # the grain's place in the delta file
            f.seek(offset)
            assert f.read(64 * 1024) == b"\x5a" * 64 * 1024 == disk.read(MiB, 64 * 1024)
        assert flat == ("base-flat.vmdk", 3 * MiB + 512, 4096, os.POSIX_FADV_WILLNEED)


def test_read_many_reads_what_lies_together_at_once(tmp_path, monkeypatch):
    """Cells scattered over a delta disk whose grains were written one after another lie
    side by side in the delta file: `read_many` reads them there in one read, and the cell
    that falls through to the flat base in one read of the base."""
    from vmsift.datastore.disk import open_disk
    from vmsift.datastore.folder import FolderVolume

    for tool in ("qemu-img", "qemu-io"):
        require_tool(tool)
    run = functools.partial(subprocess.run, check=True, capture_output=True)
    run(["qemu-img", "create", "-f", "vmdk", "-o", "subformat=monolithicFlat",
         str(tmp_path / "base.vmdk"), "16M"])
    run(["qemu-io", "-c", "write -P 0x11 9M 64k", str(tmp_path / "base.vmdk")])
    run(["qemu-img", "create", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk",
         str(tmp_path / "delta.vmdk")])
    cells = [(MiB * m, 64 * 1024) for m in (5, 1, 7, 3)]  # the delta's grains, in order
    for i, (offset, n) in enumerate(sorted(cells)):
        run(["qemu-io", "-c", f"write -P {0x21 + i} {offset} {n}", str(tmp_path / "delta.vmdk")])
    asked = cells + [(9 * MiB, 64 * 1024)]
    reads = []
    real = FileSource.read

    def counted(self, offset, length):
        reads.append((os.path.basename(self.name), length))
        return real(self, offset, length)

    with open_disk(FolderVolume(tmp_path), "delta.vmdk") as disk:
        one_by_one = [disk.read(o, n) for o, n in asked]
        assert [d[:1] for d in one_by_one] == [b"\x23", b"\x21", b"\x24", b"\x22", b"\x11"]
        monkeypatch.setattr(FileSource, "read", counted)
        assert disk.read_many(asked) == one_by_one
    assert sorted(reads) == [("base-flat.vmdk", 64 * 1024), ("delta.vmdk", 256 * 1024)]


def test_errors_of_sources(host_file):
    """Data that is missing is an error, never a short read or zeros: a slice past its
    parent's end is a `TruncatedError`; an unavailable LUN is an `UnsupportedError`."""
    size = host_file.stat().st_size
    past = SliceSource(FileSource(host_file), size - 10, 100)
    assert list(past.extents())[-1] == Run(10, 90, Alloc.DATA)  # missing data is not a hole
    assert past.read(0, 10) == host_file.read_bytes()[-10:]
    with pytest.raises(TruncatedError) as e:
        past.read(0, 11)
    assert e.value.kind is ErrorKind.DAMAGED
    with pytest.raises(TruncatedError):
        ConcatSource([past]).read(0, 100)
    lun = UnavailableSource(MiB, "lun", "not here")
    assert lun.read(MiB, 1) == b""
    with pytest.raises(UnsupportedError) as e:
        lun.read(0, 1)
    assert e.value.kind is ErrorKind.UNSUPPORTED


class _Broken(BytesSource):
    """A source that breaks the contract one way (to show the checks can fail)."""

    def __init__(self, how: str):
        super().__init__(b"\1" * 8192, f"broken-{how}")
        self.how = how

    def read(self, offset, length):
        data = super().read(offset, length)
        return data[:-1] if self.how == "short" and length > 1 and data else data

    def read_many(self, ranges, what="data"):
        out = super().read_many(ranges, what)
        return sorted(out, key=len) if self.how == "many" else out

    def extents(self, offset=0, length=None):
        start, end = clip(self.size, offset, length)
        if self.how == "gap":
            yield Run(start, max(end - start - 1, 0), Alloc.DATA)
        elif self.how == "unmerged" and end - start > 2:
            yield Run(start, 1, Alloc.DATA)
            yield Run(start + 1, end - start - 1, Alloc.DATA)
        elif self.how == "hole":
            yield Run(start, end - start, Alloc.HOLE)
        elif end > start:
            yield Run(start, end - start, Alloc.DATA)


@pytest.mark.parametrize("how", ["short", "gap", "unmerged", "hole", "many"])
def test_contract_catches_broken_sources(how):
    with pytest.raises(AssertionError):
        check_source(_Broken(how))
