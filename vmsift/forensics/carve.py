"""Carve an image for VM artefacts by signature (`vmsift.forensics.signatures`).

`carve` reads the image in big blocks (`BLOCK`, overlapping by the longest signature less
one byte so that a signature across a block edge is found once), finds every signature with
``bytes.find`` (no Python loop per byte), confirms each hit with its decoder and reports kind,
offset, length, allocation and decoded facts. Host holes of a sparse image are not read.

On a datastore image (VMFS3/5, OCFS2) the allocation bitmaps say for each hit whether it
lies in allocated space, and ``unallocated_only`` scans only the free space; deleted
directory entries that keep their names are listed too. `extract` writes each artefact to a
folder under a name made from its offset (never from the evidence).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..datastore.export import export_raw
from ..errors import Problem, UnsupportedError, VmsiftError
from ..source import Alloc, ByteSource, FileSource, SliceSource
from .signatures import OVERLAP, SECTOR, SIGNATURES, Found

BLOCK = 16 << 20
EXTENSIONS = {"vmdk-sparse": ".vmdk", "vmdk-cowd": ".vmdk", "vmdk-sesparse": ".vmdk",
              "vmdk-descriptor": ".vmdk", "vmx": ".vmx", "vmsd": ".vmsd", "nvram": ".nvram",
              "vmsn": ".vmsn"}


@dataclass
class Hit:
    """One artefact found: ``allocated`` is None where the image has no allocation map."""

    kind: str
    offset: int | None
    length: int | None
    allocated: bool | None
    facts: dict[str, Any] = field(default_factory=dict)
    note: str | None = None
    within: int | None = None       # offset of the artefact this one lies inside
    extracted: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "offset": self.offset, "length": self.length,
                "allocated": self.allocated, "facts": self.facts, "note": self.note,
                "within": self.within, "extracted": self.extracted}


@dataclass
class CarveResult:
    image: str
    size: int
    layout: str                      # raw, vmfs, ocfs2
    scanned: int                     # bytes read and searched
    seconds: float
    hits: list[Hit]
    warnings: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "size": self.size, "layout": self.layout,
                "scanned": self.scanned, "seconds": round(self.seconds, 3),
                "hits": [h.to_dict() for h in self.hits],
                "warnings": [str(w) for w in self.warnings]}


# --- allocation -----------------------------------------------------------------------------

class AllocationMap:
    """Image ranges known allocated (True) or free (False); anything else is unknown."""

    def __init__(self, ranges: list[tuple[int, int, bool]]):
        self.ranges = sorted(r for r in ranges if r[1] > r[0])
        self._starts = [r[0] for r in self.ranges]

    def at(self, offset: int) -> bool | None:
        i = bisect.bisect_right(self._starts, offset) - 1
        if i >= 0 and offset < self.ranges[i][1]:
            return self.ranges[i][2]
        return None

    def free(self) -> list[tuple[int, int]]:
        return [(a, b) for a, b, allocated in self.ranges if not allocated]


def placement(src: ByteSource, image: ByteSource) -> list[tuple[int, int, int]]:
    """(offset in ``src``, offset in ``image``, length) of the parts of ``src`` that lie
    directly on ``image`` (through partitions and VMFS logical volumes); a host file is
    ``image`` when it has the same name (the volume opened its own descriptor)."""
    if src is image or (isinstance(src, FileSource) and src.name == image.name):
        return [(0, 0, src.size)]
    if isinstance(src, SliceSource):
        out = []
        for inner, at, n in placement(src.parent, image):
            lo, hi = max(inner, src.start), min(inner + n, src.start + src.size)
            if hi > lo:
                out.append((lo - src.start, at + lo - inner, hi - lo))
        return out
    pieces = getattr(src, "pieces", None)  # a VMFS LogicalVolume
    out = []
    for piece in pieces or ():
        if piece.source is None:
            continue
        for inner, at, n in placement(piece.source, image):
            lo = max(inner, piece.physical)
            hi = min(inner + n, piece.physical + piece.length)
            if hi > lo:
                out.append((piece.logical + lo - piece.physical, at + lo - inner, hi - lo))
    return out


def _on_image(ranges: list[tuple[int, int]], where: list[tuple[int, int, int]]
              ) -> list[tuple[int, int]]:
    """Volume ranges translated to image ranges."""
    out = []
    for start, end in ranges:
        for inner, at, n in where:
            lo, hi = max(start, inner), min(end, inner + n)
            if hi > lo:
                out.append((at + lo - inner, at + hi - inner))
    return out


def _device(volume):
    """The source a volume's offsets refer to (a VMFS logical volume, an OCFS2 device)."""
    return volume.fs.lv if type(volume).__module__.endswith(".vmfs") else volume.src


def volume_allocation(volume, image: ByteSource) -> tuple[AllocationMap, str]:
    """The allocation map of a datastore volume on ``image``, and its kind."""
    kind = type(volume).__module__.rsplit(".", 1)[-1]
    free = volume.fs.free_ranges() if kind == "vmfs" else volume.free_ranges()
    where = placement(_device(volume), image)
    ranges = [(at, at + n, True) for _, at, n in where]
    free_on_image = _on_image(free, where)
    return AllocationMap(_carve_out(ranges, free_on_image)), kind


def _carve_out(allocated: list[tuple[int, int, bool]], free: list[tuple[int, int]]
               ) -> list[tuple[int, int, bool]]:
    """``allocated`` ranges with the ``free`` ones cut out of them and added as free."""
    free = sorted(free)
    out = []
    for start, end, _ in allocated:
        pos = start
        for a, b in free:
            if b <= pos or a >= end:
                continue
            if a > pos:
                out.append((pos, a, True))
            pos = max(pos, b)
        if pos < end:
            out.append((pos, end, True))
    return out + [(a, b, False) for a, b in free]


#: Where a deleted entry's name lies in its slot: VMFS3/5 slots are 140 bytes (type, FD
#: address, generation, name); an OCFS2 entry has inode u64, rec_len u16, name_len u8,
#: file_type u8, then the name. Both names start 12 bytes in.
NAME_AT = 12
VMFS_SLOT = 140


def _entry_offset(data: bytes, name: bytes, kind: str, taken: set[int]) -> int | None:
    """Offset in the directory ``data`` of the deleted entry called ``name``."""
    i = data.find(name)
    while i >= 0:
        at = i - NAME_AT
        if at >= 0 and at not in taken:
            if kind == "vmfs" and at % VMFS_SLOT == 0 and data[i + len(name):i + len(name) + 1] \
                    in (b"\0", b"") and data[at + 4:at + 8] == bytes(4):
                return at
            if kind == "ocfs2" and data[at + 10] == len(name):
                return at
        i = data.find(name, i + 1)
    return None


def deleted_entries(volume, image: ByteSource, problems: list[Problem]) -> list[Hit]:
    """Deleted directory entries the volume still holds a name for, with the image offset
    of their slot where the directory's data lies on the image."""
    kind = type(volume).__module__.rsplit(".", 1)[-1]
    where = placement(_device(volume), image)
    hits = []
    for folder, entries in volume.walk("", deleted=True, problems=problems):
        gone = [e for e in entries if e.deleted]
        if not gone:
            continue
        runs: list[tuple[int, int, int]] = []
        data = b""
        with contextlib.suppress(VmsiftError):
            runs = volume.device_runs(folder)
            data = b"".join(image.read(at, n) for _, (at, n) in _runs_on_image(runs, where))
        taken: set[int] = set()
        for e in gone:
            path = f"{folder}/{e.name}" if folder else e.name
            offset = None
            at = _entry_offset(data, e.name.encode("utf-8", "surrogateescape"), kind, taken)
            if at is not None:
                taken.add(at)
                offset = _file_to_image(at, runs, where)
            hits.append(Hit("deleted-entry", offset, None, None,
                            {"path": path, "type": e.type.value, "inode": e.inode}))
    return hits


def _runs_on_image(runs: list[tuple[int, int, int]], where: list[tuple[int, int, int]]
                   ) -> list[tuple[int, tuple[int, int]]]:
    """(file offset, (image offset, length)) of a file's device runs, in file order."""
    out = []
    for off, dev, n in runs:
        for lo, hi in _on_image([(dev, dev + n)], where):
            out.append((off, (lo, hi - lo)))
    return out


def _file_to_image(pos: int, runs: list[tuple[int, int, int]],
                   where: list[tuple[int, int, int]]) -> int | None:
    """The image offset of byte ``pos`` of the file whose data `runs` are."""
    flat = 0
    for off, (at, n) in _runs_on_image(runs, where):
        if flat <= pos < flat + n:
            return at + pos - flat
        flat += n
    return None


# --- scanning -------------------------------------------------------------------------------

def data_ranges(src: ByteSource, only: list[tuple[int, int]] | None = None
                ) -> list[tuple[int, int]]:
    """What to read: the image's data runs (host holes hold nothing), within ``only``."""
    runs = [(r.offset, r.end) for r in src.extents() if r.kind is Alloc.DATA]
    if only is None:
        return runs
    out = []
    for a, b in runs:
        for c, d in only:
            lo, hi = max(a, c), min(b, d)
            if hi > lo:
                out.append((lo, hi))
    return sorted(out)


#: Signatures found by their first 4 bytes at sector starts (binary headers) and the rest,
#: searched anywhere (text).
_SECTOR_SIGS = [(i, s.pattern[:4], s.pattern) for i, s in enumerate(SIGNATURES)
                if s.align == SECTOR and s.at == 0]
_FREE_SIGS = [(i, s) for i, s in enumerate(SIGNATURES) if not (s.align == SECTOR and s.at == 0)]


def _sector_hits(data: bytes, pos: int, n: int) -> Iterator[tuple[int, int]]:
    """Sector-aligned signature hits starting in ``data[:n]`` (``data`` starts at image
    offset ``pos``): the first word of every sector is gathered with one strided copy
    (1/128 of the data), and only that is searched."""
    first = (-pos) % SECTOR
    count = min(-(-(n - first) // SECTOR), (len(data) - first) // SECTOR)
    if count <= 0:
        return
    heads = memoryview(data)[first:first + count * SECTOR].cast("I")[::SECTOR // 4].tobytes()
    for index, prefix, pattern in _SECTOR_SIGS:
        i = heads.find(prefix)
        while i >= 0:
            if i % 4 == 0:
                at = first + i // 4 * SECTOR
                if data.startswith(pattern, at):
                    yield pos + at, index
            i = heads.find(prefix, i + 1)


def scan(src: ByteSource, ranges: list[tuple[int, int]], block: int = BLOCK,
         progress: Callable[[int], None] | None = None) -> Iterator[tuple[int, int]]:
    """(artefact start, signature index) of every signature hit in ``ranges``. Blocks
    overlap by `OVERLAP` bytes: a pattern is reported by the block it starts in.
    ``progress`` is called with the bytes of each block searched."""
    for start, end in ranges:
        pos = start
        while pos < end:
            n = min(block, end - pos)
            data = src.read(pos, n + OVERLAP)
            yield from _sector_hits(data, pos, n)
            for index, sig in _FREE_SIGS:
                stop = min(len(data), n + len(sig.pattern) - 1)
                i = data.find(sig.pattern, 0, stop)
                while i >= 0:
                    at = pos + i
                    if sig.at < 0:
                        yield at, index
                    elif (at - sig.at) % sig.align == 0:
                        yield at - sig.at, index
                    i = data.find(sig.pattern, i + 1, stop)
            pos += n
            if progress:
                progress(n)


def _pair_streams(found: list[Found]) -> list[Found]:
    """A streamOptimized header's length runs to its footer (the next footer after it) and
    its end-of-stream marker; paired footers are dropped (they are part of the stream)."""
    out = []
    footers = [f for f in found if f.kind == "vmdk-sparse" and f.facts.get("footer")]
    used = set()
    for f in found:
        if f.kind == "vmdk-sparse" and f.facts.get("stream_optimized") and \
                not f.facts.get("footer") and f.length is None:
            foot = next((x for x in footers if x.offset > f.offset and id(x) not in used), None)
            if foot is not None:
                used.add(id(foot))
                f.length = foot.offset + 2 * SECTOR - f.offset
                f.note = None
        out.append(f)
    return [f for f in out if id(f) not in used]


def carve(path: str, *, unallocated_only: bool = False, block: int = BLOCK,
          progress: Callable[[int], None] | None = None) -> CarveResult:
    """Scan the image at ``path`` for VM artefacts (module docstring). ``progress`` is
    called with byte counts that add up to the image size (skipped space counts too)."""
    began = time.monotonic()
    warnings: list[Problem] = []
    with contextlib.ExitStack() as stack:
        src = stack.enter_context(FileSource(path))
        alloc, layout, volume = _allocation(src, path, warnings, stack)
        if unallocated_only and alloc is None:
            raise UnsupportedError("no allocation map: not a VMFS3/5 or OCFS2 image, so "
                                   "there is no unallocated space to scan", source=path)
        ranges = data_ranges(src, alloc.free() if unallocated_only else None)
        found: dict[tuple[str, int], Found] = {}
        for at, index in scan(src, ranges, block, progress):
            sig = SIGNATURES[index]
            try:
                got = sig.decoder(src, at)
            except VmsiftError as e:
                warnings.append(Problem.of(e, f"{sig.kind} candidate @ {at:#x} skipped: "))
                continue
            if got is not None:
                found.setdefault((got.kind, got.offset), got)
        ordered = _pair_streams(sorted(found.values(), key=lambda f: (f.offset, f.kind)))
        hits = [Hit(f.kind, f.offset, f.length, None if alloc is None else alloc.at(f.offset),
                    f.facts, f.note) for f in ordered]
        _nest(hits)
        if volume is not None:
            for h in deleted_entries(volume, src, warnings):
                if alloc is not None and h.offset is not None:
                    h.allocated = alloc.at(h.offset)  # the slot lies in a live folder
                hits.append(h)
        scanned = sum(b - a for a, b in ranges)
        if progress:
            progress(src.size - scanned)
        return CarveResult(path, src.size, layout, scanned, time.monotonic() - began, hits,
                           warnings)


def _allocation(src: ByteSource, path: str, warnings: list[Problem], stack
                ) -> tuple[AllocationMap | None, str, Any]:
    """The allocation map, layout and open volume of a datastore image (None, "raw", None
    for anything else)."""
    from ..datastore.detect import open_datastore

    try:
        volume = stack.enter_context(open_datastore([path]))
    except VmsiftError:
        return None, "raw", None
    try:
        alloc, layout = volume_allocation(volume, src)
    except VmsiftError as e:
        warnings.append(Problem.of(e, "allocation unknown: "))
        return None, type(volume).__module__.rsplit(".", 1)[-1], volume
    return alloc, layout, volume


def _nest(hits: list[Hit]) -> None:
    """Mark hits that lie inside an earlier artefact of known length (a descriptor in its
    sparse extent, a vmx inside a .vmsn)."""
    open_spans: list[Hit] = []
    for h in hits:
        open_spans = [p for p in open_spans if p.offset + p.length > h.offset]
        if open_spans:
            h.within = open_spans[-1].offset
        if h.length:
            open_spans.append(h)


def extract(result: CarveResult, out_dir: str) -> list[Problem]:
    """Write each hit of known length to ``out_dir`` as ``<offset hex>.<kind><ext>``
    (sparse, atomic; an existing file is an error). Returns what could not be written."""
    os.makedirs(out_dir, exist_ok=True)
    problems: list[Problem] = []
    with FileSource(result.image) as src:
        for h in result.hits:
            if h.offset is None or not h.length:
                continue
            name = f"{h.offset:012x}.{h.kind}{EXTENSIONS.get(h.kind, '.bin')}"
            target = os.path.join(out_dir, name)
            try:
                export_raw(SliceSource(src, h.offset, h.length), target, sync=False)
            except VmsiftError as e:
                problems.append(Problem.of(e, f"{name} not written: "))
                continue
            h.extracted = target
    return problems
