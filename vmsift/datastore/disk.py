"""Open a VMware virtual disk, with its whole snapshot chain, as one read-only `ByteSource`.

A disk is a descriptor (standalone, or embedded in a sparse extent) whose extents are laid
end to end; a delta disk's unallocated grains fall through to its parent, found from
``parentFileNameHint``. Every link is checked: the child's ``parentCID`` must equal the
parent's ``CID`` and capacities must agree (`ChainError`, or a warning when the caller asks
to go on), loops are refused, and no name may lead out of the datastore.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ChainError, ErrorKind, FormatError, Problem, UnsupportedError
from ..formats import foreign
from ..formats.vmdk import cowd, sesparse, sparse
from ..formats.vmdk import descriptor as desc_mod
from ..report import Report, Table, size_field
from ..source import (ByteSource, ConcatSource, OverlaySource, Run, SliceSource,
                      UnavailableSource, ZeroSource)
from .volume import Volume

SECTOR = 512
MAX_CHAIN = 255  # VMware allows 255 links; deeper means a loop we did not see


@dataclass
class Link:
    """One file of a disk chain: its descriptor and its own extents (holes not filled)."""

    path: str
    descriptor: desc_mod.Descriptor
    source: ByteSource
    extent_files: list[str]

    @property
    def cid(self) -> int | None:
        return self.descriptor.cid

    @property
    def parent_cid(self) -> int | None:
        return self.descriptor.parent_cid

    @property
    def capacity(self) -> int:
        return self.source.size

    @property
    def parts(self) -> list[ByteSource]:
        """The link's extents in order (one source, or the parts of a split disk)."""
        return list(self.source.parts) if isinstance(self.source, ConcatSource) else [self.source]

    def allocated(self) -> int:
        """Bytes this link itself stores on the datastore (DATA runs), from the map only;
        0 for a raw device mapping, whose data is on its LUN. Compressed grains
        (streamOptimized) take no more than the file holding them, often far less than they
        inflate to."""
        total = 0
        for part in self.parts:
            if isinstance(part, UnavailableSource):
                continue
            n = part.stored_bytes()
            if isinstance(part, sparse.SparseExtent) and part.compressed:
                n = min(n, part.file.size)
            total += n
        return total

    def to_dict(self) -> dict[str, Any]:
        d = self.descriptor
        return {"path": self.path, "create_type": d.create_type,
                "cid": None if d.cid is None else f"{d.cid:08x}",
                "parent_cid": None if d.parent_cid is None else f"{d.parent_cid:08x}",
                "parent_hint": d.parent_hint, "capacity": self.capacity,
                "allocated": self.allocated(), "extent_files": self.extent_files,
                "change_track_path": d.change_track_path, "raw_device_map": self.raw_device_map()}

    def raw_device_map(self) -> dict[str, Any] | None:
        """Mapping file and compatibility mode of a raw device mapping, else None."""
        rdm = [e for e in self.descriptor.extents if e.type in ("VMFSRDM", "VMFSRAW")]
        if not rdm:
            return None
        physical = (self.descriptor.create_type or "").lower() in (
            "vmfspassthroughrawdevicemap", "vmfsrdmp") or rdm[0].type == "VMFSRAW"
        return {"mapping_file": rdm[0].filename,
                "mode": "physical (passthrough)" if physical else "virtual",
                "data_present": not isinstance(self.source, UnavailableSource)}


class VirtualDisk(ByteSource):
    """The flattened disk: reads and maps go through the chain, newest link first."""

    def __init__(self, volume: Volume, chain: list[Link], warnings: list[Problem]):
        self.volume = volume
        self.chain = chain
        self.warnings = warnings
        top = chain[0]
        self.name = top.path
        self.size = top.capacity
        flat: ByteSource = self.chain[-1].source
        for link in reversed(self.chain[:-1]):
            flat = OverlaySource(link.source, flat, link.path)
        self._flat = flat

    def read(self, offset: int, length: int) -> bytes:
        return self._flat.read(offset, length)

    def prefetch(self, offset: int, length: int) -> None:
        self._flat.prefetch(offset, length)

    def read_many(self, ranges: Sequence[tuple[int, int]], what: str = "data") -> list[bytes]:
        return self._flat.read_many(ranges, what)

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Run]:
        return self._flat.extents(offset, length)

    @property
    def descriptor(self) -> desc_mod.Descriptor:
        return self.chain[0].descriptor

    def damaged(self) -> list[Problem]:
        """With salvage: what read as zeros so far, from every extent of every link."""
        return [note for link in self.chain for part in link.parts
                for note in getattr(part, "damaged", ())]

    def close(self) -> None:
        for link in self.chain:
            link.source.close()


def _load_descriptor(volume: Volume, path: str) -> tuple[desc_mod.Descriptor, ByteSource | None]:
    """The descriptor of ``path`` and, for a monolithic sparse file, the open file itself."""
    src = volume.open(path)
    try:
        if src.read(0, 4) == sparse.MAGIC:
            header = sparse.read_header(src)
            desc = sparse.embedded_descriptor(src, header)
            if desc is None:
                raise FormatError("sparse extent without a descriptor: open its descriptor "
                                  "file instead", source=src.name, offset=28)
            return desc, src
        if why := foreign.not_vmdk_message(src):
            raise UnsupportedError(why, source=src.name)
        desc = desc_mod.read(src)
    except BaseException:
        src.close()
        raise
    src.close()
    return desc, None


@dataclass
class OpenOptions:
    """How to open disks: ``device`` is the LUN behind a raw device mapping (else reads of
    it fail clearly); ``salvage`` reads damaged sparse grains as zeros and records them."""

    device: ByteSource | None = None
    salvage: bool = False


def _open_extent(volume: Volume, base_dir: str, extent: desc_mod.Extent, self_path: str,
                 self_src: ByteSource | None, options: OpenOptions
                 ) -> tuple[ByteSource, str | None]:
    size = extent.sectors * SECTOR
    if extent.type == "ZERO":
        return ZeroSource(size, "ZERO extent"), None
    if extent.filename is None:
        raise FormatError(f"{extent.type} extent on line {extent.line} names no file",
                          source=self_path)
    if extent.type in ("VMFSRDM", "VMFSRAW"):
        if options.device is not None:
            return SliceSource(options.device, (extent.offset or 0) * SECTOR, size,
                               options.device.name), None
        return UnavailableSource(size, extent.filename, (
            f"raw device mapping ({extent.type} {extent.filename!r}): the data is on a LUN "
            "that is not part of the datastore; give the LUN image as the device")), None
    path = self_path if self_src is not None else volume.resolve(base_dir, extent.filename)
    if extent.type in ("FLAT", "VMFS"):
        f = volume.open(path)
        return SliceSource(f, (extent.offset or 0) * SECTOR, size, path), path
    if extent.type in ("SPARSE", "VMFSSPARSE", "SESPARSE"):
        # an embedded descriptor describes its own file, whatever the file is called now
        f = self_src if self_src is not None else volume.open(path)
        ext: ByteSource
        try:
            magic = f.read(0, 8)
            # SPARSE and VMFSSPARSE files are told apart by magic, as VMware's tools do
            if extent.type == "SESPARSE" or magic == sesparse.MAGIC_BYTES:
                ext = sesparse.SeSparseExtent(f)
            elif magic[:4] == cowd.MAGIC:
                ext = cowd.CowdExtent(f)
            else:
                ext = sparse.SparseExtent(f, salvage=options.salvage)
            if ext.size != size:
                raise FormatError(f"extent line {extent.line} says {extent.sectors} sectors, "
                                  f"the {extent.type.lower()} header {ext.size // SECTOR}",
                                  source=path)
        except BaseException:
            if f is not self_src:
                f.close()
            raise
        return ext, path
    raise UnsupportedError(f"{extent.type} extents are not readable yet", source=self_path)


def open_link(volume: Volume, path: str, options: OpenOptions | None = None) -> Link:
    """Open one disk file (descriptor + extents) without its parents."""
    options = options or OpenOptions()
    desc, self_src = _load_descriptor(volume, path)
    base_dir = posixpath.dirname(path)
    parts, files = [], []
    try:
        for extent in desc.extents:
            src, file = _open_extent(volume, base_dir, extent, path, self_src, options)
            parts.append(src)
            if file:
                files.append(file)
    except BaseException:
        for p in parts:
            p.close()
        if self_src is not None:
            self_src.close()
        raise
    if not parts:
        raise FormatError("descriptor has no extents", source=path)
    source = parts[0] if len(parts) == 1 else ConcatSource(parts, path)
    return Link(path, desc, source, files)


def open_disk(volume: Volume, path: str, *, strict: bool = True,
              options: OpenOptions | None = None) -> VirtualDisk:
    """Open the disk at ``path`` on ``volume`` with its whole chain.

    With ``strict=False`` CID and capacity mismatches become warnings; loops, missing parents
    and escapes stay errors. ``options``: the device behind a raw device mapping, salvage.
    """
    chain: list[Link] = []
    warnings: list[Problem] = []
    seen: set[str] = set()
    current = posixpath.normpath(path)
    try:
        while True:
            if current in seen:
                raise ChainError(f"the chain loops back to {current}", source=chain[-1].path)
            if len(chain) >= MAX_CHAIN:
                raise ChainError(f"chain is deeper than {MAX_CHAIN} links", source=path)
            seen.add(current)
            link = open_link(volume, current, options)
            if chain:
                _check_link(chain[-1], link, strict, warnings)
            chain.append(link)
            if not link.descriptor.has_parent:
                break
            hint = link.descriptor.parent_hint
            if not hint:
                raise ChainError("delta disk has a parentCID but no parentFileNameHint",
                                 source=current)
            current = volume.resolve(posixpath.dirname(current), hint)
            if not volume.exists(current):
                raise ChainError(f"parent {hint!r} is missing (looked for {current})",
                                 source=link.path)
    except BaseException:
        for link in chain:
            link.source.close()
        raise
    return VirtualDisk(volume, chain, warnings)


def _check_link(child: Link, parent: Link, strict: bool, warnings: list[Problem]) -> None:
    problems = []
    if child.parent_cid != parent.cid:
        problems.append(
            f"parentCID {child.parent_cid or 0:08x} does not match the parent's CID "
            f"{parent.cid or 0:08x} ({parent.path}): the parent changed after the child was made")
    if parent.capacity > child.capacity:
        problems.append(f"parent {parent.path} is larger ({parent.capacity} bytes) than the "
                        f"child ({child.capacity} bytes)")
    for problem in problems:
        if strict:
            raise ChainError(problem, source=child.path)
        warnings.append(Problem.at(child.path, None, problem, ErrorKind.DAMAGED))


def describe(disk: VirtualDisk) -> Report:
    """The `vmsift disk info` report: chain, extents, geometry, adapter, change tracking."""
    top, base = disk.chain[0], disk.chain[-1]
    links = [link.to_dict() for link in disk.chain]
    ddb = {**base.descriptor.ddb, **top.descriptor.ddb}
    geometry = {k: ddb.get(f"geometry.{k}") for k in ("cylinders", "heads", "sectors")}
    data = {"path": top.path, "capacity": disk.size, "chain": links,
            "extents": [e.to_dict() for e in top.descriptor.extents],
            "adapter": ddb.get("adapterType"), "geometry": geometry,
            "hardware_version": ddb.get("virtualHWVersion"), "uuid": ddb.get("uuid"),
            "change_track_path": top.descriptor.change_track_path}
    fields = {"capacity": size_field(disk.size), "chain length": len(links),
              "adapter": data["adapter"],
              "geometry": "/".join(str(v) for v in geometry.values()) if any(geometry.values())
              else None,
              "change tracking file": data["change_track_path"]}
    chain = Table("chain (newest first)", ["file", "type", "CID", "parentCID", "capacity",
                                           "allocated"],
                  [[d["path"], d["create_type"], d["cid"], d["parent_cid"], d["capacity"],
                    d["allocated"]] for d in links])
    extents = Table("extents of " + top.path, ["access", "sectors", "type", "file", "offset"],
                    [[e.access, e.sectors, e.type, e.filename, e.offset]
                     for e in top.descriptor.extents])
    for link in disk.chain:
        if rdm := link.raw_device_map():
            key = "raw device mapping" + (f" of {link.path}" if len(disk.chain) > 1 else "")
            fields[key] = (
                f"{rdm['mapping_file']}, {rdm['mode']} mode"
                + ("" if rdm["data_present"] else ", LUN not given (--device)"))
    tables = [chain, extents]
    from ..formats import partition  # here: opening a disk (a backup) needs no table

    try:
        table = partition.read_table(disk)
    except UnsupportedError as e:  # the data is elsewhere (a raw device mapping)
        table = partition.PartitionTable(None, disk.size)
        fields["partitions"] = f"not read: {e.message}"
    else:
        fields["partition table"] = table.kind
        tables.append(Table("partitions", ["#", "start", "size", "type", "name"],
                            [[p.index, p.start, p.size, p.type_name, p.name]
                             for p in table.partitions]))
    data["partition_table"] = table.kind
    data["partitions"] = [p.to_dict() for p in table.partitions]
    warnings = list(disk.warnings)
    if table.kind is not None:  # a blank disk without a table is not worth a warning
        warnings += [f"partition table: {w}" for w in table.warnings]
    for link in disk.chain:
        for part in link.parts:
            if isinstance(part, sparse.SparseExtent):
                warnings += [Problem.at(part.name, None, p) for p in part.check()]
    return Report("disk", "VMware virtual disk", data, fields, tables, warnings)
