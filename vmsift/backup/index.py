"""The index: which pack holds each blob.

In the repository it is a set of immutable ``index`` objects, each written after the packs it
describes and before any snapshot that needs them; one is sealed JSON::

    {"packs": [{"id": "<pack name>", "blobs": [[type, "<blob id hex>", offset, length,
                                                raw_length], ...]}, ...]}

Locally it is a cache in sqlite (``<cache>/<repository id>/index.sqlite``), so that lookups
need neither the whole index in memory nor a read of every index object per run: new index
objects are imported on `IndexCache.sync`; one that disappeared (a prune) rebuilds it. The
cache holds only blob ids (keyed: they leak nothing) and pack positions.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator

from ..errors import IntegrityError, RepositoryError
from .crypto import Keys
from .pack import PackEntry

INDEX_AAD = b"index"
SCHEMA = 1


def encode(keys: Keys, packs: dict[str, list[PackEntry]]) -> bytes:
    doc = {"packs": [{"id": name, "blobs": [[e.type, e.id.hex(), e.offset, e.length,
                                             e.raw_length] for e in entries]}
                     for name, entries in packs.items()]}
    return keys.seal(json.dumps(doc, separators=(",", ":")).encode(), INDEX_AAD)


def decode(keys: Keys, stored: bytes, name: str) -> dict[str, list[PackEntry]]:
    raw = keys.unseal(stored, INDEX_AAD, f"index {name}")
    try:
        doc = json.loads(raw)
        return {p["id"]: [PackEntry(int(t), bytes.fromhex(i), int(o), int(n), int(r))
                          for t, i, o, n, r in p["blobs"]] for p in doc["packs"]}
    except (ValueError, KeyError, TypeError) as e:
        raise IntegrityError(f"index {name} is not a valid index document: {e}") from None


def cache_root() -> str:
    base = os.environ.get("VMSIFT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vmsift")
    return base


class IndexCache:
    """Blob id -> (pack, offset, length, raw length, type), in sqlite. One connection per
    thread (sqlite's rule); several processes may share the file (WAL)."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._local = threading.local()
        db = self._db()
        try:
            db.executescript("""
                PRAGMA journal_mode = WAL;
                CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
                CREATE TABLE IF NOT EXISTS blobs (id BLOB PRIMARY KEY, pack TEXT NOT NULL,
                    offset INTEGER, length INTEGER, raw_length INTEGER, type INTEGER)
                    WITHOUT ROWID;
                CREATE TABLE IF NOT EXISTS index_objects (name TEXT PRIMARY KEY);
            """)
            row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
                db.commit()
            elif row[0] != str(SCHEMA):
                self.reset()
        except sqlite3.Error as e:
            raise RepositoryError(f"index cache is unusable ({e}); delete it", source=path) \
                from None

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = sqlite3.connect(self.path, timeout=60)
            # a cache, rebuilt from the repository if lost: no fsync per commit, and enough
            # memory that lookups of a large repository's ids stay off the disk
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA cache_size = -65536")
            db.execute("PRAGMA mmap_size = 268435456")
        return db

    def reset(self) -> None:
        db = self._db()
        db.execute("DELETE FROM blobs")
        db.execute("DELETE FROM index_objects")
        db.commit()

    def known_objects(self) -> set[str]:
        return {r[0] for r in self._db().execute("SELECT name FROM index_objects")}

    def add(self, name: str, packs: dict[str, list[PackEntry]]) -> None:
        """Record one index object's entries (already stored in the repository)."""
        db = self._db()
        with db:
            db.executemany("INSERT OR REPLACE INTO blobs VALUES (?,?,?,?,?,?)",
                           ((e.id, pack, e.offset, e.length, e.raw_length, e.type)
                            for pack, entries in packs.items() for e in entries))
            db.execute("INSERT OR IGNORE INTO index_objects VALUES (?)", (name,))

    def lookup(self, blob_id: bytes) -> tuple[str, PackEntry] | None:
        row = self._db().execute("SELECT pack, offset, length, raw_length, type FROM blobs "
                                 "WHERE id=?", (blob_id,)).fetchone()
        if row is None:
            return None
        return row[0], PackEntry(row[4], blob_id, row[1], row[2], row[3])

    def _rows(self, columns: str, ids: Iterable[bytes]) -> Iterator[tuple]:
        """``columns`` of the rows of ``ids`` the index holds, 500 ids a query."""
        ids = list(ids)
        db = self._db()
        for i in range(0, len(ids), 500):
            batch = ids[i:i + 500]
            yield from db.execute(f"SELECT {columns} FROM blobs WHERE id IN "
                                  f"({','.join('?' * len(batch))})", batch)

    def lookup_many(self, ids: Iterable[bytes]) -> dict[bytes, tuple[str, PackEntry]]:
        """`lookup` of each of ``ids`` the index holds, a few queries in all."""
        return {blob_id: (pack, PackEntry(type_, blob_id, offset, length, raw_length))
                for blob_id, pack, offset, length, raw_length, type_ in self._rows(
                    "id, pack, offset, length, raw_length, type", ids)}

    def known(self, ids: Iterable[bytes]) -> set[bytes]:
        """Which of ``ids`` the index holds (the backup asks for every cell it reads: the
        ids alone, without building where each one is)."""
        return {row[0] for row in self._rows("id", ids)}

    def packs(self) -> Iterator[tuple[str, int]]:
        """(pack, bytes its blobs reach to) of every pack the index names."""
        yield from self._db().execute("SELECT pack, MAX(offset + length) FROM blobs "
                                      "GROUP BY pack")

    def blobs_of(self, pack: str) -> list[PackEntry]:
        return [PackEntry(t, i, o, n, r) for i, o, n, r, t in self._db().execute(
            "SELECT id, offset, length, raw_length, type FROM blobs WHERE pack=?", (pack,))]

    def count(self) -> tuple[int, int, int]:
        """(blobs, stored bytes, plaintext bytes)."""
        n, stored, raw = self._db().execute(
            "SELECT COUNT(*), COALESCE(SUM(length),0), COALESCE(SUM(raw_length),0) "
            "FROM blobs").fetchone()
        return n, stored, raw

    # --- marks of the blobs snapshots use (prune), in a table of this connection ---------

    def clear_used(self) -> None:
        db = self._db()
        db.execute("CREATE TEMP TABLE IF NOT EXISTS used (id BLOB PRIMARY KEY) WITHOUT ROWID")
        db.execute("DELETE FROM used")

    def mark_used(self, ids: Iterable[bytes]) -> None:
        self._db().executemany("INSERT OR IGNORE INTO used VALUES (?)", ((i,) for i in ids))

    def is_used(self, blob_id: bytes) -> bool:
        return self._db().execute("SELECT 1 FROM used WHERE id=?", (blob_id,)).fetchone() \
            is not None

    def pack_usage(self) -> dict[str, tuple[int, int]]:
        """pack -> (stored bytes of its used blobs, of its unused ones)."""
        rows = self._db().execute(
            "SELECT pack, SUM(CASE WHEN u.id IS NULL THEN 0 ELSE length END), "
            "SUM(CASE WHEN u.id IS NULL THEN length ELSE 0 END) "
            "FROM blobs b LEFT JOIN used u ON u.id = b.id GROUP BY pack")
        return {pack: (used, unused) for pack, used, unused in rows}

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
