"""A repository: its config and keys, the blob store (packs + index), snapshots, locks; and
stored disks and files opened as `ByteSource`s.

``config`` (plain JSON) says what the repository is::

    {"repository": "vmsift", "version": 1, "id": "<16 hex>", "encryption": "none"|"repokey",
     "cell_size": 65536, "created": "<ISO time>", "id_key": "<hex, only without encryption>"}

With ``repokey`` the keys are in ``keys/<name>`` (`crypto.seal_keys`), opened by a password.
"""

from __future__ import annotations

import bisect

import concurrent.futures
import contextlib
import datetime as dt
import json
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import IntegrityError, MissingObjectError, RepositoryError, SourceError
from ..cache import LruCache
from ..publish import write_file
from ..source import Alloc, ByteSource, Run, clip, merge_runs
from . import index as index_mod
from . import snapshot as snapshot_mod
from .backends import Backend, open_backend
from .chunker import cell_count
from .crypto import Keys, object_name, open_keys, seal_keys
from .lock import Lock
from .manifest import LEAF_CELLS, Leaf, leaf_cells
from .pack import PackEntry
from .snapshot import Snapshot, Stream

FORMAT = "vmsift"
VERSION = 1
#: default cell size, chosen by measurement (docs/repository.md, "Cell size")
CELL_SIZE = 64 << 10
CELL_SIZES = tuple(1 << n for n in range(12, 25))  # 4 KiB .. 16 MiB
#: packs stored before their index object is written (bounds what a crash orphans)
INDEX_EVERY = 16
MAX_CONFIG = 1 << 20
MAX_SNAPSHOT = 256 << 20
BLOBS_CACHED = 64      # decoded chunks kept (small reads of one chunk after another)
POOL_MAX = 32         # worker threads at most, however many cores
FETCH_SPAN = 8 << 20   # one read of a pack fetches neighbouring blobs up to this many bytes
FETCH_GAP = 64 << 10   # and reads through gaps of unwanted blobs up to this size


def _not_ours(backend: Backend) -> str:
    """Why a location without a readable vmsift config is not a vmsift repository."""
    root = getattr(backend, "inner", backend)
    path = getattr(root, "root", None)
    if path and os.path.isfile(os.path.join(path, "README")):
        with open(os.path.join(path, "README"), "rb") as f:
            if b"Borg" in f.read(4096):
                return "a borg repository, not a vmsift one"
    if path and all(os.path.isdir(os.path.join(path, name)) for name in ("keys", "data")) \
            and os.path.isfile(os.path.join(path, "config")):
        return "not a vmsift repository (its config is not ours: a restic repository?)"
    return "not a vmsift repository (no config)"


class Repository:
    """An open repository. Use `init` or `open`."""

    def __init__(self, backend: Backend, config: dict, keys: Keys):
        self.backend = backend
        self.config = config
        self.keys = keys
        self.id: str = config["id"]
        self.cell_size: int = config["cell_size"]
        self.location = backend.location
        self.cache_dir = os.path.join(index_mod.cache_root(), self.id)
        self.index = index_mod.IndexCache(os.path.join(self.cache_dir, "index.sqlite"))
        self._blob_cache = LruCache(BLOBS_CACHED)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._syncing = threading.Lock()  # readers of a mount may find a prune at once

    # --- creating and opening ------------------------------------------------------------

    @classmethod
    def init(cls, location: str, *, encryption: str = "repokey", password: bytes | None = None,
             cell_size: int = CELL_SIZE) -> Repository:
        if encryption not in ("none", "repokey"):
            raise RepositoryError(f"encryption {encryption!r} is not none or repokey")
        if cell_size not in CELL_SIZES:
            raise RepositoryError(f"cell size {cell_size} is not a power of two from 4 KiB "
                                  "to 16 MiB")
        if encryption == "repokey" and not password:
            raise RepositoryError("an encrypted repository needs a password")
        backend = open_backend(location)
        backend.create()
        keys = Keys.generate(encryption == "repokey")
        config = {"repository": FORMAT, "version": VERSION, "id": os.urandom(8).hex(),
                  "encryption": encryption, "cell_size": cell_size,
                  "created": dt.datetime.now(dt.timezone.utc).isoformat()}
        if encryption == "none":
            config["id_key"] = keys.id_key.hex()
        else:
            sealed = seal_keys(keys, password)
            backend.put("keys", object_name(sealed), sealed)
        backend.put("config", "config", json.dumps(config, indent=1).encode() + b"\n")
        return cls(backend, config, keys)

    @classmethod
    def open(cls, location: str, password: bytes | Callable[[], bytes] | None = None
             ) -> Repository:
        """Open ``location``; ``password`` (or a function asking for it) for encrypted ones."""
        if not location.startswith("s3:") and not os.path.isdir(location):
            raise RepositoryError("no repository here (vmsift init makes one)", source=location)
        backend = open_backend(location)
        try:
            raw = backend.get("config", "config")
        except MissingObjectError:
            raise RepositoryError(_not_ours(backend), source=location) from None
        try:
            config = json.loads(raw[:MAX_CONFIG])
            if not isinstance(config, dict) or config.get("repository") != FORMAT:
                raise ValueError
        except ValueError:
            raise RepositoryError(_not_ours(backend), source=location) from None
        if not isinstance(config.get("version"), int) or config["version"] > VERSION:
            raise RepositoryError(f"repository format version {config.get('version')} is newer "
                                  f"than this vmsift reads ({VERSION}); upgrade vmsift",
                                  source=location)
        if config.get("cell_size") not in CELL_SIZES:
            raise RepositoryError(f"config: bad cell size {config.get('cell_size')}",
                                  source=location)
        if config.get("encryption") == "none":
            keys = Keys(bytes.fromhex(config["id_key"]), None)
        elif config.get("encryption") == "repokey":
            if callable(password):
                password = password()
            if not password:
                raise RepositoryError("the repository is encrypted: give its password "
                                      "(VMSIFT_PASSWORD, --password-file or the prompt)",
                                      source=location)
            keys = None
            for name, _ in backend.list("keys"):
                keys = open_keys(backend.get("keys", name), password)
                if keys:
                    break
            if keys is None:
                raise RepositoryError("wrong password (no key of this repository opens with "
                                      "it)", source=location)
        else:
            raise RepositoryError(f"config: unknown encryption {config.get('encryption')!r}",
                                  source=location)
        return cls(backend, config, keys)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        self.index.close()
        self.backend.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def pool(self) -> concurrent.futures.ThreadPoolExecutor:
        """Workers for reading, hashing, sealing and fetching (blake3, zstd, AES and reads
        release the GIL): two per core, so that while some wait for the disk the others keep
        the cores busy (8 GiB first backup here: 7.5 s with one per core, 6.5 s with two)."""
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                min(POOL_MAX, 2 * (os.cpu_count() or 1)), "vmsift-repo")
        return self._pool

    def lock(self, exclusive: bool = False, wait: float = 0.0) -> Lock:
        return Lock(self.backend, exclusive).acquire(wait)

    # --- the index -----------------------------------------------------------------------

    def sync_index(self) -> list[str]:
        """Bring the local index cache up to the repository's index objects; return the
        names of index objects that could not be read (damaged)."""
        with self._syncing:
            return self._sync_index()

    def _sync_index(self) -> list[str]:
        listed = {name for name, _ in self.backend.list("index")}
        known = self.index.known_objects()
        if known - listed:  # an index object went away (prune): start again
            self.index.reset()
            known = set()
        bad = []
        for name in sorted(listed - known):
            try:
                stored = self.backend.get("index", name)
                if object_name(stored) != name:
                    raise IntegrityError(f"index {name} does not match its name")
                self.index.add(name, index_mod.decode(self.keys, stored, name))
            except (IntegrityError, MissingObjectError):
                bad.append(name)
        return bad

    def write_index(self, packs: dict[str, list[PackEntry]]) -> str:
        stored = index_mod.encode(self.keys, packs)
        name = object_name(stored)
        self.backend.flush()  # the packs it names are durable before it is
        self.backend.put("index", name, stored)
        self.index.add(name, packs)
        return name

    # --- blobs ---------------------------------------------------------------------------

    def _locate(self, blob_id: bytes) -> tuple[str, PackEntry]:
        found = self.index.lookup(blob_id)
        if found is None:
            raise IntegrityError(f"blob {blob_id.hex()[:16]} is not in the index",
                                 source=self.location)
        return found

    def _open_blob(self, blob_id: bytes, pack: str, entry: PackEntry, stored: bytes) -> bytes:
        """The verified plaintext of a blob from its stored bytes."""
        where = f"data/{pack[:16]} @ {entry.offset:#x}"
        data = self.keys.unseal(stored, blob_id, f"blob {blob_id.hex()[:16]} ({where})")
        if len(data) != entry.raw_length:
            raise IntegrityError(f"blob {blob_id.hex()[:16]} ({where}) is {len(data)} bytes, "
                                 f"the index says {entry.raw_length}")
        return self.keys.check_blob(blob_id, data, f"blob {blob_id.hex()[:16]} ({where})")

    def load_blob(self, blob_id: bytes, *, cache: bool = True) -> bytes:
        """The verified plaintext of a blob."""
        if (data := self._blob_cache.get(blob_id)) is not None:
            return data
        pack, entry = self._locate(blob_id)
        data = self._open_blob(blob_id, pack, entry,
                               self.backend.get("data", pack, entry.offset, entry.length))
        if cache:
            self._blob_cache.put(blob_id, data)
        return data

    def load_blobs(self, ids: list[bytes], found: dict[bytes, tuple[str, PackEntry]] | None
                   = None) -> dict[bytes, bytes]:
        """Several verified blobs (``found``: where some of them are, as the index says).
        Neighbours in a pack are fetched with one read (at most `FETCH_SPAN` bytes, gaps up
        to `FETCH_GAP`) and opened by the same job. Several such reads run in the pool; a
        lone one runs in the calling thread (a hand-off to the pool costs more than opening
        a read's blobs: 1 MiB of 64 KiB cells opens in ~0.2 ms)."""
        wanted = list(dict.fromkeys(ids))
        if found is None or any(blob_id not in found for blob_id in wanted):
            found = {**(found or {}), **self.index.lookup_many(wanted)}
        locs: dict[str, list[tuple[PackEntry, bytes]]] = {}
        for blob_id in wanted:
            pack, entry = found.get(blob_id) or self._locate(blob_id)  # (raises: not indexed)
            locs.setdefault(pack, []).append((entry, blob_id))
        groups: list[tuple[str, list[tuple[PackEntry, bytes]]]] = []
        for pack, items in locs.items():
            items.sort(key=lambda x: x[0].offset)
            run: list[tuple[PackEntry, bytes]] = []
            for item in items:
                if run and (item[0].offset > run[-1][0].offset + run[-1][0].length + FETCH_GAP
                            or item[0].offset + item[0].length - run[0][0].offset > FETCH_SPAN):
                    groups.append((pack, run))
                    run = []
                run.append(item)
            groups.append((pack, run))

        def fetch(group: tuple[str, list[tuple[PackEntry, bytes]]]) -> list[tuple]:
            pack, run = group
            lo = run[0][0].offset
            hi = max(e.offset + e.length for e, _ in run)
            data = self.backend.get("data", pack, lo, hi - lo)
            return [(blob_id, self._open_blob(blob_id, pack, e,
                                              data[e.offset - lo:e.offset - lo + e.length]))
                    for e, blob_id in run]

        parts = map(fetch, groups) if len(groups) == 1 else self.pool.map(fetch, groups)
        return dict(x for part in parts for x in part)

    # --- snapshots -----------------------------------------------------------------------

    def save_snapshot(self, snap: Snapshot) -> str:
        stored = snap.encode(self.keys)
        snap.id = object_name(stored)
        self.backend.put("snapshots", snap.id, stored)
        return snap.id

    def load_snapshot(self, name: str, from_store: bool = False) -> Snapshot:
        """A snapshot, from the local cache of snapshot objects when it holds a copy whose
        bytes match the name (objects are immutable), else (or with ``from_store``) from
        the store."""
        cached = os.path.join(self.cache_dir, "snapshots", name)
        try:
            if from_store:
                raise OSError
            with open(cached, "rb") as f:
                stored = f.read(MAX_SNAPSHOT + 1)
            if object_name(stored) != name:
                raise OSError
        except OSError:
            stored = self.backend.get("snapshots", name)
            if object_name(stored) != name:
                raise IntegrityError(f"snapshot {name[:8]} does not match its name (damaged)",
                                     source=self.location)
            with contextlib.suppress(OSError, SourceError):
                os.makedirs(os.path.dirname(cached), exist_ok=True)
                write_file(cached, stored, overwrite=True, sync=False)
        return snapshot_mod.decode(self.keys, stored, name)

    def snapshots(self, problems: list[str] | None = None, from_store: bool = False
                  ) -> list[Snapshot]:
        """Every readable snapshot, oldest first; damaged ones go to ``problems`` (or
        raise when no list is given)."""
        out = []
        for name, _ in self.backend.list("snapshots"):
            try:
                out.append(self.load_snapshot(name, from_store))
            except (IntegrityError, MissingObjectError) as e:
                if problems is None:
                    raise
                problems.append(str(e))
        return sorted(out, key=lambda s: (s.time, s.id))

    def find_snapshot(self, spec: str, vm: str | None = None) -> Snapshot:
        return snapshot_mod.select(self.snapshots(), spec, vm)

    # --- stored streams as sources --------------------------------------------------------

    def open_stream(self, stream: Stream, name: str) -> StreamSource:
        return StreamSource(self, stream, name)

    def open_disk(self, snap: Snapshot, disk: str) -> StreamSource:
        entry = snap.disk(disk)
        return self.open_stream(entry.stream, f"{snap.short_id}:{snap.vm_name}/{entry.name}")

    def open_file(self, snap: Snapshot, file: str) -> StreamSource:
        entry = snap.file(file)
        return self.open_stream(entry.stream, f"{snap.short_id}:{snap.vm_name}/{entry.name}")


class StreamSource(ByteSource):
    """A stored disk or file, read from the repository: the map comes from the manifest
    (no data read); reads fetch, verify and cache only the chunks they need, several at a
    time."""

    LEAVES_CACHED = 16  # leaves decoded, and leaves whose chunks were located
    LEAVES_AT_ONCE = 256  # leaves fetched together to count the data a stream holds

    def __init__(self, repo: Repository, stream: Stream, name: str):
        self.repo = repo
        self.stream = stream
        self.name = name
        self.size = stream.size
        self.cell = stream.cell_size
        self.cells = cell_count(stream.size, stream.cell_size)
        if len(stream.leaves) != -(-self.cells // LEAF_CELLS):
            raise IntegrityError(f"{name}: {len(stream.leaves)} manifest leaves for "
                                 f"{self.cells} cells")
        self._leaves = LruCache(self.LEAVES_CACHED)
        self._located = LruCache(self.LEAVES_CACHED)
        self._indexed = LruCache(self.LEAVES_CACHED)
        self._making = threading.RLock()  # one thread at a time decodes or locates a leaf

    def _once(self, cache: LruCache, i: int, make: Callable[[], Any]) -> Any:
        """``cache``'s value for leaf ``i``, made by one thread while the others that need
        it wait (several readers at a leaf's start would each decode it, on one GIL)."""
        value = cache.get(i)
        if value is None:
            with self._making:
                value = cache.get_or(i, make)
        return value

    def leaf(self, i: int) -> tuple[list[int], list[tuple[int, int, Alloc, bytes | None]]]:
        """The first cell of each record of leaf ``i``, and its (first cell, count, kind, id)
        records."""
        return self._once(self._leaves, i, lambda: self._decode_leaf(i))

    def indexed_leaf(self, i: int) -> Leaf:
        """Leaf ``i`` indexed for copying its records as they are (a hinted backup builds
        each partly changed leaf from its previous one)."""
        return self._once(self._indexed, i, lambda: self._load_leaf(i))

    def indexed_leaves(self, indices: list[int]) -> dict[int, Leaf]:
        """`indexed_leaf` of several leaves at once, not cached (`Repository.load_blobs`:
        one index query, neighbours in a pack with one read)."""
        ids = [bytes.fromhex(self.stream.leaves[i]) for i in indices]
        raws = self.repo.load_blobs(ids)
        return {i: self._load_leaf(i, raws[leaf_id]) for i, leaf_id in zip(indices, ids)}

    def _load_leaf(self, i: int, raw: bytes | None = None) -> Leaf:
        if raw is None:
            raw = self.repo.load_blob(bytes.fromhex(self.stream.leaves[i]), cache=False)
        return Leaf(raw, leaf_cells(i, self.cells), f"{self.name}: manifest leaf {i}")

    def _decode_leaf(self, i: int):
        """`leaf` ``i``, from its index (loaded once for both forms)."""
        leaf, base = self.indexed_leaf(i), i * LEAF_CELLS
        starts = [base + s for s in leaf.starts[:-1]]
        return starts, [(s, count, kind, chunk_id)
                        for s, (kind, count, chunk_id) in zip(starts, leaf.records())]

    def located(self, i: int) -> dict[bytes, tuple[str, PackEntry]]:
        """Where the index says each chunk of leaf ``i`` is: one query for the leaf when a
        read first needs it, instead of one per read."""
        return self._once(self._located, i, lambda: self.repo.index.lookup_many(
            [chunk for _, _, kind, chunk in self.leaf(i)[1] if kind is Alloc.DATA]))

    def records(self, start: int, end: int) -> Iterator[tuple[int, int, Alloc, bytes | None]]:
        """Records of the cells overlapping byte range [start, end)."""
        if end <= start:
            return
        first, last = start // self.cell, (end - 1) // self.cell
        for i in range(first // LEAF_CELLS, last // LEAF_CELLS + 1):
            starts, records = self.leaf(i)
            for k in range(max(bisect.bisect_right(starts, first) - 1, 0), len(records)):
                if records[k][0] > last:
                    break
                yield records[k]

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Run]:
        start, end = clip(self.size, offset, length)

        def runs() -> Iterator[Run]:
            for cell, count, kind, _ in self.records(start, end):
                lo = max(start, cell * self.cell)
                hi = min(end, (cell + count) * self.cell)
                yield Run(lo, hi - lo, kind)

        return merge_runs(runs())

    def stored_bytes(self) -> int:
        """Bytes of DATA cells, from the manifest: its leaves fetched `LEAVES_AT_ONCE` at a
        time (neighbours in a pack with one read, several reads at once: an object store
        answers each in tens of milliseconds, and a 2 TiB disk has 32,768 leaves)."""
        total = 0
        for first in range(0, len(self.stream.leaves), self.LEAVES_AT_ONCE):
            leaves = self.indexed_leaves(list(range(
                first, min(first + self.LEAVES_AT_ONCE, len(self.stream.leaves)))))
            for leaf in leaves.values():
                total += leaf.data_before[-1] * self.cell
        cut = self.cells * self.cell - self.size  # bytes the last cell lacks
        if cut and leaf.is_data(leaf.starts[-1] - 1):
            total -= cut
        return total

    def chunks(self, offset: int = 0, length: int | None = None
               ) -> Iterator[tuple[int, int, bytes | None]]:
        """(offset, length, chunk id or None for zeros) of each cell in the range."""
        start, end = clip(self.size, offset, length)
        for cell, count, kind, chunk_id in self.records(start, end):
            lo, hi = cell * self.cell, min(self.size, (cell + count) * self.cell)
            yield lo, hi - lo, chunk_id if kind is Alloc.DATA else None

    def _load(self, wanted: list[bytes], start: int, end: int) -> dict[bytes, bytes]:
        if len(wanted) <= 1:
            return {c: self.repo.load_blob(c) for c in wanted}
        found: dict[bytes, tuple[str, PackEntry]] = {}
        for i in range(start // self.cell // LEAF_CELLS, (end - 1) // self.cell // LEAF_CELLS + 1):
            found.update(self.located(i))
        return self.repo.load_blobs(wanted, found)

    def read(self, offset: int, length: int) -> bytes:
        start, end = clip(self.size, offset, length)
        pieces = list(self.chunks(start, end - start))
        wanted = [c for _, _, c in pieces if c is not None]
        try:
            loaded = self._load(wanted, start, end)
        except MissingObjectError:  # a prune moved them since: bring the index up to date
            self._located.clear()    # (another process may have pruned) and look again
            self.repo.sync_index()
            loaded = self._load(wanted, start, end)
        out = []
        for lo, n, chunk_id in pieces:
            a, b = max(start, lo) - lo, min(end, lo + n) - lo
            if chunk_id is None:
                out.append(bytes(b - a))
                continue
            data = loaded[chunk_id]
            if len(data) != n:
                raise IntegrityError(f"chunk {chunk_id.hex()[:16]} is {len(data)} bytes, the "
                                     f"cell at {lo:#x} needs {n}", source=self.name, offset=lo)
            out.append(data[a:b])
        return b"".join(out)

