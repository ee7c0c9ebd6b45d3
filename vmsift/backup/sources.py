"""What a backup SOURCE holds: the VMs (or the one bare disk) to snapshot, read-only.

* a folder: a datastore or VM folder; every VM found in it (VMware ``.vmx``, Oracle VM
  ``vm.cfg``);
* a VMDK (descriptor, or a sparse / COWD / SESparse file): that disk with its chain, as a
  snapshot of its own;
* an OVA or a ``.ovf``: each VirtualSystem of the package is a VM, its disks read in place
  (inside the tar for an OVA), its descriptor, manifest and certificate its small files;
* an image: a VMFS or OCFS2 volume, bare, partitioned or spanned (several devices): every VM
  on it; an image that is no datastore is one raw disk.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..datastore.disk import open_disk
from ..datastore.volume import Volume
from ..errors import UnsupportedError, VmsiftError
from ..source import ByteSource, FileSource


@dataclass
class DiskPlan:
    name: str                       # restores under this name
    device: str | None
    path: str | None
    open: Callable[[], ByteSource] | None   # None: cannot be read (the problem says why)
    facts: dict[str, Any] = field(default_factory=dict)
    identity: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None
    recheck: Callable[[], list[dict[str, Any]]] | None = None  # identity again, after
    points: dict[int, str] = field(default_factory=dict)  # .vmsd uid -> the disk's file then


@dataclass
class TreeFile:
    """One file of a disk's snapshot tree."""

    path: str                       # volume path
    parent: str | None              # volume path of its parent; None for the base
    snapshots: list[int]            # uids of the .vmsd snapshots whose disk it holds


@dataclass
class Target:
    """One snapshot to make."""

    vm: dict[str, Any]              # kind, name, uuid, config, folder
    files: list[tuple[str, str]]    # (name relative to the VM folder, volume path)
    disks: list[DiskPlan]
    volume: Volume | None
    warnings: list[str] = field(default_factory=list)


def _is_vmdk(path: str) -> bool:
    from ..formats.vmdk import cowd, descriptor, sesparse, sparse

    with open(path, "rb") as f:
        head = f.read(4096)
    return head[:4] in (sparse.MAGIC, cowd.MAGIC) or head[:8] == sesparse.MAGIC_BYTES or \
        descriptor.sniff(head)


def identity_now(volume: Volume, before: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``before`` with each file's size, mtime and file id as they are now."""
    from ..datastore.vm import file_identity

    out = []
    for item in before:
        try:
            out.append(file_identity(volume, item["path"], **{
                k: v for k, v in item.items() if k not in ("path", "size", "mtime", "file_id")}))
        except VmsiftError as e:
            out.append({**item, "error": str(e)})
    return out


def _points(volume: Volume, vm, device: str, warnings: list[str]) -> dict[int, str]:
    """uid -> volume path of the file holding disk ``device`` at each .vmsd snapshot."""
    out = {}
    for snap in vm.snapshots:
        for d in snap.get("disks", []):
            if d.get("node") == device and d.get("filename") and snap.get("uid") is not None:
                try:
                    out[int(snap["uid"])] = volume.resolve(vm.folder, d["filename"])
                except VmsiftError as e:
                    warnings.append(f"snapshot {snap['uid']} disk {device}: {e}")
    return out


def disk_tree(volume: Volume, top: str, points: dict[int, str]) -> tuple[list[TreeFile],
                                                                          list[str]]:
    """Every file of the snapshot tree of the disk whose current file is ``top``: the chains
    of ``top`` and of the disk's file at each snapshot (``points``), parents first; and
    warnings for snapshot files that are missing or belong to another disk."""
    warnings: list[str] = []
    parents: dict[str, str | None] = {}
    owners: dict[str, list[int]] = {}
    base = None
    for uid, path in [(None, top), *sorted(points.items())]:
        try:
            with open_disk(volume, path, strict=False) as disk:
                chain = [link.path for link in disk.chain]
        except VmsiftError as e:
            warnings.append(f"snapshot {uid}: {e}")
            continue
        if base is None:
            base = chain[-1]
        elif chain[-1] != base:
            warnings.append(f"snapshot {uid}: {path} is not a file of this disk's tree (its "
                            f"base is {chain[-1]}, not {base})")
            continue
        for child, parent in zip(chain, [*chain[1:], None]):
            parents.setdefault(child, parent)
        if uid is not None:
            owners.setdefault(path, []).append(uid)

    def depth(path: str) -> int:
        n = 0
        while (path := parents[path]) is not None:
            n += 1
        return n

    order = sorted(parents, key=lambda p: (depth(p), p))
    return [TreeFile(p, parents[p], owners.get(p, [])) for p in order], warnings


def _disk_name(vm_disk, taken: set[str]) -> str:
    base = posixpath.basename((vm_disk.chain or [vm_disk.path or vm_disk.device])[-1])
    name = base
    if name in taken:
        stem, ext = posixpath.splitext(base)
        name = f"{stem}-{vm_disk.device.replace(':', '_')}{ext}"
    taken.add(name)
    return name


def _vm_targets(volume: Volume, problems: list[str], vms=None) -> list[Target]:
    """A target per VM of ``vms`` (default: every VM found on ``volume``)."""
    from ..datastore.vm import find_vms, open_vm_disk

    targets = []
    for vm in find_vms(volume, problems, stored=False) if vms is None else vms:
        taken: set[str] = set()
        disks = []
        for d in vm.disks:
            plan = DiskPlan(_disk_name(d, taken), d.device, d.path, None,
                            {**d.facts, "mode": d.mode, "chain": d.chain,
                             "change_tracking": d.change_tracking}, d.identity)
            if d.problem and (d.path is None or "raw device mapping" in d.problem
                              or not d.chain):
                plan.problem = d.problem
            else:
                plan.open = lambda d=d: open_vm_disk(volume, d, strict=False)
                plan.recheck = lambda d=d: identity_now(volume, d.identity)
                plan.points = _points(volume, vm, d.device, vm.warnings)
                if d.problem:
                    plan.facts["warning"] = d.problem
            disks.append(plan)
        files = [(posixpath.relpath(p, vm.folder or "."), p) for p in vm.files]
        targets.append(Target({"kind": vm.kind, "name": vm.name or posixpath.basename(vm.config),
                               "uuid": vm.uuid, "config": vm.config, "folder": vm.folder},
                              files, disks, volume, list(vm.warnings)))
    return targets


def _bare_disk(volume: Volume, rel: str, source: str) -> Target:
    from ..datastore.vm import VmDisk, read_disk

    disk = read_disk(volume, VmDisk("disk", rel, None), stored=False)
    if disk.problem and not disk.chain:
        raise VmsiftError(disk.problem, source=source)
    facts = {**disk.facts, "chain": disk.chain, "change_tracking": disk.change_tracking}
    plan = DiskPlan(_disk_name(disk, set()), None, rel,
                    lambda: open_disk(volume, rel, strict=False), facts, disk.identity,
                    recheck=lambda: identity_now(volume, disk.identity))
    name = os.path.basename(source)
    return Target({"kind": "disk", "name": name, "uuid": None, "config": None, "folder": ""},
                  [], [plan], volume)


def _raw_image(path: str) -> Target:
    def identity() -> list[dict[str, Any]]:
        st = os.stat(path)
        return [{"path": path, "role": "image", "size": st.st_size, "mtime": st.st_mtime,
                 "file_id": st.st_ino}]

    name = os.path.basename(path)
    with FileSource(path) as src:
        size = src.size
    plan = DiskPlan(name, None, path, lambda: FileSource(path),
                    {"capacity": size, "create_type": "raw image"}, identity(),
                    recheck=identity)
    return Target({"kind": "disk", "name": name, "uuid": None, "config": None, "folder": ""},
                  [], [plan], None)


@contextlib.contextmanager
def open_source(paths: list[str], problems: list[str]) -> Iterator[tuple[str, list[Target]]]:
    """(what the source is, the targets in it); volumes stay open inside the block."""
    from ..datastore.detect import open_datastore
    from ..datastore.folder import FolderVolume

    first = paths[0]
    if len(paths) == 1 and os.path.isdir(first):
        with FolderVolume(first) as volume:
            yield "folder", _vm_targets(volume, problems)
        return
    if len(paths) == 1 and os.path.isfile(first) and first.lower().endswith((".ova", ".ovf")):
        from ..datastore.archive import TarVolume
        from ..datastore.vm import package_vms

        if first.lower().endswith(".ova"):
            with TarVolume(FileSource(first)) as volume:
                descriptor = [m.name for m in volume.index.members
                              if m.name.lower().endswith(".ovf")][:1]
                yield "ova", _vm_targets(volume, problems, [
                    vm for d in descriptor for vm in package_vms(volume, d, stored=False)])
            return
        with FolderVolume(os.path.dirname(os.path.abspath(first))) as volume:
            yield "ovf", _vm_targets(volume, problems, package_vms(
                volume, os.path.basename(first), stored=False))
        return
    if len(paths) == 1 and os.path.isfile(first) and _is_vmdk(first):
        with FolderVolume(os.path.dirname(os.path.abspath(first))) as volume:
            yield "vmdk", [_bare_disk(volume, os.path.basename(first), first)]
        return
    try:
        volume = open_datastore(paths)
    except UnsupportedError:
        if len(paths) != 1:
            raise
        yield "raw image", [_raw_image(first)]
        return
    with volume:
        yield volume.info().data.get("kind", "datastore"), _vm_targets(volume, problems)
