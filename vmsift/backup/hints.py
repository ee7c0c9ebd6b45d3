"""Change hints: which parts of a disk may differ from its previous backup, best first.

1. ``ctk``: VMware change tracking. The ``-ctk.vmdk`` beside the disk keeps the change
   sequence of each block's last write; when its change id continues the one recorded by the
   previous backup (same tracking uuid, sequence not lower, same capacity), only the blocks
   written after that sequence are read.
2. ``chain``: the previous backup saw the disk at a link that is now a parent in its chain
   (a snapshot was taken since): only what the deltas above it hold is read.
3. ``identity``: every file of the disk has the size, mtime, volume file id and CID it had:
   nothing is read, the previous chunk list is kept.
4. ``none``: everything is read and deduplicated against the repository.

A hint is checked where it can be (an older CTK, a chain whose lower links changed, a CTK
that says nothing changed while the files did): it is then passed over for the next, and
the reason is kept in the notes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..datastore.disk import VirtualDisk
from ..datastore.volume import Volume
from ..errors import VmsiftError
from ..formats import ctk as ctk_mod
from ..source import Alloc, ByteSource
from .snapshot import DiskEntry

Ranges = list[tuple[int, int]]
_IDENTITY_KEYS = ("path", "role", "cid", "long_content_id", "size", "mtime", "file_id")


@dataclass
class Hint:
    kind: str                    # ctk | chain | identity | none
    changed: Ranges | None       # byte ranges to read; None: all of it
    notes: list[str] = field(default_factory=list)
    # every byte of ``changed`` is DATA or ZERO in the disk (what a chain's deltas hold), so
    # no changed cell is a HOLE: each can be read without asking the disk's map
    allocated: bool = False


def _files(identity: list[dict[str, Any]]) -> list[tuple]:
    """The disk's own files (not its change-tracking file), as comparable tuples."""
    return [tuple(i.get(k) for k in _IDENTITY_KEYS) for i in identity
            if i.get("role") != "change tracking"]


def _ctk(volume: Volume | None, facts: dict, identity: list, disk: ByteSource,
         parent: DiskEntry, notes: list[str]) -> Ranges | None:
    now, before = facts.get("change_tracking"), parent.facts.get("change_tracking")
    if not now:
        return None
    if "error" in now or volume is None:
        notes.append(f"change tracking: unreadable ({now.get('error')})")
        return None
    if not before or "change_id" not in before:
        notes.append("change tracking: the previous backup recorded no change id")
        return None
    uuid, seq = ctk_mod.parse_change_id(before["change_id"])
    try:
        with volume.open(now["path"]) as src:
            c = ctk_mod.read(src, strict=False)
            if c.change_uuid != uuid:
                notes.append("change tracking was reset since the previous backup (new id)")
                return None
            if c.change_seq < seq:
                notes.append(f"change tracking file is older than the previous backup "
                             f"(sequence {c.change_seq} < {seq})")
                return None
            if c.disk_size != disk.size or not c.layout_consistent:
                notes.append("change tracking file does not describe this disk (capacity or "
                             "table layout)")
                return None
            changed = ctk_mod.changed_since(c, seq)
    except VmsiftError as e:
        notes.append(f"change tracking: {e}")
        return None
    if not changed and _files(identity) != _files(parent.identity):
        notes.append("change tracking says nothing changed, but the disk's files did")
        return None
    return changed


def _chain(disk: ByteSource, identity: list, parent: DiskEntry, notes: list[str]
           ) -> Ranges | None:
    now = [(i["path"], i.get("cid")) for i in identity if i.get("role") == "descriptor"]
    before = [(i["path"], i.get("cid")) for i in parent.identity if i.get("role") == "descriptor"]
    above = len(now) - len(before)
    if not isinstance(disk, VirtualDisk) or not before or above <= 0:
        return None
    if now[above:] != before:
        notes.append("chain: the previous backup's disk is not a parent of the current one")
        return None
    unchanged = set(_files(identity))
    if any(f not in unchanged for f in _files(parent.identity)):
        notes.append("chain: a file below the new deltas changed since the previous backup")
        return None
    changed: Ranges = []
    for link in disk.chain[:above]:
        changed += [(r.offset, r.length) for r in link.source.extents()
                    if r.kind is not Alloc.HOLE]
    return changed


def choose(volume: Volume | None, facts: dict, identity: list, disk: ByteSource,
           parent: DiskEntry | None, cell_size: int) -> Hint:
    """The best hint for ``disk`` (now described by ``facts`` and ``identity``) against
    ``parent``, its entry in the previous backup."""
    if parent is None:
        return Hint("none", None, ["no earlier backup of this disk"])
    if parent.size != disk.size or parent.stream.cell_size != cell_size:
        return Hint("none", None, ["the disk's size (or the cell size) changed"])
    notes: list[str] = []
    changed = _ctk(volume, facts, identity, disk, parent, notes)
    if changed is not None:
        return Hint("ctk", changed, notes)
    changed = _chain(disk, identity, parent, notes)
    if changed is not None:
        return Hint("chain", changed, notes, allocated=True)
    if _files(identity) == _files(parent.identity):
        return Hint("identity", [], notes)
    notes.append("the disk's files changed and no other hint applies: read in full")
    return Hint("none", None, notes)
