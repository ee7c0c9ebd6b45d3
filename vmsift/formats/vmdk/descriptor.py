"""VMDK text descriptor: header keys, extent lines and the ``ddb.*`` disk database.

A descriptor is a standalone ``.vmdk`` text file or text embedded in a sparse extent. Lines
are kept as written, so ``parse(x).dump() == x``; `Descriptor.set` rewrites one line.

    # Disk DescriptorFile
    version=1
    CID=fffffffe
    parentCID=ffffffff
    createType="monolithicSparse"
    RW 8192 SPARSE "ext2.vmdk"
    ddb.adapterType = "ide"
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ...errors import FormatError
from ...report import Report, Table
from ...source import ByteSource
from .. import dictfile

KIND = "vmdk-descriptor"
MAX_SIZE = 4 * 1024 * 1024
NO_PARENT = 0xFFFFFFFF

_EXTENT = re.compile(
    r'^[ \t]*(RW|RDONLY|NOACCESS)[ \t]+(\d+)[ \t]+([A-Za-z]+)'
    r'(?:[ \t]+"((?:[^"\\]|\\.)*)"(?:[ \t]+(\d+))?)?((?:[ \t]+\S+)*)[ \t]*\r?\n?$', re.I)
EXTENT_TYPES = {"FLAT", "SPARSE", "ZERO", "VMFS", "VMFSSPARSE", "VMFSRDM", "VMFSRAW", "SESPARSE"}


@dataclass
class Extent:
    """``<access> <sectors> <type> ["<file>" [<offset>]]``; sizes in 512-byte sectors."""

    access: str
    sectors: int
    type: str
    filename: str | None
    offset: int | None
    extra: list[str]
    line: int

    def to_dict(self) -> dict[str, Any]:
        return {"access": self.access, "sectors": self.sectors, "type": self.type,
                "filename": self.filename, "offset": self.offset, "extra": self.extra,
                "line": self.line}


@dataclass
class DescLine:
    number: int
    raw: str
    kind: str  # "blank", "comment", "header", "ddb", "extent", "unknown"
    key: str | None = None
    value: str | None = None
    extent: Extent | None = None


@dataclass
class Descriptor:
    lines: list[DescLine]
    encoding: str = "utf-8"
    source: str = "<bytes>"
    warnings: list[str] = field(default_factory=list)

    def _values(self, kind: str) -> dict[str, str]:
        return {ln.key.lower(): ln.value for ln in self.lines if ln.kind == kind}

    @property
    def header(self) -> dict[str, str]:
        """Header keys as written (original case), last line wins."""
        return {ln.key: ln.value for ln in self.lines if ln.kind == "header"}

    @property
    def ddb(self) -> dict[str, str]:
        """``ddb.*`` entries keyed without the ``ddb.`` prefix, as written."""
        return {ln.key[4:]: ln.value for ln in self.lines if ln.kind == "ddb"}

    def get(self, key: str) -> str | None:
        return self._values("header").get(key.lower())

    def ddb_get(self, key: str) -> str | None:
        return self._values("ddb").get("ddb." + key.lower())

    @property
    def extents(self) -> list[Extent]:
        return [ln.extent for ln in self.lines if ln.extent is not None]

    @property
    def version(self) -> int | None:
        return _int(self.get("version"), 10)

    @property
    def cid(self) -> int | None:
        return _int(self.get("CID"), 16)

    @property
    def parent_cid(self) -> int | None:
        return _int(self.get("parentCID"), 16)

    @property
    def create_type(self) -> str | None:
        return self.get("createType")

    @property
    def parent_hint(self) -> str | None:
        return self.get("parentFileNameHint")

    @property
    def change_track_path(self) -> str | None:
        return self.get("changeTrackPath")

    @property
    def has_parent(self) -> bool:
        return self.parent_cid not in (None, NO_PARENT) or bool(self.parent_hint)

    @property
    def capacity_sectors(self) -> int:
        return sum(e.sectors for e in self.extents)

    def set(self, key: str, value: str) -> None:
        """Set a header (``CID``) or ddb (``ddb.uuid``) key, rewriting its line in place."""
        kind = "ddb" if key.lower().startswith("ddb.") else "header"
        quoted = kind == "ddb" or key.lower() not in ("version", "cid", "parentcid")
        text = f'{key} = "{value}"' if kind == "ddb" else (
            f'{key}="{value}"' if quoted else f"{key}={value}")
        for ln in reversed(self.lines):
            if ln.kind == kind and ln.key.lower() == key.lower():
                ending = ln.raw[len(ln.raw.rstrip("\r\n")):] or "\n"
                ln.raw, ln.value = text + ending, value
                return
        raise KeyError(key)

    def dump(self) -> bytes:
        return "".join(ln.raw for ln in self.lines).encode(self.encoding, "surrogateescape")

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "encoding": self.get("encoding"),
                "cid": _hex(self.cid), "parent_cid": _hex(self.parent_cid),
                "create_type": self.create_type, "parent_hint": self.parent_hint,
                "is_native_snapshot": self.get("isNativeSnapshot"),
                "change_track_path": self.change_track_path,
                "capacity_sectors": self.capacity_sectors,
                "capacity_bytes": self.capacity_sectors * 512,
                "extents": [e.to_dict() for e in self.extents],
                "header": self.header, "ddb": self.ddb}


def _int(value: str | None, base: int) -> int | None:
    try:
        return int(value.strip(), base) if value is not None else None
    except ValueError:
        return None


def _hex(value: int | None) -> str | None:
    return None if value is None else f"{value:08x}"


def _classify(number: int, raw: str, warnings: list[str]) -> DescLine:
    body = raw.strip()
    if not body or body == "\0":
        return DescLine(number, raw, "blank")
    if body.startswith("#"):
        return DescLine(number, raw, "comment")
    if m := _EXTENT.match(raw):
        etype = m[3].upper()
        if etype not in EXTENT_TYPES:
            warnings.append(f"line {number}: unknown extent type {m[3]!r}")
        extent = Extent(m[1].upper(), int(m[2]), etype,
                        None if m[4] is None else m[4].replace('\\"', '"'),
                        None if m[5] is None else int(m[5]), m[6].split(), number)
        return DescLine(number, raw, "extent", extent=extent)
    if parsed := dictfile.parse_assignment(raw):
        key, value, _ = parsed
        kind = "ddb" if key.lower().startswith("ddb.") else "header"
        return DescLine(number, raw, kind, key, value)
    warnings.append(f"line {number}: not understood: {body[:60]!r}")
    return DescLine(number, raw, "unknown")


def parse(data: bytes, source: str = "<bytes>") -> Descriptor:
    """Parse descriptor text (cut at the first NUL when embedded in a sparse extent)."""
    if b"\0" in data:
        data = data[:data.index(b"\0")]
    m = re.search(rb'^[ \t]*encoding[ \t]*=[ \t]*"([^"\r\n]{1,40})"', data, re.M | re.I)
    codec, known = dictfile.codec_for(m.group(1).decode("ascii", "replace") if m else None)
    warnings: list[str] = [] if known else ["unknown encoding, read as UTF-8"]
    text = data.decode(codec, "surrogateescape")
    lines = [_classify(n, raw, warnings) for n, raw in enumerate(dictfile.split_lines(text), 1)]
    desc = Descriptor(lines, codec, source, warnings)
    if not desc.extents and not desc.create_type:
        raise FormatError("no createType and no extent lines: not a VMDK descriptor",
                          source=source, offset=0)
    for key, base in (("CID", 16), ("parentCID", 16), ("version", 10)):
        value = desc.get(key)
        if value is not None and _int(value, base) is None:
            warnings.append(f"{key} {value!r} is not a number")
    return desc


def read(src: ByteSource) -> Descriptor:
    return parse(src.read_all(MAX_SIZE, "VMDK descriptor"), src.name)


def sniff(head: bytes) -> bool:
    text = head[:4096].lstrip()
    if text.startswith(b"# Disk DescriptorFile"):
        return True
    if b"\0" in text or b"createType" not in text:
        return False
    return any(_EXTENT.match(ln) for ln in text.decode("latin-1").splitlines())


def report_parts(desc: Descriptor) -> tuple[dict[str, Any], list[Table]]:
    """Readable fields and tables of a descriptor (shared with the sparse extent report)."""
    fields = {"create type": desc.create_type, "version": desc.version,
              "CID": _hex(desc.cid), "parent CID": _hex(desc.parent_cid),
              "parent": desc.parent_hint,
              "capacity": f"{desc.capacity_sectors * 512} bytes ({desc.capacity_sectors} sectors)",
              "adapter": desc.ddb_get("adapterType"),
              "change tracking file": desc.change_track_path}
    extents = Table("extents", ["access", "sectors", "type", "file", "offset"],
                    [[e.access, e.sectors, e.type, e.filename, e.offset] for e in desc.extents])
    ddb = Table("disk database", ["key", "value"], [[f"ddb.{k}", v] for k, v in desc.ddb.items()])
    return fields, [extents, ddb]


def inspect(src: ByteSource) -> Report:
    desc = read(src)
    fields, tables = report_parts(desc)
    return Report(KIND, "VMDK descriptor", desc.to_dict(), fields, tables, desc.warnings)
