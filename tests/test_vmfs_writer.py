"""The VMFS5 fixture writer (tests/fixtures/vmfs_writer.py): independent readers (dissect.vmfs,
debugvmfs) accept its images, and vmsift reads everything back, locks and heartbeats included."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from tests.fixtures import vmfs_writer as W
from tests.helpers import missing, require_tool
from vmsift.datastore import vmfs as V
from vmsift.datastore.detect import open_datastore
from vmsift.datastore.disk import open_disk
from vmsift.datastore.vm import find_vms
from vmsift.datastore.volume import FileType
from vmsift.source import Alloc

MIB = 1 << 20


def _md5_source(src, size: int) -> str:
    h = hashlib.md5()
    for off in range(0, size, 16 * MIB):
        h.update(src.read(off, min(16 * MIB, size - off)))
    return h.hexdigest()


@pytest.fixture(scope="module")
def built(cache_dir):
    for tool in ("qemu-img", "qemu-io"):
        require_tool(tool)
    path = W.build_image(cache_dir, "vm")
    spec = W.spec_for("vm", cache_dir)
    return path, spec


@pytest.fixture(scope="module")
def vol(built):
    v = open_datastore([str(built[0])])
    yield v
    v.close()


def _files(spec) -> dict[str, W.File]:
    return {i.path: i for i in spec.items if isinstance(i, W.File)}


CHECKED = ["data/resident.txt", "data/medium.bin", "data/gappy.bin", "frag.bin",
           "locked-excl.vmdk", "vm1/vm1.vmx", "vm1/vm1.vmdk", "vm1/vm1-000001.vmdk",
           "bigdir/f00000", "bigdir/f09999"]


# --- vmsift ------------------------------------------------------------------------------------

def test_vmsift_reads_every_file(built, vol):
    _, spec = built
    assert isinstance(vol, V.VmfsVolume)
    files = _files(spec)
    for path in CHECKED:
        f = files[path]
        st = vol.stat(path)
        assert st.type is FileType.FILE and st.size == f.length(), path
        assert _md5_source(vol.open(path), st.size) == f.md5(), path
    thin, f = vol.open("thin-flat.vmdk"), files["thin-flat.vmdk"]
    assert thin.size == 20 << 30
    for block in (0, 7, 8, 9, 20000, 20479):
        assert thin.read(block * MIB, MIB) == f.read_block(block), block
    # the template's own files are untouched
    assert vol.open("small").read(0, 5) == b"tiny\n"


def test_vmsift_directories(built, vol):
    names = {e.name: e.type for e in vol.listdir("")}
    for n, t in {"data": FileType.DIR, "bigdir": FileType.DIR, "vm1": FileType.DIR,
                 "frag.bin": FileType.FILE, "relative-link": FileType.SYMLINK,
                 "big": FileType.FILE, "directory": FileType.DIR}.items():
        assert names[n] is t, n
    big = vol.listdir("bigdir")
    assert len(big) == 10_000
    assert [e.name for e in big[:2]] == ["f00000", "f00001"] and big[-1].name == "f09999"
    assert vol.open("bigdir/f04321").read(0, 10) == b"4321\n"
    assert vol.stat("bigdir").size == 140 * 10_002
    data = vol.listdir("data")
    assert [e.name for e in data] == ["gappy.bin", "link", "medium.bin", "resident.txt"]
    deleted = [e for e in vol.listdir("data", deleted=True) if e.deleted]
    assert [e.name for e in deleted] == ["was-deleted.txt"]
    assert vol.readlink("data/link") == "/vmfs/volumes/vmfs5/data/resident.txt"
    assert vol.readlink("relative-link") == "data/medium.bin"
    assert vol.stat("relative-link").symlink_target == "data/medium.bin"


def test_vmsift_layouts_and_extents(vol):
    ex = vol.stat("data/resident.txt").extra
    assert ex["zla"] == "resident"
    frag = vol.stat("frag.bin").extra
    assert frag["zla"] == "pointer_block" and frag["pointer_blocks"] == 1
    assert frag["num_blocks"] == 1024
    # the blocks are scattered: LV offsets of consecutive file blocks are not in order
    fs = vol.fs
    fd = fs.fd(int(frag["fd_address"], 16))
    lvs = [lv for _, _, kind, lv in fs._runs(fd, 0, 1 << 30) if kind is Alloc.DATA]
    assert len(lvs) >= 512 and lvs != sorted(lvs)
    thin = vol.open("thin-flat.vmdk")
    runs = [(r.offset // MIB, r.length // MIB, r.kind) for r in thin.extents()]
    assert (0, 1, Alloc.DATA) in runs and (7, 1, Alloc.DATA) in runs
    assert (9, 1, Alloc.ZERO) in runs and (20000, 1, Alloc.DATA) in runs
    assert sum(n for _, n, k in runs if k is Alloc.HOLE) == 20 * 1024 - 4
    st = vol.stat("thin-flat.vmdk").extra
    assert st["tbz_blocks"] == 1 and st["num_blocks"] == 4
    assert vol.stat("data/gappy.bin").extra["zla"] == "file_block"


def test_vmsift_heartbeats_and_locks(vol):
    info = vol.info()
    hbs = {h["slot"]: h for h in info.data["heartbeats"]}
    assert hbs[0]["state"] == "live" and hbs[0]["ip"] == "192.0.2.10"
    assert hbs[0]["host_uuid"] == W.HOST_A.uuid_str and hbs[0]["generation"] == 7
    assert hbs[1]["state"] == "free" and hbs[1]["ip"] == "192.0.2.11"
    assert hbs[2]["state"] == "live" and hbs[2]["ip"] == "192.0.2.12"
    assert hbs[528]["ip"] == "10.0.0.229"  # the template's host is kept
    assert info.fields["live hosts"] == 3

    lk = vol.stat("locked-excl.vmdk").extra["lock"]
    assert lk["held"] and lk["live"] and lk["mode"] == "exclusive"
    assert lk["heartbeat_ip"] == "192.0.2.10" and lk["owner"] == W.HOST_A.uuid_str
    stale = vol.stat("locked-stale.vmdk").extra["lock"]
    assert stale["held"] and not stale["live"] and stale["heartbeat_ip"] == "192.0.2.11"
    multi = vol.stat("locked-multi.vmdk").extra["lock"]
    assert multi["mode"] == "multi-writer"
    assert [h["host_uuid"] for h in multi["holders"]] == [W.HOST_A.uuid_str, W.HOST_C.uuid_str]
    free = vol.stat("data/medium.bin").extra["lock"]
    assert not free["held"] and free["mode"] == "free"
    assert vol.stat("vm1/vm1.vmdk").extra["lock"]["mode"] == "read-only"


def test_vm_folder(built, vol, tmp_path):
    _, spec = built
    vms = list(find_vms(vol))
    vm = next(v for v in vms if v.config == "vm1/vm1.vmx")
    assert vm.name == "vm1"
    assert len(vm.disks) == 1
    assert vm.disks[0].chain == ["vm1/vm1-000001.vmdk", "vm1/vm1.vmdk"]
    assert vm.disks[0].capacity == 64 * MIB
    assert [s["display_name"] for s in vm.snapshots] == ["before update"]
    assert vm.snapshots[0]["disks"][0]["filename"] == "vm1.vmdk"
    # the disk read through the volume equals qemu-img's reading of the same files
    work = Path(spec_work(built))
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-f", "vmdk", "-O", "raw",
                    str(work / "vm1-000001.vmdk"), str(raw)], check=True)
    disk = open_disk(vol, "vm1/vm1-000001.vmdk")
    assert disk.size == raw.stat().st_size == 64 * MIB
    assert _md5_source(disk, disk.size) == hashlib.md5(raw.read_bytes()).hexdigest()
    assert disk.read(512 * 1024, 4) == b"\x33" * 4 and disk.read(0, 4) == b"\x11" * 4
    assert disk.read(8 * MIB, 4) == b"\x22" * 4 and disk.read(60 * MIB, 4) == b"\x44" * 4


def spec_work(built) -> Path:
    return built[0].parent / "work"


def _data_digest(path: Path) -> str:
    """sha256 over the data regions of a sparse file."""
    import os
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as fh:
        pos = 0
        while pos < size:
            try:
                data = os.lseek(fh.fileno(), pos, os.SEEK_DATA)
            except OSError:
                break
            hole = os.lseek(fh.fileno(), data, os.SEEK_HOLE)
            fh.seek(data)
            h.update(data.to_bytes(8, "little") + fh.read(hole - data))
            pos = hole
    return h.hexdigest()


def test_writer_is_deterministic(cache_dir, tmp_path):
    """Writing the basic spec twice gives the same bytes, and the allocation bitmaps say the
    new objects are in use."""
    src = W.image("vmfs/vmfs5", cache_dir)
    digests = []
    for name in ("one", "two"):
        out = tmp_path / f"{name}.img"
        W._sparse_copy(src, out)
        with open(out, "r+b") as fh:
            W.Writer(fh).apply(W.spec_basic())
        digests.append(_data_digest(out))
        if name == "one":
            with open(out, "rb") as fh:
                fdc = W._ResourceFile(W._Image(fh), W.SYSFILES["fdc"])
                free_after = len(fdc.free_list(5))
            with open(src, "rb") as fh:
                fdc0 = W._ResourceFile(W._Image(fh), W.SYSFILES["fdc"])
                free_before = len(fdc0.free_list(5))
            spec = W.spec_basic()
            assert free_before - free_after == sum(
                not isinstance(i, W.DeletedEntry) for i in spec.items)
        out.unlink()
    assert digests[0] == digests[1]


# --- independent readers -------------------------------------------------------------------------

def test_dissect_agrees(built):
    try:
        from dissect.vmfs import lvm as dlvm, vmfs as dvmfs
    except ImportError:
        missing("dissect.vmfs (pip install dissect.vmfs)")
    path, spec = built
    files = _files(spec)
    with open(path, "rb") as fh:
        fs = dvmfs.VMFS(dlvm.LVM(fh).volumes[0].open())
        for p in CHECKED:
            fd = fs.get("/" + p)
            assert fd.size == files[p].length(), p
            h = hashlib.md5()
            stream = fd.open()
            while chunk := stream.read(16 * MIB):
                h.update(chunk)
            assert h.hexdigest() == files[p].md5(), p
        assert len([n for n in fs.get("/bigdir").listdir() if n not in (".", "..")]) == 10_000
        assert fs.get("/data/link").link == "/vmfs/volumes/vmfs5/data/resident.txt"
        assert sorted(n for n in fs.get("/data").listdir() if n not in (".", "..")) == \
            ["gappy.bin", "link", "medium.bin", "resident.txt"]
        lock = fs.get("/locked-excl.vmdk").lock_info
        assert lock.mode == 1 and lock.hbAddr.offset == W.HOST_A.offset


def _debugvmfs(path: Path, *args: str, check: bool = True) -> bytes:
    return subprocess.run([require_tool("debugvmfs"), str(path), *args], check=check,
                          capture_output=True, timeout=300).stdout


def test_debugvmfs_agrees(built):
    path, spec = built
    files = _files(spec)
    for p in ("data/medium.bin", "data/gappy.bin", "frag.bin", "vm1/vm1-000001.vmdk",
              "data/resident.txt"):
        assert hashlib.md5(_debugvmfs(path, "cat", "/" + p)).hexdigest() == files[p].md5(), p
    listing = _debugvmfs(path, "ls", "-l", "/data").decode()
    assert "3158073" in listing and "medium.bin" in listing and "was-deleted" not in listing
    assert len(_debugvmfs(path, "ls", "/bigdir").split()) == 10_002
    hbs = _debugvmfs(path, "show_heartbeats", check=False).decode()  # exits 3 even on success
    assert "Heartbeat ID 0x300000" in hbs and W.HOST_A.uuid_str in hbs
