"""Find the virtual machines on a datastore volume.

VMware: every ``.vmx``, with the disks it names (opened with their chains, through the
volume), and the snapshot tree of its ``.vmsd``. Oracle VM: every ``vm.cfg`` of a
repository (``VirtualMachines/<id>/vm.cfg``), with its disk images; repository paths
(``/OVS/Repositories/<repo>/...``) are mapped onto the volume the repository is.
A VM whose files are damaged is still listed, with the problem in its warnings.

A `VmRecord` is also the handle a backup or a mount works from: its small files by volume
path (``files``: configuration, snapshot database, NVRAM, logs; not the disks), each disk's
facts (adapter, geometry, CID, descriptor), its identity (every file of its chain with CID,
longContentID, size, mtime and volume file id: what tells a later run whether it changed) and
its change-tracking file decoded; `open_vm_disk` opens a disk now or at a snapshot.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ChainError, Problem, VmsiftError
from ..formats import ctk as ctk_mod
from ..formats import vmsd as vmsd_mod
from ..formats import vmx as vmx_mod
from ..source import ByteSource
from .disk import OpenOptions, VirtualDisk, open_disk
from .snapshots import disk_at_snapshot
from .volume import FileType, Volume

if TYPE_CHECKING:  # imported where used: a VMware VM's backup needs no vm.cfg parser
    from ..formats import vmcfg

MAX_CONFIG = 16 << 20


@dataclass
class VmDisk:
    device: str
    path: str | None          # volume path of the disk file (None when not on this volume)
    mode: str | None
    capacity: int | None = None
    allocated: int | None = None  # bytes stored by all files of the chain (None: not counted)
    chain: list[str] = field(default_factory=list)
    problem: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)        # adapter, geometry, cid ...
    identity: list[dict[str, Any]] = field(default_factory=list)  # each file of the chain
    change_tracking: dict[str, Any] | None = None               # the -ctk.vmdk, decoded

    @property
    def files(self) -> list[str]:
        """Volume paths of every file the disk is made of (descriptors, extents, CTK)."""
        return [f["path"] for f in self.identity]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class VmRecord:
    kind: str                 # "vmware" | "oraclevm"
    name: str | None
    config: str               # volume path of the .vmx / vm.cfg
    uuid: str | None
    disks: list[VmDisk]
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    current_snapshot: int | None = None
    warnings: list[str] = field(default_factory=list)  # Problems where damage is worked around
    files: list[str] = field(default_factory=list)  # small files: config, vmsd, nvram, logs
    template: bool = False    # an Oracle VM template (Templates/<id>/vm.cfg)
    package: dict[str, Any] | None = None  # an OVF package's VM: kind, system id, assembly

    @property
    def folder(self) -> str:
        return posixpath.dirname(self.config)

    @property
    def capacity(self) -> int:
        return sum(d.capacity or 0 for d in self.disks)

    @property
    def allocated(self) -> int:
        return sum(d.allocated or 0 for d in self.disks)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "config": self.config, "uuid": self.uuid,
                "capacity": self.capacity, "allocated": self.allocated,
                "disks": [d.to_dict() for d in self.disks], "snapshots": self.snapshots,
                "current_snapshot": self.current_snapshot, "warnings": self.warnings,
                "files": self.files, "template": self.template, "package": self.package}


def _read(volume: Volume, path: str) -> bytes:
    with volume.open(path) as src:
        return src.read_all(MAX_CONFIG, "configuration file")


def file_identity(volume: Volume, path: str, **known: Any) -> dict[str, Any]:
    """What tells a later run whether the file ``path`` changed (with ``known`` facts)."""
    st = volume.lookup(path)  # the cheap stat: no locks or RDM facts
    return {"path": path, **known, "size": st.size, "mtime": st.mtime, "file_id": st.inode}


def _disk_facts(disk: VirtualDisk) -> dict[str, Any]:
    top, base = disk.chain[0].descriptor, disk.chain[-1].descriptor
    ddb = {**base.ddb, **top.ddb}
    geometry = {k: ddb.get(f"geometry.{k}") for k in ("cylinders", "heads", "sectors")}
    return {"capacity": disk.size, "cid": None if top.cid is None else f"{top.cid:08x}",
            "create_type": base.create_type, "adapter": ddb.get("adapterType"),
            "geometry": geometry, "hardware_version": ddb.get("virtualHWVersion"),
            "uuid": ddb.get("uuid"), "long_content_id": ddb.get("longContentID"),
            "descriptor": top.dump().decode("utf-8", "replace")}


def _change_tracking(volume: Volume, disk: VirtualDisk) -> tuple[dict[str, Any] | None, str | None]:
    """The top link's change-tracking file decoded, and its volume path."""
    top = disk.chain[0]
    name = top.descriptor.change_track_path
    if not name:
        return None, None
    try:
        path = volume.resolve(posixpath.dirname(top.path), name)
        with volume.open(path) as src:
            c = ctk_mod.read(src, strict=False)
            return {"path": path, "change_id": c.change_id, "change_seq": c.change_seq,
                    "block_size": c.block_size, "disk_size": c.disk_size,
                    "warnings": c.warnings}, path
    except VmsiftError as e:
        return {"path": name, "error": str(e)}, None


def read_disk(volume: Volume, disk: VmDisk, *, stored: bool = True) -> VmDisk:
    """Fill ``disk`` (its ``path`` set) from its chain: capacity, chain, facts, identity,
    change tracking and (with ``stored``) allocated bytes; what cannot be read goes to
    ``problem``. Counting the allocated bytes walks the map of every file of the chain: on a
    large thin disk that is most of the work, and a backup does without it."""
    try:
        with open_disk(volume, disk.path, strict=False) as d:
            disk.capacity = d.size
            disk.chain = [link.path for link in d.chain]
            if stored:
                disk.allocated = sum(link.allocated() for link in d.chain)
            disk.facts = _disk_facts(d)
            for link in d.chain:
                disk.identity.append(file_identity(
                    volume, link.path, role="descriptor",
                    cid=None if link.cid is None else f"{link.cid:08x}",
                    long_content_id=link.descriptor.ddb_get("longContentID")))
                disk.identity += [file_identity(volume, f, role="extent")
                                  for f in link.extent_files if f != link.path]
            disk.change_tracking, ctk_path = _change_tracking(volume, d)
            if ctk_path:
                disk.identity.append(file_identity(volume, ctk_path, role="change tracking"))
            problems = list(d.warnings)
            if rdm := d.chain[0].raw_device_map():
                problems.append(f"raw device mapping ({rdm['mode']}); the data is on its LUN")
            disk.problem = "; ".join(problems) or None
    except VmsiftError as e:
        disk.problem = str(e)
    return disk


def _vmware_disk(volume: Volume, vmx_dir: str, device: vmx_mod.Device, stored: bool
                 ) -> VmDisk:
    disk = VmDisk(device.id, None, device.mode)
    try:
        disk.path = volume.resolve(vmx_dir, device.backing)
    except VmsiftError as e:
        disk.problem = str(e)
        return disk
    return read_disk(volume, disk, stored=stored)


#: files of a VM folder that are not its small files: disks (stored as disks) and swap
_NOT_SMALL = (".vmdk", ".vswp")


def _small_files(volume: Volume, folder: str, disks: list[VmDisk]) -> list[str]:
    taken = {f for d in disks for f in d.files}
    out = []
    for entry in volume.listdir(folder):
        path = posixpath.join(folder, entry.name)
        if entry.type is FileType.FILE and path not in taken and \
                not entry.name.lower().endswith(_NOT_SMALL):
            out.append(path)
    return out


def open_vm_disk(volume: Volume, disk: VmDisk, snapshot: str | None = None, *,
                 strict: bool = True, options: OpenOptions | None = None) -> ByteSource:
    """``disk`` of a VM opened with its chain: as it is now, or at ``snapshot`` (a name or
    uid of the VM's .vmsd). An Oracle VM disk image opens as a raw disk."""
    if disk.path is None:
        raise ChainError(f"disk {disk.device} is not readable: {disk.problem}")
    path = disk.path
    if package := disk.facts.get("package"):
        from .ovf import open_disk_in

        return open_disk_in(volume, package, disk.facts["package_disk"])
    if disk.facts.get("create_type") == "raw image":
        return volume.open(path)
    if snapshot is not None:
        path = disk_at_snapshot(volume, path, snapshot)
    return open_disk(volume, path, strict=strict, options=options)


def _vmware(volume: Volume, path: str, stored: bool) -> VmRecord:
    conf = vmx_mod.parse(_read(volume, path), path)
    folder = posixpath.dirname(path)
    disks = [_vmware_disk(volume, folder, d, stored) for d in conf.disks()
             if d.backing and d.present is not False]
    vm = VmRecord("vmware", conf.name, path, conf.get("uuid.bios"), disks,
                  warnings=list(conf.dictionary.warnings))
    try:
        vm.files = _small_files(volume, folder, disks)
    except VmsiftError as e:
        vm.warnings.append(Problem.of(e, "VM folder: "))
    vmsd_name = conf.get("snapshot.fileName") or posixpath.splitext(
        posixpath.basename(path))[0] + ".vmsd"
    try:
        vmsd_path = volume.resolve(folder, vmsd_name)
        if volume.exists(vmsd_path):
            db = vmsd_mod.parse(_read(volume, vmsd_path), vmsd_path)
            vm.current_snapshot = db.current
            vm.snapshots = [{"depth": depth, **snap.to_dict()} for depth, snap in db.walk()]
            vm.warnings += db.warnings
    except VmsiftError as e:
        vm.warnings.append(Problem.of(e, "snapshot database: "))
    return vm


def _repository_path(volume: Volume, cfg_path: str, disk: vmcfg.Disk) -> str | None:
    """The volume path of an Oracle VM disk: repository paths map onto this volume when
    the vm.cfg lies in it (``<repo root>/VirtualMachines/<id>/vm.cfg``)."""
    if disk.repository_dir and disk.filename:
        root = posixpath.dirname(posixpath.dirname(posixpath.dirname(cfg_path)))
        return posixpath.join(root, disk.repository_dir, disk.filename)
    return None


def _oraclevm(volume: Volume, path: str, stored: bool) -> VmRecord:
    from ..formats import vmcfg

    cfg = vmcfg.parse(_read(volume, path), path)
    disks = []
    for d in cfg.disks:
        disk = VmDisk(d.device or f"disk{d.index}", _repository_path(volume, path, d), d.mode)
        if d.cdrom:
            disk.problem = "CD-ROM image"
        if disk.path is None:
            disk.problem = f"{d.backend}:{d.path} is not a file of this repository"
        elif not volume.exists(disk.path):
            disk.problem = f"{disk.path} is missing"
            disk.path = None
        else:
            with volume.open(disk.path) as src:
                disk.capacity = src.size
                disk.allocated = src.stored_bytes() if stored else None
                disk.chain = [disk.path]
                disk.identity = [file_identity(volume, disk.path, role="image")]
                disk.facts = {"capacity": src.size, "create_type": "raw image"}
        disks.append(disk)
    vm = VmRecord("oraclevm", cfg.simple_name or cfg.name, path, cfg.uuid, disks)
    try:
        vm.files = _small_files(volume, vm.folder, disks)
    except VmsiftError as e:
        vm.warnings.append(Problem.of(e, "VM folder: "))
    return vm


ORACLE_VM_MARKERS = {".ovsrepo": "repository", ".ovspoolfs": "server pool file system"}


def oracle_vm_role(volume: Volume) -> dict[str, Any] | None:
    """What the volume is to Oracle VM, from the marker file at its root (``.ovsrepo`` for
    a repository, ``.ovspoolfs`` for the server pool file system) with its KEY=value lines."""
    for marker, role in ORACLE_VM_MARKERS.items():
        if volume.exists(marker):
            text = _read(volume, marker).decode("utf-8", "replace")
            keys = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
            return {"role": role, "marker": marker, "keys": keys}
    return None


def _package_disk(volume: Volume, pkg, path: str, disk_id: str, stored: bool) -> VmDisk:
    """A disk of an OVF package's VM: opened through the package to learn its facts."""
    from .ovf import StreamedDisk, open_package_disk

    disk = VmDisk(disk_id, path, None, facts={"package": path, "package_disk": disk_id})
    try:
        d = pkg.find_disk(disk_id)
        pfile = pkg.files.get(d.file_ref or "")
        if pfile and not pfile.problem:
            files = pfile.parts if pkg.kind == "ovf" else [path]
            disk.identity = [file_identity(volume, f, role="package file") for f in files]
            disk.chain = [posixpath.join(path, pfile.ref.href) if pkg.kind == "ova"
                          else pfile.path]
            disk.path = path if pkg.kind == "ova" else pfile.path
        with open_package_disk(pkg, d) as opened:
            disk.capacity = opened.size
            if isinstance(opened, StreamedDisk):  # no chain: a backup skips it, saying why
                disk.problem, disk.chain = opened.REASON, []
                disk.facts.update(capacity=opened.size, compression="gzip")
            else:
                if stored:
                    disk.allocated = sum(link.allocated() for link in opened.chain)
                disk.facts.update(_disk_facts(opened))
                disk.problem = "; ".join(opened.warnings) or None
    except VmsiftError as e:
        disk.problem = str(e)
    return disk


def package_vms(volume: Volume, path: str, *, stored: bool = True) -> list[VmRecord]:
    """The VMs (one per VirtualSystem) of the OVF package (``.ovf`` or ``.ova``) at
    ``path``; its small files are the descriptor, manifest and certificate of a ``.ovf``.
    ``stored``: as for `find_vms`."""
    from .ovf import package_on

    assembly = "Assemblies" in path.split("/")[:-1]
    with package_on(volume, path) as pkg:
        files = [] if pkg.kind == "ova" else [
            p for p in (pkg.descriptor_path, pkg.manifest_path, pkg.certificate_path) if p]
        out = []
        for vs in pkg.envelope.systems:
            disks = [_package_disk(volume, pkg, path, d, stored) for d in vs.disk_ids()]
            out.append(VmRecord("ovf", vs.name or vs.id, path, None, disks,
                                warnings=list(pkg.warnings), files=list(files),
                                package={"kind": pkg.kind, "system": vs.id,
                                         "collection": vs.collection, "assembly": assembly,
                                         "os": vs.os_type or vs.os_description}))
        return out


def _config_kind(name: str) -> str | None:
    lower = name.lower()
    if lower.endswith(".vmx"):
        return "vmware"
    if lower == "vm.cfg":
        return "oraclevm"
    return "ovf" if lower.endswith((".ovf", ".ova")) else None


def find_vms(volume: Volume, problems: list[str] | None = None, *, stored: bool = True
             ) -> Iterator[VmRecord]:
    """Every VM configuration on the volume, as found by a walk from the root: ``.vmx``,
    Oracle VM ``vm.cfg`` (those under ``Templates/`` are templates) and OVF packages
    (``.ovf``, ``.ova``; an Oracle VM repository keeps them in ``Assemblies/``). With
    ``problems``, folders that cannot be read (a damaged or truncated image) are noted there
    and the search goes on. Without ``stored`` the disks' allocated bytes are not counted
    (see `read_disk`)."""
    for folder, entries in volume.walk("", problems=problems):
        for entry in entries:
            if entry.type is not FileType.FILE or (kind := _config_kind(entry.name)) is None:
                continue
            path = posixpath.join(folder, entry.name)
            if kind == "ovf":
                try:
                    yield from package_vms(volume, path, stored=stored)
                except VmsiftError as e:
                    yield VmRecord(kind, None, path, None, [], warnings=[str(e)])
                continue
            yield read_vm(volume, path, stored=stored)


def read_vm(volume: Volume, path: str, *, stored: bool = True) -> VmRecord:
    """The VM whose configuration is ``path`` (a ``.vmx``, else an Oracle VM ``vm.cfg``; one
    under ``Templates/`` is a template); damage goes to its warnings. ``stored``: as for
    `find_vms`."""
    kind = "vmware" if path.lower().endswith(".vmx") else "oraclevm"
    try:
        reader = _vmware if kind == "vmware" else _oraclevm
        vm = reader(volume, path, stored)
    except VmsiftError as e:
        return VmRecord(kind, None, path, None, [], warnings=[str(e)])
    vm.template = kind == "oraclevm" and "Templates" in posixpath.dirname(path).split("/")
    return vm
