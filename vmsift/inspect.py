"""Tell what a file is by its content and decode it into a `Report`.

Each format module that `inspect` knows offers three names:

* ``KIND``: the stable identifier used in JSON (``"vmx"``, ``"nvram"`` ...);
* ``sniff(head: bytes) -> bool``: True when the first bytes (up to `HEAD_SIZE`) are this
  format; it must be cheap and never raise;
* ``inspect(src: ByteSource) -> Report``: decode the whole file.

Formats without any header (raw memory, swap) also name ``EXTENSIONS``, and text formats
whose content test can miss a damaged file (``.vmx``, ``vm.cfg``) name ``EXTENSIONS`` or
file ``NAMES``: those are used only when no content test matched, so the decoder names
what is wrong, and the report then says ``detected_by = "extension"``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType

from .errors import SourceError, UnsupportedError, VmsiftError
from .report import Report
from .source import ByteSource, FileSource

HEAD_SIZE = 64 * 1024


def _detectors() -> list[ModuleType]:
    """Format modules in the order they are tried: binary magics first, loose text last."""
    from .formats import (ctk, memory, nvram, ocfs2, partition, vmcfg, vmlog, vmsd, vmsn, vmtm,
                          vmx, vmxf)
    from .datastore import ova, ovf
    from .formats.vmdk import cowd, descriptor, sesparse, sparse
    return [sparse, cowd, sesparse, ctk, nvram, vmsn, ova, ocfs2, partition, ovf, vmxf, vmtm,
            descriptor, vmlog, vmsd, vmx, vmcfg, memory]


def detect(src: ByteSource) -> tuple[ModuleType, str]:
    """Return the format module for ``src`` and how it was recognised."""
    head = src.read(0, HEAD_SIZE)
    detectors = _detectors()
    for module in detectors:
        if module.sniff(head):
            return module, "content"
    ext = os.path.splitext(src.name)[1].lower()
    name = os.path.basename(src.name).lower()
    for module in detectors:
        if ext in getattr(module, "EXTENSIONS", ()) or name in getattr(module, "NAMES", ()):
            return module, "extension"
    raise UnsupportedError(_not_decodable(src, ext, detectors), source=src.name)


def _not_decodable(src: ByteSource, ext: str, detectors: list[ModuleType]) -> str:
    """Why no detector took ``src``: another disk format (by magic), a datastore volume that
    `ds` reads, or a ``.vmdk`` that is raw data; else the list of what was tried."""
    from .datastore import vmfs
    from .formats import foreign

    if what := foreign.identify(src):
        return f"not a file vmsift can decode: this is {what}"
    if vmfs.probe(src):
        what = "an LVM device of a VMFS datastore" if vmfs.L.probe(src) else \
            "a VMFS datastore volume"
        return f"{what}, read with `vmsift ds info {src.name}` (and ds ls, ds vms ...)"
    if ext == ".vmdk" and (why := foreign.not_vmdk_message(src)):
        return why
    tried = ", ".join(m.KIND for m in detectors)
    return f"not a file vmsift can decode (tried: {tried})"


def inspect_source(src: ByteSource) -> Report:
    module, how = detect(src)
    report = module.inspect(src)
    report.detected_by = how
    return report


@dataclass
class FolderEntry:
    """One file of a folder: its report, or the error that stopped decoding it."""

    name: str
    size: int
    report: Report | None = None
    error: VmsiftError | None = None


def inspect_folder(path: str | os.PathLike) -> list[FolderEntry]:
    """Decode every regular file directly inside ``path``; symlinks are listed, not followed."""
    path = os.fspath(path)
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError as e:
        raise SourceError(f"cannot list folder: {e.strerror}", source=path) from None
    out = []
    for entry in entries:
        if entry.is_symlink():
            out.append(FolderEntry(entry.name, 0, error=UnsupportedError(
                f"symbolic link to {os.readlink(entry.path)!r}, not followed", source=entry.path)))
        elif entry.is_file(follow_symlinks=False):
            item = FolderEntry(entry.name, entry.stat(follow_symlinks=False).st_size)
            try:
                item.report = inspect_path(entry.path)
            except VmsiftError as e:
                item.error = e
            out.append(item)
    return out


def inspect_path(path: str | os.PathLike) -> Report:
    """Decode the file at ``path`` (opened read-only)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise UnsupportedError("is a folder; use inspect_folder", source=path)
    if not os.path.exists(path):
        raise SourceError("no such file", source=path)
    with FileSource(path) as src:
        return inspect_source(src)
