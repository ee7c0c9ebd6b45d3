"""Datastores inside a partitioned disk, as LUNs are usually laid out: ESX 3 put VMFS in an
MBR partition of type 0xFB, ESXi 5+ in a GPT partition of type "VMware VMFS"; an Oracle VM
repository LUN may carry a partition table too. Each disk is made by sfdisk/sgdisk around a
copy of a real volume image (placed with its holes kept), then opened through `ds`."""

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import require_tool, sparse_copy, vmsift
from vmsift.datastore.detect import open_datastore
from vmsift.datastore.vm import find_vms, oracle_vm_role
from vmsift.errors import UnsupportedError

MiB = 1 << 20
VMFS_GPT_TYPE = "AA31E02A-400F-11DB-9590-000C2911D1B8"  # "VMware VMFS" (sgdisk code fb00)
MD5_BIG = "3b777288e746b621d923226d76aefff1"  # `big` on the ESXi-made images (research notes)



def partitioned(volume: Path, out: Path, table: str, type_: str, start: int = MiB) -> Path:
    """A disk with one partition at ``start`` holding ``volume``: MBR (sfdisk) or GPT (sgdisk)."""
    size = volume.stat().st_size
    with open(out, "wb") as f:
        f.truncate(start + size + MiB)
    sectors = size // 512
    if table == "mbr":
        require_tool("sfdisk")
        spec = f"label: dos\nstart={start // 512}, size={sectors}, type={type_}\n"
        subprocess.run(["sfdisk", "-q", str(out)], input=spec, text=True, check=True,
                       capture_output=True)
    else:
        require_tool("sgdisk")
        subprocess.run(["sgdisk", f"-n=1:{start // 512}:{start // 512 + sectors - 1}",
                        f"-t=1:{type_}", str(out)], check=True, capture_output=True)
    sparse_copy(volume, out, start)
    return out


def test_vmfs5_in_a_gpt_partition(cache_dir, tmp_path):
    """ESXi's layout: a GPT disk whose partition 1 (type VMware VMFS) holds the VMFS5 volume."""
    from tests.fixtures.vmfs_images import image

    disk = partitioned(image("vmfs/vmfs5", cache_dir), tmp_path / "lun.img", "gpt",
                       VMFS_GPT_TYPE, start=2 * MiB)
    with open_datastore([str(disk)]) as v:
        info = v.info()
        assert info.fields["version"] == "VMFS-5.81" and info.fields["label"] == "vmfs5"
        with v.open("big") as f:
            assert hashlib.md5(f.read(0, f.size)).hexdigest() == MD5_BIG
    out = vmsift("ds", "info", "--json", disk)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)["data"]
    assert data["fs"]["uuid"] == "68626efc-2ea12e18-b4ef-bc2411b17e28"
    assert [d["name"] for d in data["lvm"]["devices"]] == [f"{disk}#p1"]  # found in partition 1
    out = vmsift("ds", "cat", disk, "big")
    assert out.returncode == 0
    # the listing through the partition is the listing of the bare volume
    bare = vmsift("ds", "ls", "-l", image("vmfs/vmfs5", cache_dir)).stdout
    assert vmsift("ds", "ls", "-l", disk).stdout == bare != ""


def test_vmfs3_in_an_mbr_partition(cache_dir, tmp_path):
    """ESX 3's layout: an MBR partition of type 0xFB holding a VMFS3 volume (our writer's)."""
    from tests.fixtures import vmfs3_writer

    img = vmfs3_writer.build_image(cache_dir, "basic-1m")
    disk = partitioned(img, tmp_path / "esx3.img", "mbr", "fb", start=63 * 512)
    with open_datastore([str(img)]) as bare, open_datastore([str(disk)]) as v:
        assert v.info().fields["version"] == "VMFS-3.31"
        assert v.info().fields["uuid"] == bare.info().fields["uuid"]
        for folder, entries in bare.walk():
            assert [e.name for e in v.listdir(folder)] == [e.name for e in entries]
            for e in entries:
                if e.type.value == "file":
                    path = f"{folder}/{e.name}".lstrip("/")
                    with bare.open(path) as a, v.open(path) as b:
                        assert a.size == b.size
                        assert list(a.extents()) == list(b.extents())
                        n = min(a.size, 8 * MiB)
                        assert a.read(0, n) == b.read(0, n)
        assert [vm.name for vm in find_vms(v)] == [vm.name for vm in find_vms(bare)] != []


def test_oracle_vm_repository_in_an_mbr_partition(cache_dir, tmp_path):
    """The kernel-written Oracle VM repository inside an MBR partition (type 0x83): found
    and its VMs' disks read with the guest's md5s."""
    from tests.fixtures import ocfs2_kernel
    from tests.helpers import missing

    gone = ocfs2_kernel.missing_tools()
    if gone:
        missing(f"tools to build OCFS2 images: {', '.join(gone)}")
    image = ocfs2_kernel.build_images(cache_dir)["ovm4k1m"]
    disk = partitioned(image.path, tmp_path / "repo-lun.img", "mbr", "83")
    with open_datastore([str(disk)]) as v:
        assert v.info().fields["label"] == v.sb.label
        assert oracle_vm_role(v)["role"] == "repository"
        vms = sorted(find_vms(v), key=lambda vm: vm.name)
        assert [vm.name for vm in vms] == ["vm-one", "vm-two"]
        for vm in vms:
            for d in vm.disks:
                if d.path and d.path in image.manifest:
                    with v.open(d.path) as f:
                        got = hashlib.md5(f.read(0, f.size)).hexdigest()
                    assert got == image.manifest[d.path]["md5"], d.path
    out = vmsift("ds", "vms", "--json", disk)
    assert out.returncode == 0, out.stderr
    assert sorted(vm["name"] for vm in json.loads(out.stdout)["vms"]) == ["vm-one", "vm-two"]


def test_unknown_partitions_are_listed_as_tried(tmp_path):
    """A partitioned disk whose partitions hold no datastore: exit 4, naming what was tried."""
    blank = tmp_path / "blank.img"
    with open(blank, "wb") as f:
        f.truncate(8 * MiB)
    disk = partitioned(blank, tmp_path / "disk.img", "gpt", "8300")
    out = vmsift("ds", "info", disk)
    assert out.returncode == 4, out.stderr
    assert "partition" in out.stderr and "Traceback" not in out.stderr
    with pytest.raises(UnsupportedError, match="partition"):
        open_datastore([str(disk)])
