"""Raw guest memory (.vmem) and swap (.vswp): report, and the guest-physical view."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures import vmsn_writer as w
from vmsift.errors import FormatError
from vmsift.formats import memory
from vmsift.formats.memory import PhysicalMemory, physical_view
from vmsift.formats.vmsn import MemoryRegion
from vmsift.source import Alloc, BytesSource, ConcatSource, FileSource, Run, ZeroSource

PAGE = 4096


def test_protocol():
    assert memory.KIND == "memory" and memory.EXTENSIONS == (".vmem", ".vswp")
    for head in (b"", b"\xd2\xbe\xd2\xbe" + bytes(60), bytes(65536), b"KDMV" * 100):
        assert memory.sniff(head) is False


def test_inspect_runs_from_allocation_map():
    src = ConcatSource([BytesSource(b"\x01" * 3 * PAGE, "a"), ZeroSource(5 * PAGE),
                        BytesSource(b"\x02" * PAGE, "b")], name="guest.vmem")
    r = memory.inspect(src)
    assert r.kind == "memory" and r.title == "VMware guest memory (.vmem)"
    d = json.loads(json.dumps(r.data))
    assert (d["role"], d["size"], d["pages"], d["page_size"]) == ("guest RAM", 9 * PAGE, 9, PAGE)
    assert d["runs"]["bytes"] == {"data": 4 * PAGE, "zero": 5 * PAGE, "hole": 0}
    assert d["runs"]["count"] == 3
    assert d["runs"]["first"][1] == {"offset": 3 * PAGE, "length": 5 * PAGE, "kind": "zero"}
    assert "datastore layer" in r.fields["physical map"] and r.warnings == []


def test_inspect_swap_and_odd_size():
    r = memory.inspect(BytesSource(b"x" * 5000, "vm-1a2b.vswp"))
    assert r.title == "VMware swap file (.vswp)" and r.data["role"] == "swap"
    assert r.data["pages"] == 1 and "physical map" not in r.fields
    assert r.warnings == ["size 5000 is not a whole number of 4096-byte pages"]


def test_inspect_sparse_vmem_file(cache_dir):
    path = w.write_vmem(cache_dir / "vmem-test.vmem")
    with FileSource(path) as src:
        d = memory.inspect(src).data
    runs = d["runs"]
    assert d["size"] == 1152 << 20 and d["pages"] == 0x48000
    assert sum(runs["bytes"].values()) == d["size"]
    if runs["bytes"]["hole"]:  # the host file system reports holes: only marked pages hold data
        assert runs["bytes"]["data"] < 64 * PAGE


def small_regions() -> list[MemoryRegion]:
    # guest: pages 0-1 from file pages 0-1, hole pages 2-4, page 5 from file page 2
    return [MemoryRegion(5, 2, 1), MemoryRegion(0, 0, 2)]


def test_physical_view_reads_and_holes():
    image = BytesSource(b"A" * PAGE + b"B" * PAGE + b"C" * PAGE, "img")
    phys = physical_view(image, small_regions())
    assert phys.size == 6 * PAGE
    assert phys.read(0, PAGE) == b"A" * PAGE
    assert phys.read(PAGE - 2, 4) == b"AABB"
    assert phys.read(2 * PAGE - 1, 2) == b"B\0"
    assert phys.read(5 * PAGE, 10) == b"C" * 10
    assert phys.read(4 * PAGE + PAGE - 3, 100) == b"\0\0\0" + b"C" * 97
    assert phys.read(6 * PAGE, 10) == b""
    assert list(phys.extents()) == [Run(0, 2 * PAGE, Alloc.DATA),
                                    Run(2 * PAGE, 3 * PAGE, Alloc.HOLE),
                                    Run(5 * PAGE, PAGE, Alloc.DATA)]
    assert list(phys.extents(PAGE, 2 * PAGE)) == [Run(PAGE, PAGE, Alloc.DATA),
                                                 Run(2 * PAGE, PAGE, Alloc.HOLE)]


def test_physical_view_short_image_reads_zeros_maps_hole():
    phys = physical_view(BytesSource(b"A" * 100, "short"), [MemoryRegion(1, 0, 2)])
    assert phys.read(PAGE, 200) == b"A" * 100 + bytes(100)
    assert list(phys.extents()) == [Run(0, PAGE, Alloc.HOLE), Run(PAGE, 100, Alloc.DATA),
                                    Run(PAGE + 100, 2 * PAGE - 100, Alloc.HOLE)]


def test_physical_view_passes_zero_runs_through():
    image = ConcatSource([BytesSource(b"A" * PAGE), ZeroSource(PAGE)])
    phys = physical_view(image, [MemoryRegion(4, 0, 2)])
    assert list(phys.extents()) == [Run(0, 4 * PAGE, Alloc.HOLE), Run(4 * PAGE, PAGE, Alloc.DATA),
                                    Run(5 * PAGE, PAGE, Alloc.ZERO)]


def test_physical_view_linear_and_overlap():
    image = BytesSource(b"0123456789" * 1000)
    phys = physical_view(image, None)
    assert phys.size == 3 * PAGE and phys.read(5, 5) == b"56789"
    assert phys.read(10000 - 2, 10) == b"89" + bytes(8)
    with pytest.raises(FormatError, match="overlap"):
        PhysicalMemory(image, [MemoryRegion(0, 0, 4), MemoryRegion(3, 10, 1)])
    assert physical_view(BytesSource(b""), []).size == 0


@st.composite
def layouts(draw):
    """Non-overlapping regions (in guest pages), file pages assigned in some order."""
    count = draw(st.integers(0, 5))
    ppn, regions, file_page = 0, [], 0
    order = draw(st.permutations(range(count)))
    sizes = [draw(st.integers(1, 3)) for _ in range(count)]
    starts = {}
    for i in order:
        starts[i] = file_page
        file_page += sizes[i]
    for i in range(count):
        ppn += draw(st.integers(0, 3))
        regions.append(MemoryRegion(ppn, starts[i], sizes[i]))
        ppn += sizes[i]
    image_pages = draw(st.integers(0, file_page + 1))
    return regions, image_pages


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layouts(), st.integers(0, 40 * PAGE), st.integers(0, 12 * PAGE))
def test_physical_view_matches_model(layout, offset, length):
    """Reads and extents agree with a page-by-page model of the address space."""
    regions, image_pages = layout
    image = bytes((i * 7 + 3) & 0xFF for i in range(image_pages * PAGE))
    phys = physical_view(BytesSource(image, "img"), regions) if regions else \
        PhysicalMemory(BytesSource(image, "img"), [])
    model = bytearray(phys.size)
    allocated = bytearray(phys.size)
    for r in regions:
        part = image[r.file_offset:r.file_offset + r.length]
        model[r.guest_start:r.guest_start + len(part)] = part
        allocated[r.guest_start:r.guest_start + len(part)] = b"\1" * len(part)
    assert phys.read(offset, length) == bytes(model[offset:offset + length])
    runs = list(phys.extents(offset, length))
    end = min(phys.size, offset + length)
    pos = min(offset, phys.size)
    for run in runs:
        assert run.offset == pos and run.length > 0
        want = Alloc.DATA if allocated[run.offset] else Alloc.HOLE
        assert run.kind is want
        assert set(allocated[run.offset:run.end]) == {1 if want is Alloc.DATA else 0}
        pos = run.end
    assert pos == end
    for a, b in zip(runs, runs[1:]):
        assert a.kind is not b.kind  # merged


def test_vmem_file_holes_pass_through(cache_dir):
    path = w.write_vmem(cache_dir / "vmem-test2.vmem")
    with FileSource(path) as src:
        sparse = any(r.kind is Alloc.HOLE for r in src.extents())  # host fs reports holes
        regions = [MemoryRegion(*r) for r in w.REGIONS]
        phys = physical_view(src, regions)
        for ppn in w.marked_pages():
            run = next(phys.extents(ppn * PAGE, 1))
            assert run.kind is Alloc.DATA
            assert phys.read(ppn * PAGE, 32) == w.page_marker(ppn)
        middle = next(phys.extents(0x20000 * PAGE + 5 * PAGE, 1))
        assert middle.kind is (Alloc.HOLE if sparse else Alloc.DATA)
        assert phys.read(0x20005 * PAGE, PAGE) == bytes(PAGE)
    assert os.path.getsize(path) == 1152 << 20
