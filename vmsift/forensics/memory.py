"""Guest physical memory out of a ``.vmsn`` / ``.vmss`` (and the ``.vmem`` beside it).

`open_guest_memory` pairs a checkpoint file with its memory image (the embedded ``Memory``
block, or the ``.vmem`` VMware writes beside it under the same stem) and lays it out as guest
physical memory (`vmsift.formats.memory.physical_view`). `extract_memory` writes that as a
sparse raw image (regions at their guest-physical addresses; gaps and zero pages are left as
holes, never written), plus the embedded config (``OUT.vmx``), NVRAM (``OUT.nvram``) and
screenshot (``OUT.png`` ...) beside it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any

from ..datastore.export import export_raw
from ..errors import FormatError, LimitError, Problem, UnsupportedError, VmsiftError
from ..formats import vmsn
from ..formats.memory import physical_view
from ..publish import write_file
from ..source import ByteSource, FileSource

#: Largest guest-physical image written unless the caller allows more (VMware's largest VM
#: has 24 TiB of RAM; a region table claiming more than this is damage or hostile).
MAX_GUEST_BYTES = 32768 << 30
_VMEM_SUFFIXES = (".vmem", ".VMEM")


def find_vmem(checkpoint: str) -> str | None:
    """The ``.vmem`` VMware pairs with ``checkpoint``: same folder, same stem
    (``vm-Snapshot1.vmsn`` -> ``vm-Snapshot1.vmem``, ``vm.vmss`` -> ``vm.vmem``)."""
    stem = os.path.splitext(checkpoint)[0]
    for suffix in _VMEM_SUFFIXES:
        if os.path.isfile(stem + suffix):
            return stem + suffix
    return None


@dataclass
class GuestMemory:
    """A checkpoint's guest RAM as guest physical memory (`physical`), and where it came from."""

    checkpoint: vmsn.Checkpoint
    map: vmsn.MemoryMap
    image: ByteSource          # the .vmem, or the embedded Memory block
    physical: ByteSource
    warnings: list[Problem] = field(default_factory=list)


def open_guest_memory(src: ByteSource, vmem: ByteSource | None = None, *,
                      max_size: int = MAX_GUEST_BYTES) -> GuestMemory:
    """Guest physical memory of the checkpoint ``src``; ``vmem`` is its separate memory image
    (needed when the file holds no ``Memory`` block). Regions past the end of the image read
    as zeros and are warned about, naming the guest range lost."""
    cp = vmsn.read(src, strict=False)
    warnings = [Problem.at(src.name, None, w) for w in cp.warnings]
    mm = vmsn.memory_regions(cp)
    if mm is None:
        raise FormatError("no memory group: this checkpoint holds no guest memory",
                          source=src.name)
    warnings += [Problem.at(src.name, None, f"memory: {w}") for w in mm.warnings]
    if mm.block is not None and vmem is None:
        if mm.block.type is vmsn.TagType.COMPRESSED:
            raise UnsupportedError("the embedded Memory block is compressed (not supported)",
                                   source=src.name, offset=mm.block.offset)
        image = vmsn.open_block(src, mm.block)
    elif vmem is not None:
        image = vmem
    else:
        raise FormatError("guest memory is in a separate .vmem, none given or found beside "
                          "it (--vmem PATH)", source=src.name)
    physical = physical_view(image, mm)
    if physical.size > max_size:
        raise LimitError(f"the memory regions span {physical.size} bytes of guest physical "
                         f"address space, more than the {max_size} allowed (raise the limit "
                         f"if this is real)", source=src.name)
    for region in sorted(mm.regions, key=lambda r: r.file_offset):
        have = image.size - region.file_offset
        if have < region.length:
            lost = region.guest_start + max(have, 0)
            warnings.append(Problem.at(
                image.name, image.size,
                f"memory image ends at {image.size:#x}: guest physical {lost:#x}-"
                f"{region.guest_start + region.length:#x} is missing (written as zeros)"))
    return GuestMemory(cp, mm, image, physical, warnings)


@dataclass
class MemoryExtract:
    """What `extract_memory` wrote."""

    image: str
    size: int
    written: int
    regions: list[dict[str, Any]]
    files: dict[str, str]                    # role (config, nvram, screenshot) -> path
    warnings: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "size": self.size, "written": self.written,
                "regions": self.regions, "files": self.files,
                "warnings": [str(w) for w in self.warnings]}


def _side_files(mem: GuestMemory, src: ByteSource, out: str, overwrite: bool
                ) -> tuple[dict[str, str], list[Problem]]:
    """The embedded config, NVRAM and screenshot written beside ``out``."""
    files: dict[str, str] = {}
    problems: list[Problem] = []
    wanted: list[tuple[str, vmsn.Tag, str]] = []
    embedded = vmsn.embedded_files(mem.checkpoint)
    for role, suffix in (("config", ".vmx"), ("nvram", ".nvram")):
        if role in embedded:
            wanted.append((role, embedded[role], suffix))
    shot = vmsn.screenshot(mem.checkpoint, src)
    if shot is not None:
        tag = next(t for t in mem.checkpoint.tags()
                   if t.data_offset == shot.offset and t.is_block)
        wanted.append(("screenshot", tag, "." + (shot.format if shot.format != "unknown"
                                                  else "bin")))
    for role, tag, suffix in wanted:
        try:
            data = vmsn.read_block(src, tag)
        except VmsiftError as e:
            problems.append(Problem.of(e, f"{role} not written: "))
            continue
        if role == "config":
            data = data.rstrip(b"\0")
        path = out + suffix
        write_file(path, data, overwrite=overwrite)
        files[role] = path
    return files, problems


def extract_memory(checkpoint: str, out: str, *, vmem: str | None = None,
                   overwrite: bool = False, max_size: int = MAX_GUEST_BYTES,
                   progress=None) -> MemoryExtract:
    """Write the guest physical memory of ``checkpoint`` (a .vmsn / .vmss) to ``out`` as a
    sparse raw image, and its embedded files beside it (`_side_files`). ``vmem`` defaults to
    the .vmem VMware pairs with the file (`find_vmem`) when the RAM is not embedded."""
    with contextlib.ExitStack() as stack:
        src = stack.enter_context(FileSource(checkpoint))
        cp_map = vmsn.memory_regions(vmsn.read(src, strict=False))
        if vmem is None and cp_map is not None and cp_map.block is None:
            vmem = find_vmem(checkpoint)
        image = stack.enter_context(FileSource(vmem)) if vmem else None
        mem = open_guest_memory(src, image, max_size=max_size)
        stats = export_raw(mem.physical, out, overwrite=overwrite)
        files, problems = _side_files(mem, src, out, overwrite)
        return MemoryExtract(out, stats.size, stats.written,
                             [r.to_dict() for r in mem.map.regions], files,
                             mem.warnings + problems)
