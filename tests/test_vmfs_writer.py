"""The VMFS5 fixture writer (tests/fixtures/vmfs_writer.py): independent readers (dissect.vmfs,
debugvmfs) accept its images, and vmsift reads everything back, locks and heartbeats included."""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
from pathlib import Path

import pytest

from tests.fixtures import vmfs_writer as W
from tests.helpers import dissect_vmfs, require_tool, sparse_copy, stored_digest, vmsift
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


DATA_NAMES = ["gappy.bin", "link", "medium.bin", "resident.txt", "sub-1025.bin", "sub-5000.bin",
              "sub-8192.bin", "sub-multi.bin"]
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
    assert [e.name for e in data] == DATA_NAMES
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


def test_vmsift_heartbeats_and_locks(built, vol):
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

    # ds info: every held lock of the volume (10,000-entry folder included), and only those
    written = {i.path: i.lock for i in built[1].items
               if isinstance(i, W.File) and i.lock is not None}
    held = {lk["path"]: lk for lk in info.data["locks"]}
    assert sorted(held) == sorted(written) and len(written) == 6
    for path, lock in written.items():
        assert held[path]["mode_value"] == lock.mode and held[path]["owner"] == lock.host.uuid_str
        assert held[path]["live"] == lock.host.live, path
    rows = next(t for t in info.tables if t.title == "locks held").rows
    assert [r[0] for r in rows] == sorted(written) and info.fields["locks held"] == 6
    multi_row = next(r for r in rows if r[0] == "locked-multi.vmdk")
    assert multi_row[2] == f"{W.HOST_A.uuid_str}, {W.HOST_C.uuid_str}"


def test_cli_stat_text(built):
    """`ds stat` for people: permissions as in ls, UTC times, the lock and its holders."""
    run = lambda p: vmsift("ds", "stat", built[0], p).stdout  # noqa: E731
    when = dt.datetime.fromtimestamp(W.MTIME, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = run("locked-multi.vmdk").splitlines()
    assert "mode             0644 (rw-r--r--)" in lines
    assert f"mtime            {when}" in lines
    holders = [i for i, line in enumerate(lines) if line.startswith("  holders[")]
    assert len(holders) == 2 and lines[holders[1] + 3].split() == ["host_uuid",
                                                                   W.HOST_C.uuid_str]
    assert "  mode                  multi-writer" in lines
    assert "  held                  yes" in lines
    assert "mode             0777 (rwxrwxrwx)" in run("data/link").splitlines()


def test_folder_cache_budget(built, monkeypatch):
    """With a budget of 5,000 cached entries, the 10,000-entry folder is dropped as soon as
    another folder is read, and reads the same when read again."""
    from vmsift import cache as cache_mod
    monkeypatch.setattr(cache_mod, "CACHED_DIR_ENTRIES", 5000)
    with open_datastore([str(built[0])]) as v:
        first = v.listdir("bigdir")
        assert len(first) == 10_000 and v.stat("bigdir/f04242").size > 0
        v.listdir("data")
        v.listdir("vm1")
        assert v.fs._dirs.total <= 5000 and v.fs._names.total <= 5000
        assert v.listdir("bigdir") == first


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


def test_writer_is_deterministic(cache_dir, tmp_path):
    """Writing the basic spec twice gives the same bytes, and the allocation bitmaps say the
    new objects are in use."""
    src = W.image("vmfs/vmfs5", cache_dir)
    digests = []
    for name in ("one", "two"):
        out = tmp_path / f"{name}.img"
        sparse_copy(src, out)
        with open(out, "r+b") as fh:
            W.Writer(fh).apply(W.spec_basic())
        digests.append(stored_digest(out))
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
    path, spec = built
    files = _files(spec)
    with dissect_vmfs(path) as fs:
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
        assert sorted(n for n in fs.get("/data").listdir() if n not in (".", "..")) == DATA_NAMES
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


# --- sub-block and double-indirect files (VMFS5) -----------------------------------------------

SUB_FILES = {"data/sub-1025.bin": 1, "data/sub-5000.bin": 1, "data/sub-8192.bin": 1,
             "data/sub-multi.bin": 3}  # path -> sub-blocks
HUGE = "huge-flat.vmdk"
# reads that cross second-level PB boundaries (every GiB), TBZ, whole-PB holes, the 256 GiB
# reach of single indirection and the end of the file
HUGE_READS = [(MIB - 7, 14), (1023 * MIB + 5, 3 * MIB), (1024 * MIB - 100, 200),
              (2048 * MIB - 4096, 8192), (3 * 1024 * MIB - 10, 20), (5120 * MIB - 300, 600),
              (262143 * MIB + 1000, MIB), ((300 << 30) - MIB - 5, MIB + 5),
              (1026 * MIB - 1, MIB + 2), (150 * 1024 * MIB, MIB)]


def _huge_layout() -> tuple[set[int], set[int], int]:
    """(data blocks, TBZ blocks, pointer blocks) the writer lays out for the huge file."""
    data, tbz = set(W.HUGE_DATA), set(W.HUGE_TBZ)
    gibs = {b // 1024 for b in data | tbz}
    return data, tbz, 1 + len(gibs)  # one first-level PB + one PB per GiB with a block


def _huge_data_md5(read) -> str:
    """md5 over the data blocks in file order (each 1 MiB), read with ``read(offset, n)``."""
    h = hashlib.md5()
    for b in W.HUGE_DATA:
        h.update(read(b * MIB, MIB))
    return h.hexdigest()


def _spec_huge_md5(f: W.File) -> str:
    h = hashlib.md5()
    for b in W.HUGE_DATA:
        h.update(f.read_block(b))
    return h.hexdigest()


def test_vmsift_sub_block_files(built, vol):
    _, spec = built
    files = _files(spec)
    for path, nsb in SUB_FILES.items():
        f = files[path]
        assert f.layout() == "sub_block"
        st = vol.stat(path)
        ex = st.extra
        assert (ex["zla"], ex["block_size"], ex["num_blocks"]) == ("sub_block", 8192, nsb), path
        assert st.size == f.length() and st.allocated == nsb * 8192, path
        src = vol.open(path)
        assert hashlib.md5(src.read(0, st.size)).hexdigest() == f.md5(), path
        assert [(r.offset, r.length, r.kind) for r in src.extents()] == [(0, st.size, Alloc.DATA)]
    # reads across sub-block boundaries of the three-sub-block file
    multi, f = vol.open("data/sub-multi.bin"), files["data/sub-multi.bin"]
    for off, n in ((8192 - 3, 6), (16384 - 1000, 2000), (100, 20000)):
        assert multi.read(off, n) == f.data[off:off + n], off
    # the three sub-blocks are separate resources of .sbc.sf (not one run on the LV)
    fd = vol.fs.fd(int(vol.stat("data/sub-multi.bin").extra["fd_address"], 16))
    assert [p & 7 for p in fd.ptrs[:4]] == [2, 2, 2, 0]


def test_vmsift_double_indirect(built, vol):
    _, spec = built
    f = _files(spec)[HUGE]
    assert f.layout() == "double_indirect"
    data, tbz, npb = _huge_layout()
    st = vol.stat(HUGE)
    ex = st.extra
    assert st.size == 300 << 30 and ex["zla"] == "double_indirect"
    assert (ex["num_blocks"], ex["tbz_blocks"], ex["pointer_blocks"]) == (len(data) + len(tbz),
                                                                          len(tbz), npb)
    # the pointer tree: FD entry 0 -> first-level PB -> one PB per GiB; empty GiBs stay 0
    fd = vol.fs.fd(int(ex["fd_address"], 16))
    assert fd.ptrs[0] & 7 == 3 and not any(fd.ptrs[1:])
    top = vol.fs._pointer_block(fd.ptrs[0])
    assert all(top[g] & 7 == 3 for g in {b // 1024 for b in data | tbz})
    assert all(top[g] == 0 for g in W.HUGE_HOLE_GIBS) and not any(top[300:])
    # the allocation map from metadata: DATA / ZERO (TBZ) / HOLE blocks exactly as written
    src = vol.open(HUGE)
    kinds: dict[Alloc, set[int]] = {Alloc.DATA: set(), Alloc.ZERO: set(), Alloc.HOLE: set()}
    total = 0
    for r in src.extents():
        assert r.offset % MIB == 0 and r.length % MIB == 0
        total += r.length
        if r.kind is not Alloc.HOLE:
            kinds[r.kind] |= set(range(r.offset // MIB, (r.offset + r.length) // MIB))
    assert total == st.size
    assert kinds[Alloc.DATA] == data and kinds[Alloc.ZERO] == tbz
    for off, n in HUGE_READS:
        assert src.read(off, n) == f.read_range(off, n), off
    assert _huge_data_md5(src.read) == _spec_huge_md5(f)


def test_dissect_reads_new_layouts(built):
    path, spec = built
    files = _files(spec)
    with dissect_vmfs(path) as fs:
        from dissect.vmfs.c_vmfs import FS3_ZeroLevelAddrType as Z
        for p, nsb in SUB_FILES.items():
            fd = fs.get("/" + p)
            assert fd.zla == Z.SUB_BLOCK and fd.block_size == 8192, p
            assert fd.metadata.numBlocks == nsb and fd.size == files[p].length(), p
            assert hashlib.md5(fd.open().read()).hexdigest() == files[p].md5(), p
        fd, f = fs.get("/" + HUGE), files[HUGE]
        assert fd.zla == Z.POINTER_BLOCK_DOUBLE and fd.size == 300 << 30
        stream = fd.open()

        def read(off: int, n: int) -> bytes:
            stream.seek(off)
            return stream.read(n)

        assert _huge_data_md5(read) == _spec_huge_md5(f)
        for off, n in HUGE_READS:
            assert read(off, n) == f.read_range(off, n), off
        for g in range(300):  # one probe in every GiB (second-level PB or hole)
            off = (g * 1024 + 512) * MIB
            assert read(off, 4096) == f.read_range(off, 4096), g


def test_debugvmfs_sub_block_files(built):
    path, spec = built
    files = _files(spec)
    for p in SUB_FILES:
        assert hashlib.md5(_debugvmfs(path, "cat", "/" + p)).hexdigest() == files[p].md5(), p
    assert "24476" in _debugvmfs(path, "ls", "-l", "/data").decode()


def test_debugvmfs_double_indirect_gap(built, cache_dir):
    """debugvmfs (vmfs-tools 0.2.5) has no double indirection: it walks ZLA 4304 like ZLA 3,
    taking the first-level PB's entries for data blocks. Holes there read as zeros and the
    first PB address stops it with "unknown block type 0x03". Same on the ESXi-made
    large-flat.vmdk (117 MiB of zeros, then the error) as on the writer's file (whose first
    entry is a PB: no data at all). So debugvmfs is no oracle for this layout (dissect is)."""
    path, _ = built
    tool = require_tool("debugvmfs")
    ours = subprocess.run([tool, str(path), "cat", "/" + HUGE], capture_output=True,
                          timeout=120)
    assert ours.stdout == b"" and b"unknown block type 0x03" in ours.stderr
    esxi = subprocess.run([tool, str(W.image("vmfs/vmfs5", cache_dir)), "cat",
                           "/large-flat.vmdk"], capture_output=True, timeout=120)
    assert len(esxi.stdout) == 117 * MIB and not esxi.stdout.strip(b"\0")
    assert b"unknown block type 0x03" in esxi.stderr


# --- VMFS6: heartbeats and locks -----------------------------------------------------------------

@pytest.fixture(scope="module")
def vmfs6_locked(cache_dir):
    return W.build_vmfs6_locked(cache_dir)


def test_vmfs6_vmsift_heartbeats_and_locks(vmfs6_locked):
    with open_datastore([str(vmfs6_locked)]) as v:
        info = v.info()
        assert info.data["fs"]["version"] == "VMFS-6.82"
        hbs = {h["slot"]: h for h in info.data["heartbeats"]}
        assert sorted(hbs) == [1, 2, 64]
        b, c, t = hbs[1], hbs[2], hbs[64]
        assert (b["state"], b["ip"], b["host_uuid"], b["generation"], b["offset"]) == (
            "live", "192.0.2.21", W.HOST6_B.uuid_str, 11, 0x301000)
        assert (c["state"], c["ip"], c["host_uuid"], c["offset"]) == (
            "free", "192.0.2.22", W.HOST6_C.uuid_str, 0x302000)
        assert b["version"] == c["version"] == "24.82" and b["uptime_us"] == 456_000_000
        assert t["state"] == "live" and t["ip"] == "10.0.0.229"  # the template's host is kept
        assert info.fields["live hosts"] == 2
        table = next(tb for tb in info.tables if tb.title == "heartbeats")
        hb_rows = {r[0]: r for r in table.rows}
        assert hb_rows[1][3] == "192.0.2.21" and hb_rows[2][1] == "free"

        excl = v.stat("bigger").extra["lock"]
        assert excl["held"] and excl["live"] and excl["mode"] == "exclusive"
        assert excl["owner"] == W.HOST6_B.uuid_str and excl["heartbeat_ip"] == "192.0.2.21"
        assert excl["offset"] == W.VMFS6_FDS["bigger"][1] == v.stat("bigger").extra["fd_offset"]
        multi = v.stat("big").extra["lock"]
        assert multi["mode"] == "multi-writer" and multi["live"]
        assert [h["host_uuid"] for h in multi["holders"]] == [W.HOST6_B.uuid_str,
                                                              W.HOST6_T.uuid_str]
        assert [h["heartbeat_offset"] for h in multi["holders"]] == [0x301000, 0x340000]
        stale = v.stat("small").extra["lock"]
        assert stale["held"] and not stale["live"] and stale["heartbeat_ip"] == "192.0.2.22"
        free = v.stat("normal.vmdk").extra["lock"]
        assert not free["held"] and free["mode"] == "free"
        # the data is untouched
        assert v.open("small").read(0, 5) == b"tiny\n"
        assert _md5_source(v.open("bigger"), 128 * MIB) == "12ef08c26a69dc12545d4906cf57d004"


def _uuid(u) -> str:
    return f"{u.timeLo:08x}-{u.timeHi:08x}-{u.rand:04x}-{bytes(u.macAddr).hex()}"


def test_vmfs6_dissect_heartbeats_and_locks(vmfs6_locked):
    """dissect.vmfs has no heartbeat API: its FS3_Heartbeat cstruct is applied to the LV it
    assembles; locks come from its FileDescriptor.lock_info (FS3_DiskLock)."""
    with dissect_vmfs(vmfs6_locked) as fs:
        from dissect.vmfs.c_vmfs import c_vmfs
        lv = fs.fh
        assert fs.is_vmfs6 and fs.md_alignment == 4096
        for host in (W.HOST6_B, W.HOST6_C):
            lv.seek(0x300000 + host.slot * fs.md_alignment)
            hb = c_vmfs.FS3_Heartbeat(lv.read(4096))
            assert hb.state == (0xABCDEF02 if host.live else 0xABCDEF01)
            assert hb.addr.offset == host.offset and hb.hbGen.gen == host.generation
            assert _uuid(hb.owner) == host.uuid_str
            assert bytes(hb.ip).rstrip(b"\0").decode() == host.ip
            assert (hb.driveX, hb.driveY) == (24, 82)
        for path, lock in W.VMFS6_LOCKS.items():
            li = fs.get("/" + path).lock_info
            assert li.addr.offset == W.VMFS6_FDS[path][1], path
            assert fs.get("/" + path).address == W.VMFS6_FDS[path][0], path
            assert li.mode == lock.mode and li.hbAddr.offset == lock.host.offset, path
            assert li.hbGen.gen == lock.host.generation and _uuid(li.owner) == lock.host.uuid_str
            assert li.numHolders == len(lock.holders), path
            assert [h.hbAddr.offset for h in li.holders[:li.numHolders]] == [
                h.offset for h in lock.holders]
        # every file and folder dissect reaches: its held locks are exactly vmsift's `ds info` list
        held, todo = {}, [""]
        while todo:
            folder = todo.pop()
            for entry in fs.get("/" + folder).iterdir():
                if entry.name in (".", ".."):
                    continue
                path, fd = f"{folder}/{entry.name}".lstrip("/"), entry.file_descriptor
                li = fd.lock_info
                if li.hbAddr.offset and li.mode:
                    held[path] = (li.mode, _uuid(li.owner))
                if fd.is_dir():
                    todo.append(path)
        with open_datastore([str(vmfs6_locked)]) as v:
            ours = {lk["path"]: (lk["mode_value"], lk["owner"]) for lk in v.info().data["locks"]}
        assert ours == held and sorted(held) == sorted(W.VMFS6_LOCKS)
        h = hashlib.md5()
        stream = fs.get("/bigger").open()
        while chunk := stream.read(16 * MIB):
            h.update(chunk)
        assert h.hexdigest() == "12ef08c26a69dc12545d4906cf57d004"


def test_vmfs6_debugvmfs6_heartbeats(vmfs6_locked):
    """debugvmfs6 lists the live slots only (exits 1 even then, as on the template)."""
    out = subprocess.run([require_tool("debugvmfs6"), str(vmfs6_locked), "show_heartbeats"],
                         capture_output=True, timeout=120).stdout.decode()
    blocks = {b.split(":")[0].split()[-1]: b for b in out.split("Heartbeat ID ")[1:]}
    assert sorted(blocks) == ["0x301000", "0x340000"]
    assert W.HOST6_B.uuid_str in blocks["0x301000"] and "0x0000000b" in blocks["0x301000"]
    assert W.HOST6_C.uuid_str not in out  # the stale host is not shown


# --- VMFS6: a file in large file blocks (LFBs) ---------------------------------------------------

LFB = W.LFB
# reads across LFB boundaries (data -> TBZ -> data -> hole), inside the stale TBZ LFB, at the EOF
LFB_READS = [(0, 4096), (300 * MIB + 10, 100), (LFB - 100, 200), (LFB + 200 * MIB, 4096),
             (2 * LFB - 7, 14), (2 * LFB + 123 * MIB, 4000), (3 * LFB - 10, 20),
             (W.LFB_SIZE - 50, 100)]


@pytest.fixture(scope="module")
def vmfs6_lfb(cache_dir):
    return W.build_vmfs6_lfb(cache_dir)


def test_vmfs6_lfb_vmsift(vmfs6_lfb):
    from vmsift.formats.vmfs import fs as F
    with open_datastore([str(vmfs6_lfb)]) as v:
        info = v.info()
        assert info.data["fs"]["capacity"] == 7 * LFB and info.data["fs"]["large_block_size"] == LFB
        assert info.data["lvm"]["size"] == 7 * LFB
        fbb = next(r for r in info.data["resources"] if r["kind"] == "fbb")
        assert (fbb["num_resources"], fbb["resource_size"]) == (7, 8192)
        st = v.stat(W.LFB_PATH)
        ex = st.extra
        assert st.size == W.LFB_SIZE and st.allocated == 3 * LFB
        assert (ex["zla"], ex["block_size"], ex["large_file_blocks"]) == ("file_block", LFB, 3)
        assert (ex["num_blocks"], ex["tbz_blocks"], ex["pointer_blocks"]) == (3, 1, 0)
        fd = v.fs.fd(int(ex["fd_address"], 16))
        assert fd.shift == 29 and fd.ptrs[:5] == (W.lfb_addr(4), W.lfb_addr(5, 0xFF),
                                                  W.lfb_addr(6), 0, 0)
        assert [F.lfb_parts(p) for p in fd.ptrs[:3]] == [(4, 0), (5, 0xFF), (6, 0)]
        src = v.open(W.LFB_PATH)
        assert [(r.offset, r.length, r.kind) for r in src.extents()] == [
            (0, LFB, Alloc.DATA), (LFB, LFB, Alloc.ZERO), (2 * LFB, LFB, Alloc.DATA),
            (3 * LFB, W.LFB_SIZE - 3 * LFB, Alloc.HOLE)]
        # where each LFB lies on the LV: block number x 512 MiB
        runs = [(o, n, lv) for o, n, k, lv in v.fs._runs(fd, 0, W.LFB_SIZE) if k is Alloc.DATA]
        assert runs == [(0, LFB, 4 * LFB), (2 * LFB, LFB, 6 * LFB)]
        for off, n in LFB_READS:
            assert src.read(off, n) == W.lfb_read(off, n), off
        assert _md5_source(src, W.LFB_SIZE) == W.lfb_md5()
        # the template's other files are untouched
        assert _md5_source(v.open("bigger"), 128 * MIB) == "12ef08c26a69dc12545d4906cf57d004"
        assert v.open("directory/file41").read(0, 100) == b"File 41\n"


def test_vmfs6_lfb_dissect(vmfs6_lfb):
    with dissect_vmfs(vmfs6_lfb) as fs:
        from dissect.vmfs.address import LargeFileBlockAddr
        from dissect.vmfs.c_vmfs import FS3_ZeroLevelAddrType as Z
        assert fs.resources.LFB.metadata.numResourcesLo == 7
        fd = fs.get("/" + W.LFB_PATH)
        assert (fd.zla, fd.block_size, fd.size) == (Z.FILE_BLOCK, LFB, W.LFB_SIZE)
        assert (fd.metadata.numLFB, fd.metadata.numBlocks, fd.metadata.numTBZBlocksLo) == (3, 3, 1)
        addrs = [LargeFileBlockAddr(b) for b in fd.blocks[:3]]
        assert [(a.block, a.tbz) for a in addrs] == [(4, 0), (5, 0xFF), (6, 0)]
        assert fs.resources.LFB.resolve_address(fd.blocks[2]) == 6 * LFB
        stream = fd.open()
        # dissect reads whole 512 MiB blocks (its stream aligns to the file's block size): a
        # few probes in file order, not a full md5
        for off, n in LFB_READS:
            stream.seek(off)
            assert stream.read(n) == W.lfb_read(off, n), off
        for slot, off, n in W.LFB_PIECES:
            stream.seek(slot * LFB + off)
            assert stream.read(n) == W.lfb_piece(slot, off, n), (slot, off)


def _debugvmfs6_expected(offset: int, length: int) -> bytes:
    """What debugvmfs6 returns: the file, except the to-be-zeroed LFB shows its stale bytes."""
    out = bytearray(W.lfb_read(offset, length))
    for block, off, n in W.LFB_STALE:
        lo = LFB + off  # LFB 5 is the file's second slot
        a, b = max(lo, offset), min(lo + n, offset + len(out))
        if a < b:
            stale = b"STALE!" * (n // 6) + b"S" * (n % 6)
            out[a - offset:b - offset] = stale[a - lo:b - lo]
    return bytes(out)


def test_vmfs6_lfb_debugvmfs6(vmfs6_lfb):
    """debugvmfs6 (vmfs6-tools 0.2.1) reads LFBs at block x 512 MiB like vmsift and dissect,
    but takes the to-be-zeroed flag from address bit 5 (the VMFS5 position; its header says
    the file-block layout was "not actually updated for vmfs6"), where VMFS6 has the COW bit
    and the TBZ bitmap is bits 7-14 (dissect, from ESXi's own address printer). So it returns
    the stale bytes of the TBZ LFB; everything else agrees byte for byte."""
    tool = require_tool("debugvmfs6")
    listing = subprocess.run([tool, str(vmfs6_lfb), "ls", "-l", "/directory"], check=True,
                             capture_output=True, timeout=120).stdout.decode()
    assert next(ln for ln in listing.splitlines() if ln.endswith(" file42")).split()[4] == str(
        W.LFB_SIZE)
    lvm = subprocess.run([tool, str(vmfs6_lfb), "show", "lvm"], capture_output=True,
                         timeout=120).stdout.decode()
    assert "Size: 3.50 GiB" in lvm
    proc = subprocess.Popen([tool, str(vmfs6_lfb), "cat", "/" + W.LFB_PATH],
                            stdout=subprocess.PIPE)
    assert proc.stdout.read(16) == b"VMFS version: 6\n"
    off = 0
    while chunk := proc.stdout.read(64 * MIB):  # byte for byte, 64 MiB at a time
        assert chunk == _debugvmfs6_expected(off, len(chunk)), off
        off += len(chunk)
    assert proc.wait(timeout=120) == 0 and off == W.LFB_SIZE
    # the only difference from the true contents: the stale bytes of the TBZ LFB
    for _, o, n in W.LFB_STALE:
        assert _debugvmfs6_expected(LFB + o, n) != W.lfb_read(LFB + o, n) == bytes(n)
