"""Views: what a mount shows, as `vmsift.fuse.tree` nodes. No view knows about FUSE.

A datastore mount (`datastore_tree`) has two folders at its root, so no name of the volume
can clash with a view:

* ``files/``: the volume as it is: folders, files (sizes, times, modes, link counts; sparse
  files keep their holes and show the blocks their allocation map holds), symbolic links,
  raw device mapping files (their data is on a LUN: reads fail). With ``deleted``, each
  folder also lists the deleted entries the format keeps, as ``<name> (deleted)`` (names
  only: the formats keep no data for them).
* ``vms/<vm>/``: ``info.txt``, the VM's small files (configuration, snapshot database,
  NVRAM, logs: not its disks), ``current/`` and one folder per
  snapshot, each holding ``<disk>.raw`` (the disk flattened through its chain as it was then)
  and ``<disk>.p1``, ``<disk>.p2`` ... for each MBR or GPT partition of it.

A repository mount (`repository_tree`) has ``snapshots/<short id>/<vm>/`` with each disk as
``<disk>.raw`` and ``.pN`` and the VM's small files, ``by-time/<UTC time>`` and
``latest/<vm>`` (symbolic links to those); reads fetch the chunks they need.

Extended attributes ``user.vmsift.*`` tell what a file is (inode, allocation summary, CID,
chain, snapshot uid, raw device mapping, warnings); see docs/fuse.md.
"""

from __future__ import annotations

import datetime as dt
import json
import posixpath
import sys
from collections.abc import Callable, Iterator

from ..datastore.volume import DirEntry, FileStat, FileType, Volume
from ..errors import VmsiftError
from ..formats import partition
from ..source import Alloc, ByteSource, BytesSource, SliceSource, ZeroSource
from .tree import Attrs, Dir, File, Node, Symlink, Tree, unique_name


def warn(message: str) -> None:
    print(f"vmsift: warning: {message}", file=sys.stderr, flush=True)


def allocation_summary(opener: Callable[[], ByteSource]) -> str:
    """``data=<bytes> zero=<bytes> hole=<bytes> runs=<n>`` from a source's allocation map."""
    totals = {kind: 0 for kind in Alloc}
    runs = 0
    with opener() as src:
        for run in src.extents():
            totals[run.kind] += run.length
            runs += 1
    return " ".join(f"{kind.value}={n}" for kind, n in totals.items()) + f" runs={runs}"


def datastore_tree(volume: Volume, *, deleted: bool = False) -> Tree:
    """The tree of a datastore mount: ``files/`` and ``vms/``."""
    root = Dir()
    root.add("files", volume_folder(volume, "", volume.lookup(""), deleted))
    root.add("vms", Dir(lambda: vm_folders(volume)))
    return Tree(root, name=f"vmsift:{volume.name}")


# --- files/ --------------------------------------------------------------------------------

def _attrs(st: FileStat) -> Attrs:
    """Attributes from a volume's stat: write bits dropped, the owner may always read."""
    folder = st.type is FileType.DIR
    perm = (st.mode if st.mode is not None else 0o555) & 0o7555 | (0o500 if folder else 0o400)
    return Attrs(perm, st.nlink or (2 if folder else 1), None, None, st.atime or 0.0,
                 st.mtime or 0.0, st.ctime or 0.0)


def _stat_xattrs(volume: Volume, path: str, st: FileStat) -> dict:
    """``user.vmsift.inode`` now; the format's own facts (locks, flags, RDM mapping: the
    costly `Volume.stat`) when asked for."""
    out: dict = {"user.vmsift.stat": lambda: json.dumps(volume.stat(path).extra,
                                                       sort_keys=True, default=str)}
    if st.inode is not None:
        out["user.vmsift.inode"] = str(st.inode)
    if st.type is FileType.RDM:
        out["user.vmsift.rdm"] = lambda: json.dumps(volume.stat(path).extra.get("rdm"),
                                                    sort_keys=True, default=str)
    return out


def volume_folder(volume: Volume, path: str, st: FileStat, deleted: bool) -> Dir:
    return Dir(lambda: _folder_entries(volume, path, deleted), _attrs(st),
               _stat_xattrs(volume, path, st), st.size)


def _folder_entries(volume: Volume, path: str, deleted: bool) -> Iterator[tuple[str, Node]]:
    for entry in volume.listdir(path, deleted=deleted):
        full = posixpath.join(path, entry.name)
        if entry.deleted:
            yield f"{entry.name} (deleted)", _deleted_node(entry)
            continue
        try:
            node = volume_node(volume, full, volume.lookup(full), deleted)
        except VmsiftError as e:
            warn(f"{full}: left out of the mount: {e}")
            continue
        yield entry.name, node


def volume_node(volume: Volume, path: str, st: FileStat, deleted: bool = False) -> Node:
    """The node of one volume entry from its cheap `Volume.lookup` (a folder is filled when
    first listed)."""
    attrs, xattrs = _attrs(st), _stat_xattrs(volume, path, st)
    if st.type is FileType.DIR:
        return volume_folder(volume, path, st, deleted)
    if st.type is FileType.SYMLINK:
        return Symlink(st.symlink_target or volume.readlink(path), attrs, xattrs)

    def opener() -> ByteSource:
        return volume.open(path)

    if st.type is FileType.FILE:
        xattrs["user.vmsift.allocation"] = lambda: allocation_summary(opener)
    else:  # a raw device mapping (data on its LUN: opening fails) or a device
        attrs.blocks = 0
    return File(opener, st.size, attrs, xattrs)


def _deleted_node(entry: DirEntry) -> Node:
    xattrs = {"user.vmsift.deleted": "1"}
    if entry.inode is not None:
        xattrs["user.vmsift.inode"] = str(entry.inode)
    if entry.type is FileType.DIR:
        return Dir(attrs=Attrs(0o555, 2, blocks=0), xattrs=xattrs)
    return File(lambda: ZeroSource(0, entry.name), 0, Attrs(0o444, blocks=0), xattrs)


# --- vms/ ----------------------------------------------------------------------------------
# All use of vmsift.datastore.vm (its VM handle) is in this section.

def _vm_records(volume: Volume) -> list:
    """The VMs of the volume (`datastore.vm.VmRecord`); unreadable folders are warned of."""
    from ..datastore.vm import find_vms

    problems: list[str] = []
    vms = list(find_vms(volume, problems))
    for problem in problems:
        warn(problem)
    return vms


def _disk_opener(volume: Volume, disk, snapshot: dict | None) -> Callable[[], ByteSource]:
    """Opens ``disk`` flattened as it is now (``snapshot`` None) or at ``snapshot``."""
    from ..datastore.vm import open_vm_disk

    at = None if snapshot is None else str(snapshot["uid"])
    return lambda: open_vm_disk(volume, disk, at, strict=False)


def _disk_xattrs(src: ByteSource, snapshot: dict | None) -> dict:
    chain = getattr(src, "chain", None)
    out: dict = {}
    if chain:
        top = chain[0]
        out["user.vmsift.cid"] = f"{top.cid:08x}" if top.cid is not None else ""
        out["user.vmsift.chain"] = "\n".join(link.path for link in chain)
    else:
        out["user.vmsift.chain"] = src.name
    if snapshot is not None:
        out["user.vmsift.snapshot"] = str(snapshot["uid"])
    if getattr(src, "warnings", None):
        out["user.vmsift.warnings"] = "\n".join(src.warnings)
    return out


def vm_folders(volume: Volume) -> Iterator[tuple[str, Node]]:
    """``vms/``: one folder per VM, named by its display name."""
    for vm in _vm_records(volume):
        name = vm.name or posixpath.basename(posixpath.dirname(vm.config)) or vm.config
        yield name, Dir(lambda vm=vm: _vm_entries(volume, vm),
                        xattrs={"user.vmsift.config": vm.config,
                                "user.vmsift.uuid": vm.uuid or ""})


def _vm_entries(volume: Volume, vm) -> Iterator[tuple[str, Node]]:
    yield "info.txt", _text_file(vm_info(vm))
    yield "current", Dir(lambda: _snapshot_disks(volume, vm, None))
    for snap in vm.snapshots:
        when = snap.get("create_time")
        attrs = Attrs(0o555, 2, mtime=float(when) if isinstance(when, (int, float)) else 0.0)
        yield snap["display_name"] or f"snapshot {snap['uid']}", Dir(
            lambda snap=snap: _snapshot_disks(volume, vm, snap), attrs,
            {"user.vmsift.snapshot": str(snap["uid"])})
    for path in vm.files:  # configuration, snapshot database, NVRAM, logs ...
        try:
            node = volume_node(volume, path, volume.lookup(path))
        except VmsiftError as e:
            warn(f"{path}: left out of the mount: {e}")
            continue
        yield posixpath.relpath(path, vm.folder).replace("/", "_"), node


def _snapshot_disks(volume: Volume, vm, snapshot: dict | None) -> Iterator[tuple[str, Node]]:
    """``<disk>.raw`` and ``<disk>.p<n>`` for each disk of ``vm`` at ``snapshot``."""
    taken: set[str] = set()
    for disk in vm.disks:
        if disk.path is None:
            continue
        base = posixpath.splitext(posixpath.basename(disk.chain[-1] if disk.chain
                                                     else disk.path))[0]
        stem = unique_name(taken, base)
        taken.add(stem)
        opener = _disk_opener(volume, disk, snapshot)
        try:
            with opener() as src:
                size, xattrs, table = src.size, _disk_xattrs(src, snapshot), _table(src)
        except VmsiftError as e:
            warn(f"{vm.config}: disk {disk.device} left out of "
                 f"{'current' if snapshot is None else snapshot['display_name']}: {e}")
            continue
        xattrs["user.vmsift.allocation"] = lambda opener=opener: allocation_summary(opener)
        yield f"{stem}.raw", File(opener, size, xattrs=xattrs)
        yield from _partition_files(opener, stem, size, table)


def _table(src: ByteSource) -> partition.PartitionTable:
    """The partition table of a disk; none when it cannot be read."""
    try:
        return partition.read_table(src)
    except VmsiftError as e:
        return partition.PartitionTable(None, src.size, warnings=[str(e)])


def _partition_files(opener: Callable[[], ByteSource], stem: str, size: int,
                     table: partition.PartitionTable) -> Iterator[tuple[str, Node]]:
    """``<stem>.p<n>``: each partition of the disk ``opener`` opens, as a file."""
    for part in table.partitions:
        if part.is_container or part.start >= size:
            continue
        length = min(part.size, size - part.start)
        yield f"{stem}.p{part.index}", File(
            lambda part=part, length=length: PartitionSource(opener(), part.start, length),
            length, xattrs={"user.vmsift.partition": json.dumps(part.to_dict(), default=str)})


class PartitionSource(SliceSource):
    """A partition of a disk it owns: closing it closes the disk."""

    def close(self) -> None:
        self.parent.close()


def _text_file(text: str) -> File:
    data = text.encode()
    return File(lambda: BytesSource(data, "info.txt"), len(data), Attrs(0o444))


def vm_info(vm) -> str:
    """``info.txt``: what vmsift knows of the VM, for people."""
    lines = [f"name: {vm.name}", f"kind: {vm.kind}", f"config: {vm.config}",
             f"uuid: {vm.uuid}", "disks:"]
    for d in vm.disks:
        lines.append(f"  {d.device}: {d.path or '-'} mode={d.mode} capacity={d.capacity} "
                     f"stored={d.allocated}")
        lines += [f"    chain: {link}" for link in d.chain]
        if d.problem:
            lines.append(f"    problem: {d.problem}")
    lines.append("snapshots:")
    for s in vm.snapshots:
        mark = " (current)" if s["uid"] == vm.current_snapshot else ""
        lines.append(f"  {'  ' * s.get('depth', 0)}{s['uid']}: {s['display_name']}{mark}")
    lines += [f"warning: {w}" for w in vm.warnings]
    return "\n".join(lines) + "\n"


# --- a backup repository ---------------------------------------------------------------------
# All use of vmsift.backup is in this section.

def repository_tree(repo) -> Tree:
    """The tree of a repository mount (an open `vmsift.backup.repository.Repository`):
    ``snapshots/<short id>/<vm>/`` holds each disk as ``<disk>.raw`` (and its partitions
    as ``.pN``) and the VM's small files; ``by-time/<UTC time>`` and ``latest/<vm>`` are
    symbolic links to those folders. The local index cache is first brought up to the
    repository's index (a cache made elsewhere, or none yet, would not know the chunks)."""
    for name in repo.sync_index():
        warn(f"index {name} is damaged: the chunks only it names read as EIO (vmsift check)")
    problems: list[str] = []
    snapshots = repo.snapshots(problems)
    for problem in problems:
        warn(f"snapshot left out: {problem}")
    root = Dir()
    by_id = root.add("snapshots", Dir())
    by_time = root.add("by-time", Dir())
    latest: dict[str, tuple[str, float]] = {}
    for snap in snapshots:  # oldest first
        when = snap.time.timestamp()
        link = Attrs(0o777, mtime=when, ctime=when)
        short = unique_name(by_id.children(), snap.short_id)
        folder = by_id.add(short, Dir(attrs=Attrs(0o555, 2, mtime=when, ctime=when),
                                      xattrs={"user.vmsift.snapshot": snap.id}))
        vm = unique_name({}, snap.vm_name)
        folder.add(vm, Dir(lambda snap=snap: _backup_entries(repo, snap),
                           Attrs(0o555, 2, mtime=when, ctime=when),
                           {"user.vmsift.snapshot": snap.id,
                            "user.vmsift.vm": json.dumps(snap.vm, sort_keys=True,
                                                         default=str)}))
        stamp = snap.time.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        by_time.add(unique_name(by_time.children(), stamp),
                    Symlink(f"../snapshots/{short}", link))
        latest[vm] = (f"../snapshots/{short}/{vm}", when)
    top = root.add("latest", Dir())
    for vm, (target, when) in latest.items():
        top.add(vm, Symlink(target, Attrs(0o777, mtime=when, ctime=when)))
    newest = max((s.time.timestamp() for s in snapshots), default=0.0)
    for folder in (root, by_id, by_time, top):
        folder.attrs = Attrs(0o555, 2, mtime=newest, ctime=newest)
    return Tree(root, name=f"vmsift:{repo.location}")


def _tree_dir(repo, snap, disk) -> Dir:
    """``<disk>.tree/``: the disk with each file of its snapshot tree on top (`backup
    --chain`), one ``<file>.raw`` each, named by the file and marked with its snapshots."""
    when = snap.time.timestamp()
    folder = Dir(attrs=Attrs(0o555, 2, mtime=when, ctime=when),
                 xattrs={"user.vmsift.snapshot": snap.id})
    for link in disk.links:
        name = unique_name(folder.children(),
                           posixpath.splitext(posixpath.basename(link.name))[0] + ".raw")
        folder.add(name, File(
            lambda link=link: repo.open_stream(link.stream, f"{snap.short_id}:{snap.vm_name}/"
                                                            f"{link.name}"),
            link.stream.size, Attrs(0o444, mtime=when, ctime=when),
            {"user.vmsift.snapshot": snap.id, "user.vmsift.path": link.path,
             "user.vmsift.parent": link.parent or "", "user.vmsift.cid": link.cid or "",
             "user.vmsift.snapshots": " ".join(str(u) for u in link.snapshots)}))
    return folder


def _backup_entries(repo, snap) -> Iterator[tuple[str, Node]]:
    when = snap.time.timestamp()
    for disk in snap.disks:
        def opener(disk=disk) -> ByteSource:
            return repo.open_disk(snap, disk.name)

        xattrs = {"user.vmsift.snapshot": snap.id, "user.vmsift.device": disk.device or "",
                  "user.vmsift.path": disk.path or "",
                  "user.vmsift.facts": json.dumps(disk.facts, sort_keys=True, default=str),
                  "user.vmsift.allocation": lambda opener=opener: allocation_summary(opener)}
        stem = posixpath.splitext(disk.name)[0]
        yield f"{stem}.raw", File(opener, disk.size, Attrs(0o444, mtime=when, ctime=when),
                                  xattrs)
        try:
            with opener() as src:
                table = _table(src)
        except VmsiftError as e:  # its reads will fail too, and say so
            warn(f"snapshot {snap.short_id}: disk {disk.name}: {e}")
            continue
        yield from _partition_files(opener, stem, disk.size, table)
        if disk.links:
            yield f"{stem}.tree", _tree_dir(repo, snap, disk)
    for entry in snap.files:
        mtime = entry.mtime if entry.mtime is not None else when
        yield entry.name.replace("/", "_"), File(
            lambda entry=entry: repo.open_file(snap, entry.name), entry.size,
            Attrs((entry.mode or 0o444) & 0o7555 | 0o400, mtime=mtime, ctime=mtime),
            {"user.vmsift.snapshot": snap.id})
