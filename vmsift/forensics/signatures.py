"""What `vmsift carve` looks for: one table of signatures, and a decoder per artefact kind.

A `Signature` is a byte string, where it lies inside its artefact (``at``), the alignment of
the artefact's start (binary headers start on a 512-byte sector; text files anywhere), and
the decoder that confirms a hit and says how long the artefact is and what it holds. Decoders
take the scanned image and the artefact's start, read only what they need (headers, grain
tables, text), and return a `Found` or None (a false hit). They never trust a length: every
length is clipped to the image and to `MAX_ARTEFACT`.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import VmsiftError
from ..formats import dictfile, vmsd, vmsn
from ..formats.vmdk import cowd, descriptor, sesparse, sparse
from ..source import ByteSource, SliceSource

SECTOR = 512
MAX_ARTEFACT = 64 << 30       # the longest length an artefact may be given (and extracted)
MAX_TEXT = 1 << 20            # text artefacts (vmx, vmsd, descriptors) are a few KiB
TEXT_STEP = 64 << 10
MAX_GRAIN_TABLES = 1 << 16    # grain tables read to size a sparse extent
MAX_GTES = 4096               # entries per grain table (VMware writes 512)
MAX_NVRAM_ENTRIES = 4096
_NON_TEXT = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass
class Found:
    """A confirmed artefact: its start, length (None: unknown) and decoded facts."""

    kind: str
    offset: int
    length: int | None
    facts: dict[str, Any] = field(default_factory=dict)
    note: str | None = None


Decoder = Callable[[ByteSource, int], "Found | None"]


@dataclass(frozen=True)
class Signature:
    kind: str
    pattern: bytes
    decoder: Decoder
    at: int = 0          # offset of the pattern inside the artefact (-1: found by decoder)
    align: int = 1       # the artefact starts at a multiple of this in the image
    what: str = ""


def _clip(src: ByteSource, start: int, length: int) -> int:
    return max(0, min(length, src.size - start, MAX_ARTEFACT))


# --- text -----------------------------------------------------------------------------------

def text_span(src: ByteSource, hit: int, back: bool) -> tuple[int, int]:
    """[start, end) of the run of text bytes around ``hit`` (backwards only with ``back``),
    read in `TEXT_STEP` windows up to `MAX_TEXT` each way."""
    start = hit
    if back:
        while start > max(0, hit - MAX_TEXT):
            lo = max(0, start - TEXT_STEP, hit - MAX_TEXT)
            m = _NON_TEXT.search(src.read(lo, start - lo)[::-1])
            if m:
                start -= m.start()
                break
            start = lo
    end = hit
    while end < hit + MAX_TEXT:
        chunk = src.read(end, TEXT_STEP)
        m = _NON_TEXT.search(chunk)
        if m or len(chunk) < TEXT_STEP:
            end += m.start() if m else len(chunk)
            break
        end += len(chunk)
    return start, min(end, hit + MAX_TEXT)


def _text(src: ByteSource, hit: int, back: bool) -> tuple[int, bytes]:
    start, end = text_span(src, hit, back)
    return start, src.read(start, end - start)


def decode_descriptor(src: ByteSource, hit: int) -> Found | None:
    start, data = _text(src, hit, back=False)
    try:
        desc = descriptor.parse(data, f"{src.name} @ {start:#x}")
    except VmsiftError:
        return None
    return Found("vmdk-descriptor", start, len(data), {
        "cid": f"{desc.cid:08x}" if desc.cid is not None else None,
        "parent_cid": f"{desc.parent_cid:08x}" if desc.parent_cid is not None else None,
        "create_type": desc.create_type,
        "extents": [e.filename for e in desc.extents]})


def _dictionary(src: ByteSource, hit: int) -> tuple[int, bytes, dictfile.Dictionary] | None:
    start, data = _text(src, hit, back=True)
    try:
        return start, data, dictfile.parse(data, f"{src.name} @ {start:#x}")
    except VmsiftError:
        return None


#: The lines a .vmx must hold, found by their shared tail (one search for both).
VMX_KEYS = (b"config.", b"virtualHW.")


def decode_vmx(src: ByteSource, hit: int) -> Found | None:
    before = src.read(max(0, hit - 10), min(hit, 10))
    if not before.endswith(VMX_KEYS):
        return None
    if (got := _dictionary(src, hit)) is None:
        return None
    start, data, d = got
    if d.get("snapshot.lastUID") is not None:
        return None  # a .vmsd: found by its own signature
    return Found("vmx", start, len(data), {
        "display_name": d.get("displayName"), "guest_os": d.get("guestOS"),
        "virtual_hw": d.get("virtualHW.version"), "memsize_mb": d.get("memsize")})


def decode_vmsd(src: ByteSource, hit: int) -> Found | None:
    if (got := _dictionary(src, hit)) is None:
        return None
    start, data, _ = got
    try:
        parsed = vmsd.parse(data, f"{src.name} @ {start:#x}")
    except VmsiftError:
        return None
    return Found("vmsd", start, len(data), {
        "last_uid": parsed.last_uid, "snapshots": parsed.num_snapshots,
        "names": [s.display_name for s in parsed.snapshots][:16]})


# --- virtual disk headers -------------------------------------------------------------------

def _u32s(raw: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(raw) // 4}I", raw[:len(raw) // 4 * 4])


def _sparse_length(src: ByteSource, start: int, h: sparse.Header) -> tuple[int | None, str | None]:
    """Bytes of a hosted sparse extent: past its metadata and its last grain (from the
    grain directory and tables)."""
    if not 0 < h.num_gtes_per_gt <= MAX_GTES:
        return None, f"{h.num_gtes_per_gt} entries per grain table: absurd"
    span = h.grain_size * h.num_gtes_per_gt
    if not span or not 0 < h.gd_offset < (1 << 40):
        return None, "grain directory not found"
    tables = -(-h.capacity // span)
    if tables > MAX_GRAIN_TABLES:
        return None, f"{tables} grain tables: too many to size it"
    end = max(h.overhead, h.gd_offset + -(-tables * 4 // SECTOR))
    gd = _u32s(src.read(start + h.gd_offset * SECTOR, tables * 4))
    for gde in gd:
        if not gde:
            continue
        gt = _u32s(src.read(start + gde * SECTOR, h.num_gtes_per_gt * 4))
        end = max(end, gde + -(-h.num_gtes_per_gt * 4 // SECTOR),
                  max(gt, default=0) + h.grain_size * (max(gt, default=0) > 1))
    return end * SECTOR, None


def decode_sparse(src: ByteSource, hit: int) -> Found | None:
    try:
        h = sparse.parse_header(src.read(hit, SECTOR), src.name, hit)
    except VmsiftError:
        return None
    grain = h.grain_size
    if h.version not in (1, 2, 3) or not grain or grain & (grain - 1) or grain > 2048 \
            or h.capacity > sparse.MAX_CAPACITY_SECTORS:
        return None
    facts: dict[str, Any] = {"capacity": h.capacity * SECTOR, "grain_bytes": grain * SECTOR,
                             "version": h.version, "stream_optimized": h.stream_optimized,
                             "footer": False}
    if h.stream_optimized and h.gd_offset != sparse.GD_AT_END and hit >= SECTOR:
        marker = src.read(hit - SECTOR, 16)
        if len(marker) == 16 and struct.unpack_from("<QII", marker) == (1, 0, 3):
            facts["footer"] = True  # the copy of the header at the end of a stream
            return Found("vmdk-sparse", hit, 2 * SECTOR, facts,
                         "footer of a streamOptimized extent")
    try:
        desc = sparse.embedded_descriptor(SliceSource(src, hit, src.size - hit), h)
    except VmsiftError:
        desc = None
    if desc is not None:
        facts["cid"] = f"{desc.cid:08x}" if desc.cid is not None else None
        facts["create_type"] = desc.create_type
    if h.stream_optimized and h.gd_offset == sparse.GD_AT_END:
        return Found("vmdk-sparse", hit, None, facts, "streamOptimized: length from its footer")
    length, note = _sparse_length(src, hit, h)
    return Found("vmdk-sparse", hit, None if length is None else _clip(src, hit, length),
                 facts, note)


def decode_cowd(src: ByteSource, hit: int) -> Found | None:
    try:
        h = cowd.parse_header(src.read(hit, cowd.HEADER_SIZE), src.name)
    except VmsiftError:
        return None
    if h.version not in (1, 2, 3) or not h.grain_size or h.next_free_sector < 4:
        return None
    return Found("vmdk-cowd", hit, _clip(src, hit, h.next_free_sector * SECTOR), {
        "capacity": h.capacity * SECTOR, "grain_bytes": h.grain_size * SECTOR,
        "root": h.root, "parent": h.parent_file_name or None, "generation": h.generation})


def decode_sesparse(src: ByteSource, hit: int) -> Found | None:
    try:
        h = sesparse.parse_header(src.read(hit, SECTOR), src.name)
    except VmsiftError:
        return None
    if h.version != sesparse.VERSION or h.capacity > sesparse.MAX_CAPACITY_SECTORS:
        return None
    grains_at, _ = h.region("grains")
    bitmap_at, bitmap_sectors = h.region("free_bitmap")
    used = 0  # grains stored: the highest bit set in the free bitmap, plus one
    if bitmap_sectors * SECTOR <= 64 << 20:
        bitmap = src.read(hit + bitmap_at * SECTOR, bitmap_sectors * SECTOR).rstrip(b"\0")
        if bitmap:
            used = (len(bitmap) - 1) * 8 + bitmap[-1].bit_length()
    length = (grains_at + used * h.grain_size) * SECTOR
    return Found("vmdk-sesparse", hit, _clip(src, hit, length), {
        "capacity": h.capacity * SECTOR, "grain_bytes": h.grain_size * SECTOR,
        "grains_stored": used})


# --- state files ----------------------------------------------------------------------------

def decode_nvram(src: ByteSource, hit: int) -> Found | None:
    """``MRVN``, a version, then entries (4-byte name, 4-byte sub-name, u32 length, data)."""
    pos = hit + 8
    entries = []
    while len(entries) < MAX_NVRAM_ENTRIES:
        head = src.read(pos, 12)
        if len(head) < 12 or not head[:4].strip(b"\0") or \
                not all(c == 0 or 0x20 < c < 0x7F for c in head[:8]):
            break
        n = struct.unpack_from("<I", head, 8)[0]
        if pos + 12 + n > src.size:
            break
        entries.append(head[:4].rstrip(b"\0").decode())
        pos += 12 + n
    if not entries:
        return None
    return Found("nvram", hit, _clip(src, hit, pos - hit),
                 {"entries": len(entries), "names": sorted(set(entries))})


def decode_vmsn(src: ByteSource, hit: int) -> Found | None:
    view = SliceSource(src, hit, src.size - hit)
    try:
        head = vmsn.FileHeader.parse(view.read_exact(0, vmsn.HEADER_SIZE))
        if not 0 < head.group_count <= 1024:
            return None
        cp = vmsn.read(view, strict=False)
    except VmsiftError:
        return None
    names = [g.name for g in cp.groups]
    if not all(n and n.isprintable() for n in names):
        return None
    end = max((g.tags_offset + g.size for g in cp.groups if g.error is None), default=0)
    end = max([end, *(t.data_offset + t.size for t in cp.tags() if t.is_block)])
    facts: dict[str, Any] = {"variant": cp.variant, "groups": len(names),
                             "state": vmsn.checkpoint_state(cp)}
    mm = vmsn.memory_regions(cp)
    if mm is not None:
        facts["memory"] = mm.size
        facts["memory_embedded"] = mm.block is not None
    try:
        config = vmsn.embedded_config(cp, view)
    except VmsiftError:
        config = None
    if config is not None:
        facts["display_name"] = config.get("displayName")
    return Found("vmsn", hit, _clip(src, hit, end), facts)


#: Every signature carve looks for. Binary headers start on a sector; text is found where
#: it is (a vmx or vmsd by a line it must hold, its start by walking back over text).
SIGNATURES: tuple[Signature, ...] = (
    Signature("vmdk-sparse", sparse.MAGIC, decode_sparse, align=SECTOR,
              what="VMDK hosted sparse / streamOptimized extent header (KDMV)"),
    Signature("vmdk-cowd", cowd.MAGIC, decode_cowd, align=SECTOR,
              what="VMDK ESX sparse (COWD) extent header"),
    Signature("vmdk-sesparse", sesparse.MAGIC_BYTES, decode_sesparse, align=SECTOR,
              what="VMDK SESparse extent header"),
    Signature("vmdk-descriptor", b"# Disk DescriptorFile", decode_descriptor,
              what="VMDK text descriptor"),
    Signature("vmx", b"version = ", decode_vmx, at=-1,
              what=".vmx configuration (its config.version or virtualHW.version line)"),
    Signature("vmsd", b"snapshot.lastUID = ", decode_vmsd, at=-1, what=".vmsd snapshot list"),
    Signature("nvram", b"MRVN", decode_nvram, align=SECTOR, what=".nvram BIOS/EFI store"),
    *(Signature("vmsn", magic, decode_vmsn, align=SECTOR,
                what=".vmsn / .vmss checkpoint state") for magic in vmsn.MAGIC_BYTES),
)
OVERLAP = max(len(s.pattern) for s in SIGNATURES) - 1
