"""VMFS 3/5/6 and VMFS-L datastores as read-only volumes.

`open_volume` takes the devices of a datastore (partitions carrying an LVM header, in any
order, one or several for a spanned datastore) or one logical-volume image without LVM, and
returns a `VmfsVolume`. File contents are `VmfsFile` sources whose allocation map comes from
the file descriptors and pointer blocks alone: unallocated blocks of thin files are HOLE runs,
to-be-zeroed blocks of lazily zeroed files are ZERO runs.

Layouts are in `vmsift.formats.vmfs`; the format is described in docs/formats/vmfs.md.
"""

from __future__ import annotations

import array
import functools
import posixpath
import stat as stat_mod
import struct
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..cache import LruCache
from ..errors import (ErrorKind, FormatError, LimitError, Problem, SourceError,
                      UnsupportedError, VmsiftError, check_limit)
from ..formats.vmfs import fs as F
from ..formats.vmfs import lvm as L
from ..formats.vmfs.resource import HEADER_SIZE, ResourceGeometry
from ..report import Report, Table, size_field
from ..source import Alloc, ByteSource, Run, clip, merge_runs
from .vmfs_lvm import assemble
from .volume import DirEntry, FileStat, FileType, Volume, normalize, not_a_file

KIND = "vmfs"
MAX_DIR_BYTES = 64 << 20  # a directory file larger than this is damage (VMFS5: ~480k names)
MAX_PATH_DEPTH = 256
CACHE_FDS = 2048
CACHE_PBS = 256
CACHE_RESOURCE_BLOCKS = 4096
MAX_RESOURCE_DEPTH = 4
_DIRENT5 = struct.Struct("<III128s")
_U32 = struct.Struct("<I")
assert _DIRENT5.size == F.DIRENT5_SIZE  # resource file -> its pointer blocks in another resource file -> ...


def _words(raw: bytes, width: int) -> tuple[int, ...]:
    """Little-endian u32 (width 4) or u64 (width 8) words."""
    words = array.array("Q" if width == 8 else "I", raw)
    if sys.byteorder != "little":
        words.byteswap()
    return tuple(words)


# --- file descriptors -----------------------------------------------------------------------

@dataclass
class Fd:
    """One decoded file descriptor (its lock and pointers are decoded when first used)."""

    addr: int
    lv_offset: int
    raw: bytes
    meta: F.Meta
    shift: int  # log2 of the file's block size
    layout: F.FdLayout

    @functools.cached_property
    def lock(self) -> F.Lock:
        return F.parse_lock(self.raw)

    @functools.cached_property
    def ptrs(self) -> tuple[int, ...]:
        lay = self.layout
        return _words(self.raw[lay.ptr_offset:lay.ptr_offset + lay.ptr_count * lay.ptr_width],
                      lay.ptr_width)

    @property
    def type(self) -> int:
        return self.meta.type

    @property
    def is_dir(self) -> bool:
        return self.meta.type == F.DescType.DIRECTORY or (
            self.meta.type == F.DescType.SYSFILE and stat_mod.S_ISDIR(self.meta.mode))

    @property
    def file_type(self) -> FileType:
        t = self.meta.type
        if self.is_dir:
            return FileType.DIR
        if t in (F.DescType.REGFILE, F.DescType.SYSFILE):
            return FileType.FILE
        if t == F.DescType.SYMLINK:
            return FileType.SYMLINK
        if t == F.DescType.RDM:
            return FileType.RDM
        return FileType.OTHER


def _type_name(enum_cls, value: int) -> str:
    try:
        return enum_cls(value).name.lower()
    except ValueError:
        return f"unknown ({value:#x})"


class Vmfs:
    """The file system on a logical volume: descriptors, block maps, directories."""

    def __init__(self, lv: ByteSource):
        self.lv = lv
        self.name = lv.name
        self.warnings: list[Problem] = []
        raw = lv.read_exact(F.FS_DESCRIPTOR_OFFSET, F.FsDescriptor.sizeof(), "VMFS descriptor")
        d = self.desc = F.FsDescriptor.parse(raw)
        if d.magic not in F.MAGICS:
            raise FormatError(f"no VMFS file-system descriptor (magic {d.magic:#010x})",
                              source=self.name, offset=F.FS_DESCRIPTOR_OFFSET)
        self.vmfs6 = d.major >= F.VMFS6_MAJOR
        self.dense = bool(d.config & F.Config.DENSE_SBPC)
        fbs = d.file_block_size
        if fbs < 0x10000 or fbs > 1 << 30 or fbs & (fbs - 1):
            raise FormatError(f"file block size {fbs} is not a power of two in 64 KiB..1 GiB",
                              source=self.name, offset=F.FS_DESCRIPTOR_OFFSET + 0xA1)
        sbs = d.sub_block_size
        if sbs < 512 or sbs > fbs or sbs & (sbs - 1):
            raise FormatError(f"sub-block size {sbs} is not a power of two in 512..{fbs}",
                              source=self.name, offset=F.FS_DESCRIPTOR_OFFSET + 0xD9)
        md = d.md_alignment if self.vmfs6 else 512
        if self.vmfs6 and (md < 4096 or md > 1 << 20 or md & (md - 1)):
            raise FormatError(f"metadata alignment {md} is not a power of two in 4 KiB..1 MiB",
                              source=self.name, offset=F.FS_DESCRIPTOR_OFFSET + 0x134)
        if self.vmfs6 and not 0 <= d.sfb_to_lfb_shift <= 12:
            raise FormatError(f"small-to-large block shift {d.sfb_to_lfb_shift} is absurd",
                              source=self.name, offset=F.FS_DESCRIPTOR_OFFSET + 0x138)
        self.md = md
        self.fbs = fbs
        self.fb_shift = fbs.bit_length() - 1
        self.sbs = sbs
        self.lfb_size = fbs << d.sfb_to_lfb_shift if self.vmfs6 else 0
        self.layout = F.FdLayout.for_fs(self.vmfs6, md)
        self.label = F.name_str(d.label)
        self.uuid = F.uuid_str(d.uuid)
        self._fds: LruCache = LruCache(CACHE_FDS)
        self._pbs: LruCache = LruCache(CACHE_PBS)
        self._dirs: LruCache = LruCache.for_folders()
        self._names: LruCache = LruCache.for_folders()
        self._resource_blocks: LruCache = LruCache(CACHE_RESOURCE_BLOCKS)
        self._local = threading.local()  # per reading thread: the resource-file depth
        self.resources: dict[str, tuple[Fd, ResourceGeometry]] = {}
        # Small file blocks per cluster: needed to read the system files before the SFB
        # resource header (inside .fbb.sf) can be read; that header then confirms it.
        self.sfb_rpc = min(0x2000, 0x20000000 // fbs)
        self._open_resources()
        if self.vmfs6:
            fbb_fd, lfb = self.resources["fbb"]
            child = self._read_file(fbb_fd, lfb.child_meta_offset, HEADER_SIZE)
            sfb = ResourceGeometry.parse("sfb", child, self.layout.cluster_header,
                                         source=self.name, offset=fbb_fd.lv_offset)
            self.resources["sfb"] = (fbb_fd, sfb)
            if sfb.resources_per_cluster != self.sfb_rpc:
                self.warnings.append(Problem(
                    f"small file blocks per cluster: {sfb.resources_per_cluster} in .fbb.sf, "
                    f"{self.sfb_rpc} assumed to read it", source=self.name,
                    offset=fbb_fd.lv_offset))
                self.sfb_rpc = sfb.resources_per_cluster
                self._fds.clear()
                self._pbs.clear()
                self._resource_blocks.clear()
        self.root = self.fd(F.ROOT_DIR)
        if not self.root.is_dir:
            raise FormatError("the root file descriptor is not a directory", source=self.name,
                              offset=self.root.lv_offset)

    @property
    def _depth(self) -> int:
        """How deep this thread is in resource files mapped through each other."""
        return getattr(self._local, "depth", 0)

    @_depth.setter
    def _depth(self, value: int) -> None:
        self._local.depth = value

    # -- descriptors ----------------------------------------------------------------------

    def _system_fd_offset(self, addr: int) -> int:
        """LV offset of a system file's FD, found by computation (bootstrap)."""
        d = self.desc
        _, resource = F.fd_addr_parts(addr)
        if self.vmfs6:
            base = ((d.md_alignment << 10) + 0x3FFFFF) & ~0xFFFFF
            size = 2 * d.md_alignment
            return base + d.fdc_cluster_group_offset + d.fdc_clusters_per_group * size + resource * size
        if not self.dense:
            if addr == d.pb2_fd_addr and d.pb2_vol_addr:
                return d.pb2_vol_addr
            if addr == d.sdd_fd_addr and d.sdd_vol_addr:
                return d.sdd_vol_addr
        base = self.fbs * ((self.fbs + 0x3FFFFF) // self.fbs)
        return base + d.fdc_cluster_group_offset + d.fdc_clusters_per_group * 1024 + resource * 2048

    def fd(self, addr: int) -> Fd:
        """The file descriptor at FD address ``addr``."""
        if (cached := self._fds.get(addr)) is not None:
            return cached
        if F.addr_type(addr) != F.AddrType.FD:
            raise FormatError(f"{addr:#010x} is not a file-descriptor address", source=self.name)
        cluster, resource = F.fd_addr_parts(addr)
        special = not self.vmfs6 and not self.dense and addr in (self.desc.pb2_fd_addr,
                                                                  self.desc.sdd_fd_addr)
        if "fdc" not in self.resources or special:
            offset = self._system_fd_offset(addr)
        else:
            offset = self._resource_lv("fdc", cluster, resource)
        return self._fds.put(addr, self._decode_fd(addr, offset))

    def _decode_fd(self, addr: int, offset: int) -> Fd:
        lay = self.layout
        raw = self.lv.read_exact(offset, lay.fd_size, f"file descriptor {addr:#010x}")
        meta = F.parse_meta(raw, lay.meta_offset)
        if meta.desc_addr != addr:
            raise FormatError(f"file descriptor {addr:#010x} expected here, found "
                              f"{meta.desc_addr:#010x}", source=self.name, offset=offset)
        shift = 0
        if meta.type not in (F.DescType.RDM,) and meta.zla != F.Zla.RESIDENT:
            bs = meta.block_size
            if self.vmfs6 and self.desc.major > 19 and 9 <= meta.block_offset_shift <= 40:
                shift = meta.block_offset_shift
            elif bs and not bs & (bs - 1) and 512 <= bs <= 1 << 40:
                shift = bs.bit_length() - 1
            else:
                raise FormatError(f"file descriptor {addr:#010x}: block size {bs} is not a "
                                  f"power of two", source=self.name, offset=offset + lay.meta_offset + 0x1C)
        return Fd(addr, offset, raw, meta, shift, lay)

    # -- resource files -------------------------------------------------------------------

    def _open_resources(self) -> None:
        """Find the resource files' descriptors; their headers are read when first needed
        (a resource file may be mapped through pointer blocks of another one)."""
        names = [("fdc", ".fdc.sf"), ("sbc", ".sbc.sf"), ("pbc", ".pbc.sf"), ("fbb", ".fbb.sf")]
        if self.desc.pb2_vol_addr or self.vmfs6:
            names.append(("pb2", ".pb2.sf"))
        if self.vmfs6:
            names.append(("jbc", ".jbc.sf"))
        self._resource_fds: dict[str, Fd] = {}
        for key, name in names:
            addr = F.SYSTEM_FILES[name]
            fd = self._decode_fd(addr, self._system_fd_offset(addr))
            if fd.type != F.DescType.SYSFILE:
                raise FormatError(f"{name} descriptor has type {fd.type}, not a system file",
                                  source=self.name, offset=fd.lv_offset)
            self._resource_fds[key] = fd
            self._fds.put(addr, fd)
        for key in self._resource_fds:
            self._geometry(key)

    def _geometry(self, key: str) -> tuple[Fd, ResourceGeometry]:
        if key in self.resources:
            return self.resources[key]
        if key not in self._resource_fds:
            raise FormatError(f"no {key} resource file on this volume", source=self.name)
        fd = self._resource_fds[key]
        if self._depth >= MAX_RESOURCE_DEPTH:
            raise FormatError("resource files are mapped through each other in a loop",
                              source=self.name, offset=fd.lv_offset)
        self._depth += 1
        try:
            raw = self._read_file(fd, 0, HEADER_SIZE)
        finally:
            self._depth -= 1
        if len(raw) < HEADER_SIZE:
            raise FormatError(f"{key} resource file is too short for its header",
                              source=self.name, offset=fd.lv_offset)
        geo = ResourceGeometry.parse(key, raw, self.layout.cluster_header, source=self.name,
                                     offset=fd.lv_offset)
        if self.vmfs6 and int.from_bytes(raw[0x20:0x24], "little") != F.RFMD_SIGNATURE:
            raise FormatError(f"{key} resource header lacks its 'rfmd' signature",
                              source=self.name, offset=fd.lv_offset)
        self.resources[key] = (fd, geo)
        return fd, geo

    _KIND_OF_TYPE = {F.AddrType.SB: "sbc", F.AddrType.PB: "pbc", F.AddrType.PB2: "pb2"}

    def _resource_lv(self, key: str, cluster: int, resource: int) -> int:
        """LV offset of resource (cluster, resource) of resource file ``key``."""
        fd, geo = self._geometry(key)
        if resource >= geo.resources_per_cluster or (
                geo.num_cluster_groups and cluster >= geo.num_cluster_groups * geo.clusters_per_group):
            raise FormatError(f"{key} resource c{cluster} r{resource} is outside the resource "
                              f"file ({geo.num_cluster_groups} groups of {geo.clusters_per_group} "
                              f"clusters of {geo.resources_per_cluster})", source=self.name)
        offset = geo.resource_offset(cluster, resource)
        if offset + max(geo.resource_size, 1) > fd.meta.length:
            raise FormatError(f"{key} resource c{cluster} r{resource} lies past the end of its "
                              f"resource file", source=self.name, offset=fd.lv_offset)
        if self._depth >= MAX_RESOURCE_DEPTH:
            raise FormatError("resource files are mapped through each other in a loop",
                              source=self.name, offset=fd.lv_offset)
        # a file block lies contiguous on the LV: map each block of a resource file once
        block, within = offset >> fd.shift, offset & ((1 << fd.shift) - 1)
        if (start := self._resource_blocks.get((key, block))) is not None:
            return start + within
        self._depth += 1
        try:
            for _, _, kind, lv in self._runs(fd, offset, offset + 1):
                if kind is not Alloc.DATA or lv is None:
                    raise FormatError(f"{key} resource c{cluster} r{resource} is not allocated in "
                                      f"its resource file", source=self.name, offset=fd.lv_offset)
                self._resource_blocks.put((key, block), lv - within)
                return lv
        finally:
            self._depth -= 1
        raise FormatError(f"{key} resource c{cluster} r{resource} not mapped", source=self.name)

    def _pointer_block(self, addr: int) -> tuple[int, ...]:
        if (cached := self._pbs.get(addr)) is not None:
            return cached
        t = F.addr_type(addr)
        key = self._KIND_OF_TYPE.get(t)
        if key is None:
            raise FormatError(f"pointer {addr:#x} of type {t} cannot hold a pointer block",
                              source=self.name)
        cluster, resource = F.cluster_resource(addr, self.vmfs6, self.dense)
        lv = self._resource_lv(key, cluster, resource)
        raw = self.lv.read_exact(lv, self.layout.pb_size, "pointer block")
        pb = _words(raw, self.layout.ptr_width)
        return self._pbs.put(addr, pb)

    # -- block maps -----------------------------------------------------------------------

    def _data(self, fd: Fd, addr: int, file_off: int) -> tuple[Alloc, int | None, int]:
        """(kind, LV offset at ``file_off``, bytes that block covers from there)."""
        t = F.addr_type(addr)
        if t == F.AddrType.FB:
            if self.vmfs6:
                cluster, resource, tbz = F.sfb_parts(addr)
                base = (cluster * self.sfb_rpc + resource) * self.fbs
            else:
                block, zero = F.fb_parts(addr)
                tbz, base = zero, block * self.fbs
            size = self.fbs
        elif t == F.AddrType.LFB and self.vmfs6:
            block, tbz = F.lfb_parts(addr)
            base, size = block * self.lfb_size, self.lfb_size
        elif t == F.AddrType.SB:
            cluster, resource = F.cluster_resource(addr, self.vmfs6, self.dense)
            base, size, tbz = self._resource_lv("sbc", cluster, resource), self.sbs, 0
        else:
            raise FormatError(f"file descriptor {fd.addr:#010x}: data pointer {addr:#x} has "
                              f"type {t}", source=self.name, offset=fd.lv_offset)
        within = file_off & (size - 1)
        if base + size > self.lv.size:
            raise FormatError(f"file descriptor {fd.addr:#010x}: block {addr:#x} points past "
                              f"the end of the volume ({base:#x} > {self.lv.size:#x})",
                              source=self.name, offset=fd.lv_offset)
        if tbz:
            return Alloc.ZERO, None, size - within
        return Alloc.DATA, base + within, size - within

    def capacity(self, fd: Fd) -> int:
        """Bytes the pointer tree of ``fd`` can address."""
        zla = fd.meta.zla
        per_entry = 1 << fd.shift
        n = self.layout.ptrs_per_pb
        if zla in (F.Zla.POINTER_BLOCK, F.Zla.POINTER2_BLOCK):
            per_entry *= n
        elif zla == F.Zla.DOUBLE_INDIRECT:
            per_entry *= n * n
        return per_entry * len(fd.ptrs)

    def _runs(self, fd: Fd, start: int, end: int) -> Iterator[tuple[int, int, Alloc, int | None]]:
        """(file offset, length, kind, LV offset or None) covering [start, end), merged."""
        pending: list | None = None
        for off, n, kind, lv in self._raw_runs(fd, start, end):
            if pending and pending[2] is kind and pending[0] + pending[1] == off and (
                    kind is not Alloc.DATA or (lv is not None and pending[3] is not None
                                               and pending[3] + pending[1] == lv)):
                pending[1] += n
                continue
            if pending:
                yield tuple(pending)
            pending = [off, n, kind, lv]
        if pending:
            yield tuple(pending)

    def _raw_runs(self, fd: Fd, start: int, end: int) -> Iterator[tuple[int, int, Alloc, int | None]]:
        if start >= end:
            return
        zla = fd.meta.zla
        if fd.type == F.DescType.RDM:
            raise UnsupportedError("a raw device mapping has no data on the datastore",
                                   source=self.name, offset=fd.lv_offset)
        if zla == F.Zla.RESIDENT:
            yield start, end - start, Alloc.DATA, None
            return
        levels = {F.Zla.FILE_BLOCK: 0, F.Zla.SUB_BLOCK: 0, F.Zla.POINTER_BLOCK: 1,
                  F.Zla.POINTER2_BLOCK: 1, F.Zla.DOUBLE_INDIRECT: 2}.get(zla)
        if levels is None:
            raise FormatError(f"file descriptor {fd.addr:#010x}: unknown address layout "
                              f"(ZLA {zla:#x})", source=self.name, offset=fd.lv_offset)
        if end > self.capacity(fd):
            raise FormatError(f"file descriptor {fd.addr:#010x}: length {fd.meta.length} is "
                              f"more than its pointers can address", source=self.name,
                              offset=fd.lv_offset)
        yield from self._walk(fd, fd.ptrs, levels, 0, start, end)

    def _walk(self, fd: Fd, ptrs, level: int, base: int, start: int, end: int):
        bshift = fd.shift
        span = (1 << bshift) * self.layout.ptrs_per_pb ** level
        first = (start - base) // span
        last = (end - base - 1) // span
        for i in range(first, min(last, len(ptrs) - 1) + 1):
            lo = base + i * span
            a, b = max(lo, start), min(lo + span, end)
            addr = ptrs[i]
            if addr == 0:
                yield a, b - a, Alloc.HOLE, None
            elif level:
                yield from self._walk(fd, self._pointer_block(addr), level - 1, lo, a, b)
            else:
                pos = a
                while pos < b:
                    kind, lv, n = self._data(fd, addr, pos)
                    n = min(n, b - pos)
                    yield pos, n, kind, lv
                    pos += n

    def _read_file(self, fd: Fd, offset: int, length: int) -> bytes:
        start, end = clip(fd.meta.length, offset, length)
        if fd.meta.zla == F.Zla.RESIDENT and fd.type != F.DescType.RDM:
            lay = self.layout
            if fd.meta.length > lay.data_size:
                raise FormatError(f"resident file {fd.addr:#010x} claims {fd.meta.length} bytes, "
                                  f"the descriptor holds {lay.data_size}", source=self.name,
                                  offset=fd.lv_offset)
            return fd.raw[lay.data_offset + start:lay.data_offset + end]
        out = []
        for _, n, kind, lv in self._runs(fd, start, end):
            out.append(self.lv.read_exact(lv, n, "file data") if kind is Alloc.DATA else bytes(n))
        return b"".join(out)

    # -- directories ----------------------------------------------------------------------

    def entries(self, dfd: Fd) -> list[tuple[str, int, int, bool]]:
        """(name, type, FD address, deleted) of every slot of directory ``dfd``."""
        if (cached := self._dirs.get(dfd.addr)) is not None:
            return cached
        if not dfd.is_dir:
            raise FormatError(f"file descriptor {dfd.addr:#010x} is not a directory",
                              source=self.name, offset=dfd.lv_offset)
        size = dfd.meta.length
        if size > MAX_DIR_BYTES:
            raise LimitError(f"directory {dfd.addr:#010x} is {size} bytes, more than "
                             f"{MAX_DIR_BYTES}", source=self.name, offset=dfd.lv_offset)
        result = self._entries6(dfd) if self.vmfs6 else self._entries5(dfd)
        return self._dirs.put(dfd.addr, result)

    def child(self, dfd: Fd, name: str) -> int | None:
        """The FD address of the live entry ``name`` of directory ``dfd`` (the first, should
        a damaged directory hold it twice)."""
        if (index := self._names.get(dfd.addr)) is None:
            index = {}
            for entry_name, _, addr, deleted in self.entries(dfd):
                if not deleted:
                    index.setdefault(entry_name, addr)
            self._names.put(dfd.addr, index)
        return index.get(name)

    def _entries5(self, dfd: Fd) -> list:
        data = self._read_file(dfd, 0, dfd.meta.length)
        out = []
        # the DirEntry5 layout, unpacked with struct: this loop runs once per name
        usable = len(data) - len(data) % F.DIRENT5_SIZE
        for etype, addr, _, raw in _DIRENT5.iter_unpack(data[:usable]):
            name = F.name_str(raw)
            if addr:
                out.append((name, etype, addr, False))
            elif name and etype:
                out.append((name, etype, 0, True))
        return out

    def _entries6(self, dfd: Fd) -> list:
        bs = self.md
        head = self._read_file(dfd, 0, F.DirHeader6.sizeof())
        if len(head) < F.DirHeader6.sizeof():
            raise FormatError(f"directory {dfd.addr:#010x} is shorter than its header",
                              source=self.name, offset=dfd.lv_offset)
        h = F.DirHeader6.parse(head)
        if h.version not in F.DIR6_VERSIONS:
            raise FormatError(f"directory {dfd.addr:#010x}: header version {h.version:#x} "
                              f"unknown", source=self.name, offset=dfd.lv_offset)
        check_limit(h.num_alloc_map_blocks, 128, "directory allocation map blocks",
                    source=self.name, offset=dfd.lv_offset)
        nblocks = max(0, (dfd.meta.length - F.DIR6_HEADER_BLOCK) // bs)
        per_map = 2 * (bs - F.DIR6_BLOCK_HEADER)
        slots = (bs - F.DIR6_BLOCK_HEADER) // F.DIRENT6_SIZE
        out = []
        seen: set[int] = set()
        for i, mblock in enumerate(h.alloc_map_blocks[:h.num_alloc_map_blocks]):
            if mblock >= nblocks:
                raise FormatError(f"directory {dfd.addr:#010x}: allocation map block {mblock} "
                                  f"is past its end", source=self.name, offset=dfd.lv_offset)
            amap = self._read_file(dfd, F.DIR6_HEADER_BLOCK + mblock * bs, bs)[F.DIR6_BLOCK_HEADER:]
            for j, byte in enumerate(amap):
                for k, nibble in enumerate((byte >> 4, byte & 0xF)):
                    if nibble & 3 != F.DIR6_BLOCK_DIRENT:
                        continue
                    block = i * per_map + 2 * j + k
                    if block >= nblocks or block in seen:
                        continue
                    seen.add(block)
                    raw = self._read_file(dfd, F.DIR6_HEADER_BLOCK + block * bs, bs)
                    bh = F.DirBlockHeader6.parse(raw)
                    for s in range(min(bh.total_slots, slots)):
                        if (bh.bitmap[s >> 3] >> (s & 7)) & 1:
                            continue  # set bit: free slot
                        pos = F.DIR6_BLOCK_HEADER + s * F.DIRENT6_SIZE
                        e = F.DirEntry6.parse(raw[pos:pos + F.DIRENT6_SIZE])
                        if e.addr:
                            out.append((F.name_str(e.name), e.type, e.addr, False))
        return out

    # -- free space -----------------------------------------------------------------------

    def _free_resources(self, key: str) -> Iterator[tuple[int, int]]:
        """(cluster, resource) of every free resource of resource file ``key`` (VMFS3/5):
        each cluster header holds, 512 bytes in, its cluster number, resource count, free
        count, next free resource and a 64-byte bitmap where a set bit is a free resource
        (the layout our writer keeps; docs/formats/vmfs.md)."""
        fd, geo = self._geometry(key)
        clusters = -(-geo.num_resources // max(geo.resources_per_cluster, 1))
        check_limit(clusters, 1 << 24, f"{key} clusters", source=self.name, offset=fd.lv_offset)
        for c in range(clusters):
            group, in_group = divmod(c, geo.clusters_per_group)
            at = geo.cluster_group_offset + group * geo.cluster_group_size + \
                in_group * geo.cluster_header
            md = self._read_file(fd, at + F.CLUSTER_META, F.CLUSTER_META_SIZE)
            if len(md) < F.CLUSTER_META_SIZE:
                raise FormatError(f"{key} cluster {c}: header past the end of its file",
                                  source=self.name, offset=fd.lv_offset)
            number, total, free, _ = struct.unpack_from("<4I", md)
            if number != c or total > min(geo.resources_per_cluster, 512):
                raise FormatError(f"{key} cluster {c}: header says cluster {number} of "
                                  f"{total} resources", source=self.name, offset=fd.lv_offset)
            if free:
                bits = int.from_bytes(md[16:80], "little")
                yield from ((c, r) for r in range(total) if bits >> r & 1)

    def free_ranges(self) -> list[tuple[int, int]]:
        """[start, end) LV ranges the allocation bitmaps mark free: file blocks of
        ``.fbb.sf`` and sub-blocks of ``.sbc.sf`` (VMFS3/5; VMFS6 bitmaps are not
        understood: `UnsupportedError`)."""
        if self.vmfs6:
            raise UnsupportedError("VMFS6 allocation bitmaps are not decoded",
                                   source=self.name)
        rpc = self._geometry("fbb")[1].resources_per_cluster
        ranges = [((c * rpc + r) * self.fbs, (c * rpc + r + 1) * self.fbs)
                  for c, r in self._free_resources("fbb")]
        sbs = self._geometry("sbc")[1].resource_size
        ranges += [(lv, lv + sbs) for lv in (self._resource_lv("sbc", c, r)
                                              for c, r in self._free_resources("sbc"))]
        ranges.sort()
        merged: list[tuple[int, int]] = []
        for start, end in ranges:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((start, min(end, self.lv.size)))
        return merged

    # -- heartbeats -----------------------------------------------------------------------

    def heartbeats(self) -> list[dict]:
        slot = self.md if self.vmfs6 else 512
        count = 1024 if self.vmfs6 else 2048
        raw = self.lv.read(F.HEARTBEAT_OFFSET, slot * count)
        out = []
        used = (F.HB_FREE, F.HB_LIVE)
        for i in range(len(raw) // slot):
            pos = i * slot
            # most slots were never used: skip them before the (slow) full parse
            if _U32.unpack_from(raw, pos)[0] not in used or not any(raw[pos + 0x1C:pos + 0x2C]):
                continue
            hb = F.Heartbeat.parse(raw[pos:pos + F.Heartbeat.sizeof()])
            out.append({
                "slot": i, "offset": F.HEARTBEAT_OFFSET + i * slot,
                "state": "live" if hb.state == F.HB_LIVE else "free",
                "generation": hb.generation, "uptime_us": hb.stamp_us,
                "host_uuid": F.uuid_str(hb.owner), "host_mac": hb.owner[10:].hex(":"),
                "ip": F.name_str(hb.ip) or None,
                "version": f"{hb.drive_major}.{hb.drive_minor}", "lock_impl": hb.lock_impl,
                "journal_offset": hb.journal_vol_addr,
                "replay_host": F.uuid_str(hb.replay_host) if any(hb.replay_host) else None,
            })
        return out

    def lock_info(self, fd: Fd, heartbeats: dict[int, dict]) -> dict:
        lk = fd.lock
        hb = heartbeats.get(lk.hb_addr) if lk.hb_addr else None
        live = bool(hb and hb["state"] == "live" and hb["generation"] == lk.hb_gen)
        info = {
            "type": F.LOCK_TYPES.get(lk.type, f"{lk.type:#x}"), "offset": lk.addr,
            "mode": F.LOCK_MODES.get(lk.mode, f"unknown ({lk.mode})"), "mode_value": lk.mode,
            "held": bool(lk.hb_addr) and lk.mode != 0, "live": live,
            "heartbeat_offset": lk.hb_addr or None, "heartbeat_generation": lk.hb_gen,
            "owner": F.uuid_str(lk.owner) if any(lk.owner) else None,
            "heartbeat_host": hb["host_uuid"] if hb else None,
            "heartbeat_ip": hb["ip"] if hb else None, "token": lk.token, "mtime_us": lk.mtime_us,
        }
        holders = []
        for h in lk.holders:
            if h.hb_addr:
                holders.append({"heartbeat_offset": h.hb_addr, "heartbeat_generation": h.hb_gen,
                                "host_uuid": F.uuid_str(h.host)})
        if holders:
            info["holders"] = holders
        return info


# --- the volume -----------------------------------------------------------------------------

_FILE_TYPES = {int(F.DescType.DIRECTORY): FileType.DIR, int(F.DescType.REGFILE): FileType.FILE,
               int(F.DescType.SYMLINK): FileType.SYMLINK, int(F.DescType.SYSFILE): FileType.FILE,
               int(F.DescType.RDM): FileType.RDM}


def _file_type(desc_type: int) -> FileType:
    return _FILE_TYPES.get(desc_type, FileType.OTHER)


class VmfsFile(ByteSource):
    """The contents of one VMFS file; `extents` is its block map."""

    def __init__(self, vmfs: Vmfs, fd: Fd, name: str):
        self.vmfs = vmfs
        self.fd = fd
        self.size = fd.meta.length
        self.name = name

    def read(self, offset: int, length: int) -> bytes:
        return self.vmfs._read_file(self.fd, offset, length)

    def prefetch(self, offset: int, length: int) -> None:
        start, end = clip(self.size, offset, length)
        for _, n, kind, lv in self.vmfs._runs(self.fd, start, end):
            if kind is Alloc.DATA and lv is not None:
                self.vmfs.lv.prefetch(lv, n)

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Run]:
        start, end = clip(self.size, offset, length)
        return merge_runs(Run(o, n, k) for o, n, k, _ in self.vmfs._runs(self.fd, start, end))


class VmfsVolume(Volume):
    """A VMFS datastore (one device, a spanned set, or an LV image without LVM)."""

    def __init__(self, lv: ByteSource, lvm: dict | None, warnings: list, sources):
        self.lvm = lvm
        self.sources = list(sources)
        self.fs = Vmfs(lv)
        self.name = f"{self.sources[0].name}" if self.sources else lv.name
        self.warnings = list(warnings)
        self._hb: list[dict] | None = None

    # lookups
    def _lookup(self, path: str) -> tuple[Fd, str]:
        path = normalize(path)
        fd = self.fs.root
        if not path:
            return fd, path
        parts = path.split("/")
        if len(parts) > MAX_PATH_DEPTH:
            raise LimitError(f"path has {len(parts)} components", source=self.name)
        for i, part in enumerate(parts):
            if not fd.is_dir:
                raise SourceError(f"{'/'.join(parts[:i])!r} is not a directory", source=self.name,
                                  kind=ErrorKind.NOT_A_DIR)
            addr = self.fs.child(fd, part)
            if addr is None:
                raise SourceError(f"{path!r}: no {part!r} in {'/'.join(parts[:i]) or '/'}",
                                  source=self.name, kind=ErrorKind.NOT_FOUND)
            fd = self.fs.fd(addr)
        return fd, path

    def listdir(self, path: str = "", *, deleted: bool = False) -> list[DirEntry]:
        fd, _ = self._lookup(path)
        if not fd.is_dir:
            raise SourceError(f"{path!r} is not a directory", source=self.name,
                              kind=ErrorKind.NOT_A_DIR)
        out = []
        sysfile = int(F.DescType.SYSFILE)
        for name, dtype, addr, gone in self.fs.entries(fd):
            if name in (".", "..") or (gone and not deleted):
                continue
            kind = _FILE_TYPES.get(dtype, FileType.OTHER)
            if dtype == sysfile and not gone:
                kind = self.fs.fd(addr).file_type
            out.append(DirEntry(name, kind, addr or None, gone))
        return sorted(out, key=lambda e: (e.name, e.deleted))

    def stat(self, path: str) -> FileStat:
        fd, path = self._lookup(path)
        st = self._stat(fd, path)
        if st.type is FileType.SYMLINK:
            st.symlink_target = self._link(fd)
        st.extra = self._extra(fd)
        return st

    def lookup(self, path: str) -> FileStat:
        fd, path = self._lookup(path)
        return self._stat(fd, path)

    def _stat(self, fd: Fd, path: str) -> FileStat:
        """The facts the descriptor's metadata holds (no lock, RDM, link target)."""
        m = fd.meta
        kind = fd.file_type
        st_mode = kind.ifmt | (m.mode & 0o7777) if kind is not FileType.OTHER else m.mode
        return FileStat(path, kind, m.length, fd.addr, m.link_count, m.mode & 0o7777, m.uid,
                        m.gid, float(m.mtime), float(m.ctime), float(m.atime),
                        self._allocated(fd), st_mode=st_mode)

    def _allocated(self, fd: Fd) -> int:
        if fd.meta.zla == F.Zla.RESIDENT or fd.type == F.DescType.RDM:
            return 0
        return fd.meta.num_blocks << fd.shift

    def _extra(self, fd: Fd) -> dict:
        m = fd.meta
        extra: dict[str, Any] = {
            "fd_address": f"{fd.addr:#010x}", "fd_offset": fd.lv_offset,
            "descriptor_type": _type_name(F.DescType, m.type),
            "zla": _type_name(F.Zla, m.zla), "block_size": m.block_size,
            "num_blocks": m.num_blocks, "tbz_blocks": (m.tbz_hi << 32) | m.tbz_lo,
            "cow_blocks": (m.cow_hi << 32) | m.cow_lo, "pointer_blocks": m.num_pointer_blocks,
            "generation": m.generation, "flags": m.flags, "raw_mode": m.mode,
        }
        if self.fs.vmfs6:
            extra["parent_fd"] = f"{m.parent_fd:#010x}" if m.parent_fd else None
            extra["large_file_blocks"] = m.num_lfb
        extra["lock"] = self.fs.lock_info(fd, {h["offset"]: h for h in self.heartbeats()})
        if m.type == F.DescType.RDM:
            lay = self.fs.layout
            rdm = F.RawDiskMap.parse(fd.raw[lay.data_offset:lay.data_offset + 78])
            extra["rdm"] = {"type": rdm.type, "lun": rdm.lun, "device_type": rdm.device_type,
                            "scsi_level": rdm.scsi_level,
                            "vendor": F.name_str(rdm.vendor).strip(),
                            "model": F.name_str(rdm.model).strip(),
                            "revision": F.name_str(rdm.revision).strip(),
                            "id": rdm.id[:min(rdm.len, 44)].decode("latin-1").rstrip("\0 ")}
        return extra

    def _link(self, fd: Fd) -> str:
        if fd.meta.length > 4096:
            raise LimitError(f"symbolic link target is {fd.meta.length} bytes", source=self.name,
                             offset=fd.lv_offset)
        return self.fs._read_file(fd, 0, fd.meta.length).decode("utf-8", "replace")

    def device_runs(self, path: str) -> list[tuple[int, int, int]]:
        """(file offset, LV offset, length) of the stored data of ``path``, a file or a
        folder (resident data, holes and to-be-zeroed blocks have no place and are left out)."""
        fd, _ = self._lookup(path)
        if fd.meta.zla == F.Zla.RESIDENT:
            return []
        return [(off, lv, n) for off, n, kind, lv in self.fs._runs(fd, 0, fd.meta.length)
                if kind is Alloc.DATA and lv is not None]

    def readlink(self, path: str) -> str:
        fd, path = self._lookup(path)
        if fd.type != F.DescType.SYMLINK:
            raise SourceError(f"{path!r} is not a symbolic link", source=self.name,
                              kind=ErrorKind.NOT_A_LINK)
        return self._link(fd)

    def open(self, path: str) -> ByteSource:
        fd, path = self._lookup(path)
        if fd.type == F.DescType.RDM:
            raise UnsupportedError(f"{path!r} is a raw device mapping: its data is on the "
                                   f"mapped LUN, not on the datastore", source=self.name)
        if fd.file_type is not FileType.FILE:
            raise not_a_file(fd.file_type, repr(path), self.name)
        if fd.meta.zla != F.Zla.RESIDENT and fd.meta.length > self.fs.capacity(fd):
            raise FormatError(f"{path!r}: length {fd.meta.length} is more than its pointers "
                              f"can address", source=self.name, offset=fd.lv_offset)
        return VmfsFile(self.fs, fd, f"{self.name}:{path}")

    # metadata
    def held_locks(self, problems: list[str] | None = None) -> list[dict]:
        """Every file or folder whose on-disk lock a host holds: path, mode, the holder's
        heartbeat (host, IP) and whether that heartbeat is live or stale. With ``problems``,
        what cannot be read is noted there and skipped (as in `walk`)."""
        heartbeats = {h["offset"]: h for h in self.heartbeats()}
        found = []

        def check(path: str, fd: Fd) -> None:
            lock = self.fs.lock_info(fd, heartbeats)
            if lock["held"]:
                found.append({"path": path or "/", **lock})

        check("", self.fs.root)
        for folder, entries in self.walk(problems=problems):
            for e in entries:
                if e.inode is None:
                    continue
                path = posixpath.join(folder, e.name)
                try:
                    check(path, self.fs.fd(e.inode))
                except VmsiftError as err:
                    if problems is None:
                        raise
                    problems.append(Problem.of(err, f"lock of {path!r}: "))
        return found

    def heartbeats(self) -> list[dict]:
        if self._hb is None:
            self._hb = self.fs.heartbeats()
        return self._hb

    def info(self) -> Report:
        fs, d = self.fs, self.fs.desc
        version = F.version_string(d.magic, d.major, d.minor)
        config = [f.name.lower() for f in F.Config if d.config & f]
        fsd = {
            "version": version, "major": d.major, "minor": d.minor,
            "local": d.magic in (F.MAGIC_VMFS_L, 0x2FABF161), "uuid": fs.uuid, "label": fs.label,
            "config": d.config, "config_flags": config, "block_size": fs.fbs,
            "sub_block_size": fs.sbs, "large_block_size": fs.lfb_size or None,
            "md_alignment": d.md_alignment or None, "disk_block_size": d.disk_block_size,
            "creation_time": d.creation_time, "lv_uuid": F.uuid_str(d.lv_uuid),
            "lv_snap_id": d.lv_snap_id, "capacity": fs.lv.size,
            "host_uuid": F.uuid_str(d.host_uuid) if any(d.host_uuid) else None,
        }
        hbs = self.heartbeats()
        problems: list[Problem] = []
        locks = self.held_locks(problems)
        warnings = self.warnings + fs.warnings + problems
        res = [geo.to_dict() for _, geo in fs.resources.values()]
        data = {"kind": KIND, "fs": fsd, "lvm": self.lvm, "heartbeats": hbs, "locks": locks,
                "resources": res, "warnings": warnings}
        fields = {"version": version, "label": fs.label, "uuid": fs.uuid,
                  "capacity": size_field(fs.lv.size), "block size": fs.fbs,
                  "sub-block size": fs.sbs, "live hosts": sum(h["state"] == "live" for h in hbs),
                  "locks held": len(locks)}
        if self.lvm:
            fields["LV"] = self.lvm["lv_uuid"]
            fields["devices"] = f"{len(self.lvm['devices'])} of {self.lvm['num_devs']}"
        tables = [Table("heartbeats", ["slot", "state", "host", "ip", "generation", "uptime s"],
                        [[h["slot"], h["state"], h["host_uuid"], h["ip"], h["generation"],
                          h["uptime_us"] // 1_000_000] for h in hbs]),
                  Table("locks held", ["path", "mode", "holder", "ip", "heartbeat"],
                        [[lk["path"], lk["mode"], _holders(lk), lk["heartbeat_ip"],
                          "live" if lk["live"] else "stale"] for lk in locks]),
                  Table("resources", ["kind", "per cluster", "clusters/group", "size",
                                      "resources", "groups"],
                        [[r["kind"], r["resources_per_cluster"], r["clusters_per_group"],
                          r["resource_size"], r["num_resources"], r["num_cluster_groups"]]
                         for r in res])]
        if self.lvm:
            tables.insert(0, Table("LVM devices", ["device", "uuid", "LVM", "size", "PEs"],
                                   [[dv["name"], dv["uuid"], dv["lvm_version"], dv["size"],
                                     f"{dv['first_pe']}-{dv['last_pe']}"]
                                    for dv in self.lvm["devices"]]))
        return Report(KIND, f"{version} datastore {fs.label!r}", data, fields, tables, warnings)

    def close(self) -> None:
        for src in self.sources:
            src.close()


def _holders(lock: dict) -> str:
    """The host(s) holding a lock: every holder of a multi-writer lock, else the owner."""
    hosts = [h["host_uuid"] for h in lock.get("holders", [])]
    return ", ".join(hosts) or lock["heartbeat_host"] or lock["owner"] or "-"


def _fs_magic(src: ByteSource) -> bool:
    raw = src.read(F.FS_DESCRIPTOR_OFFSET, 4)
    return len(raw) == 4 and int.from_bytes(raw, "little") in F.MAGICS


def probe(src: ByteSource) -> bool:
    """True when ``src`` looks like a VMFS LVM device or a VMFS logical volume."""
    try:
        return L.probe(src) or _fs_magic(src)
    except (VmsiftError, OSError, ValueError):
        return False


def open_volume(sources: list[ByteSource]) -> VmfsVolume:
    """Open the VMFS datastore on ``sources`` (LVM devices in any order, or one LV image)."""
    if not sources:
        raise FormatError("no device given")
    if len(sources) == 1 and not L.probe(sources[0]):
        if not _fs_magic(sources[0]):
            raise FormatError("neither a VMFS LVM header (at 1 MiB) nor a VMFS descriptor "
                              "(at 2 MiB)", source=sources[0].name, offset=L.HEADER_OFFSET)
        return VmfsVolume(sources[0], None, [], sources)
    lv, desc, warnings = assemble(list(sources))
    return VmfsVolume(lv, desc, warnings, sources)
