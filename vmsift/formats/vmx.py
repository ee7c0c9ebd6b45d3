"""VMware .vmx virtual machine configuration: the dictionary as written, plus a typed view.

The typed view (`Vmx`) names the VM, its guest, hardware and identity, and lists every
device: disks, CD/DVD and floppy drives, network cards, serial and parallel ports, USB, with
each device's backing file, mode and connection state. Everything comes from the underlying
`Dictionary`, which keeps the file byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import LimitError
from ..report import Report, Table
from ..source import ByteSource
from . import dictfile

KIND = "vmx"
EXTENSIONS = (".vmx",)  # a .vmx the content test missed is decoded, so its error is named
MAX_SIZE = 16 * 1024 * 1024

TELLTALE = ("config.version", "virtualhw.version", "displayname", "guestos", "memsize",
             "numvcpus", "uuid.bios", "encryption.keysafe")

# Device keys: bus slots (scsi0:1.x), numbered devices (ethernet0.x) and USB ports (usb:0.x).
_SLOT = re.compile(r"^(scsi|sata|ide|nvme)(\d+):(\d+)\.(.+)$", re.I)
_NUMBERED = re.compile(r"^(ethernet|serial|parallel|floppy|scsi|sata|ide|nvme|sound|vmci|"
                       r"pciBridge)(\d+)\.(.+)$", re.I)
_USB_PORT = re.compile(r"^usb:(\d+)\.(.+)$", re.I)
_SINGLE = re.compile(r"^(usb|ehci|usb_xhci|sound|svga|vmci|tpm)\.(.+)$", re.I)

_CD_TYPES = {"cdrom-image", "cdrom-raw", "atapi-cdrom", "cdrom-file"}
_CONTROLLER_KIND = {"scsi": "scsi-controller", "sata": "sata-controller",
                    "ide": "ide-controller", "nvme": "nvme-controller"}


def parse_bool(value: str | None) -> bool | None:
    """VMware booleans: TRUE/FALSE, yes/no, 1/0 (any case); None when absent or unclear."""
    if value is None:
        return None
    v = value.strip().lower()
    if v in ("true", "yes", "1", "on"):
        return True
    if v in ("false", "no", "0", "off"):
        return False
    return None


def parse_int(value: str | None) -> int | None:
    try:
        return int(value.strip(), 0) if value is not None else None
    except ValueError:
        return None


@dataclass
class Device:
    """One virtual device and all of its ``<id>.<option>`` keys."""

    id: str
    kind: str
    options: dict[str, str] = field(default_factory=dict)

    def opt(self, name: str) -> str | None:
        return self.options.get(name.lower())

    @property
    def present(self) -> bool | None:
        return parse_bool(self.opt("present"))

    @property
    def backing(self) -> str | None:
        """The file, device or network behind this device."""
        return self.opt("fileName") or self.opt("networkName") or self.opt("vnet")

    @property
    def device_type(self) -> str | None:
        return self.opt("deviceType") or self.opt("virtualDev") or self.opt("fileType") \
            or self.opt("connectionType")

    @property
    def mode(self) -> str | None:
        if self.kind == "disk":
            return self.opt("mode") or "persistent"
        return self.opt("mode")

    @property
    def start_connected(self) -> bool | None:
        return parse_bool(self.opt("startConnected"))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "present": self.present,
                "device_type": self.device_type, "backing": self.backing, "mode": self.mode,
                "start_connected": self.start_connected,
                "options": dict(sorted(self.options.items()))}


def _disk_kind(options: dict[str, str]) -> str:
    dtype = (options.get("devicetype") or "").lower()
    name = (options.get("filename") or "").lower()
    if dtype in _CD_TYPES or name.endswith(".iso") or "cdrom" in dtype:
        return "cdrom"
    if dtype in ("scsi-passthru",):
        return "passthrough"
    return "disk"


def collect_devices(entries: dict[str, str]) -> list[Device]:
    """Group device keys (lower-cased key -> value) into `Device`s, in a stable order."""
    groups: dict[str, dict[str, str]] = {}
    kinds: dict[str, str] = {}
    for key, value in entries.items():
        if m := _SLOT.match(key):
            dev_id, kind, opt = f"{m[1].lower()}{m[2]}:{m[3]}", "slot", m[4]
        elif m := _USB_PORT.match(key):
            dev_id, kind, opt = f"usb:{m[1]}", "usb-device", m[2]
        elif m := _NUMBERED.match(key):
            bus = m[1].lower()
            dev_id, opt = f"{bus}{m[2]}", m[3]
            kind = {"ethernet": "nic", "pcibridge": "pci-bridge"}.get(bus, _CONTROLLER_KIND.get(bus, bus))
        elif m := _SINGLE.match(key):
            dev_id, opt = m[1].lower(), m[2]
            kind = {"usb": "usb-controller", "ehci": "usb-controller",
                    "usb_xhci": "usb-controller"}.get(dev_id, dev_id)
        else:
            continue
        groups.setdefault(dev_id, {})[opt.lower()] = value
        kinds[dev_id] = kind
    devices = []
    for dev_id, options in groups.items():
        kind = kinds[dev_id]
        if kind == "slot":
            kind = _disk_kind(options)
        devices.append(Device(dev_id, kind, options))
    return sorted(devices, key=lambda d: _natural(d.id))


def _natural(text: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


@dataclass
class Vmx:
    """A parsed .vmx: ``dictionary`` holds every line; the properties are the typed view."""

    dictionary: dictfile.Dictionary

    def get(self, key: str) -> str | None:
        return self.dictionary.get(key)

    @property
    def name(self) -> str | None:
        return self.get("displayName")

    @property
    def guest_os(self) -> str | None:
        return self.get("guestOS")

    @property
    def hardware_version(self) -> int | None:
        return parse_int(self.get("virtualHW.version"))

    @property
    def memory_mb(self) -> int | None:
        return parse_int(self.get("memSize") or self.get("memsize"))

    @property
    def cpus(self) -> int:
        return parse_int(self.get("numvcpus")) or 1

    @property
    def cores_per_socket(self) -> int | None:
        return parse_int(self.get("cpuid.coresPerSocket"))

    @property
    def firmware(self) -> str:
        return (self.get("firmware") or "bios").lower()

    @property
    def encrypted(self) -> bool:
        return "encryption.keySafe" in self.dictionary

    @property
    def devices(self) -> list[Device]:
        return collect_devices(self.dictionary.effective())

    def disks(self) -> list[Device]:
        return [d for d in self.devices if d.kind == "disk"]

    def dump(self) -> bytes:
        return self.dictionary.dump()

    def identity(self) -> dict[str, Any]:
        return {"uuid_bios": self.get("uuid.bios"), "uuid_location": self.get("uuid.location"),
                "vc_uuid": self.get("vc.uuid")}

    def files(self) -> dict[str, str | None]:
        """Other files this configuration names (nvram, vmxf, suspend state, swap, log)."""
        return {"nvram": self.get("nvram"), "vmxf": self.get("extendedConfigFile"),
                "vmss": self.get("checkpoint.vmState"), "swap": self.get("sched.swap.derivedName"),
                "vmsd": self.get("snapshot.fileName")}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "guest_os": self.guest_os,
            "hardware_version": self.hardware_version,
            "config_version": parse_int(self.get("config.version")),
            "memory_mb": self.memory_mb,
            "cpus": self.cpus,
            "cores_per_socket": self.cores_per_socket,
            "firmware": self.firmware,
            "secure_boot": parse_bool(self.get("uefi.secureBoot.enabled")),
            "annotation": self.get("annotation"),
            "encrypted": self.encrypted,
            "change_tracking": parse_bool(self.get("ctkEnabled")),
            "identity": self.identity(),
            "files": self.files(),
            "devices": [d.to_dict() for d in self.devices],
        }


def parse(data: bytes, source: str = "<bytes>") -> Vmx:
    return Vmx(dictfile.parse(data, source))


def read(src: ByteSource) -> Vmx:
    if src.size > MAX_SIZE:
        raise LimitError(_too_big(src), source=src.name)
    return parse(src.read_all(MAX_SIZE, "vmx file"), src.name)


def _too_big(src: ByteSource) -> str:
    """Why a vmx file is over `MAX_SIZE`, naming its longest line (within the limit read)."""
    message = f"vmx file is {src.size} bytes, more than the {MAX_SIZE} allowed"
    head = src.read(0, MAX_SIZE)
    number, start, longest = 0, 0, (0, 0, 0)  # (length, line number, start)
    for number, line in enumerate(head.split(b"\n"), 1):
        longest = max(longest, (len(line), number, start))
        start += len(line) + 1
    length, number, start = longest
    if length * 2 < MAX_SIZE:
        return message
    key = head[start:start + 200].split(b"=", 1)[0].strip().decode("utf-8", "replace")
    cut = " or more (cut at the limit)" if start + length >= len(head) else ""
    return f"{message}: line {number} ({key!r}) alone is {length} bytes{cut}"


def sniff(head: bytes) -> bool:
    if not dictfile.looks_like(head):
        return False
    keys = {k.lower() for k, _ in dictfile.parse(head).items()}
    return any(k in keys for k in TELLTALE) and not any(
        k.startswith(("vmteam", "team.")) for k in keys)


def dictionary_data(d: dictfile.Dictionary) -> dict[str, Any]:
    """The JSON view of a dictionary file's lines: every assignment and comment as written."""
    return {
        "encoding": d.encoding_name,
        "entries": [{"line": ln.number, "key": ln.key, "value": ln.value,
                     "raw_value": ln.raw_value} for ln in d.lines if ln.key is not None],
        "comments": [{"line": ln.number, "text": ln.raw.rstrip("\r\n")}
                     for ln in d.lines if ln.is_comment],
        "duplicates": d.duplicates(),
    }


def device_table(devices: list[Device]) -> Table:
    rows = [[d.id, d.kind, d.device_type, d.backing, d.mode, d.present, d.start_connected]
            for d in devices if d.kind not in ("pci-bridge", "vmci")]
    return Table("devices", ["id", "kind", "type", "backing", "mode", "present", "connected"], rows)


def inspect(src: ByteSource) -> Report:
    vmx = read(src)
    data = vmx.to_dict()
    data["dictionary"] = dictionary_data(vmx.dictionary)
    fields = {
        "name": vmx.name, "guest OS": vmx.guest_os, "hardware version": vmx.hardware_version,
        "memory": f"{vmx.memory_mb} MiB" if vmx.memory_mb is not None else None,
        "CPUs": vmx.cpus, "firmware": vmx.firmware, "encrypted": vmx.encrypted or None,
        "uuid.bios": vmx.get("uuid.bios"), "vc.uuid": vmx.get("vc.uuid"),
        "keys": len(data["dictionary"]["entries"]),
    }
    fields.update({f"{k} file": v for k, v in vmx.files().items() if v})
    warnings = list(vmx.dictionary.warnings)
    warnings += [f"key {k!r} is set more than once; the last line wins"
                 for k in vmx.dictionary.duplicates()]
    return Report(KIND, "VMware virtual machine configuration (.vmx)", data, fields,
                  [device_table(vmx.devices)], warnings)
