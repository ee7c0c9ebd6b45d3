"""``vmware.log``: the per-VM log of the VMX process, as timestamped events and a summary.

One physical line is one `Event`. Header styles (see ``docs/formats/vmlog.md``):

* ``pipe``:   ``2015-11-13T07:33:31.700+01:00| vmx| I120: msg`` (ESXi 4-6.x, Workstation 8-16;
  the level code ``I120:`` is missing in the oldest ISO-dated logs);
* ``paren``:  ``2023-12-05T17:42:40.666Z In(05) vmx msg`` (Workstation 17, Fusion 13, ESXi 7.0U2+;
  ESXi adds an operation-id column after the thread, ``-`` when there is none);
* ``legacy``: ``Aug 20 20:09:03.972: vmx| msg`` (Workstation 7 and older; no year, so no
  timestamp).

Lines that follow none of them are kept as unparsed events, so the events always account for
every line. The file is streamed through its allocation map in 1 MiB blocks; lines longer than
`MAX_LINE` bytes are cut (with a warning), and holes/zero runs are never read.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..report import Report, Table
from ..source import Alloc, ByteSource, SliceSource

KIND = "vmlog"
MAX_LINE = 64 * 1024          # bytes kept of one line
READ_BLOCK = 1 << 20          # bytes read at a time
HEAD_LINES = 200              # lines of the head used to detect the operation-id column
HEAD_BYTES = 256 * 1024       # ... within this many bytes
LIST_CAP = 1000               # entries kept in each summary list (disks, errors ...)
DICT_CAP = 100_000            # DICT entries kept in all
THREAD_CAP = 1000             # distinct thread names counted


class Level(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    VERBOSE = "verbose"
    UNKNOWN = "unknown"       # a header without a level field (oldest styles)


class Style(str, enum.Enum):
    PIPE = "pipe"
    PAREN = "paren"
    LEGACY = "legacy"


_ISO = (r"(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?)")
_PIPE = re.compile(_ISO + r"\| ?(?P<thread>[^|]{0,120}?)\| ?"
                   r"(?:(?P<code>[A-Z]\d{2,3})\+?: ?)?(?P<msg>.*)\Z", re.S)
_PAREN = re.compile(_ISO + r" (?P<lvl>[A-Z][a-z])\((?P<num>\d{1,3})\) (?P<thread>\S{1,120})"
                    r"(?: (?P<rest>.*))?\Z", re.S)
_LEGACY = re.compile(r"(?P<ts>(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d "
                     r"\d\d:\d\d:\d\d(?:\.\d{1,6})?): (?P<thread>[^|]{1,120}?)\| ?(?P<msg>.*)\Z",
                     re.S)

# Old one-letter codes (I120, W115, E105 ...) and new two-letter ones (In, Wa, Er ...).
_LETTER = {"E": Level.ERROR, "P": Level.ERROR, "W": Level.WARNING, "I": Level.INFO,
           "N": Level.INFO, "A": Level.INFO, "V": Level.VERBOSE, "T": Level.VERBOSE,
           "D": Level.VERBOSE}
_PAIR = {"Em": Level.ERROR, "Al": Level.ERROR, "Cr": Level.ERROR, "Er": Level.ERROR,
         "Wa": Level.WARNING, "No": Level.INFO, "In": Level.INFO, "Vb": Level.VERBOSE,
         "Tr": Level.VERBOSE, "Db": Level.VERBOSE}


def _pair_level(letters: str, number: int) -> Level:
    if letters in _PAIR:
        return _PAIR[letters]
    if number <= 2:
        return Level.ERROR
    return Level.WARNING if number == 3 else Level.INFO if number <= 5 else Level.VERBOSE


@dataclass(slots=True)
class Event:
    """One line. ``parsed`` is False for lines without a recognised header."""

    line: int                        # 1-based line number
    text: str                        # the whole line without its end of line (cut lines: cut)
    parsed: bool = False
    style: Style | None = None
    time_text: str | None = None     # the timestamp as written
    timestamp: datetime | None = None  # aware; None when the log gives no zone or no year
    thread: str | None = None
    level: Level = Level.UNKNOWN
    level_code: str | None = None    # "I125", "In(05)"
    opid: str | None = None          # ESXi operation id ("-" columns give None)
    message: str = ""
    offset: int = 0                  # byte offset of the line in the file
    cut: int = 0                     # bytes dropped from an overlong line

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "offset": self.offset, "parsed": self.parsed,
                "style": self.style.value if self.style else None,
                "time_text": self.time_text, "timestamp": _iso(self.timestamp),
                "thread": self.thread, "level": self.level.value,
                "level_code": self.level_code, "opid": self.opid,
                "message": self.message if self.parsed else self.text, "cut": self.cut}


def _iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    return ts.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _aware(text: str) -> datetime | None | bool:
    """Parse an ISO timestamp: aware datetime, None when it has no zone, False when invalid."""
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        return False
    return ts if ts.tzinfo is not None else None


def parse_line(text: str, number: int = 1, *, opid_column: bool = False) -> Event:
    """Decode one line (without its end of line) into an `Event`."""
    ev = Event(line=number, text=text)
    m = _PAREN.match(text)
    if m:
        ts = _aware(m["ts"])
        if ts is False:
            return ev
        rest = m["rest"] or ""
        if opid_column or rest == "-" or rest.startswith("- "):
            opid, _, rest = rest.partition(" ")
            ev.opid = None if opid == "-" else opid
        num = int(m["num"])
        ev.parsed, ev.style, ev.time_text, ev.timestamp = True, Style.PAREN, m["ts"], ts
        ev.thread, ev.message = m["thread"], rest
        ev.level_code, ev.level = f"{m['lvl']}({m['num']})", _pair_level(m["lvl"], num)
        return ev
    m = _PIPE.match(text)
    if m:
        ts = _aware(m["ts"])
        if ts is False:
            return ev
        ev.parsed, ev.style, ev.time_text, ev.timestamp = True, Style.PIPE, m["ts"], ts
        ev.thread, ev.message, ev.level_code = m["thread"].strip(), m["msg"], m["code"]
        ev.level = _LETTER.get(m["code"][0], Level.UNKNOWN) if m["code"] else Level.UNKNOWN
        return ev
    m = _LEGACY.match(text)
    if m:
        ev.parsed, ev.style, ev.time_text = True, Style.LEGACY, m["ts"]
        ev.thread, ev.message = m["thread"].strip(), m["msg"]
        return ev
    return ev


def sniff(head: bytes) -> bool:
    """True when the first non-empty line of ``head`` starts with a vmware.log header."""
    try:
        for raw in head[:8192].split(b"\n")[:5]:
            line = raw.rstrip(b"\r").lstrip(b"\xef\xbb\xbf").decode("utf-8", "replace")
            if line.strip():
                return parse_line(line).parsed
    except Exception:  # sniff never raises
        return False
    return False


# --- streaming ------------------------------------------------------------------------------

@dataclass(slots=True)
class RawLine:
    offset: int
    data: bytes
    cut: int               # bytes dropped after MAX_LINE
    terminated: bool       # ended by "\n" (False only for the last line)


def _chunks(src: ByteSource) -> Iterator[tuple[int, bytes | int]]:
    """Yield (offset, bytes) for data and (offset, n) for runs known to read as n zeros."""
    for run in src.extents():
        if run.kind is Alloc.DATA:
            pos = run.offset
            while pos < run.end:
                data = src.read_exact(pos, min(READ_BLOCK, run.end - pos), "log data")
                yield pos, data
                pos += len(data)
        else:
            yield run.offset, run.length


def iter_raw_lines(src: ByteSource, max_line: int = MAX_LINE) -> Iterator[RawLine]:
    """Split ``src`` into lines at ``\\n`` with bounded memory (at most ``max_line`` kept)."""
    buf = bytearray()
    start, cut = 0, 0
    for pos, chunk in _chunks(src):
        if isinstance(chunk, int):          # a zero run: NUL bytes, no line ends
            keep = min(max(max_line - len(buf), 0), chunk)
            buf += bytes(keep)
            cut += chunk - keep
            continue
        i = 0
        n = len(chunk)
        while i < n:
            nl = chunk.find(b"\n", i)
            end = n if nl < 0 else nl
            room = max_line - len(buf)
            if room > 0:
                buf += chunk[i:min(end, i + room)]
            cut += max(end - i - max(room, 0), 0)
            if nl < 0:
                break
            yield RawLine(start, bytes(buf), cut, True)
            buf.clear()
            cut = 0
            i = nl + 1
            start = pos + i
    if buf or cut:
        yield RawLine(start, bytes(buf), cut, False)


def _decode(data: bytes) -> tuple[str, bool]:
    crlf = data.endswith(b"\r")
    if crlf:
        data = data[:-1]
    return data.decode("utf-8", "backslashreplace"), crlf


def _detect_opid_column(src: ByteSource) -> bool:
    """ESXi's paren style has an operation-id column: seen as a ``-`` after the thread."""
    head = SliceSource(src, 0, min(src.size, HEAD_BYTES), name=src.name)
    for seen, raw in enumerate(iter_raw_lines(head, max_line=4096)):
        if seen >= HEAD_LINES:
            break
        m = _PAREN.match(_decode(raw.data)[0])
        if m:
            rest = m["rest"] or ""
            if rest == "-" or rest.startswith("- "):
                return True
    return False


def parse_lines(src: ByteSource, opid_column: bool | None = None) -> Iterator[Event]:
    """Yield one `Event` per line of ``src`` (parsed or not), streaming.

    ``opid_column`` says whether paren-style lines carry ESXi's operation id after the thread;
    None detects it from the first lines.
    """
    if opid_column is None:
        opid_column = _detect_opid_column(src)
    for number, raw in enumerate(iter_raw_lines(src), 1):
        text, _ = _decode(raw.data)
        ev = parse_line(text, number, opid_column=opid_column)
        ev.offset, ev.cut = raw.offset, raw.cut
        yield ev


# --- summary --------------------------------------------------------------------------------

_PRODUCT = re.compile(r"Log for VMware (?P<product>.+?) pid=(?P<pid>\d+) version=(?P<version>\S+)"
                      r"(?: build=(?:build-)?(?P<build>\S+))?(?: option=(?P<option>\S+))?")
_HOSTNAME = re.compile(r"Hostname=(?P<host>\S+)")
_CONFIG_FILE = re.compile(r"Config file: (?P<path>.+?)\s*$")
_DICT_SECTION = re.compile(r"DICT --- (?P<name>[A-Z][A-Z ]*[A-Z])(?:\s+(?P<path>.*?))?\s*$")
_DICT_ENTRY = re.compile(r"DICT\s+(?P<key>[^\s=]+)\s*=\s?(?P<value>.*?)\s*$")
# the mode is a lowercase word ("persistent", "independent-nonpersistent"); Workstation 7
# writes the geometry there instead: "'x.vmdk' Geo (16383/16/63) BIOS Geo (0/0/0)"
_DISK_OPEN = re.compile(r"DISK: OPEN (?:(?P<device>\S+) )?'(?P<path>[^']*)'"
                        r"(?:\s+Geo \((?P<geometry>\d+/\d+/\d+)\)|\s*(?P<mode>[a-z][\w-]*))?")
_DISKLIB_LINK = re.compile(r"DISKLIB-LINK\s*: Opened '(?P<path>[^']*)' \([^)]*\): (?P<type>\w+), "
                           r"(?P<sectors>\d+) sectors")
_DISKLIB_FILE = re.compile(r"DISKLIB-(?P<which>VMFS|DSCPTR|SPARSE|FLAT|LIB)\s*: "
                           r"(?:Opened \[\d+\]: |Opened )?\"(?P<path>[^\"]+)\"(?P<rest>.*)")
_SIZE = re.compile(r"size = (?P<size>\d+)")

_MILESTONES: list[tuple[str, re.Pattern[str]]] = [
    ("log_start", re.compile(r"^Log for VMware ")),
    ("power_on", re.compile(r"^VMX_PowerOn: ")),
    ("exec_state", re.compile(r"Transitioned vmx/execState/val to (?P<detail>\w+)")),
    ("suspend_done", re.compile(r"^SUSPEND: Completed suspend")),
    ("guest_request", re.compile(r"^Chipset: The guest has requested that the virtual machine "
                                 r"be (?P<detail>[\w ]+)")),
    ("power_off_request", re.compile(r"^VMX: Issuing power-off request")),
    ("snapshot_start", re.compile(r"^SnapshotVMX_TakeSnapshot start: '(?P<detail>[^']*)'")),
    ("snapshot_done", re.compile(r"^SnapshotVMXTakeSnapshotComplete: Done with snapshot "
                                 r"'(?P<detail>[^']*)'")),
    ("snapshot_revert", re.compile(r"^SnapshotVMX_RevertToSnapshot|^SNAPSHOT: RevertSnapshot")),
    ("consolidate_done", re.compile(r"^SnapshotVMXConsolidateOnlineCB: Done with consolidate")),
    ("consolidate_end", re.compile(r"^ConsolidateEnd: Snapshot consolidate complete: "
                                   r"(?P<detail>.*)")),
    ("tools_status", re.compile(r"^Tools: Changing running status: (?P<detail>\d+ => \d+)")),
    ("tools_version", re.compile(r"^VMXVmdb_SetToolsVersionStatus: (?P<detail>.*)")),
    ("panic", re.compile(r"PANIC: (?P<detail>.*)")),
    ("vmx_exit", re.compile(r"^VMX has left the building: (?P<detail>\d+)")),
]


@dataclass
class Marker:
    """A recognised line: a milestone, a disk open, an error."""

    line: int
    timestamp: datetime | None
    name: str
    detail: str | None = None
    thread: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "timestamp": _iso(self.timestamp), "name": self.name,
                "detail": self.detail, "thread": self.thread}


@dataclass
class DiskOpen:
    line: int
    timestamp: datetime | None
    source: str                      # "DISK: OPEN", "DISKLIB-LINK", "DISKLIB-VMFS" ...
    path: str
    device: str | None = None        # "scsi0:0"
    mode: str | None = None          # "persistent"
    geometry: str | None = None      # "16383/16/63" (cylinders/heads/sectors, Workstation 7)
    create_type: str | None = None   # from DISKLIB-LINK
    sectors: int | None = None
    size: int | None = None          # bytes, from DISKLIB-VMFS

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "timestamp": _iso(self.timestamp), "source": self.source,
                "path": self.path, "device": self.device, "mode": self.mode,
                "geometry": self.geometry,
                "create_type": self.create_type, "sectors": self.sectors, "size": self.size}


@dataclass
class DictSection:
    name: str
    path: str | None
    line: int
    entries: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "line": self.line,
                "entries": dict(self.entries)}


@dataclass
class LogSummary:
    source: str
    total_lines: int = 0
    parsed_lines: int = 0
    unparsed_lines: int = 0
    crlf_lines: int = 0
    cut_lines: int = 0
    unterminated_last_line: bool = False
    opid_column: bool = False
    styles: Counter = field(default_factory=Counter)
    levels: Counter = field(default_factory=Counter)
    threads: Counter = field(default_factory=Counter)
    untimed_lines: int = 0           # parsed lines whose timestamp has no zone or no year
    first_timestamp: datetime | None = None
    last_timestamp: datetime | None = None
    non_monotonic: int = 0           # timestamps earlier than the previous one
    product: dict[str, Any] | None = None
    sessions: int = 0                # "Log for VMware" lines
    hostname: str | None = None
    config_file: str | None = None
    dict_sections: list[DictSection] = field(default_factory=list)
    dict_entries: int = 0
    disks: list[DiskOpen] = field(default_factory=list)
    milestones: list[Marker] = field(default_factory=list)
    errors: list[Marker] = field(default_factory=list)
    unparsed_samples: list[Marker] = field(default_factory=list)
    truncated_lists: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def disk_files(self) -> list[str]:
        """Distinct disk files named by disk open lines, in order of first mention. A relative
        name opened also by its absolute path is listed once, absolute: it is the same file
        when it joins the config file's folder to that path (or, with no config file line,
        when the absolute path ends with it)."""
        paths = list(dict.fromkeys(d.path for d in self.disks))
        absolute = {_slashes(p): p for p in paths if _is_absolute(p)}
        folder = _slashes(self.config_file).rpartition("/")[0] if self.config_file else None
        out: list[str] = []
        for p in paths:
            if not _is_absolute(p):
                rel = _slashes(p)
                same = [a for k, a in absolute.items()
                        if (k == f"{folder}/{rel}" if folder else k.endswith("/" + rel))]
                p = same[0] if len(same) == 1 else p
            if p not in out:
                out.append(p)
        return out

    def config(self, section: str = "CONFIGURATION") -> dict[str, str]:
        """The entries of the last DICT section of that name (the .vmx as the VMX read it)."""
        for sec in reversed(self.dict_sections):
            if sec.name == section:
                return dict(sec.entries)
        return {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_lines": self.total_lines, "parsed_lines": self.parsed_lines,
            "unparsed_lines": self.unparsed_lines, "crlf_lines": self.crlf_lines,
            "cut_lines": self.cut_lines, "unterminated_last_line": self.unterminated_last_line,
            "opid_column": self.opid_column,
            "styles": dict(self.styles), "levels": dict(self.levels),
            "threads": dict(self.threads.most_common()),
            "untimed_lines": self.untimed_lines,
            "first_timestamp": _iso(self.first_timestamp),
            "last_timestamp": _iso(self.last_timestamp),
            "non_monotonic": self.non_monotonic,
            "product": self.product, "sessions": self.sessions, "hostname": self.hostname,
            "config_file": self.config_file,
            "dict": [s.to_dict() for s in self.dict_sections],
            "dict_entries": self.dict_entries,
            "disks": [d.to_dict() for d in self.disks], "disk_files": self.disk_files,
            "milestones": [m.to_dict() for m in self.milestones],
            "errors": [m.to_dict() for m in self.errors],
            "unparsed_samples": [m.to_dict() for m in self.unparsed_samples],
            "truncated_lists": list(self.truncated_lists),
        }


def _slashes(path: str) -> str:
    return path.replace("\\", "/")


def _is_absolute(path: str) -> bool:
    """``/vmfs/...``, ``C:\\VMs\\...`` or ``\\\\server\\share``."""
    return path.startswith(("/", "\\")) or re.match(r"[A-Za-z]:[\\/]", path) is not None


def _append(summary: LogSummary, items: list, item: Any, name: str) -> None:
    if len(items) < LIST_CAP:
        items.append(item)
    elif name not in summary.truncated_lists:
        summary.truncated_lists.append(name)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _disk(ev: Event) -> DiskOpen | None:
    msg = ev.message
    if "DISK" not in msg[:16]:
        return None
    m = _DISK_OPEN.match(msg)
    if m:
        return DiskOpen(ev.line, ev.timestamp, "DISK: OPEN", m["path"], device=m["device"],
                        mode=m["mode"], geometry=m["geometry"])
    m = _DISKLIB_LINK.match(msg)
    if m:
        return DiskOpen(ev.line, ev.timestamp, "DISKLIB-LINK", m["path"],
                        create_type=m["type"], sectors=int(m["sectors"]))
    m = _DISKLIB_FILE.match(msg)
    if m:
        size = _SIZE.search(m["rest"])
        return DiskOpen(ev.line, ev.timestamp, f"DISKLIB-{m['which']}", m["path"],
                        size=int(size["size"]) if size else None)
    return None


def _note(summary: LogSummary, ev: Event, section: DictSection | None) -> DictSection | None:
    """Collect what one parsed event says; returns the DICT section still open."""
    msg = ev.message
    if msg.startswith("DICT"):
        m = _DICT_SECTION.match(msg)
        if m:
            section = DictSection(m["name"], m["path"] or None, ev.line)
            _append(summary, summary.dict_sections, section, "dict")
            return section
        m = _DICT_ENTRY.match(msg)
        if m and section is not None:
            summary.dict_entries += 1
            if summary.dict_entries <= DICT_CAP:
                section.entries[m["key"]] = _unquote(m["value"])
            elif "dict" not in summary.truncated_lists:
                summary.truncated_lists.append("dict")
            return section
    if msg.startswith("Log for VMware"):
        summary.sessions += 1
        m = _PRODUCT.match(msg)
        if m and summary.product is None:
            summary.product = {k: m[k] for k in ("product", "version", "build", "option")}
            summary.product["pid"] = int(m["pid"])
    if summary.hostname is None and msg.startswith("Hostname="):
        m = _HOSTNAME.match(msg)
        summary.hostname = m["host"] if m else None
    if summary.config_file is None and msg.startswith("Config file: "):
        m = _CONFIG_FILE.match(msg)
        summary.config_file = m["path"] if m else None
    disk = _disk(ev)
    if disk is not None:
        _append(summary, summary.disks, disk, "disks")
    for name, pattern in _MILESTONES:
        m = pattern.search(msg)
        if m:
            detail = m.groupdict().get("detail")
            _append(summary, summary.milestones,
                    Marker(ev.line, ev.timestamp, name, detail, ev.thread), "milestones")
            break
    if ev.level is Level.ERROR:
        _append(summary, summary.errors,
                Marker(ev.line, ev.timestamp, ev.level_code or "error", msg[:500], ev.thread),
                "errors")
    return section


def summarize(src: ByteSource, opid_column: bool | None = None) -> LogSummary:
    """Read the whole log once (streaming) and collect its summary."""
    s = LogSummary(source=src.name)
    s.opid_column = _detect_opid_column(src) if opid_column is None else opid_column
    section: DictSection | None = None
    previous: datetime | None = None
    cut_examples: list[str] = []
    for raw in iter_raw_lines(src):
        s.total_lines += 1
        text, crlf = _decode(raw.data)
        s.crlf_lines += crlf
        if raw.cut:
            s.cut_lines += 1
            if len(cut_examples) < 5:
                cut_examples.append(f"line {s.total_lines} @ {raw.offset:#x} "
                                    f"({raw.cut} bytes dropped)")
        if not raw.terminated:
            s.unterminated_last_line = True
        ev = parse_line(text, s.total_lines, opid_column=s.opid_column)
        if not ev.parsed:
            s.unparsed_lines += 1
            if len(s.unparsed_samples) < 20:
                s.unparsed_samples.append(Marker(ev.line, None, "unparsed", text[:200]))
            section = None
            continue
        s.parsed_lines += 1
        s.styles[ev.style.value] += 1
        s.levels[ev.level.value] += 1
        if ev.thread in s.threads or len(s.threads) < THREAD_CAP:
            s.threads[ev.thread] += 1
        if ev.timestamp is None:
            s.untimed_lines += 1
        else:
            s.first_timestamp = s.first_timestamp or ev.timestamp
            s.last_timestamp = ev.timestamp
            if previous is not None and ev.timestamp < previous:
                s.non_monotonic += 1
            previous = ev.timestamp
        if not ev.message.startswith("DICT"):
            section = None
        section = _note(s, ev, section)
    if s.cut_lines:
        s.warnings.append(f"{s.cut_lines} lines longer than {MAX_LINE} bytes were cut: "
                          + ", ".join(cut_examples))
    if s.unparsed_lines:
        s.warnings.append(f"{s.unparsed_lines} of {s.total_lines} lines have no recognised "
                          "header (kept as unparsed)")
    if s.untimed_lines:
        s.warnings.append(f"{s.untimed_lines} lines carry no time zone or no year; their "
                          "timestamps are not converted")
    if s.truncated_lists:
        s.warnings.append(f"lists cut at {LIST_CAP} entries: {', '.join(s.truncated_lists)}")
    return s


def inspect(src: ByteSource) -> Report:
    s = summarize(src)
    data = s.to_dict()
    p = s.product or {}
    fields: dict[str, Any] = {
        "product": (f"VMware {p['product']} {p['version']} build {p['build']}"
                    if p else None),
        "host": s.hostname, "config file": s.config_file,
        "lines": f"{s.total_lines} ({s.parsed_lines} parsed, {s.unparsed_lines} unparsed)",
        "styles": ", ".join(f"{k} {v}" for k, v in s.styles.items()) or None,
        "first": _iso(s.first_timestamp), "last": _iso(s.last_timestamp),
        "levels": ", ".join(f"{k} {v}" for k, v in sorted(s.levels.items())) or None,
        "disk files": len(s.disk_files),
        "config keys": len(s.config()),
    }
    tables = []
    if s.milestones:
        tables.append(Table("milestones", ["line", "time (UTC)", "event", "detail"],
                            [[m.line, _iso(m.timestamp), m.name, m.detail]
                             for m in s.milestones]))
    if s.disks:
        tables.append(Table("disk opens", ["line", "source", "device", "path", "type / size"],
                            [[d.line, d.source, d.device, d.path,
                              d.create_type or d.size] for d in s.disks]))
    if s.errors:
        tables.append(Table("errors", ["line", "time (UTC)", "thread", "code", "message"],
                            [[m.line, _iso(m.timestamp), m.thread, m.name, m.detail]
                             for m in s.errors]))
    return Report(kind=KIND, title="VMware log (vmware.log)", data=data, fields=fields,
                  tables=tables, warnings=list(s.warnings))
