"""VMFS datastores: real ESXi-made images (dissect.vmfs sdists), checked against known values,
dissect.vmfs and debugvmfs/debugvmfs6; damaged and hostile variants give vmsift errors."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import stat
import struct
import subprocess
import sys
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.vmfs_images import image
from tests.helpers import dissect_vmfs, mutate, require_tool, sparse_copy, vmsift
from vmsift.datastore import vmfs as V
from vmsift.datastore.vmfs_lvm import assemble
from vmsift.datastore.volume import FileType
from vmsift.errors import (FormatError, LimitError, SourceError, TruncatedError, UnsupportedError,
                           VmsiftError)
from vmsift.formats.vmfs import fs as F
from vmsift.formats.vmfs import lvm as L
from vmsift.source import Alloc, ByteSource, BytesSource, FileSource, Run, clip

GiB = 1 << 30
MiB = 1 << 20
FS_UUID = {"vmfs5": "68626efc-2ea12e18-b4ef-bc2411b17e28",
           "vmfs6": "68626f2d-90e23158-8a2e-bc2411b17e28"}
HOST = "685eb8eb-7f3e3890-4544-bc2411b17e28"
MD5_BIG = "3b777288e746b621d923226d76aefff1"
MD5_BIGGER = "12ef08c26a69dc12545d4906cf57d004"


class Patched(ByteSource):
    """A source with some bytes replaced (damage without touching the cached image)."""

    def __init__(self, base: ByteSource, patches: dict[int, bytes], size: int | None = None):
        self.base, self.patches = base, patches
        self.size = base.size if size is None else size
        self.name = base.name + " (patched)"

    def read(self, offset: int, length: int) -> bytes:
        start, end = clip(self.size, offset, length)
        data = bytearray(self.base.read(start, end - start))
        data += bytes(end - start - len(data))
        for at, patch in self.patches.items():
            lo, hi = max(at, start), min(at + len(patch), end)
            if lo < hi:
                data[lo - start:hi - start] = patch[lo - at:hi - at]
        return bytes(data)


def _open(names: list[str], cache_dir) -> V.VmfsVolume:
    return V.open_volume([FileSource(image(n, cache_dir)) for n in names])


@pytest.fixture(scope="module", params=["vmfs5", "vmfs6"])
def vol(request, cache_dir):
    v = _open([f"vmfs/{request.param}"], cache_dir)
    v.label = request.param
    yield v
    v.close()


# --- LVM ------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [3, 4, 5, 6])
@pytest.mark.parametrize("order", ["single", "span", "span-reversed"])
def test_lvm_logical_volume_bytes(version, order, cache_dir):
    """dissect's LVM images: MiB i of the LV is filled with byte i % 256 (also when the LV
    spans two devices given in either order)."""
    if order == "single":
        names = [f"lvm/lvm{version}"]
    else:
        names = [f"lvm/span/lvm{version}-span-{i}" for i in (0, 1)]
        if order == "span-reversed":
            names.reverse()
    srcs = [FileSource(image(n, cache_dir)) for n in names]
    lv, desc, warnings = assemble(srcs)
    assert warnings == []
    assert lv.size == (512 * MiB if order == "single" else GiB)
    assert desc["num_devs"] == len(names)
    assert [d["first_pe"] for d in desc["devices"]] == sorted(d["first_pe"] for d in desc["devices"])
    assert all(d["lvm_version"].startswith(f"{version}.") for d in desc["devices"])
    for mib in (0, 1, 255, 256, 300, lv.size // MiB - 1):
        assert lv.read(mib * MiB + 4093, 7) == bytes([mib % 256]) * 7
    # a read across the PE (and device) boundary is one call
    edge = 256 * MiB
    assert lv.read(edge - 2, 4) == bytes([255, 255, 0, 0])


@pytest.mark.parametrize("keep", [1_200_000, 2_400_000, 300 * MiB])
def test_a_cut_copy_of_a_lun_says_how_much_is_missing(tmp_path, cache_dir, keep):
    full = image("vmfs/vmfs5", cache_dir)  # ESXi made it: its LVM header gives its own size
    cut = tmp_path / "cut.img"
    with open(full, "rb") as f, open(cut, "wb") as out:
        out.write(f.read(keep))
    missing = os.path.getsize(full) - keep
    out = vmsift("ds", "ls", cut)
    assert out.returncode == 3
    assert "the image is shorter than its volume says" in out.stderr
    assert f"the file holds {keep} " in out.stderr and f"{missing} bytes" in out.stderr
    assert "not given" not in out.stderr


def test_lvm_header_fields(cache_dir):
    dev = L.read_device(FileSource(image("vmfs/vmfs5", cache_dir)))
    assert (dev.major, dev.minor) == (5, 21)
    assert dev.data_offset == 0x1100000
    assert dev.volumes[0].lv_uuid == "68626efc-23ce1cd0-1f8b-bc2411b17e28"
    assert dev.volumes[0].size == 2 * GiB and dev.volumes[0].state == "normal"
    assert dev.device_names[0].startswith("t10.ATA_____QEMU_HARDDISK")
    assert dev.disk_id.startswith("QM00013")
    assert [e.length for e in dev.extents[0]] == [256 * MiB] * 8
    dev6 = L.read_device(FileSource(image("vmfs/vmfs6", cache_dir)))
    assert dev6.major == 6 and dev6.md_alignment == 4096
    assert [(e.logical, e.length) for e in dev6.extents[0]] == [(0, 2 * GiB)]


def test_lvm_bad_magic_and_probe(cache_dir):
    src = FileSource(image("vmfs/vmfs5", cache_dir))
    assert V.probe(src)
    bad = Patched(src, {L.HEADER_OFFSET: b"\0\0\0\0"})
    assert not L.probe(bad)
    with pytest.raises(FormatError, match="magic"):
        L.read_device(bad)
    assert not V.probe(BytesSource(b"x" * 100))
    assert not V.probe(BytesSource(b""))
    with pytest.raises(FormatError, match="neither"):
        V.open_volume([BytesSource(bytes(4 * MiB), "zeros")])


# --- file system metadata -------------------------------------------------------------------

def test_info(vol):
    rep = vol.info()
    fs = rep.data["fs"]
    assert fs["uuid"] == FS_UUID[vol.label]
    assert fs["label"] == vol.label
    assert fs["version"] == ("VMFS-5.81" if vol.label == "vmfs5" else "VMFS-6.82")
    assert fs["block_size"] == MiB and fs["capacity"] == 2 * GiB
    assert fs["sub_block_size"] == (8192 if vol.label == "vmfs5" else 65536)
    assert fs["large_block_size"] == (None if vol.label == "vmfs5" else 512 * MiB)
    assert "dense_sbpc" in fs["config_flags"]
    assert rep.data["lvm"]["devices"][0]["uuid"]
    live = [h for h in rep.data["heartbeats"] if h["state"] == "live"]
    assert len(live) == 1
    assert live[0]["host_uuid"] == HOST and live[0]["ip"] == "10.0.0.229"
    assert live[0]["offset"] == (0x342000 if vol.label == "vmfs5" else 0x340000)
    assert live[0]["version"] == ("14.81" if vol.label == "vmfs5" else "24.82")
    kinds = {r["kind"] for r in rep.data["resources"]}
    assert {"fdc", "sbc", "pbc", "fbb", "pb2"} <= kinds
    fdc = next(r for r in rep.data["resources"] if r["kind"] == "fdc")
    assert (fdc["resources_per_cluster"], fdc["resource_size"]) == (
        (200, 2048) if vol.label == "vmfs5" else (256, 8192))
    assert rep.tables[0].title == "LVM devices"
    assert rep.warnings == []


def test_root_listing(vol):
    names = {e.name: e for e in vol.listdir("")}
    expected = {".fbb.sf", ".fdc.sf", ".pbc.sf", ".sbc.sf", ".vh.sf", ".pb2.sf", ".sdd.sf",
                "small", "big", "bigger", "symlink", "directory", "normal-flat.vmdk",
                "normal.vmdk", "large-flat.vmdk", "large.vmdk", "rdm-rdm.vmdk", "rdm.vmdk",
                "collision"}
    if vol.label == "vmfs6":
        expected |= {".jbc.sf", ".unmap.sf"}
    assert set(names) == expected
    assert names[".sdd.sf"].type is FileType.DIR
    assert names[".fdc.sf"].type is FileType.FILE
    assert names["symlink"].type is FileType.SYMLINK
    assert names["rdm-rdm.vmdk"].type is FileType.RDM
    assert names["directory"].type is FileType.DIR
    assert names[".fdc.sf"].inode == 0x00800004


def test_file_contents(vol):
    assert vol.open("small").read(0, 100) == b"tiny\n"
    big = vol.open("big")
    assert big.size == 1024 * 1024 + 1
    assert hashlib.md5(big.read(0, big.size)).hexdigest() == MD5_BIG
    assert big.read(0, 16) == b"Kusjes van SRT<3"
    bigger = vol.open("bigger")
    assert hashlib.md5(bigger.read(0, bigger.size)).hexdigest() == MD5_BIGGER
    assert bigger.read(5 * MiB - 1, 2) == b"\x04\x05"
    st = vol.stat("small")
    assert st.extra["zla"] == "resident" and st.type is FileType.FILE
    assert vol.stat("big").extra["zla"] == "file_block"
    assert vol.stat("bigger").allocated == 128 * MiB


def test_recursive_listing(vol):
    """`ds ls -R`: every path of the volume once, folders marked; --json gives full paths."""
    paths = {f"{d}/{e.name}".lstrip("/"): e for d, es in vol.walk() for e in es}
    out = vmsift("ds", "ls", "-R", vol.sources[0].name)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == len(paths) > 130 and "directory/file42" in lines
    assert {line.rstrip("/") for line in lines} == set(paths)
    assert {line[:-1] for line in lines if line.endswith("/")} == {
        p for p, e in paths.items() if e.type is FileType.DIR}
    doc = json.loads(vmsift("ds", "ls", "-R", "--json", vol.sources[0].name, "directory").stdout)
    assert [e["path"] for e in doc["entries"]] == sorted(
        f"directory/file{i}" for i in range(1, 101))


def test_directory_and_symlink(vol):
    entries = vol.listdir("directory")
    assert [e.name for e in entries] == sorted(f"file{i}" for i in range(1, 101))
    for i in (1, 42, 100):
        assert vol.open(f"directory/file{i}").read(0, 64) == f"File {i}\n".encode()
    assert vol.readlink("symlink") == f"/vmfs/volumes/{vol.label}/small"
    st = vol.stat("symlink")
    assert st.type is FileType.SYMLINK and st.symlink_target.endswith("/small")
    # a wrong path is the caller's, not damage: SourceError (exit 6), never FormatError
    for call, arg, message in [(vol.open, "directory", "not a regular file"),
                               (vol.stat, "directory/nope", "no 'nope'"),
                               (vol.listdir, "small/x", "not a directory"),
                               (vol.listdir, "small", "not a directory"),
                               (vol.readlink, "small", "not a symbolic link")]:
        with pytest.raises(SourceError, match=message):
            call(arg)


def test_collision_directory(vol):
    """VMFS6 puts these names in one hash slot (link groups); listing and lookup find all."""
    names = [e.name for e in vol.listdir("collision")]
    assert len(names) == 19
    for name in names:
        assert vol.stat(f"collision/{name}").type is FileType.FILE


@pytest.mark.parametrize("path, at, zla", [("normal-flat.vmdk", 42 * GiB, "pointer_block"),
                                           ("large-flat.vmdk", 117 * GiB, "double_indirect")])
def test_thin_vmdk_map(vol, path, at, zla):
    """Thin files map as holes around the one written MiB, from metadata alone (bounded memory)."""
    f = vol.open(path)
    assert f.size == (69 * GiB if path.startswith("normal") else 42 * 1024 * GiB)
    assert vol.stat(path).extra["zla"] == zla
    tracemalloc.start()
    runs = list(f.extents())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert runs == [Run(0, at, Alloc.HOLE), Run(at, MiB, Alloc.DATA),
                    Run(at + MiB, f.size - at - MiB, Alloc.HOLE)]
    assert peak < 8 * MiB
    assert f.read(at, 512) == b"\x42" * 512
    assert f.read(at - 4, 8) == b"\0" * 4 + b"\x42" * 4
    assert f.read(10 * GiB, 4096) == bytes(4096)


def test_rdm(vol):
    st = vol.stat("rdm-rdm.vmdk")
    assert st.type is FileType.RDM and stat.S_ISREG(st.st_mode)
    assert st.size == 6969 * GiB
    assert st.extra["descriptor_type"] == "rdm"
    assert st.extra["rdm"]["type"] == 1
    assert st.extra["rdm"]["id"].startswith("QM00015             QEMU H")
    with pytest.raises(UnsupportedError, match="raw device mapping"):
        vol.open("rdm-rdm.vmdk")
    listed = vmsift("ds", "ls", "-l", vol.sources[0].name).stdout.splitlines()
    line = next(line for line in listed if line.endswith(" rdm-rdm.vmdk"))
    assert line.split()[:2] == ["rdm", str(6969 * GiB)]
    assert vmsift("ds", "ls", "-l", vol.sources[0].name, "rdm-rdm.vmdk").stdout == line + "\n"


def test_disk_info_of_a_raw_device_mapping_names_its_mapping_and_unread_partitions(vol):
    image_path = vol.sources[0].name
    out = vmsift("disk", "info", "--datastore", image_path, "rdm.vmdk")
    assert out.returncode == 0, out.stderr
    fields = dict(line.strip().split("  ", 1) for line in out.stdout.splitlines()[1:]
                  if line.startswith("  ") and "  " in line.strip())
    assert fields["raw device mapping"].strip() == \
        "rdm-rdm.vmdk, virtual mode, LUN not given (--device)"
    assert fields["partitions"].strip().startswith("not read: raw device mapping")
    assert "partitions: none" not in out.stdout
    doc = json.loads(vmsift("disk", "info", "--json", "--datastore", image_path,
                            "rdm.vmdk").stdout)
    assert doc["data"]["chain"][0]["raw_device_map"]["mode"] == "virtual"
    assert doc["data"]["partition_table"] is None and doc["data"]["partitions"] == []


def test_locks(vol):
    lock = vol.stat("big").extra["lock"]
    assert lock["type"] == "file descriptor"
    assert lock["offset"] == vol.stat("big").extra["fd_offset"]
    assert lock["mode"] == "free" and not lock["held"]
    # the slot of the last holder is the live host's heartbeat
    assert lock["heartbeat_host"] == HOST and lock["heartbeat_ip"] == "10.0.0.229"
    assert not lock["live"]  # generation 3 was an earlier mount; the slot is now at 5


def test_no_lock_held_on_the_esxi_images(vol):
    """The ESXi images were unmounted cleanly: ds info lists no held lock, and reads every FD."""
    info = vol.info()
    assert info.data["locks"] == [] and info.fields["locks held"] == 0
    assert not [w for w in info.warnings if "lock of" in w]


def test_fd_struct_reading_matches_the_layouts(vol):
    """The struct reading of locks and file metadata (fast path) equals the declared layouts,
    on every file descriptor of the image."""
    lay = vol.fs.layout
    fds = [vol.fs.root] + [vol.fs.fd(e.inode) for _, entries in vol.walk()
                           for e in entries if e.inode is not None]
    assert len(fds) > 20
    for fd in fds:
        lock, meta = F.DiskLock.parse(fd.raw), F.FileMetadata.parse(fd.raw[lay.meta_offset:])
        assert fd.meta == F.Meta(**{k: meta[k] for k in F.Meta._fields})
        assert fd.lock[:-1] == tuple(lock[k] for k in F.Lock._fields[:-1])
        assert fd.lock.holders == tuple((h.hb_addr, h.hb_gen, h.host)
                                        for h in lock.holders[:min(lock.num_holders, 8)])


@pytest.mark.parametrize("name, version, local, lvm", [
    ("vmfs5l", "VMFSL-5.60", True, True), ("vmfs6l", "VMFSL-6.82", True, True),
    ("vmfs5d", "VMFS-5.81", False, False), ("vmfs6d", "VMFS-6.82", False, False),
    ("vmfs5ld", "VMFSL-5.60", True, False), ("vmfs6ld", "VMFSL-6.82", True, False),
    ("vmfs5-no-dense-sbpc", "VMFS-5.81", False, True),
    ("vmfs5-resource-optimized", "VMFS-5.81", False, True),
    ("vmfs6-resource-optimized", "VMFS-6.82", False, True),
])
def test_variants(name, version, local, lvm, cache_dir):
    v = _open([f"vmfs/{name}"], cache_dir)
    rep = v.info()
    assert rep.data["fs"]["label"] == name
    assert rep.data["fs"]["version"] == version
    assert rep.data["fs"]["local"] is local
    assert (rep.data["lvm"] is not None) is lvm
    assert ("dense_sbpc" in rep.data["fs"]["config_flags"]) is ("no-dense" not in name)
    names = {e.name for e in v.listdir("")}
    assert {".fdc.sf", ".sbc.sf", ".pbc.sf", ".fbb.sf", ".vh.sf", ".sdd.sf"} <= names
    vh = v.open(".vh.sf")
    assert vh.read(F.FS_DESCRIPTOR_OFFSET, 4) == struct.pack("<I", F.MAGIC_VMFS_L if local
                                                             else F.MAGIC_VMFS)


@pytest.mark.parametrize("gen", [5, 6])
def test_zero_thin_disk(gen, cache_dir):
    v = _open([f"vmfs/zero{gen}"], cache_dir)
    f = v.open("empty-flat.vmdk")
    assert f.size == 100 * GiB
    assert list(f.extents()) == [Run(0, f.size, Alloc.HOLE)]
    assert f.read(50 * GiB, 512) == bytes(512)
    assert v.stat("empty-flat.vmdk").extra["zla"] == "pointer_block"
    assert v.info().data["heartbeats"] == [] or all(
        h["state"] == "free" for h in v.info().data["heartbeats"])


@pytest.mark.parametrize("gen", [5, 6])
def test_old_images(gen, cache_dir):
    v = _open([f"old/vmfs{gen}"], cache_dir)
    assert v.info().data["fs"]["label"] == f"VMFS{gen} Test"
    assert [e.name for e in v.listdir("directory")] == [
        "file1", "file2", "file3", "file4", "file5", "symlink"]
    assert v.open("directory/file4").read(0, 100) == b"content\n"
    assert v.open("directory/file5").read(0, 9000) == b"a" * 8192 + b"\n"
    assert v.open("directory/file1").size == 0
    assert list(v.open("directory/file1").extents()) == []
    assert v.readlink("directory/symlink").endswith("file4")


# --- spanned volumes ------------------------------------------------------------------------

@pytest.mark.parametrize("gen", [5, 6])
@pytest.mark.parametrize("reverse", [False, True])
def test_span(gen, reverse, cache_dir):
    names = [f"vmfs/span/vmfs{gen}-span-{i}" for i in (0, 1)]
    v = _open(names[::-1] if reverse else names, cache_dir)
    rep = v.info()
    assert rep.data["fs"]["label"] == f"vmfs{gen}-span"
    assert rep.data["fs"]["capacity"] == 4 * GiB
    assert [d["first_pe"] for d in rep.data["lvm"]["devices"]] == [0, 8]
    assert rep.data["lvm"]["missing"] == []
    assert rep.warnings == []
    assert ".fdc.sf" in {e.name for e in v.listdir("")}


@pytest.mark.parametrize("gen", [5, 6])
def test_span_missing_device(gen, cache_dir):
    """Device zero alone: the volume opens, the missing half is reported and reading it is a
    clear error; the other device alone holds no descriptor: a clear error too."""
    v = _open([f"vmfs/span/vmfs{gen}-span-0"], cache_dir)
    rep = v.info()
    assert rep.data["lvm"]["missing"] == [{"offset": 2 * GiB, "length": 2 * GiB}]
    assert any("1 given" in w for w in rep.warnings)
    assert ".vh.sf" in {e.name for e in v.listdir("")}
    with pytest.raises(FormatError, match="not given"):
        v.fs.lv.read(3 * GiB, 16)
    assert next(v.fs.lv.extents(3 * GiB, 16)).kind is Alloc.DATA
    with pytest.raises(FormatError, match="not given"):
        _open([f"vmfs/span/vmfs{gen}-span-1"], cache_dir)


def test_extract_with_a_span_device_missing(cache_dir, tmp_path):
    """Device zero alone, `.vh.sf`'s first block moved (by a patch of its pointer) into the
    half of the LV that lives on the missing device: `ds extract` of the whole volume names
    that file, exits 1, and extracts everything else."""
    dev0 = tmp_path / "span-0.img"
    sparse_copy(image("vmfs/span/vmfs5-span-0", cache_dir), dev0)
    v = _open(["vmfs/span/vmfs5-span-0"], cache_dir)
    st = v.stat(".vh.sf")
    fd = v.fs.fd(st.inode)
    moved = (2 * GiB // v.fs.fbs + 10) << 6 | (fd.ptrs[0] & 0x3F)  # FB address, bits 6-31
    with open(dev0, "r+b") as f:
        f.seek(v.lvm["devices"][0]["data_offset"] + st.extra["fd_offset"] + fd.layout.ptr_offset)
        f.write(struct.pack("<I", moved))
    proc = vmsift("ds", "extract", dev0, "", tmp_path / "out")
    assert proc.returncode == 1, proc.stderr
    failed = [line for line in proc.stderr.splitlines() if line.startswith("warning: not ext")]
    assert len(failed) == 1 and ".vh.sf" in failed[0] and "device that was not given" in failed[0]
    root = tmp_path / "out"  # the volume's root goes into OUT itself
    assert not (root / ".vh.sf").exists()
    assert (root / ".fdc.sf").stat().st_size == v.stat(".fdc.sf").size
    assert sorted(p.name for p in root.iterdir()) == sorted(
        e.name for e in v.listdir("") if e.name != ".vh.sf")


def test_extract_keeps_mode_and_times(tmp_path, cache_dir):
    """ESXi-made files: 0400 system files, a 0700 folder, 0600 disks; times of 2025. Each
    extracted copy has dissect.vmfs's mode bits and mtime/atime."""
    path = image("vmfs/vmfs5", cache_dir)
    names = [".fbb.sf", ".sdd.sf", "small", "normal.vmdk", "symlink", "directory"]
    for name in names:
        assert vmsift("ds", "extract", path, name, tmp_path).returncode == 0
    with dissect_vmfs(path) as fs:
        for name in [*names, "directory/file7"]:
            want, got = fs.get("/" + name), os.lstat(tmp_path / name)
            assert got.st_mtime == want.mtime.timestamp(), name
            assert got.st_atime == want.atime.timestamp(), name
            if not stat.S_ISLNK(want.mode):
                assert stat.S_IMODE(got.st_mode) == stat.S_IMODE(want.mode), name


def test_same_device_twice(cache_dir):
    path = image("vmfs/vmfs5", cache_dir)
    with pytest.raises(FormatError, match="given twice"):
        V.open_volume([FileSource(path), FileSource(path)])


# --- oracles --------------------------------------------------------------------------------

ORACLE_SETS = [["vmfs/vmfs5"], ["vmfs/vmfs6"], ["vmfs/vmfs5d"], ["vmfs/vmfs6l"],
               ["vmfs/vmfs5-no-dense-sbpc"], ["vmfs/span/vmfs6-span-1", "vmfs/span/vmfs6-span-0"],
               ["old/vmfs5"], ["old/vmfs6"]]


@pytest.mark.parametrize("names", ORACLE_SETS, ids=lambda n: "+".join(n))
def test_against_dissect(names, cache_dir):
    """Every name, type, size, symlink target and the bytes of every file below 300 MiB (system
    files included) agree with dissect.vmfs (AGPL, test-only oracle)."""
    paths = [image(n, cache_dir) for n in names]
    ours = V.open_volume([FileSource(p) for p in paths])
    with dissect_vmfs(*paths, lvm=ours.lvm is not None) as theirs:
        assert theirs.uuid == ours.fs.uuid and theirs.file_block_size == ours.fs.fbs
        checked = 0

        def walk(path, dfd):
            nonlocal checked
            entries = {k: e for k, e in dfd.listdir().items() if k not in (".", "..")}
            assert set(entries) == {e.name for e in ours.listdir(path)}, path
            for name, entry in entries.items():
                p = f"{path}/{name}".lstrip("/")
                fd = entry.file_descriptor
                st = ours.stat(p)
                assert st.size == fd.size and st.inode == fd.address, p
                checked += 1
                if fd.is_dir():
                    assert st.type is FileType.DIR
                    walk(p, fd)
                elif fd.is_symlink():
                    assert ours.readlink(p) == fd.link
                elif fd.is_rdm():
                    assert st.type is FileType.RDM
                elif fd.size < 300 * MiB:
                    assert ours.open(p).read(0, fd.size) == fd.open().read(), p

        walk("", theirs.root)
        assert checked >= 7


@pytest.mark.parametrize("gen", [5, 6])
def test_against_debugvmfs(gen, cache_dir):
    """debugvmfs (VMFS5) / debugvmfs6 list the same root and cat the same bytes of `big`
    (debugvmfs6 prints 'VMFS version: 6' on stdout first: skipped)."""
    tool = require_tool("debugvmfs6" if gen == 6 else "debugvmfs")
    path = str(image(f"vmfs/vmfs{gen}", cache_dir))
    out = subprocess.run([tool, path, "ls", "/"], capture_output=True, timeout=60).stdout
    listed = {n for n in out.decode().splitlines() if n and n not in (".", "..")}
    listed.discard("VMFS version: 6")
    v = _open([f"vmfs/vmfs{gen}"], cache_dir)
    assert listed == {e.name for e in v.listdir("")}
    data = subprocess.run([tool, path, "cat", "/big"], capture_output=True, timeout=60).stdout
    if data.startswith(b"VMFS version: 6\n"):
        data = data[len(b"VMFS version: 6\n"):]
    assert hashlib.md5(data).hexdigest() == MD5_BIG
    hb = subprocess.run([tool, path, "show_heartbeats"], capture_output=True, timeout=60).stdout
    assert HOST.encode() in hb


# --- damage ---------------------------------------------------------------------------------

def _fd_patch(v: V.VmfsVolume, path: str) -> tuple[int, V.Fd]:
    """Device offset of the FD of ``path`` (vmfs5 image: LV starts at device 0x1100000)."""
    fd, _ = v._lookup(path)
    return 0x1100000 + fd.lv_offset, fd


def test_bad_fs_magic(cache_dir):
    src = FileSource(image("vmfs/vmfs5", cache_dir))
    with pytest.raises(FormatError, match="file-system descriptor"):
        V.open_volume([Patched(src, {0x1100000 + F.FS_DESCRIPTOR_OFFSET: b"\1\2\3\4"})])


def test_truncated_volume(cache_dir):
    """An image cut short: the metadata near the start still opens, reading data that was cut
    off is a TruncatedError naming the device."""
    src = FileSource(image("vmfs/vmfs5", cache_dir))
    v = _open(["vmfs/vmfs5"], cache_dir)
    lv_at = next(r for r in v.fs._runs(v._lookup("bigger")[0], 0, MiB))[3]
    cut = Patched(src, {}, size=0x1100000 + lv_at + 4096)
    short = V.open_volume([cut])
    f = short.open("bigger")
    with pytest.raises(TruncatedError):
        f.read(0, 2 * MiB)
    assert short.open("small").read(0, 5) == b"tiny\n"


def test_pointer_past_end(cache_dir):
    src = FileSource(image("vmfs/vmfs5", cache_dir))
    v = _open(["vmfs/vmfs5"], cache_dir)
    at, fd = _fd_patch(v, "big")
    ptr = at + v.fs.layout.ptr_offset
    beyond = ((1 << 26) - 1) << 6 | F.AddrType.FB  # block 64 Mi: far past a 2 GiB volume
    bad = V.open_volume([Patched(src, {ptr: struct.pack("<I", beyond)})])
    with pytest.raises(FormatError, match="past the end"):
        bad.open("big").read(0, 10)
    with pytest.raises(FormatError, match="past the end"):
        list(bad.open("big").extents())


def test_pointer_block_bad_type(cache_dir):
    src = FileSource(image("vmfs/vmfs5", cache_dir))
    v = _open(["vmfs/vmfs5"], cache_dir)
    at, fd = _fd_patch(v, "normal-flat.vmdk")
    first = next(i for i, p in enumerate(fd.ptrs) if p)
    bad = V.open_volume([Patched(src, {at + v.fs.layout.ptr_offset + 4 * first:
                                       struct.pack("<I", 0x00000004)})])
    with pytest.raises(FormatError, match="cannot hold a pointer block"):
        list(bad.open("normal-flat.vmdk").extents())


def test_huge_length_stays_bounded(cache_dir):
    """A resident file or directory claiming huge sizes: errors, no big allocation."""
    src = FileSource(image("vmfs/vmfs5", cache_dir))
    v = _open(["vmfs/vmfs5"], cache_dir)
    at_small, _ = _fd_patch(v, "small")
    at_dir, _ = _fd_patch(v, "directory")
    length = v.fs.layout.meta_offset + 0x14
    bad = V.open_volume([Patched(src, {at_small + length: struct.pack("<Q", 1 << 40),
                                       at_dir + length: struct.pack("<Q", 1 << 40)})])
    tracemalloc.start()
    with pytest.raises(FormatError, match="resident"):
        bad.open("small").read(0, 1 << 40)
    with pytest.raises(LimitError):
        bad.listdir("directory")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 * MiB


def test_directory_cycle_and_deleted_entry(cache_dir):
    """A directory entry pointing back at the root: walk visits every directory once.
    A VMFS5 slot whose FD address was cleared is listed only with deleted=True."""
    src = FileSource(image("vmfs/vmfs5", cache_dir))
    v = _open(["vmfs/vmfs5"], cache_dir)
    dfd, _ = v._lookup("directory")
    raw = v.fs._read_file(dfd, 0, dfd.meta.length)
    slots = {F.name_str(F.DirEntry5.parse(raw[i:i + 140]).name): i
             for i in range(0, len(raw), 140)}
    lv_dir = next(r for r in v.fs._runs(dfd, 0, 1))[3]
    assert lv_dir is not None
    base = 0x1100000 + lv_dir
    patches = {
        base + slots["file7"] + 4: b"\0\0\0\0",  # deleted: FD address cleared, name kept
        base + slots["file8"]: struct.pack("<II", F.DescType.DIRECTORY, F.ROOT_DIR),  # loop
    }
    bad = V.open_volume([Patched(src, patches)])
    live = {e.name for e in bad.listdir("directory")}
    assert "file7" not in live and "file8" in live
    both = [e for e in bad.listdir("directory", deleted=True) if e.name == "file7"]
    assert len(both) == 1 and both[0].deleted and both[0].inode is None
    walked = [d for d, _ in bad.walk("")]
    assert len(walked) == len(set(walked)) < 10
    assert "directory" in walked


def _damage(cache_dir) -> dict[int, bytes]:
    """Patches (device offset -> bytes) for the ESXi VMFS5 image: `directory/file3` names a
    file descriptor that is not one, the folder `collision` has an unknown address layout."""
    v = _open(["vmfs/vmfs5"], cache_dir)
    dfd, _ = v._lookup("directory")
    raw = v.fs._read_file(dfd, 0, dfd.meta.length)
    slots = {F.name_str(F.DirEntry5.parse(raw[i:i + 140]).name): i
             for i in range(0, len(raw), 140)}
    base = 0x1100000 + next(r for r in v.fs._runs(dfd, 0, 1))[3]
    collision = v.stat("collision").extra["fd_offset"]
    return {base + slots["file3"] + 4: struct.pack("<I", v.stat("big").inode + 0x40),
            0x1100000 + collision + 0x200 + 0x44: struct.pack("<I", 0x4242)}


def test_lock_scan_goes_past_damage(cache_dir):
    """An entry naming a file descriptor that is not one, and a folder that cannot be read:
    ds info still lists the locks it can read, and names both as warnings."""
    src = FileSource(image("vmfs/vmfs5", cache_dir))
    bad = V.open_volume([Patched(src, _damage(cache_dir))])
    with pytest.raises(VmsiftError):
        bad.held_locks()
    info = bad.info()
    assert info.data["locks"] == [] and info.fields["locks held"] == 0
    assert any("lock of 'directory/file3'" in w for w in info.warnings), info.warnings
    assert any("folder 'collision' skipped" in w for w in info.warnings), info.warnings
    assert bad.info().warnings == info.warnings  # asking twice adds nothing


def test_extract_goes_past_damage(cache_dir, tmp_path):
    """`ds extract` of the whole damaged volume, with files capped at 1 GiB (RLIMIT_FSIZE) so
    the 69 GiB and 42 TiB thin disks cannot be written: those two, the bad entry and the bad
    folder are named, exit code 1, and everything else is extracted and intact."""
    img = tmp_path / "damaged.img"
    sparse_copy(image("vmfs/vmfs5", cache_dir), img)
    with open(img, "r+b") as f:
        for at, patch in _damage(cache_dir).items():
            f.seek(at)
            f.write(patch)
    out = tmp_path / "out"

    def cap_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (GiB, GiB))

    proc = subprocess.run([sys.executable, "-m", "vmsift", "ds", "extract", str(img), "", str(out)],
                          capture_output=True, text=True, timeout=300, preexec_fn=cap_file_size)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    failed = [line for line in proc.stderr.splitlines() if line.startswith("warning: not extr")]
    assert len(failed) == 4, proc.stderr
    for name in ("normal-flat.vmdk: write failed: File too large",
                 "large-flat.vmdk: write failed: File too large", "directory/file3: ",
                 "folder 'collision' skipped"):
        assert any(name in line for line in failed), name
    assert "4 not extracted" in proc.stderr.splitlines()[-1]
    root = out
    assert hashlib.md5((root / "big").read_bytes()).hexdigest() == MD5_BIG
    assert hashlib.md5((root / "bigger").read_bytes()).hexdigest() == MD5_BIGGER
    assert os.readlink(root / "symlink") == "/vmfs/volumes/vmfs5/small"
    listed = sorted(p.name for p in (root / "directory").iterdir())
    assert len(listed) == 99 and "file3" not in listed
    assert (root / "directory" / "file42").read_bytes() == b"File 42\n"
    assert not (root / "large-flat.vmdk").exists()  # no partial file is left


def test_bad_resource_header(cache_dir):
    src = FileSource(image("vmfs/vmfs6", cache_dir))
    v = _open(["vmfs/vmfs6"], cache_dir)
    fdc, _ = v.fs.resources["fdc"]
    lv = next(r for r in v.fs._runs(fdc, 0, 1))[3]
    bad = Patched(src, {0x1100000 + lv + 0x20: b"nope"})
    with pytest.raises(FormatError, match="rfmd"):
        V.open_volume([bad])


# --- fuzzing --------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_fuzz_metadata(cache_dir, data):
    """Random damage to the FS descriptor, heartbeats and first metadata of a real VMFS5 LV
    (no LVM): only vmsift errors escape, and they come quickly."""
    src = FileSource(image("old/vmfs5", cache_dir))
    lv0 = 0x1100000
    window = (lv0 + 0x200000, 0x300000)  # descriptor, heartbeats, start of .fdc.sf
    raw = src.read(*window)
    damaged = mutate(data, raw, hot=0x200, rounds=6)[:window[1]].ljust(window[1], b"\0")
    bad = Patched(src, {window[0]: damaged})
    try:
        v = V.open_volume([bad])
        v.info()
        for d, entries in v.walk(""):
            for e in entries[:20]:
                p = f"{d}/{e.name}".lstrip("/")
                st = v.stat(p)
                if e.type is FileType.FILE and st.size < 64 * MiB:
                    f = v.open(p)
                    list(f.extents())
                    f.read(0, min(st.size, MiB))
    except VmsiftError:
        pass


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=0, max_size=4096), st.integers(0, 3))
def test_fuzz_random_bytes(blob, where):
    """Random bytes where an LVM header or FS descriptor is looked for."""
    offsets = [L.HEADER_OFFSET, F.FS_DESCRIPTOR_OFFSET, 0, L.HEADER_OFFSET - 8]
    img = bytearray(4 * MiB)
    at = offsets[where]
    img[at:at + len(blob)] = blob
    if where == 0:
        img[L.HEADER_OFFSET:L.HEADER_OFFSET + 4] = struct.pack("<I", L.MAGIC)
    if where == 1:
        img[F.FS_DESCRIPTOR_OFFSET:F.FS_DESCRIPTOR_OFFSET + 4] = struct.pack("<I", F.MAGIC_VMFS)
    src = BytesSource(bytes(img), "fuzz.img")
    V.probe(src)
    try:
        v = V.open_volume([src])
        v.info()
        v.listdir("")
    except VmsiftError:
        pass
