"""Backups of whole datastore images: the VMFS5 writer's VM folder (a qemu-img chain inside
an image read by debugvmfs and dissect elsewhere), the kernel-written OCFS2 volume with a
VMware folder and the kernel-written Oracle VM repository; each VM's disk restored on its own
and compared with qemu-img's reading of the same files and the md5s the guest computed. And a
2 TiB thin disk, in bounded memory."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import ocfs2_kernel
from tests.fixtures import vmfs_writer as W
from tests.helpers import ROOT, missing, require_tool, vmsift, vmsift_ok as ok

MIB = 1 << 20


def qemu_raw(disk: Path, out: Path) -> bytes:
    subprocess.run(["qemu-img", "convert", "-f", "vmdk", "-O", "raw", str(disk), str(out)],
                   check=True)
    return out.read_bytes()


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.setenv("VMSIFT_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "repo"
    ok("init", "-r", path, "--encryption", "none")
    return path


@pytest.fixture(scope="module")
def kernel_images(cache_dir):
    gone = ocfs2_kernel.missing_tools()
    if gone:
        missing(f"tools to build OCFS2 images: {', '.join(gone)}")
    return ocfs2_kernel.build_images(cache_dir)


def test_vmfs5_image(cache_dir, repo, tmp_path):
    for tool in ("qemu-img", "qemu-io"):
        require_tool(tool)
    image = W.build_image(cache_dir, "vm")
    work = image.parent / "work"
    ok("backup", "-r", repo, image, "--tag", "lun0")
    (snap,) = json.loads(ok("snapshots", "--json", "-r", repo).stdout)["snapshots"]
    assert snap["vm"]["name"] == "vm1" and snap["vm"]["config"] == "vm1/vm1.vmx"
    assert [d["name"] for d in snap["disks"]] == ["vm1.vmdk"]
    ok("restore", "-r", repo, "latest", "--target", tmp_path / "vm1", "--format", "vmdk")
    assert qemu_raw(tmp_path / "vm1" / "vm1.vmdk", tmp_path / "a.raw") == \
        qemu_raw(work / "vm1-000001.vmdk", tmp_path / "b.raw")
    restored = sorted(p.name for p in (tmp_path / "vm1").iterdir())
    assert restored == ["vm1.vmdk", "vm1.vmx"]   # the .vmsd is left out: disks are flat
    doc = json.loads(ok("ds", "vms", "--json", tmp_path / "vm1").stdout)
    assert doc["vms"][0]["disks"][0]["chain"] == ["vm1.vmdk"]


def test_ocfs2_vmware_folder(kernel_images, repo, tmp_path):
    require_tool("qemu-img")
    image = kernel_images["max4k"]
    ok("backup", "-r", repo, image.path)
    ok("ds", "extract", image.path, "vmware/testvm", tmp_path / "x")
    ok("restore", "-r", repo, "latest:testvm", "--disk", "testvm.vmdk", "--target",
       tmp_path / "r")
    assert (tmp_path / "r" / "testvm.raw").read_bytes() == \
        qemu_raw(tmp_path / "x" / "testvm" / "testvm-000002.vmdk", tmp_path / "q.raw")
    ls = json.loads(ok("ls", "--json", "-r", repo, "latest").stdout)["snapshot"]
    vmx = next(f for f in ls["files"] if f["name"] == "testvm.vmx")
    cat = vmsift("cat", "-r", repo, "file", "latest", "testvm.vmx")
    assert hashlib.md5(cat.stdout.encode()).hexdigest() == \
        image.manifest["vmware/testvm/testvm.vmx"]["md5"] and vmx["size"] == len(cat.stdout)


def test_oracle_vm_repository(kernel_images, repo, tmp_path):
    image = kernel_images["ovm4k1m"]
    events = [json.loads(line) for line in
              ok("backup", "--json", "-r", repo, image.path).stdout.splitlines()]
    snaps = [e for e in events if e["event"] == "snapshot"]
    assert sorted(e["vm"] for e in snaps) == ["vm-one", "vm-two"]
    for vm in ("vm-one", "vm-two"):
        ls = json.loads(ok("ls", "--json", "-r", repo, f"latest:{vm}").stdout)["snapshot"]
        assert ls["vm"]["kind"] == "oraclevm"
        assert any(f["name"] == "vm.cfg" for f in ls["files"])
        for disk in ls["disks"]:
            out = tmp_path / vm
            ok("restore", "-r", repo, f"latest:{vm}", "--disk", disk["name"], "--target", out)
            entry = image.manifest[disk["path"]]
            data = (out / disk["name"]).read_bytes()
            assert hashlib.md5(data).hexdigest() == entry["md5"] and len(data) == entry["size"]


PEAK = """
import resource, sys
from vmsift.cli import main
code = main(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def test_2tib_thin_disk_in_bounded_memory(repo, tmp_path):
    """A 2 TiB thin disk with a little data: backed up from its map (holes never read), in
    about the memory of a small disk."""
    require_tool("qemu-img")
    peaks = {}
    for name, size in (("small", "8G"), ("huge", "2T")):
        disk = tmp_path / f"{name}.vmdk"
        subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(disk), size], check=True)
        subprocess.run(["qemu-io", "-f", "vmdk", "-c", "write -P 0x5a 1G 2M", str(disk)],
                       check=True, capture_output=True)
        out = subprocess.run([sys.executable, "-c", PEAK, "backup", "-r", str(repo),
                              str(disk)], cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        peaks[name] = int(out.stderr.strip().splitlines()[-1])  # KiB
    assert peaks["huge"] <= peaks["small"] * 1.10 + 4096, peaks
    ls = json.loads(ok("ls", "--json", "-r", repo, "latest").stdout)["snapshot"]
    (disk,) = ls["disks"]
    assert disk["size"] == 2 << 40 and disk["stats"]["read"] == 2 * MIB
    assert disk["stats"]["skipped"] == (2 << 40) - 2 * MIB
