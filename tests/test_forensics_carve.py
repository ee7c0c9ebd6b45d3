"""`vmsift carve`: VM artefacts found by signature in raw and VMFS images.

Artefacts are made by real tools (qemu-img / qemu-io VMDKs of each subformat it writes) and by
the project's writers (COWD, SESparse, .vmsn, .nvram), plus the public ESXi .vmsd sample, and
planted at known, seeded offsets. Oracles: the planted offsets and bytes (extracted files must
equal the originals byte for byte), qemu-img reading the extracted disks, the writers' own
facts (capacity, CID in the descriptor text), and on VMFS the writer's deletions (blocks of a
deleted file freed in the bitmaps) and dissect.vmfs locating the live files.
"""

from __future__ import annotations

import json
import os
import random
import re
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures import cowd_writer, nvram_writer, sesparse_writer
from tests.fixtures import vmfs_writer as vw
from tests.fixtures import vmsn_writer as w
from tests.helpers import dissect_vmfs, mutate, require_tool, sample, vmsift
from vmsift.errors import UnsupportedError
from vmsift.forensics import carve as C
from vmsift.forensics.signatures import MAX_ARTEFACT

MIB = 1 << 20
IMAGE_SIZE = 192 * MIB


def qemu(*args: str, cwd: Path) -> None:
    subprocess.run(args, check=True, capture_output=True, cwd=cwd)


@pytest.fixture(scope="session")
def artefacts(cache_dir) -> dict[str, Path]:
    """name -> file: one of each kind carve knows, made by real tools where one exists."""
    require_tool("qemu-img")
    d = cache_dir / "carve-artefacts"
    d.mkdir(exist_ok=True)
    done = d / ".done"
    names = {"sparse": "sparse.vmdk", "stream": "stream.vmdk", "extent": "split-s001.vmdk",
             "split": "split.vmdk", "flat": "flat.vmdk", "cowd": "delta.vmdk",
             "sesparse": "se.vmdk", "vmsn": "lab-Snapshot1.vmsn", "nvram": "efi.nvram",
             "vmx": "lab.vmx"}
    if not done.exists():
        qemu("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicSparse",
             "sparse.vmdk", "64M", cwd=d)
        qemu("qemu-io", "-f", "vmdk", "-c", "write -P 0x11 0 1M", "-c", "write -P 0x22 40M 64k",
             "sparse.vmdk", cwd=d)
        qemu("qemu-img", "create", "-q", "-f", "raw", "data.raw", "8M", cwd=d)
        qemu("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 1M", "-c", "write -P 0xa5 4M 64k",
             "data.raw", cwd=d)
        qemu("qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized",
             "data.raw", "stream.vmdk", cwd=d)
        qemu("qemu-img", "create", "-q", "-f", "vmdk", "-o",
             "subformat=twoGbMaxExtentSparse", "split.vmdk", "100M", cwd=d)
        qemu("qemu-io", "-f", "vmdk", "-c", "write -P 0x33 1M 128k", "split.vmdk", cwd=d)
        qemu("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat",
             "flat.vmdk", "1M", cwd=d)
        cowd_writer.write_cowd(d / names["cowd"], 8192, [(4096, b"\x77" * 1024)])
        sesparse_writer.write_sesparse(d / names["sesparse"], 8192 * 8,
                                       [(0, b"\x55" * 4096), (1 << 20, b"\x66" * 8192)])
        w.write_vmsn(d / names["vmsn"])
        (d / names["nvram"]).write_bytes(nvram_writer.build_efi())
        (d / names["vmx"]).write_bytes(w.vmx_text())
        done.touch()
    out = {k: d / v for k, v in names.items()}
    out["vmsd"] = sample("xo_esxi_4snap.vmsd")
    return out


#: Where each artefact is planted: binary ones on a sector, text ones anywhere after a NUL.
#: The vmx straddles the 1 MiB block edge of the small-block scan.
TEXT = ("split", "flat", "vmx", "vmsd")


@pytest.fixture(scope="session")
def planted(cache_dir, artefacts) -> tuple[Path, dict[str, int]]:
    rng = random.Random(13)
    offsets: dict[str, int] = {}
    slot = IMAGE_SIZE // 16
    for i, name in enumerate(sorted(k for k in artefacts if k != "vmx")):
        base = (i + 1) * slot
        offsets[name] = base + rng.randrange(0, slot // 2, 512) + \
            (rng.randrange(1, 511) if name in TEXT else 0)
    offsets["vmx"] = 15 * slot + 3 * MIB - 20  # "config.version" crosses a 1 MiB boundary
    image = cache_dir / "carve-planted.img"
    with open(image, "wb") as f:
        f.truncate(IMAGE_SIZE)
        for name, at in offsets.items():
            f.seek(at)
            f.write(artefacts[name].read_bytes())
    return image, offsets


def by_offset(result: C.CarveResult) -> dict[int, C.Hit]:
    return {h.offset: h for h in result.hits}


def descriptor_cid(text: bytes) -> str:
    return "%08x" % int(re.search(rb"^CID=([0-9a-fA-F]+)", text, re.M)[1], 16)


def test_planted_artefacts_are_found_with_facts(planted, artefacts):
    image, at = planted
    result = C.carve(str(image))
    assert result.layout == "raw" and result.warnings == []
    hits = by_offset(result)
    size = {k: os.path.getsize(p) for k, p in artefacts.items()}
    size.update({k: len(artefacts[k].read_bytes().rstrip(b"\0")) for k in TEXT})  # text only
    top = {h.offset: (h.kind, h.length) for h in result.hits if h.within is None}
    want = {at["sparse"]: ("vmdk-sparse", size["sparse"]),
            at["stream"]: ("vmdk-sparse", size["stream"]),
            at["extent"]: ("vmdk-sparse", size["extent"]),
            at["split"]: ("vmdk-descriptor", size["split"]),
            at["flat"]: ("vmdk-descriptor", size["flat"]),
            at["cowd"]: ("vmdk-cowd", size["cowd"]),
            at["sesparse"]: ("vmdk-sesparse", size["sesparse"]),
            at["vmsn"]: ("vmsn", size["vmsn"]),
            at["nvram"]: ("nvram", size["nvram"]),
            at["vmx"]: ("vmx", size["vmx"]),
            at["vmsd"]: ("vmsd", size["vmsd"])}
    assert top == want
    # what is inside: the embedded descriptors of the sparse disks, the vmx copy in the .vmsn
    inner = sorted((h.within, h.kind) for h in result.hits if h.within is not None)
    assert inner == sorted([(at["sparse"], "vmdk-descriptor"), (at["stream"], "vmdk-descriptor"),
                            (at["vmsn"], "vmx")])
    # decoded facts against the tools that made them
    for name in ("sparse", "stream", "split"):  # a split disk's extent holds its share
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json",
                                          str(artefacts[name])], check=True,
                                         capture_output=True, text=True).stdout)
        got = hits[at["extent" if name == "split" else name]].facts["capacity"]
        assert got == info["virtual-size"], name
    assert hits[at["sparse"]].facts["cid"] == descriptor_cid(artefacts["sparse"].read_bytes())
    assert hits[at["stream"]].facts["stream_optimized"] is True
    assert hits[at["split"]].facts["create_type"] == "twoGbMaxExtentSparse"
    assert hits[at["split"]].facts["cid"] == descriptor_cid(artefacts["split"].read_bytes())
    assert hits[at["flat"]].facts["extents"] == ["flat-flat.vmdk"]
    assert hits[at["cowd"]].facts["capacity"] == 8192 * 512
    assert hits[at["sesparse"]].facts["capacity"] == 8192 * 8 * 512
    assert hits[at["vmsn"]].facts["display_name"] == w.DISPLAY_NAME
    assert hits[at["vmsn"]].facts["state"] == "snapshot"
    assert hits[at["vmx"]].facts["display_name"] == w.DISPLAY_NAME
    assert hits[at["vmsd"]].facts["snapshots"] == 4
    assert "EFI_" in hits[at["nvram"]].facts["names"]
    assert all(h.allocated is None for h in result.hits)  # a raw image has no allocation map


def test_block_size_does_not_change_the_answer(planted):
    image, _ = planted
    big = [h.to_dict() for h in C.carve(str(image)).hits]
    for block in (MIB, 4096 + 512):
        assert [h.to_dict() for h in C.carve(str(image), block=block).hits] == big


def test_extract_is_byte_identical(planted, artefacts, tmp_path):
    image, at = planted
    result = C.carve(str(image))
    out = tmp_path / "found"
    assert C.extract(result, str(out)) == []
    names = {os.path.basename(h.extracted): h for h in result.hits if h.extracted}
    assert all(re.fullmatch(r"[0-9a-f]{12}\.[a-z-]+\.[a-z]+", n) for n in names)
    assert sorted(os.listdir(out)) == sorted(names)  # nothing else, nothing outside
    for name, offset in at.items():
        hit = by_offset(result)[offset]
        original = artefacts[name].read_bytes()
        if name in TEXT:  # text ends at its last character (the file's NUL padding is not text)
            original = original.rstrip(b"\0")
        assert Path(hit.extracted).read_bytes() == original, name
    # qemu-img reads the extracted disks as the originals
    for name in ("sparse", "stream"):
        got = by_offset(result)[at[name]].extracted
        r = subprocess.run(["qemu-img", "compare", "-q", "-f", "vmdk", "-F", "vmdk",
                            str(artefacts[name]), got], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    # a second extract into the same folder refuses to overwrite, per file
    assert len(C.extract(result, str(out))) == len(names)


def test_cli_json_and_table(planted, tmp_path):
    image, at = planted
    r = vmsift("carve", image, "--json", "--extract", tmp_path / "x")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["layout"] == "raw" and doc["size"] == IMAGE_SIZE
    assert {h["offset"] for h in doc["hits"] if h["within"] is None} == set(at.values())
    assert all(h["extracted"].startswith(str(tmp_path / "x")) for h in doc["hits"])
    r = vmsift("carve", image)
    assert r.returncode == 0 and "artefacts (14)" in r.stdout
    assert f"{at['vmsn']}  vmsn" in r.stdout
    r = vmsift("carve", image, "--unallocated-only")
    assert r.returncode == UnsupportedError.exit_code and "no allocation map" in r.stderr


# --- a VMFS datastore with deleted files ------------------------------------------------------

@pytest.fixture(scope="session")
def vmfs_image(cache_dir) -> Path:
    require_tool("qemu-img")
    return vw.build_image(cache_dir, "carve")


def test_vmfs_allocation_and_deleted_files(vmfs_image, cache_dir, tmp_path):
    work = Path(cache_dir) / "vmfs-writer" / "work"
    result = C.carve(str(vmfs_image))
    assert result.layout == "vmfs" and result.warnings == []
    found = {(h.kind, h.facts.get("display_name") or h.facts.get("cid") or
              h.facts.get("path")): h for h in result.hits}
    old_disk = (work / "old-disk.vmdk").read_bytes()
    deleted_disk = found[("vmdk-sparse", descriptor_cid(old_disk))]
    deleted_vmx = found[("vmx", "old lab VM")]
    live_vmx = found[("vmx", "vm1")]
    live_disk = found[("vmdk-sparse", descriptor_cid((work / "vm1.vmdk").read_bytes()))]
    assert (deleted_disk.allocated, deleted_vmx.allocated) == (False, False)
    assert (live_disk.allocated, live_vmx.allocated) == (True, True)
    assert deleted_disk.length == len(old_disk) and deleted_vmx.length == len(vw.OLD_VMX)
    with open(vmfs_image, "rb") as fh:
        fh.seek(deleted_disk.offset)
        assert fh.read(len(old_disk)) == old_disk
    # dissect.vmfs (an independent reader) puts the live disk where carve found it
    with dissect_vmfs(vmfs_image) as fs:
        data = fs.get("/vm1/vm1.vmdk").open().read(4096)
    with open(vmfs_image, "rb") as fh:
        fh.seek(live_disk.offset)
        assert fh.read(4096) == data
    deleted = {h.facts["path"]: h.offset for h in result.hits if h.kind == "deleted-entry"}
    assert sorted(deleted) == ["data/was-deleted.txt", "vm1/old-disk.vmdk", "vm1/old.vmx"]
    with open(vmfs_image, "rb") as fh:  # each offset is its 140-byte slot: FD address 0, name
        for path, offset in deleted.items():
            fh.seek(offset)
            etype, addr, _, name = struct.unpack("<III128s", fh.read(140))
            assert (etype, addr, name.rstrip(b"\0")) == (3, 0, path.rsplit("/")[-1].encode())
    assert all(h.allocated for h in result.hits if h.kind == "deleted-entry")  # live folders
    # only free space: exactly the deleted artefacts
    free = C.carve(str(vmfs_image), unallocated_only=True)
    assert {h.offset for h in free.hits if h.kind != "deleted-entry"} == \
        {h.offset for h in result.hits if h.allocated is False and h.kind != "deleted-entry"}
    assert free.scanned < result.scanned
    out = tmp_path / "x"
    C.extract(free, str(out))
    assert Path(next(h.extracted for h in free.hits if h.offset == deleted_disk.offset)
                ).read_bytes() == old_disk
    r = subprocess.run(["qemu-img", "compare", "-q", str(work / "old-disk.raw"),
                        next(h.extracted for h in free.hits if h.offset == deleted_disk.offset)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# --- hostile input ----------------------------------------------------------------------------

def test_empty_and_edge_images(tmp_path):
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"")
    result = C.carve(str(empty))
    assert (result.hits, result.scanned, result.size) == ([], 0, 0)
    edge = tmp_path / "edge.img"
    edge.write_bytes(bytes(1024) + b"KDMV")  # a magic in the last bytes, header cut off
    assert C.carve(str(edge)).hits == []
    tail = tmp_path / "tail.img"
    tail.write_bytes(bytes(1000) + b"\0config.version = ")  # text to the very last byte
    hits = C.carve(str(tail)).hits
    assert [(h.kind, h.offset, h.length) for h in hits] == [("vmx", 1001, 17)]
    r = vmsift("carve", empty)
    assert r.returncode == 0 and "artefacts: none" in r.stdout


def test_absurd_headers_are_bounded(tmp_path, artefacts):
    img = tmp_path / "absurd.img"
    cowd = bytearray(artefacts["cowd"].read_bytes())
    cowd[28:32] = (0xFFFFFFFF).to_bytes(4, "little")  # next free sector: 2 TiB
    sparse = bytearray(artefacts["sparse"].read_bytes()[:512])
    sparse[12:20] = (1 << 62).to_bytes(8, "little")  # capacity far past any disk
    tables = bytearray(artefacts["sparse"].read_bytes()[:512])
    tables[44:48] = (0xFFFFFFFF).to_bytes(4, "little")  # 4 G entries per grain table
    ses = bytearray(artefacts["sesparse"].read_bytes()[:512])
    ses[80 + 16 * 7:80 + 16 * 7 + 8] = (1 << 60).to_bytes(8, "little")  # grains at 2^69
    with open(img, "wb") as f:
        f.truncate(8 * MIB)
        f.seek(MIB)
        f.write(cowd)
        f.seek(3 * MIB)
        f.write(sparse)
        f.seek(5 * MIB)
        f.write(ses)
        f.seek(6 * MIB)
        f.write(tables)
    result = C.carve(str(img))
    kinds = {h.offset: (h.kind, h.length) for h in result.hits}
    assert kinds[MIB] == ("vmdk-cowd", 7 * MIB)  # clipped to the image's end
    assert 3 * MIB not in kinds  # a capacity no disk has: not a header
    assert kinds[5 * MIB] == ("vmdk-sesparse", 3 * MIB)
    assert kinds[6 * MIB] == ("vmdk-sparse", None)  # not measured, nothing read
    assert by_offset(result)[6 * MIB].note == "4294967295 entries per grain table: absurd"
    assert all(h.length is None or h.length <= min(MAX_ARTEFACT, 8 * MIB) for h in result.hits)
    C.extract(result, str(tmp_path / "out"))
    assert os.path.getsize(tmp_path / "out" / f"{MIB:012x}.vmdk-cowd.vmdk") == 7 * MIB


# --- OCFS2 ------------------------------------------------------------------------------------

def test_ocfs2_free_space_matches_debugfs(cache_dir):
    """Free clusters from the global bitmap chains, against debugfs.ocfs2's own count."""
    require_tool("debugfs.ocfs2")
    from tests.fixtures import ocfs2_mkfs
    from vmsift.datastore.detect import open_datastore

    for spec in ocfs2_mkfs.build_images(cache_dir).values():
        text = ocfs2_mkfs.debugfs(spec.path, "stat //global_bitmap")
        total, used = map(int, re.search(r"Bitmap Total: (\d+)\s+Used: (\d+)", text).groups())
        with open_datastore([str(spec.path)]) as volume:
            free = volume.free_ranges()
            assert sum(b - a for a, b in free) == (total - used) * volume.cluster_size, spec.name
            assert all(a % volume.cluster_size == 0 and b <= spec.size for a, b in free)


def test_ocfs2_artefacts_in_used_and_free_clusters(cache_dir, tmp_path):
    require_tool("debugfs.ocfs2")
    from tests.fixtures import ocfs2_mkfs
    from tests.helpers import sparse_copy

    spec = ocfs2_mkfs.build_images(cache_dir)["b4k-c4k-maxfeat"]
    img = tmp_path / "ocfs2.img"
    sparse_copy(spec.path, img)
    journal = ocfs2_mkfs.extents_of(spec.path, "//journal:0000")[0]
    in_journal = (journal[2] + 3) * spec.block_size      # a block the journal owns
    in_free = spec.size - 40 * spec.cluster_size          # mkfs leaves the end free
    vmx = w.vmx_text()
    with open(img, "r+b") as f:
        for at in (in_journal, in_free):
            f.seek(at)
            f.write(vmx)
    result = C.carve(str(img))
    assert result.layout == "ocfs2"
    got = {h.offset: h.allocated for h in result.hits if h.kind == "vmx"}
    assert got == {in_journal: True, in_free: False}
    free = C.carve(str(img), unallocated_only=True)
    assert [h.offset for h in free.hits if h.kind == "vmx"] == [in_free]


def test_ocfs2_kernel_deleted_entries_have_their_slots(kernel_images):
    """Entries the Linux kernel deleted (tests/fixtures/ocfs2_kernel.py): each recovered
    name is found at an image offset whose bytes are an OCFS2 dirent of that name."""
    image = kernel_images["max4k"]
    result = C.carve(str(image.path))
    assert result.layout == "ocfs2"
    found = {h.facts["path"]: h for h in result.hits if h.kind == "deleted-entry"}
    gone = {g["path"] for g in image.deleted}
    assert len(found.keys() & gone) >= 2
    with open(image.path, "rb") as fh:
        for path in found.keys() & gone:
            hit = found[path]
            name = path.rsplit("/", 1)[-1].encode()
            fh.seek(hit.offset)
            raw = fh.read(12 + len(name))
            assert raw[10] == len(name) and raw[12:] == name, path
            assert hit.allocated is True  # the slot is in a live directory block


def test_vmfs6_allocation_is_unknown_not_guessed(cache_dir):
    from tests.fixtures.vmfs_images import image

    path = image("vmfs/vmfs6", cache_dir)
    result = C.carve(str(path))
    assert result.layout == "vmfs"
    assert [w.what for w in result.warnings] == ["VMFS6 allocation bitmaps are not decoded"]
    assert all(h.allocated is None for h in result.hits)
    with pytest.raises(UnsupportedError, match="no allocation map"):
        C.carve(str(path), unallocated_only=True)


FUZZ_IMAGE = 64 << 10


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_artefacts_never_crash(artefacts, tmp_path, data):
    """Damaged headers and text give hits or none, never an exception, and lengths stay
    inside the image."""
    kind = data.draw(st.sampled_from(["sparse", "cowd", "sesparse", "vmsn", "nvram", "vmx",
                                      "split"]))
    raw = artefacts[kind].read_bytes()[:16384]
    damaged = mutate(data, raw, hot=512)
    img = tmp_path / "fuzz.img"
    at = data.draw(st.sampled_from([0, 512, FUZZ_IMAGE - len(damaged) // 512 * 512 - 512]))
    buf = bytearray(FUZZ_IMAGE)
    buf[at:at + len(damaged)] = damaged[:FUZZ_IMAGE - at]
    img.write_bytes(bytes(buf))
    for h in C.carve(str(img), block=4096).hits:
        assert h.offset is None or 0 <= h.offset < FUZZ_IMAGE
        assert h.length is None or h.offset + h.length <= FUZZ_IMAGE
