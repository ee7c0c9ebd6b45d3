"""A streamOptimized VMDK read front to back, for when random access is impossible (the
file is gzip-compressed inside an OVF package): header, then grain markers in file order.

`grains` yields each stored grain inflated, with its virtual offset; metadata markers
(grain tables, directory, footer) are skipped, their size checked against the tables the
header implies, so a hostile stream cannot make the reader skip or inflate without bound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ...errors import FormatError, TruncatedError
from .sparse import SECTOR, Header, MarkerType, SparseFlags, parse_header, zlib

Reader = Callable[[int], bytes]   # read(n): the next n bytes, fewer only at the end


def _exact(read: Reader, n: int, what: str, name: str, pos: int) -> bytes:
    data = read(n)
    if len(data) != n:
        raise TruncatedError(f"{what} needs {n} bytes, the stream ends after {len(data)}",
                             source=name, offset=pos)
    return data


def read_header(read: Reader, name: str) -> Header:
    header = parse_header(_exact(read, SECTOR, "sparse header", name, 0), name)
    if not header.flags & SparseFlags.MARKERS or not header.flags & SparseFlags.COMPRESSED:
        raise FormatError("not a streamOptimized VMDK (no markers or no compression): it "
                          "cannot be read as a stream", source=name, offset=8)
    return header


def grains(read: Reader, header: Header, name: str) -> Iterator[tuple[int, bytes]]:
    """(virtual offset, bytes) of every grain after ``header``, in stream order."""
    g = header.grain_size * SECTOR
    capacity = header.capacity * SECTOR
    if not 1 <= header.grain_size <= 2048 or header.num_gtes_per_gt not in range(1, 4097):
        raise FormatError(f"grain size {header.grain_size} sectors or "
                          f"{header.num_gtes_per_gt} entries per table", source=name, offset=20)
    gt_sectors = -(-header.num_gtes_per_gt * 4 // SECTOR)
    gts = -(-capacity // (g * header.num_gtes_per_gt))
    gd_sectors = -(-gts * 4 // SECTOR)
    meta_limit = max(gt_sectors, gd_sectors, 1)
    pos = SECTOR
    skip = header.overhead * SECTOR - pos
    if skip < 0 or skip > (64 << 20):
        raise FormatError(f"overhead of {header.overhead} sectors", source=name, offset=64)
    _exact(read, skip, "descriptor and metadata", name, pos)
    pos += skip
    while True:
        head = read(SECTOR)
        if not head:
            raise TruncatedError("stream ends without its end-of-stream marker",
                                 source=name, offset=pos)
        if len(head) < 12:
            raise TruncatedError("marker cut short", source=name, offset=pos)
        value = int.from_bytes(head[:8], "little")
        size = int.from_bytes(head[8:12], "little")
        if size:  # a grain: lba, compressed size, deflate data, padded to a sector
            if size > g + g // 8 + 4096:
                raise FormatError(f"grain marker claims {size} compressed bytes",
                                  source=name, offset=pos + 8)
            offset = value * SECTOR
            if offset >= capacity or offset % g:
                raise FormatError(f"grain at sector {value} is outside the disk or not "
                                  "grain aligned", source=name, offset=pos)
            body = head[12:]
            total = 12 + size
            padded = -(-total // SECTOR) * SECTOR
            if padded > SECTOR:
                body += _exact(read, padded - SECTOR, "compressed grain", name, pos + SECTOR)
            elif len(head) < total:
                raise TruncatedError("compressed grain cut short", source=name, offset=pos)
            try:
                data = zlib.decompressobj().decompress(body[:size], g)
            except zlib.error as e:
                raise FormatError(f"compressed grain at sector {value} is damaged: {e}",
                                  source=name, offset=pos + 12) from None
            yield offset, data[:capacity - offset]
            pos += padded
            continue
        kind = int.from_bytes(head[12:16], "little")
        if len(head) < SECTOR:
            raise TruncatedError("metadata marker cut short", source=name, offset=pos)
        if kind == MarkerType.EOS:
            return
        if kind not in (MarkerType.GRAIN_TABLE, MarkerType.GRAIN_DIRECTORY,
                        MarkerType.FOOTER) or value > meta_limit:
            raise FormatError(f"metadata marker of type {kind} over {value} sectors",
                              source=name, offset=pos)
        _exact(read, value * SECTOR, "metadata", name, pos + SECTOR)
        pos += SECTOR + value * SECTOR
