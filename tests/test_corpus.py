"""vmsift on real public files (tests/fixtures/corpus.py): kinds, round trips, decoded values."""

import json
import re
import subprocess

import pytest

from tests.fixtures.corpus import corpus_files, require
from tests.helpers import require_tool
from vmsift.errors import FormatError
from vmsift.formats import dictfile, vmx
from vmsift.formats.vmdk.sparse import SparseExtent, read_header
from vmsift.inspect import inspect_path
from vmsift.source import Alloc, FileSource

# Values read off the files by hand: (name, memory MiB, CPUs, firmware, disks, NICs, first disk)
VMX_FACTS = {
    "libvirt/esx-in-the-wild-1.vmx": ("Fedora11", 1024, 1, "bios", 1, 1, "Fedora11.vmdk"),
    "libvirt/esx-in-the-wild-8.vmx": ("RHEL7_10_NICs", 2048, 8, "bios", 3, 10, "RHEL7_6.vmdk"),
    "libvirt/esx-in-the-wild-12.vmx": ("Auto-esx8.0-rhell9.3-efi-with-empty-cdrom", 2048, 1,
                                       "efi", 1, 1, None),
    "virt-v2v/test-i-vmx-1.vmx": ("BZ1308535_21disks", 2048, 1, "bios", 21, 1,
                                  "BZ1308535_21disks.vmdk"),
    "virt-v2v/test-i-vmx-7.vmx": ("win2019", 4096, 2, "efi", 2, 1, None),
    "libvirt/fusion-in-the-wild-1.vmx": ("ATTM_VM", 3572, 2, "bios", 1, 2, "ATTM_VM.vmdk"),
}


@pytest.mark.parametrize("item", corpus_files("vmx"))
def test_real_vmx(item, cache_dir):
    path = require(item, cache_dir)
    raw = path.read_bytes()
    report = inspect_path(path)
    assert report.kind == "vmx"
    conf = vmx.parse(raw)
    assert conf.dump() == raw
    assert conf.dictionary.warnings == []
    # an independent count: every device-ish key line is attributed to one device
    device_keys = [k for k, _ in conf.dictionary.items()
                   if re.match(r"^(scsi|sata|ide|nvme)\d+:\d+\.", k, re.I)]
    slots = {k.split(".")[0].lower() for k in device_keys}
    assert {d.id for d in conf.devices if d.kind in ("disk", "cdrom", "passthrough")} == slots
    if item.name in VMX_FACTS:
        name, mem, cpus, fw, ndisks, nnics, first = VMX_FACTS[item.name]
        assert (conf.name, conf.memory_mb, conf.cpus, conf.firmware) == (name, mem, cpus, fw)
        disks = conf.disks()
        assert len(disks) == ndisks
        assert len([d for d in conf.devices if d.kind == "nic"]) == nnics
        if first:
            assert disks[0].backing == first


def test_real_encrypted_vmx(cache_dir):
    item = next(p.values[0] for p in corpus_files("vmx")
                if p.values[0].name == "dissect.hypervisor/encrypted.vmx")
    conf = vmx.parse(require(item, cache_dir).read_bytes())
    assert conf.encrypted and conf.name == "Encrypted VM" and conf.devices == []


@pytest.mark.parametrize("item", corpus_files("dictfile"))
def test_real_dictionary_files_round_trip(item, cache_dir):
    raw = require(item, cache_dir).read_bytes()
    d = dictfile.parse(raw)
    assert d.dump() == raw and d.warnings == [] and d.get(".encoding") == "UTF-8"


def qemu_map(path):
    require_tool("qemu-img")
    return json.loads(subprocess.run(["qemu-img", "map", "--output=json", str(path)],
                                     check=True, capture_output=True, text=True).stdout)


@pytest.mark.parametrize("item", corpus_files("vmdk-sparse"))
def test_real_sparse_extents(item, cache_dir):
    path = require(item, cache_dir)
    report = inspect_path(path)
    assert report.kind == "vmdk-sparse"
    with FileSource(path) as f:
        ext = SparseExtent(f)
        assert ext.check() == []
        if item.name == "qemu/iotest-version3.vmdk":
            # made by VMware: grain directory at the end, found through the footer
            assert read_header(f).gd_offset == 0xFFFFFFFFFFFFFFFF and ext.size == 16 << 30
            for i in range(100):
                assert ext.read(i * 655360 + i * 512, 512) == bytes([0x30 + i % 10]) * 512
            ours = [(r.offset, r.length) for r in ext.extents() if r.kind is Alloc.DATA]
            theirs = [(m["start"], m["length"]) for m in qemu_map(path) if m["data"]]
            assert ours == theirs and len(ours) == 151
        if item.name == "dfvfs/image.vmdk":
            assert ext.size == 200 * 512
            assert report.data["descriptor"]["ddb"]["geometry.cylinders"] == "0"


def test_damaged_real_file_is_a_clean_error(cache_dir):
    item = next(p.values[0] for p in corpus_files(include_damaged=True)
                if p.values[0].name == "qemu/afl9.vmdk")
    with pytest.raises(FormatError, match="afl9.vmdk @ 0x1c: descriptor offset"):
        inspect_path(require(item, cache_dir))


@pytest.mark.parametrize("item", corpus_files("vmdk-sesparse"))
def test_real_esxi_sesparse_equals_qemu(item, cache_dir, tmp_path):
    """An ESXi-made SESparse extent, given a descriptor, reads as qemu-img reads it."""
    from vmsift.datastore.disk import open_disk
    from vmsift.datastore.folder import FolderVolume

    require_tool("qemu-img")
    (tmp_path / "x-sesparse.vmdk").write_bytes(require(item, cache_dir).read_bytes())
    (tmp_path / "x.vmdk").write_text('# Disk DescriptorFile\nversion=1\nCID=12345678\n'
                                     'parentCID=ffffffff\ncreateType="seSparse"\n'
                                     'RW 1048576 SESPARSE "x-sesparse.vmdk"\n')
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(tmp_path / "x.vmdk"),
                    str(tmp_path / "q.raw")], check=True)
    with open_disk(FolderVolume(tmp_path), "x.vmdk") as disk:
        assert disk.read(0, disk.size) == (tmp_path / "q.raw").read_bytes()
        ours = [(r.offset, r.length) for r in disk.extents() if r.kind is Alloc.DATA]
    assert ours == [(m["start"], m["length"]) for m in qemu_map(tmp_path / "x.vmdk") if m["data"]]
    assert ours == [(0, 16 << 20)]
