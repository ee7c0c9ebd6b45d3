"""Oracle VM ``vm.cfg``: the Xen ``xm``-style domain configuration of Oracle VM 2.x and 3.x.

The file is a list of Python-like assignments, ``name = value``, where a value is a string
(``'...'``, ``"..."`` or triple-quoted, with backslash escapes), a number, ``True`` /
``False`` / ``None``, or a list, tuple or dict of those, freely spread over lines inside
brackets, with ``#`` comments and trailing commas::

    disk = ['file:/OVS/Repositories/0004fb.../VirtualDisks/0004fb...img,xvda,w',
            'phy:/dev/mapper/36001...,xvdb,w!']
    vif = ['mac=00:21:f6:00:00:01,bridge=0a0a0a00']
    OVM_simple_name = 'db01'
    memory = 4096

Xen executes the file as Python; we never evaluate anything. A small tokenizer reads
literals only and refuses any expression with a `FormatError` naming line, column and byte
offset. The text is kept as contiguous spans (statements and the comments / blank lines
between them) so ``parse(x).dump() == x`` byte for byte, and `VmCfg.set` rewrites only the
value of one statement.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import FormatError, LimitError
from ..report import Report, Table
from ..source import ByteSource

KIND = "vmcfg"
NAMES = ("vm.cfg",)  # a vm.cfg the content test missed is decoded, so its error is named
MAX_SIZE = 4 * 1024 * 1024  # real files are a few KiB
MAX_TOKEN = 1024 * 1024  # one string literal
MAX_DEPTH = 32  # nesting of lists / tuples / dicts
MAX_ITEMS = 200_000  # values in the whole file
MAX_STATEMENTS = 20_000
MAX_DIGITS = 400

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(
    r"""(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+
        |(?:\d[\d_]*)?\.\d[\d_]*(?:[eE][+-]?\d+)?|\d[\d_]*\.(?:[eE][+-]?\d+)?
        |\d[\d_]*[eE][+-]?\d+|\d[\d_]*)[lLjJ]?""", re.X)
_STR_PREFIX = re.compile(r"([rRuUbB]{0,2})(\"\"\"|'''|\"|')")
_SIMPLE_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "a": "\a", "b": "\b", "f": "\f",
                   "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\n": ""}
_CONSTANTS = {"True": True, "False": False, "None": None}
_STRING_STOP = {q: re.compile(rf"[^{q}\\\n]*") for q in "'\""}
_OCTAL = re.compile(r"[0-7]{1,3}")


# ---------------------------------------------------------------------------------------
# Tokenizer / literal reader


class _Reader:
    """Reads literal values from ``text``; positions are character indexes."""

    def __init__(self, text: str, source: str):
        self.text = text
        self.source = source
        self.pos = 0
        self.items = 0
        self._mark = (0, 1, 0)  # (index, line, byte offset) of the last position asked for

    # -- errors -------------------------------------------------------------------------
    def where(self, pos: int) -> tuple[int, int, int]:
        """(line, column, byte offset) of character index ``pos``, all 1-based but offset."""
        mpos, line, offset = self._mark if pos >= self._mark[0] else (0, 1, 0)
        line += self.text.count("\n", mpos, pos)
        offset += len(self.text[mpos:pos].encode("utf-8", "surrogateescape"))
        self._mark = (pos, line, offset)
        col = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        return line, col, offset

    def fail(self, message: str, pos: int | None = None, cls: type = FormatError):
        pos = self.pos if pos is None else pos
        line, col, offset = self.where(pos)
        raise cls(f"line {line}:{col}: {message}", source=self.source, offset=offset)

    # -- trivia -------------------------------------------------------------------------
    def skip_inline(self) -> None:
        """Skip spaces, tabs and backslash-newline joins (not newlines nor comments)."""
        text, n = self.text, len(self.text)
        while self.pos < n:
            c = text[self.pos]
            if c in " \t\f\r\ufeff":
                self.pos += 1
            elif c == "\\" and text.startswith("\n", self.pos + 1):
                self.pos += 2
            elif c == "\\" and text.startswith("\r\n", self.pos + 1):
                self.pos += 3
            else:
                return

    def skip_any(self) -> None:
        """Inside brackets: skip whitespace, newlines and comments."""
        text, n = self.text, len(self.text)
        while self.pos < n:
            self.skip_inline()
            if self.pos < n and text[self.pos] == "\n":
                self.pos += 1
            elif self.pos < n and text[self.pos] == "#":
                end = text.find("\n", self.pos)
                self.pos = n if end < 0 else end
            else:
                return

    # -- values -------------------------------------------------------------------------
    def value(self, depth: int, nested: bool) -> Any:
        """One value, with implicit concatenation of adjacent string literals."""
        self.items += 1
        if self.items > MAX_ITEMS:
            self.fail(f"more than {MAX_ITEMS} values", cls=LimitError)
        text = self.text
        if self.pos >= len(text):
            self.fail("value expected, found the end of the file")
        c = text[self.pos]
        if c in "[({":
            if depth >= MAX_DEPTH:
                self.fail(f"nesting deeper than {MAX_DEPTH}", cls=LimitError)
            return self.container(depth + 1)
        m = _STR_PREFIX.match(text, self.pos)
        if m:
            parts = [self.string()]
            while True:  # 'a' 'b' is 'ab'
                save = self.pos
                self.skip_any() if nested else self.skip_inline()
                if _STR_PREFIX.match(text, self.pos):
                    parts.append(self.string())
                else:
                    self.pos = save
                    break
            return "".join(parts)
        if c in "+-" or c.isdigit() or (c == "." and text[self.pos + 1:self.pos + 2].isdigit()):
            return self.number()
        m = _NAME.match(text, self.pos)
        if m and m.group() in _CONSTANTS:
            self.pos = m.end()
            return _CONSTANTS[m.group()]
        if m:
            self.fail(f"{m.group()!r} is not a literal: vm.cfg expressions and statements are "
                      f"never run (vmsift reads literal values only)")
        self.fail(f"value expected, found {c!r}")

    def container(self, depth: int) -> Any:
        text = self.text
        opener = text[self.pos]
        closer = {"[": "]", "(": ")", "{": "}"}[opener]
        start = self.pos
        self.pos += 1
        items: list[Any] = []
        pairs: list[tuple[Any, Any]] = []
        comma = False
        while True:
            self.skip_any()
            if self.pos >= len(text):
                self.fail(f"{opener!r} opened here is never closed", start)
            c = text[self.pos]
            if c == closer:
                self.pos += 1
                break
            if c in ")]}":
                self.fail(f"{c!r} does not close {opener!r} (line {self.where(start)[0]})")
            if (items or pairs) and not comma:
                self.fail(f"',' or {closer!r} expected")
            if opener == "{":
                kpos = self.pos
                key = self.value(depth, True)
                if isinstance(key, (list, dict)):
                    self.fail("dict key must be a plain value", kpos)
                self.skip_any()
                if not text.startswith(":", self.pos):
                    self.fail("':' expected after a dict key")
                self.pos += 1
                self.skip_any()
                pairs.append((key, self.value(depth, True)))
            else:
                items.append(self.value(depth, True))
            self.skip_any()
            comma = text.startswith(",", self.pos)
            if comma:
                self.pos += 1
        if opener == "[":
            return items
        if opener == "{":
            try:
                return dict(pairs)
            except TypeError:  # unhashable key (a tuple holding a list)
                self.fail("dict key must be a plain value", start)
        if len(items) == 1 and not comma:
            return items[0]  # (x) is x
        return tuple(items)

    def string(self) -> str:
        text = self.text
        m = _STR_PREFIX.match(text, self.pos)
        prefix, quote = m.group(1).lower(), m.group(2)
        if len(set(prefix)) != len(prefix) or ("r" not in prefix and len(prefix) == 2):
            self.fail(f"bad string prefix {m.group(1)!r}")
        raw = "r" in prefix
        start = self.pos
        stop = _STRING_STOP[quote[0]]
        i = m.end()
        out: list[str] = []
        size = 0
        while True:
            j = stop.match(text, i).end()
            out.append(text[i:j])
            size += j - i
            if size > MAX_TOKEN:
                self.fail(f"string longer than {MAX_TOKEN} characters", start, LimitError)
            if j >= len(text):
                self.fail("string never closed", start)
            ch = text[j]
            if ch == quote[0]:
                if text.startswith(quote, j):
                    self.pos = j + len(quote)
                    return "".join(out)
                out.append(ch)  # a lone quote inside a triple-quoted string
                i = j + 1
            elif ch == "\n":
                if len(quote) == 1:
                    self.fail("string not closed before the end of the line", start)
                out.append(ch)
                i = j + 1
            elif j + 1 >= len(text):  # a backslash at the very end
                self.fail("string never closed", start)
            elif raw:
                out.append(text[j:j + 2])
                i = j + 2
            else:
                piece, i = self.escape(j)
                out.append(piece)

    def escape(self, j: int) -> tuple[str, int]:
        text = self.text
        c = text[j + 1]
        if c in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[c], j + 2
        if c == "\r" and text.startswith("\n", j + 2):
            return "", j + 3
        if c in "01234567":
            m = _OCTAL.match(text, j + 1)
            return chr(int(m.group(), 8)), m.end()
        for letter, width in (("x", 2), ("u", 4), ("U", 8)):
            if c == letter:
                digits = text[j + 2:j + 2 + width]
                if len(digits) != width or not re.fullmatch(r"[0-9a-fA-F]+", digits):
                    self.fail(f"bad \\{letter} escape", j)
                code = int(digits, 16)
                if code > 0x10FFFF:
                    self.fail("escape beyond Unicode", j)
                return chr(code), j + 2 + width
        return text[j:j + 2], j + 2  # unknown escapes stay as written, as in Python

    def number(self) -> int | float:
        text = self.text
        start = self.pos
        sign = 1
        while self.pos < len(text) and text[self.pos] in "+-":
            if text[self.pos] == "-":
                sign = -sign
            self.pos += 1
            self.skip_inline()
        m = _NUMBER.match(text, self.pos)
        if not m:
            self.fail("number expected", start)
        lit = m.group()
        if len(lit) > MAX_DIGITS:
            self.fail(f"number longer than {MAX_DIGITS} digits", start, LimitError)
        after = m.end()
        if after < len(text) and (text[after].isalnum() or text[after] in "_."):
            self.fail(f"bad number {text[self.pos:after + 1]!r}", start)
        self.pos = after
        body = lit.rstrip("lLjJ").replace("_", "")
        if lit[-1:] in "jJ":
            self.fail("complex numbers are not supported", start)
        try:
            if body[:2].lower() in ("0x", "0o", "0b"):
                value: int | float = int(body, 0)
            elif any(ch in body for ch in ".eE"):
                value = float(body)
                if math.isinf(value):
                    self.fail("number out of range", start, LimitError)
            elif len(body) > 1 and body[0] == "0":
                if body.strip("0") and not re.fullmatch(r"[0-7]+", body):
                    self.fail(f"bad octal number {lit!r}", start)
                value = int(body, 8)  # Python 2 octal, as xm read it
            else:
                value = int(body)
        except ValueError:
            self.fail(f"bad number {lit!r}", start)
        return sign * value


# ---------------------------------------------------------------------------------------
# Document model


@dataclass
class Statement:
    """``name = value``: ``head`` is the name, spaces and ``=`` as written; ``value_text``
    the literal as written (set() replaces it)."""

    name: str
    value: Any
    head: str
    value_text: str
    line: int
    offset: int

    @property
    def raw(self) -> str:
        return self.head + self.value_text


@dataclass
class VmCfg:
    """A parsed vm.cfg: spans of text (``str`` for trivia, `Statement`) in file order."""

    spans: list[str | Statement]
    source: str = "<bytes>"
    warnings: list[str] = field(default_factory=list)

    # -- generic access -----------------------------------------------------------------
    @property
    def statements(self) -> list[Statement]:
        return [s for s in self.spans if isinstance(s, Statement)]

    def values(self) -> dict[str, Any]:
        """Name -> value, the last assignment winning (as Python would)."""
        return {s.name: s.value for s in self.statements}

    def get(self, name: str, default: Any = None) -> Any:
        for s in reversed(self.statements):
            if s.name == name:
                return s.value
        return default

    def __contains__(self, name: str) -> bool:
        return any(s.name == name for s in self.statements)

    def duplicates(self) -> list[str]:
        seen: dict[str, int] = {}
        for s in self.statements:
            seen[s.name] = seen.get(s.name, 0) + 1
        return [k for k, n in seen.items() if n > 1]

    def set(self, name: str, value: Any) -> None:
        """Give ``name`` a new value: rewrite its (last) statement, or append one."""
        if not _NAME.fullmatch(name) or name in _CONSTANTS:
            raise ValueError(f"not a vm.cfg name: {name!r}")
        text = format_value(value)
        for s in reversed(self.statements):
            if s.name == name:
                s.value, s.value_text = _roundtrip(value), text
                return
        if self.spans and not self.dump_text().endswith("\n") and self.dump_text():
            self.spans.append("\n")
        line = self.dump_text().count("\n") + 1
        offset = len(self.dump_text().encode("utf-8", "surrogateescape"))
        self.spans.append(Statement(name, _roundtrip(value), f"{name} = ", text, line, offset))
        self.spans.append("\n")

    def dump_text(self) -> str:
        return "".join(s if isinstance(s, str) else s.raw for s in self.spans)

    def dump(self) -> bytes:
        return self.dump_text().encode("utf-8", "surrogateescape")

    # -- typed view ---------------------------------------------------------------------
    def _str(self, name: str) -> str | None:
        v = self.get(name)
        return None if v is None else str(v) if not isinstance(v, (list, tuple, dict)) else None

    def _int(self, name: str) -> int | None:
        return as_int(self.get(name))

    @property
    def name(self) -> str | None:
        return self._str("name")

    @property
    def simple_name(self) -> str | None:
        return self._str("OVM_simple_name")

    @property
    def uuid(self) -> str | None:
        return self._str("uuid")

    @property
    def memory_mib(self) -> int | None:
        return self._int("memory")

    @property
    def maxmem_mib(self) -> int | None:
        return self._int("maxmem")

    @property
    def vcpus(self) -> int | None:
        return self._int("vcpus")

    @property
    def maxvcpus(self) -> int | None:
        return self._int("maxvcpus")

    @property
    def domain_type(self) -> str | None:
        """``xen_pvm``, ``xen_hvm``, ``xen_pvhvm`` ... from OVM_domain_type, else guessed
        from ``builder`` (hvm) or a PV boot method (bootloader / kernel)."""
        explicit = self._str("OVM_domain_type")
        if explicit:
            return explicit
        builder = (self._str("builder") or "").lower()
        xl_type = (self._str("type") or "").lower()  # xl: type = "hvm" / "pv" / "pvh"
        if builder == "hvm" or xl_type == "hvm":
            return "xen_hvm"
        if xl_type in ("pv", "pvh"):
            return {"pv": "xen_pvm", "pvh": "xen_pvh"}[xl_type]
        if builder in ("linux", "generic") or self._str("bootloader") or self._str("kernel"):
            return "xen_pvm"
        return None

    @property
    def high_availability(self) -> bool | None:
        return as_bool(self.get("OVM_high_availability"))

    @property
    def disks(self) -> list[Disk]:
        return [parse_disk(spec, i) for i, spec in enumerate(_as_list(self.get("disk")))
                if isinstance(spec, str)]

    @property
    def vifs(self) -> list[dict[str, str | None]]:
        return [parse_options(v) for v in _as_list(self.get("vif")) if isinstance(v, str)]

    @property
    def vfbs(self) -> list[dict[str, str | None]]:
        return [parse_options(v) for v in _as_list(self.get("vfb")) if isinstance(v, str)]

    def vnc(self) -> dict[str, Any]:
        """VNC console settings, from ``vfb`` (PV) or the top-level ``vnc*`` keys (HVM)."""
        out: dict[str, Any] = {}
        for key in ("vnc", "vnclisten", "vncunused", "vncdisplay", "vncpasswd", "vncconsole",
                    "keymap", "sdl"):
            if key in self:
                out[key] = _jsonable(self.get(key))
        for fb in self.vfbs:
            if (fb.get("type") or "vnc") == "vnc":
                for k, v in fb.items():
                    out.setdefault(k, v)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "vm": {
                "name": self.name, "simple_name": self.simple_name, "uuid": self.uuid,
                "memory_mib": self.memory_mib, "maxmem_mib": self.maxmem_mib,
                "vcpus": self.vcpus, "maxvcpus": self.maxvcpus,
                "domain_type": self.domain_type, "builder": self._str("builder"),
                "os_type": self._str("OVM_os_type"),
                "guest_os_type": self._str("guest_os_type"),
                "high_availability": self.high_availability,
                "description": self._str("OVM_description"),
                "cpu_compat_group": self._str("OVM_cpu_compat_group"),
                "bootloader": self._str("bootloader"), "kernel": self._str("kernel"),
                "boot": self._str("boot"),
                "on_crash": self._str("on_crash"), "on_poweroff": self._str("on_poweroff"),
                "on_reboot": self._str("on_reboot"),
            },
            "disks": [d.to_dict() for d in self.disks],
            "vifs": self.vifs,
            "vfbs": self.vfbs,
            "vnc": self.vnc(),
            "statements": [{"name": s.name, "value": _jsonable(s.value), "line": s.line,
                            "offset": s.offset} for s in self.statements],
            "duplicates": self.duplicates(),
        }


# ---------------------------------------------------------------------------------------
# Disks and option strings

_REPO_PATH = re.compile(r"^/OVS/Repositories/([^/]+)/([^/]+)/(.+)$")
_OVS2_PATH = re.compile(r"^/OVS/(running_pool|seed_pool|sharedDisk|iso_pool|publish_pool)/(.+)$")
_BACKEND_WORDS = {"file", "phy", "tap", "tap2", "tapdisk", "aio", "sync", "qcow", "qcow2",
                  "vmdk", "vhd", "ram", "iscsi", "nbd", "drbd"}


@dataclass
class Disk:
    """One ``disk`` entry: ``<backend>:<path>,<device>[:cdrom],<mode>``."""

    index: int
    spec: str
    backend: str | None
    path: str | None
    device: str | None
    mode: str | None
    cdrom: bool
    format: str | None = None  # xl only: raw, qcow2 ...
    repository_id: str | None = None
    repository_dir: str | None = None
    disk_id: str | None = None
    filename: str | None = None
    problem: str | None = None

    @property
    def writable(self) -> bool | None:
        return None if not self.mode else self.mode.startswith("w")

    @property
    def shared(self) -> bool:
        """``w!`` / ``r!``: the disk may be attached to several running domains."""
        return bool(self.mode) and self.mode.endswith("!")

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "spec": self.spec, "backend": self.backend,
                "path": self.path, "format": self.format, "device": self.device,
                "mode": self.mode,
                "writable": self.writable, "shared": self.shared, "cdrom": self.cdrom,
                "repository_id": self.repository_id, "repository_dir": self.repository_dir,
                "disk_id": self.disk_id, "filename": self.filename, "problem": self.problem}


_XL_FORMATS = {"raw", "qcow", "qcow2", "vhd", "vhdx", "qed", "vmdk", "empty"}
_XL_KEYS = {"target", "vdev", "access", "format", "devtype", "backendtype", "script"}


def parse_disk(spec: str, index: int = 0) -> Disk:
    """Split a disk spec: xm ``<backend>:<path>,<device>,<mode>`` (paths may hold commas,
    so split from the right) or xl ``<target>,<format>,<vdev>,<access>`` / ``key=value``."""
    problem = None
    parts = [p.strip() for p in spec.split(",")]
    pairs = dict(p.split("=", 1) for p in parts if "=" in p)
    fmt = None
    if pairs and set(k.strip() for k in pairs) & _XL_KEYS:  # xl key=value form
        uname = pairs.get("target", "").strip()
        last = spec.rfind("target=")
        if last >= 0 and not any(f"{k}=" in spec[last:] for k in _XL_KEYS - {"target"}):
            uname = spec[last + 7:].strip()  # a last target= takes the rest, commas included
        dev = pairs.get("vdev")
        mode = pairs.get("access")
        fmt = pairs.get("format")
        if pairs.get("devtype", "").strip() == "cdrom" and dev:
            dev += ":cdrom"
    elif len(parts) >= 4 and parts[-3].lower() in _XL_FORMATS:  # xl positional form
        uname, fmt, dev, mode = ",".join(parts[:-3]), parts[-3], parts[-2], parts[-1]
    else:
        split = spec.rsplit(",", 2)
        if len(split) == 3:
            uname, dev, mode = (p.strip() for p in split)
        else:
            uname, dev, mode = spec.strip(), None, None
            problem = "expected '<backend>:<path>,<device>,<mode>'"
    backend_words: list[str] = []
    rest = uname
    while ":" in rest:
        word, tail = rest.split(":", 1)
        if word.lower() not in _BACKEND_WORDS:
            break
        backend_words.append(word)
        rest = tail
    backend = ":".join(backend_words) or None
    path = re.sub(r"^/{2,}", "/", rest) if rest else None  # file:///X means /X
    cdrom = False
    device = dev.strip() if dev else dev
    if device:
        pieces = device.split(":")
        if pieces[0].lower() == "ioemu" and len(pieces) > 1:
            pieces = pieces[1:]
        if len(pieces) > 1 and pieces[-1].lower() in ("cdrom", "disk"):
            cdrom = pieces[-1].lower() == "cdrom"
            pieces = pieces[:-1]
        device = ":".join(pieces) or None
    if mode:
        mode = {"rw": "w", "ro": "r"}.get(mode.strip().lower(), mode.strip())
    disk = Disk(index, spec, backend, path, device, mode or None, cdrom, problem=problem,
                format=fmt.strip() if fmt else None)
    if path:
        m = _REPO_PATH.match(path)
        if m:
            disk.repository_id, disk.repository_dir, disk.filename = m.groups()
        else:
            m2 = _OVS2_PATH.match(path)
            if m2:
                disk.repository_dir, disk.filename = m2.group(1), m2.group(2)
        if disk.filename and "/" not in disk.filename:
            disk.disk_id = re.sub(r"\.(img|iso|raw)$", "", disk.filename, flags=re.I)
    return disk


def parse_options(spec: str) -> dict[str, str | None]:
    """``'mac=00:16:3e:..,bridge=xenbr0,type=netfront'`` -> dict (a bare word maps to None)."""
    out: dict[str, str | None] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        out[key.strip()] = value.strip() if eq else None
    return out


# ---------------------------------------------------------------------------------------
# Value helpers


def as_int(value: Any) -> int | None:
    """Numbers written as ints or as strings (``memory = '65536'``) both count."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,30}\s*", value):
        return int(value)
    return None


def as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("true", "1", "yes", "on"):
            return True
        if v in ("false", "0", "no", "off", ""):
            return False
    return None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: _jsonable(v) for k, v in value.items()}
    return value


def _roundtrip(value: Any) -> Any:
    """The value as the parser would read back `format_value(value)`."""
    if isinstance(value, (list, tuple)):
        items = [_roundtrip(v) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        return {_roundtrip(k): _roundtrip(v) for k, v in value.items()}
    return value


def format_value(value: Any) -> str:
    """A literal in Oracle VM's style (single-quoted strings, ``[a, b]`` lists)."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("vm.cfg cannot hold inf or nan")
        return repr(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(format_value(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{format_value(k)}: {format_value(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(f"cannot write a {type(value).__name__} into vm.cfg")


def _quote(s: str) -> str:
    out = []
    for ch in s:
        if ch in "\\'":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        elif 0xD800 <= ord(ch) <= 0xDFFF:
            raise ValueError("lone surrogate in value")
        else:
            out.append(ch)
    return "'" + "".join(out) + "'"


# ---------------------------------------------------------------------------------------
# Parsing


def _statement(rd: _Reader, start: int, expected: str) -> None:
    """Fail on a line that is not an assignment: quote it, and say it is never run."""
    line = rd.text[start:].split("\n", 1)[0].strip()
    shown = line if len(line) <= 60 else line[:59] + "…"
    rd.fail(f"{expected}: {shown!r} is a Python statement, not a 'name = value' assignment; "
            f"statements are never run (vmsift reads literal values only)", start)


def parse(data: bytes, source: str = "<bytes>") -> VmCfg:
    """Parse vm.cfg bytes (UTF-8; undecodable bytes are kept as they are)."""
    if len(data) > MAX_SIZE:
        raise LimitError(f"vm.cfg is {len(data)} bytes, more than the {MAX_SIZE} allowed",
                         source=source)
    text = data.decode("utf-8", "surrogateescape")
    rd = _Reader(text, source)
    spans: list[str | Statement] = []
    trivia_start = 0
    n = len(text)
    while True:
        # trivia: whitespace, newlines, comments, stray ';'
        while True:
            rd.skip_any()
            if rd.pos < n and text[rd.pos] == ";":
                rd.pos += 1
                continue
            break
        if rd.pos > trivia_start:
            spans.append(text[trivia_start:rd.pos])
        if rd.pos >= n:
            break
        start = rd.pos
        m = _NAME.match(text, rd.pos)
        if not m or m.group() in _CONSTANTS:
            _statement(rd, start, f"a 'name = value' statement expected, found "
                                  f"{text[rd.pos]!r}")
        name = m.group()
        rd.pos = m.end()
        rd.skip_inline()
        if not text.startswith("=", rd.pos) or text.startswith("==", rd.pos):
            _statement(rd, start, f"'=' expected after {name!r}")
        rd.pos += 1
        rd.skip_inline()
        vstart = rd.pos
        if rd.pos >= n or text[rd.pos] in "\n#;":
            rd.fail(f"value expected after '{name} ='")
        value = rd.value(0, False)
        vend = rd.pos
        rd.skip_inline()
        if rd.pos < n and text[rd.pos] not in "\n#;":
            rd.fail("end of statement expected (one 'name = value' per line)")
        rd.pos = vend
        line, _col, offset = rd.where(start)
        spans.append(Statement(name, value, text[start:vstart], text[vstart:vend], line, offset))
        if len(spans) > 2 * MAX_STATEMENTS:
            rd.fail(f"more than {MAX_STATEMENTS} statements", cls=LimitError)
        trivia_start = rd.pos
    cfg = VmCfg(spans, source)
    for dup in cfg.duplicates():
        cfg.warnings.append(f"{dup!r} is assigned more than once; the last one counts")
    for disk in cfg.disks:
        if disk.problem:
            cfg.warnings.append(f"disk {disk.index} {disk.spec!r}: {disk.problem}")
    return cfg


def read(src: ByteSource) -> VmCfg:
    return parse(src.read_all(MAX_SIZE, "vm.cfg"), src.name)


# ---------------------------------------------------------------------------------------
# Detection and report

_LINE = re.compile(r"^[ \t]*([A-Za-z_][A-Za-z0-9_.:]*)[ \t]*=[ \t]*(.*)$")
_VALUE_START = re.compile(r"""^(?:[rRuU]?['"]|\[|\(|\{|[+-]?\.?\d|True\b|False\b|None\b)""")
_KNOWN = {"name", "uuid", "memory", "maxmem", "vcpus", "maxvcpus", "disk", "vif", "vfb",
          "builder", "bootloader", "kernel", "ramdisk", "on_crash", "on_poweroff",
          "on_reboot", "boot", "acpi", "apic", "pae", "vnc", "vnclisten", "vncunused",
          "extra", "root", "serial", "keymap", "device_model", "cpus", "cpu_weight",
          "cpu_cap", "guest_os_type", "timer_mode", "localtime"}


def sniff(head: bytes) -> bool:
    """Python-style assignments with Xen / Oracle VM names, and no dotted (VMware) keys."""
    try:
        if b"\0" in head[:4096] or head.lstrip()[:1] == b"<":
            return False
        text = head[:16384].decode("latin-1")
        if "# Disk DescriptorFile" in text:
            return False
        lines = text.split("\n")
        if len(head) > 16384 and len(lines) > 1:
            lines = lines[:-1]  # may be cut
        good = bad = 0
        known = False
        depth = 0
        for raw in lines[:200]:
            stripped = raw.strip().lstrip("\ufeff\xef\xbb\xbf")
            if depth > 0:  # continuation of a multi-line list
                depth = max(0, depth + stripped.count("[") + stripped.count("(")
                            - stripped.count("]") - stripped.count(")"))
                continue
            if not stripped or stripped.startswith("#"):
                continue
            m = _LINE.match(stripped)
            if not m:
                bad += 1
                continue
            key, value = m.group(1), m.group(2).strip()
            if "." in key or ":" in key:
                return False  # .vmx / .vmsd / .vmtm / descriptor keys
            if not _VALUE_START.match(value):
                bad += 1
                continue
            good += 1
            known = known or key in _KNOWN or key.startswith("OVM_")
            depth = max(0, value.count("[") + value.count("(") - value.count("]")
                        - value.count(")"))
        return known and good >= 2 and good >= 4 * bad
    except Exception:  # noqa: BLE001 - sniff never raises
        return False


def inspect(src: ByteSource) -> Report:
    cfg = read(src)
    data = cfg.to_dict()
    vm = data["vm"]
    fields = {"name": vm["simple_name"] or vm["name"], "domain name": vm["name"],
              "uuid": vm["uuid"], "domain type": vm["domain_type"], "OS": vm["os_type"],
              "memory (MiB)": vm["memory_mib"], "max memory (MiB)": vm["maxmem_mib"],
              "vcpus": vm["vcpus"], "max vcpus": vm["maxvcpus"],
              "high availability": vm["high_availability"], "disks": len(data["disks"]),
              "network interfaces": len(data["vifs"])}
    fields = {k: v for k, v in fields.items() if v is not None}
    disks = Table("disks", ["device", "backend", "mode", "shared", "cdrom", "repository",
                            "disk id", "path"],
                  [[d["device"], d["backend"], d["mode"], d["shared"], d["cdrom"],
                    d["repository_id"], d["disk_id"], d["path"]] for d in data["disks"]])
    vifs = Table("network interfaces", ["#", "mac", "bridge", "type", "model"],
                 [[i, v.get("mac"), v.get("bridge"), v.get("type"), v.get("model")]
                  for i, v in enumerate(data["vifs"])])
    tables = [disks, vifs]
    return Report(KIND, "Oracle VM / Xen domain configuration (vm.cfg)", data, fields, tables,
                  cfg.warnings)
