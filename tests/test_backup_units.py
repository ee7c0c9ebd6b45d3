"""Units of the backup engine: the chunker's cell map, manifest leaves, sealing, packs."""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import random
import threading
import time

import pytest

from vmsift.backup.ahead import Ahead
from vmsift.backup.chunker import MapWindow, segments
from vmsift.backup.crypto import Keys, open_keys, seal_keys
from vmsift.backup.manifest import Leaf, LeafBuilder, decode_leaf
from vmsift.backup.pack import PackWriter, read_header
from vmsift.errors import IntegrityError
from vmsift.source import Alloc, ByteSource, BytesSource, Run, clip

RANK = {Alloc.HOLE: 0, Alloc.ZERO: 1, Alloc.DATA: 2}


class MapOnly(ByteSource):
    def __init__(self, runs):
        self.runs, self.size = runs, runs[-1].end

    def extents(self, offset=0, length=None):
        return iter(self.runs)


def expected_cells(runs, cell):
    size = runs[-1].end
    kinds = []
    for c in range(-(-size // cell)):
        lo, hi = c * cell, min(size, (c + 1) * cell)
        touching = [r.kind for r in runs if r.offset < hi and r.end > lo]
        kinds.append(max(touching, key=RANK.__getitem__))
    return kinds


def test_cells_take_the_strongest_kind_they_touch():
    rng = random.Random(7)
    for _ in range(3000):
        cell, pos, runs, last = rng.choice([1, 2, 4, 8]), 0, [], None
        for _ in range(rng.randint(1, 8)):
            kind = rng.choice([k for k in Alloc if k is not last])
            n = rng.randint(1, 20)
            runs.append(Run(pos, n, kind))
            pos, last = pos + n, kind
        got = [s.kind for s in segments(MapOnly(runs), cell) for _ in range(s.count)]
        assert got == expected_cells(runs, cell), (runs, cell)



class RunsSource(MapOnly):
    """A map of runs, asked for any range of it (as every source's `extents`)."""

    def extents(self, offset=0, length=None):
        self.asked += 1
        start, end = clip(self.size, offset, length)
        for r in self.runs:
            lo, hi = max(r.offset, start), min(r.end, end)
            if hi > lo:
                yield Run(lo, hi - lo, r.kind)

    asked = 0


def test_a_map_window_gives_each_span_the_cells_segments_gives():
    """Spans asked in order of a map window get the kinds `segments` gives those cells,
    whatever the spans' lengths and the window's size; the map is asked once a window."""
    rng = random.Random(11)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        for _ in range(400):
            cell, pos, runs, last = rng.choice([1, 2, 4]), 0, [], None
            for _ in range(rng.randint(1, 30)):
                kind = rng.choice([k for k in Alloc if k is not last])
                runs.append(Run(pos, rng.randint(1, 12), kind))
                pos, last = runs[-1].end, kind
            src, window = RunsSource(runs), rng.randint(1, 9)
            want = expected_cells(runs, cell)
            maps = MapWindow(src, cell, window, pool)
            first = 0
            while (first := first + rng.randint(0, 6)) < len(want):
                count = min(rng.randint(1, 2 * window), len(want) - first)
                got = [s.kind for s in maps.segments(first, count) for _ in range(s.count)]
                assert got == want[first:first + count], (runs, cell, window, first, count)
                first += count
            assert src.asked <= 2 * -(-len(want) // window)  # each window once; long spans


def test_ahead_makes_values_in_the_pool_up_to_its_limit():
    started, release = [], threading.Event()

    def make(key):
        started.append((key, threading.current_thread() is threading.main_thread()))
        if key == 3:
            raise IntegrityError("leaf 3 is damaged")
        release.wait(5)
        return key * 10

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        ahead = Ahead(pool, make, limit=2)
        for key in (1, 2, 3):  # the third is over the limit: not started
            ahead.want(key)
        release.set()
        assert ahead.get(1) == 10 and ahead.get(2) == 20
        with pytest.raises(IntegrityError, match="leaf 3"):
            ahead.get(3)  # made here, on the caller's thread: its error raised here
        assert (3, True) in started and (1, False) in started and (2, False) in started


def test_no_planner_job_reads_the_source_after_its_stream_is_stored(tmp_path, monkeypatch):
    """A hinted stream's map windows are asked on the planner thread, some ahead of need;
    when `store_stream` returns (the caller closes the source next), none is still asking."""
    from vmsift.backup.archiver import BlobWriter, store_stream
    from vmsift.backup.repository import Repository

    class SlowMap(BytesSource):
        active = planned = 0

        def extents(self, offset=0, length=None):
            if threading.current_thread() is not threading.main_thread():
                SlowMap.planned += 1
                SlowMap.active += 1
                time.sleep(0.05)
                SlowMap.active -= 1
            return super().extents(offset, length)

    monkeypatch.setenv("VMSIFT_CACHE_DIR", str(tmp_path / "cache"))
    cell, cells = 4096, 4 * 1024  # 4 windows of 1,024 cells
    repo = Repository.init(str(tmp_path / "repo"), encryption="none", cell_size=cell)
    data = random.Random(8).randbytes(cell * cells)
    writer = BlobWriter(repo)
    first, _ = store_stream(repo, writer, BytesSource(data))
    writer.finish()
    writer = BlobWriter(repo)
    with repo.open_stream(first, "first") as base:
        store_stream(repo, writer, SlowMap(data), base=base, changed=[(5 * cell, cell)])
    assert SlowMap.planned >= 1 and SlowMap.active == 0
    writer.finish()
    repo.close()


def test_ids_indexed_after_a_job_asked_the_index_are_known(tmp_path, monkeypatch):
    """A read job asks the index which of its cells the repository has; if an index object
    is written before the backup's thread takes its answer (and ids leave `pending`), the
    answer is stale and the index is asked again: a cell stored meanwhile is not new."""
    from vmsift.backup.archiver import BlobWriter
    from vmsift.backup.pack import BlobType
    from vmsift.backup.repository import Repository

    monkeypatch.setenv("VMSIFT_CACHE_DIR", str(tmp_path / "cache"))
    repo = Repository.init(str(tmp_path / "repo"), encryption="none")
    writer = BlobWriter(repo)
    blob = b"cell" * 100
    blob_id = repo.keys.blob_id(blob)
    asked = (writer.indexings, repo.index.known([blob_id]))  # the job's answer: not there
    writer.add(BlobType.DATA, blob_id, repo.keys.seal(blob, blob_id), len(blob))
    assert writer.known([blob_id], asked) == {blob_id}  # pending
    writer.flush_pack()
    writer.flush_index()
    assert not writer.pending and writer.indexings == 1
    assert writer.known([blob_id], asked) == {blob_id}  # asked again: indexed now
    writer.finish()
    repo.close()


def test_leaf_round_trip_and_damage():
    b = LeafBuilder()
    b.empty(Alloc.HOLE, 3)
    b.empty(Alloc.HOLE, 2)
    b.data(b"\1" * 32)
    b.empty(Alloc.ZERO, 1)
    raw = b.finish()
    assert decode_leaf(raw, 7, "leaf") == [(Alloc.HOLE, 5, None), (Alloc.DATA, 1, b"\1" * 32),
                                           (Alloc.ZERO, 1, None)]
    with pytest.raises(IntegrityError, match="covers 7 cells, not 8"):
        decode_leaf(raw, 8, "leaf")
    with pytest.raises(IntegrityError, match="bad record at byte 0"):
        decode_leaf(b"\x07" + raw[1:], 7, "leaf")
    with pytest.raises(IntegrityError, match="covers more than 7 cells"):
        decode_leaf(raw + b"\x07", 7, "leaf")

    with pytest.raises(IntegrityError, match="bad record at byte 0"):  # a run of no cells
        decode_leaf(b"\x01\0\0\0\0" + raw, 7, "leaf")
    with pytest.raises(IntegrityError, match="covers more than 7 cells"):
        decode_leaf(raw + b"\x00" * 33 * 100_000, 7, "leaf")
    with pytest.raises(IntegrityError, match="bad record at byte 38"):  # a cut DATA record
        decode_leaf(raw[:-5] + raw[5:20], 7, "leaf")


def _cells(rng, n, data_share):
    """``n`` cells as (kind, id): DATA with ids, ZERO and HOLE in runs."""
    out = []
    while len(out) < n:
        if rng.random() < data_share:
            out.append((Alloc.DATA, rng.randbytes(32)))
        else:
            out += [(rng.choice([Alloc.ZERO, Alloc.HOLE]), None)] * rng.randint(1, 9)
    return out[:n]


def _build(cells):
    b = LeafBuilder()
    for kind, chunk_id in cells:
        b.data(chunk_id) if kind is Alloc.DATA else b.empty(kind, 1)
    return b.finish()


def test_a_leaf_copied_in_pieces_is_the_leaf_built_cell_by_cell():
    """What a hinted backup does with a partly changed leaf: unchanged spans copied from
    the previous leaf, changed cells added one by one; the bytes must be those of adding
    every cell (runs joined across the pieces), and the DATA counts right."""
    rng = random.Random(11)
    for trial in range(1500):
        n = rng.randint(1, 60)
        old = _cells(rng, n, rng.choice([0.0, 0.3, 0.8, 1.0]))
        new = [c if rng.random() < 0.8 else _cells(rng, 1, 0.5)[0] for c in old]
        leaf = Leaf(_build(old), n, "leaf")
        assert leaf.records() == decode_leaf(_build(old), n, "leaf")
        assert [leaf.is_data(c) for c in range(n)] == [k is Alloc.DATA for k, _ in old]
        b, pos = LeafBuilder(), 0
        while pos < n:  # copy a span of old cells, then add changed ones
            hi = rng.randint(pos + 1, n)
            data = b.copy(leaf, pos, hi)
            assert data == sum(k is Alloc.DATA for k, _ in old[pos:hi])
            new[pos:hi] = old[pos:hi]
            pos = hi
            for _ in range(rng.randint(0, 3)):
                if pos < n:
                    kind, chunk_id = new[pos]
                    b.data(chunk_id) if kind is Alloc.DATA else b.empty(kind, 1)
                    pos += 1
        assert b.cells == n
        assert b.finish() == _build(new), trial


@pytest.mark.parametrize("encrypted", [False, True])
def test_seal_and_pack(encrypted):
    keys = Keys.generate(encrypted)
    text, noise = b"abc" * 10000, os.urandom(5000)
    for data in (text, noise):
        sealed = keys.seal(data, b"aad")
        assert keys.unseal(sealed, b"aad", "x") == data
    assert len(keys.seal(text, b"aad")) < 200            # compressed
    assert len(keys.seal(noise, b"aad")) <= 5000 + 1 + 28  # random data stored as is
    if encrypted:
        with pytest.raises(IntegrityError, match="fails authentication"):
            keys.unseal(keys.seal(text, b"aad"), b"other", "x")
        sealed = bytearray(keys.seal(text, b"aad"))
        sealed[20] ^= 1
        with pytest.raises(IntegrityError):
            keys.unseal(bytes(sealed), b"aad", "x")
    w = PackWriter(keys)
    for data in (text, noise):
        w.add(0, keys.blob_id(data), keys.seal(data, keys.blob_id(data)), len(data))
    name, raw, entries = w.finish()
    assert read_header(keys, raw, name) == entries
    with pytest.raises(IntegrityError):
        read_header(keys, raw[:-3], name)


def test_key_file_opens_only_with_its_password():
    keys = Keys.generate(True)
    sealed = seal_keys(keys, b"correct horse")
    assert open_keys(sealed, b"correct horse") == keys
    assert open_keys(sealed, b"wrong") is None


def test_scattered_cells_of_a_change_hint(tmp_path, monkeypatch):
    """A hint's scattered cells are read and hashed in batches: cells equal to each other,
    to cells stored before, or all zeros are each stored once or not at all, and the stream
    reads back as the new disk."""
    from vmsift.backup.archiver import BlobWriter, store_stream
    from vmsift.backup.repository import Repository
    from vmsift.source import BytesSource

    monkeypatch.setenv("VMSIFT_CACHE_DIR", str(tmp_path / "cache"))
    cell, cells = 65536, 1200  # 64 cells a batch: the 300 changed ones make five
    repo = Repository.init(str(tmp_path / "repo"), encryption="none", cell_size=cell)
    rng = random.Random(5)
    old = bytearray(rng.randbytes(cell * cells))
    writer = BlobWriter(repo)
    first, _ = store_stream(repo, writer, BytesSource(bytes(old)))
    writer.finish()
    new, changed = bytearray(old), []
    twin, fresh = rng.randbytes(cell), set()
    for c in sorted(rng.sample(range(cells), 300)):
        content = rng.choice([twin, bytes(cell), old[:cell], rng.randbytes(cell)])
        new[c * cell:(c + 1) * cell] = content
        changed.append((c * cell, cell))
        if content not in (bytes(cell), old[:cell]):
            fresh.add(content)
    writer = BlobWriter(repo)
    with repo.open_stream(first, "first") as base:
        second, stats = store_stream(repo, writer, BytesSource(bytes(new)), base=base,
                                     changed=changed)
    writer.finish()
    assert stats.read == 300 * cell
    assert stats.new == len(fresh) * cell  # twin stored once, old[:cell] reused
    assert stats.zero == sum(new[o:o + cell] == bytes(cell) for o, _ in changed) * cell
    with repo.open_stream(second, "second") as stored:
        assert stored.read(0, stored.size) == bytes(new)
    assert repo.index.count()[0] == cells + len(fresh) + 2 * 2  # chunks, and 2 leaves twice
    repo.close()


def test_a_failed_stream_leaves_only_what_it_stored(tmp_path, monkeypatch):
    """A disk whose read fails half-way is left out; a later disk of the same run with the
    same cells reuses only what the failed stream put into packs (a cell is pending once it
    is in one, never while only in hand), stores the rest itself, and reads back."""
    from vmsift.backup.archiver import BlobWriter, store_stream
    from vmsift.backup.repository import Repository
    from vmsift.errors import SourceError
    from vmsift.source import BytesSource

    class FailsAt4MiB(BytesSource):
        def read(self, offset, length):
            if offset + length > 4 << 20:
                raise SourceError("the disk ends here", source="a", offset=offset)
            return super().read(offset, length)

    monkeypatch.setenv("VMSIFT_CACHE_DIR", str(tmp_path / "cache"))
    repo = Repository.init(str(tmp_path / "repo"), encryption="none")
    data = random.Random(6).randbytes(8 << 20)
    writer = BlobWriter(repo)
    with pytest.raises(SourceError):
        store_stream(repo, writer, FailsAt4MiB(data))
    stream, stats = store_stream(repo, writer, BytesSource(data))
    writer.finish()
    assert stats.new + stats.reused == len(data)
    assert stats.new >= len(data) // 2  # at least the cells past the failure
    with repo.open_stream(stream, "b") as stored:
        assert stored.read(0, stored.size) == data
    repo.close()


def _index_objects(repo) -> list[dict]:
    from vmsift.backup import index as index_mod

    return [index_mod.decode(repo.keys, repo.backend.get("index", name), name)
            for name, _ in repo.backend.list("index")]


@pytest.fixture
def small_packs(tmp_path, monkeypatch):
    """A repository of 4 KiB cells whose packs are cut at 64 KiB and indexed every 3: a
    2 MiB stream makes dozens of packs and index objects."""
    from vmsift.backup import archiver
    from vmsift.backup import pack as pack_mod
    from vmsift.backup.repository import Repository

    monkeypatch.setenv("VMSIFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(pack_mod, "TARGET_SIZE", 64 << 10)
    monkeypatch.setattr(archiver, "INDEX_EVERY", 3)
    return Repository.init(str(tmp_path / "repo"), encryption="none", cell_size=4096)


def test_index_objects_written_beside_the_stream_name_every_pack_once(small_packs):
    from vmsift.backup.archiver import BlobWriter, store_stream
    from vmsift.backup.checker import check

    repo, data = small_packs, random.Random(5).randbytes(2 << 20)
    writer = BlobWriter(repo)
    stream, _ = store_stream(repo, writer, BytesSource(data))
    writer.finish()
    packs = {name for name, _ in repo.backend.list("data")}
    named = [name for doc in _index_objects(repo) for name in doc]
    assert len(packs) >= 30 and len(_index_objects(repo)) >= 10
    assert sorted(named) == sorted(packs)  # each pack in exactly one index object
    assert writer.packs_written == len(packs) and not writer.pending
    assert repo.open_stream(stream, "d").read(0, len(data)) == data
    assert not check(repo, read_data=True).problems


def test_a_pack_that_cannot_be_stored_stops_the_backup_and_no_index_names_it(small_packs,
                                                                             monkeypatch):
    from vmsift.backup.archiver import BlobWriter, store_stream
    from vmsift.errors import RepositoryError

    repo, data = small_packs, random.Random(6).randbytes(2 << 20)
    put, stored, attempts = repo.backend.put, [], itertools.count()

    def failing_put(kind, name, blob):  # two writer threads: the 13th attempt fails
        if kind == "data" and next(attempts) == 12:
            raise RepositoryError("the disk is full (injected)")
        put(kind, name, blob)
        stored.append(name) if kind == "data" else None

    monkeypatch.setattr(repo.backend, "put", failing_put)
    writer = BlobWriter(repo)
    with pytest.raises(RepositoryError, match="injected"):
        try:
            store_stream(repo, writer, BytesSource(data))
            writer.finish()
        except BaseException:
            writer.abort()
            raise
    named = {name for doc in _index_objects(repo) for name in doc}
    assert named and named <= set(stored) == {name for name, _ in repo.backend.list("data")}
