"""Find the virtual machines on a datastore volume.

VMware: every ``.vmx``, with the disks it names (opened with their chains, through the
volume), and the snapshot tree of its ``.vmsd``. Oracle VM: every ``vm.cfg`` of a
repository (``VirtualMachines/<id>/vm.cfg``), with its disk images; repository paths
(``/OVS/Repositories/<repo>/...``) are mapped onto the volume the repository is.
A VM whose files are damaged is still listed, with the problem in its warnings.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import VmsiftError
from ..formats import vmcfg as vmcfg_mod
from ..formats import vmsd as vmsd_mod
from ..formats import vmx as vmx_mod
from .disk import open_disk
from .volume import FileType, Volume

MAX_CONFIG = 16 << 20


@dataclass
class VmDisk:
    device: str
    path: str | None          # volume path of the disk file (None when not on this volume)
    mode: str | None
    capacity: int | None = None
    allocated: int | None = None  # bytes stored by all files of the chain
    chain: list[str] = field(default_factory=list)
    problem: str | None = None

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
    warnings: list[str] = field(default_factory=list)

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
                "current_snapshot": self.current_snapshot, "warnings": self.warnings}


def _read(volume: Volume, path: str) -> bytes:
    with volume.open(path) as src:
        return src.read_all(MAX_CONFIG, "configuration file")


def _vmware_disk(volume: Volume, vmx_dir: str, device: vmx_mod.Device) -> VmDisk:
    disk = VmDisk(device.id, None, device.mode)
    try:
        disk.path = volume.resolve(vmx_dir, device.backing)
        with open_disk(volume, disk.path, strict=False) as d:
            disk.capacity = d.size
            disk.chain = [link.path for link in d.chain]
            disk.allocated = sum(link.allocated() for link in d.chain)
            problems = list(d.warnings)
            if rdm := d.chain[0].raw_device_map():
                problems.append(f"raw device mapping ({rdm['mode']}); the data is on its LUN")
            disk.problem = "; ".join(problems) or None
    except VmsiftError as e:
        disk.problem = str(e)
    return disk


def _vmware(volume: Volume, path: str) -> VmRecord:
    conf = vmx_mod.parse(_read(volume, path), path)
    folder = posixpath.dirname(path)
    disks = [_vmware_disk(volume, folder, d) for d in conf.disks()
             if d.backing and d.present is not False]
    vm = VmRecord("vmware", conf.name, path, conf.get("uuid.bios"), disks,
                  warnings=list(conf.dictionary.warnings))
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
        vm.warnings.append(f"snapshot database: {e}")
    return vm


def _repository_path(volume: Volume, cfg_path: str, disk: vmcfg_mod.Disk) -> str | None:
    """The volume path of an Oracle VM disk: repository paths map onto this volume when
    the vm.cfg lies in it (``<repo root>/VirtualMachines/<id>/vm.cfg``)."""
    if disk.repository_dir and disk.filename:
        root = posixpath.dirname(posixpath.dirname(posixpath.dirname(cfg_path)))
        return posixpath.join(root, disk.repository_dir, disk.filename)
    return None


def _oraclevm(volume: Volume, path: str) -> VmRecord:
    cfg = vmcfg_mod.parse(_read(volume, path), path)
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
                disk.capacity, disk.allocated = src.size, src.stored_bytes()
                disk.chain = [disk.path]
        disks.append(disk)
    return VmRecord("oraclevm", cfg.simple_name or cfg.name, path, cfg.uuid, disks)


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


def find_vms(volume: Volume, problems: list[str] | None = None) -> Iterator[VmRecord]:
    """Every VM configuration on the volume, as found by a walk from the root. With
    ``problems``, folders that cannot be read (a damaged or truncated image) are noted there
    and the search goes on."""
    for folder, entries in volume.walk("", problems=problems):
        for entry in entries:
            if entry.type is not FileType.FILE:
                continue
            path = posixpath.join(folder, entry.name)
            lower = entry.name.lower()
            kind = "vmware" if lower.endswith(".vmx") else \
                "oraclevm" if lower == "vm.cfg" else None
            if kind is None:
                continue
            try:
                yield _vmware(volume, path) if kind == "vmware" else _oraclevm(volume, path)
            except VmsiftError as e:
                yield VmRecord(kind, None, path, None, [], warnings=[str(e)])
