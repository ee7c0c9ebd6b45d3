"""Check a repository: structure, every referenced blob present, and (``read_data``) every
stored byte authenticated.

Passes, each reporting what it finds instead of stopping at the first problem:

1. index objects: each read again (the local cache is rebuilt), checked against its name and
   decoded;
2. packs: every pack the index names is there and long enough for its blobs; packs the
   index does not name are noted (an interrupted backup leaves them; harmless);
3. with ``read_data``: every pack read whole, checked against its name, its header against
   the index, and every blob unsealed and hashed against its id;
4. snapshots: each read and decoded, every manifest leaf of every disk and file loaded
   (verified), and every chunk it names found in the index, in a pack that passed 2 and 3.

A problem names the object and what is wrong with it, and every snapshot, VM, disk or file
it affects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import IntegrityError, MissingObjectError, RepositoryError
from ..source import Alloc
from .crypto import object_name
from .manifest import LEAF_CELLS, decode_leaf, leaf_cells
from .pack import read_header
from .repository import Repository
from .snapshot import Stream
from .chunker import cell_count


@dataclass
class Problem:
    object: str                       # "pack 3fa0...", "snapshot 1a2b3c4d", ...
    what: str
    affects: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"object": self.object, "what": self.what, "affects": self.affects}

    def __str__(self) -> str:
        text = f"{self.object}: {self.what}"
        if self.affects:
            text += " (affects " + "; ".join(self.affects[:10]) + \
                (f"; and {len(self.affects) - 10} more" if len(self.affects) > 10 else "") + ")"
        return text


@dataclass
class CheckResult:
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def check(repo: Repository, read_data: bool = False,
          progress: Callable[[int], None] | None = None) -> CheckResult:
    """Check ``repo`` (the caller holds a lock); see the module docstring."""
    result = CheckResult()
    repo.index.reset()  # every index object is read again and verified, not taken from cache
    for name in repo.sync_index():
        result.problems.append(Problem(f"index {name[:16]}", "damaged or unreadable; the "
                                       "blobs it lists are missing from the index"))
    stored = dict(repo.backend.list("data"))
    bad_packs: dict[str, str] = {}
    indexed = dict(repo.index.packs())
    for pack, reach in indexed.items():
        if pack not in stored:
            bad_packs[pack] = "missing"
        elif stored[pack] < reach:
            bad_packs[pack] = f"truncated: {stored[pack]} bytes, its blobs reach {reach}"
    unused = set(stored) - set(indexed)
    if unused:
        result.notes.append(f"{len(unused)} pack(s) that no index names (left by an "
                            "interrupted backup; nothing refers to them)")
    bad_blobs: dict[bytes, str] = {}
    if read_data:
        for pack in sorted(set(indexed) - set(bad_packs)):
            why = _read_pack(repo, pack, bad_blobs)
            if why:
                bad_packs[pack] = why
            if progress:
                progress(stored.get(pack, 0))
    result.counts = {"packs": len(stored), "index_objects": len(repo.index.known_objects()),
                     "blobs": repo.index.count()[0]}
    damaged = {f"pack {p[:16]}": why for p, why in bad_packs.items()}
    affects: dict[str, set[str]] = {}
    snap_problems: list[str] = []
    snapshots = repo.snapshots(snap_problems, from_store=True)
    for text in snap_problems:
        result.problems.append(Problem("snapshot", text))
    blame = _Blame(repo, bad_packs, bad_blobs, damaged)
    checked_leaves: dict[bytes, set[str]] = {}
    for snap in snapshots:
        for kind, name, stream in snap.streams():
            where = f"snapshot {snap.short_id} VM {snap.vm_name!r} {kind} {name!r}"
            for label in _check_stream(blame, stream, checked_leaves):
                affects.setdefault(label, set()).add(where)
    result.counts["snapshots"] = len(snapshots)
    for label, why in damaged.items():
        result.problems.append(Problem(label, why, sorted(affects.get(label, ()))))
    return result


def _read_pack(repo: Repository, pack: str, bad_blobs: dict[bytes, str]) -> str | None:
    """Why the pack is damaged (None if sound); damaged blobs go to ``bad_blobs``."""
    try:
        data = repo.backend.get("data", pack)
    except (MissingObjectError, RepositoryError) as e:
        return str(e)
    if object_name(data) != pack:
        damaged = "its bytes do not match its name"
    else:
        damaged = None
    try:
        entries = {e.id: e for e in read_header(repo.keys, data, pack)}
    except IntegrityError as e:
        entries = {}
        damaged = damaged or e.message
    for e in repo.index.blobs_of(pack):
        try:
            blob = repo.keys.unseal(data[e.offset:e.offset + e.length], e.id, "blob")
            repo.keys.check_blob(e.id, blob, "blob")
            if entries and e.id not in entries:
                raise IntegrityError("not in the pack's header")
        except IntegrityError as err:
            bad_blobs[e.id] = f"pack {pack[:16]} @ {e.offset:#x}: {err.message}"
    if any(b.startswith(f"pack {pack[:16]}") for b in bad_blobs.values()):
        damaged = damaged or "blobs fail authentication"
    return damaged


class _Blame:
    """Finds the object to blame when a blob cannot be used, and records it as damaged."""

    def __init__(self, repo: Repository, bad_packs: dict[str, str],
                 bad_blobs: dict[bytes, str], damaged: dict[str, str]):
        self.repo, self.bad_packs, self.bad_blobs = repo, bad_packs, bad_blobs
        self.damaged = damaged

    def __call__(self, blob_id: bytes, kind: str, error: str | None = None) -> str | None:
        where = self.repo.index.lookup(blob_id)
        label = f"{kind} {blob_id.hex()[:16]}"
        if where is None:
            why = "not in any index (its pack or index object is lost)"
        elif where[0] in self.bad_packs:
            return f"pack {where[0][:16]}"
        elif blob_id in self.bad_blobs:
            why = self.bad_blobs[blob_id]
        elif error:
            why = error
        else:
            return None
        self.damaged.setdefault(label, why)
        return label


def _check_stream(blame: _Blame, stream: Stream, checked: dict[bytes, set[str]]) -> set[str]:
    """Labels of the damaged objects this stream depends on."""
    cells = cell_count(stream.size, stream.cell_size)
    if len(stream.leaves) != -(-cells // LEAF_CELLS):
        label = f"manifest of {stream.size} bytes"
        blame.damaged.setdefault(label, f"{len(stream.leaves)} leaves for {cells} cells")
        return {label}
    found: set[str] = set()
    for i, leaf_hex in enumerate(stream.leaves):
        leaf_id = bytes.fromhex(leaf_hex)
        if leaf_id not in checked:
            mine: set[str] = set()
            try:
                raw = blame.repo.load_blob(leaf_id, cache=False)
                chunks = [c for kind, _, c in decode_leaf(raw, leaf_cells(i, cells), "leaf")
                          if kind is Alloc.DATA]
            except RepositoryError as e:  # IntegrityError and missing objects too
                mine.add(blame(leaf_id, "leaf", e.message) or f"leaf {leaf_hex[:16]}")
                chunks = []
            for chunk_id in chunks:
                if label := blame(chunk_id, "blob"):
                    mine.add(label)
            checked[leaf_id] = mine
        found |= checked[leaf_id]
    return found
