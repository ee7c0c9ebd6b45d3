"""The `Volume` contract, one suite run on every implementation: a plain folder, VMFS3 (our
writer), VMFS5 (ESXi and our writer), VMFS6 (ESXi, and grown by our writer) and OCFS2 (the
Linux kernel's images).

For every entry listed (at most `PER_FOLDER` of each folder, every folder): `stat` and the
cheap `lookup` agree with `listdir` (type, inode) and with each other; ``st_mode`` carries
the type bits; `exists` is true for regular files only; links are never followed (open is
IS_A_LINK, listdir or a path through one is NOT_A_DIR); folders, files and missing names fail
with the kinds (and errnos) `vmsift.datastore.volume` documents; a few files per volume pass
the `ByteSource` contract (tests/test_contract_source.py).

Also here: readers in 8 threads sharing one volume (and one sparse extent) read what one
thread reads.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import posixpath
import random
import stat as stat_mod
import subprocess

import pytest

from tests.fixtures import vmfs3_writer, vmfs_writer
from tests.fixtures.vmfs_images import image
from tests.helpers import require_tool
from tests.test_contract_source import check_source
from vmsift.cache import LruCache
from vmsift.datastore.detect import open_datastore
from vmsift.datastore.folder import FolderVolume
from vmsift.datastore.volume import FileType
from vmsift.errors import ErrorKind, SourceError, UnsupportedError, VmsiftError
from vmsift.formats.vmdk import sparse
from vmsift.source import Alloc, FileSource

MiB = 1 << 20
PER_FOLDER = 40       # entries of each folder checked one by one
SOURCES = 6           # files per volume run through the ByteSource contract
MISSING = "no-such-name-here"


def _folder(root):
    """A folder datastore with what the other volumes hold: files (one sparse), folders,
    links to a file and to a folder inside it, a fifo."""
    (root / "vm").mkdir()
    (root / "vm" / "empty").mkdir()
    (root / "vm" / "vm.vmx").write_text('displayName = "vm"\n')
    with open(root / "vm" / "vm-flat.vmdk", "wb") as f:
        f.write(b"\x5a" * MiB)
        f.seek(8 * MiB)
        f.write(b"\xa5" * 4096)
        f.truncate(12 * MiB)
    (root / "empty.bin").touch()
    (root / "file-link").symlink_to("vm/vm.vmx")
    (root / "dir-link").symlink_to("vm")
    (root / "outside-link").symlink_to("/etc/passwd")
    os.mkfifo(root / "fifo")
    return root


VOLUMES = ["folder", "tar", "vmfs3", "vmfs5-esxi", "vmfs5-writer", "vmfs6-esxi",
           "vmfs6-writer", "ocfs2-kernel", "ocfs2-oracle-vm"]


def _open(name: str, cache_dir, tmp_path_factory, request):
    if name == "folder":
        return FolderVolume(_folder(tmp_path_factory.mktemp("folder-ds")))
    if name == "tar":  # the same tree archived by GNU tar (an OVA is read as such a volume)
        from vmsift.datastore.archive import TarVolume

        root = _folder(tmp_path_factory.mktemp("tar-ds"))
        archive = root.parent / "tree.tar"
        subprocess.run(["tar", "--format=pax", "-C", str(root), "-cf", str(archive), "."],
                       check=True)
        return TarVolume(FileSource(archive))
    if name == "vmfs3":
        path = vmfs3_writer.build_image(cache_dir, "basic-1m")
    elif name in ("vmfs5-esxi", "vmfs6-esxi"):
        path = image(f"vmfs/{name[:5]}", cache_dir)
    elif name == "vmfs5-writer":
        for tool in ("qemu-img", "qemu-io"):
            require_tool(tool)
        path = vmfs_writer.build_image(cache_dir, "vm")
    elif name == "vmfs6-writer":
        path = vmfs_writer.build_vmfs6_lfb(cache_dir)
    else:  # 4 KiB clusters with every feature; 1 MiB clusters as Oracle VM makes them
        kernel = request.getfixturevalue("kernel_images")
        path = kernel["max4k" if name == "ocfs2-kernel" else "ovm4k1m"].path
    return open_datastore([str(path)])


@pytest.fixture(scope="module", params=VOLUMES)
def named(request, cache_dir, tmp_path_factory):
    """(name, the volume)."""
    v = _open(request.param, cache_dir, tmp_path_factory, request)
    yield request.param, v
    v.close()


def refused(call, path: str, kind: ErrorKind, error=SourceError):
    """``call(path)`` fails with ``error`` of ``kind`` (and its errno)."""
    with pytest.raises(error) as e:
        call(path)
    assert (e.value.kind, e.value.errno) == (kind, kind.errno), (call.__name__, path, str(e.value))


# (not atime: on a live folder, reading a link updates it)
CHEAP = ("path", "type", "size", "inode", "nlink", "mode", "st_mode", "uid", "gid", "mtime",
         "ctime", "allocated", "rdev")


def check_entry(volume, path: str, entry) -> FileType:
    st = volume.stat(path)
    cheap = volume.lookup(path)
    assert st.type is entry.type, path
    if entry.inode is not None:
        assert st.inode == entry.inode, path
    assert {k: getattr(cheap, k) for k in CHEAP} == {k: getattr(st, k) for k in CHEAP}, path
    assert cheap.symlink_target in (None, st.symlink_target)
    expected = FileType.FILE if st.type is FileType.RDM else st.type
    assert FileType.from_mode(st.st_mode) is expected, (path, oct(st.st_mode))
    assert st.mode is None or stat_mod.S_IMODE(st.st_mode) == st.mode, path
    assert volume.exists(path) == (st.type is FileType.FILE), path
    if st.type is not FileType.DIR:
        refused(volume.listdir, path, ErrorKind.NOT_A_DIR)
        refused(volume.stat, path + "/x", ErrorKind.NOT_A_DIR)
        refused(volume.lookup, path + "/x", ErrorKind.NOT_A_DIR)
        refused(volume.open, path + "/x", ErrorKind.NOT_A_DIR)
    if st.type is not FileType.SYMLINK:
        refused(volume.readlink, path, ErrorKind.NOT_A_LINK)
    if st.type is FileType.DIR:
        refused(volume.open, path, ErrorKind.IS_A_DIR)
        refused(volume.stat, posixpath.join(path, MISSING), ErrorKind.NOT_FOUND)
    elif st.type is FileType.SYMLINK:
        refused(volume.open, path, ErrorKind.IS_A_LINK)
        assert volume.readlink(path) == st.symlink_target and st.symlink_target
    elif st.type is FileType.RDM:
        refused(volume.open, path, ErrorKind.UNSUPPORTED, UnsupportedError)
    elif st.type is FileType.OTHER:
        refused(volume.open, path, ErrorKind.NOT_A_FILE)
    else:
        with volume.open(path) as src:
            assert src.size == st.size, path
    return st.type


def test_volume_contract(named):
    _, volume = named
    root = volume.stat("")
    assert root.type is FileType.DIR and stat_mod.S_ISDIR(root.st_mode)
    assert volume.lookup("").inode == root.inode
    seen: dict[FileType, int] = {}
    files = []
    for folder, entries in volume.walk():
        names = [e.name for e in entries]
        assert names == sorted(names) and "." not in names and ".." not in names, folder
        for e in entries[:PER_FOLDER]:
            path = posixpath.join(folder, e.name)
            kind = check_entry(volume, path, e)
            seen[kind] = seen.get(kind, 0) + 1
            if kind is FileType.FILE:
                files.append((volume.lookup(path).size, path))
    assert seen.get(FileType.DIR) and seen.get(FileType.FILE), seen
    for call in (volume.stat, volume.lookup, volume.open, volume.listdir, volume.readlink):
        refused(call, MISSING, ErrorKind.NOT_FOUND)
    assert not volume.exists(MISSING)
    # the ByteSource contract on files of every size the volume holds
    files.sort()
    for _, path in files[::max(len(files) // SOURCES, 1)][:SOURCES + 1]:
        with volume.open(path) as src:
            check_source(src)


def test_links_are_listed_not_followed(named):
    """The link is what stat, lookup and listdir show; nothing goes through it."""
    name, volume = named
    links = [posixpath.join(folder, e.name) for folder, entries in volume.walk()
             for e in entries if e.type is FileType.SYMLINK]
    assert links, f"{name} holds symbolic links"
    for path in links[:20]:
        assert volume.lookup(path).type is FileType.SYMLINK
        assert stat_mod.S_ISLNK(volume.lookup(path).st_mode)
        refused(volume.open, path, ErrorKind.IS_A_LINK)
        refused(volume.listdir, path, ErrorKind.NOT_A_DIR)
        refused(volume.stat, path + "/x", ErrorKind.NOT_A_DIR)
        assert not volume.exists(path)


# --- threads --------------------------------------------------------------------------------

def _digests(sources: dict, tasks, threads: int) -> list[str]:
    def one(task):
        name, offset, length = task
        return hashlib.sha256(sources[name].read(offset, length)).hexdigest()

    if threads == 1:
        return [one(t) for t in tasks]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, tasks))


def _tasks(sizes: dict[str, int], seed: int) -> list[tuple[str, int, int]]:
    rng = random.Random(seed)
    names = sorted(sizes)
    return [(name, rng.randrange(sizes[name]), rng.randrange(1, 256 << 10))
            for name in (rng.choice(names) for _ in range(600))]


def _biggest_files(volume, count: int = 3) -> list[str]:
    found = [(volume.lookup(posixpath.join(d, e.name)).size, posixpath.join(d, e.name))
             for d, entries in volume.walk() for e in entries[:PER_FOLDER]
             if e.type is FileType.FILE]
    found = [f for f in found if f[0] <= 256 * MiB]
    return [path for _, path in sorted(found)[-count:]]


def test_prefetch_reaches_the_bytes_of_the_file(named, monkeypatch):
    """A file's prefetch hint lands where its bytes are: read at the advised places of the
    host files, in order, they hold each DATA run of the file (VMFS through its LVM to the
    device, OCFS2 through its extent tree to the image; a host file may be advised across
    its own holes too)."""
    _, volume = named
    path = _biggest_files(volume, 1)[0]
    calls = []

    def advise(fd, offset, length, advice):
        calls.append((os.readlink(f"/proc/self/fd/{fd}"), offset, length))

    with volume.open(path) as src:
        start = next(r.offset for r in src.extents() if r.kind is Alloc.DATA)
        pieces = [src.read(r.offset, r.length) for r in src.extents(start, 2 * MiB)
                  if r.kind is Alloc.DATA]
        monkeypatch.setattr(os, "posix_fadvise", advise)
        src.prefetch(start, 2 * MiB)
        monkeypatch.undo()
    advised = b""
    for host, offset, length in calls:
        with open(host, "rb") as f:
            advised += os.pread(f.fileno(), length, offset)
    pos = 0
    for piece in pieces:
        pos = advised.find(piece, pos)
        assert pos >= 0, (path, calls[:4])
        pos += len(piece)


def _shrunk(volume):
    """``volume`` with caches of two entries, so threads evict each other's metadata."""
    fs = getattr(volume, "fs", volume)
    for attr in ("_fds", "_pbs", "_resource_blocks", "_inodes", "_extent_maps", "_dirs",
                 "_names"):
        if hasattr(fs, attr):
            setattr(fs, attr, LruCache(2))
    return volume


@pytest.mark.parametrize("name", ["vmfs5-writer", "vmfs6-writer", "ocfs2-kernel"])
def test_threads_read_what_one_thread_reads(name, cache_dir, tmp_path_factory, request):
    """8 threads open and read files of one volume (caches shrunk to two entries) at random
    offsets: every piece has the digest one thread reading alone gets."""
    with _open(name, cache_dir, tmp_path_factory, request) as alone:
        paths = _biggest_files(alone)
        sources = {p: alone.open(p) for p in paths}
        tasks = _tasks({p: s.size for p, s in sources.items()}, seed=len(name))
        expected = _digests(sources, tasks, 1)
    with _open(name, cache_dir, tmp_path_factory, request) as shared:
        _shrunk(shared)

        class Opened(dict):  # each read opens its file again: lookups race too
            def __missing__(self, path):
                return shared.open(path)

        assert _digests(Opened(), tasks, 8) == expected
        sources = {p: shared.open(p) for p in paths}  # and one open file shared by all
        assert _digests(sources, tasks, 8) == expected


@pytest.mark.parametrize("kind", ["sparse", "stream"])
def test_threads_share_a_sparse_extent(kind, cache_dir):
    """One sparse VMDK extent (grain-table cache of two tables; a stream's last inflated
    grain) read by 8 threads: the same bytes as one thread."""
    from tests.fixtures import qemu_vmdk

    for tool in ("qemu-img", "qemu-io"):
        require_tool(tool)
    made = qemu_vmdk.build_set(cache_dir / "qemu-vmdk")
    raw = (made["converted-stream"].parent / "data.raw").read_bytes()
    path = made["converted-stream"].parent / f"threads-{kind}.vmdk"
    if not path.exists():
        import subprocess
        sub = "streamOptimized" if kind == "stream" else "monolithicSparse"
        subprocess.run(["qemu-img", "convert", "-O", "vmdk", "-o", f"subformat={sub}",
                        str(made["converted-stream"].parent / "data.raw"), str(path)],
                       check=True)
    with sparse.SparseExtent(FileSource(path)) as ext:
        ext._gt_cache = LruCache(2)
        tasks = _tasks({"x": ext.size}, seed=7)
        expected = [hashlib.sha256(raw[o:o + n]).hexdigest() for _, o, n in tasks]
        assert _digests({"x": ext}, tasks, 8) == expected


def test_errors_carry_errno():
    """FUSE answers ``e.errno``: every error class has a kind by default, a raise may set
    another."""
    import errno

    assert SourceError("x").errno == errno.EIO
    assert SourceError("x", kind=ErrorKind.NOT_FOUND).errno == errno.ENOENT
    from vmsift.errors import ChainError, FormatError, LockedError, TruncatedError
    assert [c("x").kind for c in (FormatError, TruncatedError, ChainError, UnsupportedError,
                                  LockedError, VmsiftError)] == [
        ErrorKind.DAMAGED, ErrorKind.DAMAGED, ErrorKind.DAMAGED, ErrorKind.UNSUPPORTED,
        ErrorKind.BUSY, ErrorKind.IO]
    assert ErrorKind.from_errno(errno.ENOTDIR) is ErrorKind.NOT_A_DIR
    assert ErrorKind.from_errno(errno.ENOSPC) is ErrorKind.IO
