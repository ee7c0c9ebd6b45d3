"""Restore from a snapshot: one disk, or a VM's whole folder, runnable as it was.

Every chunk is verified (authenticated, hashed against its id) before it is written; outputs
are sparse (ZERO and HOLE cells, and zeros inside data, are never written) and appear under
their names only when complete (`vmsift.publish`). Nothing is written outside the target
folder and nothing is overwritten without ``overwrite``.

A VMware VM folder gets its small files back as they were, each disk in the chosen format
(``raw``: a ``monolithicFlat`` descriptor beside a sparse ``-flat.vmdk``; ``vmdk``: one
monolithicSparse or streamOptimized file), and its ``.vmx`` pointing at them; the snapshot
database (``.vmsd``, ``.vmsn``) is left out, since the disks come back flattened. An Oracle VM
or bare-disk snapshot restores its files and its disks under their own names.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..datastore.export import export_raw
from ..errors import SourceError, UnsupportedError
from ..formats import dictfile
from ..formats.vmdk import writer as vmdk_writer
from ..publish import write_file
from .repository import Repository
from .snapshot import DiskEntry, Snapshot

SECTOR = 512
SNAPSHOT_FILES = (".vmsd", ".vmsn")
Progress = Callable[[int], None]


@dataclass
class Restored:
    written: list[dict[str, Any]] = field(default_factory=list)  # path, kind, size, bytes
    skipped: list[str] = field(default_factory=list)


def _safe_join(root: str, name: str) -> str:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") or "\0" in p
                                               for p in parts):
        raise UnsupportedError(f"refusing the unsafe name {name!r} from the snapshot",
                               source=root)
    return os.path.join(root, *parts)


def _stem(name: str) -> str:
    return name[:-5] if name.lower().endswith(".vmdk") else name


def _cid(entry: DiskEntry) -> int | None:
    cid = entry.facts.get("cid")
    try:
        value = int(cid, 16) if cid else None
    except ValueError:
        return None
    return value if value is not None and value < 0xFFFFFFFE else None


def _adapter(entry: DiskEntry) -> str:
    adapter = entry.facts.get("adapter")
    return adapter if adapter in vmdk_writer.ADAPTERS else "lsilogic"


def _hw(entry: DiskEntry) -> str:
    hw = str(entry.facts.get("hardware_version") or "4")
    return hw if re.fullmatch(r"[0-9]{1,3}", hw) else "4"


def _uuid(entry: DiskEntry) -> bytes:
    text = (entry.facts.get("uuid") or "").replace(" ", "").replace("-", "")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    return raw if len(raw) == 16 else hashlib.blake2b(entry.name.encode(), digest_size=16).digest()


def _write_flat_descriptor(entry: DiskEntry, out: str, flat_name: str, overwrite: bool) -> None:
    sectors = -(-entry.size // SECTOR)
    cid = _cid(entry) or 0x12345678
    uuid = _uuid(entry)
    text = vmdk_writer.build_descriptor(
        filename=flat_name, capacity_sectors=sectors, create_type="monolithicFlat", cid=cid,
        adapter=_adapter(entry), hw_version=_hw(entry), disk_uuid=uuid,
        long_content_prefix=hashlib.blake2b(uuid, digest_size=12).digest(), extent_type="FLAT")
    write_file(out, text, overwrite=overwrite)


def restore_disk(repo: Repository, snap: Snapshot, entry: DiskEntry, out_dir: str, *,
                 fmt: str = "raw", subformat: str = "monolithicSparse", overwrite: bool = False,
                 in_folder: bool = False, progress: Progress | None = None) -> list[dict]:
    """Write one disk into ``out_dir``; return what was written. ``in_folder``: as part of
    a VMware VM folder (raw disks get a descriptor so the .vmx can name them)."""
    name = entry.name
    vmware = name.lower().endswith(".vmdk")
    written = []
    with repo.open_disk(snap, name) as src:
        if fmt == "raw":
            if in_folder and vmware:
                flat = _stem(name) + "-flat.vmdk"
                path = _safe_join(out_dir, flat)
                stats = export_raw(src, path, overwrite=overwrite, progress=progress)
                _write_flat_descriptor(entry, _safe_join(out_dir, name), flat, overwrite)
                written.append({"path": _safe_join(out_dir, name), "kind": "descriptor"})
            else:
                path = _safe_join(out_dir, _stem(name) + ".raw" if vmware else name)
                stats = export_raw(src, path, overwrite=overwrite, progress=progress)
            written.append({"path": path, "kind": "raw", "size": src.size,
                            "written": stats.written})
        elif fmt == "vmdk":
            path = _safe_join(out_dir, _stem(name) + ".vmdk")
            stats = vmdk_writer.write_vmdk(
                src, path, subformat, adapter=_adapter(entry), hw_version=_hw(entry),
                overwrite=overwrite, progress=progress, cid=_cid(entry))
            written.append({"path": path, "kind": subformat, "size": src.size,
                            "written": stats.file_size})
        else:
            raise UnsupportedError(f"restore format {fmt!r} is not raw or vmdk")
    return written


def _rewrite_vmx(data: bytes, disks: dict[str, str], name: str) -> bytes:
    """The .vmx with each disk device's fileName pointing at its restored file."""
    conf = dictfile.parse(data, name)
    for device, filename in disks.items():
        key = f"{device}.fileName"
        if conf.get(key) is not None:
            conf.set(key, filename)
    return conf.dump()


def restore_vm(repo: Repository, snap: Snapshot, out_dir: str, *, fmt: str = "raw",
               subformat: str = "monolithicSparse", overwrite: bool = False,
               progress: Callable[[str, int], Progress | None] | None = None) -> Restored:
    """Every disk and small file of ``snap`` into ``out_dir`` (created if missing)."""
    result = Restored()
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise SourceError(f"cannot create the target folder: {e.strerror}", source=out_dir) \
            from None
    vmware = snap.vm.get("kind") == "vmware"
    names: dict[str, str] = {}
    for entry in snap.disks:
        bar = progress(f"{snap.vm_name}: {entry.name}", entry.size) if progress else None
        result.written += restore_disk(repo, snap, entry, out_dir, fmt=fmt, subformat=subformat,
                                       overwrite=overwrite, in_folder=vmware, progress=bar)
        if entry.device:
            names[entry.device] = entry.name
    for f in snap.files:
        if vmware and f.name.lower().endswith(SNAPSHOT_FILES):
            result.skipped.append(f"{f.name}: snapshot database (disks are restored flattened)")
            continue
        path = _safe_join(out_dir, f.name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with repo.open_file(snap, f.name) as src:
            if vmware and f.name.lower().endswith(".vmx"):
                data = _rewrite_vmx(src.read_all(64 << 20, "vmx"), names, f.name)
                write_file(path, data, overwrite=overwrite)
            else:
                export_raw(src, path, overwrite=overwrite, sync=False)
        mode = (f.mode or 0o644) & 0o777
        os.chmod(path, mode)
        if f.mtime is not None:
            os.utime(path, (f.mtime, f.mtime))
        result.written.append({"path": path, "kind": "file", "size": f.size})
    return result
