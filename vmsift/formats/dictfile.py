"""The VMware "dictionary" text format shared by .vmx, .vmsd and .vmtm files.

One ``key = "value"`` per line, ``#`` comment lines, blank lines. The first line usually
names the encoding (``.encoding = "UTF-8"``). Inside values VMware writes ``|XX`` (pipe and
two hex digits) for characters that cannot stand in a quoted value: ``|22`` is ``"``,
``|0A`` a newline, ``|7C`` the pipe itself.

`parse` keeps every line as written (order, duplicates, comments, line endings, bytes the
encoding cannot decode), so ``parse(x).dump() == x`` byte for byte; `Dictionary.set` rewrites
only the line it changes. Keys compare case-insensitively; when a key repeats, the last
line wins (as VMware reads it).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field

from ..errors import FormatError

# A value is quoted ("...", no raw quote inside) or bare (descriptor style: version=1).
_ASSIGN = re.compile(r'[ \t]*([^\s=#"][^=]*?)[ \t]*=[ \t]*(?:"([^"]*)"|([^"]*?))[ \t]*\r?\n?\Z')
_ESCAPE = re.compile(r"\|([0-9A-Fa-f]{2})")
_ENCODING = re.compile(rb'^\s*\.encoding\s*=\s*"([^"\r\n]{1,40})"', re.M)
_MUST_ESCAPE = re.compile(r'[\x00-\x1f"|#\x7f]')

#: VMware's encoding names that Python spells differently.
_CODEC_NAMES = {"windows-1252": "cp1252", "windows-1251": "cp1251", "shift_jis": "shift_jis",
                "gbk": "gbk", "big5": "big5", "utf-8": "utf-8"}


def unescape(value: str) -> str:
    """Decode VMware ``|XX`` escapes."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value)


def escape(value: str) -> str:
    """Encode a value for a quoted dictionary line (inverse of `unescape`)."""
    return _MUST_ESCAPE.sub(lambda m: f"|{ord(m.group()):02X}", value)


def split_lines(text: str) -> list[str]:
    """Split after each ``\\n`` only, keeping the line endings."""
    lines = text.split("\n")
    out = [line + "\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def parse_assignment(line: str) -> tuple[str, str, bool] | None:
    """Split one ``key = value`` line into (key, raw value, quoted); None if it is not one."""
    if line.lstrip().startswith("#"):
        return None
    m = _ASSIGN.match(line)
    if not m:
        return None
    quoted = m.group(2) is not None
    return m.group(1), m.group(2) if quoted else m.group(3), quoted


def codec_for(name: str | None) -> tuple[str, bool]:
    """Python codec for a VMware encoding name, and whether the name was understood."""
    if not name:
        return "utf-8", True
    wanted = _CODEC_NAMES.get(name.lower(), name)
    try:
        return codecs.lookup(wanted).name, True
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        return "utf-8", False


@dataclass
class Line:
    """One line as written; ``key``/``value`` are set when it is an assignment."""

    number: int
    raw: str
    key: str | None = None
    raw_value: str | None = None
    quoted: bool = False

    @property
    def value(self) -> str | None:
        return None if self.raw_value is None else unescape(self.raw_value)

    @property
    def ending(self) -> str:
        return self.raw[len(self.raw.rstrip("\r\n")):]

    @property
    def is_comment(self) -> bool:
        return self.raw.lstrip().startswith("#")


@dataclass
class Dictionary:
    """A parsed dictionary file: its lines, plus case-insensitive lookup (last line wins)."""

    lines: list[Line]
    encoding: str = "utf-8"
    encoding_name: str | None = None
    bom: str = ""
    source: str = "<bytes>"
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._index: dict[str, Line] = {}
        for line in self.lines:
            if line.key is not None:
                self._index[line.key.lower()] = line

    def get(self, key: str, default: str | None = None) -> str | None:
        line = self._index.get(key.lower())
        return default if line is None else line.value

    def __contains__(self, key: str) -> bool:
        return key.lower() in self._index

    def items(self) -> list[tuple[str, str]]:
        """All assignments in file order, duplicates included, values unescaped."""
        return [(ln.key, ln.value) for ln in self.lines if ln.key is not None]

    def effective(self) -> dict[str, str]:
        """Lower-cased key -> value as VMware would read it (last line wins)."""
        return {k: ln.value for k, ln in self._index.items()}

    def duplicates(self) -> list[str]:
        seen: dict[str, int] = {}
        for ln in self.lines:
            if ln.key is not None:
                seen[ln.key.lower()] = seen.get(ln.key.lower(), 0) + 1
        return [k for k, n in seen.items() if n > 1]

    def set(self, key: str, value: str) -> None:
        """Change the value of ``key`` in place (its last line), or append a line."""
        text = f'{key} = "{escape(value)}"'
        line = self._index.get(key.lower())
        if line is not None:
            line.raw = text + (line.ending or "\n")
            line.raw_value, line.quoted = escape(value), True
            return
        if self.lines and not self.lines[-1].ending:
            self.lines[-1].raw += "\n"
        line = Line(len(self.lines) + 1, text + "\n", key, escape(value), True)
        self.lines.append(line)
        self._index[key.lower()] = line

    def dump(self) -> bytes:
        text = self.bom + "".join(line.raw for line in self.lines)
        return text.encode(self.encoding, "surrogateescape")


def parse(data: bytes, source: str = "<bytes>") -> Dictionary:
    """Parse dictionary bytes. Lines that are not assignments are kept and warned about."""
    bom = ""
    if data.startswith(codecs.BOM_UTF8):
        bom, data = "\ufeff", data[len(codecs.BOM_UTF8):]
    m = _ENCODING.search(data[:4096])
    name = m.group(1).decode("ascii", "replace") if m else None
    codec, known = codec_for(None if bom else name)
    warnings = [] if known else [f"unknown encoding {name!r}, read as UTF-8"]
    try:
        text = data.decode(codec, "surrogateescape")
    except UnicodeDecodeError as e:  # codecs without error handler support
        raise FormatError(f"cannot decode as {codec}: {e.reason}", source=source,
                          offset=e.start) from None
    lines = []
    for number, raw in enumerate(split_lines(text), 1):
        line = Line(number, raw)
        parsed = parse_assignment(raw)
        if parsed:
            line.key, line.raw_value, line.quoted = parsed
        elif raw.strip() and not line.is_comment:
            warnings.append(f"line {number}: not a key = \"value\" line: {raw.strip()[:60]!r}")
        lines.append(line)
    return Dictionary(lines, codec, name, bom, source, warnings)


def looks_like(head: bytes, min_lines: int = 2) -> bool:
    """True when the first lines of ``head`` are mostly dictionary assignments."""
    if b"\0" in head[:4096]:
        return False
    text = head[:8192].decode("latin-1")
    lines = [ln for ln in text.split("\n")[:40] if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) > 1:
        lines = lines[:-1]  # the last one may be cut by the head limit
    good = sum(1 for ln in lines if parse_assignment(ln + "\n"))
    return good >= min(min_lines, len(lines)) and good * 10 >= len(lines) * 8 and good > 0
