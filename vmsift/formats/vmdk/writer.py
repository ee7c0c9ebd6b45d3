"""Write any `ByteSource` as a single-file hosted sparse VMDK (monolithicSparse or streamOptimized).

Both subformats hold one KDMV extent with the descriptor embedded after the header, 64 KiB
grains and 512-entry grain tables. Only grains that the source's allocation map marks DATA and
that are not all zeros are stored; HOLE and ZERO ranges cost nothing.

* monolithicSparse (version 1, flags 0x3): header, descriptor, redundant GD + GTs, GD + GTs
  (all tables pre-placed, as VMware and qemu do), then raw grains from ``overhead`` on.
* streamOptimized (version 3, flags 0x30001): header with ``gdOffset = GD_AT_END``,
  descriptor, deflate-compressed grains each behind a grain marker, a GT marker + GT after the
  grains of each 512-grain span that has any, GD marker + GD, footer marker + footer (the header
  with the real ``gdOffset``) and the end-of-stream marker. Written strictly in order.

Memory holds the grain directory, one grain table and a bounded number of blocks in flight,
whatever the size of the disk. See ``docs/formats/vmdk-writer.md``.
"""

from __future__ import annotations

import array
import collections
import hashlib
import concurrent.futures
import os
import re
import secrets
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from ...errors import LimitError, SourceError, UnsupportedError
from ...publish import atomic_output
from ...source import Alloc, ByteSource
from .sparse import (GD_AT_END, MAX_CAPACITY_SECTORS, SECTOR, GrainMarker, MarkerType, MetaMarker,
                     SparseFlags, SparseHeader)

Subformat = Literal["monolithicSparse", "streamOptimized"]
SUBFORMATS = ("monolithicSparse", "streamOptimized")
ADAPTERS = ("ide", "buslogic", "lsilogic", "legacyESX", "pvscsi", "lsisas1068")

GRAIN_SECTORS = 128                 # 64 KiB grains, VMware's default
GRAIN = GRAIN_SECTORS * SECTOR
GTES_PER_GT = 512
GT_SECTORS = GTES_PER_GT * 4 // SECTOR
GT_SPAN = GTES_PER_GT * GRAIN       # 32 MiB of disk per grain table
DESCRIPTOR_SECTORS = 20             # room reserved for the embedded descriptor (10 KiB)
BLOCK = 2 << 20                     # bytes read from the source per job (whole grains)
COALESCE = 4 << 20                  # grains appended are written out in runs this large
MAX_INFLIGHT = 32                   # blocks read but not yet written (64 MiB), whatever the pool
MAX_SECTOR = 0xFFFFFFFF             # grain and table offsets are 32-bit sector numbers
NEWLINE_CHECK = b"\n \r\n"
_ZERO_BLOCK = bytes(BLOCK)


@dataclass
class VmdkWriteStats:
    subformat: str
    size: int               # virtual disk bytes (capacity_sectors * 512)
    capacity_sectors: int
    file_size: int          # bytes of the VMDK written
    grains_stored: int      # grains with data in the file
    data_bytes: int         # uncompressed bytes those grains hold
    zero_grains_skipped: int  # grains inside DATA runs that were all zeros
    cid: str                # the descriptor's CID (8 hex digits)


# --- descriptor ---------------------------------------------------------------------------

def geometry(capacity_sectors: int, adapter: str) -> tuple[int, int, int]:
    """(cylinders, heads, sectors per track) as VMware writes them in ``ddb.geometry.*``.

    IDE disks use 16 heads and 63 sectors; SCSI adapters use 64/32 below 1 GiB, 128/32
    below 2 GiB and 255/63 above (VMware KB 1026266). Cylinders are rounded down.
    """
    if adapter == "ide":
        heads, spt = 16, 63
    elif capacity_sectors < (1 << 30) // SECTOR:
        heads, spt = 64, 32
    elif capacity_sectors < (2 << 30) // SECTOR:
        heads, spt = 128, 32
    else:
        heads, spt = 255, 63
    return capacity_sectors // (heads * spt), heads, spt


def format_uuid(raw: bytes) -> str:
    """``ddb.uuid`` spelling: 16 bytes as hex pairs, a dash between the two halves."""
    pairs = [f"{b:02x}" for b in raw]
    return " ".join(pairs[:8]) + "-" + " ".join(pairs[8:])


@dataclass(frozen=True)
class Parent:
    """The parent of a delta disk: its file name as the delta names it, and its CID."""

    hint: str
    cid: int


def _quotable(name: str) -> str:
    if re.search(r'["\x00-\x1f\x7f]', name):
        raise UnsupportedError(f"output name {name!r} cannot be written in a descriptor "
                               f"(quote or control character)", source=name)
    return name


def build_descriptor(*, filename: str, capacity_sectors: int, create_type: str, cid: int,
                     adapter: str, hw_version: str, disk_uuid: bytes,
                     long_content_prefix: bytes, extent_type: str = "SPARSE",
                     parent: Parent | None = None) -> bytes:
    """The descriptor text: header, one extent (SPARSE for the embedded descriptor of our
    sparse files; FLAT, at offset 0, for a ``monolithicFlat`` descriptor), the disk database.
    A delta names its ``parent`` (parentCID, parentFileNameHint)."""
    _quotable(filename)
    cyl, heads, spt = geometry(capacity_sectors, adapter)
    long_id = long_content_prefix.hex() + f"{cid:08x}"
    parent_lines = "parentCID=ffffffff\n" if parent is None else (
        f"parentCID={parent.cid:08x}\n")
    hint_line = "" if parent is None else f'parentFileNameHint="{_quotable(parent.hint)}"\n'
    text = (
        "# Disk DescriptorFile\n"
        "version=1\n"
        'encoding="UTF-8"\n'
        f"CID={cid:08x}\n"
        f"{parent_lines}"
        f'createType="{create_type}"\n'
        f"{hint_line}"
        "\n"
        "# Extent description\n"
        f'RW {capacity_sectors} {extent_type} "{filename}"{" 0" if extent_type == "FLAT" else ""}\n'
        "\n"
        "# The Disk Data Base\n"
        "#DDB\n"
        "\n"
        f'ddb.virtualHWVersion = "{hw_version}"\n'
        f'ddb.adapterType = "{adapter}"\n'
        f'ddb.geometry.cylinders = "{cyl}"\n'
        f'ddb.geometry.heads = "{heads}"\n'
        f'ddb.geometry.sectors = "{spt}"\n'
        f'ddb.uuid = "{format_uuid(disk_uuid)}"\n'
        f'ddb.longContentID = "{long_id}"\n'
    )
    return text.encode("utf-8")


def random_cid() -> int:
    while True:  # ffffffff means "no parent", fffffffe "never written": avoid both
        cid = secrets.randbits(32)
        if cid < 0xFFFFFFFE:
            return cid


# --- binary pieces --------------------------------------------------------------------------

def build_header(*, version: int, flags: int, capacity: int, descriptor_offset: int,
                 descriptor_size: int, rgd_offset: int, gd_offset: int, overhead: int,
                 compress: int) -> bytes:
    return SparseHeader.build(dict(
        version=version, flags=flags, capacity=capacity, grain_size=GRAIN_SECTORS,
        descriptor_offset=descriptor_offset, descriptor_size=descriptor_size,
        num_gtes_per_gt=GTES_PER_GT, rgd_offset=rgd_offset, gd_offset=gd_offset,
        overhead=overhead, unclean_shutdown=0, newline_check=NEWLINE_CHECK,
        compress_algorithm=compress, pad=bytes(433)))


def meta_marker(kind: MarkerType, sectors: int) -> bytes:
    """One-sector marker announcing ``sectors`` sectors of metadata (0 for end of stream)."""
    return MetaMarker.build(dict(sectors=sectors, size=0, type=kind)).ljust(SECTOR, b"\0")


def _le_bytes(table: array.array) -> bytes:
    if sys.byteorder == "big":
        table = array.array("I", table)
        table.byteswap()
    return table.tobytes()


def _pad(n: int) -> int:
    return -n % SECTOR


def _sectors(nbytes: int) -> int:
    return -(-nbytes // SECTOR)


# --- reading the source ---------------------------------------------------------------------

def data_spans(src: ByteSource, capacity_bytes: int) -> Iterator[tuple[int, int]]:
    """Grain-aligned (start, end) ranges that cover every DATA run of ``src``, merged."""
    pending: list[int] | None = None
    for run in src.extents():
        if run.kind is not Alloc.DATA or run.length == 0:
            continue
        lo = run.offset - run.offset % GRAIN
        hi = min(-(-run.end // GRAIN) * GRAIN, capacity_bytes)
        if pending and lo <= pending[1]:
            pending[1] = max(pending[1], hi)
            continue
        if pending:
            yield pending[0], pending[1]
        pending = [lo, hi]
    if pending:
        yield pending[0], pending[1]


def _blocks(src: ByteSource, capacity_bytes: int) -> Iterator[tuple[int, int]]:
    """(offset, length) blocks of at most BLOCK bytes, grain aligned, over the DATA spans."""
    for lo, hi in data_spans(src, capacity_bytes):
        pos = lo
        while pos < hi:
            n = min(BLOCK, hi - pos)
            yield pos, n
            pos += n


def _read_block(src: ByteSource, offset: int, length: int) -> bytes:
    """Read ``length`` bytes; past the source's end (capacity rounded up) reads zeros."""
    want = max(0, min(length, src.size - offset))
    data = src.read_exact(offset, want, "disk data") if want else b""
    return data if len(data) == length else data + bytes(length - len(data))


# --- per-block jobs (run in the thread pool) --------------------------------------------------

Piece = tuple[int, bytes, int]  # (grain number, bytes to write, data bytes held)


def _raw_grains(offset: int, data: bytes, keep_zeros: bool = False) -> tuple[list[Piece], int]:
    """Non-zero grains of a block as raw 64 KiB pieces (the last one zero-padded); all
    grains with ``keep_zeros`` (a delta's zero grain hides its parent's data)."""
    if not keep_zeros and data == _ZERO_BLOCK[:len(data)]:
        return [], -(-len(data) // GRAIN)
    out: list[Piece] = []
    zeros = 0
    for i in range(0, len(data), GRAIN):
        piece = data[i:i + GRAIN]  # a copy, but bytes compare far faster than memoryviews
        held = len(piece)
        if not keep_zeros and piece == _ZERO_BLOCK[:held]:
            zeros += 1
            continue
        if held < GRAIN:
            piece += bytes(GRAIN - held)
        out.append(((offset + i) // GRAIN, piece, held))
    return out, zeros


def _compressed_grains(offset: int, data: bytes, level: int) -> tuple[list[Piece], int]:
    """Non-zero grains of a block, each as grain marker + deflate data + sector padding."""
    pieces, zeros = _raw_grains(offset, data)
    out: list[Piece] = []
    for grain, piece, held in pieces:
        packed = zlib.compress(piece[:held], level)
        marker = GrainMarker.build(dict(lba=grain * GRAIN_SECTORS, size=len(packed)))
        out.append((grain, marker + packed + bytes(_pad(len(marker) + len(packed))), held))
    return out, zeros


# --- the two layouts ---------------------------------------------------------------------------

class _Layout:
    """Common state: the grain directory, the grain table being filled, the write position."""

    def __init__(self, fd: int, path: str, capacity: int, descriptor: bytes):
        self.fd, self.path = fd, path
        self.capacity = capacity
        self.num_gts = max(1, -(-capacity // (GTES_PER_GT * GRAIN_SECTORS)))
        self.gd_sectors = _sectors(self.num_gts * 4)
        self.gd = array.array("I", bytes(4 * self.num_gts))
        self.gt_index = -1
        self.gt = array.array("I", bytes(4 * GTES_PER_GT))
        self.gt_dirty = False
        if len(descriptor) > DESCRIPTOR_SECTORS * SECTOR:
            raise LimitError("descriptor does not fit its reserved sectors", source=path)
        self.pos = 0  # next free sector (after what is queued)
        self._queue: list[bytes] = []
        self._queued = 0

    def write(self, data: bytes | memoryview, sector: int) -> None:
        view, offset = memoryview(data), sector * SECTOR
        try:
            while view:
                n = os.pwrite(self.fd, view, offset)
                view, offset = view[n:], offset + n
        except OSError as e:
            raise SourceError(f"write failed: {e.strerror}", source=self.path,
                              offset=offset) from None

    def append(self, payload: bytes) -> int:
        """Queue ``payload`` (whole sectors) at the end; return its first sector.

        Queued pieces go out in one write of up to COALESCE bytes.
        """
        sector = self.pos
        nsect = len(payload) // SECTOR
        if sector + nsect > MAX_SECTOR:
            raise LimitError("the VMDK would pass 2 TiB, beyond 32-bit sector offsets",
                             source=self.path, offset=sector * SECTOR)
        self._queue.append(payload)
        self._queued += len(payload)
        self.pos += nsect
        if self._queued >= COALESCE:
            self.flush_queue()
        return sector

    def flush_queue(self) -> None:
        if self._queue:
            start = self.pos - self._queued // SECTOR
            self.write(b"".join(self._queue), start)
            self._queue.clear()
            self._queued = 0

    def add(self, grain: int, payload: bytes) -> None:
        """Append one stored grain and record it in its grain table."""
        index, entry = divmod(grain, GTES_PER_GT)
        if index != self.gt_index:
            self.flush_gt()
            self.gt_index = index
        self.gt[entry] = self.append(payload)
        self.gt_dirty = True

    def flush_gt(self) -> None:
        if self.gt_dirty:
            self.store_gt(self.gt_index, _le_bytes(self.gt))
            self.gt = array.array("I", bytes(4 * GTES_PER_GT))
            self.gt_dirty = False

    def store_gt(self, index: int, raw: bytes) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError


class _MonolithicSparse(_Layout):
    """Tables pre-placed after the descriptor; grain tables written once their span is done."""

    def __init__(self, fd: int, path: str, capacity: int, descriptor: bytes):
        super().__init__(fd, path, capacity, descriptor)
        tables = self.gd_sectors + self.num_gts * GT_SECTORS
        self.rgd_offset = 1 + DESCRIPTOR_SECTORS
        self.gd_offset = self.rgd_offset + tables
        end = self.gd_offset + tables
        self.overhead = -(-end // GRAIN_SECTORS) * GRAIN_SECTORS
        if self.overhead + -(-capacity // GRAIN_SECTORS) * GRAIN_SECTORS > MAX_SECTOR:
            raise UnsupportedError(f"a monolithicSparse extent holds less than 2 TiB; this "
                                   f"disk has {capacity} sectors (use streamOptimized)",
                                   source=path)
        for i in range(self.num_gts):  # each directory points at its pre-placed table
            self.gd[i] = self.gd_offset + self.gd_sectors + i * GT_SECTORS
        self.pos = self.overhead
        try:
            os.ftruncate(fd, self.overhead * SECTOR)
        except OSError as e:
            raise SourceError(f"cannot size output: {e.strerror}", source=path) from None
        self.write(descriptor, 1)

    def store_gt(self, index: int, raw: bytes) -> None:
        within = self.gd_sectors + index * GT_SECTORS
        self.write(raw, self.rgd_offset + within)
        self.write(raw, self.gd_offset + within)

    def finish(self) -> None:
        self.flush_gt()
        self.flush_queue()
        gd = _le_bytes(self.gd)
        rgd = array.array("I", (e - self.gd_offset + self.rgd_offset for e in self.gd))
        self.write(_le_bytes(rgd), self.rgd_offset)
        self.write(gd, self.gd_offset)
        self.write(build_header(
            version=1, flags=SparseFlags.VALID_NEWLINE_TEST | SparseFlags.REDUNDANT_GD,
            capacity=self.capacity, descriptor_offset=1, descriptor_size=DESCRIPTOR_SECTORS,
            rgd_offset=self.rgd_offset, gd_offset=self.gd_offset, overhead=self.overhead,
            compress=0), 0)


STREAM_FLAGS = SparseFlags.VALID_NEWLINE_TEST | SparseFlags.COMPRESSED | SparseFlags.MARKERS


class _StreamOptimized(_Layout):
    """Everything appended in order: the file could be written to a pipe."""

    def __init__(self, fd: int, path: str, capacity: int, descriptor: bytes):
        super().__init__(fd, path, capacity, descriptor)
        self.desc_sectors = _sectors(len(descriptor))  # VMware reserves no spare room here
        self.overhead = GRAIN_SECTORS  # first grain at 64 KiB, as VMware writes it
        self.write(self._header(GD_AT_END), 0)
        self.write(descriptor.ljust((self.overhead - 1) * SECTOR, b"\0"), 1)
        self.pos = self.overhead

    def _header(self, gd_offset: int) -> bytes:
        return build_header(version=3, flags=STREAM_FLAGS, capacity=self.capacity,
                            descriptor_offset=1, descriptor_size=self.desc_sectors,
                            rgd_offset=0, gd_offset=gd_offset, overhead=self.overhead,
                            compress=1)

    def _meta(self, kind: MarkerType, body: bytes) -> int:
        """Append marker + body (sector padded); return the body's first sector."""
        body += bytes(_pad(len(body)))
        return self.append(meta_marker(kind, len(body) // SECTOR) + body) + 1

    def store_gt(self, index: int, raw: bytes) -> None:
        self.gd[index] = self._meta(MarkerType.GRAIN_TABLE, raw)

    def finish(self) -> None:
        self.flush_gt()
        gd_sector = self._meta(MarkerType.GRAIN_DIRECTORY, _le_bytes(self.gd))
        self._meta(MarkerType.FOOTER, self._header(gd_sector))
        self.append(meta_marker(MarkerType.EOS, 0))
        self.flush_queue()


# --- the entry point ----------------------------------------------------------------------

def write_vmdk(src: ByteSource, out_path: str | os.PathLike,
               subformat: Subformat = "monolithicSparse", *, adapter: str = "lsilogic",
               hw_version: int | str = 4, overwrite: bool = False,
               progress: Callable[[int], None] | None = None, threads: int | None = None,
               level: int = 6, cid: int | None = None, disk_uuid: bytes | None = None,
               parent: Parent | None = None) -> VmdkWriteStats:
    """Write ``src`` as a single-file VMDK at ``out_path``; return what was written.

    ``subformat`` is ``monolithicSparse`` (raw grains, redundant grain directory) or
    ``streamOptimized`` (deflate grains with markers, for OVF/OVA). ``adapter`` sets
    ``ddb.adapterType`` and the geometry; ``hw_version`` sets ``ddb.virtualHWVersion``.
    ``progress`` is called with counts of virtual bytes done (they sum to the capacity).
    ``threads`` bounds the compression pool (default: CPU count). ``level`` is the zlib level
    of streamOptimized grains. ``cid``/``disk_uuid`` fix the content id and ``ddb.uuid``
    (random by default; ``ddb.longContentID`` is derived from both, so fixing both makes the
    output byte for byte reproducible). With ``parent`` the file is a monolithicSparse delta
    of it: every DATA grain of ``src`` is stored, zeros too, and HOLE falls through to the
    parent. The file appears under its name only when complete.
    """
    if subformat not in SUBFORMATS:
        raise UnsupportedError(f"subformat {subformat!r} is not one of {', '.join(SUBFORMATS)}")
    if adapter not in ADAPTERS:
        raise UnsupportedError(f"adapter {adapter!r} is not one of {', '.join(ADAPTERS)}")
    if not re.fullmatch(r"[0-9]{1,3}", str(hw_version)):
        raise UnsupportedError(f"hardware version {hw_version!r} is not a small number")
    if cid is not None and not 0 <= cid < 0xFFFFFFFE:
        raise UnsupportedError(f"CID {cid:#x} is reserved or out of range")
    if parent is not None and subformat != "monolithicSparse":
        raise UnsupportedError("only a monolithicSparse VMDK can be a delta of a parent")
    if disk_uuid is not None and len(disk_uuid) != 16:
        raise UnsupportedError("disk uuid must be 16 bytes")
    out = os.fspath(out_path)
    if not overwrite and os.path.lexists(out):
        raise SourceError("output exists (--force replaces it)", source=out)
    capacity = -(-src.size // SECTOR)
    if capacity > MAX_CAPACITY_SECTORS:
        raise UnsupportedError(f"a disk of {src.size} bytes is beyond the {MAX_CAPACITY_SECTORS}"
                               f" sectors vmsift writes as VMDK", source=src.name)
    cid = random_cid() if cid is None else cid
    disk_uuid = disk_uuid or b"\x60\x00\xc2" + secrets.token_bytes(13)
    descriptor = build_descriptor(
        filename=os.path.basename(out), capacity_sectors=capacity, create_type=subformat,
        cid=cid, adapter=adapter, hw_version=str(hw_version), disk_uuid=disk_uuid,
        long_content_prefix=hashlib.blake2b(disk_uuid, digest_size=12).digest(), parent=parent)

    with atomic_output(out, overwrite=overwrite) as fd:
        layout_cls = _StreamOptimized if subformat == "streamOptimized" else _MonolithicSparse
        layout = layout_cls(fd, out, capacity, descriptor)
        grains, data_bytes, zeros = _pump(src, layout, subformat, capacity * SECTOR,
                                          progress, threads, level, parent is not None)
        layout.finish()
        file_size = os.fstat(fd).st_size
    return VmdkWriteStats(subformat, capacity * SECTOR, capacity, file_size, grains,
                          data_bytes, zeros, f"{cid:08x}")


def _pump(src: ByteSource, layout: _Layout, subformat: str, capacity_bytes: int,
          progress: Callable[[int], None] | None, threads: int | None,
          level: int, keep_zeros: bool) -> tuple[int, int, int]:
    """Read DATA blocks in order, find and (for streams) compress grains in a pool, append.

    At most ``threads + 2`` blocks (and never more than MAX_INFLIGHT) are in flight, so
    memory does not grow with the disk.
    """
    workers = max(1, min(threads or os.cpu_count() or 2, MAX_INFLIGHT - 2))
    if subformat == "streamOptimized":
        def job(offset: int, data: bytes) -> tuple[list[Piece], int]:
            return _compressed_grains(offset, data, level)
    else:
        def job(offset: int, data: bytes) -> tuple[list[Piece], int]:
            return _raw_grains(offset, data, keep_zeros)
    grains = data_bytes = zeros = 0
    done_to = 0  # progress reported up to this virtual offset
    inflight: collections.deque = collections.deque()

    def drain_one() -> None:
        nonlocal grains, data_bytes, zeros, done_to
        offset, length, future = inflight.popleft()
        pieces, skipped = future.result()
        zeros += skipped
        for grain, payload, held in pieces:
            layout.add(grain, payload)
            grains += 1
            data_bytes += held
        if progress:
            progress(offset + length - done_to)
        done_to = offset + length

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers,
                                               thread_name_prefix="vmsift-vmdk") as pool:
        try:
            for offset, length in _blocks(src, capacity_bytes):
                data = _read_block(src, offset, length)
                inflight.append((offset, length, pool.submit(job, offset, data)))
                if len(inflight) >= workers + 2:
                    drain_one()
            while inflight:
                drain_one()
        finally:
            for _, _, future in inflight:
                future.cancel()
    if progress and capacity_bytes > done_to:
        progress(capacity_bytes - done_to)
    return grains, data_bytes, zeros
