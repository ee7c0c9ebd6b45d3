"""VMDK descriptors (standalone and embedded) made by qemu-img, checked against qemu-img info."""

import json
import os
import subprocess

import pytest

from tests.fixtures import qemu_vmdk
from tests.helpers import require_tool, sample
from vmsift.errors import FormatError
from vmsift.formats.vmdk import descriptor, sparse
from vmsift.inspect import inspect_path
from vmsift.source import BytesSource, FileSource


@pytest.fixture(scope="module")
def qemu_set(cache_dir):
    require_tool("qemu-img")
    require_tool("qemu-io")
    return qemu_vmdk.build_set(cache_dir / "qemu-vmdk")


def qemu_info(path):
    out = subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def descriptor_of(path):
    """Our descriptor of a qemu-made file, and the exact text it came from."""
    with FileSource(path) as src:
        head = src.read(0, 4)
        if head == sparse.MAGIC:
            header = sparse.read_header(src)
            raw = src.read(header.descriptor_offset * 512, header.descriptor_size * 512)
            return sparse.embedded_descriptor(src, header), raw.split(b"\0")[0]
        raw = src.read_all(1 << 20)
        return descriptor.parse(raw, str(path)), raw


NAMES = qemu_vmdk.SUBFORMATS + ["lsilogic-hw6", "converted-stream", "chain-base", "chain-1",
                                "chain-2"]


@pytest.mark.parametrize("name", NAMES)
def test_matches_qemu_img_info(qemu_set, name):
    path = qemu_set[name]
    desc, raw = descriptor_of(path)
    assert desc.dump() == raw  # byte-exact round trip
    info = qemu_info(path)
    spec = info["format-specific"]["data"]
    assert desc.cid == spec["cid"] and desc.parent_cid == spec["parent-cid"]
    assert desc.create_type == spec["create-type"]
    assert desc.capacity_sectors * 512 == info["virtual-size"]
    ours = [(os.path.basename(e.filename), e.sectors * 512) for e in desc.extents]
    theirs = [(os.path.basename(e["filename"]), e["virtual-size"]) for e in spec["extents"]]
    assert ours == theirs
    for extent in desc.extents:
        assert (path.parent / extent.filename).exists()
    if "backing-filename" in info:
        assert desc.parent_hint == info["backing-filename"]
    else:
        assert desc.parent_hint is None and not desc.has_parent


def test_subformat_specifics(qemu_set):
    flat, _ = descriptor_of(qemu_set["monolithicFlat"])
    assert [(e.type, e.offset) for e in flat.extents] == [("FLAT", 0)]
    two_sparse, _ = descriptor_of(qemu_set["twoGbMaxExtentSparse"])
    assert [e.sectors for e in two_sparse.extents] == [4194304, 2097152]
    assert {e.type for e in two_sparse.extents} == {"SPARSE"}
    lsi, _ = descriptor_of(qemu_set["lsilogic-hw6"])
    assert lsi.ddb_get("adapterType") == "lsilogic" and lsi.ddb_get("virtualHWVersion") == "6"
    with FileSource(qemu_set["lsilogic-hw6"]) as src:
        h = sparse.read_header(src)
    assert h.version == 2 and sparse.SparseFlags.ZEROED_GRAIN_GTE in h.flags
    with FileSource(qemu_set["converted-stream"]) as src:
        h = sparse.read_header(src)
    assert h.version == 3 and h.stream_optimized and h.compress_algorithm == 1


def test_chain_cids_link(qemu_set):
    base, _ = descriptor_of(qemu_set["chain-base"])
    one, _ = descriptor_of(qemu_set["chain-1"])
    two, _ = descriptor_of(qemu_set["chain-2"])
    assert base.parent_cid == descriptor.NO_PARENT and not base.has_parent
    assert one.parent_cid == base.cid and one.parent_hint == "chain-base.vmdk"
    assert two.parent_cid == one.cid and two.parent_hint == "chain-1.vmdk"


def test_inspect_sparse_extent_reports_header_and_descriptor(qemu_set):
    report = inspect_path(qemu_set["chain-1"])
    assert report.kind == "vmdk-sparse"
    assert report.data["header"]["capacity_sectors"] == 64 * 2048
    assert report.data["descriptor"]["parent_hint"] == "chain-base.vmdk"
    assert report.fields["parent"] == "chain-base.vmdk"
    report = inspect_path(qemu_set["twoGbMaxExtentFlat"])
    assert report.kind == "vmdk-descriptor"
    assert [r[2] for r in report.tables[0].rows] == ["FLAT", "FLAT"]


def test_public_samples():
    desc = descriptor.read(FileSource(sample("libvmdk_descriptor_file.1")))
    assert desc.dump() == sample("libvmdk_descriptor_file.1").read_bytes()
    assert (desc.version, desc.cid, desc.parent_cid) == (1, 0xFFFFFFFE, 0xFFFFFFFF)
    assert desc.get("encoding") == "windows-1252" and desc.get("isNativeSnapshot") == "no"
    assert desc.ddb_get("uuid") == "60 00 C2 99 3c 3b c5 c0-29 99 4b e2 5b 11 a2 45"
    assert desc.ddb_get("longContentID") == "e61f2478a1f3c8bc7c3a8f36fffffffe"
    assert [(e.access, e.sectors, e.type, e.filename) for e in desc.extents] == [
        ("RW", 16777216, "SPARSE", "test1.vmdk")]
    report = inspect_path(sample("dfvfs_image_2014.vmdk"))
    assert report.data["header"]["capacity_sectors"] == 200
    assert report.data["descriptor"]["ddb"]["geometry.cylinders"] == "0"
    report = inspect_path(sample("dfvfs_ext2.vmdk"))
    assert report.data["descriptor"]["extents"][0]["filename"] == "ext2.vmdk"
    assert report.data["header"]["grain_sectors"] == 128


def test_every_extent_kind_and_ctk_path():
    raw = b"""# Disk DescriptorFile
version=3
CID=0000abcd
parentCID=ffffffff
createType="custom"
changeTrackPath="d-ctk.vmdk"
RW 100 FLAT "a b.vmdk" 7
RDONLY 200 SPARSE "s.vmdk"
NOACCESS 300 ZERO
RW 400 VMFS "v.vmdk"
RW 500 VMFSSPARSE "d-delta.vmdk"
RW 600 VMFSRDM "r-rdm.vmdk"
RW 700 VMFSRAW "/dev/sdb" 0 part-uuid dev-id
RW 800 SESPARSE "x-sesparse.vmdk"
ddb.uuid = "60 00"
"""
    desc = descriptor.parse(raw)
    assert desc.change_track_path == "d-ctk.vmdk" and desc.version == 3
    assert [(e.access, e.type) for e in desc.extents] == [
        ("RW", "FLAT"), ("RDONLY", "SPARSE"), ("NOACCESS", "ZERO"), ("RW", "VMFS"),
        ("RW", "VMFSSPARSE"), ("RW", "VMFSRDM"), ("RW", "VMFSRAW"), ("RW", "SESPARSE")]
    assert desc.extents[0].filename == "a b.vmdk" and desc.extents[0].offset == 7
    assert desc.extents[2].filename is None
    assert desc.extents[6].extra == ["part-uuid", "dev-id"]
    assert desc.capacity_sectors == sum(range(100, 900, 100))
    assert desc.dump() == raw and desc.warnings == []


def test_set_rewrites_one_line():
    raw = b'# Disk DescriptorFile\r\nversion=1\r\nCID=12345678\r\nparentCID=ffffffff\r\n' \
          b'createType="monolithicFlat"\r\nRW 8 FLAT "f.vmdk" 0\r\nddb.uuid = "x"\r\n'
    desc = descriptor.parse(raw)
    desc.set("CID", "deadbeef")
    desc.set("ddb.uuid", "y")
    assert desc.dump() == raw.replace(b"CID=12345678", b"CID=deadbeef").replace(
        b'ddb.uuid = "x"', b'ddb.uuid = "y"')
    assert descriptor.parse(desc.dump()).cid == 0xDEADBEEF


def test_damaged_descriptors():
    with pytest.raises(FormatError) as e:
        descriptor.parse(b"# Disk DescriptorFile\nnothing here\n", "bad.vmdk")
    assert "bad.vmdk" in str(e.value)
    desc = descriptor.parse(b'CID=xyz\ncreateType="vmfs"\nRW 5 WEIRD "a"\ngarbage line\n')
    assert desc.cid is None
    assert any("CID 'xyz'" in w for w in desc.warnings)
    assert any("unknown extent type" in w for w in desc.warnings)
    assert any("line 4" in w for w in desc.warnings)


def test_sparse_header_errors_name_offsets():
    with pytest.raises(FormatError, match="bad magic"):
        sparse.read_header(BytesSource(b"XXXX" + bytes(508), "x.vmdk"))
    with pytest.raises(FormatError) as e:
        sparse.read_header(BytesSource(b"KDMV" + bytes(100), "short.vmdk"))
    assert "short.vmdk @ 0x0" in str(e.value)
    header = bytearray(sparse.SparseHeader.build(dict(
        version=1, flags=3, capacity=8, grain_size=128, descriptor_offset=1,
        descriptor_size=0xFFFFFFFF, num_gtes_per_gt=512, rgd_offset=0, gd_offset=0,
        overhead=0, unclean_shutdown=0, newline_check=b"\n \r\n", compress_algorithm=0,
        pad=bytes(433))))
    src = BytesSource(bytes(header), "huge.vmdk")
    with pytest.raises(FormatError, match="larger than"):
        sparse.embedded_descriptor(src, sparse.read_header(src))
    header[28:36] = (10**6).to_bytes(8, "little")
    header[36:44] = (4).to_bytes(8, "little")
    src = BytesSource(bytes(header), "far.vmdk")
    with pytest.raises(FormatError, match="past the end"):
        sparse.embedded_descriptor(src, sparse.read_header(src))
