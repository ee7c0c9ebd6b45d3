"""Back up sources into a repository: each VM (or bare disk) becomes one snapshot.

A SOURCE is a datastore image (VMFS, OCFS2; bare, partitioned or spanned), a datastore or VM
folder, or one disk (a VMDK of any kind, or a raw image). Per VM: its small files, and each
disk flattened at its current state, as streams (`chunker` cells, `manifest` leaves).

The pipeline per stream: the map says which cells are DATA; those are read in blocks of
`BLOCK` bytes on this thread, hashed (keyed blake3) and checked for zeros in the worker pool;
ids the index already has are reused; the others are sealed (zstd, AES-GCM) in the pool and
appended to packs, which are stored by one writer thread. An index object is stored after
every `repository.INDEX_EVERY` packs and at the end, and only then the snapshot: a killed
backup leaves packs no snapshot names, which `check` reports as unused and nothing else.
"""

from __future__ import annotations

import collections
import concurrent.futures
import datetime as dt
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..datastore.volume import Volume
from ..errors import VmsiftError
from ..source import Alloc, ByteSource
from .chunker import cell_count, segments
from .manifest import LEAF_CELLS, LeafBuilder, leaf_cells
from .pack import MAX_BLOBS, BlobType, PackEntry, PackWriter
from .repository import INDEX_EVERY, Repository
from .snapshot import DiskEntry, FileEntry, Snapshot, Stream
from .sources import open_source

BLOCK = 4 << 20          # bytes read from a source at a time (whole cells)
AHEAD = 8                # blocks read ahead of hashing; bounds memory to AHEAD * BLOCK
SEAL_AHEAD = 32 << 20   # bytes of cells being sealed at once

Progress = Callable[[int], None]


@dataclass
class StreamStats:
    """What storing one stream took; bytes unless named otherwise."""

    size: int = 0
    read: int = 0          # read from the source
    skipped: int = 0       # ZERO / HOLE in the map: never read
    zero: int = 0          # read, and all zeros
    reused: int = 0        # chunks the repository already had
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
        self._uploader = concurrent.futures.ThreadPoolExecutor(1, "vmsift-put")

    def has(self, blob_id: bytes) -> bool:
        return blob_id in self.pending or self.repo.index.lookup(blob_id) is not None

    def known(self, ids: list[bytes]) -> set[bytes]:
        return {i for i in ids if i in self.pending} | self.repo.index.known(ids)

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
        while len(self._puts) > 2:  # at most two packs in memory waiting to be stored
            self._take_put()
        if len(self.unindexed) + len(self._puts) >= INDEX_EVERY:
            self.flush_index()

    def _take_put(self) -> None:
        name, entries = self._puts.popleft().result()
        self.unindexed[name] = entries

    def flush_index(self) -> None:
        while self._puts:  # the packs first: an index never names a pack not yet stored
            self._take_put()
        if self.unindexed:
            self.repo.write_index(self.unindexed)
            for entries in self.unindexed.values():  # now the index cache answers for them
                self.pending.difference_update(e.id for e in entries)
            self.unindexed = {}

    def finish(self) -> None:
        self.flush_pack()
        self.flush_index()
        self._uploader.shutdown()

    def abort(self) -> None:
        for f in self._puts:
            f.cancel()
        self._uploader.shutdown(wait=True, cancel_futures=True)


def _hash_block(repo: Repository, data: bytes, cell: int) -> list[bytes | None]:
    """The id of each cell of ``data``, None for an all-zero cell."""
    view = memoryview(data)
    zero = bytes(cell)
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
        self.sealing: collections.deque = collections.deque()
        self.in_flight = 0  # bytes of cells being sealed
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

    def seal(self, chunks: list[tuple[bytes, memoryview]]) -> None:
        """Seal new chunks (one pool job for the batch); they join packs when done."""
        if not chunks:
            return
        keys = self.repo.keys
        self.writer.pending.update(chunk_id for chunk_id, _ in chunks)
        job = self.repo.pool.submit(lambda: [keys.seal(piece, chunk_id)
                                             for chunk_id, piece in chunks])
        self.sealing.append(([(chunk_id, len(piece)) for chunk_id, piece in chunks], job))
        self.in_flight += sum(n for _, n in self.sealing[-1][0])
        while self.in_flight > SEAL_AHEAD:
            self._drain_one()

    def _drain_one(self) -> None:
        chunks, job = self.sealing.popleft()
        for (chunk_id, n), sealed in zip(chunks, job.result()):
            self.writer.add(BlobType.DATA, chunk_id, sealed, n)
            self.stats.stored += len(sealed)
            self.in_flight -= n

    def finish(self) -> Stream:
        while self.sealing:
            self._drain_one()
        if self.cells == 0:
            return Stream(self.size, self.repo.cell_size, [])
        assert self.leaf.cells == 0 and len(self.leaves) == -(-self.cells // LEAF_CELLS)
        return Stream(self.size, self.repo.cell_size, self.leaves)


def store_stream(repo: Repository, writer: BlobWriter, src: ByteSource,
                 progress: Progress | None = None) -> tuple[Stream, StreamStats]:
    """Store ``src`` as a stream; return it and what it took."""
    started = time.monotonic()
    cell = repo.cell_size
    out = StreamWriter(repo, writer, src.size)
    stats = out.stats
    per_block = max(BLOCK // cell, 1)
    hashing: collections.deque = collections.deque()

    def take_hashed() -> None:
        pos, data, future = hashing.popleft()
        ids = future.result()
        known = writer.known([i for i in ids if i is not None])
        view = memoryview(data)
        new: list[tuple[bytes, memoryview]] = []
        for k, chunk_id in enumerate(ids):
            piece = view[k * cell:(k + 1) * cell]
            if chunk_id is None:
                out.empty(Alloc.ZERO, 1)
                stats.zero += len(piece)
                continue
            if chunk_id in known:
                stats.reused += len(piece)
            else:
                known.add(chunk_id)
                stats.new += len(piece)
                new.append((chunk_id, piece))
            out.data(chunk_id)
        out.seal(new)
        if progress:
            progress(len(data))

    try:
        for seg in segments(src, cell):
            if seg.kind is not Alloc.DATA:
                while hashing:
                    take_hashed()
                n = min(seg.count * cell, src.size - seg.first * cell)
                out.empty(seg.kind, seg.count)
                stats.skipped += n
                if progress:
                    progress(n)
                continue
            for first in range(seg.first, seg.first + seg.count, per_block):
                count = min(per_block, seg.first + seg.count - first)
                pos = first * cell
                n = min(count * cell, src.size - pos)
                data = src.read_exact(pos, n, "disk data")
                stats.read += n
                hashing.append((pos, data, repo.pool.submit(_hash_block, repo, data, cell)))
                while len(hashing) > AHEAD:
                    take_hashed()
        while hashing:
            take_hashed()
        stream = out.finish()
    finally:
        for _, _, f in hashing:
            f.cancel()
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


def _store_disk(repo: Repository, writer: BlobWriter, plan, progress: Progress | None
                ) -> tuple[DiskEntry, StreamStats]:
    with plan.open() as src:
        stream, stats = store_stream(repo, writer, src, progress)
    if plan.recheck:
        changed = _changed(plan.identity, plan.recheck())
        if changed:
            raise VmsiftError("changed while it was read (" + ", ".join(changed) + "); not "
                              "recorded: back up a stable copy or a snapshot",
                              source=plan.path)
    return DiskEntry(plan.name, plan.device, plan.path, stream, plan.facts, plan.identity,
                     stats.to_dict()), stats


def _store_file(repo: Repository, writer: BlobWriter, volume: Volume, name: str, path: str
                ) -> tuple[FileEntry, StreamStats]:
    st = volume.stat(path)
    with volume.open(path) as src:
        stream, stats = store_stream(repo, writer, src)
    return FileEntry(name, stream, st.mode, st.mtime), stats


def backup(repo: Repository, paths: list[str], *, vms: tuple[str, ...] = (),
           disks: tuple[str, ...] = (), tags: tuple[str, ...] = (), host: str | None = None,
           events: Events | None = None,
           progress: Callable[[str, int], Progress | None] | None = None) -> BackupResult:
    """Back up the VMs of the source ``paths`` (one source: a path, or several devices of a
    spanned volume). ``vms`` and ``disks`` (shell patterns) narrow what is taken. ``events``
    receives one dict per VM and disk done; ``progress(label, total)`` may give a callback
    for the bytes of each disk. The caller holds a lock."""
    import fnmatch

    emit = events or (lambda e: None)
    result = BackupResult()
    run_id = secrets.token_hex(8)
    host = host or socket.gethostname()
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
            for target in chosen:
                snap = _backup_target(repo, writer, target, kind, source, disks, tags, host,
                                      run_id, emit, progress, result)
                result.snapshots.append(snap)
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    return result


def _backup_target(repo, writer, target, kind, source, disk_globs, tags, host, run_id, emit,
                   progress, result) -> Snapshot:
    import fnmatch

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
            entry, stats = _store_disk(repo, writer, plan, bar)
        except VmsiftError as e:
            problems.append(f"disk {plan.name} ({plan.device}) not backed up: {e}")
            emit({"event": "disk", "vm": target.vm["name"], "disk": plan.name,
                  "skipped": str(e)})
            continue
        entries.append(entry)
        total.add(stats)
        emit({"event": "disk", "vm": target.vm["name"], "disk": plan.name,
              "stats": stats.to_dict()})
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
