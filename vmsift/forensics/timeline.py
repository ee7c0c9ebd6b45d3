"""`vmsift timeline`: one sorted list of what happened on a datastore or to a VM.

Sources: the times of every file (VMFS / OCFS2 inodes, or the host for folders: mtime, atime,
ctime; OCFS2 dtime of recovered inodes), deleted directory entries the volume readers find,
snapshot creation times of ``.vmsd`` files, ``vmware*.log`` events (power on/off, snapshots,
disk opens, VMware Tools, errors), ``.vmsn`` / ``.vmss`` checkpoint files, and the volume's
cluster facts: VMFS heartbeats and lock holders (no wall-clock time on disk: listed untimed,
after the timed events), OCFS2 heartbeat blocks (their sequence is the node's clock, in
seconds) and orphans.

An `Event` is (time, source, what, detail): ``what`` is the MACB letters of file times (as
mactime writes them, ``m.c.``) or an event type. Damage never ends the run: what cannot be
read is a `Problem`, and the rest is kept. `bodyfile` writes the TSK 3.x body format.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import stat as stat_mod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..datastore.volume import DirEntry, FileStat, FileType
from ..errors import Problem, VmsiftError
from ..formats import vmlog, vmsd as vmsd_mod, vmsn as vmsn_mod
from .target import Target

MAX_VMSD = vmsd_mod.MAX_SIZE
_MACB = (("mtime", "m"), ("atime", "a"), ("ctime", "c"), ("crtime", "b"))


@dataclass
class Event:
    time: float | None          # POSIX seconds (UTC); None: the fact has no time on disk
    source: str                 # the file (or volume) the fact comes from, as shown
    what: str                   # MACB letters for file times, else an event type
    detail: str = ""

    @property
    def iso(self) -> str | None:
        return iso_time(self.time)

    @property
    def is_file_time(self) -> bool:
        """A time of a file's own record (``what`` is its MACB letters)."""
        return len(self.what) == 4 and set(self.what) <= set("macb.")

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time, "time_iso": self.iso, "source": self.source,
                "what": self.what, "detail": self.detail}


@dataclass
class FileTimes:
    """One file's record, as a bodyfile line holds it."""

    name: str
    inode: int | str | None
    st_mode: int
    uid: int | None
    gid: int | None
    size: int
    atime: float | None = None
    mtime: float | None = None
    ctime: float | None = None
    crtime: float | None = None
    deleted: bool = False


@dataclass
class Timeline:
    events: list[Event] = field(default_factory=list)
    files: list[FileTimes] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def sort(self) -> None:
        """Timed events by time, then the untimed ones (by source)."""
        self.events.sort(key=lambda e: (e.time is None, e.time or 0, e.source, e.what))


def iso_time(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    try:
        when = dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    return when.isoformat(timespec="microseconds" if when.microsecond else "seconds"
                          ).replace("+00:00", "Z")


def _valid(seconds: float | None) -> float | None:
    """A time worth placing: positive and one Python can write as a date."""
    return seconds if seconds and seconds > 0 and iso_time(seconds) else None


def macb_events(f: FileTimes) -> list[Event]:
    """One event per distinct time of a file, its letters in MACB order (``m.c.``)."""
    times: dict[float, set[str]] = {}
    for attr, letter in _MACB:
        if (t := _valid(getattr(f, attr))) is not None:
            times.setdefault(t, set()).add(letter)
    detail = f"inode {f.inode}, {f.size} bytes" + (", deleted" if f.deleted else "")
    return [Event(t, f.name, "".join(c if c in letters else "." for c in "macb"), detail)
            for t, letters in times.items()]


# --- collection ------------------------------------------------------------------------------

def collect(target: Target) -> Timeline:
    """Everything the target tells, sorted."""
    tl = Timeline()
    volume = target.volume
    for folder, entries in volume.walk(target.scope, deleted=True, problems=tl.problems):
        if folder == target.scope:
            _file(tl, target, folder, None)
        for entry in entries:
            _file(tl, target, posixpath.join(folder, entry.name), entry)
    if target.config is None:
        _volume_facts(tl, target)
    tl.sort()
    return tl


def _file(tl: Timeline, target: Target, path: str, entry: DirEntry | None) -> None:
    shown = target.shown(path)
    if entry is not None and entry.deleted:
        _deleted(tl, target, path, entry)
        return
    try:
        st = target.volume.lookup(path)
    except VmsiftError as e:
        tl.problems.append(Problem.of(e, f"{shown}: times not read: "))
        return
    _add_file(tl, shown, st)
    if st.type is FileType.FILE:
        _content(tl, target, path, st)


def _add_file(tl: Timeline, shown: str, st: FileStat, deleted: bool = False,
              dtime: float | None = None) -> None:
    f = FileTimes(shown + (" (deleted)" if deleted else ""), st.inode, st.st_mode, st.uid,
                  st.gid, st.size, st.atime, st.mtime, st.ctime, deleted=deleted)
    tl.files.append(f)
    tl.events += macb_events(f)
    if (t := _valid(dtime)) is not None:
        tl.events.append(Event(t, f.name, "deleted", f"inode {st.inode} dtime"))


def _inode_reader(target: Target):
    """``stat_inode(number)`` of volumes that can stat an inode no path leads to (OCFS2:
    recovered entries, orphans), else None."""
    return getattr(target.volume, "stat_inode", None)


def _deleted(tl: Timeline, target: Target, path: str, entry: DirEntry) -> None:
    """A recovered directory entry: timed by its inode where the reader can still stat it
    (OCFS2 keeps the inode of an entry whose number survives), else untimed."""
    shown = target.shown(path)
    stat_inode = _inode_reader(target)
    if stat_inode is not None and isinstance(entry.inode, int) and entry.inode:
        try:
            st = stat_inode(entry.inode)
            _add_file(tl, shown, st, True, st.extra.get("dtime"))
            return
        except VmsiftError as e:
            tl.problems.append(Problem.of(e, f"{shown} (deleted): inode not read: "))
    inode = f"inode {entry.inode}" if entry.inode else "no inode"
    tl.events.append(Event(None, shown, "deleted entry", f"{entry.type.value}, {inode}"))


def _content(tl: Timeline, target: Target, path: str, st: FileStat) -> None:
    """Events inside the VM files that carry their own times."""
    name = posixpath.basename(path).lower()
    reader = (_vmsd_events if name.endswith(".vmsd") else
              _log_events if name.startswith("vmware") and name.endswith(".log") else
              _checkpoint_events if name.endswith((".vmsn", ".vmss")) else None)
    if reader is None:
        return
    shown = target.shown(path)
    try:
        with target.volume.open(path) as src:
            reader(tl, shown, src, st)
    except VmsiftError as e:
        tl.problems.append(Problem.of(e, f"{shown}: events not read: "))


def _vmsd_events(tl: Timeline, shown: str, src, st: FileStat) -> None:
    if src.size == 0:
        return  # ESXi leaves empty .vmsd files
    db = vmsd_mod.parse(src.read_all(MAX_VMSD, "vmsd file"), shown)
    tl.problems += [Problem(f"{shown}: {w}") for w in db.warnings]
    for snap in db.snapshots:
        what = f"snapshot {snap.uid} {snap.display_name!r}"
        t = _valid(None if snap.create_time_us is None else snap.create_time_us / 1e6)
        written = any(k in snap.options for k in ("createtimehigh", "createtimelow"))
        if t is None and written:
            tl.problems.append(Problem(f"{shown}: {what} has an invalid creation time "
                                       f"(createTimeHigh/Low); listed untimed"))
        disks = ", ".join(f"{d.node}={d.filename}" for d in snap.disks)
        tl.events.append(Event(t, shown, "snapshot created",
                               f"{what}, state {snap.filename or '-'}, disks {disks or '-'}"))


def _when(ts: dt.datetime | None) -> float | None:
    return None if ts is None else ts.timestamp()


def _log_events(tl: Timeline, shown: str, src, st: FileStat) -> None:
    s = vmlog.summarize(src)
    tl.problems += [Problem(f"{shown}: {w}") for w in s.warnings]
    for m in s.milestones:
        tl.events.append(Event(_when(m.timestamp), shown, m.name,
                               f"line {m.line}" + (f": {m.detail}" if m.detail else "")))
    for d in s.disks:
        if d.source == "DISK: OPEN":
            tl.events.append(Event(_when(d.timestamp), shown, "disk_open",
                                   f"line {d.line}: {d.device or '-'} {d.path} {d.mode or ''}"
                                   .rstrip()))
    for m in s.errors:
        tl.events.append(Event(_when(m.timestamp), shown, "error",
                               f"line {m.line} [{m.name}] {m.detail}"))


def _checkpoint_events(tl: Timeline, shown: str, src, st: FileStat) -> None:
    """A checkpoint file holds no time of its own: its writing is the file's mtime."""
    cp = vmsn_mod.read(src, strict=False)
    tl.problems += [Problem(f"{shown}: {w}") for w in cp.warnings]
    state = vmsn_mod.checkpoint_state(cp, shown)
    tl.events.append(Event(_valid(st.mtime), shown, f"{state} state written",
                           f"{cp.variant}, {len(cp.groups)} groups"))


def _volume_facts(tl: Timeline, target: Target) -> None:
    """Cluster facts from the volume's metadata: heartbeats, locks, orphans."""
    try:
        report = target.volume.info()
    except VmsiftError as e:
        tl.problems.append(Problem.of(e, "volume metadata not read: "))
        return
    data, name = report.data, target.source
    tl.problems += [Problem(str(w)) for w in report.warnings]
    fs = data.get("fs") or {}
    if _valid(fs.get("creation_time")):
        tl.events.append(Event(fs["creation_time"], name, "volume created",
                               f"VMFS {fs.get('version')} {fs.get('label')!r} {fs.get('uuid')}"))
    for hb in data.get("heartbeats") or []:
        tl.events.append(Event(None, name, "heartbeat",
                               f"slot {hb['slot']} {hb['state']}: host {hb['host_uuid']} "
                               f"ip {hb['ip']} generation {hb['generation']} uptime "
                               f"{hb['uptime_us'] // 1_000_000} s"))
    for lk in data.get("locks") or []:
        holders = ", ".join(h["host_uuid"] for h in lk.get("holders", [])) or \
            lk.get("heartbeat_host") or lk.get("owner") or "-"
        tl.events.append(Event(None, target.shown(lk["path"].lstrip("/")), "lock",
                               f"{lk['mode']} by {holders} "
                               f"({'live' if lk['live'] else 'stale'} heartbeat)"))
    for node in (data.get("heartbeat") or {}).get("nodes") or []:
        tl.events.append(Event(_valid(node["seq"]), name, "heartbeat",
                               f"node {node['node']} generation {node['generation']:#x}"
                               + ("" if node["checksum_ok"] else " (bad checksum)")))
    for slot in data.get("slot_map") or []:
        if slot.get("valid"):
            tl.events.append(Event(None, name, "slot", f"slot {slot['slot']} held by node "
                                                       f"{slot['node']}"))
    stat_inode = _inode_reader(target)
    for o in data.get("orphans") or []:
        tl.events.append(Event(_valid(o.get("dtime")), name, "orphan",
                               f"slot {o['slot']} inode {o['inode']} {o['name']!r} "
                               f"{o.get('size', '?')} bytes (unlinked while open)"))
        if stat_inode is not None and "error" not in o:  # the orphan's own times
            path = target.shown(f"//orphan_dir:{o['slot']:04d}/{o['name']}")
            try:
                _add_file(tl, path, stat_inode(o["inode"]), True, o.get("dtime"))
            except VmsiftError as e:
                tl.problems.append(Problem.of(e, f"{path}: times not read: "))


# --- output ----------------------------------------------------------------------------------

def mode_string(st_mode: int) -> str:
    """TSK's mode_as_string: the type letter, a slash, then ls's letters (``r/rrw-r--r--``)."""
    if not st_mode:
        return "-/----------"
    text = stat_mod.filemode(st_mode)
    kind = "r" if text[0] == "-" else text[0]
    return f"{kind}/{kind}{text[1:]}"


def _body_time(t: float | None) -> int:
    return int(t) if _valid(t) else 0


def _body_name(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def bodyfile(tl: Timeline) -> Iterator[str]:
    """TSK 3.x body lines: MD5|name|inode|mode_as_string|UID|GID|size|atime|mtime|ctime|crtime.
    Files carry their own times; every other timed event is a line of its own named
    ``source: what detail`` with its time in all four fields (mactime shows ``macb``).
    Untimed facts have no line."""
    for f in tl.files:
        yield "|".join(["0", _body_name(f.name), str(f.inode or 0), mode_string(f.st_mode),
                        str(f.uid or 0), str(f.gid or 0), str(f.size),
                        *(str(_body_time(getattr(f, a))) for a in
                          ("atime", "mtime", "ctime", "crtime"))])
    for e in tl.events:
        if e.time is None or e.is_file_time:
            continue  # untimed, or a file time (written above)
        yield "|".join(["0", _body_name(f"{e.source}: {e.what} {e.detail}"), "0",
                        "-/----------", "0", "0", "0", *[str(int(e.time))] * 4])
