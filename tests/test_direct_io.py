"""Reads and writes past the page cache (vmsift.direct_io): the same bytes as buffered I/O
at any offset and length, and buffered I/O where O_DIRECT is refused."""

import errno
import os
import random

import pytest

from vmsift import direct_io
from vmsift.backup.backends.local import LocalBackend
from vmsift.datastore.export import export_pieces
from vmsift.source import FileSource

MiB = 1 << 20


@pytest.fixture
def data_file(tmp_path):
    """A file of random bytes whose size is not a multiple of the alignment."""
    data = random.Random(7).randbytes(5 * MiB + 1234)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    return path, data


def test_long_reads_go_direct_only_while_streaming(data_file):
    path, data = data_file
    with FileSource(path) as src:
        assert src.read(0, 2 * MiB) == data[:2 * MiB] and src._direct_fd is None
        with direct_io.streaming():
            assert src.read(0, 2 * MiB) == data[:2 * MiB] and src._direct_fd >= 0


@pytest.fixture
def streaming():
    with direct_io.streaming():
        yield


def test_long_reads_go_direct_and_match_at_unaligned_offsets(data_file, streaming):
    path, data = data_file
    with FileSource(path) as src:
        for offset, length in [(0, 2 * MiB), (1, MiB + 7), (4095, 3 * MiB), (MiB + 17, 4 * MiB),
                               (len(data) - MiB - 5, MiB + 100), (0, len(data) + 9)]:
            assert src.read(offset, length) == data[offset:offset + length], (offset, length)
        assert src._direct_fd >= 0 and not src._buffered_only  # the direct path was taken


def test_reads_longer_than_the_buffer_are_split(data_file, monkeypatch):
    path, data = data_file
    monkeypatch.setattr(direct_io, "BUFFER", 64 << 10)
    monkeypatch.setattr(direct_io, "_buffer", direct_io._Buffer())
    with FileSource(path) as src, direct_io.streaming():
        assert src.read(333, 3 * MiB) == data[333:333 + 3 * MiB] and src._direct_fd >= 0
        assert len(direct_io._buffer.buffer) == 64 << 10


def test_refused_direct_reads_stay_buffered(data_file, monkeypatch, streaming):
    path, data = data_file

    def refuse(*args):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "preadv", refuse)
    with FileSource(path) as src:
        assert src.read(5, 2 * MiB) == data[5:5 + 2 * MiB]
        assert src._buffered_only
    monkeypatch.setattr(direct_io, "reopen", lambda fd, flags: -1)
    with FileSource(path) as src:
        assert src.read(5, 2 * MiB) == data[5:5 + 2 * MiB] and src._direct_fd == -1


def test_write_new_writes_the_exact_bytes(tmp_path):
    data = random.Random(8).randbytes(3 * MiB + 999)
    path = tmp_path / "out.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
    try:
        assert direct_io.write_new(fd, data)
    finally:
        os.close(fd)
    assert path.read_bytes() == data


def test_write_new_says_when_refused_and_leaves_the_file_empty(tmp_path, monkeypatch):
    def refuse(*args):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "pwrite", refuse)
    fd = os.open(tmp_path / "out.bin", os.O_RDWR | os.O_CREAT | os.O_EXCL)
    try:
        assert not direct_io.write_new(fd, b"x" * (2 * MiB))
        assert os.fstat(fd).st_size == 0
    finally:
        os.close(fd)


@pytest.mark.parametrize("refused", [False, True])
def test_export_writes_aligned_pieces_direct_and_the_rest_buffered(tmp_path, monkeypatch, refused):
    rng = random.Random(9)
    pieces = [(0, rng.randbytes(MiB)), (3 * MiB + 512, rng.randbytes(70_000)),
              (8 * MiB, rng.randbytes(2 * MiB))]
    size = 11 * MiB - 3
    if refused:
        def refuse(*args):
            raise OSError(errno.EINVAL, "Invalid argument")
        monkeypatch.setattr(direct_io, "write_at", refuse)
    out = tmp_path / "disk.raw"
    export_pieces(pieces, size, out)
    want = bytearray(size)
    for pos, data in pieces:
        want[pos:pos + len(data)] = data
    assert out.read_bytes() == want


def test_local_backend_reads_long_spans_of_a_pack(tmp_path):
    backend = LocalBackend(str(tmp_path / "repo"))
    backend.create()
    data = random.Random(10).randbytes(4 * MiB + 77)
    name = "ab" + "0" * 62
    backend.put("data", name, data)
    backend.flush()
    assert backend.get("data", name) == data
    assert backend.get("data", name, 4097, 2 * MiB) == data[4097:4097 + 2 * MiB]
