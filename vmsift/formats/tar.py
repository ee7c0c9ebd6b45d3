"""Tar archives (ustar, with pax and GNU long-name records) indexed in place.

`index` reads every 512-byte header once and records where each member's data lies; nothing
is extracted. Each member is then a `SliceSource` of the archive. Hostile headers are
refused with a `FormatError` naming the archive and the header's offset: a bad checksum, a
name that is absolute or climbs with ``..``. A member running past the end of the archive (a
cut or forged archive) is kept as far as it goes, with a warning, and indexing stops there:
its slice reads what exists and fails (`TruncatedError`) past the end.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from .layout import Bytes, Struct

from ..errors import FormatError, LimitError, Problem, TruncatedError
from ..source import ByteSource, SliceSource

BLOCK = 512
MAX_MEMBERS = 100_000
MAX_EXTENDED = 1 << 20  # a pax or GNU long-name record larger than this is not a real one

TarHeader = Struct(
    "name" / Bytes(100),
    "mode" / Bytes(8),
    "uid" / Bytes(8),
    "gid" / Bytes(8),
    "size" / Bytes(12),
    "mtime" / Bytes(12),
    "checksum" / Bytes(8),
    "typeflag" / Bytes(1),
    "linkname" / Bytes(100),
    "magic" / Bytes(6),
    "version" / Bytes(2),
    "uname" / Bytes(32),
    "gname" / Bytes(32),
    "devmajor" / Bytes(8),
    "devminor" / Bytes(8),
    "prefix" / Bytes(155),
    "pad" / Bytes(12),
)
assert TarHeader.sizeof() == BLOCK

#: typeflag -> what the member is (anything else is "other")
TYPES = {b"0": "file", b"\x00": "file", b"7": "file", b"5": "dir", b"2": "symlink",
         b"1": "hardlink"}


@dataclass
class Member:
    """One member: its confined name, where its data starts in the archive, and its size."""

    name: str
    type: str           # file | dir | symlink | hardlink | other
    offset: int         # archive offset of the data
    size: int
    header_offset: int
    mode: int = 0
    mtime: float | None = None
    linkname: str = ""


@dataclass
class TarIndex:
    members: list[Member]
    warnings: list[Problem] = field(default_factory=list)

    def by_name(self) -> dict[str, Member]:
        """Members by name (a later duplicate wins, as when a tar is extracted)."""
        return {m.name: m for m in self.members}


def sniff(head: bytes) -> bool:
    """A ustar (POSIX or GNU) header at the start of ``head``."""
    return len(head) >= BLOCK and head[257:262] == b"ustar" and _checksum_ok(head[:BLOCK])


def _checksum_ok(raw: bytes) -> bool:
    try:
        stored = _number(raw[148:156])
    except ValueError:
        return False
    total = sum(raw[:148]) + 8 * 32 + sum(raw[156:BLOCK])
    return stored == total


def _number(field_bytes: bytes) -> int:
    """An octal field, or GNU base-256 (top bit of the first byte set)."""
    if field_bytes and field_bytes[0] & 0x80:
        value = int.from_bytes(bytes([field_bytes[0] & 0x7F]) + field_bytes[1:], "big")
        return value
    text = field_bytes.split(b"\x00", 1)[0].strip(b" ")
    return int(text, 8) if text else 0


def _text(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")


def safe_name(name: str, archive: str, offset: int) -> str:
    """``name`` without ``./``, refused when absolute or climbing out with ``..``."""
    if name.startswith("/") or "\\" in name or "\x00" in name:
        raise FormatError(f"member name {name!r} is absolute or not a plain path: refused",
                          source=archive, offset=offset)
    if ".." in name.split("/"):
        raise FormatError(f"member name {name!r} climbs out with '..': refused",
                          source=archive, offset=offset)
    clean = posixpath.normpath(name) if name.strip("/") else ""
    return "" if clean == "." else clean


def _pax(data: bytes, archive: str, offset: int) -> dict[str, str]:
    """The ``length key=value\\n`` records of a pax extended header."""
    out, pos = {}, 0
    while pos < len(data) and data[pos:pos + 1] != b"\x00":
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise FormatError(f"pax record at +{pos} has no length", source=archive,
                              offset=offset) from None
        record = data[space + 1:pos + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise FormatError(f"pax record at +{pos} is malformed", source=archive,
                              offset=offset)
        key, _, value = record[:-1].partition(b"=")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def index(src: ByteSource) -> TarIndex:
    """Every member of the tar archive ``src``, its headers read once."""
    members: list[Member] = []
    warnings: list[Problem] = []
    pos = 0
    pending: dict[str, str] = {}   # pax / GNU overrides for the next header
    while True:
        raw = src.read(pos, BLOCK)
        if not raw:
            if not members:
                raise FormatError("empty tar archive", source=src.name, offset=pos)
            warnings.append(Problem.at(src.name, pos, "archive ends without its end blocks"))
            break
        if raw == bytes(len(raw)):  # the end blocks
            break
        if len(raw) < BLOCK:
            raise TruncatedError(f"tar header needs {BLOCK} bytes, the archive ends after "
                                 f"{len(raw)}", source=src.name, offset=pos)
        if not _checksum_ok(raw):
            raise FormatError("tar header checksum does not match (not a tar header)",
                              source=src.name, offset=pos)
        h = TarHeader.parse(raw)
        try:
            size = int(pending.pop("size")) if "size" in pending else _number(h.size)
            mtime = float(pending.pop("mtime")) if "mtime" in pending else _number(h.mtime)
            mode = _number(h.mode)
        except ValueError:
            raise FormatError("tar header has a bad number field", source=src.name,
                              offset=pos) from None
        data = pos + BLOCK
        if size < 0:
            raise FormatError(f"member size {size} is negative", source=src.name,
                              offset=pos + 124)
        truncated = data + size > src.size
        flag = h.typeflag
        if truncated and flag in (b"x", b"g", b"L", b"K"):
            raise FormatError(f"extended header of {size} bytes at {data:#x} runs past the "
                              f"end of the archive ({src.size:#x})", source=src.name,
                              offset=pos + 124)
        nxt = data + -(-size // BLOCK) * BLOCK
        if flag in (b"x", b"g", b"L", b"K"):
            if size > MAX_EXTENDED:
                raise LimitError(f"extended header of {size} bytes", source=src.name,
                                 offset=pos + 124)
            body = src.read_exact(data, size, "extended header")
            if flag == b"x":  # global (g) records hold nothing a member needs here
                pending.update(_pax(body, src.name, data))
            elif flag == b"L":
                pending["path"] = _text(body)
            elif flag == b"K":
                pending["linkpath"] = _text(body)
            pos = nxt
            continue
        name = pending.pop("path", None)
        if name is None:
            name = _text(h.name)
            if h.magic == b"ustar\x00" and (prefix := _text(h.prefix)):  # POSIX, not GNU
                name = f"{prefix}/{name}"
        linkname = pending.pop("linkpath", _text(h.linkname))
        pending.clear()
        kind = TYPES.get(flag, "other")
        clean = safe_name(name, src.name, pos)
        if clean:
            members.append(Member(clean, kind, data, size if kind == "file" else 0, pos,
                                  mode & 0o7777, float(mtime), linkname))
        if truncated:  # a cut archive: what is there stays readable, the rest fails to read
            warnings.append(Problem.at(src.name, pos + 124, (
                f"member {clean!r} of {size} bytes at {data:#x} runs past the end of the "
                f"archive ({src.size:#x}): it is cut short, reading past the end fails")))
            break
        if len(members) > MAX_MEMBERS:
            raise LimitError(f"more than {MAX_MEMBERS} members", source=src.name, offset=pos)
        pos = nxt
    names = [m.name for m in members if m.type != "dir"]
    if len(set(names)) != len(names):
        seen: set[str] = set()
        for m in members:
            if m.type != "dir" and m.name in seen:
                warnings.append(Problem.at(src.name, m.header_offset,
                                           f"member {m.name!r} appears again; the last wins"))
            seen.add(m.name)
    return TarIndex(members, warnings)


def member_source(archive: ByteSource, member: Member, name: str | None = None) -> SliceSource:
    """The data of ``member`` as a slice of the archive."""
    return SliceSource(archive, member.offset, member.size,
                       name or f"{archive.name}/{member.name}")
