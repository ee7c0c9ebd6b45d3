"""Datastores as folders: detection, listing, extraction, VM discovery (VMware and Oracle VM)."""

import errno
import json
import os
import subprocess

import pytest

from tests.helpers import require_tool, truncated_copy, vmsift
from vmsift import cache as cache_mod
from vmsift.cache import LruCache
from vmsift.datastore.detect import open_datastore
from vmsift.datastore.extract import extract
from vmsift.datastore.folder import FolderVolume
from vmsift.datastore.vm import find_vms
from vmsift.datastore.volume import FileType
from vmsift.errors import ErrorKind, SourceError, UnsupportedError
from vmsift.source import ByteSource

MiB = 1 << 20
REPO = "0004fb0000030000aeaca859e4a8f8c0"


def run(*args, cwd=None):
    return subprocess.run(args, check=True, capture_output=True, text=True, cwd=cwd).stdout



@pytest.fixture(scope="module")
def datastore(tmp_path_factory):
    """A VMware VM folder (qemu-made 3-link chain, vmx, vmsd) and an Oracle VM repository."""
    require_tool("qemu-img")
    require_tool("qemu-io")
    root = tmp_path_factory.mktemp("ds")
    vm = root / "web01"
    vm.mkdir()
    run("qemu-img", "create", "-q", "-f", "vmdk", "web01.vmdk", "64M", cwd=vm)
    run("qemu-io", "-f", "vmdk", "-c", "write -P 0x11 0 1M", "web01.vmdk", cwd=vm)
    for parent, child in (("web01.vmdk", "web01-000001.vmdk"),
                          ("web01-000001.vmdk", "web01-000002.vmdk")):
        run("qemu-img", "create", "-q", "-f", "vmdk", "-b", parent, "-F", "vmdk", child, cwd=vm)
    run("qemu-io", "-f", "vmdk", "-c", "write -P 0x22 2M 64k", "web01-000002.vmdk", cwd=vm)
    (vm / "web01.vmx").write_text(
        '.encoding = "UTF-8"\nconfig.version = "8"\nvirtualHW.version = "19"\n'
        'displayName = "web01"\nuuid.bios = "42 00 11 22 33 44 55 66-77 88 99 aa bb cc dd ee"\n'
        'scsi0:0.present = "TRUE"\nscsi0:0.fileName = "web01-000002.vmdk"\n'
        'scsi0:1.present = "TRUE"\nscsi0:1.fileName = "missing.vmdk"\n'
        'ide1:0.present = "TRUE"\nide1:0.deviceType = "cdrom-image"\n'
        'ide1:0.fileName = "/iso/x.iso"\n')
    (vm / "web01.vmsd").write_text(
        'snapshot.lastUID = "2"\nsnapshot.current = "2"\nsnapshot.numSnapshots = "2"\n'
        'snapshot0.uid = "1"\nsnapshot0.displayName = "clean"\n'
        'snapshot0.disk0.fileName = "web01.vmdk"\nsnapshot0.disk0.node = "scsi0:0"\n'
        'snapshot1.uid = "2"\nsnapshot1.parent = "1"\nsnapshot1.displayName = "patched"\n'
        'snapshot1.disk0.fileName = "web01-000001.vmdk"\nsnapshot1.disk0.node = "scsi0:0"\n')
    ovm = root / "VirtualMachines" / "0004fb0000060000112233445566aabb"
    ovm.mkdir(parents=True)
    disks = root / "VirtualDisks"
    disks.mkdir()
    with open(disks / "0004fb0000120000c444117fd87ea251.img", "wb") as f:
        f.truncate(32 * MiB)
        f.seek(MiB)
        f.write(b"O" * 4096)
    (root / ".ovsrepo").write_text(f"OVS_REPO_UUID={REPO}\nOVS_REPO_VERSION=3.0\n")
    (ovm / "vm.cfg").write_text(
        "vif = ['mac=00:21:f6:00:00:01,bridge=0a0a0a00']\nOVM_simple_name = 'db01'\n"
        "name = '0004fb0000060000112233445566aabb'\nmemory = 2048\nvcpus = 2\n"
        f"disk = ['file:/OVS/Repositories/{REPO}/VirtualDisks/"
        "0004fb0000120000c444117fd87ea251.img,xvda,w',\n"
        "        'phy:/dev/mapper/36001,xvdb,w!']\n"
        "uuid = '0004fb00-0006-0000-1122-33445566aabb'\n")
    return root


def test_folder_is_detected(datastore):
    volume = open_datastore([str(datastore)])
    assert volume.info().kind == "folder"
    names = {e.name: e.type for e in volume.listdir("")}
    assert names["web01"] is FileType.DIR and names[".ovsrepo"] is FileType.FILE
    st = volume.stat("VirtualDisks/0004fb0000120000c444117fd87ea251.img")
    assert st.size == 32 * MiB and st.allocated < MiB


def test_unknown_image_lists_what_was_tried(tmp_path):
    (tmp_path / "junk.img").write_bytes(b"\x01" * 65536)
    with pytest.raises(UnsupportedError, match="tried: partition table"):
        open_datastore([str(tmp_path / "junk.img")])


def test_find_vms(datastore):
    vms = {vm.kind: vm for vm in find_vms(open_datastore([str(datastore)]))}
    web = vms["vmware"]
    assert (web.name, web.config, web.uuid) == ("web01", "web01/web01.vmx",
                                                "42 00 11 22 33 44 55 66-77 88 99 aa bb cc dd ee")
    os_disk, missing = web.disks
    assert os_disk.chain == ["web01/web01-000002.vmdk", "web01/web01-000001.vmdk",
                             "web01/web01.vmdk"]
    assert os_disk.capacity == 64 * MiB and os_disk.allocated == MiB + 65536
    assert os_disk.problem is None
    assert "missing.vmdk" in missing.problem
    assert [(s["uid"], s["display_name"], s["depth"]) for s in web.snapshots] == [
        (1, "clean", 0), (2, "patched", 1)]
    assert web.current_snapshot == 2
    db = vms["oraclevm"]
    assert db.name == "db01" and db.uuid == "0004fb00-0006-0000-1122-33445566aabb"
    img, phy = db.disks
    assert img.path == "VirtualDisks/0004fb0000120000c444117fd87ea251.img"
    assert (img.capacity, img.allocated, img.device, img.mode) == (32 * MiB, 4096, "xvda", "w")
    assert phy.path is None and "not a file of this repository" in phy.problem


def test_find_vms_without_stored_bytes_walks_no_map(datastore, monkeypatch):
    """A backup's discovery skips counting allocated bytes (a walk of every file's map);
    everything else is the same."""
    volume = open_datastore([str(datastore)])
    full = [vm.to_dict() for vm in find_vms(volume)]
    def walked(self, *args):
        raise AssertionError(f"the map of {self.name} was walked")
    monkeypatch.setattr(ByteSource, "stored_bytes", walked)
    quick = [vm.to_dict() for vm in find_vms(volume, stored=False)]
    assert [d["allocated"] for vm in quick for d in vm["disks"]] == [None] * 4
    for vm in full:
        vm["allocated"] = 0
        for d in vm["disks"]:
            d["allocated"] = None
    assert quick == full


def test_extract_is_sparse_and_safe(datastore, tmp_path):
    volume = open_datastore([str(datastore)])
    stats = extract(volume, "VirtualDisks", str(tmp_path / "out"))
    img = tmp_path / "out" / "VirtualDisks" / "0004fb0000120000c444117fd87ea251.img"
    assert stats.files == 1 and img.stat().st_size == 32 * MiB
    assert img.stat().st_blocks * 512 <= 64 * 1024  # the hole was not written
    with open(img, "rb") as f:
        f.seek(MiB)
        assert f.read(4) == b"OOOO"
    # an existing symlink in the target is never written through
    trap = tmp_path / "trap"
    trap.mkdir()
    os.symlink("/tmp", trap / "web01")
    with pytest.raises(SourceError, match="not a folder"):
        extract(volume, "web01", str(trap))
    # a link on the datastore is recreated as a link, not followed
    (datastore / "web01" / "escape.lnk").symlink_to("/etc/passwd")
    try:
        stats = extract(volume, "web01", str(tmp_path / "o2"))
        out = tmp_path / "o2" / "web01" / "escape.lnk"
        assert out.is_symlink() and os.readlink(out) == "/etc/passwd"
        assert stats.links == 1 and stats.files == 5
    finally:
        (datastore / "web01" / "escape.lnk").unlink()


def test_folder_datastore_never_follows_links(tmp_path):
    """Links inside the folder, to files and folders inside it, are not followed either:
    open and exists refuse them as stat shows them, and no path goes through one."""
    (tmp_path / "vm").mkdir()
    (tmp_path / "vm" / "a.vmdk").write_bytes(b"disk")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "file-link").symlink_to("vm/a.vmdk")
    (tmp_path / "dir-link").symlink_to("vm")
    volume = FolderVolume(tmp_path)
    assert volume.open("vm/a.vmdk").read(0, 4) == b"disk" and volume.exists("vm/a.vmdk")
    assert volume.stat("file-link").type is FileType.SYMLINK
    assert volume.readlink("file-link") == "vm/a.vmdk"
    cases = [("file-link", ErrorKind.IS_A_LINK, errno.ELOOP),
             ("dir-link/a.vmdk", ErrorKind.NOT_A_DIR, errno.ENOTDIR),
             ("vm", ErrorKind.IS_A_DIR, errno.EISDIR),
             ("pipe", ErrorKind.NOT_A_FILE, errno.ENXIO),
             ("vm/a.vmdk/x", ErrorKind.NOT_A_DIR, errno.ENOTDIR),
             ("vm/missing", ErrorKind.NOT_FOUND, errno.ENOENT)]
    for path, kind, number in cases:
        with pytest.raises(SourceError) as e:
            volume.open(path)
        assert (e.value.kind, e.value.errno) == (kind, number), path
        assert not volume.exists(path)
    for path in ("dir-link", "dir-link/", "vm/a.vmdk"):
        with pytest.raises(SourceError) as e:
            volume.listdir(path)
        assert e.value.kind is ErrorKind.NOT_A_DIR, path
    with pytest.raises(SourceError) as e:
        volume.stat("dir-link/a.vmdk")
    assert e.value.kind is ErrorKind.NOT_A_DIR
    with pytest.raises(SourceError) as e:
        volume.readlink("vm")
    assert e.value.kind is ErrorKind.NOT_A_LINK
    assert [e.name for e in volume.listdir("")] == ["dir-link", "file-link", "pipe", "vm"]


def test_links_out_of_a_folder_datastore_are_refused(datastore, tmp_path):
    (datastore / "out.vmdk").symlink_to("/etc/passwd")
    try:
        volume = open_datastore([str(datastore)])
        with pytest.raises(SourceError, match="symbolic link"):
            volume.open("out.vmdk")
        assert volume.stat("out.vmdk").type is FileType.SYMLINK
        assert volume.readlink("out.vmdk") == "/etc/passwd"
    finally:
        (datastore / "out.vmdk").unlink()


def test_cli_ds_commands(datastore, tmp_path):
    out = vmsift("ds", "vms", "--json", datastore)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert sorted(vm["name"] for vm in doc["vms"]) == ["db01", "web01"]
    assert doc["oracle_vm"]["role"] == "repository"
    assert doc["oracle_vm"]["keys"]["OVS_REPO_UUID"] == REPO
    out = vmsift("ds", "ls", "-l", datastore, "web01")
    assert out.returncode == 0 and "web01-000002.vmdk" in out.stdout
    out = vmsift("ds", "ls", "-l", datastore, "web01/web01.vmx")  # a file: listed alone
    assert out.returncode == 0 and out.stdout.split()[0] == "file"
    assert out.stdout.strip().endswith(" web01.vmx") and len(out.stdout.splitlines()) == 1
    out = vmsift("ds", "cat", datastore, ".ovsrepo")
    assert out.stdout.startswith(f"OVS_REPO_UUID={REPO}")
    out = vmsift("ds", "stat", "--json", datastore, "web01/web01.vmx")
    assert json.loads(out.stdout)["type"] == "file"
    out = vmsift("ds", "extract", datastore, "web01/web01.vmx", tmp_path / "x")
    assert out.returncode == 0 and (tmp_path / "x" / "web01.vmx").read_text().startswith(".enc")
    out = vmsift("ds", "cat", datastore, "nope")
    assert out.returncode == 6 and "Traceback" not in out.stderr


def test_vmfs_image_through_the_datastore_layer(cache_dir):
    """A real ESXi VMFS5 volume: detected, listed, and its thin VMDK opened through it."""
    from tests.fixtures.vmfs_images import image
    from vmsift.datastore.disk import open_disk
    from vmsift.source import Alloc

    path = str(image("vmfs/vmfs5", cache_dir))
    with open_datastore([path]) as volume:
        assert volume.info().data["fs"]["label"] == "vmfs5"
        assert {"big", "normal.vmdk", "normal-flat.vmdk"} <= {e.name for e in volume.listdir()}
        with open_disk(volume, "normal.vmdk") as disk:
            assert disk.size == 144703488 * 512
            assert disk.read(42 << 30, 4) == b"\x42" * 4
            data = [r for r in disk.extents() if r.kind is Alloc.DATA]
            assert sum(r.length for r in data) <= 2 << 20  # thin: the map skips the rest
        assert list(find_vms(volume)) == []  # descriptors but no .vmx on this volume
    out = vmsift("ds", "cat", path, "small")
    assert out.returncode == 0 and out.stdout == open_datastore([path]).open("small").read(0, 5).decode()


def _md5(data: bytes) -> str:
    import hashlib
    return hashlib.md5(data).hexdigest()


def test_vmware_vm_on_kernel_written_ocfs2(kernel_images, tmp_path):
    """The VM folder the kernel wrote: found, extracted (md5 = guest's), and its disk chain
    flattened through the volume equals qemu-img's reading of the extracted files."""
    image = kernel_images["max4k"]
    with open_datastore([str(image.path)]) as volume:
        (vm,) = list(find_vms(volume))
        assert (vm.kind, vm.name, vm.current_snapshot) == ("vmware", "testvm", 2)
        disk = vm.disks[0]
        assert disk.chain == [f"vmware/testvm/testvm{s}.vmdk" for s in ("-000002", "-000001", "")]
        extract(volume, "vmware/testvm", str(tmp_path))
        from vmsift.datastore.disk import open_disk
        with open_disk(volume, disk.chain[0]) as flat:
            ours = flat.read(0, flat.size)
    for name in ("testvm.vmdk", "testvm-000001.vmdk", "testvm-000002.vmdk", "testvm.vmx"):
        assert _md5((tmp_path / "testvm" / name).read_bytes()) == \
            image.manifest[f"vmware/testvm/{name}"]["md5"]
    run("qemu-img", "convert", "-O", "raw", str(tmp_path / "testvm" / "testvm-000002.vmdk"),
        str(tmp_path / "q.raw"))
    assert ours == (tmp_path / "q.raw").read_bytes()
    # the same disk exported straight out of the image from the command line
    out = vmsift("disk", "export", "--datastore", image.path,
                 "vmware/testvm/testvm-000002.vmdk", tmp_path / "cli.raw")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "cli.raw").read_bytes() == ours
    out = vmsift("disk", "info", "--json", "--datastore", image.path, "--snapshot", "first",
                 "vmware/testvm/testvm-000002.vmdk")
    assert [c["path"] for c in json.loads(out.stdout)["data"]["chain"]] == [
        "vmware/testvm/testvm.vmdk"]


def test_oracle_vm_repository_on_kernel_written_ocfs2(kernel_images):
    image = kernel_images["ovm4k1m"]
    with open_datastore([str(image.path)]) as volume:
        from vmsift.datastore.vm import oracle_vm_role
        role = oracle_vm_role(volume)
        assert role["role"] == "repository" and role["keys"]["OVS_REPO_TYPE"] == "OCFS2"
        vms = sorted(find_vms(volume), key=lambda v: v.name)
        assert [(v.kind, v.name) for v in vms] == [("oraclevm", "vm-one"), ("oraclevm", "vm-two")]
        for vm in vms:
            xvda = next(d for d in vm.disks if d.device == "xvda")
            entry = image.manifest[xvda.path]
            with volume.open(xvda.path) as src:
                assert _md5(src.read(0, src.size)) == entry["md5"]
            assert xvda.capacity == entry["size"] and xvda.allocated == entry["blocks"] * 512
    out = vmsift("ds", "info", "--json", image.path)
    doc = json.loads(out.stdout)
    assert doc["data"]["oracle_vm"]["keys"]["OVS_REPO_ALIAS"] == "vmsift-test-repo"


def test_spanned_vmfs_from_the_command_line(cache_dir):
    """`ds info IMAGE...` takes every device of a spanned volume, in any order."""
    from tests.fixtures.vmfs_images import image

    devices = [str(image(f"vmfs/span/vmfs5-span-{i}", cache_dir)) for i in (1, 0)]
    out = vmsift("ds", "info", "--json", *devices)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["data"]["fs"]["label"] == "vmfs5-span"
    out = vmsift("ds", "info", devices[1])  # the second device missing: opens, says so
    assert out.returncode == 0 and "warning" in out.stderr
    out = vmsift("ds", "info", devices[0])  # the first missing: the FS metadata is on it
    assert out.returncode == 3 and "lives on a device that was not given" in out.stderr


def test_vms_on_a_truncated_image_goes_on(kernel_images, tmp_path):
    """A cut image: unreadable folders are named as warnings, the search does not stop."""
    cut = truncated_copy(kernel_images["max4k"].path, tmp_path / "cut.img", 40 << 20)
    out = vmsift("ds", "vms", "--json", cut)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["problems"] and all("skipped" in p for p in doc["problems"])


def test_folder_caches_are_bounded_by_entries():
    """Decoded folders are kept up to a number of entries, not of folders: an image with many
    huge folders cannot fill memory; the newest folder stays even when it alone is larger."""
    cache = LruCache(10, len)
    cache.put("a", [0] * 4)
    cache.put("b", [0] * 4)
    cache.put("c", [0] * 4)
    assert list(cache) == ["b", "c"] and cache.total == 8
    cache.put("b", [0] * 2)  # replaced: its old weight is given back
    assert list(cache) == ["c", "b"] and cache.total == 6
    cache.put("huge", [0] * 50)
    assert list(cache) == ["huge"] and cache.total == 50
    cache.put("d", [])
    assert list(cache) == ["d"] and cache.total == 0
    cache.put("e", [0] * 3)
    cache.clear()  # emptied: its weight goes too, or later puts would evict all but one
    cache.put("f", [0] * 4)
    cache.put("g", [0] * 4)
    assert list(cache) == ["f", "g"] and cache.total == 8
    counted = LruCache(3)  # without weight: at most 3 values, also after a clear
    for key in "abcd":
        counted.put(key, None)
    counted.clear()
    for key in "xyz":
        counted.put(key, None)
    assert list(counted) == ["x", "y", "z"]
    folders = LruCache.for_folders()  # empty folders count one each
    for i in range(cache_mod.CACHED_DIR_ENTRIES + 10):
        folders.put(i, [])
    assert len(folders) == cache_mod.CACHED_DIR_ENTRIES == folders.total
