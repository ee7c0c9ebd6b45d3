"""Snapshots: one VM (or one bare disk) at one point in time.

A snapshot is a sealed JSON document (aad ``snapshot``) in ``snapshots/<name>``, named by
the blake3 of its stored bytes; its short id is the first 8 hex digits. It names the VM, every
disk as a stream (size, cell size, manifest leaves) with the facts needed to rebuild it, and
every small file as a stream; see ``docs/repository.md`` for every field.
"""

from __future__ import annotations

import datetime as dt
import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

from ..errors import IntegrityError, RepositoryError
from .crypto import Keys

SNAPSHOT_AAD = b"snapshot"
VERSION = 1


@dataclass
class Stream:
    """A disk or file as stored: ``size`` bytes in cells of ``cell_size``, listed by the
    manifest leaves ``leaves`` (hex blob ids)."""

    size: int
    cell_size: int
    leaves: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "cell_size": self.cell_size, "leaves": self.leaves}


@dataclass
class LinkEntry:
    """One file of a disk's snapshot tree (``backup --chain``): the disk as it reads with
    this file on top of its parents."""

    path: str                       # volume path of the file
    name: str                       # relative to the VM's folder: the name it restores under
    parent: str | None              # volume path of the parent file; None for the base
    cid: str | None                 # the file's CID (8 hex digits)
    snapshots: list[int]            # uids of the .vmsd snapshots whose disk this file holds
    stream: Stream
    identity: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "name": self.name, "parent": self.parent, "cid": self.cid,
                "snapshots": self.snapshots, **self.stream.to_dict(),
                "identity": self.identity, "stats": self.stats}


@dataclass
class DiskEntry:
    name: str                       # the name it restores under (base disk file name)
    device: str | None              # scsi0:0, xvda ...
    path: str | None                # volume path of the disk (top of its chain) at backup
    stream: Stream
    facts: dict[str, Any] = field(default_factory=dict)
    identity: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    links: list[LinkEntry] = field(default_factory=list)  # the snapshot tree, parents first

    @property
    def size(self) -> int:
        return self.stream.size

    def link(self, wanted: str) -> LinkEntry:
        """A link of the tree by volume path, name, or .vmsd snapshot uid or display name."""
        for link in self.links:
            if wanted in (link.path, link.name) or (wanted.isdigit() and
                                                     int(wanted) in link.snapshots):
                return link
        raise RepositoryError(f"disk {self.name} has no snapshot-tree file or snapshot "
                              f"{wanted!r}" + ("" if self.links else
                                               " (it was not backed up with --chain)"))

    def at(self, wanted: str) -> DiskEntry:
        """The disk as it was at a .vmsd snapshot (uid) or with a tree file (path or name)
        on top, restorable like the disk itself (under the name of that file)."""
        link = self.link(wanted)
        return DiskEntry(posixpath.basename(link.name), self.device, link.path, link.stream,
                         {**self.facts, "cid": link.cid}, link.identity)

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "device": self.device, "path": self.path,
               **self.stream.to_dict(), "facts": self.facts, "identity": self.identity,
               "stats": self.stats}
        if self.links:
            out["links"] = [link.to_dict() for link in self.links]
        return out


@dataclass
class FileEntry:
    name: str                       # path relative to the VM's folder
    stream: Stream
    mode: int | None = None
    mtime: float | None = None

    @property
    def size(self) -> int:
        return self.stream.size

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.stream.to_dict(), "mode": self.mode,
                "mtime": self.mtime}


@dataclass
class Snapshot:
    time: dt.datetime
    host: str
    source: str
    vm: dict[str, Any]              # kind, name, uuid, config, folder
    disks: list[DiskEntry]
    files: list[FileEntry]
    tags: list[str] = field(default_factory=list)
    run: str | None = None          # shared by the snapshots of one `vmsift backup`
    problems: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    id: str = ""                    # the object name, once stored or loaded

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @property
    def vm_name(self) -> str:
        return self.vm.get("name") or "?"

    def disk(self, wanted: str) -> DiskEntry:
        """A disk by name, device id or original path."""
        for d in self.disks:
            if wanted in (d.name, d.device, d.path):
                return d
        names = ", ".join(d.name for d in self.disks) or "none"
        raise RepositoryError(f"snapshot {self.short_id} has no disk {wanted!r} (disks: "
                              f"{names})")

    def streams(self) -> list[tuple[str, str, Stream]]:
        """(kind, label, stream) of every stream the snapshot names: its disks, the files of
        their snapshot trees, its small files."""
        out = []
        for d in self.disks:
            out.append(("disk", d.name, d.stream))
            out += [("link", f"{d.name}@{link.name}", link.stream) for link in d.links]
        return out + [("file", f.name, f.stream) for f in self.files]

    def file(self, wanted: str) -> FileEntry:
        for f in self.files:
            if f.name == wanted:
                return f
        names = ", ".join(f.name for f in self.files) or "none"
        raise RepositoryError(f"snapshot {self.short_id} has no file {wanted!r} (files: "
                              f"{names})")

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, "time": self.time.isoformat(), "host": self.host,
                "source": self.source, "tags": self.tags, "run": self.run, "vm": self.vm,
                "disks": [d.to_dict() for d in self.disks],
                "files": [f.to_dict() for f in self.files], "problems": self.problems,
                "stats": self.stats}

    def encode(self, keys: Keys) -> bytes:
        return keys.seal(json.dumps(self.to_dict(), separators=(",", ":")).encode(),
                         SNAPSHOT_AAD)


def _stream(d: dict[str, Any]) -> Stream:
    return Stream(int(d["size"]), int(d["cell_size"]), list(d["leaves"]))


def _link(d: dict[str, Any]) -> LinkEntry:
    return LinkEntry(d["path"], d["name"], d.get("parent"), d.get("cid"),
                     [int(u) for u in d.get("snapshots", [])], _stream(d),
                     d.get("identity", []), d.get("stats", {}))


def decode(keys: Keys, stored: bytes, name: str) -> Snapshot:
    raw = keys.unseal(stored, SNAPSHOT_AAD, f"snapshot {name[:8]}")
    try:
        d = json.loads(raw)
        if d.get("version") != VERSION:
            raise RepositoryError(f"snapshot {name[:8]} has format version {d.get('version')}"
                                  f"; this vmsift reads {VERSION}")
        snap = Snapshot(
            time=dt.datetime.fromisoformat(d["time"]), host=d["host"], source=d["source"],
            vm=d["vm"], tags=d.get("tags", []), run=d.get("run"),
            problems=d.get("problems", []), stats=d.get("stats", {}),
            disks=[DiskEntry(x["name"], x.get("device"), x.get("path"), _stream(x),
                             x.get("facts", {}), x.get("identity", []), x.get("stats", {}),
                             [_link(y) for y in x.get("links", [])])
                   for x in d["disks"]],
            files=[FileEntry(x["name"], _stream(x), x.get("mode"), x.get("mtime"))
                   for x in d["files"]])
    except (ValueError, KeyError, TypeError) as e:
        raise IntegrityError(f"snapshot {name[:8]} is not a valid snapshot document: {e}") \
            from None
    snap.id = name
    return snap


def select(snapshots: list[Snapshot], spec: str, vm: str | None = None) -> Snapshot:
    """A snapshot by id prefix, ``latest`` or ``latest:VMNAME`` (optionally of ``vm``)."""
    pool = [s for s in snapshots if vm is None or s.vm_name == vm]
    if spec == "latest" or spec.startswith("latest:"):
        name = spec.partition(":")[2] or None
        pool = [s for s in pool if name is None or s.vm_name == name]
        if not pool:
            raise RepositoryError(f"no snapshot matches {spec!r}" + (f" of VM {vm!r}" if vm else ""))
        return max(pool, key=lambda s: (s.time, s.id))
    matches = [s for s in pool if s.id.startswith(spec.lower())]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RepositoryError(f"no snapshot {spec!r}" + (f" of VM {vm!r}" if vm else ""))
    raise RepositoryError(f"{spec!r} is the start of {len(matches)} snapshot ids; give more")
