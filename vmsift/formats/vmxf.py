"""VMware ``.vmxf``: the "Foundry" extended configuration file beside a ``.vmx``.

A small XML document, named from the ``.vmx`` by ``extendedConfigFile``::

    <?xml version="1.0"?>
    <Foundry>
    <VM>
    <VMId type="string">52 b2 f3 ea b0 ea 8d 3a-22 be f1 52 b4 2e 9f 90</VMId>
    <ClientMetaData>
    <clientMetaDataAttributes/>
    <HistoryEventList/></ClientMetaData>
    <vmxPathName type="string">Windows XP Professional.vmx</vmxPathName></VM></Foundry>

Workstation kept team membership here too (the file outlives a VM's removal from a team).
Leaf values carry a ``type`` attribute (``string``, ``int``, ``bool``...).

We read it with ``xml.parsers.expat`` and refuse any DOCTYPE, entity declaration or external
entity before expat acts on it, so entity bombs and XXE files fail with a `FormatError`
without reading any other file. Depth, element count and text size are bounded. The
original bytes are kept and `Vmxf.dump` returns them: we never rewrite XML.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from typing import Any
from xml.parsers import expat

from ..errors import FormatError, LimitError
from ..report import Report, Table
from ..source import ByteSource

KIND = "vmxf"
EXTENSIONS = (".vmxf",)
MAX_SIZE = 4 * 1024 * 1024
MAX_DEPTH = 64
MAX_ELEMENTS = 50_000
MAX_TEXT = 1024 * 1024  # characters in one element
MAX_ATTRIBUTES = 256


class _Refused(Exception):
    """Raised inside an expat handler to stop parsing; carries the message and offset."""

    def __init__(self, message: str, offset: int = -1):
        super().__init__(message)
        self.offset = offset


@dataclass
class Element:
    """One XML element: ``path`` like ``Foundry/VM/VMId``; ``text`` is its direct text."""

    tag: str
    path: str
    attributes: dict[str, str]
    text: str
    children: list[Element] = field(default_factory=list)
    line: int = 0
    offset: int = 0

    @property
    def value(self) -> Any:
        """The text decoded by the ``type`` attribute (``int``, ``bool``); else text."""
        return typed_value(self.attributes.get("type"), self.text)

    def child(self, tag: str) -> Element | None:
        return next((c for c in self.children if c.tag == tag), None)

    def iter(self):
        yield self
        for c in self.children:
            yield from c.iter()

    def to_dict(self) -> dict[str, Any]:
        """Nested JSON form (used for parts we only list, such as team data)."""
        out: dict[str, Any] = {"tag": self.tag}
        if self.attributes:
            out["attributes"] = dict(self.attributes)
        if self.text.strip():
            out["text"] = self.text
            out["value"] = self.value
        if self.children:
            out["children"] = [c.to_dict() for c in self.children]
        return out


def typed_value(kind: str | None, text: str) -> Any:
    k = (kind or "").lower()
    t = text.strip()
    if k in ("int", "integer", "long", "int32", "int64", "uint32", "uint64"):
        try:
            return int(t, 0) if len(t) < 40 else text
        except ValueError:
            return text
    if k in ("bool", "boolean"):
        if t.lower() in ("true", "1", "yes"):
            return True
        if t.lower() in ("false", "0", "no"):
            return False
    return text


def vmware_uuid(text: str | None) -> str | None:
    """``52 b2 f3 ... 8d 3a-22 be ...`` (16 hex bytes) as a standard 8-4-4-4-12 UUID."""
    if not text:
        return None
    hexes = re.sub(r"[\s-]", "", text)
    if not re.fullmatch(r"[0-9a-fA-F]{32}", hexes):
        return None
    h = hexes.lower()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def parse_xml(data: bytes, source: str = "<bytes>", max_size: int = MAX_SIZE) -> Element:
    """Parse XML bytes into an `Element` tree, refusing DTDs and entities (shared with vmtm)."""
    if len(data) > max_size:
        raise LimitError(f"XML file is {len(data)} bytes, more than the {max_size} allowed",
                         source=source)
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[Element] = []
    texts: list[list[str]] = []
    sizes: list[int] = []
    root: list[Element] = []
    count = [0]

    def refuse(what: str):
        def handler(*_args):
            raise _Refused(what, parser.CurrentByteIndex)
        return handler

    def start(tag: str, attrs: dict[str, str]) -> None:
        count[0] += 1
        if count[0] > MAX_ELEMENTS:
            raise _Refused(f"more than {MAX_ELEMENTS} elements")
        if len(stack) >= MAX_DEPTH:
            raise _Refused(f"elements nested deeper than {MAX_DEPTH}")
        if len(attrs) > MAX_ATTRIBUTES:
            raise _Refused(f"more than {MAX_ATTRIBUTES} attributes on <{tag}>")
        if not stack and root:
            raise _Refused("more than one root element")
        path = f"{stack[-1].path}/{tag}" if stack else tag
        el = Element(tag, path, dict(attrs), "", line=parser.CurrentLineNumber,
                     offset=parser.CurrentByteIndex)
        if stack:
            stack[-1].children.append(el)
        else:
            root.append(el)
        stack.append(el)
        texts.append([])
        sizes.append(0)

    def end(_tag: str) -> None:
        el = stack.pop()
        el.text = "".join(texts.pop())
        sizes.pop()

    def chars(data_: str) -> None:
        if not stack:
            return
        sizes[-1] += len(data_)
        if sizes[-1] > MAX_TEXT:
            raise _Refused(f"text of <{stack[-1].tag}> longer than {MAX_TEXT} characters")
        texts[-1].append(data_)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    parser.StartDoctypeDeclHandler = refuse("a DOCTYPE (DTDs are refused)")
    parser.EntityDeclHandler = refuse("an entity declaration")
    parser.UnparsedEntityDeclHandler = refuse("an entity declaration")
    parser.NotationDeclHandler = refuse("a notation declaration")
    parser.ExternalEntityRefHandler = refuse("an external entity reference")
    parser.SkippedEntityHandler = refuse("a reference to an undeclared entity")
    try:
        parser.Parse(data, True)
    except _Refused as e:
        kind = LimitError if str(e).startswith(("more than", "elements nested", "text of")) \
            else FormatError
        offset = e.offset if e.offset >= 0 else parser.CurrentByteIndex
        raise kind(f"XML refused: {e}", source=source, offset=max(offset, 0)) from None
    except expat.ExpatError as e:
        raise FormatError(f"not well-formed XML: {expat.ErrorString(e.code)} "
                          f"(line {e.lineno}:{e.offset + 1})", source=source,
                          offset=max(parser.CurrentByteIndex, 0)) from None
    except (ValueError, LookupError, UnicodeError, RecursionError) as e:
        raise FormatError(f"XML cannot be read: {e}", source=source,
                          offset=max(parser.CurrentByteIndex, 0)) from None
    if not root:
        raise FormatError("no root element", source=source, offset=0)
    return root[0]


@dataclass
class VmEntry:
    """One ``<VM>`` of a ``.vmxf`` (a file may list more than one)."""

    element: Element

    def _text(self, tag: str) -> str | None:
        c = self.element.child(tag)
        return None if c is None else c.text

    @property
    def vm_id(self) -> str | None:
        return self._text("VMId")

    @property
    def vmx_path(self) -> str | None:
        return self._text("vmxPathName")

    @property
    def client_metadata(self) -> dict[str, Any]:
        """``clientMetaDataAttributes`` children (name -> value) and history events."""
        meta = self.element.child("ClientMetaData")
        if meta is None:
            return {"attributes": {}, "history": []}
        attrs_el = meta.child("clientMetaDataAttributes")
        attrs: dict[str, Any] = {}
        if attrs_el is not None:
            attrs.update(attrs_el.attributes)
            for c in attrs_el.children:
                attrs[c.tag] = c.value if not c.children else c.to_dict()
        hist = meta.child("HistoryEventList")
        history = [c.to_dict() for c in hist.children] if hist is not None else []
        return {"attributes": attrs, "history": history}

    @property
    def team(self) -> list[dict[str, Any]]:
        """Elements whose tag names a team (team membership), listed as found."""
        return [c.to_dict() for c in self.element.children if "team" in c.tag.lower()]

    def to_dict(self) -> dict[str, Any]:
        return {"vm_id": self.vm_id, "vm_uuid": vmware_uuid(self.vm_id),
                "vmx_path": self.vmx_path, "client_metadata": self.client_metadata,
                "team": self.team,
                "other": [c.to_dict() for c in self.element.children
                          if c.tag not in ("VMId", "vmxPathName", "ClientMetaData")
                          and "team" not in c.tag.lower()]}


@dataclass
class Vmxf:
    raw: bytes
    root: Element
    source: str = "<bytes>"
    warnings: list[str] = field(default_factory=list)

    @property
    def vms(self) -> list[VmEntry]:
        return [VmEntry(c) for c in self.root.children if c.tag == "VM"]

    @property
    def vm_id(self) -> str | None:
        vms = self.vms
        return vms[0].vm_id if vms else None

    @property
    def vmx_path(self) -> str | None:
        vms = self.vms
        return vms[0].vmx_path if vms else None

    def elements(self) -> list[dict[str, Any]]:
        """Every element in document order: path, attributes, direct text."""
        return [{"path": e.path, "attributes": e.attributes, "text": e.text, "line": e.line}
                for e in self.root.iter()]

    def dump(self) -> bytes:
        return self.raw

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root.tag, "vms": [v.to_dict() for v in self.vms],
                "team": [c.to_dict() for c in self.root.children
                         if "team" in c.tag.lower()],
                "elements": self.elements()}


def parse(data: bytes, source: str = "<bytes>") -> Vmxf:
    root = parse_xml(data, source)
    vmxf = Vmxf(bytes(data), root, source)
    if root.tag != "Foundry":
        vmxf.warnings.append(f"root element is <{root.tag}>, not <Foundry>")
    vms = vmxf.vms
    if not vms:
        vmxf.warnings.append("no <VM> element")
    for i, vm in enumerate(vms):
        if vm.vm_id is None:
            vmxf.warnings.append(f"VM {i}: no <VMId>")
        if len(vms) > 1 and i > 0 and vm.vm_id != vms[0].vm_id:
            vmxf.warnings.append(f"VM {i}: a second VM entry with a different VMId")
    return vmxf


def read(src: ByteSource) -> Vmxf:
    return parse(src.read_all(MAX_SIZE, "vmxf file"), src.name)


# ---------------------------------------------------------------------------------------
# Detection

_PROLOG = re.compile(r"\A(?:\s+|<\?xml[^>]*\?>|<!--.*?-->)*", re.S)
_TAG = re.compile(r"<([A-Za-z_][\w.:-]*)(?=[\s/>])")


def head_text(head: bytes) -> str | None:
    """The head decoded for sniffing (BOMs handled), or None when it cannot be XML text."""
    if head.startswith(codecs.BOM_UTF8):
        return head[3:].decode("utf-8", "replace")
    for bom, enc in ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
        if head.startswith(bom):
            body = head[2:]
            return body[:len(body) // 2 * 2].decode(enc, "replace")
    if b"\0" in head[:512]:
        return None
    return head.decode("utf-8", "replace")


def foundry_children(head: bytes) -> list[str] | None:
    """Tags of the first elements after ``<Foundry>`` in ``head``; None if the root is not
    Foundry. Shared with the .vmtm sniffer, which claims Foundry files holding a team."""
    text = head_text(head)
    if text is None:
        return None
    pos = _PROLOG.match(text).end()
    m = _TAG.match(text, pos)
    if not m or m.group(1) != "Foundry":
        return None
    return _TAG.findall(text, m.end(), min(len(text), m.end() + 4096))[:8]


def sniff(head: bytes) -> bool:
    try:
        tags = foundry_children(head)
        if tags is None:
            return False
        return not tags or not tags[0].lower().endswith("team")  # <VMTeam>: a .vmtm
    except Exception:  # noqa: BLE001 - sniff never raises
        return False


def inspect(src: ByteSource) -> Report:
    vmxf = read(src)
    data = vmxf.to_dict()
    first = data["vms"][0] if data["vms"] else {}
    fields = {"VM id": first.get("vm_id"), "VM uuid": first.get("vm_uuid"),
              "vmx file": first.get("vmx_path"), "VM entries": len(data["vms"]),
              "team entries": sum(len(v["team"]) for v in data["vms"]) + len(data["team"])}
    fields = {k: v for k, v in fields.items() if v is not None}
    tables = [Table("elements", ["path", "attributes", "text"],
                    [[e["path"], " ".join(f"{k}={v}" for k, v in e["attributes"].items()),
                      e["text"].strip()] for e in data["elements"]])]
    return Report(KIND, "VMware extended configuration (.vmxf)", data, fields, tables,
                  vmxf.warnings)
