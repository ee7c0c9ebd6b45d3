"""Raw guest memory (``.vmem``) and VMware swap (``.vswp``): files without any header.

A ``.vmem`` holds guest RAM page after page, in the order the checkpoint's ``memory`` group
lists its regions: guest physical address space has holes (below 4 GiB for PCI devices) that
the file does not store. `physical_view` lays the file back out as guest physical memory from
such a region map (`vmsift.formats.vmsn.memory_regions`). Pairing a ``.vmem`` with its
``.vmss``/``.vmsn`` is done by the datastore layer; on its own a ``.vmem`` is only correct
below the first hole. A ``.vswp`` holds guest pages the host swapped out; its slot layout is
not documented, so only its size and allocation are reported.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import FormatError
from ..report import Report, Table
from ..source import Alloc, ByteSource, Run, clip, merge_runs
from .vmsn import PAGE, MemoryMap, MemoryRegion

KIND = "memory"
EXTENSIONS = (".vmem", ".vswp")
MAX_LISTED_RUNS = 64


def sniff(head: bytes) -> bool:
    """Headerless: never recognised by content, only by extension."""
    return False


class PhysicalMemory(ByteSource):
    """Guest physical address space over a memory image, per a region map.

    Addresses inside a region read from the image at the region's file offset; addresses
    between regions, and region parts past the end of the image, read as zeros and map as
    HOLE. The size runs to the end of the highest region.
    """

    def __init__(self, image: ByteSource, regions: Iterable[MemoryRegion],
                 name: str | None = None):
        self.image = image
        self.regions = sorted(regions, key=lambda r: r.ppn)
        for a, b in zip(self.regions, self.regions[1:]):
            if a.guest_start + a.length > b.guest_start:
                raise FormatError(f"memory regions at guest {a.guest_start:#x} and "
                                  f"{b.guest_start:#x} overlap", source=image.name)
        self._starts = [r.guest_start for r in self.regions]
        self.size = max((r.guest_start + r.length for r in self.regions), default=0)
        self.name = name or f"{image.name} (guest physical)"

    def _pieces(self, start: int, end: int) -> Iterator[tuple[int, int, MemoryRegion | None]]:
        """Yield (address, length, region or None for a hole) covering [start, end)."""
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        pos = start
        while pos < end:
            region = self.regions[i] if i < len(self.regions) else None
            if region is None or pos < region.guest_start:
                stop = end if region is None else min(end, region.guest_start)
                yield pos, stop - pos, None
                pos = stop
                continue
            region_end = region.guest_start + region.length
            if pos >= region_end:
                i += 1
                continue
            stop = min(end, region_end)
            yield pos, stop - pos, region
            pos = stop
            i += 1

    def read(self, offset: int, length: int) -> bytes:
        start, end = clip(self.size, offset, length)
        out = []
        for pos, n, region in self._pieces(start, end):
            if region is None:
                out.append(bytes(n))
                continue
            data = self.image.read(region.file_offset + pos - region.guest_start, n)
            out.append(data + bytes(n - len(data)))
        return b"".join(out)

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Run]:
        start, end = clip(self.size, offset, length)

        def runs() -> Iterator[Run]:
            for pos, n, region in self._pieces(start, end):
                if region is None:
                    yield Run(pos, n, Alloc.HOLE)
                    continue
                inner = region.file_offset + pos - region.guest_start
                shift = pos - inner
                covered = inner
                for run in self.image.extents(inner, n):
                    yield Run(run.offset + shift, run.length, run.kind)
                    covered = run.end
                if covered < inner + n:  # the image ends inside this region
                    yield Run(covered + shift, inner + n - covered, Alloc.HOLE)

        return merge_runs(runs())

    def close(self) -> None:
        self.image.close()


def physical_view(vmem: ByteSource, regions: MemoryMap | Iterable[MemoryRegion] | None
                  ) -> ByteSource:
    """``vmem`` (or an embedded Memory block) seen as guest physical memory.

    ``regions`` is a `MemoryMap` from `vmsn.memory_regions` or a list of `MemoryRegion`; an
    empty map (or a linear one) maps the whole image at guest address 0.
    """
    if isinstance(regions, MemoryMap):
        regions = regions.regions
    regions = list(regions or ())
    if not regions:
        pages = -(-vmem.size // PAGE)
        regions = [MemoryRegion(0, 0, pages)] if pages else []
    return PhysicalMemory(vmem, regions)


def run_summary(src: ByteSource) -> dict[str, Any]:
    """Bytes per allocation kind, the run count and the first runs of ``src``."""
    totals = {kind.value: 0 for kind in Alloc}
    count = 0
    first: list[dict[str, Any]] = []
    for run in src.extents():
        totals[run.kind.value] += run.length
        if count < MAX_LISTED_RUNS:
            first.append({"offset": run.offset, "length": run.length, "kind": run.kind.value})
        count += 1
    return {"bytes": totals, "count": count, "first": first}


def role(name: str) -> str:
    ext = os.path.splitext(name)[1].lower()
    return {".vmem": "guest RAM", ".vswp": "swap"}.get(ext, "unknown")


def inspect(src: ByteSource) -> Report:
    runs = run_summary(src)
    what = role(src.name)
    pages, rest = divmod(src.size, PAGE)
    warnings = []
    if rest:
        warnings.append(f"size {src.size} is not a whole number of {PAGE}-byte pages")
    fields: dict[str, Any] = {
        "role": what, "size": src.size, "pages (4 KiB)": pages,
        "allocated": f"{runs['bytes']['data']} bytes data, {runs['bytes']['zero']} zero, "
                     f"{runs['bytes']['hole']} hole in {runs['count']} runs"}
    if what == "guest RAM":
        fields["physical map"] = ("needs the region map of the .vmss/.vmsn of the same name "
                                  "(paired by the datastore layer)")
    data = {"role": what, "size": src.size, "page_size": PAGE, "pages": pages, "runs": runs}
    table = Table("allocation runs" + (f" (first {MAX_LISTED_RUNS})"
                                       if runs["count"] > MAX_LISTED_RUNS else ""),
                  ["offset", "length", "kind"],
                  [[r["offset"], r["length"], r["kind"]] for r in runs["first"]])
    title = {"guest RAM": "VMware guest memory (.vmem)",
             "swap": "VMware swap file (.vswp)"}.get(what, "raw memory image")
    return Report(KIND, title, data, fields, [table], warnings)
