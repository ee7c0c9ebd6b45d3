"""VMware Workstation team file (``.vmtm``, Workstation 5 to 7; teams were dropped in 8).

A team groups virtual machines that power on and off together, in a set order with delays,
and joins them with private LAN segments. **No public .vmtm sample was found**, so the key
names below are not verified (see ``docs/formats/vmtm.md``). We accept the two forms a
team file can plausibly take and keep everything we do not understand:

* the VMware dictionary syntax of ``.vmx`` (``key = "value"`` lines) with keys under a
  ``vmteam.`` or ``team.`` prefix, read with `vmsift.formats.dictfile` so that
  ``parse(x).dump() == x`` and `Vmtm.set` rewrite one line;
* a "Foundry" XML document (like ``.vmxf``) whose first element is a team element, read
  with the hardened XML reader of `vmsift.formats.vmxf`; its bytes are kept as they are.

The typed view groups numbered keys (``vmteam.vm<N>.<option>``,
``vmteam.lanSegment<N>.<option>``) into members and LAN segments and picks the member's
``.vmx`` path, power-on order and delay by option names that contain ``path`` / ``order`` /
``delay``, so that spelling variations still land in the right column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import FormatError, LimitError
from ..report import Report, Table
from ..source import ByteSource
from . import dictfile, vmxf

KIND = "vmtm"
EXTENSIONS = (".vmtm",)
MAX_SIZE = 4 * 1024 * 1024
MAX_INDEX = 10_000

_PREFIX = re.compile(r"^(?:vmteam|team)\.(.+)$", re.I)
_MEMBER = re.compile(r"^(?:vm|member|teammember)(\d+)\.(.+)$", re.I)
_SEGMENT = re.compile(r"^(?:lansegment|lan|segment|pvn)(\d+)\.(.+)$", re.I)


@dataclass
class Member:
    index: int
    options: dict[str, Any]

    def _pick(self, *words: str) -> Any:
        for key, value in self.options.items():
            k = key.lower().replace("_", "")
            if any(w in k for w in words):
                return value
        return None

    @property
    def vmx_path(self) -> str | None:
        for key, value in self.options.items():
            if isinstance(value, str) and value.lower().endswith(".vmx"):
                return value
        v = self._pick("vmxpath", "path", "filename", "config")
        return v if isinstance(v, str) else None

    @property
    def name(self) -> str | None:
        v = self._pick("displayname", "name")
        return v if isinstance(v, str) and v != self.vmx_path else None

    @property
    def order(self) -> int | None:
        return _int(self._pick("order", "sequence", "position"))

    @property
    def delay(self) -> int | None:
        return _int(self._pick("delay"))

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "vmx_path": self.vmx_path,
                "power_on_order": self.order, "power_on_delay": self.delay,
                "options": self.options}


@dataclass
class LanSegment:
    index: int
    options: dict[str, Any]

    @property
    def name(self) -> str | None:
        for key, value in self.options.items():
            if "name" in key.lower() and isinstance(value, str):
                return value
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "options": self.options}


@dataclass
class Vmtm:
    """A team file: ``syntax`` is ``"dictionary"`` or ``"xml"``."""

    syntax: str
    raw: bytes
    dictionary: dictfile.Dictionary | None = None
    xml: vmxf.Element | None = None
    source: str = "<bytes>"
    warnings: list[str] = field(default_factory=list)

    # -- flat view ----------------------------------------------------------------------
    def entries(self) -> dict[str, Any]:
        """Team keys without their ``vmteam.``/``team.`` prefix (XML: leaf paths under the
        team element, indexes added for repeated elements)."""
        if self.dictionary is not None:
            out: dict[str, Any] = {}
            for key, value in self.dictionary.items():
                m = _PREFIX.match(key)
                if m:
                    out[m.group(1)] = value
            return out
        return _xml_entries(self._team_element())

    def _team_element(self) -> vmxf.Element | None:
        if self.xml is None:
            return None
        return next((c for c in self.xml.children if c.tag.lower().endswith("team")), self.xml)

    # -- typed view ---------------------------------------------------------------------
    @property
    def name(self) -> str | None:
        entries = self.entries()
        for key in ("name", "displayName", "teamName", "Name", "TeamName"):
            if isinstance(entries.get(key), str):
                return entries[key]
        if self.dictionary is not None:
            return self.dictionary.get("displayName")
        return None

    @property
    def members(self) -> list[Member]:
        return [Member(i, o) for i, o in self._numbered(_MEMBER, ("vm", "member"))]

    @property
    def lan_segments(self) -> list[LanSegment]:
        return [LanSegment(i, o) for i, o in self._numbered(_SEGMENT, ("segment", "lan"))]

    def _numbered(self, pattern: re.Pattern, xml_words: tuple[str, ...]):
        groups: dict[int, dict[str, Any]] = {}
        for key, value in self.entries().items():
            m = pattern.match(key)
            if not m:
                continue
            index = int(m.group(1)[:8])
            if index > MAX_INDEX:
                msg = f"index {index} in {key!r} ignored (over {MAX_INDEX})"
                if msg not in self.warnings:
                    self.warnings.append(msg)
                continue
            groups.setdefault(index, {})[m.group(2)] = value
        if self.xml is not None and not groups:
            team = self._team_element()
            found = [e for e in team.iter() if e is not team
                     and any(w in e.tag.lower() for w in xml_words)
                     and not e.tag.lower().endswith(("list", "team"))
                     and e.children]
            for i, e in enumerate(found):
                groups[i] = _xml_entries(e)
        return sorted(groups.items())

    def set(self, key: str, value: str) -> None:
        """Change one key of a dictionary-syntax team file (XML is never rewritten)."""
        if self.dictionary is None:
            raise ValueError("XML team files are kept as they are; set() needs dictionary syntax")
        self.dictionary.set(key, value)

    def dump(self) -> bytes:
        return self.dictionary.dump() if self.dictionary is not None else self.raw

    def to_dict(self) -> dict[str, Any]:
        members = self.members
        ordered = sorted(members, key=lambda m: (m.order is None, m.order or 0, m.index))
        return {"syntax": self.syntax, "name": self.name,
                "members": [m.to_dict() for m in members],
                "power_on_sequence": [m.index for m in ordered],
                "lan_segments": [s.to_dict() for s in self.lan_segments],
                "entries": self.entries()}


def _xml_entries(el: vmxf.Element | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if el is None:
        return out

    def walk(node: vmxf.Element, prefix: str) -> None:
        seen: dict[str, int] = {}
        for c in node.children:
            n = seen.get(c.tag, 0)
            seen[c.tag] = n + 1
            name = f"{prefix}{c.tag}"
            if sum(1 for x in node.children if x.tag == c.tag) > 1:
                name = f"{prefix}{c.tag}{n}"
            if c.children:
                walk(c, name + ".")
            else:
                out[name] = c.value
            for k, v in c.attributes.items():
                if k != "type":
                    out[f"{name}@{k}"] = v
    walk(el, "")
    return out


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,18}\s*", value):
        return int(value)
    return None


def parse(data: bytes, source: str = "<bytes>") -> Vmtm:
    if len(data) > MAX_SIZE:
        raise LimitError(f"team file is {len(data)} bytes, more than the {MAX_SIZE} allowed",
                         source=source)
    if vmxf.foundry_children(data[:65536]) is not None or data.lstrip()[:1] == b"<":
        root = vmxf.parse_xml(data, source, MAX_SIZE)
        team = Vmtm("xml", bytes(data), xml=root, source=source)
        if root.tag != "Foundry":
            team.warnings.append(f"root element is <{root.tag}>, not <Foundry>")
    else:
        try:
            d = dictfile.parse(data, source)
        except ValueError as e:  # codecs.lookup() of an encoding name holding a NUL
            raise FormatError(f"cannot read as a dictionary file: {e}", source=source,
                              offset=0) from None
        team = Vmtm("dictionary", bytes(data), dictionary=d, source=source,
                    warnings=list(d.warnings))
        for dup in d.duplicates():
            team.warnings.append(f"key {dup!r} appears more than once; the last line counts")
        if not team.entries():
            team.warnings.append("no vmteam.* / team.* keys")
    if not team.members:
        team.warnings.append("no team members found")
    return team


def read(src: ByteSource) -> Vmtm:
    return parse(src.read_all(MAX_SIZE, "team file"), src.name)


def sniff(head: bytes) -> bool:
    """Dictionary lines mostly under ``vmteam.``/``team.`` (no VM or snapshot keys), or a
    Foundry XML document whose first element is a team."""
    try:
        tags = vmxf.foundry_children(head)
        if tags is not None:
            return bool(tags) and tags[0].lower().endswith("team")
        if not dictfile.looks_like(head, min_lines=1):
            return False
        keys = [k.lower() for k, _ in dictfile.parse(head).items()]
        team = [k for k in keys if _PREFIX.match(k)]
        vm_like = [k for k in keys if k.startswith(("snapshot", "virtualhw.", "scsi", "ide",
                                                    "sata", "nvme", "ethernet", "memsize"))]
        return bool(team) and not vm_like and len(team) * 2 >= len(keys)
    except Exception:  # noqa: BLE001 - sniff never raises
        return False


def inspect(src: ByteSource) -> Report:
    team = read(src)
    data = team.to_dict()
    if team.dictionary is not None:
        from .vmx import dictionary_data
        data["dictionary"] = dictionary_data(team.dictionary)
    fields = {"team": data["name"], "syntax": data["syntax"], "members": len(data["members"]),
              "LAN segments": len(data["lan_segments"])}
    fields = {k: v for k, v in fields.items() if v is not None}
    members = Table("members", ["#", "name", "vmx file", "power-on order", "delay"],
                    [[m["index"], m["name"], m["vmx_path"], m["power_on_order"],
                      m["power_on_delay"]] for m in data["members"]])
    segments = Table("LAN segments", ["#", "name", "options"],
                     [[s["index"], s["name"],
                       ", ".join(f"{k}={v}" for k, v in s["options"].items())]
                      for s in data["lan_segments"]])
    data["layout_verified"] = False  # no public sample to check key names against
    return Report(KIND, "VMware Workstation team (.vmtm)", data, fields, [members, segments],
                  team.warnings)
