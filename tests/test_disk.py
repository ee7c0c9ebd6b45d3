"""Whole disks with their chains, flattened by vmsift vs qemu-img convert / map."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import require_tool, vmsift
from vmsift.datastore.disk import describe, open_disk
from vmsift.datastore.export import export_raw
from vmsift.datastore.folder import FolderVolume
from vmsift.errors import (ChainError, ErrorKind, Problem, SourceError, TruncatedError,
                           UnsupportedError)
from vmsift.source import Alloc

GiB = 1 << 30
MiB = 1 << 20
GRAIN = 65536
SUBFORMATS = ["monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse",
              "twoGbMaxExtentFlat", "streamOptimized"]
# grain boundaries, a write across the 2 GiB extent boundary, the last sector
BASE_WRITES = [(0x11, 0, GRAIN), (0x22, 3 * GRAIN - 512, 1024), (0x33, 2 * GiB - 4096, 8192),
               (0x44, 3 * GiB - 512, 512)]
CHILD_WRITES = [[(0x55, GRAIN, 2 * GRAIN)], [(0x66, 2 * GiB - 512, 512), (0x77, 100 * MiB, 1)]]


def run(*args, cwd=None):
    return subprocess.run(args, check=True, capture_output=True, text=True, cwd=cwd).stdout


def qemu_write(path, writes):
    run("qemu-io", "-f", "vmdk", *[a for p, o, n in writes
                                   for a in ("-c", f"write -P {p:#x} {o} {n}")], str(path))


@pytest.fixture(scope="module")
def disks(cache_dir):
    """Per subformat: a 3 GiB base with data, and two sparse children on top (3 links)."""
    require_tool("qemu-img")
    require_tool("qemu-io")
    root = cache_dir / "disk-chains"
    for sub in SUBFORMATS:
        d = root / sub
        if (d / "done").exists():
            continue
        d.mkdir(parents=True, exist_ok=True)
        if sub == "streamOptimized":  # qemu writes stream files by conversion only
            run("qemu-img", "create", "-q", "-f", "vmdk", "tmp.vmdk", "3G", cwd=d)
            qemu_write(d / "tmp.vmdk", BASE_WRITES)
            run("qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized",
                "tmp.vmdk", "base.vmdk", cwd=d)
            (d / "tmp.vmdk").unlink()
        else:
            run("qemu-img", "create", "-q", "-f", "vmdk", "-o", f"subformat={sub}",
                "base.vmdk", "3G", cwd=d)
            qemu_write(d / "base.vmdk", BASE_WRITES)
        parent = "base.vmdk"
        for i, writes in enumerate(CHILD_WRITES, 1):
            run("qemu-img", "create", "-q", "-f", "vmdk", "-b", parent, "-F", "vmdk",
                f"child{i}.vmdk", cwd=d)
            qemu_write(d / f"child{i}.vmdk", writes)
            parent = f"child{i}.vmdk"
        run("qemu-img", "convert", "-O", "raw", "child2.vmdk", "expected.raw", cwd=d)
        (d / "map.json").write_text(run("qemu-img", "map", "--output=json", "child2.vmdk",
                                        cwd=d))
        (d / "done").touch()
    return root


def merged(runs):
    out = []
    for start, length, data in runs:
        if out and out[-1][2] == data and out[-1][0] + out[-1][1] == start:
            out[-1] = (out[-1][0], out[-1][1] + length, data)
        else:
            out.append((start, length, data))
    return out


@pytest.mark.parametrize("sub", SUBFORMATS)
def test_flattened_chain_equals_qemu(disks, sub):
    d = disks / sub
    with open_disk(FolderVolume(d), "child2.vmdk") as disk:
        assert [link.path for link in disk.chain] == ["child2.vmdk", "child1.vmdk", "base.vmdk"]
        assert disk.size == 3 * GiB
        ours = merged([(r.offset, r.length, r.kind is Alloc.DATA) for r in disk.extents()])
        theirs = merged([(m["start"], m["length"], m["data"])
                         for m in json.loads((d / "map.json").read_text())])
        if sub not in ("monolithicFlat", "twoGbMaxExtentFlat"):
            assert ours == theirs
        # every byte qemu or we call data must match; the rest is zero by both maps
        with open(d / "expected.raw", "rb") as expected:
            for start, length, is_data in merged(ours + theirs):
                if is_data:
                    for pos in range(start, start + length, 8 * MiB):
                        n = min(8 * MiB, start + length - pos)
                        expected.seek(pos)
                        assert disk.read(pos, n) == expected.read(n), (sub, pos)
        assert disk.read(3 * GiB - 512, 1024) == b"\x44" * 512
        assert disk.read(2 * GiB - 1024, 1024) == b"\x33" * 512 + b"\x66" * 512


def test_flat_base_map_follows_host_holes(disks):
    """A flat extent is HOLE where its host file is sparse, so the map still skips it."""
    with open_disk(FolderVolume(disks / "monolithicFlat"), "base.vmdk") as disk:
        data = sum(r.length for r in disk.extents() if r.kind is Alloc.DATA)
    assert data < 64 * MiB


def test_export_raw_is_sparse_and_exact(disks, tmp_path):
    d = disks / "twoGbMaxExtentSparse"
    out = tmp_path / "out.raw"
    with open_disk(FolderVolume(d), "child2.vmdk") as disk:
        stats = export_raw(disk, out)
    assert out.stat().st_size == 3 * GiB
    assert out.stat().st_blocks * 512 < 16 * MiB  # holes were not written
    assert stats.written < 16 * MiB
    run("cmp", str(out), str(d / "expected.raw"))


def test_describe_chain(disks):
    d = disks / "monolithicSparse"
    with open_disk(FolderVolume(d), "child2.vmdk") as disk:
        report = describe(disk)
    chain = report.data["chain"]
    assert [c["path"] for c in chain] == ["child2.vmdk", "child1.vmdk", "base.vmdk"]
    assert chain[0]["parent_cid"] == chain[1]["cid"] and chain[1]["parent_cid"] == chain[2]["cid"]
    assert chain[2]["parent_cid"] == "ffffffff"
    assert chain[0]["allocated"] == 2 * GRAIN  # child2: one grain at 2 GiB - 512, one at 100 MiB
    assert chain[1]["allocated"] == 2 * GRAIN
    assert report.data["adapter"] == "ide"


def test_allocated_of_a_stream_disk_is_what_its_file_stores(tmp_path):
    # 4 MiB of one byte value compress to a file of a few KiB (qemu-img writes it)
    require_tool("qemu-img")
    require_tool("qemu-io")
    run("qemu-img", "create", "-q", "-f", "raw", "src.raw", "64M", cwd=tmp_path)
    run("qemu-io", "-f", "raw", "-c", "write -P 0x42 0 4M", "src.raw", cwd=tmp_path)
    run("qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", "src.raw",
        "s.vmdk", cwd=tmp_path)
    size = (tmp_path / "s.vmdk").stat().st_size
    with open_disk(FolderVolume(tmp_path), "s.vmdk") as disk:
        assert describe(disk).data["chain"][0]["allocated"] == size < 4 * MiB
        assert disk.read(0, 4 * MiB) == b"\x42" * (4 * MiB)


def _copy_chain(src: Path, dst: Path):
    dst.mkdir()
    for name in ("base.vmdk", "child1.vmdk", "child2.vmdk"):
        (dst / name).write_bytes((src / name).read_bytes())


def _patch_descriptor(path: Path, old: bytes, new: bytes):
    raw = path.read_bytes()
    assert old in raw
    assert len(old) == len(new)  # keep the embedded descriptor's size
    path.write_bytes(raw.replace(old, new, 1))


def test_cid_mismatch_is_an_error_unless_asked(disks, tmp_path):
    d = tmp_path / "c"
    _copy_chain(disks / "monolithicSparse", d)
    # qemu-img writes a random CID without leading zeros: patch the text as it stands
    line = re.search(rb"\nCID=[0-9a-f]+\n", (d / "base.vmdk").read_bytes()[:65536]).group()
    other = b"0" if int(line[5:-1], 16) else b"1"
    _patch_descriptor(d / "base.vmdk", line, b"\nCID=" + other * (len(line) - 6) + b"\n")
    with pytest.raises(ChainError, match="does not match the parent's CID"):
        open_disk(FolderVolume(d), "child2.vmdk")
    with open_disk(FolderVolume(d), "child2.vmdk", strict=False) as disk:
        assert len(disk.warnings) == 1 and "parent changed" in disk.warnings[0]
        problem = disk.warnings[0]  # a record: the same line, and whose it is
        assert isinstance(problem, Problem) and problem.source == "child1.vmdk"
        assert str(problem) == f"child1.vmdk: {problem.what}"


def _delta(path: Path, parent: str, extent: str = "child1.vmdk"):
    """A text descriptor of a delta whose grains are child1's and whose parent is ``parent``."""
    path.write_text('# Disk DescriptorFile\nversion=1\nCID=00000001\nparentCID=00000001\n'
                    f'createType="monolithicSparse"\nparentFileNameHint="{parent}"\n'
                    f'RW {3 * GiB // 512} SPARSE "{extent}"\n')


def test_loops_escapes_and_missing_parents(disks, tmp_path):
    d = tmp_path / "c"
    _copy_chain(disks / "monolithicSparse", d)
    _delta(d / "gone.vmdk", "nothing-here.vmdk")
    with pytest.raises(ChainError, match="'nothing-here.vmdk' is missing"):
        open_disk(FolderVolume(d), "gone.vmdk")
    _delta(d / "loop-a.vmdk", "loop-b.vmdk")
    _delta(d / "loop-b.vmdk", "./loop-a.vmdk")
    with pytest.raises(ChainError, match="loops back to loop-a.vmdk"):
        open_disk(FolderVolume(d), "loop-a.vmdk")
    _delta(d / "escape.vmdk", "../../x.vmdk")
    with pytest.raises(ChainError, match="leaves the datastore"):
        open_disk(FolderVolume(d), "escape.vmdk")
    _delta(d / "abs.vmdk", "/etc/passwd")
    with pytest.raises(ChainError, match="not on this datastore"):
        open_disk(FolderVolume(d), "abs.vmdk")
    _delta(d / "esx.vmdk", "/vmfs/volumes/5f1e2d3c-aabbccdd/vm/base.vmdk")
    with open_disk(FolderVolume(d), "esx.vmdk", strict=False) as disk:  # found beside it
        assert [link.path for link in disk.chain] == ["esx.vmdk", "base.vmdk"]
    _delta(d / "bad-extent.vmdk", "base.vmdk", extent="../../etc/shadow")
    with pytest.raises(ChainError, match="leaves the datastore"):
        open_disk(FolderVolume(d), "bad-extent.vmdk")


def test_symlink_out_of_the_datastore_is_refused(tmp_path, disks):
    d = tmp_path / "ds"
    d.mkdir()
    (d / "x.vmdk").symlink_to(disks / "monolithicSparse" / "base.vmdk")
    with pytest.raises(SourceError, match="symbolic link") as e:
        open_disk(FolderVolume(d), "x.vmdk")  # links are never followed, in or out
    assert e.value.kind is ErrorKind.IS_A_LINK


def test_raw_device_maps(tmp_path):
    (tmp_path / "r.vmdk").write_text('# Disk DescriptorFile\nversion=1\nCID=fffffffe\n'
                                     'parentCID=ffffffff\n'
                                     'createType="vmfsPassthroughRawDeviceMap"\n'
                                     'RW 2048 VMFSRDM "r-rdmp.vmdk"\n')
    with open_disk(FolderVolume(tmp_path), "r.vmdk") as disk:
        report = describe(disk)
        assert report.data["chain"][0]["raw_device_map"] == {
            "mapping_file": "r-rdmp.vmdk", "mode": "physical (passthrough)",
            "data_present": False}
        with pytest.raises(UnsupportedError, match="raw device mapping .* LUN") as e:
            disk.read(512, 10)
        assert "r-rdmp.vmdk @ 0x200" in str(e.value)
    lun = tmp_path / "lun.img"
    lun.write_bytes(b"L" * 2048 * 512)
    from vmsift.datastore.disk import OpenOptions
    from vmsift.source import FileSource
    with FileSource(lun) as dev, open_disk(FolderVolume(tmp_path), "r.vmdk",
                                           options=OpenOptions(device=dev)) as disk:
        assert disk.read(0, 4) == b"LLLL"
        assert describe(disk).data["chain"][0]["raw_device_map"]["data_present"] is True


def test_missing_and_truncated_extents(tmp_path):
    (tmp_path / "z.vmdk").write_text('createType="custom"\nRW 2048 ZERO\n'
                                     'RW 8 FLAT "missing-flat.vmdk" 0\n')
    with pytest.raises(SourceError, match="no such file"):
        open_disk(FolderVolume(tmp_path), "z.vmdk")
    (tmp_path / "short-flat.vmdk").write_bytes(b"x" * 1000)
    (tmp_path / "s.vmdk").write_text('createType="monolithicFlat"\n'
                                     'RW 8 FLAT "short-flat.vmdk" 0\n')
    with open_disk(FolderVolume(tmp_path), "s.vmdk") as disk:
        with pytest.raises(TruncatedError) as e:
            disk.read(0, 4096)
        assert "short-flat.vmdk @ 0x3e8" in str(e.value)


def test_salvage_reads_truncated_sparse_as_zeros(disks, tmp_path):
    from vmsift.datastore.disk import OpenOptions
    raw = (disks / "monolithicSparse" / "base.vmdk").read_bytes()
    (tmp_path / "cut.vmdk").write_bytes(raw[:len(raw) - 65536 - 1000])  # last grains lost
    with open_disk(FolderVolume(tmp_path), "cut.vmdk") as disk:
        with pytest.raises(TruncatedError, match="runs past the end"):
            disk.read(3 * GiB - 512, 512)
        assert disk.read(0, 4) == b"\x11" * 4  # what is still there reads fine
    with open_disk(FolderVolume(tmp_path), "cut.vmdk",
                   options=OpenOptions(salvage=True)) as disk:
        assert disk.read(3 * GiB - 512, 512) == bytes(512)
        assert disk.read(0, 4) == b"\x11" * 4
        damaged = disk.chain[0].source.damaged
    assert len(damaged) == 1 and "read as zeros" in damaged[0] and "cut.vmdk" in damaged[0]



def test_cli_disk_commands(disks, tmp_path):
    d = disks / "twoGbMaxExtentFlat"
    out = vmsift("disk", "info", "--json", d / "child2.vmdk")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["kind"] == "disk" and len(doc["data"]["chain"]) == 3
    assert doc["data"]["chain"][2]["create_type"] == "twoGbMaxExtentFlat"
    out = vmsift("disk", "map", "--json", d / "child2.vmdk")
    runs = json.loads(out.stdout)["runs"]
    # the flat base is mapped from its host file's blocks: data reaches 3 grains + 512 bytes
    assert runs[0]["offset"] == 0 and runs[0]["kind"] == "data"
    assert 3 * GRAIN + 512 <= runs[0]["length"] <= 4 * GRAIN
    assert sum(r["length"] for r in runs) == 3 * GiB
    target = tmp_path / "x.raw"
    assert vmsift("disk", "export", d / "child2.vmdk", target).returncode == 0
    again = vmsift("disk", "export", d / "child2.vmdk", target)
    assert again.returncode == 6 and "output exists" in again.stderr
    run("cmp", str(target), str(d / "expected.raw"))


def test_export_at_snapshot(disks, tmp_path):
    """A .vmsd beside the chain: snapshot 'installed' holds base.vmdk, 'patched' child1."""
    d = tmp_path / "vm"
    _copy_chain(disks / "monolithicSparse", d)
    (d / "vm.vmsd").write_text(
        '.encoding = "UTF-8"\nsnapshot.lastUID = "2"\nsnapshot.current = "2"\n'
        'snapshot0.uid = "1"\nsnapshot0.displayName = "installed"\n'
        'snapshot0.disk0.fileName = "base.vmdk"\nsnapshot0.disk0.node = "scsi0:0"\n'
        'snapshot1.uid = "2"\nsnapshot1.parent = "1"\nsnapshot1.displayName = "patched"\n'
        'snapshot1.disk0.fileName = "child1.vmdk"\nsnapshot1.disk0.node = "scsi0:0"\n'
        'snapshot.numSnapshots = "2"\n')
    for wanted, expected_top, byte_at_64k in [("installed", "base.vmdk", b"\x00"),
                                              ("2", "child1.vmdk", b"\x55")]:
        out = vmsift("disk", "info", "--json", "--snapshot", wanted, d / "child2.vmdk")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["data"]["chain"][0]["path"] == expected_top
        target = tmp_path / f"{wanted}.raw"
        assert vmsift("disk", "export", "--snapshot", wanted, d / "child2.vmdk",
                      target).returncode == 0
        with open(target, "rb") as f:
            assert f.read(1) == b"\x11"
            f.seek(GRAIN)
            assert f.read(1) == byte_at_64k
    out = vmsift("disk", "info", "--snapshot", "nope", d / "child2.vmdk")
    assert out.returncode == 5 and "no snapshot 'nope'" in out.stderr
    assert "1='installed'" in out.stderr


def test_disk_info_lists_partitions(tmp_path):
    """A GPT written by sgdisk into a raw file, converted to a sparse VMDK by qemu-img."""
    require_tool("sgdisk")
    raw = tmp_path / "p.raw"
    with open(raw, "wb") as f:
        f.truncate(64 * MiB)
    run("sgdisk", "-n", "1:2048:+16M", "-t", "1:ef00", "-c", "1:EFI system",
        "-n", "2:0:0", "-t", "2:fb00", "-c", "2:datastore", str(raw))
    run("qemu-img", "convert", "-O", "vmdk", str(raw), str(tmp_path / "p.vmdk"))
    with open_disk(FolderVolume(tmp_path), "p.vmdk") as disk:
        report = describe(disk)
    assert report.data["partition_table"] == "gpt"
    parts = report.data["partitions"]
    assert [(p["index"], p["start"], p["name"]) for p in parts] == [
        (1, 2048 * 512, "EFI system"), (2, 2048 * 512 + 16 * MiB, "datastore")]
    assert "VMFS" in report.tables[2].rows[1][3]


@pytest.mark.parametrize("subformat", ["monolithicSparse", "streamOptimized"])
def test_cli_export_vmdk_reads_back_in_qemu(disks, tmp_path, subformat):
    d = disks / "monolithicSparse"
    target = tmp_path / "out.vmdk"
    out = vmsift("disk", "export", "--format", "vmdk", "--subformat", subformat,
                 d / "child2.vmdk", target)
    assert out.returncode == 0, out.stderr
    info = json.loads(run("qemu-img", "info", "--output=json", str(target)))
    assert info["format-specific"]["data"]["create-type"] == subformat
    run("qemu-img", "compare", "-f", "vmdk", "-F", "raw", str(target), str(d / "expected.raw"))


def test_cli_salvage_and_device(disks, tmp_path):
    raw = (disks / "monolithicSparse" / "base.vmdk").read_bytes()
    (tmp_path / "cut.vmdk").write_bytes(raw[:len(raw) - 65536 - 1000])
    out = vmsift("disk", "export", tmp_path / "cut.vmdk", tmp_path / "a.raw")
    assert out.returncode == 3 and "runs past the end" in out.stderr
    assert not (tmp_path / "a.raw").exists()  # no half-written output left
    out = vmsift("disk", "export", "--salvage", tmp_path / "cut.vmdk", tmp_path / "b.raw")
    assert out.returncode == 0 and "warning: salvaged:" in out.stderr
    (tmp_path / "r.vmdk").write_text('createType="vmfsRawDeviceMap"\nRW 8 VMFSRDM "r-rdm.vmdk"\n')
    (tmp_path / "lun.img").write_bytes(b"Q" * 4096)
    out = vmsift("disk", "export", tmp_path / "r.vmdk", tmp_path / "c.raw")
    assert out.returncode == 4 and "give the LUN image" in out.stderr
    out = vmsift("disk", "export", "--device", tmp_path / "lun.img", tmp_path / "r.vmdk",
                 tmp_path / "d.raw")
    assert out.returncode == 0 and (tmp_path / "d.raw").read_bytes() == b"Q" * 4096


def _cut_copy(src: Path, dst: Path, names, cut: str):
    """Copy the files ``names`` of a disk folder, ``cut`` losing its last grain (and more)."""
    dst.mkdir()
    for name in names:
        raw = (src / name).read_bytes()
        (dst / name).write_bytes(raw[:len(raw) - 65536 - 1000] if name == cut else raw)


SPLIT = ["base.vmdk", "base-s001.vmdk", "base-s002.vmdk"]


@pytest.mark.parametrize("sub, names, cut, top", [
    ("twoGbMaxExtentSparse", SPLIT, "base-s002.vmdk", "base.vmdk"),
    ("twoGbMaxExtentSparse", SPLIT + ["child1.vmdk", "child2.vmdk"], "base-s002.vmdk",
     "child2.vmdk"),
    ("monolithicSparse", ["base.vmdk", "child1.vmdk", "child2.vmdk"], "base.vmdk",
     "child2.vmdk")], ids=["split", "split-chained", "chained"])
def test_cli_salvage_reports_every_extent_of_every_link(disks, tmp_path, sub, names, cut, top):
    """The damaged grain sits in the last extent of the base: salvage zeroes it and says so,
    however the disk is split and whatever lies on top of it."""
    d = tmp_path / "d"
    _cut_copy(disks / sub, d, names, cut)
    out = vmsift("disk", "export", d / top, tmp_path / "a.raw")
    assert out.returncode == 3 and "runs past the end" in out.stderr
    out = vmsift("disk", "export", "--salvage", d / top, tmp_path / "b.raw")
    assert out.returncode == 0, out.stderr
    notes = [line for line in out.stderr.splitlines() if line.startswith("warning: salvaged:")]
    assert notes and all(f"/{cut} @ " in n and "read as zeros" in n for n in notes), out.stderr
    with open(tmp_path / "b.raw", "rb") as f:
        f.seek(3 * GiB - 512)
        assert f.read(512) == bytes(512)  # lost: zeros
        assert f.read(1) == b""
        f.seek(0)
        assert f.read(1) == b"\x11"  # what is still there reads as it was
    from vmsift.datastore.disk import OpenOptions
    with open_disk(FolderVolume(d), top, options=OpenOptions(salvage=True)) as disk:
        export_raw(disk, tmp_path / "c.raw")
        assert all(p.source == str(d / cut) for p in disk.damaged())
        assert [str(p) for p in disk.damaged()] == [n.removeprefix("warning: salvaged: ")
                                                    for n in notes]


def test_zero_pieces_inside_data_stay_holes(tmp_path):
    from vmsift.datastore.export import ZERO_GRAIN, nonzero_spans
    from vmsift.source import BytesSource

    data = bytes(ZERO_GRAIN) + b"x" + bytes(3 * ZERO_GRAIN) + b"y"
    assert nonzero_spans(data) == [(ZERO_GRAIN, 2 * ZERO_GRAIN),
                                   (4 * ZERO_GRAIN, len(data))]
    big = (b"\1" * 4096 + bytes(MiB - 4096)) * 8  # 8 MiB, 4 KiB of data per MiB
    stats = export_raw(BytesSource(big, "stamps"), tmp_path / "o.raw")
    assert stats.written == 8 * ZERO_GRAIN
    assert (tmp_path / "o.raw").read_bytes() == big
    assert (tmp_path / "o.raw").stat().st_blocks * 512 <= 8 * ZERO_GRAIN + 65536


@pytest.mark.parametrize("fmt", ["raw", "vmdk"])
def test_failed_export_with_force_keeps_the_existing_file(disks, tmp_path, fmt):
    """A failed `disk export --force` leaves what was at the target (written to a temporary
    beside it and renamed only when complete)."""
    raw = (disks / "monolithicSparse" / "base.vmdk").read_bytes()
    (tmp_path / "cut.vmdk").write_bytes(raw[:len(raw) - 65536 - 1000])
    target = tmp_path / "out.img"
    target.write_bytes(b"precious evidence")
    out = vmsift("disk", "export", "--force", "--format", fmt, tmp_path / "cut.vmdk", target)
    assert out.returncode == 3 and "runs past the end" in out.stderr
    assert target.read_bytes() == b"precious evidence"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.vmdk", "out.img"]
    out = vmsift("disk", "export", "--force", "--format", fmt,
                 disks / "monolithicSparse" / "base.vmdk", target)
    assert out.returncode == 0 and target.read_bytes() != b"precious evidence"


@pytest.mark.parametrize("hide_zlib_ng", [False, True])
def test_stream_disk_reads_the_same_with_zlib_ng_or_zlib(tmp_path, hide_zlib_ng):
    # zlib-ng inflates grains when installed; without it the standard zlib does
    require_tool("qemu-img")
    require_tool("qemu-io")
    run("qemu-img", "create", "-q", "-f", "raw", "src.raw", "16M", cwd=tmp_path)
    run("qemu-io", "-f", "raw", "-c", "write -P 0x5a 1M 3M", "-c", "write -P 0 8M 64k",
        "src.raw", cwd=tmp_path)
    run("qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", "src.raw",
        "s.vmdk", cwd=tmp_path)
    code = ("import sys\n" + ("sys.modules['zlib_ng'] = None\n" if hide_zlib_ng else "") +
            "from vmsift.formats.vmdk import sparse\nprint(sparse.zlib.__name__)\n"
            "from vmsift.cli import main\nsys.exit(main(sys.argv[1:]))")
    out = subprocess.run([sys.executable, "-c", code, "disk", "export", str(tmp_path / "s.vmdk"),
                          str(tmp_path / "out.raw")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    if hide_zlib_ng:
        assert out.stdout.split() == ["zlib"]
    assert (tmp_path / "out.raw").read_bytes() == (tmp_path / "src.raw").read_bytes()
