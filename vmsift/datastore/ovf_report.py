"""The `inspect` report of an OVF package, and `disk info` of a compressed package disk."""

from __future__ import annotations

import hashlib
from typing import Any

from ..errors import VmsiftError
from ..formats import ovf as ovf_mod
from ..formats.vmdk import sparse
from ..report import Report, Table, human_size, size_field
from .ovf import Package, StreamedDisk, manifest_files, open_package_disk
from .ovf_check import signature_status


def describe_streamed(disk: StreamedDisk) -> Report:
    """The `disk info` report of a compressed package disk: what its header tells."""
    h = disk.header
    data = {"path": disk.name, "capacity": disk.size, "compression": "gzip",
            "random_access": False, "header": h.to_dict()}
    return Report("disk", "VMware virtual disk (streamOptimized, gzip-compressed in its "
                  "package)", data, {"capacity": size_field(disk.size),
                                     "grain": size_field(h.grain_size * sparse.SECTOR),
                                     "random access": disk.REASON})


def _disk_rows(pkg: Package) -> tuple[list[list[Any]], list[dict[str, Any]], list[str]]:
    rows, docs, notes = [], [], []
    for i, d in enumerate(pkg.envelope.disks, 1):
        pfile = pkg.files.get(d.file_ref or "")
        ref = pfile.ref if pfile else None
        stored = data = None
        if pfile and not pfile.problem:
            stored = sum(pkg.volume.stat(p).size for p in pfile.parts)
            data, note = _disk_data(pkg, d)
            if note:
                notes.append(f"disk {d.id}: {note}")
        doc = {"index": i, "id": d.id, "file": ref.href if ref else None,
               "capacity": d.capacity, "populated_size": d.populated_size,
               "format": d.format, "stored_size": stored, "data": data,
               "compression": ref.compression if ref else None,
               "chunks": len(pfile.parts) if pfile and pfile.parts and pfile.chunked else None,
               "problem": pfile.problem if pfile else None}
        docs.append(doc)
        rows.append([i, d.id, doc["file"], human_size(d.capacity), human_size(d.populated_size),
                     human_size(data), human_size(stored),
                     (d.format or "").rsplit("#", 1)[-1] or None,
                     doc["compression"] or doc["problem"]])
    return rows, docs, notes


def _disk_data(pkg: Package, disk: ovf_mod.Disk) -> tuple[int | None, str | None]:
    """Bytes of data the disk holds (from its allocation map), or why it is not known."""
    try:
        with open_package_disk(pkg, disk) as d:
            if isinstance(d, StreamedDisk):
                return None, StreamedDisk.REASON
            if disk.capacity is not None and d.size != disk.capacity:
                return d.stored_bytes(), (f"the disk file holds {d.size} bytes, the "
                                          f"descriptor says {disk.capacity}")
            return d.stored_bytes(), None
    except VmsiftError as e:
        return None, str(e)


def _quantity(item: ovf_mod.Item) -> str | None:
    """Memory as a size; any other quantity as the number it is (a CPU count)."""
    if item.quantity is None:
        return None
    if item.resource_type == 4 and (factor := ovf_mod.unit_factor(item.units, 1 << 20)):
        return human_size(item.quantity * factor)
    return str(item.quantity)


def manifest_summary(pkg: Package) -> dict[str, Any] | None:
    """What can be checked without reading the disks: every named file is present and the
    descriptor's own digest matches (`verify` checks them all)."""
    if pkg.manifest is None:
        return None
    out: dict[str, Any] = {"path": pkg.manifest_path, "entries": len(pkg.manifest.entries),
                           "algorithms": sorted({e.algorithm for e in pkg.manifest.entries}),
                           "missing": [], "descriptor": "not listed"}
    by_name, paths = manifest_files(pkg)
    for name, entries in by_name.items():
        if name not in paths:
            out["missing"].append(name)
        elif paths[name] == pkg.descriptor_path:
            ok = all(hashlib.new(e.algorithm.lower(), pkg.descriptor_bytes).hexdigest()
                     == e.hexdigest for e in entries)
            out["descriptor"] = "ok" if ok else "mismatch"
    listed = {e.name for e in pkg.manifest.entries}
    out["not_listed"] = [f.ref.href for f in pkg.files.values() if f.ref.href not in listed
                         and not f.ref.chunk_size]
    return out


def describe(pkg: Package) -> Report:
    """The `inspect` report of a package: systems, hardware, disks, networks, manifest."""
    env = pkg.envelope
    disk_rows, disk_docs, disk_notes = _disk_rows(pkg)
    manifest = manifest_summary(pkg)
    signature = signature_status(pkg)
    data = {"package": pkg.kind, "descriptor": pkg.descriptor_path, "ovf_version": env.version,
            **env.to_dict(), "disks": disk_docs, "manifest": manifest,
            "certificate": signature}
    fields: dict[str, Any] = {"descriptor": pkg.descriptor_path, "OVF version": env.version,
                              "virtual systems": len(env.systems),
                              "collections": ", ".join(env.collections) or None}
    if manifest is None:
        fields["manifest"] = "none"
    else:
        fields["manifest"] = (f"{manifest['entries']} digests ({', '.join(manifest['algorithms'])})"
                              f", descriptor {manifest['descriptor']}, "
                              + (f"missing: {', '.join(manifest['missing'])}"
                                 if manifest["missing"] else "every file present")
                              + "; `vmsift verify` checks every digest")
    if signature:
        fields["certificate"] = (f"{signature['algorithm']} signature of "
                                 f"{signature['signed_file']}: {signature['signature']}"
                                 + (f", signer {signature['subject']}"
                                    if signature["subject"] else ""))
    tables = [Table("virtual systems", ["id", "name", "collection", "os", "cpus", "memory",
                                        "disks"],
                    [[s.id, s.name, s.collection, s.os_type or s.os_description, s.cpus,
                      human_size(s.memory), ", ".join(s.disk_ids())] for s in env.systems])]
    for s in env.systems:
        tables.append(Table(f"hardware of {s.id}", ["instance", "type", "name", "quantity",
                                                     "attached to"],
                            [[i.instance_id, i.kind, i.name, _quantity(i),
                              ", ".join(i.host_resource + i.connection) or None]
                             for i in s.items]))
        props = [p for prod in s.products for p in prod.properties]
        if s.products:
            tables.append(Table(f"product of {s.id}", ["product", "vendor", "version",
                                                        "properties"],
                                [[p.product, p.vendor, p.full_version or p.version,
                                  len(p.properties)] for p in s.products]))
        if props:
            tables.append(Table(f"properties of {s.id}", ["key", "type", "value",
                                                           "configurable"],
                                [[p.key, p.type, p.value, p.user_configurable] for p in props]))
        if s.eulas:
            fields[f"EULA of {s.id}"] = f"{len(s.eulas)} license text(s), " \
                                        f"{sum(len(e) for e in s.eulas)} characters"
    tables.append(Table("disks", ["#", "id", "file", "capacity", "populated", "data",
                                  "stored", "format", "note"], disk_rows))
    tables.append(Table("networks", ["name", "description"],
                        [[n.name, n.description] for n in env.networks]))
    tables.append(Table("files", ["id", "href", "size", "compression", "chunk size"],
                        [[f.id, f.href, f.size, f.compression, f.chunk_size]
                         for f in env.files]))
    if pkg.kind == "ova":
        fields["archive"] = size_field(pkg.volume.src.size)
    title = "OVA package (tar, read in place)" if pkg.kind == "ova" else "OVF descriptor"
    warnings = list(pkg.warnings) + disk_notes
    if manifest and manifest["descriptor"] == "mismatch":
        warnings.append(f"{pkg.descriptor_path}: does not match its manifest digest")
    warnings += [f"{m}: named in the manifest, not in the package"
                 for m in (manifest or {}).get("missing", [])]
    return Report(pkg.kind, title, data, fields, tables, warnings)
