"""VMware .vmsd snapshot database: the snapshot tree of one VM.

Same dictionary syntax as .vmx. ``snapshot<N>.`` keys describe one snapshot each, where N
is a slot index, not the uid; ``parent`` names the parent's uid. The creation time is
split into ``createTimeHigh`` and ``createTimeLow`` (the low half written as a *signed*
32-bit number), microseconds since the Unix epoch. ``disk<D>.fileName`` is the disk file
that was current when the snapshot was taken.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from ..report import Report, Table
from ..source import ByteSource
from . import dictfile
from .vmx import TELLTALE, dictionary_data, parse_bool, parse_int

KIND = "vmsd"
EXTENSIONS = (".vmsd",)  # ESXi leaves empty .vmsd files
MAX_SIZE = 16 * 1024 * 1024
MAX_INDEX = 100_000  # far above VMware's limit of 32 snapshots per VM

_VMSD_KEYS = {"snapshot.lastuid", "snapshot.numsnapshots", "snapshot.current",
              "snapshot.needconsolidate"}
_SNAP_KEY = re.compile(r"^snapshot(\d+)\.(.+)$", re.I)
_DISK_KEY = re.compile(r"^disk(\d+)\.(.+)$", re.I)


def create_time(high: str | None, low: str | None) -> int | None:
    """Microseconds since the epoch from the two 32-bit halves (low may be negative)."""
    h, lo = parse_int(high), parse_int(low)
    if h is None or lo is None:
        return None
    return ((h & 0xFFFFFFFF) << 32) | (lo & 0xFFFFFFFF)


def iso_time(us: int | None) -> str | None:
    if us is None:
        return None
    try:
        t = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=us)
    except OverflowError:
        return None
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class SnapshotDisk:
    index: int
    node: str | None
    filename: str | None


@dataclass
class Snapshot:
    slot: int
    uid: int | None
    parent: int | None
    display_name: str | None
    description: str | None
    filename: str | None
    type: str | None
    create_time_us: int | None
    disks: list[SnapshotDisk] = field(default_factory=list)
    children: list[int] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)

    @property
    def create_time(self) -> str | None:
        return iso_time(self.create_time_us)

    def to_dict(self) -> dict[str, Any]:
        return {"slot": self.slot, "uid": self.uid, "parent": self.parent,
                "display_name": self.display_name, "description": self.description,
                "filename": self.filename, "type": self.type,
                "create_time": self.create_time, "create_time_us": self.create_time_us,
                "disks": [{"index": d.index, "node": d.node, "filename": d.filename}
                          for d in self.disks],
                "children": self.children}


@dataclass
class Vmsd:
    dictionary: dictfile.Dictionary
    snapshots: list[Snapshot]
    warnings: list[str]

    @property
    def current(self) -> int | None:
        return parse_int(self.dictionary.get("snapshot.current"))

    @property
    def last_uid(self) -> int | None:
        return parse_int(self.dictionary.get("snapshot.lastUID"))

    @property
    def num_snapshots(self) -> int | None:
        return parse_int(self.dictionary.get("snapshot.numSnapshots"))

    def by_uid(self, uid: int) -> Snapshot | None:
        return next((s for s in self.snapshots if s.uid == uid), None)

    def roots(self) -> list[Snapshot]:
        uids = {s.uid for s in self.snapshots}
        return [s for s in self.snapshots if s.parent is None or s.parent not in uids]

    def walk(self) -> list[tuple[int, Snapshot]]:
        """(depth, snapshot) in tree order, each snapshot once even if parents loop."""
        out, seen = [], set()

        def visit(snap: Snapshot, depth: int) -> None:
            if snap.slot in seen:
                return
            seen.add(snap.slot)
            out.append((depth, snap))
            for uid in snap.children:
                child = self.by_uid(uid)
                if child:
                    visit(child, depth + 1)

        for root in self.roots():
            visit(root, 0)
        for snap in self.snapshots:  # members of a parent loop have no root
            visit(snap, 0)
        return out

    def path_to(self, uid: int) -> list[Snapshot]:
        """Snapshots from the root down to ``uid`` (stops at a loop)."""
        chain, seen = [], set()
        snap = self.by_uid(uid)
        while snap and snap.uid not in seen:
            seen.add(snap.uid)
            chain.append(snap)
            snap = self.by_uid(snap.parent) if snap.parent is not None else None
        return chain[::-1]

    def dump(self) -> bytes:
        return self.dictionary.dump()

    def to_dict(self) -> dict[str, Any]:
        return {"last_uid": self.last_uid, "num_snapshots": self.num_snapshots,
                "current": self.current,
                "need_consolidate": parse_bool(self.dictionary.get("snapshot.needConsolidate")),
                "mru": [parse_int(v) for k, v in self.dictionary.items()
                        if re.match(r"^snapshot\.mru\d+\.uid$", k, re.I)],
                "snapshots": [s.to_dict() for s in self.snapshots]}


def _build(d: dictfile.Dictionary) -> Vmsd:
    slots: dict[int, dict[str, str]] = {}
    warnings = list(d.warnings)
    for key, value in d.effective().items():
        m = _SNAP_KEY.match(key)
        if not m:
            continue
        slot = int(m[1])
        if slot > MAX_INDEX:
            warnings.append(f"snapshot slot {slot} is beyond any real .vmsd; ignored")
            continue
        slots.setdefault(slot, {})[m[2]] = value
    snapshots = []
    for slot in sorted(slots):
        opts = slots[slot]
        disks: dict[int, dict[str, str]] = {}
        for key, value in opts.items():
            if (m := _DISK_KEY.match(key)) and int(m[1]) <= MAX_INDEX:
                disks.setdefault(int(m[1]), {})[m[2]] = value
        snap = Snapshot(
            slot=slot, uid=parse_int(opts.get("uid")), parent=parse_int(opts.get("parent")),
            display_name=opts.get("displayname"), description=opts.get("description"),
            filename=opts.get("filename"), type=opts.get("type"),
            create_time_us=create_time(opts.get("createtimehigh"), opts.get("createtimelow")),
            disks=[SnapshotDisk(i, disks[i].get("node"), disks[i].get("filename"))
                   for i in sorted(disks)],
            options=opts)
        if snap.uid is None:
            warnings.append(f"snapshot{slot} has no valid uid")
        snapshots.append(snap)
    vmsd = Vmsd(d, snapshots, warnings)
    uids = [s.uid for s in snapshots if s.uid is not None]
    for uid in {u for u in uids if uids.count(u) > 1}:
        warnings.append(f"uid {uid} is used by more than one snapshot")
    for snap in snapshots:
        if snap.parent is None:
            continue
        parent = vmsd.by_uid(snap.parent)
        if parent is None:
            warnings.append(f"snapshot{snap.slot} (uid {snap.uid}) names missing parent uid "
                            f"{snap.parent}; shown as a root")
        elif snap.uid is not None and snap.uid not in parent.children:
            parent.children.append(snap.uid)
    for snap in snapshots:
        chain = vmsd.path_to(snap.uid) if snap.uid is not None else []
        if chain and chain[0].parent is not None and vmsd.by_uid(chain[0].parent):
            warnings.append(f"snapshot{snap.slot} (uid {snap.uid}) is in a parent loop")
    if vmsd.num_snapshots is not None and vmsd.num_snapshots != len(snapshots):
        warnings.append(f"snapshot.numSnapshots is {vmsd.num_snapshots} but "
                        f"{len(snapshots)} snapshots are described")
    if vmsd.current is not None and vmsd.by_uid(vmsd.current) is None:
        warnings.append(f"snapshot.current names uid {vmsd.current}, which is not described")
    return vmsd


def parse(data: bytes, source: str = "<bytes>") -> Vmsd:
    return _build(dictfile.parse(data, source))


def read(src: ByteSource) -> Vmsd:
    return parse(src.read_all(MAX_SIZE, "vmsd file"), src.name)


def sniff(head: bytes) -> bool:
    """Snapshot database keys, and none of the keys only a .vmx has (a .vmx may hold
    ``snapshot.action`` and the like)."""
    if not dictfile.looks_like(head, min_lines=1):
        return False
    keys = [k.lower() for k, _ in dictfile.parse(head).items()]
    return any(k in _VMSD_KEYS or _SNAP_KEY.match(k) for k in keys) and \
        not any(k in TELLTALE for k in keys)


def inspect(src: ByteSource) -> Report:
    vmsd = read(src)
    data = vmsd.to_dict()
    data["dictionary"] = dictionary_data(vmsd.dictionary)
    rows = []
    for depth, snap in vmsd.walk():
        mark = " (current)" if snap.uid == vmsd.current else ""
        rows.append(["  " * depth + (snap.display_name or "?") + mark, snap.uid, snap.parent,
                     snap.create_time, snap.filename,
                     ", ".join(f"{d.node}={d.filename}" for d in snap.disks)])
    fields = {"snapshots": len(vmsd.snapshots), "current uid": vmsd.current,
              "last uid": vmsd.last_uid}
    tree = Table("snapshot tree", ["name", "uid", "parent", "created", "state file", "disks"], rows)
    return Report(KIND, "VMware snapshot database (.vmsd)", data, fields, [tree], vmsd.warnings)
