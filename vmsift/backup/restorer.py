"""Restore from a snapshot: one disk, or a VM's whole folder, runnable as it was.

Every chunk is verified (authenticated, hashed against its id) before it is written; outputs
are sparse (ZERO and HOLE cells, and zeros inside data, are never written) and appear under
their names only when complete (`vmsift.publish`). Nothing is written outside the target
folder and nothing is overwritten without ``overwrite``.

A VMware VM folder gets its small files back as they were, each disk in the chosen format
(``raw``: a ``monolithicFlat`` descriptor beside a sparse ``-flat.vmdk``; ``vmdk``: one
monolithicSparse or streamOptimized file), and its ``.vmx`` pointing at them; the snapshot
database (``.vmsd``, ``.vmsn``) is left out, since the disks come back flattened, unless the
snapshot tree is asked for (``chain``, from a ``backup --chain``): then each disk comes back as
its base and deltas under their own names, as the .vmsd and .vmx name them. An Oracle VM or
bare-disk snapshot restores its files and its disks under their own names.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..datastore.export import export_raw
from ..errors import RepositoryError, SourceError, UnsupportedError
from ..formats import dictfile
from ..formats.vmdk import writer as vmdk_writer
from ..publish import write_file
from ..source import Alloc, ByteSource, Run, clip
from .diff import changed_ranges
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


def _cid_of(text: str | None) -> int | None:
    try:
        value = int(text, 16) if text else None
    except ValueError:
        return None
    return value if value is not None and value < 0xFFFFFFFE else None


def _cid(entry: DiskEntry) -> int | None:
    return _cid_of(entry.facts.get("cid"))


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
    with repo.open_stream(entry.stream, f"{snap.short_id}:{snap.vm_name}/{name}") as src:
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


class _OwnGrains(ByteSource):
    """A tree file's own content: ``top`` wherever it differs from its parent (``ranges``,
    sorted), HOLE elsewhere, so that a delta written from it falls through to the parent."""

    def __init__(self, top: ByteSource, ranges: list[tuple[int, int]]):
        self.top, self.ranges = top, ranges
        self.name, self.size = top.name, top.size

    def read(self, offset: int, length: int) -> bytes:
        return self.top.read(offset, length)

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Run]:
        start, end = clip(self.size, offset, length)
        pos = start
        for lo, n in self.ranges:
            lo, hi = max(lo, start), min(lo + n, end)
            if hi <= lo:
                continue
            if lo > pos:
                yield Run(pos, lo - pos, Alloc.HOLE)
            yield Run(lo, hi - lo, Alloc.DATA)
            pos = hi
        if end > pos:
            yield Run(pos, end - pos, Alloc.HOLE)


def restore_tree(repo: Repository, snap: Snapshot, entry: DiskEntry, out_dir: str, *,
                 fmt: str = "raw", overwrite: bool = False,
                 progress: Callable[[str, int], Progress | None] | None = None) -> list[dict]:
    """Write every file of ``entry``'s snapshot tree under its own name: the base as
    ``restore_disk`` writes a disk (``fmt``), each other file as a monolithicSparse delta of
    its parent holding the cells where the two differ (read from the manifests), with the
    CIDs the files had, so the .vmsd and .vmx name them as before."""
    if not entry.links:
        raise RepositoryError(f"disk {entry.name} of snapshot {snap.short_id} has no snapshot "
                              f"tree: back it up with `vmsift backup --chain`")
    written: list[dict] = []
    cids: dict[str, int] = {}
    by_path = {link.path: link for link in entry.links}
    for link in entry.links:
        cid = _cid_of(link.cid)
        cid = vmdk_writer.random_cid() if cid is None else cid
        cids[link.path] = cid
        bar = progress(f"{snap.vm_name}: {link.name}", entry.size) if progress else None
        label = f"{snap.short_id}:{snap.vm_name}/{link.name}"
        if link.parent is None:
            base = DiskEntry(link.name, entry.device, link.path, link.stream,
                             {**entry.facts, "cid": f"{cid:08x}"})
            written += restore_disk(repo, snap, base, out_dir, fmt=fmt, overwrite=overwrite,
                                    in_folder=True, progress=bar)
            continue
        parent = by_path[link.parent]
        path = _safe_join(out_dir, link.name)
        _safe_join(out_dir, parent.name)  # both inside the target: the hint stays inside
        hint = posixpath.relpath(parent.name, posixpath.dirname(link.name) or ".")
        with repo.open_stream(link.stream, label) as top, \
                repo.open_stream(parent.stream, label) as below:
            own = _OwnGrains(top, changed_ranges(below, top))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            stats = vmdk_writer.write_vmdk(
                own, path, adapter=_adapter(entry), hw_version=_hw(entry), overwrite=overwrite,
                progress=bar, cid=cid, parent=vmdk_writer.Parent(hint, cids[parent.path]))
        written.append({"path": path, "kind": "delta", "parent": parent.name,
                        "snapshots": link.snapshots, "size": entry.size,
                        "written": stats.file_size})
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
               chain: bool = False,
               progress: Callable[[str, int], Progress | None] | None = None) -> Restored:
    """Every disk and small file of ``snap`` into ``out_dir`` (created if missing); with
    ``chain`` each disk's snapshot tree (`restore_tree`) and the snapshot database."""
    result = Restored()
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise SourceError(f"cannot create the target folder: {e.strerror}", source=out_dir) \
            from None
    vmware = snap.vm.get("kind") == "vmware"
    names: dict[str, str] = {}
    for entry in snap.disks:
        if chain:
            result.written += restore_tree(repo, snap, entry, out_dir, fmt=fmt,
                                           overwrite=overwrite, progress=progress)
            if entry.device:
                names[entry.device] = entry.link(entry.path or "").name
            continue
        bar = progress(f"{snap.vm_name}: {entry.name}", entry.size) if progress else None
        result.written += restore_disk(repo, snap, entry, out_dir, fmt=fmt, subformat=subformat,
                                       overwrite=overwrite, in_folder=vmware, progress=bar)
        if entry.device:
            names[entry.device] = entry.name
    for f in snap.files:
        if vmware and not chain and f.name.lower().endswith(SNAPSHOT_FILES):
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
