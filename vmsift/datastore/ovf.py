"""OVF packages and OVA archives, read in place: descriptor, manifest, certificate, disks.

A package lives on a `Volume`: a folder (``X.ovf`` beside its ``X.mf``, ``X.cert`` and
disks) or an OVA (`TarVolume` over the archive; the descriptor is its first ``.ovf``
member). Every name the descriptor or manifest gives is resolved with `Volume.resolve`, so
none can leave the package. A file split into chunks (``disk.vmdk.000000000`` ...,
``ovf:chunkSize``) reads as one; a disk opens through the VMDK reader with the package as
its datastore. A gzip-compressed file (``ovf:compression="gzip"``) allows no random access:
its disk is read as a stream (`StreamedDisk`), which `export_stream` writes out.
`ovf_check` verifies a package's manifest and signature; `ovf_report` describes it.
"""

from __future__ import annotations

import os
import posixpath
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..errors import ErrorKind, FormatError, Problem, SourceError, UnsupportedError, VmsiftError
from ..formats import ovf as ovf_mod
from ..formats import tar
from ..formats.vmdk import sparse
from ..formats.vmdk import stream as stream_mod
from ..report import Report
from ..source import ByteSource, ConcatSource, FileSource
from .archive import TarVolume
from .disk import open_disk
from .folder import FolderVolume
from .volume import DirEntry, FileStat, Volume

KIND = "ovf"
EXTENSIONS = (".ovf",)
sniff = ovf_mod.sniff
MAX_CHUNKS = 100_000
GZIP_SLACK = 64 << 20  # a compressed stream may inflate to capacity + this much metadata


@dataclass
class PackageFile:
    """A referenced file: its volume path and its parts there (itself, or its chunks)."""

    ref: ovf_mod.FileRef
    path: str | None
    parts: list[str]
    problem: str | None = None

    @property
    def chunked(self) -> bool:
        return self.parts != [self.path]


class _PackageVolume(Volume):
    """The package's volume, where a chunked file opens as its joined chunks."""

    def __init__(self, base: Volume, joined: dict[str, list[str]]):
        self.base, self.joined, self.name = base, joined, base.name

    def info(self) -> Report:
        return self.base.info()

    def listdir(self, path: str = "", *, deleted: bool = False) -> list[DirEntry]:
        return self.base.listdir(path, deleted=deleted)

    def stat(self, path: str) -> FileStat:
        if path in self.joined:
            first = self.base.stat(self.joined[path][0])
            first.path, first.size = path, sum(self.base.stat(p).size for p in
                                               self.joined[path])
            return first
        return self.base.stat(path)

    def readlink(self, path: str) -> str:
        return self.base.readlink(path)

    def open(self, path: str) -> ByteSource:
        if path in self.joined:
            return ConcatSource([self.base.open(p) for p in self.joined[path]],
                                f"{self.base.name}/{path}")
        return self.base.open(path)


@dataclass
class Package:
    """An OVF package on ``volume``: the decoded descriptor and what lies beside it."""

    name: str                    # what the user named (the .ova or .ovf)
    kind: str                    # "ova" | "ovf"
    volume: Volume
    descriptor_path: str
    envelope: ovf_mod.Envelope
    descriptor_bytes: bytes
    manifest_path: str | None = None
    manifest: ovf_mod.Manifest | None = None
    manifest_bytes: bytes | None = None
    certificate_path: str | None = None
    certificate: ovf_mod.Certificate | None = None
    warnings: list[str] = field(default_factory=list)
    files: dict[str, PackageFile] = field(default_factory=dict)   # by file id
    owns_volume: bool = True

    @property
    def folder(self) -> str:
        return posixpath.dirname(self.descriptor_path)

    @property
    def disk_volume(self) -> Volume:
        joined = {f.path: f.parts for f in self.files.values() if f.parts and f.chunked}
        return _PackageVolume(self.volume, joined) if joined else self.volume

    def close(self) -> None:
        if self.owns_volume:
            self.volume.close()

    def __enter__(self) -> Package:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def files_in_manifest(self) -> list[str]:
        """Volume paths of the manifest's files that are present."""
        return list(manifest_files(self)[1].values())

    def file_path(self, ref: ovf_mod.FileRef) -> str:
        """The volume path of ``ref`` (confined to the package)."""
        return self.volume.resolve(self.folder, ref.href)

    def find_disk(self, spec: str | None) -> ovf_mod.Disk:
        """A disk by number (1-based, DiskSection order), disk id or file name; the only
        disk when ``spec`` is None."""
        disks = self.envelope.disks
        if not disks:
            raise UnsupportedError("the package has no disks", source=self.name)
        if spec is None:
            if len(disks) > 1:
                names = ", ".join(f"{i} ({d.id})" for i, d in enumerate(disks, 1))
                raise UnsupportedError(f"the package has {len(disks)} disks; choose one with "
                                       f"--disk: {names}", source=self.name)
            return disks[0]
        if spec.isdigit() and 1 <= int(spec) <= len(disks):
            return disks[int(spec) - 1]
        for d in disks:
            ref = self.envelope.file(d.file_ref)
            if spec in (d.id, ref and ref.href, ref and posixpath.basename(ref.href)):
                return d
        raise UnsupportedError(f"no disk {spec!r} (disks: "
                               f"{', '.join(d.id for d in disks)})", source=self.name)


def _read_small(volume: Volume, path: str, limit: int, what: str) -> bytes:
    with volume.open(path) as src:
        return src.read_all(limit, what)


def _chunks(volume: Volume, path: str) -> list[str]:
    parts = []
    while len(parts) < MAX_CHUNKS and volume.exists(f"{path}.{len(parts):09d}"):
        parts.append(f"{path}.{len(parts):09d}")
    return parts


def load(volume: Volume, descriptor_path: str, name: str, kind: str, *,
         owns_volume: bool = True) -> Package:
    """The package whose descriptor is ``descriptor_path`` on ``volume``."""
    data = _read_small(volume, descriptor_path, ovf_mod.MAX_DESCRIPTOR, "OVF descriptor")
    env = ovf_mod.parse(data, f"{volume.name}/{descriptor_path}")
    pkg = Package(name, kind, volume, descriptor_path, env, data,
                  warnings=[str(w) for w in env.warnings], owns_volume=owns_volume)
    stem = posixpath.splitext(descriptor_path)[0]
    if volume.exists(stem + ".mf"):
        pkg.manifest_path = stem + ".mf"
        pkg.manifest_bytes = _read_small(volume, pkg.manifest_path, ovf_mod.MAX_MANIFEST,
                                         "manifest")
        pkg.manifest = ovf_mod.parse_manifest(pkg.manifest_bytes,
                                              f"{volume.name}/{pkg.manifest_path}")
        pkg.warnings += [str(w) for w in pkg.manifest.warnings]
    if volume.exists(stem + ".cert"):
        pkg.certificate_path = stem + ".cert"
        try:
            pkg.certificate = ovf_mod.parse_certificate(_read_small(
                volume, pkg.certificate_path, ovf_mod.MAX_MANIFEST, "certificate"),
                f"{volume.name}/{pkg.certificate_path}")
        except FormatError as e:
            pkg.warnings.append(str(e))
    for ref in env.files:
        try:
            path = pkg.file_path(ref)
        except VmsiftError as e:
            pkg.files[ref.id] = PackageFile(ref, None, [], str(e))
            continue
        if volume.exists(path):
            pkg.files[ref.id] = PackageFile(ref, path, [path])
        elif ref.chunk_size and (parts := _chunks(volume, path)):
            pkg.files[ref.id] = PackageFile(ref, path, parts)
        else:
            pkg.files[ref.id] = PackageFile(ref, path, [], f"{ref.href} is not in the package")
            pkg.warnings.append(f"{name}: file {ref.href!r} ({ref.id}) is not in the package")
    return pkg


def _descriptor_member(volume: TarVolume) -> str:
    members = [m for m in volume.index.members if m.type == "file"]
    ovfs = [m.name for m in members if m.name.lower().endswith(".ovf")]
    if not ovfs:
        raise FormatError("no .ovf descriptor in the archive", source=volume.name)
    if members[0].name != ovfs[0]:
        volume.warnings.append(Problem.at(volume.name, None, f"the descriptor {ovfs[0]!r} is "
                                                             "not the first member"))
    return ovfs[0]


def open_ova(src: ByteSource, name: str, *, owns: bool = True) -> Package:
    """The package in the OVA archive ``src``."""
    volume = TarVolume(src)
    try:
        pkg = load(volume, _descriptor_member(volume), name, "ova", owns_volume=owns)
    except BaseException:
        if owns:
            volume.close()
        raise
    pkg.warnings[:0] = [str(w) for w in volume.warnings]
    return pkg


def is_ova(src: ByteSource) -> bool:
    """A tar archive by its magic, or a ``.ova`` by name (a damaged header is then named)."""
    head = src.read(0, tar.BLOCK)
    return head[257:262] == b"ustar" or src.name.lower().endswith(".ova")


def open_package(path: str | os.PathLike) -> Package:
    """The OVA or ``.ovf`` at host ``path``, opened read-only."""
    path = os.fspath(path)
    src = FileSource(path)
    if is_ova(src):
        return open_ova(src, path)
    src.close()
    volume = FolderVolume(os.path.dirname(os.path.abspath(path)))
    try:
        return load(volume, os.path.basename(path), path, "ovf")
    except BaseException:
        volume.close()
        raise


def package_on(volume: Volume, path: str) -> Package:
    """The package at ``path`` on a datastore: a ``.ovf`` beside its files, or an OVA."""
    if path.lower().endswith(".ova"):
        return open_ova(volume.open(path), f"{volume.name}/{path}")
    return load(volume, path, path, "ovf", owns_volume=False)


# --- disks ----------------------------------------------------------------------------------


class _GzipReader:
    """Sequential inflation of a gzip member, never more than ``limit`` bytes out."""

    def __init__(self, src: ByteSource, limit: int):
        self.src, self.limit, self.pos, self.out = src, limit, 0, 0
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._buf = bytearray()
        self._at = 0  # read position in _buf; consumed bytes are dropped a block at a time

    def read(self, n: int) -> bytes:
        if self._at > (4 << 20):
            del self._buf[:self._at]
            self._at = 0
        while len(self._buf) - self._at < n and not self._z.eof:
            data = self._z.unconsumed_tail or self.src.read(self.pos, 1 << 20)
            if not self._z.unconsumed_tail:
                self.pos += len(data)
            if not data:
                raise FormatError("gzip stream ends early", source=self.src.name,
                                  offset=self.pos)
            try:
                more = self._z.decompress(data, 1 << 22)
            except zlib.error as e:
                raise FormatError(f"gzip stream is damaged: {e}", source=self.src.name,
                                  offset=self.pos) from None
            self.out += len(more)
            if self.out > self.limit:
                raise FormatError(f"gzip stream inflates past {self.limit} bytes, more than "
                                  "the disk can hold (a compression bomb?)",
                                  source=self.src.name, offset=self.pos)
            self._buf += more
        data = bytes(self._buf[self._at:self._at + n])
        self._at += len(data)
        return data


class StreamedDisk(ByteSource):
    """A streamOptimized disk stored gzip-compressed: capacity and header only; random
    reads and the allocation map are impossible, `grains` reads it once front to back."""

    def __init__(self, file: ByteSource, name: str, declared: int | None):
        self.file, self.name = file, name
        self.header = stream_mod.read_header(_GzipReader(file, GZIP_SLACK).read, name)
        self.size = self.header.capacity * sparse.SECTOR
        # a stream holds at most every grain (compressed no larger than ~1/8 more) + metadata
        self._limit = max(declared or 0, self.size) * 9 // 8 + GZIP_SLACK

    REASON = ("gzip-compressed in the package: random access is impossible; "
              "`disk export` reads it as a stream")

    def read(self, offset: int, length: int) -> bytes:
        raise UnsupportedError(self.REASON, source=self.name, offset=offset)

    def extents(self, offset: int = 0, length: int | None = None):
        raise UnsupportedError("no allocation map: " + self.REASON, source=self.name)

    def grains(self) -> Iterator[tuple[int, bytes]]:
        reader = _GzipReader(self.file, self._limit)
        header = stream_mod.read_header(reader.read, self.name)
        return stream_mod.grains(reader.read, header, self.name)

    def close(self) -> None:
        self.file.close()


class PackageDisk(ByteSource):
    """A disk of a package that closes the package with it (a disk opened by path)."""

    def __init__(self, disk: ByteSource, pkg: Package):
        self.disk, self.pkg = disk, pkg
        self.name, self.size = disk.name, disk.size

    def read(self, offset: int, length: int) -> bytes:
        return self.disk.read(offset, length)

    def extents(self, offset: int = 0, length: int | None = None):
        return self.disk.extents(offset, length)

    def close(self) -> None:
        self.disk.close()
        self.pkg.close()


def open_disk_in(volume: Volume, package: str, disk_id: str) -> PackageDisk:
    """Disk ``disk_id`` of the package at ``package`` on ``volume``, opened now."""
    pkg = package_on(volume, package)
    try:
        return PackageDisk(open_package_disk(pkg, pkg.find_disk(disk_id)), pkg)
    except BaseException:
        pkg.close()
        raise


def open_package_disk(pkg: Package, disk: ovf_mod.Disk) -> ByteSource:
    """``disk`` of ``pkg`` as a `VirtualDisk` (or a `StreamedDisk` when compressed)."""
    pfile = pkg.files.get(disk.file_ref or "")
    if pfile is None:
        raise UnsupportedError(f"disk {disk.id!r} has no file (an empty disk the importer "
                               "creates)", source=pkg.name)
    if pfile.problem:
        raise SourceError(pfile.problem, source=pkg.name, kind=ErrorKind.NOT_FOUND)
    volume = pkg.disk_volume
    if pfile.ref.compression == "gzip":
        return StreamedDisk(volume.open(pfile.path), f"{pkg.name}/{pfile.ref.href}",
                            disk.capacity)
    return open_disk(volume, pfile.path, strict=False)


def export_stream(disk: StreamedDisk, out: str, *, overwrite: bool = False,
                  progress: Callable[[int], None] | None = None):
    """Write a streamed disk out as a sparse raw image, reading it once."""
    from .export import export_pieces

    return export_pieces(disk.grains(), disk.size, out, overwrite=overwrite,
                         progress=progress)


def manifest_files(pkg: Package) -> tuple[dict[str, list[ovf_mod.Digest]], dict[str, str]]:
    """Manifest entries by name, and the volume path of each name that is a file here."""
    if pkg.manifest is None:
        raise UnsupportedError("the package has no manifest (.mf) to check", source=pkg.name)
    by_name: dict[str, list[ovf_mod.Digest]] = {}
    for entry in pkg.manifest.entries:
        by_name.setdefault(entry.name, []).append(entry)
    paths = {}
    for name in by_name:
        try:
            path = pkg.volume.resolve(pkg.folder, name)
        except VmsiftError:
            continue
        if pkg.volume.exists(path):
            paths[name] = path
    return by_name, paths


def inspect(src: ByteSource) -> Report:
    """Decode a ``.ovf``; as a host file, with its manifest and files beside it."""
    from .ovf_report import describe

    if isinstance(src, FileSource) and os.path.isfile(src.name):
        with open_package(src.name) as pkg:
            return describe(pkg)
    raise UnsupportedError("an OVF descriptor is read with the files beside it: give its "
                           "path", source=src.name)
