"""Back up sources into a repository: each VM (or bare disk) becomes one snapshot.

A SOURCE is a datastore image (VMFS, OCFS2; bare, partitioned or spanned), a datastore or VM
folder, or one disk (a VMDK of any kind, or a raw image). Per VM: its small files, and each
disk flattened at its current state, as streams (`chunker` cells, `manifest` leaves).

The pipeline per stream: the map says which cells are DATA; those are read in blocks of
`BLOCK` bytes, hashed (keyed blake3) and checked for zeros by jobs of the worker pool, up to
`AHEAD` jobs at once (scattered reads of a change hint overlap), and taken back in stream
order; a job reads one block, or a batch of smaller ones up to `BLOCK` in all (a change
hint's scattered cells: a hand-off and an index query per cell would cost more than the
cell's reading), which it reads at once (`ByteSource.read_many`: cells that lie side by
side on the disk in one read, the others all in the disk's queue together) and then asks
the index about; the cells that neither the repository nor this backup has yet it also
seals (zstd, AES-GCM). Taken back, new cells are appended to packs, which are stored by
writer threads. The thread that drives all this makes few system calls of its own (see
`ahead`): a change hint's map and the previous backup's leaves (in batches) are made ahead
on a planner thread; the chain hint's cells need no map. An index object is stored after
every `repository.INDEX_EVERY` packs and at the end, and only then the snapshot: a killed
backup leaves packs no snapshot names, which `check` reports as unused and nothing else.
"""

from __future__ import annotations

import collections
import concurrent.futures
import datetime as dt
import fnmatch
import functools
import os
import posixpath
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from .. import direct_io
from ..datastore.disk import open_disk
from ..datastore.vm import VmDisk, read_disk
from ..datastore.volume import Volume
from ..errors import VmsiftError
from ..source import Alloc, ByteSource
from .ahead import Ahead
from .chunker import MapWindow, Segment, cell_count
from .manifest import LEAF_CELLS, Leaf, LeafBuilder, leaf_cells
from .pack import MAX_BLOBS, BlobType, PackEntry, PackWriter
from .repository import INDEX_EVERY, Repository
from .snapshot import DiskEntry, FileEntry, LinkEntry, Snapshot, Stream
from .diff import changed_ranges
from .hints import Hint, choose
from .sources import TreeFile, disk_tree, identity_now, open_source

BLOCK = 4 << 20          # bytes read from a source at a time (whole cells)
AHEAD = 8                # jobs reading at once: up to 2 * AHEAD * BLOCK bytes (read, sealed)
COPIES_AHEAD = 4096      # runs of unread cells queued behind them
PUTTERS = 2             # packs stored at once (a local disk gains queue depth; S3 more)
PUTS_AHEAD = 4          # packs (16 MiB each) waiting to be stored
MAP_WINDOW = 1024       # cells of the map asked for at once for a change hint's spans

Progress = Callable[[int], None]


@dataclass
class StreamStats:
    """What storing one stream took; bytes unless named otherwise."""

    size: int = 0
    read: int = 0          # read from the source
    skipped: int = 0       # ZERO / HOLE in the map: never read
    zero: int = 0          # read, and all zeros
    reused: int = 0        # chunks the repository already had
    kept: int = 0          # whole manifest leaves of the previous backup, taken over unread
    new: int = 0           # chunks stored now (plaintext)
    stored: int = 0        # what they took after compression and sealing
    seconds: float = 0.0

    def add(self, other: StreamStats) -> None:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v
                for k, v in self.__dict__.items()}


class BlobWriter:
    """Puts sealed blobs into packs, stores full packs on a writer thread and writes an index
    object every `INDEX_EVERY` packs. ``has`` answers for the repository and for what this
    writer holds but has not indexed yet."""

    def __init__(self, repo: Repository):
        self.repo = repo
        self.pack = PackWriter(repo.keys)
        self.unindexed: dict[str, list[PackEntry]] = {}
        self.pending: set[bytes] = set()
        self._puts: collections.deque[concurrent.futures.Future] = collections.deque()
        self.packs_written = 0
        self.indexings = 0  # index objects written: ids leave `pending` when one is
        self._uploader = concurrent.futures.ThreadPoolExecutor(PUTTERS, "vmsift-put")

    def has(self, blob_id: bytes) -> bool:
        return blob_id in self.pending or self.repo.index.lookup(blob_id) is not None

    def known(self, ids: list[bytes], indexed: tuple[int, set[bytes]] | None = None
              ) -> set[bytes]:
        """Which of ``ids`` the repository has or this writer holds. ``indexed``: what the
        index said of them (`indexings` when it was asked, the ids it has), asked by a pool
        job; asked again here if an index object was written since."""
        if indexed is None or indexed[0] != self.indexings:
            indexed = (self.indexings, self.repo.index.known(ids))
        return {i for i in ids if i in self.pending} | indexed[1]

    def add(self, type_: int, blob_id: bytes, sealed: bytes, raw_length: int) -> None:
        self.pending.add(blob_id)
        self.pack.add(type_, blob_id, sealed, raw_length)
        if self.pack.full or len(self.pack.entries) >= MAX_BLOBS:
            self.flush_pack()

    def _store(self, pack: PackWriter) -> tuple[str, list[PackEntry]]:
        name, data, entries = pack.finish()  # joining and naming 16 MiB: off the main thread
        self.repo.backend.put("data", name, data)
        return name, entries

    def flush_pack(self) -> None:
        if not self.pack.entries:
            return
        self._puts.append(self._uploader.submit(self._store, self.pack))
        self.pack = PackWriter(self.repo.keys)
        while len(self._puts) > PUTS_AHEAD:  # packs in memory waiting to be stored
            self._take_put()
        if len(self.unindexed) + len(self._puts) >= INDEX_EVERY:
            self.flush_index()

    def _take_put(self) -> None:
        name, entries = self._puts.popleft().result()
        self.unindexed[name] = entries
        self.packs_written += 1

    def flush_index(self) -> None:
        while self._puts:  # the packs first: an index never names a pack not yet stored
            self._take_put()
        if self.unindexed:
            self.repo.write_index(self.unindexed)
            for entries in self.unindexed.values():  # now the index cache answers for them
                self.pending.difference_update(e.id for e in entries)
            self.unindexed = {}
            self.indexings += 1

    def finish(self) -> None:
        self.flush_pack()
        self.flush_index()
        self._uploader.shutdown()

    def abort(self) -> None:
        for f in self._puts:
            f.cancel()
        self._uploader.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Batch:
    """Blocks of a stream read and hashed by one pool job: a change hint's scattered cells
    would otherwise cost a hand-off to the pool, and an index query, each."""

    blocks: list[tuple[int, int]] = field(default_factory=list)  # (offset, length)
    size: int = 0
    job: concurrent.futures.Future | None = None
    known: set[bytes] | None = None  # ids the repository has, or this backup stored


def _read_and_hash(writer: BlobWriter, src: ByteSource, blocks: list[tuple[int, int]],
                   cell: int) -> tuple[list[tuple[bytes, list[bytes | None]]],
                                       tuple[int, set[bytes]], dict[bytes, bytes]]:
    """Each block of ``src`` and the id of each of its cells, what the index says of those
    ids (see `BlobWriter.known`), and the sealed cells that neither the index nor the
    writer (`BlobWriter.pending`) had: a cell another job stores meanwhile is sealed in
    vain, never stored twice (the driving thread decides). A pool job: several reads are in
    flight at once, so scattered reads overlap each other and the hashing; the blocks are
    read together (`ByteSource.read_many`: what lies side by side on the disk is read at
    once, the rest is in the disk's queue at once); long reads go past the page cache; the
    index query and the sealing are off the thread that drives the backup."""
    with direct_io.streaming():
        datas = src.read_many(blocks, "disk data")
    out = [(data, _hash_block(writer.repo, data, cell)) for data in datas]
    asked = writer.indexings  # before the query: an index written after it is noticed
    known = writer.repo.index.known([i for _, ids in out for i in ids if i is not None])
    keys, pending, sealed = writer.repo.keys, writer.pending, {}
    for data, ids in out:
        view = memoryview(data)
        for c, chunk_id in enumerate(ids):
            if chunk_id is not None and not (chunk_id in known or chunk_id in pending
                                             or chunk_id in sealed):
                sealed[chunk_id] = keys.seal(view[c * cell:(c + 1) * cell], chunk_id)
    return out, (asked, known), sealed


@functools.lru_cache(maxsize=4)
def _zeros(n: int) -> bytes:
    return bytes(n)


def _hash_block(repo: Repository, data: bytes, cell: int) -> list[bytes | None]:
    """The id of each cell of ``data``, None for an all-zero cell."""
    view = memoryview(data)
    zero = _zeros(cell)  # made once per size: a change hint's blocks are often one cell
    out: list[bytes | None] = []
    for pos in range(0, len(data), cell):
        piece = view[pos:pos + cell]
        # startswith at an offset is a memcmp, without copying the cell out
        out.append(None if data.startswith(zero[:len(piece)], pos) else repo.keys.blob_id(piece))
    return out


class StreamWriter:
    """Stores one stream: cells in order in, manifest leaves out."""

    def __init__(self, repo: Repository, writer: BlobWriter, size: int):
        self.repo, self.writer = repo, writer
        self.size = size
        self.cells = cell_count(size, repo.cell_size)
        self.leaves: list[str] = []
        self.leaf = LeafBuilder()
        self.stats = StreamStats(size=size)

    def _room(self) -> int:
        return leaf_cells(len(self.leaves), self.cells) - self.leaf.cells

    def _close_leaf_if_full(self) -> None:
        if self._room() == 0:
            raw = self.leaf.finish()
            leaf_id = self.repo.keys.blob_id(raw)
            if not self.writer.has(leaf_id):
                self.writer.add(BlobType.TREE, leaf_id, self.repo.keys.seal(raw, leaf_id),
                                len(raw))
            self.leaves.append(leaf_id.hex())
            self.leaf = LeafBuilder()

    def empty(self, kind: Alloc, count: int) -> None:
        while count:
            n = min(count, self._room())
            self.leaf.empty(kind, n)
            count -= n
            self._close_leaf_if_full()

    def data(self, chunk_id: bytes) -> None:
        self.leaf.data(chunk_id)
        self._close_leaf_if_full()

    def copy(self, leaf: Leaf, lo: int, hi: int) -> int:
        """Cells ``[lo, hi)`` of the next leaf as ``leaf`` (the same leaf of another stream
        of the same size and cell size) has them; returns how many are DATA."""
        assert self.leaf.cells == lo and hi <= lo + self._room()
        data = self.leaf.copy(leaf, lo, hi)
        self._close_leaf_if_full()
        return data

    def keep_leaf(self, index: int, leaf: str) -> None:
        """Leaf ``index`` (the next one) as another stream of the same size and cell size
        has it, whole: its TREE blob is in the repository already."""
        assert self.leaf.cells == 0 and len(self.leaves) == index
        self.leaves.append(leaf)

    def store(self, chunk_id: bytes, sealed: bytes, length: int) -> None:
        """A new cell of ``length`` bytes, sealed: into a pack."""
        self.writer.add(BlobType.DATA, chunk_id, sealed, length)
        self.stats.stored += len(sealed)

    def finish(self) -> Stream:
        if self.cells == 0:
            return Stream(self.size, self.repo.cell_size, [])
        assert self.leaf.cells == 0 and len(self.leaves) == -(-self.cells // LEAF_CELLS)
        return Stream(self.size, self.repo.cell_size, self.leaves)


def cell_plan(changed: list[tuple[int, int]] | None, cell: int, cells: int
              ) -> list[tuple[int, int, bool]]:
    """(first cell, count, read?) covering every cell: the cells that ``changed`` byte
    ranges touch are read, the others taken from the previous backup (``changed`` None:
    read them all)."""
    if changed is None:
        return [(0, cells, True)] if cells else []
    spans: list[list[int]] = []
    for offset, length in sorted(changed):
        if length <= 0:
            continue
        lo, hi = offset // cell, min(cells, -(-(offset + length) // cell))
        if spans and lo <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], hi)
        elif lo < hi:
            spans.append([lo, hi])
    plan, pos = [], 0
    for lo, hi in spans:
        if lo > pos:
            plan.append((pos, lo - pos, False))
        plan.append((lo, hi - lo, True))
        pos = hi
    if pos < cells:
        plan.append((pos, cells - pos, False))
    return plan


def _leaf_pieces(first: int, count: int, cells: int, base_cells: int
                 ) -> Iterator[tuple[int, int, int, bool]]:
    """Cells ``[first, first + count)`` of a stream of ``cells`` cut at its leaves: (leaf,
    first, stop, whole?). A whole leaf (of a base of as many cells) is taken over by id,
    without loading it (an unchanged 2 TiB disk has 32,768 leaves of up to 33 KiB); the
    others are built from the records of the base's leaf."""
    end = first + count
    while first < end:
        leaf = first // LEAF_CELLS
        leaf_end = min((leaf + 1) * LEAF_CELLS, cells)
        stop = min(end, leaf_end)
        yield leaf, first, stop, (first == leaf * LEAF_CELLS and stop == leaf_end and
                                  base_cells == cells)
        first = stop


class _LeafLoader:
    """The base's leaves that a stream builds from (``wanted``, in stream order), loaded
    `StreamSource.LEAVES_AT_ONCE` at a time: the first batch at once, before the stream's
    reads fill the pool, each next one on ``planner`` while the stream uses the one before.
    A leaf loaded by itself costs an index query, a read and a wait for the interpreter
    lock after each: the stream waited for them."""

    def __init__(self, planner: concurrent.futures.Executor, base, wanted: Iterable[int]):
        self.base, self.wanted = base, list(dict.fromkeys(wanted))  # each leaf once
        self.per = base.LEAVES_AT_ONCE
        self.batch_of = {leaf: i // self.per for i, leaf in enumerate(self.wanted)}
        self._batches = Ahead(planner, self._load, 2)
        if self.wanted:
            self._batches.get(0)

    def _load(self, k: int) -> dict[int, Leaf]:
        return self.base.indexed_leaves(self.wanted[k * self.per:(k + 1) * self.per])

    def want(self, leaf: int) -> None:
        k = self.batch_of[leaf]
        self._batches.want(k)
        if (k + 1) * self.per < len(self.wanted):
            self._batches.want(k + 1)

    def get(self, leaf: int) -> Leaf:
        return self._batches.get(self.batch_of[leaf])[leaf]


def store_stream(repo: Repository, writer: BlobWriter, src: ByteSource,
                 progress: Progress | None = None, base=None,
                 changed: list[tuple[int, int]] | None = None, allocated: bool = False
                 ) -> tuple[Stream, StreamStats]:
    """Store ``src`` as a stream; return it and what it took. With ``base`` (the previous
    backup of the same disk, a `StreamSource`) and ``changed`` (byte ranges a change hint
    says may differ from it), only the cells those ranges touch are read; the others are
    the previous backup's. ``allocated``: no byte of ``changed`` is a HOLE in ``src``, so
    the cells it touches are read without asking the map (one read as zeros is recorded as
    ZERO, as the map would have it)."""
    started = time.monotonic()
    cell = repo.cell_size
    out = StreamWriter(repo, writer, src.size)
    stats = out.stats
    per_block = max(BLOCK // cell, 1)
    # in stream order: blocks being read and hashed, and the runs of cells that need no
    # reading (zeros, holes, cells of the previous backup), which wait for none of them
    pending: collections.deque = collections.deque()
    hashed_ahead = 0  # batches submitted and not yet taken whole
    batch = _Batch()  # the one still gathering blocks
    # a change hint's map windows, and the previous backup's leaves that its runs of unread
    # cells need, are made ahead on a thread of their own (not queued behind the pool's reads)
    planner = concurrent.futures.ThreadPoolExecutor(1, "vmsift-plan")
    window = MapWindow(src, cell, MAP_WINDOW, planner)
    plan = cell_plan(changed if base is not None else None, cell, out.cells)
    leaves: _LeafLoader | None = None

    def submit(b: _Batch) -> None:
        nonlocal hashed_ahead, batch
        b.job = repo.pool.submit(_read_and_hash, writer, src, b.blocks, cell)
        hashed_ahead += 1
        if b is batch:
            batch = _Batch()

    def take() -> None:
        nonlocal hashed_ahead
        entry = pending.popleft()
        if not isinstance(entry, tuple):
            entry()
            return
        b, k = entry
        if b.job is None:  # the queue drained to the gathering batch
            submit(b)
        results, indexed, sealed = b.job.result()
        data, ids = results[k]
        if k == len(b.blocks) - 1:
            hashed_ahead -= 1
        if b.known is None:  # one answer for the batch's cells
            every = [i for _, block_ids in results for i in block_ids if i is not None]
            b.known = writer.known(every, indexed)
        known = b.known
        view = memoryview(data)
        for c, chunk_id in enumerate(ids):
            piece = view[c * cell:(c + 1) * cell]
            if chunk_id is None:
                out.empty(Alloc.ZERO, 1)
                stats.zero += len(piece)
                continue
            if chunk_id in known:
                stats.reused += len(piece)
            else:
                known.add(chunk_id)
                stats.new += len(piece)
                # its job sealed it unless it was pending then, and so known here by now:
                # sealed here only should that ever not hold
                out.store(chunk_id, sealed.get(chunk_id) or repo.keys.seal(piece, chunk_id),
                          len(piece))
            out.data(chunk_id)
        if progress:
            progress(len(data))

    def empty(kind: Alloc, count: int, n: int) -> None:
        out.empty(kind, count)
        stats.skipped += n
        if progress:
            progress(n)

    def read_cells(first: int, count: int) -> None:
        nonlocal hashed_ahead
        segs = ([Segment(first, count, Alloc.DATA)] if allocated
                else window.segments(first, count))
        for seg in segs:
            if seg.kind is not Alloc.DATA:
                n = min(seg.count * cell, src.size - seg.first * cell)
                pending.append(functools.partial(empty, seg.kind, seg.count, n))
                continue
            for block in range(seg.first, seg.first + seg.count, per_block):
                n_cells = min(per_block, seg.first + seg.count - block)
                pos = block * cell
                n = min(n_cells * cell, src.size - pos)
                stats.read += n
                if batch.blocks and batch.size + n > BLOCK:  # a batch holds BLOCK at most
                    submit(batch)
                batch.blocks.append((pos, n))
                batch.size += n
                pending.append((batch, len(batch.blocks) - 1))
                if batch.size == BLOCK:
                    submit(batch)
                while hashed_ahead > AHEAD:
                    take()

    def keep_leaf(leaf: int, first: int, stop: int) -> None:
        out.keep_leaf(leaf, base.stream.leaves[leaf])
        nbytes = min(stop * cell, src.size) - first * cell
        stats.kept += nbytes
        if progress:
            progress(nbytes)

    def copy_records(first: int, end: int) -> None:
        """Cells [first, end) of one leaf, as the previous backup has them."""
        leaf_start = first // LEAF_CELLS * LEAF_CELLS
        leaf = leaves.get(first // LEAF_CELLS)
        data = out.copy(leaf, first - leaf_start, end - leaf_start)
        nbytes = min(end * cell, src.size) - first * cell
        reused = data * cell
        if end * cell > src.size and leaf.is_data(end - 1 - leaf_start):
            reused -= end * cell - src.size  # the stream's last cell is cut
        stats.reused += reused
        stats.skipped += nbytes - reused
        if progress:
            progress(nbytes)

    def copy_cells(first: int, count: int) -> None:
        for leaf, lo, hi, whole in _leaf_pieces(first, count, out.cells, base.cells):
            if whole:
                pending.append(functools.partial(keep_leaf, leaf, lo, hi))
            else:
                leaves.want(leaf)
                pending.append(functools.partial(copy_records, lo, hi))
            while len(pending) > COPIES_AHEAD:  # a hint of many small ranges: bound it
                take()

    try:
        if base is not None:
            leaves = _LeafLoader(planner, base, (
                leaf for first, count, read in plan if not read
                for leaf, _, _, whole in _leaf_pieces(first, count, out.cells, base.cells)
                if not whole))
        for first, count, read in plan:
            (read_cells if read else copy_cells)(first, count)
        while pending:
            take()
        stream = out.finish()
    finally:  # on an error: no job may still read the source once the caller closes it
        jobs = {e[0].job for e in pending if isinstance(e, tuple) and e[0].job is not None}
        for job in jobs:
            job.cancel()
        concurrent.futures.wait(jobs)
        planner.shutdown(cancel_futures=True)  # the map windows and leaves still under way
    stats.seconds = time.monotonic() - started
    return stream, stats


@dataclass
class BackupResult:
    snapshots: list[Snapshot] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # what was not backed up, and why
    stats: StreamStats = field(default_factory=StreamStats)

    @property
    def partial(self) -> bool:
        return bool(self.problems)


Events = Callable[[dict[str, Any]], None]


def _changed(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[str]:
    keys = ("size", "mtime", "file_id", "error")
    return [a["path"] for b, a in zip(before, after)
            if any(b.get(k) != a.get(k) for k in keys)]


def _missed(base, new, changed: list[tuple[int, int]], cell: int) -> list[tuple[int, int]]:
    """Byte ranges outside ``changed`` whose content differs between ``base`` and ``new``:
    the blocks a hint missed (from the manifests alone)."""
    missed: list[tuple[int, int]] = []
    for first, count, read in cell_plan(changed, cell, new.cells):
        if not read:
            missed += changed_ranges(base, new, first * cell,
                                     min(new.size, (first + count) * cell))
    return missed


def _best_hint(volume: Volume | None, facts: dict, identity: list, src: ByteSource,
               candidates: list[DiskEntry | None], cell: int) -> tuple[Hint, DiskEntry | None]:
    """The first candidate (the disk in the previous backup, then the parent file of its
    snapshot tree) with a hint that narrows the read, and that hint; the notes are the first
    candidate's and the winner's."""
    first = choose(volume, facts, identity, src, candidates[0], cell)
    if first.changed is not None:
        return first, candidates[0]
    for other in candidates[1:]:
        if other is not None:
            hint = choose(volume, {}, identity, src, other, cell)
            if hint.changed is not None and hint.kind != "identity":
                return replace(hint, notes=first.notes + hint.notes), other
    return first, None


def _store_hinted(repo: Repository, writer: BlobWriter, src: ByteSource, name: str,
                  facts: dict, identity: list, volume: Volume | None,
                  candidates: list[DiskEntry | None], hints: str, progress: Progress | None
                  ) -> tuple[Stream, StreamStats, dict[str, Any]]:
    """Store ``src``, reading what the best change hint says may have changed (``hints``:
    ``auto``, ``off`` to read all, ``verify`` to read all and report what a hint missed)."""
    notes: dict[str, Any] = {}
    hint, against = _best_hint(volume, facts, identity, src, candidates, repo.cell_size)
    base = repo.open_stream(against.stream, against.name) if against is not None else None
    if base is not None and hint.changed is not None:
        # its unchanged leaves are taken over by id, as chunks are: the index must have them
        leaves = [bytes.fromhex(leaf) for leaf in base.stream.leaves]
        unknown = set(leaves) - writer.known(leaves)
        if unknown:
            hint = Hint("none", None, hint.notes + [
                f"the previous backup's manifest leaf {min(unknown).hex()[:16]} is not in "
                "the index (a damaged repository: run check): read in full"])
    if hints == "off":
        hint = Hint("none", None, ["--no-hints: read in full"])
    if hints == "verify" or hint.changed is None:
        stream, stats = store_stream(repo, writer, src, progress)
    else:
        stream, stats = store_stream(repo, writer, src, progress, base, hint.changed,
                                     hint.allocated)
    if hints == "verify" and base is not None and hint.changed is not None:
        writer.flush_pack()
        writer.flush_index()  # the new chunks must be indexed to read the new stream
        missed = _missed(base, repo.open_stream(stream, name), hint.changed, repo.cell_size)
        notes["hint_missed"] = [{"offset": o, "length": n} for o, n in missed]
    return stream, stats, {**stats.to_dict(), "hint": hint.kind, "hint_notes": hint.notes,
                           **notes}


def _unchanged_while_read(identity: list[dict[str, Any]], now: list[dict[str, Any]],
                          path: str | None) -> None:
    changed = _changed(identity, now)
    if changed:
        raise VmsiftError("changed while it was read (" + ", ".join(changed) + "); not "
                          "recorded: back up a stable copy or a snapshot", source=path)


def _store_disk(repo: Repository, writer: BlobWriter, plan, volume, parent: DiskEntry | None,
                below: DiskEntry | None, hints: str, progress: Progress | None
                ) -> tuple[DiskEntry, StreamStats]:
    """Store one disk at its current state; ``below`` is the stored parent file of its
    snapshot tree (``--chain``), a second base for the chain hint."""
    with plan.open() as src:
        stream, stats, record = _store_hinted(repo, writer, src, plan.name, plan.facts,
                                              plan.identity, volume, [parent, below], hints,
                                              progress)
    if plan.recheck:
        _unchanged_while_read(plan.identity, plan.recheck(), plan.path)
    return DiskEntry(plan.name, plan.device, plan.path, stream, plan.facts, plan.identity,
                     record), stats


def _as_entry(link: LinkEntry) -> DiskEntry:
    """A tree file in the shape change hints compare against."""
    return DiskEntry(link.name, None, link.path, link.stream, {}, link.identity)


def _store_links(repo: Repository, writer: BlobWriter, volume: Volume, folder: str,
                 tree: list[TreeFile], top: str, parent: DiskEntry | None, hints: str,
                 total: StreamStats) -> dict[str, LinkEntry]:
    """Store every file of a disk's snapshot tree but its current ``top``, parents first,
    each as the disk reads with that file on top: a file the previous backup stored and that
    is unchanged is reused (identity hint), a new one reads only its own grains (chain)."""
    before = {link.path: link for link in parent.links} if parent else {}
    stored: dict[str, LinkEntry] = {}
    for node in tree:
        if node.path == top:
            continue
        disk = read_disk(volume, VmDisk("link", node.path, None), stored=False)
        if not disk.chain:
            raise VmsiftError(f"snapshot-tree file {node.path} cannot be read: {disk.problem}")
        candidates = [_as_entry(before[node.path]) if node.path in before else None,
                      _as_entry(stored[node.parent]) if node.parent in stored else None]
        with open_disk(volume, node.path, strict=False) as src:
            stream, stats, record = _store_hinted(repo, writer, src, node.path, {},
                                                  disk.identity, volume, candidates, hints,
                                                  None)
        _unchanged_while_read(disk.identity, identity_now(volume, disk.identity), node.path)
        if record["hint"] != "identity":
            writer.flush_pack()
            writer.flush_index()  # its leaves are read as the base of the files above it
        total.add(stats)
        stored[node.path] = LinkEntry(node.path, posixpath.relpath(node.path, folder or "."),
                                      node.parent, disk.facts.get("cid"), node.snapshots,
                                      stream, disk.identity, record)
    return stored


def _store_file(repo: Repository, writer: BlobWriter, volume: Volume, name: str, path: str
                ) -> tuple[FileEntry, StreamStats]:
    st = volume.stat(path)
    with volume.open(path) as src:
        stream, stats = store_stream(repo, writer, src)
    return FileEntry(name, stream, st.mode, st.mtime), stats


def backup(repo: Repository, paths: list[str], *, vms: tuple[str, ...] = (),
           disks: tuple[str, ...] = (), tags: tuple[str, ...] = (), host: str | None = None,
           hints: str = "auto", chain: bool = False, events: Events | None = None,
           progress: Callable[[str, int], Progress | None] | None = None) -> BackupResult:
    """Back up the VMs of the source ``paths`` (one source: a path, or several devices of a
    spanned volume). ``vms`` and ``disks`` (shell patterns) narrow what is taken. ``events``
    receives one dict per VM and disk done; ``progress(label, total)`` may give a callback
    for the bytes of each disk. ``hints``: ``auto`` (use change hints), ``off`` (read every
    disk in full), ``verify`` (read in full and report what a hint missed). ``chain`` also
    stores every file of each disk's snapshot tree (the disk at each .vmsd snapshot), so
    that the tree can be restored. The caller holds a lock."""
    emit = events or (lambda e: None)
    result = BackupResult()
    run_id = os.urandom(8).hex()
    host = host or os.uname().nodename
    problems: list[str] = []
    source = os.path.abspath(paths[0])
    repo.sync_index()
    writer = BlobWriter(repo)
    try:
        with open_source(paths, problems) as (kind, targets):
            for p in problems:
                result.problems.append(f"{source}: {p}")
            chosen = [t for t in targets if not vms or any(
                fnmatch.fnmatchcase(t.vm["name"] or "", v) for v in vms)]
            if not chosen:
                found = ", ".join(t.vm["name"] or "?" for t in targets) or "none"
                raise VmsiftError(f"no VM to back up (found: {found})", source=source)
            earlier = repo.snapshots([])  # a damaged old snapshot is for check to report
            for target in chosen:
                parent = _previous(earlier, target)
                snap = _backup_target(repo, writer, target, kind, source, disks, tags, host,
                                      run_id, emit, progress, result, parent, hints, chain)
                result.snapshots.append(snap)
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    return result


def _previous(snapshots: list[Snapshot], target) -> Snapshot | None:
    """The newest earlier snapshot of the same VM (kind, name, uuid and configuration
    path), the base of change hints."""
    key = tuple(target.vm.get(k) for k in ("kind", "name", "uuid", "config"))
    same = [s for s in snapshots if tuple(s.vm.get(k) for k in ("kind", "name", "uuid",
                                                                 "config")) == key]
    return same[-1] if same else None


def _backup_target(repo, writer, target, kind, source, disk_globs, tags, host, run_id, emit,
                   progress, result, parent: Snapshot | None, hints: str,
                   chain: bool) -> Snapshot:
    started = time.monotonic()
    total = StreamStats()
    problems = list(target.warnings)
    entries: list[DiskEntry] = []
    for plan in target.disks:
        if disk_globs and not any(fnmatch.fnmatchcase(plan.name, g) or
                                  fnmatch.fnmatchcase(plan.device or "", g)
                                  for g in disk_globs):
            continue
        what = f"{target.vm['name']}: disk {plan.name}"
        if plan.open is None:
            problems.append(f"disk {plan.name} ({plan.device}) not backed up: {plan.problem}")
            emit({"event": "disk", "vm": target.vm["name"], "disk": plan.name,
                  "skipped": plan.problem})
            continue
        try:
            bar = progress(what, plan.facts.get("capacity") or 0) if progress else None
            before = next((d for d in parent.disks if d.name == plan.name and
                           d.device == plan.device), None) if parent else None
            links: dict[str, LinkEntry] = {}
            tree: list[TreeFile] = []
            if chain and target.volume is not None and plan.facts.get("chain"):
                tree, notes = disk_tree(target.volume, plan.path, plan.points)
                problems += [f"disk {plan.name}: {n}" for n in notes]
                links = _store_links(repo, writer, target.volume, target.vm["folder"], tree,
                                     plan.path, before, hints, total)
            top = next((t for t in tree if t.path == plan.path), None)
            below = links.get(top.parent) if top and top.parent else None
            entry, stats = _store_disk(repo, writer, plan, target.volume, before,
                                       _as_entry(below) if below else None, hints, bar)
            if top:
                links[top.path] = LinkEntry(
                    top.path, posixpath.relpath(top.path, target.vm["folder"] or "."),
                    top.parent, plan.facts.get("cid"), top.snapshots, entry.stream,
                    plan.identity, {"same_as": "disk"})
                entry.links = [links[t.path] for t in tree]
        except VmsiftError as e:
            problems.append(f"disk {plan.name} ({plan.device}) not backed up: {e}")
            emit({"event": "disk", "vm": target.vm["name"], "disk": plan.name,
                  "skipped": str(e)})
            continue
        entries.append(entry)
        total.add(stats)
        emit({"event": "disk", "vm": target.vm["name"], "disk": plan.name,
              "stats": stats.to_dict(), "hint": entry.stats["hint"],
              "hint_notes": entry.stats["hint_notes"],
              **({"links": [{"name": link.name, "snapshots": link.snapshots,
                             "hint": link.stats.get("hint"), "read": link.stats.get("read")}
                            for link in entry.links]} if entry.links else {}),
              **({"hint_missed": entry.stats["hint_missed"]}
                 if "hint_missed" in entry.stats else {})})
    files: list[FileEntry] = []
    for name, path in target.files:
        try:
            entry, stats = _store_file(repo, writer, target.volume, name, path)
        except VmsiftError as e:
            problems.append(f"file {name} not backed up: {e}")
            continue
        files.append(entry)
        total.add(stats)
    writer.flush_pack()
    writer.flush_index()   # every chunk the snapshot names is indexed before it is stored
    total.seconds = time.monotonic() - started
    snap = Snapshot(time=dt.datetime.now(dt.timezone.utc), host=host, source=source,
                    vm=target.vm, disks=entries, files=files, tags=list(tags), run=run_id,
                    problems=problems, stats={**total.to_dict(), "source_kind": kind})
    repo.save_snapshot(snap)
    result.problems += [f"{target.vm['name']}: {p}" for p in problems]
    result.stats.add(total)
    emit({"event": "snapshot", "id": snap.id, "short_id": snap.short_id,
          "vm": target.vm["name"], "disks": len(entries), "files": len(files),
          "problems": problems, "stats": total.to_dict()})
    return snap
