"""FUSE mounts, for real: `vmsift mount` of a folder datastore, VMFS images and a kernel-written
OCFS2 image; every file read through the mount against the library's direct read; ordinary
tools (debugfs, fsck.ext4) on a partition file; EROFS, sparse sizes, xattrs, signals, dead
mounts, concurrency and damage. A mount that fails is a failure (never a skip)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import posixpath
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, data_runs, missing, require_tool, sparse_copy, vmsift
from vmsift.datastore.detect import open_datastore
from vmsift.datastore.disk import open_disk
from vmsift.datastore.snapshots import disk_at_snapshot
from vmsift.datastore.vm import find_vms
from vmsift.datastore.volume import FileType
from vmsift.source import Alloc

MiB = 1 << 20
CHUNK = 4 * MiB
SAMPLE = 64 << 10


def run(*args, cwd=None, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, cwd=cwd, **kw).stdout


@pytest.fixture(scope="module", autouse=True)
def fuse_available():
    try:
        import pyfuse3  # noqa: F401
        import trio  # noqa: F401
    except ImportError:
        missing("pyfuse3 and trio (pip install 'vmsift[fuse]')")
    if not os.path.exists("/dev/fuse"):
        missing("/dev/fuse")
    require_tool("fusermount3")


def wait_for(predicate, what: str, limit: float = 60.0) -> None:
    """Poll until ``predicate()`` (a generous limit against hangs, not a timing check)."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def mounted(base: Path, *args):
    """``vmsift mount ARGS... MNT`` in the background (as users run it), unmounted after."""
    mnt = base / f"mnt{len(list(base.glob('mnt*')))}"
    mnt.mkdir()
    out = vmsift("mount", *args, mnt, timeout=300)
    assert out.returncode == 0, f"mount failed: {out.stderr}"
    assert os.path.ismount(mnt), out.stderr
    try:
        yield mnt
    finally:
        done = vmsift("umount", mnt)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: not os.path.ismount(mnt), "the unmount")


@contextlib.contextmanager
def foreground(base: Path, *args, log: Path | None = None):
    """``vmsift mount -f ARGS... MNT`` as a child process (stderr to ``log``)."""
    mnt = base / f"fg{len(list(base.glob('fg*')))}"
    mnt.mkdir()
    err = open(log or os.devnull, "w")
    proc = subprocess.Popen([sys.executable, "-m", "vmsift", "mount", "-f", *map(str, args),
                             str(mnt)], cwd=ROOT, stderr=err)
    try:
        wait_for(lambda: os.path.ismount(mnt) or proc.poll() is not None, "the mount")
        assert proc.poll() is None, "the mount process ended before mounting"
        yield mnt, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
        err.close()


def same_contents(path: Path, src) -> int:
    """Compare ``path`` (read through the mount) with the library's ``src``: every DATA run
    whole, other runs whole up to 4 MiB, else their first and last 64 KiB. Returns the bytes
    compared."""
    assert os.stat(path).st_size == src.size, path
    compared = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        for run_ in src.extents():
            if run_.kind is Alloc.DATA or run_.length <= CHUNK:
                ranges = [(run_.offset, run_.length)]
            else:
                ranges = [(run_.offset, SAMPLE), (run_.end - SAMPLE, SAMPLE)]
            for offset, length in ranges:
                for at in range(offset, offset + length, CHUNK):
                    n = min(CHUNK, offset + length - at)
                    ours = os.pread(fd, n, at)
                    theirs = src.read(at, n)
                    assert hashlib.sha256(ours).digest() == hashlib.sha256(theirs).digest(), \
                        f"{path} differs in [{at:#x}, {at + n:#x})"
                    compared += n
    finally:
        os.close(fd)
    return compared


def check_files_view(mnt: Path, volume, deleted: bool = False) -> int:
    """files/ against the volume: names (and the deleted ones on a ``deleted`` mount),
    types, sizes, times, links, contents, st_blocks. Returns the files compared."""
    checked = 0
    for folder, entries in volume.walk(deleted=deleted):
        here = mnt / "files" / folder if folder else mnt / "files"
        live = [e for e in entries if not e.deleted]
        gone = [f"{e.name} (deleted)" for e in entries if e.deleted]
        assert sorted(os.listdir(here)) == sorted([e.name for e in live] + gone), folder
        for e in live:
            full = posixpath.join(folder, e.name)
            st, ours = volume.stat(full), os.lstat(here / e.name)
            assert ours.st_size == st.size, full
            if st.mtime is not None:
                assert int(ours.st_mtime) == int(st.mtime), full
            if st.nlink:
                assert ours.st_nlink == st.nlink, full
            if st.type is FileType.SYMLINK:
                assert os.readlink(here / e.name) == st.symlink_target
            elif st.type is FileType.FILE:
                with volume.open(full) as src:
                    same_contents(here / e.name, src)
                    assert ours.st_blocks == (src.stored_bytes() + 511) // 512, full
                checked += 1
    return checked


def check_vms_view(mnt: Path, volume, names: set[str] | None = None) -> int:
    """vms/: every disk of every VM (or of those ``names``), now and at each snapshot,
    against open_disk."""
    checked = 0
    for vm in find_vms(volume):
        if names is not None and vm.name not in names:
            continue
        here = mnt / "vms" / vm.name
        assert (here / "info.txt").read_text().startswith(f"name: {vm.name}\n")
        assert (here / posixpath.basename(vm.config)).read_bytes() == \
            volume.open(vm.config).read_all(1 << 24)
        points = [("current", None)] + [(s["display_name"], s) for s in vm.snapshots]
        for folder, snap in points:
            for disk in vm.disks:
                if disk.path is None:
                    continue
                path = disk.path if snap is None else disk_at_snapshot(
                    volume, disk.path, str(snap["uid"]))
                stem = posixpath.splitext(posixpath.basename(disk.chain[-1]))[0]
                with open_disk(volume, path, strict=False) as flat:
                    same_contents(here / folder / f"{stem}.raw", flat)
                    st = os.stat(here / folder / f"{stem}.raw")
                    assert st.st_blocks == (flat.stored_bytes() + 511) // 512
                checked += 1
    return checked


# --- a folder datastore made with qemu-img -----------------------------------------------

VMX = ('.encoding = "UTF-8"\nconfig.version = "8"\nvirtualHW.version = "19"\n'
       'displayName = "{name}"\nscsi0:0.present = "TRUE"\nscsi0:0.fileName = "{disk}"\n')


def vmsd(snapshots: list[tuple[str, str]]) -> str:
    """A .vmsd of a line of snapshots (name, disk file of scsi0:0), the last current."""
    n = len(snapshots)
    lines = [f'snapshot.lastUID = "{n}"', f'snapshot.current = "{n}"',
             f'snapshot.numSnapshots = "{n}"']
    for i, (name, disk) in enumerate(snapshots):
        lines += [f'snapshot{i}.uid = "{i + 1}"', f'snapshot{i}.displayName = "{name}"',
                  f'snapshot{i}.disk0.fileName = "{disk}"', f'snapshot{i}.disk0.node = "scsi0:0"']
        if i:
            lines.append(f'snapshot{i}.parent = "{i}"')
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def folder_ds(tmp_path_factory):
    """web01: a 3-link chain with two snapshots; pvm: a disk with an MBR and an ext4
    partition holding two files; broken: a flat disk whose extent file is cut short; a
    sparse file at the root."""
    for tool in ("qemu-img", "qemu-io", "sfdisk", "mkfs.ext4"):
        require_tool(tool)
    root = tmp_path_factory.mktemp("ds")
    vm = root / "web01"
    vm.mkdir()
    run("qemu-img", "create", "-q", "-f", "vmdk", "web01.vmdk", "64M", cwd=vm)
    run("qemu-io", "-f", "vmdk", "-c", "write -P 0x11 0 1M", "web01.vmdk", cwd=vm)
    for parent, child, write in (("web01.vmdk", "web01-000001.vmdk", "0x22 2M"),
                                 ("web01-000001.vmdk", "web01-000002.vmdk", "0x33 512k")):
        run("qemu-img", "create", "-q", "-f", "vmdk", "-b", parent, "-F", "vmdk", child, cwd=vm)
        run("qemu-io", "-f", "vmdk", "-c", f"write -P {write} 64k", child, cwd=vm)
    (vm / "web01.vmx").write_text(VMX.format(name="web01", disk="web01-000002.vmdk"))
    (vm / "web01.vmsd").write_text(vmsd([("clean", "web01.vmdk"),
                                          ("patched", "web01-000001.vmdk")]))
    # pvm: MBR, one Linux partition at 1 MiB holding an ext4 file system made on a file
    pvm = root / "pvm"
    pvm.mkdir()
    work = tmp_path_factory.mktemp("ext4")
    (work / "content").mkdir()
    (work / "content" / "hello.txt").write_text("hello from inside the guest\n")
    (work / "content" / "big.bin").write_bytes(hashlib.sha256(b"x").digest() * 40_000)
    raw = work / "disk.raw"
    with open(raw, "wb") as f:
        f.truncate(32 * MiB)
    run("sfdisk", "-q", str(raw), input="label: dos\nstart=2048, type=83\n")
    (work / "part.img").touch()
    os.truncate(work / "part.img", 31 * MiB)
    run("mkfs.ext4", "-q", "-F", "-d", str(work / "content"), str(work / "part.img"))
    sparse_copy(work / "part.img", raw, offset=MiB)
    run("qemu-img", "convert", "-O", "vmdk", str(raw), str(pvm / "pvm.vmdk"))
    (pvm / "pvm.vmx").write_text(VMX.format(name="pvm", disk="pvm.vmdk"))
    # broken: the descriptor says 64 MiB of flat extent, the extent file has 1 MiB
    broken = root / "broken"
    broken.mkdir()
    (broken / "broken.vmdk").write_text(
        '# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n'
        'createType="monolithicFlat"\n\nRW 131072 FLAT "broken-flat.vmdk" 0\n')
    (broken / "broken-flat.vmdk").write_bytes(b"\x5a" * MiB)
    (broken / "broken.vmx").write_text(VMX.format(name="broken", disk="broken.vmdk"))
    with open(root / "sparse.bin", "wb") as f:
        f.truncate(100 * MiB)
        f.seek(10 * MiB)
        f.write(b"S" * MiB)
    return root


def test_folder_datastore_mount(folder_ds, tmp_path):
    """Every file and every disk at every snapshot reads as the library reads it."""
    with mounted(tmp_path, folder_ds) as mnt, open_datastore([str(folder_ds)]) as volume:
        assert sorted(os.listdir(mnt)) == ["files", "vms"]
        assert check_files_view(mnt, volume) == 11
        assert sorted(os.listdir(mnt / "vms")) == ["broken", "pvm", "web01"]
        web = mnt / "vms" / "web01"
        assert sorted(os.listdir(web)) == ["clean", "current", "info.txt", "patched",
                                          "web01.vmsd", "web01.vmx"]
        # the snapshots differ where the later deltas wrote
        now, clean = (web / "current" / "web01.raw"), (web / "clean" / "web01.raw")
        with open(now, "rb") as f, open(clean, "rb") as g:
            assert (f.read(MiB)[512 << 10], g.read(MiB)[512 << 10]) == (0x33, 0x11)
        assert check_vms_view(mnt, volume, {"web01", "pvm"}) == 4


def test_one_disk_read_by_many_threads_at_once(folder_ds, tmp_path):
    """Eight threads read one 3-link chain disk through a ``--direct-io`` mount (every read
    reaches the adapter, none waits for another) at random places and sizes: every piece
    reads as the library reads it."""
    import random

    with mounted(tmp_path, "--direct-io", folder_ds) as mnt, \
            open_datastore([str(folder_ds)]) as volume, \
            open_disk(volume, "web01/web01-000002.vmdk") as disk:
        path = mnt / "vms" / "web01" / "current" / "web01.raw"
        expected = disk.read(0, disk.size)
        failures: list[str] = []

        def reader(seed: int) -> None:
            rng = random.Random(seed)
            fd = os.open(path, os.O_RDONLY)
            try:
                for _ in range(60):
                    offset = rng.randrange(0, 4 * MiB) + rng.choice((0, MiB - 4096, 8 * MiB))
                    length = rng.choice((4096, 100_000, MiB, 3 * MiB // 2))
                    if os.pread(fd, length, offset) != expected[offset:offset + length]:
                        failures.append(f"[{offset:#x}, +{length:#x})")
            finally:
                os.close(fd)

        threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not failures, failures[:5]


@pytest.mark.parametrize("options", [(), ("--direct-io",)], ids=["page-cache", "direct-io"])
def test_partition_file_is_read_by_e2fsprogs(folder_ds, tmp_path, options):
    """The ext4 partition inside the VMDK, as a file of the mount, to ordinary tools; with
    and without the page cache."""
    debugfs, fsck = require_tool("debugfs"), require_tool("fsck.ext4")
    with mounted(tmp_path, folder_ds, *options) as mnt, \
            open_datastore([str(folder_ds)]) as volume:
        with open_disk(volume, "pvm/pvm.vmdk") as disk:
            same_contents(mnt / "vms" / "pvm" / "current" / "pvm.raw", disk)
        current = mnt / "vms" / "pvm" / "current"
        assert sorted(os.listdir(current)) == ["pvm.p1", "pvm.raw"]
        part = current / "pvm.p1"
        assert part.stat().st_size == 31 * MiB
        assert json.loads(os.getxattr(part, "user.vmsift.partition"))["start"] == MiB
        listing = run(debugfs, "-R", "ls -l /", str(part))
        assert "hello.txt" in listing and "big.bin" in listing
        assert run(debugfs, "-R", "cat /hello.txt", str(part)) == "hello from inside the guest\n"
        dumped = tmp_path / "big.bin"
        run(debugfs, "-R", f"dump /big.bin {dumped}", str(part))
        assert dumped.read_bytes() == hashlib.sha256(b"x").digest() * 40_000
        checked = subprocess.run([fsck, "-n", "-f", str(part)], capture_output=True, text=True,
                                 check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_writes_are_refused(folder_ds, tmp_path):
    with mounted(tmp_path, folder_ds) as mnt:
        vmx = mnt / "files" / "web01" / "web01.vmx"
        attempts = {
            "write": lambda: open(vmx, "r+b"),
            "append": lambda: open(vmx, "ab"),
            "create": lambda: open(mnt / "files" / "new.txt", "wb"),
            "mkdir": lambda: os.mkdir(mnt / "files" / "newdir"),
            "chmod": lambda: os.chmod(vmx, 0o777),
            "truncate": lambda: os.truncate(vmx, 0),
            "unlink": lambda: os.unlink(vmx),
            "rename": lambda: os.rename(vmx, mnt / "files" / "x.vmx"),
            "symlink": lambda: os.symlink("x", mnt / "files" / "l"),
            "utime": lambda: os.utime(vmx, (0, 0)),
            "setxattr": lambda: os.setxattr(vmx, "user.x", b"1"),
        }
        for what, attempt in attempts.items():
            with pytest.raises(OSError) as e:
                attempt()
            assert e.value.errno == errno.EROFS, what
        assert vmx.read_bytes() == (folder_ds / "web01" / "web01.vmx").read_bytes()
        assert os.statvfs(mnt).f_flag & os.ST_RDONLY


def test_sparse_sizes_and_xattrs(folder_ds, tmp_path):
    with mounted(tmp_path, folder_ds) as mnt:
        sparse = os.stat(mnt / "files" / "sparse.bin")
        stored = sum(n for _, n in data_runs(folder_ds / "sparse.bin"))
        assert (sparse.st_size, sparse.st_blocks * 512) == (100 * MiB, stored)
        assert stored < 2 * MiB
        raw = mnt / "vms" / "web01" / "current" / "web01.raw"
        st = raw.stat()
        # the union of the links' writes: 1 MiB in the base, 64 KiB at 2 MiB in the first
        # delta; the second delta's 64 KiB at 512 KiB lies inside the base's MiB
        assert (st.st_size, st.st_blocks * 512) == (64 * MiB, MiB + 65536)
        names = set(os.listxattr(raw))
        assert {"user.vmsift.cid", "user.vmsift.chain", "user.vmsift.allocation"} <= names
        top = (folder_ds / "web01" / "web01-000002.vmdk").read_bytes()[:65536]
        cid = int(top.split(b"CID=", 1)[1].split(b"\n", 1)[0], 16)
        # CIDs are random: the xattr always shows eight hex digits, the descriptor may not
        assert os.getxattr(raw, "user.vmsift.cid").decode() == f"{cid:08x}"
        assert os.getxattr(raw, "user.vmsift.chain").decode().splitlines() == [
            "web01/web01-000002.vmdk", "web01/web01-000001.vmdk", "web01/web01.vmdk"]
        summary = dict(kv.split("=") for kv in
                       os.getxattr(raw, "user.vmsift.allocation").decode().split())
        assert int(summary["data"]) == MiB + 65536
        assert int(summary["data"]) + int(summary["zero"]) + int(summary["hole"]) == 64 * MiB
        clean = mnt / "vms" / "web01" / "clean"
        assert os.getxattr(clean, "user.vmsift.snapshot") == b"1"
        assert os.getxattr(clean / "web01.raw", "user.vmsift.chain") == b"web01/web01.vmdk"
        with pytest.raises(OSError) as e:
            os.getxattr(raw, "user.vmsift.nothing")
        assert e.value.errno == errno.ENODATA


def test_damaged_disk_reads_eio_and_the_mount_stays(folder_ds, tmp_path):
    log = tmp_path / "stderr.txt"
    with foreground(tmp_path, folder_ds, log=log) as (mnt, proc):
        broken = mnt / "vms" / "broken" / "current" / "broken.raw"
        with open(broken, "rb", buffering=0) as f:
            assert f.read(4096) == b"\x5a" * 4096  # the part that is there
            with pytest.raises(OSError) as e:
                os.pread(f.fileno(), 4096, 32 * MiB)
            assert e.value.errno == errno.EIO
            with pytest.raises(OSError):
                os.pread(f.fileno(), 4096, 40 * MiB)
        # the mount still answers, for other files and the same one
        assert (mnt / "files" / "web01" / "web01.vmx").read_bytes().startswith(b".encoding")
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    lines = [line for line in log.read_text().splitlines() if "broken" in line]
    assert len(lines) == 1, lines  # one line per damaged file
    assert "/vms/broken/current/broken.raw @ 0x" in lines[0]
    assert "EIO" in lines[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_unmounts_cleanly(folder_ds, tmp_path, sig):
    with foreground(tmp_path, folder_ds) as (mnt, proc):
        assert (mnt / "files" / "sparse.bin").stat().st_size == 100 * MiB
        proc.send_signal(sig)
        assert proc.wait(60) == 0
        assert not os.path.ismount(mnt)
        assert os.listdir(mnt) == []


def test_umount_of_a_dead_mount(folder_ds, tmp_path):
    """The serving process killed: umount cleans the dead mount and says so."""
    with foreground(tmp_path, folder_ds) as (mnt, proc):
        proc.kill()
        proc.wait(60)
        with pytest.raises(OSError) as e:
            os.stat(mnt / "files")
        assert e.value.errno == errno.ENOTCONN
        out = vmsift("umount", mnt)
        assert out.returncode == 0, out.stderr
        assert "dead" in out.stderr
        assert not os.path.ismount(mnt)
    out = vmsift("umount", mnt)
    assert out.returncode == 6 and "not a mount point" in out.stderr


def test_mount_errors_are_one_line(folder_ds, tmp_path):
    out = vmsift("mount", folder_ds, tmp_path / "nowhere")
    assert out.returncode == 6 and "Traceback" not in out.stderr
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\x01" * 65536)
    (tmp_path / "m").mkdir()
    out = vmsift("mount", junk, tmp_path / "m")
    assert out.returncode == 4 and "no datastore found" in out.stderr
    assert not os.path.ismount(tmp_path / "m")
    out = vmsift("mount", tmp_path / "m")
    assert out.returncode == 2


# --- the adapter alone: concurrency -------------------------------------------------------

SERVER = textwrap.dedent('''
    import sys, threading
    from vmsift.fuse import ops
    from vmsift.fuse.tree import Dir, File, Tree
    from vmsift.errors import SourceError
    from vmsift.source import ByteSource

    gates = {"a": threading.Event(), "c": threading.Event()}
    failed = set()

    class Disk(ByteSource):
        """a answers only once b has been read; the first MiB of c only once its second MiB
        has been read (else EIO)."""
        def __init__(self, name, size):
            self.name, self.size = name, size
        def read(self, offset, length):
            gate = gates["c" if self.name == "c" else "a"]
            if self.name == "a" or (self.name == "c" and offset < 1 << 20):
                open(f"{sys.argv[2]}.{self.name}", "w").close()  # tells the test it has begun
                if self.name in failed or not gate.wait(20):
                    failed.add(self.name)  # for good: the kernel retries a failed read
                    raise SourceError("the read it waits for did not come", source=self.name)
            else:
                gate.set()
            return bytes([ord(self.name)]) * min(length, self.size - offset)

    class Buggy(ByteSource):
        name, size = "buggy", 4096
        def read(self, offset, length):
            raise KeyError("a decoder bug")

    root = Dir()
    root.add("buggy.raw", File(Buggy, 4096))
    root.add("a.raw", File(lambda: Disk("a", 1 << 20), 1 << 20))
    root.add("b.raw", File(lambda: Disk("b", 1 << 20), 1 << 20))
    root.add("c.raw", File(lambda: Disk("c", 2 << 20), 2 << 20))
    ops.mount(Tree(root), sys.argv[1], foreground=True)
''')


def test_readers_progress_together(tmp_path):
    """A read of disk a that cannot finish until disk b is read finishes only if the adapter
    serves b while a is still being read; the same for two parts of one disk, c (no lock
    serialises the reads of one file)."""
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    begun = tmp_path / "begun"
    proc = subprocess.Popen([sys.executable, str(script), str(mnt), str(begun)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_for(lambda: os.path.ismount(mnt) or proc.poll() is not None, "the mount")
        assert proc.poll() is None
        results = {}

        def reader(name, offset=0):
            with open(mnt / name, "rb") as f:
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)  # no read-ahead
                results[name, offset] = os.pread(f.fileno(), 4096, offset)

        for first, second, offset in (("a.raw", "b.raw", 0), ("c.raw", "c.raw", 1 << 20)):
            a = threading.Thread(target=reader, args=(first,))
            a.start()
            wait_for(Path(f"{begun}.{first[0]}").exists, f"the read of {first} to begin")
            reader(second, offset)
            a.join(120)
        assert results == {("a.raw", 0): b"a" * 4096, ("b.raw", 0): b"b" * 4096,
                           ("c.raw", 0): b"c" * 4096, ("c.raw", 1 << 20): b"c" * 4096}
        # an exception that is not a vmsift error (a bug) fails that read, not the mount
        with pytest.raises(OSError) as e:
            (mnt / "buggy.raw").read_bytes()
        assert e.value.errno == errno.EIO
        assert (mnt / "b.raw").read_bytes() == b"b" * (1 << 20) and proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


# --- VMFS: the writer's VM image and an ESXi-made volume with a raw device mapping ----------

def test_vmfs_writer_image_mount(cache_dir, tmp_path):
    """Thin, fragmented, double-indirect and sub-block files, symlinks, a VM with a
    snapshot; with --deleted, the deleted entry the writer left."""
    require_tool("qemu-img")
    from tests.fixtures import vmfs_writer

    image = vmfs_writer.build_image(cache_dir, "vm")
    with mounted(tmp_path, image, "--deleted") as mnt, open_datastore([str(image)]) as volume:
        assert check_files_view(mnt, volume, deleted=True) >= 10_000
        huge = os.stat(mnt / "files" / "huge-flat.vmdk")
        with volume.open("huge-flat.vmdk") as src:
            assert huge.st_blocks * 512 == src.stored_bytes() < huge.st_size // 1000
        assert "was-deleted.txt (deleted)" in os.listdir(mnt / "files" / "data")
        gone = mnt / "files" / "data" / "was-deleted.txt (deleted)"
        assert os.getxattr(gone, "user.vmsift.deleted") == b"1" and gone.stat().st_size == 0
        stat_x = json.loads(os.getxattr(mnt / "files" / "locked-excl.vmdk", "user.vmsift.stat"))
        assert stat_x["lock"]["held"] is True
        assert sorted(os.listdir(mnt / "vms" / "vm1")) == [
            "before update", "current", "info.txt", "vm1.vmsd", "vm1.vmx"]
        assert check_vms_view(mnt, volume) == 2


def test_esxi_vmfs5_mount_with_rdm(cache_dir, tmp_path):
    from tests.fixtures.vmfs_images import image

    path = image("vmfs/vmfs5", cache_dir)
    with mounted(tmp_path, path) as mnt, open_datastore([str(path)]) as volume:
        assert check_files_view(mnt, volume) >= 8
        rdm = mnt / "files" / "rdm-rdm.vmdk"
        st = rdm.stat()
        assert (st.st_size, st.st_blocks) == (volume.stat("rdm-rdm.vmdk").size, 0)
        assert json.loads(os.getxattr(rdm, "user.vmsift.rdm"))["id"].startswith("QM00015")
        with pytest.raises(OSError) as e:
            rdm.read_bytes()
        assert e.value.errno == errno.EOPNOTSUPP
        assert os.listdir(mnt / "vms") == []


# --- OCFS2 written by the kernel ---------------------------------------------------------

def test_ocfs2_kernel_image_mount(kernel_images, tmp_path):
    """Every file as the guest's md5 says and as the library reads it; hard links; the VM
    folder's disk at both snapshots; deleted names with --deleted only."""
    image = kernel_images["max4k"]
    with mounted(tmp_path, image.path) as mnt, open_datastore([str(image.path)]) as volume:
        assert check_files_view(mnt, volume) >= 10
        for path, entry in image.manifest.items():
            if entry["type"] == "file" and entry.get("md5"):
                data = (mnt / "files" / path).read_bytes()
                assert hashlib.md5(data).hexdigest() == entry["md5"], path
        assert sorted(os.listdir(mnt / "vms" / "testvm")) == [
            "current", "first", "info.txt", "second", "testvm.vmsd", "testvm.vmx"]
        assert check_vms_view(mnt, volume) == 3
        assert not [n for n in os.listdir(mnt / "files" / "deltest") if "(deleted)" in n]
    with mounted(tmp_path, image.path, "--deleted") as mnt:
        shown = sorted(os.listdir(mnt / "files" / "deltest"))
        assert shown == ["gone-dir (deleted)", "gone.bin (deleted)", "keep.txt"]
        assert (mnt / "files" / "deltest" / "gone-dir (deleted)").is_dir()


def test_oracle_vm_repository_mount(kernel_images, tmp_path):
    image = kernel_images["ovm4k1m"]
    with mounted(tmp_path, image.path) as mnt, open_datastore([str(image.path)]) as volume:
        vms = {vm.name: vm for vm in find_vms(volume)}
        assert sorted(os.listdir(mnt / "vms")) == sorted(vms) == ["vm-one", "vm-two"]
        for name, vm in vms.items():
            xvda = next(d for d in vm.disks if d.device == "xvda")
            stem = posixpath.splitext(posixpath.basename(xvda.path))[0]
            data = (mnt / "vms" / name / "current" / f"{stem}.raw").read_bytes()
            assert hashlib.md5(data).hexdigest() == image.manifest[xvda.path]["md5"]
            assert "vm.cfg" in os.listdir(mnt / "vms" / name)


# --- a backup repository ------------------------------------------------------------------

def test_repository_mount(folder_ds, tmp_path, monkeypatch):
    """snapshots/, by-time/ and latest/ of an encrypted repository: every disk and file as
    the repository reads it, and as the disk was when it was backed up."""
    import shutil

    from vmsift.backup.repository import Repository

    monkeypatch.setenv("VMSIFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VMSIFT_PASSWORD", "correct horse")
    repo = tmp_path / "repo"
    for name in ("web01", "pvm"):
        shutil.copytree(folder_ds / name, tmp_path / name)
    assert vmsift("init", "-r", repo).returncode == 0
    top = tmp_path / "web01" / "web01-000002.vmdk"
    run("qemu-img", "convert", "-O", "raw", str(top), str(tmp_path / "then.raw"))

    def backup(source: str) -> None:
        out = vmsift("backup", "-r", repo, tmp_path / source)
        assert out.returncode == 0, out.stderr

    backup("web01")
    run("qemu-io", "-f", "vmdk", "-c", "write -P 0x77 4M 64k", str(top))
    backup("web01")
    backup("pvm")
    with mounted(tmp_path, "-r", repo) as mnt, \
            contextlib.closing(Repository.open(str(repo), b"correct horse")) as library:
        snaps = library.snapshots()
        assert sorted(os.listdir(mnt)) == ["by-time", "latest", "snapshots"]
        assert sorted(os.listdir(mnt / "snapshots")) == sorted(s.short_id for s in snaps)
        assert len(os.listdir(mnt / "by-time")) == 3
        assert sorted(os.listdir(mnt / "latest")) == ["pvm", "web01"]
        web_latest = [s for s in snaps if s.vm_name == "web01"][-1]
        assert os.readlink(mnt / "latest" / "web01") == \
            f"../snapshots/{web_latest.short_id}/web01"
        when = int(web_latest.time.timestamp())  # links carry their snapshot's time, not 1970
        assert int(os.lstat(mnt / "latest" / "web01").st_mtime) == when
        assert int(os.stat(mnt / "latest").st_mtime) == int(snaps[-1].time.timestamp())
        for snap in snaps:
            here = mnt / "snapshots" / snap.short_id / snap.vm_name
            for disk in snap.disks:
                stem = posixpath.splitext(disk.name)[0]
                with library.open_disk(snap, disk.name) as src:
                    same_contents(here / f"{stem}.raw", src)
                    assert (here / f"{stem}.raw").stat().st_blocks == \
                        (src.stored_bytes() + 511) // 512
            for entry in snap.files:
                with library.open_file(snap, entry.name) as src:
                    assert (here / entry.name).read_bytes() == src.read_all(1 << 24)
            assert os.getxattr(here, "user.vmsift.snapshot").decode() == snap.id
        first = next(s for s in snaps if s.vm_name == "web01")
        raw = (mnt / "snapshots" / first.short_id / "web01" / "web01.raw").read_bytes()
        assert raw == (tmp_path / "then.raw").read_bytes()
        assert (mnt / "latest" / "web01" / "web01.raw").read_bytes()[4 * MiB] == 0x77
        part = mnt / "latest" / "pvm" / "pvm.p1"
        assert run(require_tool("debugfs"), "-R", "cat /hello.txt", str(part)) == \
            "hello from inside the guest\n"
        with pytest.raises(OSError) as e:
            os.mkdir(mnt / "snapshots" / "x")
        assert e.value.errno == errno.EROFS
    # from another machine: a cache that has never seen this repository's index
    monkeypatch.setenv("VMSIFT_CACHE_DIR", str(tmp_path / "another-cache"))
    with mounted(tmp_path, "-r", repo) as mnt:
        raw = (mnt / "snapshots" / first.short_id / "web01" / "web01.raw").read_bytes()
        assert raw == (tmp_path / "then.raw").read_bytes()


def test_only_the_mounting_user_enters_unless_allow_other(folder_ds, tmp_path):
    """Another user (nobody) is refused by the kernel, then let in with --allow-other."""
    import shutil
    import tempfile

    if os.getuid() != 0:
        missing("root, to run a probe as another user")
    cat = require_tool("cat")
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="vmsift-fuse-"))  # nobody may enter
    base.chmod(0o755)

    def as_nobody(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run([cat, str(path)], user=65534, group=65534, capture_output=True,
                              text=True, check=False)

    vmx = ("files", "web01", "web01.vmx")
    mode = folder_ds.stat().st_mode
    folder_ds.chmod(0o755)  # the volume's permissions apply to the others let in
    try:
        with mounted(base, folder_ds) as mnt:
            refused = as_nobody(mnt.joinpath(*vmx))
            assert refused.returncode != 0 and "Permission denied" in refused.stderr
            assert mnt.joinpath(*vmx).read_text().startswith(".encoding")
        with mounted(base, folder_ds, "--allow-other") as mnt:
            probe = as_nobody(mnt.joinpath(*vmx))
            assert probe.returncode == 0, probe.stderr
            assert probe.stdout == (folder_ds / "web01" / "web01.vmx").read_text()
    finally:
        folder_ds.chmod(mode)
        shutil.rmtree(base)


def test_ova_mount(tmp_path):
    """An OVA mounts as a datastore: its members under files/, each VirtualSystem's disks
    flattened under vms/, byte for byte what `qemu-img convert` of the disk gives."""
    from tests.fixtures import ova

    require_tool("qemu-img")
    pkg = ova.build(tmp_path / "p", size=4 * MiB)
    with mounted(tmp_path, pkg["ova"]) as mnt:
        assert sorted(os.listdir(mnt / "files")) == ["disk1.vmdk", "disk2.vmdk", "vapp.mf",
                                                     "vapp.ovf"]
        assert sorted(os.listdir(mnt / "vms")) == ["vm1", "vm2"]
        for n, name in ((1, "vm1"), (2, "vm2")):
            raw = tmp_path / f"q{n}.raw"
            run("qemu-img", "convert", "-f", "vmdk", "-O", "raw", str(pkg["vmdks"][n - 1]),
                str(raw))
            assert (mnt / "vms" / name / "current" / f"disk{n}.raw").read_bytes() == \
                raw.read_bytes()
        assert (mnt / "files" / "vapp.mf").read_bytes() == (pkg["folder"] / "vapp.mf").read_bytes()
