"""OVF packages: the ``.ovf`` envelope (OVF 0.9, 1.x, 2.x), the ``.mf`` manifest, the ``.cert``.

The envelope is XML, parsed with defusedxml: a DTD, an entity declaration or an external
reference is refused (`FormatError`), so no entity expansion and no network or file access
can happen. Elements are matched by local name, so the OVF 0.9 (VMware), 1.x and 2.x
namespaces and the CIM RASD/SASD/EPASD item namespaces read alike. Sizes follow the
``AllocationUnits`` programmatic units (``byte * 2^30``, ``MegaBytes`` ...).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import FormatError, LimitError, Problem

KIND = "ovf"
EXTENSIONS = (".ovf",)
MAX_DESCRIPTOR = 16 << 20
MAX_MANIFEST = 4 << 20
MAX_DEPTH = 16  # VirtualSystemCollection nesting

#: CIM_ResourceAllocationSettingData.ResourceType values
RESOURCE_TYPES = {
    1: "other", 2: "computer system", 3: "processor", 4: "memory", 5: "IDE controller",
    6: "parallel SCSI HBA", 7: "FC HBA", 8: "iSCSI HBA", 9: "IB HCA", 10: "ethernet adapter",
    11: "other network adapter", 12: "I/O slot", 13: "I/O device", 14: "floppy drive",
    15: "CD drive", 16: "DVD drive", 17: "disk drive", 18: "tape drive", 19: "storage extent",
    20: "other storage device", 21: "serial port", 22: "parallel port", 23: "USB controller",
    24: "graphics controller", 25: "IEEE 1394 controller", 26: "partitionable unit",
    27: "base partitionable unit", 28: "power", 29: "cooling capacity",
    30: "ethernet switch port", 31: "logical disk", 32: "storage volume",
    33: "ethernet connection", 35: "sound card",
}
_UNIT_WORDS = {"byte": 1, "bytes": 1, "kilobytes": 1 << 10, "kb": 1 << 10,
               "megabytes": 1 << 20, "mb": 1 << 20, "gigabytes": 1 << 30, "gb": 1 << 30,
               "terabytes": 1 << 40, "tb": 1 << 40}
_UNIT = re.compile(r"^\s*byte\s*(?:\*\s*(\d+)\s*\^\s*(\d+))?\s*$", re.I)
_MANIFEST_LINE = re.compile(rb"^(SHA1|SHA256|SHA512)\s*\((.+)\)\s*=\s*([0-9A-Fa-f]+)\s*$")
DIGEST_BYTES = {"SHA1": 20, "SHA256": 32, "SHA512": 64}


def unit_factor(units: str | None, default: int = 1) -> int | None:
    """Bytes per unit of an OVF allocation unit (``byte * 2^30``, ``MegaBytes``); None if
    it is not a byte unit (``hertz * 10^6``)."""
    if not units:
        return default
    if (m := _UNIT.match(units)) is not None:
        return int(m[1]) ** int(m[2]) if m[1] else 1
    return _UNIT_WORDS.get(units.strip().lower())


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _attr(el: ET.Element, name: str, default: str | None = None) -> str | None:
    """Attribute ``name`` whatever its namespace (``ovf:href`` and ``href`` alike)."""
    for key, value in el.attrib.items():
        if _local(key) == name:
            return value
    return default


def _section(el: ET.Element) -> str:
    """The element's name; for OVF 0.9's generic ``<Section xsi:type="ovf:X_Type">`` (and
    ``<Content ...>`` for systems), X."""
    name = _local(el.tag)
    if name in ("Section", "Content") and (kind := _attr(el, "type")):
        return kind.rsplit(":", 1)[-1].removesuffix("_Type")
    return name


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if _section(c) == name]


def _child(el: ET.Element, name: str) -> ET.Element | None:
    found = _children(el, name)
    return found[0] if found else None


def _text(el: ET.Element | None, name: str | None = None) -> str | None:
    if el is not None and name is not None:
        el = _child(el, name)
    if el is None or el.text is None:
        return None
    return el.text.strip()


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


@dataclass
class FileRef:
    """A ``References/File``: a file of the package."""

    id: str
    href: str
    size: int | None = None
    compression: str | None = None   # "gzip" or None
    chunk_size: int | None = None     # set when split into href.000000000, .000000001 ...


@dataclass
class Disk:
    """A ``DiskSection/Disk``: a virtual disk, its capacity in bytes and its file."""

    id: str
    file_ref: str | None
    capacity: int | None
    populated_size: int | None
    format: str | None
    capacity_text: str | None = None   # the attribute as written (may be ${property})
    parent_ref: str | None = None


@dataclass
class Network:
    name: str
    description: str | None = None


@dataclass
class Item:
    """One ``VirtualHardwareSection`` item (Item, StorageItem, EthernetPortItem)."""

    resource_type: int | None
    kind: str
    name: str | None
    instance_id: str | None
    quantity: int | None = None
    units: str | None = None
    host_resource: list[str] = field(default_factory=list)
    connection: list[str] = field(default_factory=list)
    parent: str | None = None
    address_on_parent: str | None = None
    subtype: str | None = None
    automatic_allocation: str | None = None


@dataclass
class Property:
    key: str
    type: str | None
    value: str | None
    user_configurable: bool = False
    label: str | None = None


@dataclass
class Product:
    """A ``ProductSection``: who made the appliance and its properties."""

    product: str | None = None
    vendor: str | None = None
    version: str | None = None
    full_version: str | None = None
    class_: str | None = None
    instance: str | None = None
    properties: list[Property] = field(default_factory=list)


@dataclass
class VirtualSystem:
    id: str | None
    name: str | None
    info: str | None
    os_id: int | None = None
    os_description: str | None = None
    os_type: str | None = None           # vmw:osType and friends
    system_types: list[str] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    products: list[Product] = field(default_factory=list)
    eulas: list[str] = field(default_factory=list)
    collection: str | None = None        # id of the VirtualSystemCollection it is in

    @property
    def cpus(self) -> int | None:
        return next((i.quantity for i in self.items if i.resource_type == 3), None)

    @property
    def memory(self) -> int | None:
        """Memory in bytes."""
        for item in self.items:
            if item.resource_type == 4 and item.quantity is not None:
                factor = unit_factor(item.units, 1 << 20)
                return item.quantity * factor if factor else None
        return None

    def disk_ids(self) -> list[str]:
        """The ``ovf:/disk/<id>`` disks the hardware attaches, in item order."""
        out = []
        for item in self.items:
            for host in item.host_resource:
                for prefix in ("ovf:/disk/", "/disk/"):
                    if host.startswith(prefix):
                        out.append(host[len(prefix):])
        return out


@dataclass
class Envelope:
    version: str                 # "0.9", "1.x" or "2.x"
    files: list[FileRef]
    disks: list[Disk]
    networks: list[Network]
    systems: list[VirtualSystem]
    collections: list[str] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def file(self, ref: str | None) -> FileRef | None:
        return next((f for f in self.files if f.id == ref), None)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["warnings"] = [str(w) for w in self.warnings]
        for system, out in zip(self.systems, d["systems"]):
            out["cpus"], out["memory"] = system.cpus, system.memory
            out["disks"] = system.disk_ids()
        return d


_NAMESPACES = {"http://schemas.dmtf.org/ovf/envelope/1": "1.x",
               "http://schemas.dmtf.org/ovf/envelope/2": "2.x",
               "http://www.vmware.com/schema/ovf/1/envelope": "0.9"}


def sniff(head: bytes) -> bool:
    """An XML document whose root is an OVF ``Envelope``."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text.startswith(b"<"):
        return False
    return b"Envelope" in text[:4096] and any(ns.encode() in text[:8192] for ns in _NAMESPACES)


def _xml(data: bytes, source: str) -> ET.Element:
    import defusedxml.ElementTree as safe
    from defusedxml import DefusedXmlException

    try:
        return safe.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as e:
        raise FormatError(f"hostile XML refused: {e}", source=source) from None
    except ET.ParseError as e:
        line, col = e.position
        raise FormatError(f"not well-formed XML: line {line}, column {col}",
                          source=source, offset=_line_offset(data, line) + col) from None


def _line_offset(data: bytes, line: int) -> int:
    pos = 0
    for _ in range(line - 1):
        nxt = data.find(b"\n", pos)
        if nxt < 0:
            break
        pos = nxt + 1
    return pos


def _file(el: ET.Element) -> FileRef:
    return FileRef(_attr(el, "id") or "", _attr(el, "href") or "", _int(_attr(el, "size")),
                   _attr(el, "compression") or None, _int(_attr(el, "chunkSize")))


def _disk(el: ET.Element, warnings: list[Problem], source: str) -> Disk:
    text = _attr(el, "capacity")
    units = _attr(el, "capacityAllocationUnits")
    capacity = _int(text)
    factor = unit_factor(units)
    disk_id = _attr(el, "diskId") or ""
    if capacity is not None and factor:
        capacity *= factor
    elif text is not None:
        warnings.append(Problem.at(source, None, f"disk {disk_id!r}: capacity {text!r} "
                                                 f"({units or 'bytes'}) is not a byte count"))
        capacity = None
    return Disk(disk_id, _attr(el, "fileRef"), capacity,
                _int(_attr(el, "populatedSize")), _attr(el, "format"), text,
                _attr(el, "parentRef"))


def _item(el: ET.Element) -> Item:
    values: dict[str, list[str]] = {}
    for child in el:
        if child.text is not None:
            values.setdefault(_local(child.tag), []).append(child.text.strip())
    one = lambda key: values.get(key, [None])[0]  # noqa: E731
    rtype = _int(one("ResourceType"))
    return Item(rtype, RESOURCE_TYPES.get(rtype, f"type {rtype}") if rtype else "unknown",
                one("ElementName") or one("Caption"), one("InstanceID") or one("InstanceId"),
                _int(one("VirtualQuantity")), one("AllocationUnits"),
                values.get("HostResource", []), values.get("Connection", []), one("Parent"),
                one("AddressOnParent"), one("ResourceSubType"), one("AutomaticAllocation"))


def _product(el: ET.Element) -> Product:
    p = Product(_text(el, "Product"), _text(el, "Vendor"), _text(el, "Version"),
                _text(el, "FullVersion"), _attr(el, "class"), _attr(el, "instance"))
    for prop in el.iter():
        if _local(prop.tag) == "Property":
            p.properties.append(Property(
                _attr(prop, "key") or "", _attr(prop, "type"), _attr(prop, "value"),
                (_attr(prop, "userConfigurable") or "").lower() == "true",
                _text(prop, "Label")))
    return p


def _system(el: ET.Element, collection: str | None) -> VirtualSystem:
    vs = VirtualSystem(_attr(el, "id"), _text(el, "Name"), _text(el, "Info"),
                       collection=collection)
    for section in el:
        name = _section(section)
        if name == "OperatingSystemSection":
            vs.os_id = _int(_attr(section, "id"))
            vs.os_description = _text(section, "Description")
            vs.os_type = _attr(section, "osType")
        elif name == "VirtualHardwareSection":
            for part in section:
                local = _local(part.tag)
                if local == "System":
                    vs.system_types += [c.text.strip() for c in part if c.text and
                                        _local(c.tag) == "VirtualSystemType"]
                elif local in ("Item", "StorageItem", "EthernetPortItem"):
                    vs.items.append(_item(part))
        elif name == "ProductSection":
            vs.products.append(_product(section))
        elif name == "EulaSection":
            vs.eulas.append(_text(section, "License") or "")
    return vs


def _systems(el: ET.Element, collection: str | None, out: list[VirtualSystem],
             collections: list[str], depth: int, source: str) -> None:
    if depth > MAX_DEPTH:
        raise LimitError(f"virtual system collections nest deeper than {MAX_DEPTH}",
                         source=source)
    for child in el:
        name = _section(child)
        if name == "VirtualSystem":
            out.append(_system(child, collection))
        elif name == "VirtualSystemCollection":
            cid = _attr(child, "id") or f"collection{len(collections)}"
            collections.append(cid)
            _systems(child, cid, out, collections, depth + 1, source)


def parse(data: bytes, source: str = "<ovf>") -> Envelope:
    """Decode an OVF descriptor."""
    if len(data) > MAX_DESCRIPTOR:
        raise LimitError(f"descriptor is {len(data)} bytes, more than {MAX_DESCRIPTOR}",
                         source=source)
    root = _xml(data, source)
    if _local(root.tag) != "Envelope":
        raise FormatError(f"root element is {_local(root.tag)!r}, not an OVF Envelope",
                          source=source)
    ns = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
    warnings: list[Problem] = []
    version = _NAMESPACES.get(ns)
    if version is None:
        warnings.append(Problem.at(source, None, f"unknown envelope namespace {ns!r}"))
        version = "unknown"
    refs = _child(root, "References")
    files = [_file(f) for f in _children(refs, "File")] if refs is not None else []
    disks: list[Disk] = []
    networks: list[Network] = []
    for section in root:
        name = _section(section)
        if name == "DiskSection":
            disks += [_disk(d, warnings, source) for d in _children(section, "Disk")]
        elif name == "NetworkSection":
            networks += [Network(_attr(n, "name") or "", _text(n, "Description"))
                         for n in _children(section, "Network")]
    systems: list[VirtualSystem] = []
    collections: list[str] = []
    _systems(root, None, systems, collections, 0, source)
    env = Envelope(version, files, disks, networks, systems, collections, warnings)
    _check(env, source)
    return env


def _check(env: Envelope, source: str) -> None:
    """Cross-references: disks name existing files, hardware names existing disks."""
    ids = {f.id for f in env.files}
    for f in env.files:
        if not f.href:
            env.warnings.append(Problem.at(source, None, f"file {f.id!r} has no href"))
        if f.compression not in (None, "gzip", "identity"):
            env.warnings.append(Problem.at(source, None, f"file {f.href!r}: compression "
                                                         f"{f.compression!r} is unknown"))
    for d in env.disks:
        if d.file_ref and d.file_ref not in ids:
            env.warnings.append(Problem.at(source, None, f"disk {d.id!r} names file "
                                                         f"{d.file_ref!r}, not in References"))
    disk_ids = {d.id for d in env.disks}
    for vs in env.systems:
        for ref in vs.disk_ids():
            if ref not in disk_ids:
                env.warnings.append(Problem.at(source, None, f"system {vs.id!r} attaches disk "
                                                             f"{ref!r}, not in DiskSection"))


# --- manifest and certificate ---------------------------------------------------------------


@dataclass
class Digest:
    algorithm: str   # SHA1 | SHA256 | SHA512
    name: str
    hexdigest: str
    line: int


@dataclass
class Manifest:
    entries: list[Digest]
    warnings: list[Problem] = field(default_factory=list)


def parse_manifest(data: bytes, source: str = "<mf>") -> Manifest:
    """``SHA256(name)= hex`` lines (SHA1 and SHA512 too); other lines are warnings."""
    if len(data) > MAX_MANIFEST:
        raise LimitError(f"manifest is {len(data)} bytes, more than {MAX_MANIFEST}",
                         source=source)
    out = Manifest([])
    offset = 0
    for number, line in enumerate(data.splitlines(keepends=True), 1):
        stripped = line.strip()
        if stripped:
            m = _MANIFEST_LINE.match(stripped)
            if m is None or len(m[3]) != 2 * DIGEST_BYTES[m[1].decode()]:
                out.warnings.append(Problem.at(source, offset, f"line {number} is not a "
                                                               "digest line"))
            else:
                out.entries.append(Digest(m[1].decode(), m[2].decode("utf-8", "replace"),
                                          m[3].decode().lower(), number))
        offset += len(line)
    if not out.entries:
        raise FormatError("manifest has no digest lines", source=source)
    return out


@dataclass
class Certificate:
    """A ``.cert``: the signature of the manifest and the signer's certificate(s) (PEM)."""

    algorithm: str | None
    signed_file: str | None
    signature: bytes | None
    certificates: list[bytes]   # PEM blocks


_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def parse_certificate(data: bytes, source: str = "<cert>") -> Certificate:
    if len(data) > MAX_MANIFEST:
        raise LimitError(f"certificate file is {len(data)} bytes", source=source)
    algorithm = signed = signature = None
    for line in data.splitlines():
        m = _MANIFEST_LINE.match(line.strip())
        if m is not None:
            algorithm, signed = m[1].decode(), m[2].decode("utf-8", "replace")
            if len(m[3]) % 2:
                raise FormatError("the signature has an odd number of hex digits",
                                  source=source)
            signature = bytes.fromhex(m[3].decode())
            break
    certs = _PEM.findall(data)
    if signature is None and not certs:
        raise FormatError("neither a signature line nor a PEM certificate", source=source)
    return Certificate(algorithm, signed, signature, certs)
