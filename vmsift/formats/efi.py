"""UEFI data structures that firmware variable stores hold, decoded to plain values.

Reusable by any store reader (VMware ``.nvram`` today): GUIDs with friendly names for the
well-known vendors, variable attributes, ``EFI_LOAD_OPTION`` (``Boot####``), device paths
rendered in the UEFI text form (``PciRoot(0x0)/Pci(0x15,0x0)/Scsi(0x0,0x0)/HD(...)``),
``EFI_SIGNATURE_LIST`` (``PK``/``KEK``/``db``/``dbx``), ``EFI_TIME`` and the
``EFI_VARIABLE_AUTHENTICATION_2`` header. Layouts follow the UEFI specification (2.x,
chapters "Device Path Protocol", "Boot Manager", "Secure Boot and Driver Signing").

Every decoder takes bytes it is given and never reads past them: damaged input gives a
best-effort value plus problems in ``warnings`` lists, or `FormatError` where noted.
"""

from __future__ import annotations

import enum
import hashlib
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from .layout import Bytes, Int8ul, Int16sl, Int16ul, Int32ul, Struct

from ..errors import FormatError

# --- GUIDs ------------------------------------------------------------------------------------

EFI_GLOBAL_VARIABLE = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
EFI_IMAGE_SECURITY_DATABASE = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
EFI_CERT_X509 = "a5c059a1-94e4-4aa7-87b5-ab155c2bf072"
EFI_CERT_SHA256 = "c1c41626-504c-4092-aca9-41f936934328"
EFI_CERT_EXTERNAL_MANAGEMENT = "452e8ced-dfff-4b8c-ae01-5118862e682c"

#: Vendor GUIDs of variables and GUIDs of signature / certificate types (UEFI spec, EDK II).
KNOWN_GUIDS: dict[str, str] = {
    EFI_GLOBAL_VARIABLE: "EFI global variable",
    EFI_IMAGE_SECURITY_DATABASE: "EFI image security database",
    "605dab50-e046-4300-abb6-3dd810dd8b23": "shim",
    "77fa9abd-0359-4d32-bd60-28f4e78f784b": "Microsoft",
    "4c19049f-4137-4dd3-9c10-8b97a83ffdfa": "EDK II memory type information",
    "eb704011-1402-11d3-8e77-00a0c969723b": "EFI monotonic counter (MTC)",
    "e20939be-32d4-41be-a150-897f85d49829": "TCG memory overwrite request control",
    "bb983ccf-151d-40e1-a07b-4a17be168292": "TCG memory overwrite request control lock",
    "0e8c545b-a2ee-470d-8e26-bda1a13c0aa3": "EDK II last enumerated language",
    "9fb9a8a1-2f4a-43a6-889c-d0f7b6c47ad5": "EFI DHCP6 service binding",
    "937fe521-95ae-4d1a-8929-48bcd90ad31a": "EFI IPv6 config",
    "4b47d616-a8d6-4552-9d44-ccad2e0f4cf9": "iSCSI config",
    EFI_CERT_X509: "EFI_CERT_X509",
    EFI_CERT_SHA256: "EFI_CERT_SHA256",
    "826ca512-cf10-4ac9-b187-be01496631bd": "EFI_CERT_SHA1",
    "3c5766e8-269c-4e34-aa14-ed776e85b3b6": "EFI_CERT_RSA2048",
    "e2b36190-879b-4a3d-ad8d-f2e7bba32784": "EFI_CERT_RSA2048_SHA256",
    "3bd2a492-96c0-4079-b420-fcf98ef103ed": "EFI_CERT_X509_SHA256",
    "7076876e-80c2-4ee6-aad2-28b349a6865b": "EFI_CERT_X509_SHA384",
    "446dbf63-2502-4cda-bcfa-2465d2b0fe9d": "EFI_CERT_X509_SHA512",
    "ff3e5307-9fd0-48c9-85f1-8ad56c701e01": "EFI_CERT_SHA384",
    "093e0fae-a6c4-4f50-9f1b-d41e2b89c19a": "EFI_CERT_SHA512",
    "4aafd29d-68df-49ee-8aa9-347d375665a7": "EFI_CERT_TYPE_PKCS7",
    "a7717414-c616-4977-9420-844712a735bf": "EFI_CERT_TYPE_RSA2048_SHA256",
    EFI_CERT_EXTERNAL_MANAGEMENT: "EFI_CERT_EXTERNAL_MANAGEMENT",
}


def guid_str(raw: bytes) -> str:
    """The text form of a 16-byte EFI GUID (first three fields little-endian)."""
    return str(uuid.UUID(bytes_le=bytes(raw[:16])))


def guid_bytes(text: str) -> bytes:
    """The 16 on-disk bytes of a GUID given as text."""
    return uuid.UUID(text).bytes_le


def guid_name(guid: str) -> str | None:
    return KNOWN_GUIDS.get(guid.lower())


# --- variable attributes ------------------------------------------------------------------------

class VarAttr(enum.IntFlag):
    NON_VOLATILE = 0x01
    BOOTSERVICE_ACCESS = 0x02
    RUNTIME_ACCESS = 0x04
    HARDWARE_ERROR_RECORD = 0x08
    AUTHENTICATED_WRITE_ACCESS = 0x10
    TIME_BASED_AUTHENTICATED_WRITE_ACCESS = 0x20
    APPEND_WRITE = 0x40
    ENHANCED_AUTHENTICATED_ACCESS = 0x80


def attr_names(value: int) -> list[str]:
    """Flag names of a variable's attributes; unknown bits as ``0x...``."""
    names = [f.name for f in VarAttr if value & f.value]
    rest = value & ~sum(f.value for f in VarAttr)
    if rest:
        names.append(f"{rest:#x}")
    return names


# --- EFI_TIME and the time-based authentication header -------------------------------------------

EfiTime = Struct(
    "year" / Int16ul, "month" / Int8ul, "day" / Int8ul, "hour" / Int8ul, "minute" / Int8ul,
    "second" / Int8ul, "pad1" / Int8ul, "nanosecond" / Int32ul, "timezone" / Int16sl,
    "daylight" / Int8ul, "pad2" / Int8ul,
)
# EFI_VARIABLE_AUTHENTICATION_2 as it sits before the data of a time-authenticated
# variable: the time stamp, then a WIN_CERTIFICATE_UEFI_GUID header.
AuthHeader = Struct(
    "timestamp" / EfiTime,
    "cert_length" / Int32ul,
    "cert_revision" / Int16ul,
    "cert_type" / Int16ul,
    "cert_type_guid" / Bytes(16),
)
AUTH_HEADER_SIZE = AuthHeader.sizeof()
assert AUTH_HEADER_SIZE == 40


def time_text(t: Any) -> str | None:
    """An EFI_TIME as ISO 8601, or None when all zero / impossible."""
    if t.year == 0 and t.month == 0 and t.day == 0:
        return None
    if not (1 <= t.month <= 12 and 1 <= t.day <= 31 and t.hour < 24 and t.minute < 60
            and t.second < 60):
        return None
    text = (f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:"
            f"{t.second:02d}")
    if t.timezone == 0:
        return text + "Z"
    if -1440 <= t.timezone <= 1440:
        sign = "+" if t.timezone > 0 else "-"
        m = abs(t.timezone)
        return f"{text}{sign}{m // 60:02d}:{m % 60:02d}"
    return text  # 0x7FF = EFI_UNSPECIFIED_TIMEZONE: local time


def decode_auth_header(raw: bytes) -> dict[str, Any]:
    """The 40-byte header of a time-based authenticated variable."""
    h = AuthHeader.parse(raw[:AUTH_HEADER_SIZE])
    guid = guid_str(h.cert_type_guid)
    return {"timestamp": time_text(h.timestamp), "cert_length": h.cert_length,
            "cert_revision": h.cert_revision, "cert_type": h.cert_type,
            "cert_type_guid": guid, "cert_type_name": guid_name(guid)}


# --- device paths --------------------------------------------------------------------------------

NodeHeader = Struct("type" / Int8ul, "subtype" / Int8ul, "length" / Int16ul)
MAX_NODES = 256

HW, ACPI, MSG, MEDIA, BBS, END = 1, 2, 3, 4, 5, 0x7F


@dataclass
class DevicePathNode:
    type: int
    subtype: int
    data: bytes
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "subtype": self.subtype, "data_hex": self.data.hex(),
                "text": self.text}


@dataclass
class DevicePath:
    """A device path: nodes (end nodes included) and its text; ``warnings`` name damage."""

    nodes: list[DevicePathNode]
    text: str
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "nodes": [n.to_dict() for n in self.nodes],
                "warnings": self.warnings}


def _u(data: bytes, pos: int, size: int) -> int:
    return int.from_bytes(data[pos:pos + size], "little")


def utf16z(data: bytes) -> str:
    """UTF-16LE up to the first NUL character; bad code units replaced."""
    end = len(data) - len(data) % 2
    for i in range(0, end, 2):
        if data[i] == 0 and data[i + 1] == 0:
            end = i
            break
    return data[:end].decode("utf-16-le", "replace")


def _eisa(hid: int) -> str:
    """An ACPI _HID in EISA form (``PNP0A03``) when it has the EISA signature, else hex."""
    if hid & 0xFFFF == 0x41D0:
        return f"PNP{hid >> 16:04X}"
    return f"{hid:#x}"


def _generic(kind: str, t: int, s: int, data: bytes) -> str:
    """The spec's fallback text: ``Path(type,subtype,hex)`` or ``Msg(subtype,hex)`` etc."""
    args = ([f"{t:#x}"] if kind == "Path" else []) + [f"{s:#x}"]
    if data:
        args.append(data.hex().upper())
    return f"{kind}({','.join(args)})"


def _vendor(prefix: str, data: bytes) -> str:
    if len(data) < 16:
        return f"{prefix}({data.hex().upper()})"
    tail = data[16:]
    guid = guid_str(data[:16]).upper()
    return f"{prefix}({guid},{tail.hex().upper()})" if tail else f"{prefix}({guid})"


def node_text(t: int, s: int, d: bytes) -> str:
    """The UEFI text form of one device path node; unknown nodes in generic form."""
    n = len(d)
    if t == HW:
        if s == 1 and n >= 2:
            return f"Pci({d[1]:#x},{d[0]:#x})"
        if s == 2 and n >= 1:
            return f"PcCard({d[0]:#x})"
        if s == 3 and n >= 20:
            return f"MemoryMapped({_u(d, 0, 4):#x},{_u(d, 4, 8):#x},{_u(d, 12, 8):#x})"
        if s == 4:
            return _vendor("VenHw", d)
        if s == 5 and n >= 4:
            return f"Ctrl({_u(d, 0, 4):#x})"
        return _generic("HardwarePath", t, s, d)
    if t == ACPI:
        if s == 1 and n >= 8:
            hid, uid = _u(d, 0, 4), _u(d, 4, 4)
            special = {0x0A03: "PciRoot", 0x0A08: "PcieRoot", 0x0604: "Floppy",
                       0x0301: "Keyboard", 0x0501: "Serial", 0x0401: "ParallelPort"}
            if hid & 0xFFFF == 0x41D0 and (hid >> 16) in special:
                return f"{special[hid >> 16]}({uid:#x})"
            return f"Acpi({_eisa(hid)},{uid:#x})"
        if s == 3 and n >= 4:
            return f"AcpiAdr({_u(d, 0, 4):#x})"
        return _generic("AcpiPath", t, s, d)
    if t == MSG:
        if s == 1 and n >= 4:
            side = ("Primary", "Secondary")[d[0]] if d[0] < 2 else f"{d[0]:#x}"
            role = ("Master", "Slave")[d[1]] if d[1] < 2 else f"{d[1]:#x}"
            return f"Ata({side},{role},{_u(d, 2, 2):#x})"
        if s == 2 and n >= 4:
            return f"Scsi({_u(d, 0, 2):#x},{_u(d, 2, 2):#x})"
        if s == 5 and n >= 2:
            return f"USB({d[0]:#x},{d[1]:#x})"
        if s == 10:
            return _vendor("VenMsg", d)
        if s == 15 and n >= 7:
            return (f"UsbClass({_u(d, 0, 2):#x},{_u(d, 2, 2):#x},{d[4]:#x},{d[5]:#x},"
                    f"{d[6]:#x})")
        if s == 11 and n >= 33:
            size = 6 if d[32] in (0, 1) else 32
            return f"MAC({d[:size].hex().upper()},{d[32]:#x})"
        if s == 12 and n >= 15:
            return f"IPv4({'.'.join(str(b) for b in d[4:8])})"
        if s == 18 and n >= 6:
            return f"Sata({_u(d, 0, 2):#x},{_u(d, 2, 2):#x},{_u(d, 4, 2):#x})"
        if s == 23 and n >= 12:
            eui = "-".join(f"{b:02X}" for b in reversed(d[4:12]))
            return f"NVMe({_u(d, 0, 4):#x},{eui})"
        if s == 24:
            return f"Uri({d.decode('utf-8', 'replace')})"
        return _generic("Msg", t, s, d)
    if t == MEDIA:
        if s == 1 and n >= 38:
            part, start, size = _u(d, 0, 4), _u(d, 4, 8), _u(d, 12, 8)
            sig, sigtype = d[20:36], d[37]
            if sigtype == 2:
                kind, value = "GPT", guid_str(sig).upper()
            elif sigtype == 1:
                kind, value = "MBR", f"{_u(sig, 0, 4):#010x}"
            else:
                kind, value = f"{sigtype:#x}", sig.hex().upper()
            return f"HD({part},{kind},{value},{start:#x},{size:#x})"
        if s == 2 and n >= 20:
            return f"CDROM({_u(d, 0, 4):#x},{_u(d, 4, 8):#x},{_u(d, 12, 8):#x})"
        if s == 3:
            return _vendor("VenMedia", d)
        if s == 4:
            return utf16z(d)
        if s == 5 and n >= 16:
            return f"Media({guid_str(d).upper()})"
        if s == 6 and n >= 16:
            return f"FvFile({guid_str(d).upper()})"
        if s == 7 and n >= 16:
            return f"Fv({guid_str(d).upper()})"
        if s == 8 and n >= 20:
            return f"Offset({_u(d, 4, 8):#x},{_u(d, 12, 8):#x})"
        return _generic("MediaPath", t, s, d)
    if t == BBS and s == 1 and n >= 4:
        desc = d[4:].split(b"\0", 1)[0].decode("latin-1")
        return f'BBS({_u(d, 0, 2):#x},"{desc}",{_u(d, 2, 2):#x})'
    return _generic("Path", t, s, d)


def decode_device_path(data: bytes) -> DevicePath:
    """Decode a device path (possibly several instances); damage stops it with a warning."""
    nodes: list[DevicePathNode] = []
    warnings: list[str] = []
    parts: list[str] = []
    current: list[str] = []
    pos = 0
    ended = False
    while pos < len(data):
        if len(nodes) >= MAX_NODES:
            warnings.append(f"more than {MAX_NODES} nodes; rest not decoded")
            break
        if len(data) - pos < 4:
            warnings.append(f"{len(data) - pos} stray bytes at path offset {pos}")
            break
        h = NodeHeader.parse(data[pos:pos + 4])
        if h.length < 4 or pos + h.length > len(data):
            warnings.append(f"node at path offset {pos} has bad length {h.length}")
            break
        body = data[pos + 4:pos + h.length]
        text = "" if h.type == END else node_text(h.type, h.subtype, body)
        nodes.append(DevicePathNode(h.type, h.subtype, body, text))
        pos += h.length
        if h.type == END:
            parts.append("/".join(current))
            current = []
            if h.subtype == 0xFF:
                ended = True
                break
            continue
        current.append(text)
    if current or not parts:
        parts.append("/".join(current))
    if not ended and not warnings:
        warnings.append("device path has no end node")
    elif ended and pos < len(data):
        warnings.append(f"{len(data) - pos} bytes after the end node")
    return DevicePath(nodes, ",".join(p for p in parts if p), warnings)


# --- load options (Boot####, Driver####, SysPrep####) --------------------------------------------

LoadOptionHeader = Struct("attributes" / Int32ul, "file_path_list_length" / Int16ul)
LOAD_OPTION_ACTIVE = 0x1
LOAD_OPTION_FORCE_RECONNECT = 0x2
LOAD_OPTION_HIDDEN = 0x8
LOAD_OPTION_CATEGORY_MASK = 0x1F00


@dataclass
class LoadOption:
    attributes: int
    description: str
    device_path: DevicePath
    optional_data: bytes
    warnings: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return bool(self.attributes & LOAD_OPTION_ACTIVE)

    def to_dict(self) -> dict[str, Any]:
        category = self.attributes & LOAD_OPTION_CATEGORY_MASK
        return {"attributes": self.attributes, "active": self.active,
                "hidden": bool(self.attributes & LOAD_OPTION_HIDDEN),
                "force_reconnect": bool(self.attributes & LOAD_OPTION_FORCE_RECONNECT),
                "category": "app" if category == 0x100 else "boot" if category == 0 else
                f"{category:#x}",
                "description": self.description, "device_path": self.device_path.text,
                "device_path_nodes": [n.to_dict() for n in self.device_path.nodes],
                "optional_data_hex": self.optional_data.hex(),
                "warnings": self.warnings + self.device_path.warnings}


def decode_load_option(data: bytes) -> LoadOption:
    """Decode an EFI_LOAD_OPTION; raises `FormatError` when even its header is missing."""
    if len(data) < 6:
        raise FormatError(f"load option of {len(data)} bytes is shorter than its 6-byte header")
    h = LoadOptionHeader.parse(data[:6])
    warnings = []
    pos = 6
    end = len(data) - (len(data) - pos) % 2
    desc_end = None
    for i in range(pos, end, 2):
        if data[i] == 0 and data[i + 1] == 0:
            desc_end = i
            break
    if desc_end is None:
        warnings.append("description has no terminating NUL")
        desc_end = end
    description = data[pos:desc_end].decode("utf-16-le", "replace")
    pos = min(desc_end + 2, len(data))
    path_end = pos + h.file_path_list_length
    if path_end > len(data):
        warnings.append(f"file path list of {h.file_path_list_length} bytes runs past the "
                        f"option's {len(data)} bytes")
        path_end = len(data)
    path = decode_device_path(data[pos:path_end])
    return LoadOption(h.attributes, description, path, data[path_end:], warnings)


# --- signature lists (PK, KEK, db, dbx ...) ------------------------------------------------------

SignatureListHeader = Struct(
    "type" / Bytes(16), "list_size" / Int32ul, "header_size" / Int32ul,
    "signature_size" / Int32ul,
)
MAX_SIGNATURES = 100_000


@dataclass
class Signature:
    owner: str
    data: bytes
    subject_cn: str | None = None
    issuer_cn: str | None = None

    def to_dict(self, x509: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"owner": self.owner, "owner_name": guid_name(self.owner),
                               "size": len(self.data)}
        if x509:
            out["sha256"] = hashlib.sha256(self.data).hexdigest()
            out["subject_cn"] = self.subject_cn
            out["issuer_cn"] = self.issuer_cn
        else:
            out["data_hex"] = self.data.hex()
        return out


@dataclass
class SignatureList:
    type: str
    header: bytes
    signature_size: int
    signatures: list[Signature]

    @property
    def x509(self) -> bool:
        return self.type == EFI_CERT_X509

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "type_name": guid_name(self.type),
                "signature_size": self.signature_size, "header_hex": self.header.hex(),
                "count": len(self.signatures),
                "signatures": [s.to_dict(self.x509) for s in self.signatures]}


def decode_signature_lists(data: bytes) -> tuple[list[SignatureList], list[str]]:
    """Decode a sequence of EFI_SIGNATURE_LIST; stops with a warning at the first bad one."""
    lists: list[SignatureList] = []
    warnings: list[str] = []
    pos = 0
    total = 0
    while pos < len(data):
        if len(data) - pos < 28:
            warnings.append(f"{len(data) - pos} stray bytes at signature data offset {pos}")
            break
        h = SignatureListHeader.parse(data[pos:pos + 28])
        body = h.list_size - 28 - h.header_size
        if h.list_size > len(data) - pos or body < 0 or h.signature_size < 16 \
                or body % h.signature_size:
            warnings.append(f"signature list at offset {pos} is malformed (list size "
                            f"{h.list_size}, header {h.header_size}, signature size "
                            f"{h.signature_size})")
            break
        count = body // h.signature_size
        total += count
        if total > MAX_SIGNATURES:
            warnings.append(f"more than {MAX_SIGNATURES} signatures; rest not decoded")
            break
        kind = guid_str(h.type)
        start = pos + 28 + h.header_size
        sigs = []
        for i in range(count):
            raw = data[start + i * h.signature_size:start + (i + 1) * h.signature_size]
            sig = Signature(guid_str(raw[:16]), raw[16:])
            if kind == EFI_CERT_X509:
                sig.subject_cn, sig.issuer_cn = certificate_cns(sig.data)
            sigs.append(sig)
        lists.append(SignatureList(kind, data[pos + 28:start], h.signature_size, sigs))
        pos += h.list_size
    return lists, warnings


# --- just enough DER to name a certificate -------------------------------------------------------

_CN_OID = bytes.fromhex("550403")


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the DER element at ``pos``; ValueError if bad."""
    if pos + 2 > len(data):
        raise ValueError("short")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ValueError("bad length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("long")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    while start < end:
        item = _tlv(data[:end], start)
        out.append(item)
        start = item[2]
    return out


def _name_cn(data: bytes, start: int, end: int) -> str | None:
    for _, s, e in _children(data, start, end):          # SET OF
        for _, s2, e2 in _children(data, s, e):          # SEQUENCE {oid, value}
            parts = _children(data, s2, e2)
            if len(parts) == 2 and parts[0][0] == 0x06 and \
                    data[parts[0][1]:parts[0][2]] == _CN_OID:
                tag, vs, ve = parts[1]
                codec = "utf-16-be" if tag == 0x1E else "utf-8"
                return data[vs:ve].decode(codec, "replace")
    return None


def certificate_cns(der: bytes) -> tuple[str | None, str | None]:
    """(subject CN, issuer CN) of a DER X.509 certificate, None where not found."""
    try:
        _, s, e = _tlv(der, 0)
        _, ts, te = _tlv(der, s)                          # tbsCertificate
        fields = _children(der, ts, te)
        if fields and fields[0][0] == 0xA0:               # explicit version
            fields = fields[1:]
        # serial, signature algorithm, issuer, validity, subject
        if len(fields) < 5:
            return None, None
        issuer, subject = fields[2], fields[4]
        return _name_cn(der, subject[1], subject[2]), _name_cn(der, issuer[1], issuer[2])
    except (ValueError, IndexError):
        return None, None


# --- values of well-known variables --------------------------------------------------------------

_OPTION_NAME = re.compile(r"^(Boot|Driver|SysPrep|PlatformRecovery)[0-9A-F]{4}$")
_STRING_VARS = {"Lang", "PlatformLang", "LangCodes", "PlatformLangCodes"}
_BOOL_VARS = {"SecureBoot", "SetupMode", "AuditMode", "DeployedMode", "VendorKeys"}
_U16_VARS = {"BootCurrent", "BootNext", "Timeout"}
_PATH_VARS = {"ConIn", "ConOut", "ErrOut", "ConInDev", "ConOutDev", "ErrOutDev"}
_ORDER_VARS = {"BootOrder", "DriverOrder", "SysPrepOrder"}
_SIGDB_GLOBAL = {"PK", "KEK", "PKDefault", "KEKDefault", "dbDefault", "dbxDefault"}
_SIGDB_IMAGE = {"db", "dbx", "dbt", "dbr"}


def decode_value(name: str, guid: str, data: bytes) -> tuple[str | None, Any, list[str]]:
    """Decode the value of a well-known variable: (kind, value, warnings) or (None, None, [])."""
    warnings: list[str] = []
    glob = guid == EFI_GLOBAL_VARIABLE
    if glob and name in _ORDER_VARS:
        if len(data) % 2:
            warnings.append(f"{name} has an odd size {len(data)}")
        return "order", [f"{_u(data, i, 2):04X}" for i in range(0, len(data) - 1, 2)], warnings
    if glob and name in _U16_VARS and len(data) == 2:
        value = _u(data, 0, 2)
        return ("seconds", value, []) if name == "Timeout" else ("option", f"{value:04X}", [])
    if glob and name in _STRING_VARS:
        return "string", data.split(b"\0", 1)[0].decode("ascii", "replace"), []
    if glob and name in _BOOL_VARS and len(data) == 1:
        return "bool", data[0], []
    if glob and _OPTION_NAME.match(name):
        try:
            option = decode_load_option(data)
        except FormatError as e:
            return None, None, [f"{name}: {e.message}"]
        return "load-option", option.to_dict(), option.warnings + option.device_path.warnings
    if glob and name in _PATH_VARS:
        path = decode_device_path(data)
        return "device-path", path.text, path.warnings
    if (glob and name in _SIGDB_GLOBAL) or (guid == EFI_IMAGE_SECURITY_DATABASE
                                            and name in _SIGDB_IMAGE):
        lists, warnings = decode_signature_lists(data)
        return "signature-lists", [sl.to_dict() for sl in lists], warnings
    if name == "SbConfigState" and len(data) == 1:
        return "byte", data[0], []
    if name == "MTC" and len(data) == 4:
        return "uint32", _u(data, 0, 4), []
    return None, None, []
