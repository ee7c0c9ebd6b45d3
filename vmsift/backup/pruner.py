"""Prune: delete what no snapshot uses, repacking partly used packs; crash-safe.

1. Mark: every blob a snapshot in the store uses (manifest leaves and the chunks they name)
   goes into a table of the index cache, rebuilt from the store first.
2. Plan: packs with no used blob are dropped; partly used packs are repacked, the most unused
   first, until what stays unused is at most ``max_unused`` of the repository.
3. Repack: the used blobs of those packs are read (verified) and written into new packs
   with an index object of their own.
4. A new index for everything kept is stored, then the old index objects are deleted, then
   the packs no longer needed, then the temporaries killed writers left (never listed).

A kill at any moment leaves only extra objects: before 4's deletions every pack the old
index names still exists, and after them every blob a snapshot uses is in a pack the new
index names. The caller holds an exclusive lock, so no backup adds blobs meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import RepositoryError
from ..source import Alloc
from .chunker import cell_count
from .manifest import decode_leaf, leaf_cells
from .pack import PackEntry
from .repository import Repository

INDEX_PACKS = 256  # packs per index object written by prune


@dataclass
class PruneResult:
    packs_deleted: int = 0
    packs_repacked: int = 0
    packs_written: int = 0
    bytes_freed: int = 0
    leftovers_freed: int = 0
    unused_before: int = 0
    unused_after: int = 0
    total_before: int = 0
    dry_run: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _mark(repo: Repository) -> None:
    repo.index.clear_used()
    seen_leaves: set[str] = set()
    for snap in repo.snapshots(from_store=True):
        for _, _, stream in snap.streams():
            cells = cell_count(stream.size, stream.cell_size)
            for i, leaf in enumerate(stream.leaves):
                if leaf in seen_leaves:
                    continue
                seen_leaves.add(leaf)
                leaf_id = bytes.fromhex(leaf)
                raw = repo.load_blob(leaf_id, cache=False)  # damaged: prune stops, unchanged
                ids = [leaf_id] + [c for kind, _, c in decode_leaf(
                    raw, leaf_cells(i, cells), f"leaf {leaf[:16]}") if kind is Alloc.DATA]
                repo.index.mark_used(ids)


def prune(repo: Repository, max_unused: float = 0.05, dry_run: bool = False,
          progress: Callable[[str], None] | None = None) -> PruneResult:
    """Prune ``repo`` (see the module docstring); ``max_unused`` is a fraction."""
    from .archiver import BlobWriter

    say = progress or (lambda text: None)
    result = PruneResult(dry_run=dry_run)
    repo.index.reset()
    bad = repo.sync_index()
    if bad:
        raise RepositoryError(f"{len(bad)} index object(s) are damaged; run `vmsift check` "
                              "and repair before pruning", source=repo.location)
    stored = dict(repo.backend.list("data"))
    say("marking the blobs snapshots use")
    _mark(repo)
    usage = repo.index.pack_usage()
    missing = [p for p in usage if p not in stored]
    if missing:
        raise RepositoryError(f"{len(missing)} pack(s) the index names are missing; run "
                              "`vmsift check` first", source=repo.location)
    orphans = [p for p in stored if p not in usage]  # left by interrupted backups
    result.total_before = sum(stored.values())
    result.unused_before = sum(u for _, u in usage.values()) + sum(stored[p] for p in orphans)
    drop = [p for p, (used, _) in usage.items() if used == 0] + orphans
    partly = sorted((p for p, (used, unused) in usage.items() if used and unused),
                    key=lambda p: usage[p][1], reverse=True)
    unused_left = sum(usage[p][1] for p in partly)
    limit = max_unused * (result.total_before - sum(stored[p] for p in drop))
    repack = []
    for p in partly:
        if unused_left <= limit:
            break
        repack.append(p)
        unused_left -= usage[p][1]
    result.unused_after = unused_left
    result.packs_deleted, result.packs_repacked = len(drop), len(repack)
    result.bytes_freed = sum(stored[p] for p in drop) + sum(usage[p][1] for p in repack)
    if dry_run:
        return result
    # 3. repack: used blobs of the chosen packs into new packs (indexed on their own)
    if repack:
        say(f"repacking {len(repack)} pack(s)")
        writer = BlobWriter(repo)
        try:
            for pack in repack:
                for e in repo.index.blobs_of(pack):
                    if repo.index.is_used(e.id):
                        data = repo.load_blob(e.id, cache=False)  # verified
                        writer.add(e.type, e.id, repo.keys.seal(data, e.id), e.raw_length)
            writer.finish()
        except BaseException:
            writer.abort()
            raise
        result.packs_written = writer.packs_written
    # 4. the new index, then deletions
    gone = set(drop) | set(repack)
    old_objects = repo.index.known_objects()
    # every blob of a kept pack stays indexed, used or not: a later prune still counts it
    keep: dict[str, list[PackEntry]] = {
        pack: repo.index.blobs_of(pack)
        for pack in sorted({p for p, _ in repo.index.packs()} - gone)}
    say("writing the new index")
    written = set()
    names = sorted(keep)
    for i in range(0, len(names), INDEX_PACKS):
        written.add(repo.write_index({n: keep[n] for n in names[i:i + INDEX_PACKS]}))
    for name in sorted(old_objects - written):
        repo.backend.delete("index", name)
    say(f"deleting {len(gone)} pack(s)")
    for pack in sorted(gone):
        repo.backend.delete("data", pack)
    for kind in ("data", "index", "snapshots", "keys"):  # locks/: see lock.LEFTOVER_AGE
        result.leftovers_freed += repo.backend.remove_leftovers(kind)
    repo.index.reset()
    repo.sync_index()
    return result
