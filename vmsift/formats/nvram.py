"""VMware ``.nvram``: the "MRVN" container of a VM's firmware state.

Layout (all little-endian; see docs/formats/nvram.md)::

    "MRVN"  uint32 version (1)
    entries until the end of the file:
        char name[4]  char sub_name[4]  uint32 length  byte payload[length]

Entries seen on ESXi 7: ``CMOS/timA`` ``CMOS/timB`` ``CMOS/`` (128 bytes of MC146818 CMOS RAM)
``CMOS/440`` ``CMOS/440v`` ``CMOS/440x`` ``ESCD/`` (8 KiB: a "NAPI" directory of the
ESCD, BBSI and ELOG areas) and, for EFI firmware, ``EFI_/NV`` (256 KiB): a "VMWNVRAM"
variable store, variables back to back up to its used size, then 0xFF.

The container must be whole: an entry running past the end raises `TruncatedError` naming
its offset. Damage inside an entry (CMOS, ESCD, variable store) is reported as a warning and
decoding goes on with what is left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .layout import Bytes, Const, Int8ul, Int16ul, Int32ul, Struct

from ..errors import FormatError, LimitError, TruncatedError
from ..report import Report, Table
from ..source import ByteSource
from . import efi

KIND = "nvram"
MAGIC = b"MRVN"
STORE_MAGIC = b"VMWNVRAM"
MAX_ENTRIES = 4096
MAX_PAYLOAD = 16 << 20      # payloads larger than this are listed, not decoded (real: 256 KiB)
MAX_VARIABLES = 10_000
MAX_CMOS = 4096             # CMOS entries are 4 to 128 bytes

FileHeader = Struct("magic" / Const(MAGIC), "version" / Int32ul)
EntryHeader = Struct("name" / Bytes(4), "sub_name" / Bytes(4), "length" / Int32ul)
StoreHeader = Struct("magic" / Const(STORE_MAGIC), "reserved" / Int32ul, "used_size" / Int32ul)
VariableHeader = Struct("guid" / Bytes(16), "attributes" / Int32ul, "entry_size" / Int32ul,
                        "name_size" / Int32ul)
NapiHeader = Struct("magic" / Const(b"NAPI"), "directory_size" / Int16ul, "unknown" / Int8ul)
NapiRecord = Struct("name" / Bytes(4), "offset" / Int16ul, "size" / Int16ul)
EscdHeader = Struct("size" / Int16ul, "signature" / Const(b"ACFG"), "minor" / Int8ul,
                    "major" / Int8ul, "boards" / Int8ul, "reserved" / Bytes(3))
EscdBoard = Struct("size" / Int16ul, "slot" / Int8ul, "reserved" / Int8ul)
assert EntryHeader.sizeof() == 12 and VariableHeader.sizeof() == 28


def _tag(raw: bytes) -> str:
    """A 4-byte entry name as text: trailing NULs dropped, odd bytes escaped."""
    return raw.rstrip(b"\0").decode("ascii", "backslashreplace")


# --- records -------------------------------------------------------------------------------------

@dataclass
class Entry:
    """One container entry; ``offset`` is where its 12-byte header starts."""

    offset: int
    name: str
    sub_name: str
    raw_name: bytes
    raw_sub_name: bytes
    length: int
    decoded_as: str | None = None
    head: bytes = b""

    @property
    def key(self) -> str:
        return f"{self.name}/{self.sub_name}"

    @property
    def payload_offset(self) -> int:
        return self.offset + 12

    def to_dict(self) -> dict[str, Any]:
        return {"offset": self.offset, "name": self.name, "sub_name": self.sub_name,
                "name_hex": (self.raw_name + self.raw_sub_name).hex(), "length": self.length,
                "payload_offset": self.payload_offset, "decoded_as": self.decoded_as,
                "head_hex": self.head.hex()}


@dataclass
class Cmos:
    """A CMOS entry: the RTC/CMOS register view for 128-byte banks, else the raw value."""

    key: str
    offset: int
    data: bytes
    registers: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        value = int.from_bytes(self.data, "little") if len(self.data) in (1, 2, 4, 8) else None
        return {"entry": self.key, "offset": self.offset, "length": len(self.data),
                "value": value, "registers": self.registers, "hex": self.data.hex()}


@dataclass
class Escd:
    """The ``ESCD`` entry: NAPI directory and the ESCD configuration header it points to."""

    offset: int
    length: int
    directory_size: int | None
    unknown: int | None
    sections: list[dict[str, Any]]
    config: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {"offset": self.offset, "length": self.length, "napi": self.directory_size
                is not None, "directory_size": self.directory_size,
                "directory_byte": self.unknown, "sections": self.sections,
                "config": self.config}


@dataclass
class Variable:
    """One EFI variable; ``data`` is its value (after the authentication header, if any)."""

    offset: int
    guid: str
    attributes: int
    name: str
    name_size: int
    entry_size: int
    data: bytes
    auth: dict[str, Any] | None = None
    value_kind: str | None = None
    value: Any = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"offset": self.offset, "guid": self.guid, "vendor": efi.guid_name(self.guid),
                "name": self.name, "attributes": self.attributes,
                "attribute_names": efi.attr_names(self.attributes),
                "name_size": self.name_size, "entry_size": self.entry_size,
                "data_size": len(self.data), "data_hex": self.data.hex(), "auth": self.auth,
                "value_kind": self.value_kind, "value": self.value, "warnings": self.warnings}


@dataclass
class VarStore:
    """The ``VMWNVRAM`` store inside ``EFI_/NV``; offsets are from the start of the file."""

    offset: int
    size: int
    reserved: int
    used_size: int
    variables: list[Variable]
    non_ff_after_used: int

    def get(self, name: str, guid: str = efi.EFI_GLOBAL_VARIABLE) -> Variable | None:
        for var in self.variables:
            if var.name == name and var.guid == guid:
                return var
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"offset": self.offset, "size": self.size, "reserved": self.reserved,
                "used_size": self.used_size, "free_size": max(self.size - self.used_size, 0),
                "non_ff_after_used": self.non_ff_after_used,
                "variables": [v.to_dict() for v in self.variables]}


@dataclass
class BootOption:
    number: str
    position: int | None
    active: bool
    description: str
    device_path: str

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "position": self.position, "active": self.active,
                "description": self.description, "device_path": self.device_path}


@dataclass
class Nvram:
    source: str
    size: int
    version: int
    entries: list[Entry]
    cmos: list[Cmos]
    escd: Escd | None
    efi: VarStore | None
    warnings: list[str] = field(default_factory=list)

    @property
    def firmware(self) -> str:
        return "efi" if any(e.name == "EFI_" for e in self.entries) else "bios"

    def _value(self, name: str) -> Any:
        var = self.efi.get(name) if self.efi else None
        return var.value if var is not None else None

    def boot_order(self) -> list[str] | None:
        var = self.efi.get("BootOrder") if self.efi else None
        return var.value if var is not None and var.value_kind == "order" else None

    def boot_options(self) -> list[BootOption]:
        """``Boot####`` options, those in ``BootOrder`` first (in that order)."""
        if not self.efi:
            return []
        order = self.boot_order() or []
        found = []
        for var in self.efi.variables:
            if var.value_kind == "load-option" and var.name.startswith("Boot"):
                number = var.name[4:]
                pos = order.index(number) if number in order else None
                found.append(BootOption(number, pos, var.value["active"],
                                        var.value["description"], var.value["device_path"]))
        found.sort(key=lambda b: (b.position is None, b.position or 0, b.number))
        return found

    def to_dict(self) -> dict[str, Any]:
        boot = None
        if self.efi is not None:
            boot = {"order": self.boot_order(), "current": self._value("BootCurrent"),
                    "next": self._value("BootNext"), "timeout": self._value("Timeout"),
                    "options": [b.to_dict() for b in self.boot_options()]}
        return {"version": self.version, "size": self.size, "firmware": self.firmware,
                "entries": [e.to_dict() for e in self.entries],
                "cmos": [c.to_dict() for c in self.cmos],
                "escd": self.escd.to_dict() if self.escd else None,
                "efi": self.efi.to_dict() if self.efi else None, "boot": boot}


# --- CMOS (MC146818 RTC + PC/AT CMOS conventions) ------------------------------------------------

_RTC_FIELDS = ("seconds", "seconds_alarm", "minutes", "minutes_alarm", "hours", "hours_alarm",
               "day_of_week", "day_of_month", "month", "year")
_FLOPPY = {0: None, 1: "360K 5.25in", 2: "1.2M 5.25in", 3: "720K 3.5in", 4: "1.44M 3.5in",
           5: "2.88M 3.5in"}


def _bcd(value: int, binary: bool) -> int | None:
    if binary:
        return value
    hi, lo = value >> 4, value & 0xF
    return hi * 10 + lo if hi < 10 and lo < 10 else None


def decode_cmos(data: bytes) -> dict[str, Any]:
    """The registers of a 128-byte CMOS bank that the PC/AT convention gives meaning to."""
    a, b, c, d = data[0x0A], data[0x0B], data[0x0C], data[0x0D]
    binary, h24 = bool(b & 0x04), bool(b & 0x02)
    raw = dict(zip(_RTC_FIELDS, data[:10], strict=True))
    vals = {k: _bcd(v if k not in ("hours", "hours_alarm") else v & 0x7F, binary)
            for k, v in raw.items()}
    hours = vals["hours"]
    if hours is not None and not h24:
        hours = hours % 12 + (12 if raw["hours"] & 0x80 else 0)
    century = _bcd(data[0x32], binary)
    time = None
    if all(vals[k] is not None for k in ("seconds", "minutes", "day_of_month", "month", "year")) \
            and hours is not None and century is not None and 1 <= vals["month"] <= 12 \
            and 1 <= vals["day_of_month"] <= 31 and hours < 24 and vals["minutes"] < 60 \
            and vals["seconds"] < 60:
        time = (f"{century * 100 + vals['year']:04d}-{vals['month']:02d}-"
                f"{vals['day_of_month']:02d}T{hours:02d}:{vals['minutes']:02d}:"
                f"{vals['seconds']:02d}")
    stored = (data[0x2E] << 8) | data[0x2F]
    computed = sum(data[0x10:0x2E]) & 0xFFFF
    return {
        "rtc_raw_hex": data[:10].hex(), "time": time, "century": century,
        "status_a": {"value": a, "update_in_progress": bool(a & 0x80),
                     "divider": (a >> 4) & 7, "rate": a & 0xF},
        "status_b": {"value": b, "set": bool(b & 0x80), "periodic_irq": bool(b & 0x40),
                     "alarm_irq": bool(b & 0x20), "update_irq": bool(b & 0x10),
                     "square_wave": bool(b & 0x08), "binary": binary, "hour_24": h24,
                     "daylight_saving": bool(b & 0x01)},
        "status_c": {"value": c, "irq": bool(c & 0x80), "periodic": bool(c & 0x40),
                     "alarm": bool(c & 0x20), "update": bool(c & 0x10)},
        "status_d": {"value": d, "valid_ram": bool(d & 0x80)},
        "diagnostic_status": data[0x0E], "shutdown_status": data[0x0F],
        "floppy_a": _FLOPPY.get(data[0x10] >> 4, f"type {data[0x10] >> 4}"),
        "floppy_b": _FLOPPY.get(data[0x10] & 0xF, f"type {data[0x10] & 0xF}"),
        "equipment": data[0x14],
        "base_memory_kib": data[0x15] | data[0x16] << 8,
        "extended_memory_kib": data[0x17] | data[0x18] << 8,
        "extended_memory_kib_2": data[0x30] | data[0x31] << 8,
        "checksum": stored, "checksum_computed": computed, "checksum_ok": stored == computed,
    }


# --- ESCD ----------------------------------------------------------------------------------------

def decode_escd(data: bytes, offset: int, warnings: list[str]) -> Escd:
    """The NAPI directory (when present) and the ESCD header with its board records."""
    esc = Escd(offset, len(data), None, None, [], None)
    config_at = None
    if data[:4] == b"NAPI" and len(data) >= 7:
        h = NapiHeader.parse(data[:7])
        esc.directory_size, esc.unknown = h.directory_size, h.unknown
        end = min(h.directory_size, len(data))
        pos = 7
        while pos + 8 <= end:
            r = NapiRecord.parse(data[pos:pos + 8])
            inside = r.offset + r.size <= len(data)
            esc.sections.append({"name": _tag(r.name), "offset": r.offset, "size": r.size,
                                 "inside": inside})
            if not inside:
                warnings.append(f"ESCD/NAPI section {_tag(r.name)!r} at {r.offset:#x}+"
                                f"{r.size:#x} runs past the entry ({len(data)} bytes)")
            elif r.name == b"ESCD":
                config_at = r.offset
            pos += 8
    elif data[2:6] == b"ACFG":
        config_at = 0
    else:
        warnings.append(f"ESCD entry at {offset:#x} has neither a NAPI directory nor an "
                        f"ACFG header; left undecoded")
    if config_at is not None:
        if data[config_at + 2:config_at + 6] != b"ACFG" or len(data) < config_at + 12:
            warnings.append(f"no ACFG header at ESCD offset {config_at:#x}")
        else:
            esc.config = _escd_config(data, config_at, warnings)
    return esc


def _escd_config(data: bytes, at: int, warnings: list[str]) -> dict[str, Any]:
    h = EscdHeader.parse(data[at:at + 12])
    end = min(at + h.size, len(data))
    boards = []
    pos = at + 12
    for _ in range(h.boards):
        if pos + 4 > end:
            warnings.append(f"ESCD board records stop early at ESCD offset {pos:#x}")
            break
        b = EscdBoard.parse(data[pos:pos + 4])
        if b.size < 4 or pos + b.size > end:
            warnings.append(f"ESCD board at ESCD offset {pos:#x} has bad size {b.size}")
            break
        boards.append({"offset": pos, "size": b.size, "slot": b.slot})
        pos += b.size
    return {"offset": at, "size": h.size, "version": f"{h.major}.{h.minor}",
            "board_count": h.boards, "boards": boards}


# --- EFI variable store --------------------------------------------------------------------------

def decode_store(data: bytes, offset: int, warnings: list[str]) -> VarStore | None:
    """Walk the ``VMWNVRAM`` store; ``offset`` is where ``data`` starts in the file."""
    if len(data) < 16 or data[:8] != STORE_MAGIC:
        warnings.append(f"EFI_/NV payload at {offset:#x} does not start with {STORE_MAGIC!r}")
        return None
    h = StoreHeader.parse(data[:16])
    used = h.used_size
    if used > len(data):
        warnings.append(f"variable store used size {used} is larger than its {len(data)} "
                        f"bytes; walking to the end of the entry")
        used = len(data)
    variables: list[Variable] = []
    pos = 16
    while pos < used:
        at = offset + pos
        if used - pos < 28:
            warnings.append(f"{used - pos} stray bytes at {at:#x} before the used size")
            break
        if len(variables) >= MAX_VARIABLES:
            warnings.append(f"more than {MAX_VARIABLES} variables; rest not decoded")
            break
        v = VariableHeader.parse(data[pos:pos + 28])
        if v.name_size > v.entry_size or v.entry_size > used - pos - 28:
            warnings.append(f"variable at {at:#x} has name size {v.name_size} / entry size "
                            f"{v.entry_size} beyond the used area; rest not decoded")
            break
        body = data[pos + 28:pos + 28 + v.entry_size]
        raw_name = body[:v.name_size]
        var = Variable(at, efi.guid_str(v.guid), v.attributes, efi.utf16z(raw_name),
                       v.name_size, v.entry_size, body[v.name_size:])
        if v.name_size % 2 or not _has_nul(raw_name):
            var.warnings.append("name is not NUL-terminated UTF-16")
        if v.attributes & efi.VarAttr.TIME_BASED_AUTHENTICATED_WRITE_ACCESS:
            if len(var.data) >= efi.AUTH_HEADER_SIZE:
                var.auth = efi.decode_auth_header(var.data)
                var.data = var.data[efi.AUTH_HEADER_SIZE:]
                if var.auth["cert_length"] != 24:
                    var.warnings.append(f"authentication header claims "
                                        f"{var.auth['cert_length']} certificate bytes; only "
                                        f"the fixed 40-byte header is skipped")
            else:
                var.warnings.append("too short for its 40-byte authentication header")
        var.value_kind, var.value, more = efi.decode_value(var.name, var.guid, var.data)
        var.warnings += more
        warnings += [f"{var.name} at {at:#x}: {w}" for w in var.warnings]
        variables.append(var)
        pos += 28 + v.entry_size
    tail = data[h.used_size:] if h.used_size <= len(data) else b""
    non_ff = len(tail) - tail.count(0xFF)
    if non_ff:
        warnings.append(f"{non_ff} bytes other than 0xFF after the used size of the variable "
                        f"store (left-over or deleted data?)")
    return VarStore(offset, len(data), h.reserved, h.used_size, variables, non_ff)


def _has_nul(raw: bytes) -> bool:
    return any(raw[i] == 0 and raw[i + 1] == 0 for i in range(0, len(raw) - 1, 2))


# --- reading -------------------------------------------------------------------------------------

def read_entries(src: ByteSource) -> tuple[int, list[Entry]]:
    """The version and the entry list; a header or payload past the end raises."""
    head = src.read_exact(0, 8, "MRVN header")
    if head[:4] != MAGIC:
        raise FormatError(f"bad magic {head[:4]!r}, expected {MAGIC!r}", source=src.name,
                          offset=0)
    version = FileHeader.parse(head).version
    entries: list[Entry] = []
    pos = 8
    while pos < src.size:
        if len(entries) >= MAX_ENTRIES:
            raise LimitError(f"more than {MAX_ENTRIES} entries", source=src.name, offset=pos)
        if src.size - pos < 12:
            raise TruncatedError(f"entry header needs 12 bytes, only {src.size - pos} before "
                                 f"the end (size {src.size})", source=src.name, offset=pos)
        h = EntryHeader.parse(src.read_exact(pos, 12, "entry header"))
        entry = Entry(pos, _tag(h.name), _tag(h.sub_name), h.name, h.sub_name, h.length)
        if h.length > src.size - entry.payload_offset:
            raise TruncatedError(f"entry {entry.key!r} of {h.length} bytes runs past the end "
                                 f"(size {src.size})", source=src.name, offset=pos)
        entries.append(entry)
        pos = entry.payload_offset + h.length
    return version, entries


def read(src: ByteSource) -> Nvram:
    """Decode a whole ``.nvram``."""
    version, entries = read_entries(src)
    nv = Nvram(src.name, src.size, version, entries, [], None, None)
    for entry in entries:
        entry.head = src.read(entry.payload_offset, min(entry.length, 32))
        if entry.length > MAX_PAYLOAD:
            nv.warnings.append(f"entry {entry.key!r} at {entry.offset:#x} has "
                               f"{entry.length} bytes, more than {MAX_PAYLOAD}: not decoded")
            continue
        if entry.name not in ("CMOS", "ESCD", "EFI_"):
            continue
        if (entry.name == "ESCD" and nv.escd is not None) or \
                (entry.name == "EFI_" and entry.sub_name == "NV" and nv.efi is not None):
            nv.warnings.append(f"another {entry.key!r} entry at {entry.offset:#x}; only the "
                               f"first is decoded")
            continue
        if entry.name == "CMOS" and entry.length > MAX_CMOS:
            nv.warnings.append(f"CMOS entry {entry.key!r} at {entry.offset:#x} has "
                               f"{entry.length} bytes, more than {MAX_CMOS}: not decoded")
            continue
        data = src.read_exact(entry.payload_offset, entry.length, f"entry {entry.key}")
        if entry.name == "CMOS":
            regs = decode_cmos(data) if len(data) == 128 and entry.sub_name in ("", "440") \
                else None
            nv.cmos.append(Cmos(entry.key, entry.payload_offset, data, regs))
            entry.decoded_as = "cmos" if regs else "cmos-value"
        elif entry.name == "ESCD":
            nv.escd = decode_escd(data, entry.payload_offset, nv.warnings)
            entry.decoded_as = "escd"
        elif entry.sub_name == "NV":
            nv.efi = decode_store(data, entry.payload_offset, nv.warnings)
            entry.decoded_as = "efi-varstore" if nv.efi else None
    for c in nv.cmos:
        if c.registers and not c.registers["checksum_ok"] and c.key == "CMOS/":
            nv.warnings.append(f"CMOS checksum {c.registers['checksum']:#06x} does not match "
                               f"the bytes ({c.registers['checksum_computed']:#06x})")
    return nv


# --- detection and report ----------------------------------------------------------------------

def sniff(head: bytes) -> bool:
    return head[:4] == MAGIC


def _summary(var: Variable) -> str:
    kind, value = var.value_kind, var.value
    if kind == "order":
        return ",".join(value)
    if kind == "load-option":
        return f"{value['description']} -> {value['device_path']}"
    if kind == "signature-lists":
        parts = []
        for sl in value:
            names = [s["subject_cn"] for s in sl["signatures"] if s.get("subject_cn")]
            part = f"{sl['count']} x {sl['type_name'] or sl['type']}"
            parts.append(part + (f" ({', '.join(names[:3])})" if names else ""))
        return "; ".join(parts) or "empty"
    if kind is not None:
        return str(value)
    hexed = var.data[:16].hex()
    return hexed + ("..." if len(var.data) > 16 else "")


def inspect(src: ByteSource) -> Report:
    nv = read(src)
    fields: dict[str, Any] = {"firmware": nv.firmware, "version": nv.version,
                              "entries": len(nv.entries)}
    tables = [Table("Entries", ["offset", "name", "sub-name", "length", "decoded as"],
                    [[f"{e.offset:#x}", e.name, e.sub_name, e.length, e.decoded_as or ""]
                     for e in nv.entries])]
    main_cmos = next((c for c in nv.cmos if c.key == "CMOS/" and c.registers), None)
    if main_cmos:
        regs = main_cmos.registers
        fields["CMOS time"] = regs["time"] or "not set"
        fields["CMOS checksum"] = "ok" if regs["checksum_ok"] else "bad"
    if nv.escd and nv.escd.config:
        fields["ESCD"] = (f"version {nv.escd.config['version']}, "
                          f"{nv.escd.config['board_count']} boards")
    if nv.efi is not None:
        fields["EFI variables"] = len(nv.efi.variables)
        fields["store used"] = f"{nv.efi.used_size} of {nv.efi.size} bytes"
        options = nv.boot_options()
        order = nv.boot_order()
        if order is not None:
            desc = {o.number: o.description for o in options}
            fields["boot order"] = ", ".join(
                f"Boot{n} {desc[n]!r}" if n in desc else f"Boot{n} (missing)" for n in order)
        for name in ("Timeout", "BootCurrent", "BootNext", "PlatformLang", "SecureBoot"):
            var = nv.efi.get(name)
            if var is not None and var.value_kind:
                fields[name] = var.value
        sb = next((v for v in nv.efi.variables if v.name == "SbConfigState"), None)
        if sb is not None:
            fields["SbConfigState"] = sb.value if sb.value_kind else sb.data.hex()
        tables.append(Table("EFI variables", ["offset", "vendor", "name", "attributes",
                                              "size", "value"],
                            [[f"{v.offset:#x}", efi.guid_name(v.guid) or v.guid, v.name,
                              "|".join(efi.attr_names(v.attributes)) or "0", len(v.data),
                              _summary(v)] for v in nv.efi.variables]))
        tables.append(Table("Boot options", ["option", "order", "active", "description",
                                             "device path"],
                            [[f"Boot{o.number}", o.position, o.active, o.description,
                              o.device_path] for o in options]))
    title = f"VMware NVRAM ({'EFI' if nv.firmware == 'efi' else 'BIOS'} firmware)"
    return Report(KIND, title, nv.to_dict(), fields, tables, nv.warnings)
