"""OCFS2 volumes: mkfs.ocfs2-made images (all variants), synthetic edits and damage, and
kernel-written images with files; debugfs.ocfs2, fsck.ocfs2 and blkid are the oracles."""

from __future__ import annotations

import hashlib
import json
import re
import stat as stat_mod
import struct
import subprocess
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures import ocfs2_mkfs
from tests.helpers import mutate, require_tool, vmsift
from vmsift.datastore import ocfs2
from vmsift.datastore.ocfs2 import Ocfs2Volume
from vmsift.datastore.volume import FileType
from vmsift.errors import (FormatError, Problem, SourceError, TruncatedError, UnsupportedError,
                           VmsiftError)
from vmsift.formats import ocfs2 as ocfs2_format
from vmsift.formats.ocfs2.checksum import heartbeat_crc, metaecc_crc, stored_crc
from vmsift.source import Alloc, ByteSource, BytesSource, FileSource, clip


# ---- fixtures and oracle helpers ------------------------------------------------------------

@pytest.fixture(scope="session")
def mkfs_images(cache_dir):
    for tool in ("mkfs.ocfs2", "debugfs.ocfs2"):
        require_tool(tool)
    return ocfs2_mkfs.build_images(cache_dir)


VARIANTS = [v.name for v in ocfs2_mkfs.VARIANTS] + ["cluster-membership"]


def debugfs(img: Path, request: str) -> str:
    return ocfs2_mkfs.debugfs(img, request)


def debugfs_cat(img: Path, path: str) -> bytes:
    return subprocess.run(["debugfs.ocfs2", "-R", f"cat {path}", str(img)],
                          capture_output=True, check=True).stdout


LS_LINE = re.compile(r"^\s*(\d+)\s+([-dlcbps][-rwxsStT]{9})\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+"
                     r"\S+\s+\S+\s(.*)$")


def debugfs_ls(img: Path, path: str) -> dict[str, dict]:
    out = {}
    for line in debugfs(img, f"ls -l {path}").splitlines():
        m = LS_LINE.match(line)
        if m and m[7] not in (".", ".."):
            out[m[7]] = {"inode": int(m[1]), "type": m[2][0], "nlink": int(m[3]),
                         "uid": int(m[4]), "gid": int(m[5]), "size": int(m[6])}
    return out


def stats(img: Path) -> dict[str, str]:
    return dict(re.findall(r"^\s*([A-Za-z][A-Za-z ]+?): (.*?)\s*$",
                           debugfs(img, "stats").split("Inode:")[0], re.M))


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def copy_image(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)
    return dst


def vol(image) -> Ocfs2Volume:
    return Ocfs2Volume(FileSource(image.path))


_TYPE = {"d": FileType.DIR, "-": FileType.FILE, "l": FileType.SYMLINK}


# ---- superblock and detection --------------------------------------------------------------

@pytest.mark.parametrize("name", VARIANTS)
def test_superblock_matches_debugfs(mkfs_images, name):
    image = mkfs_images[name]
    st_ = stats(image.path)
    with vol(image) as v:
        info = v.info()
        sb = v.sb
    assert sb.label == image.label == st_["Label"]
    assert sb.uuid == image.uuid and sb.uuid_hex == st_["UUID"]
    assert v.block_size == image.block_size == 1 << int(re.match(r"(\d+)", st_["Block Size Bits"])[1])
    assert sb.cluster_size == image.cluster_size
    assert sb.max_slots == image.slots == int(st_["Max Node Slots"])
    assert sb.root_blkno == int(re.match(r"(\d+)", st_["Root Blknum"])[1])
    feats = info.data["features"]
    assert set(feats["compat"]) == set(st_["Feature Compat"].split()[1:])
    assert set(feats["incompat"]) == set(st_["Feature Incompat"].split()[1:])
    assert set(feats["ro_compat"]) == set(st_["Feature RO compat"].split()[1:])
    assert info.data["capacity"] == image.size
    assert info.data["version"] == "0.90" and st_["Revision"] == "0.90"
    stack = info.data["cluster_stack"]
    if image.local:
        assert stack["mode"] == "local" and "local" in feats["incompat"]
    elif image.stack:
        assert (stack["stack"], stack["cluster"]) == (image.stack, image.cluster)
        assert st_["Cluster stack"] == image.stack and st_["Cluster name"] == image.cluster
    else:
        assert stack == {"mode": "cluster", "stack": "o2cb", "classic": True,
                         "cluster": None, "global_heartbeat": False}
        assert st_["Cluster stack"] == "classic o2cb"
    assert info.data["checksums"]["enabled"] == (image.level == "max-features")
    assert info.warnings == ([] if name != "cluster-membership" else info.warnings)
    assert len(info.data["journals"]) == image.slots
    assert all(not j["dirty"] and j["size"] > 0 for j in info.data["journals"])
    used = int(re.search(r"Bitmap Total: (\d+)\s+Used: (\d+)",
                         debugfs(image.path, "stat //global_bitmap"))[2])
    assert info.data["used_clusters"] == used


@pytest.mark.parametrize("name", [v.name for v in ocfs2_mkfs.VARIANTS])
def test_blkid_and_probe(mkfs_images, name):
    require_tool("blkid")
    image = mkfs_images[name]
    out = subprocess.run(["blkid", "-p", "-o", "export", str(image.path)], capture_output=True,
                         text=True, check=True).stdout
    tags = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert tags["TYPE"] == "ocfs2"
    with FileSource(image.path) as src:
        assert ocfs2.probe(src)
        assert ocfs2_format.sniff(src.read(0, 65536))
        v = ocfs2.open_volume([src])
        assert tags["LABEL"] == v.sb.label and tags["UUID"] == v.sb.uuid
        assert int(tags["BLOCK_SIZE"]) == v.block_size
        report = ocfs2_format.inspect(src)
        assert report.kind == "ocfs2" and report.data["uuid"] == image.uuid


def test_probe_rejects_other_bytes():
    for data in (b"", bytes(65536), b"OCFSV2\0\0" + bytes(100), bytes(2048) + b"OCFSV1\0\0"):
        assert not ocfs2.probe(BytesSource(data))
        assert not ocfs2_format.sniff(data)
    with pytest.raises(FormatError):
        Ocfs2Volume(BytesSource(bytes(1 << 16), "zeros.img"))
    with pytest.raises(UnsupportedError):
        ocfs2.open_volume([BytesSource(b""), BytesSource(b"")])


# ---- directories and files on mkfs images ------------------------------------------------

@pytest.mark.parametrize("name", [v.name for v in ocfs2_mkfs.VARIANTS])
def test_listings_match_debugfs(mkfs_images, name):
    image = mkfs_images[name]
    with vol(image) as v:
        for path, ours in (("/", ""), ("//", "//"), ("/lost+found", "lost+found")):
            expected = debugfs_ls(image.path, path)
            entries = v.listdir(ours)
            assert {e.name: e.inode for e in entries} == \
                {n: e["inode"] for n, e in expected.items()}
            for e in entries:
                want = expected[e.name]
                assert e.type is _TYPE[want["type"]]
                full = (ours + e.name) if ours in ("", "//") else f"{ours}/{e.name}"
                st_ = v.stat(full)
                assert (st_.size, st_.nlink, st_.inode, st_.uid) == \
                    (want["size"], want["nlink"], want["inode"], want["uid"])
        system = v.system_volume()
        walked = {d: [e.name for e in es] for d, es in system.walk()}
        assert "global_bitmap" in walked[""] and "journal:0000" in walked[""]
        assert walked["orphan_dir:0000"] == []


@pytest.mark.parametrize("name", [v.name for v in ocfs2_mkfs.VARIANTS])
def test_system_files_read_like_debugfs(mkfs_images, name):
    image = mkfs_images[name]
    with vol(image) as v:
        for entry in v.listdir("//"):
            path = "//" + entry.name
            st_ = v.stat(path)
            if entry.type is not FileType.FILE:
                continue
            if "chain" in st_.extra["flags"]:
                with pytest.raises(UnsupportedError):
                    v.open(path)
                text = debugfs(image.path, f"stat {path}")
                rows = re.findall(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$", text, re.M)
                chains = st_.extra["chains"]["records"]
                assert [(r["total"], r["first_group"]) for r in chains] == \
                    [(int(t), int(b)) for _, t, _, _, b in rows]
                continue
            f = v.open(path)
            data = f.read(0, f.size)
            assert len(data) == st_.size
            assert md5(data) == md5(debugfs_cat(image.path, path)), path
            if st_.size and "extents" in st_.extra:
                expected = ocfs2_mkfs.extents_of(image.path, path)
                assert st_.extra["extents"] == len(expected)
                # mkfs allocates system files fully: one DATA run over the whole size
                assert [(r.offset, r.length, r.kind) for r in f.extents()] == \
                    [(0, st_.size, Alloc.DATA)]
                assert sum(n * image.cluster_size for _, n, _, _ in expected) >= st_.size
                phys = [p for _, _, k, p in f.physical_runs() if k is Alloc.DATA]
                assert phys[0] == expected[0][2] * image.block_size


def test_ds_ls_of_the_system_directory_keeps_its_prefix(mkfs_images):
    image = mkfs_images["b1k-c4k-default"]
    system = debugfs_ls(image.path, "//")  # the oracle: names and sizes
    doc = json.loads(vmsift("ds", "ls", "--json", image.path, "//").stdout)
    got = {e["path"]: e["stat"] for e in doc["entries"]}
    assert set(got) == {"//" + name for name in system}
    assert all(got["//" + n]["size"] == e["size"] for n, e in system.items())
    long = vmsift("ds", "ls", "-l", image.path, "//").stdout.splitlines()
    sized = {line.split()[-1]: line.split()[1] for line in long}
    assert sized == {n: str(e["size"]) for n, e in system.items()}
    assert all(" - " not in line for line in long)  # every entry has its size and time
    recursive = vmsift("ds", "ls", "-R", image.path, "//").stdout.splitlines()
    assert set(recursive) >= {"//" + n + ("/" if e["type"] == "d" else "")
                              for n, e in system.items()}
    assert "lost+found/" not in recursive
    orphans = next(n for n, e in system.items() if e["type"] == "d")
    assert vmsift("ds", "ls", "--json", image.path, f"//{orphans}").returncode == 0


def test_extract_of_the_root_fills_the_target_itself(mkfs_images, tmp_path):
    image = mkfs_images["b1k-c4k-default"]
    root = debugfs_ls(image.path, "/")
    out = vmsift("ds", "extract", image.path, "/", tmp_path / "out")
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(root)  # no root/
    # the system directory goes by the same rule (its chain allocators are not byte streams)
    vmsift("ds", "extract", image.path, "//", tmp_path / "sys")
    assert "slot_map" in {p.name for p in (tmp_path / "sys").iterdir()}


def test_slot_map_and_heartbeat(mkfs_images):
    image = mkfs_images["cluster-membership"]
    with vol(image) as v:
        info = v.info()
    slots = {s["slot"]: s["node"] for s in info.data["slot_map"] if s["valid"]}
    assert slots == ocfs2_mkfs.SLOTS
    text = debugfs(image.path, "slotmap")
    assert {int(a): int(b) for a, b in re.findall(r"^\s+(\d+)\s+(\d+)\s*$", text, re.M)} == slots
    nodes = {n["index"]: n for n in info.data["heartbeat"]["nodes"]}
    assert set(nodes) == set(ocfs2_mkfs.HEARTBEATS) | {ocfs2_mkfs.BAD_HEARTBEAT_NODE}
    for node, (seq, gen, dead) in ocfs2_mkfs.HEARTBEATS.items():
        assert (nodes[node]["seq"], nodes[node]["generation"], nodes[node]["dead_ms"],
                nodes[node]["checksum_ok"]) == (seq, gen, dead, True)
    assert not nodes[ocfs2_mkfs.BAD_HEARTBEAT_NODE]["checksum_ok"]
    hb = debugfs(image.path, "hb")
    for node, (seq, gen, _) in ocfs2_mkfs.HEARTBEATS.items():
        assert re.search(rf"^\s*{node}:\s+{node}\s+{seq:016x}\s+{gen:016x}", hb, re.M)
    assert any("node 7 has a bad checksum" in w for w in info.warnings)
    titles = [t.title for t in info.tables]
    assert "heartbeat" in titles and "slot map" in titles
    # an empty (local) volume: no node has written
    with vol(mkfs_images["b4k-c4k-maxfeat"]) as v:
        assert v.info().data["heartbeat"]["nodes"] == []


def test_heartbeat_crc_known_value():
    block = ocfs2_mkfs.heartbeat_block(3, 10, 20, 30000)
    assert heartbeat_crc(block) == struct.unpack_from("<I", block, 0xC)[0]
    assert heartbeat_crc(bytes(512)) != heartbeat_crc(b"\1" + bytes(511))


def test_backup_superblocks(mkfs_images):
    image = mkfs_images["b4k-c1m-cluster"]
    with vol(image) as v:
        backups = v.info().data["backup_superblocks"]
    assert backups == [{"offset": 1 << 30, "present": True}]


# ---- metaecc and damage ----------------------------------------------------------------------

def test_metaecc_bad_checksum_is_a_warning(mkfs_images, tmp_path):
    image = mkfs_images["b4k-c4k-maxfeat"]
    img = copy_image(image.path, tmp_path / "bad.img")
    with vol(image) as v:
        lf = v.stat("lost+found").inode
        assert v.stat("lost+found").extra["checksum_ok"] is True
    with open(img, "r+b") as f:
        f.seek(lf * 4096 + 0x18)    # uid
        f.write(struct.pack("<I", 4242))
    with Ocfs2Volume(FileSource(img)) as v:
        st_ = v.stat("lost+found")
        assert st_.uid == 4242 and st_.extra["checksum_ok"] is False
        report = v.info()
        assert any("bad metaecc checksum on inode" in w and str(lf) in w
                   for w in report.data["checksums"]["bad"])
    fsck = subprocess.run(["fsck.ocfs2", "-fn", str(img)], capture_output=True, text=True)
    assert fsck.returncode != 0 or "CHECKSUM" in (fsck.stdout + fsck.stderr).upper()


def test_metaecc_crc_of_superblock(mkfs_images):
    image = mkfs_images["b4k-c4k-maxfeat"]
    raw = image.path.read_bytes()[2 * 4096:3 * 4096]
    crc = int(re.search(r"CRC32: ([0-9a-f]+)", debugfs(image.path, "stats"))[1], 16)
    assert metaecc_crc(raw, 0x80) == stored_crc(raw, 0x80) == crc


def test_fsck_passes_on_fixtures(mkfs_images):
    require_tool("fsck.ocfs2")
    for name in ("b1k-c4k-default", "b4k-c4k-maxfeat"):
        out = subprocess.run(["fsck.ocfs2", "-fn", str(mkfs_images[name].path)],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", ["b1k-c4k-default", "b4k-c4k-maxfeat", "b512-c4k-compat"])
def test_depth_one_extent_tree(mkfs_images, tmp_path, name):
    image = mkfs_images[name]
    img = copy_image(image.path, tmp_path / "deep.img")
    before = md5(debugfs_cat(img, "//journal:0000"))
    free = ocfs2_mkfs.free_tail_blocks(img, image.block_size, 3)
    _, leaves = ocfs2_mkfs.deepen_extent_tree(img, "//journal:0000", image.block_size,
                                              image.cluster_size, free, pieces=6)
    assert "Tree Depth: 1" in debugfs(img, "stat //journal:0000")
    assert md5(debugfs_cat(img, "//journal:0000")) == before   # our edit is a valid tree
    with Ocfs2Volume(FileSource(img)) as v:
        f = v.open("//journal:0000")
        assert md5(f.read(0, f.size)) == before
        assert v.stat("//journal:0000").extra["extents"] == leaves >= 6
        assert [(r.offset, r.length, r.kind) for r in f.extents()] == \
            [(0, f.size, Alloc.DATA)]
        assert md5(f.read(12345, 100000)) == md5(before_bytes := debugfs_cat(
            img, "//journal:0000")[12345:112345]) and len(before_bytes) == 100000
        assert not v.warnings


@pytest.mark.parametrize("target", ["loop", "self", "past_end", "not_extent"])
def test_extent_tree_damage(mkfs_images, tmp_path, target):
    image = mkfs_images["b1k-c4k-default"]
    img = copy_image(image.path, tmp_path / "bad.img")
    free = ocfs2_mkfs.free_tail_blocks(img, image.block_size, 2)
    child = {"loop": free[0], "self": ocfs2_mkfs.inode_of(img, "//journal:0000"),
             "past_end": 1 << 40, "not_extent": 2}[target]
    ocfs2_mkfs.deepen_extent_tree(img, "//journal:0000", image.block_size,
                                  image.cluster_size, free, next_child=child)
    with Ocfs2Volume(FileSource(img)) as v:
        with pytest.raises(FormatError) as err:
            v.open("//journal:0000")
        assert err.value.source == str(img)
        msg = str(err.value)
        assert {"loop": "twice", "self": "not an extent block", "past_end": "outside the volume",
                "not_extent": "not an extent block"}[target] in msg
        assert v.listdir("//")   # the rest of the volume still reads


def test_extent_tree_depth_must_decrease(mkfs_images, tmp_path):
    image = mkfs_images["b1k-c4k-default"]
    img = copy_image(image.path, tmp_path / "depth.img")
    free = ocfs2_mkfs.free_tail_blocks(img, image.block_size, 1)
    ocfs2_mkfs.deepen_extent_tree(img, "//journal:0000", 1024, 4096, free)
    with open(img, "r+b") as f:       # the extent block claims depth 1 and points at itself
        f.seek(free[0] * 1024 + 0x30)
        f.write(struct.pack("<HHH", 1, 60, 1))
        f.seek(free[0] * 1024 + 0x40)
        f.write(struct.pack("<IIQ", 0, 1024, free[0]))
    with Ocfs2Volume(FileSource(img)) as v, pytest.raises(FormatError, match="depth"):
        v.open("//journal:0000")


def test_wrong_paths_are_source_errors(mkfs_images):
    """A path that is not there, or not of the kind asked for, is the caller's (exit 6)."""
    with vol(mkfs_images["b1k-c4k-default"]) as v:
        for call, arg, message in [(v.open, "lost+found", "not a regular file"),
                                   (v.stat, "nope", "no such file: 'nope'"),
                                   (v.listdir, "//journal:0000", "not a directory"),
                                   (v.stat, "//journal:0000/x", "not a directory"),
                                   (v.readlink, "lost+found", "not a symbolic link")]:
            with pytest.raises(SourceError, match=message) as err:
                call(arg)
            assert err.value.exit_code == 6


def test_corrupt_superblock(mkfs_images, tmp_path):
    small = copy_image(mkfs_images["b1k-c4k-default"].path, tmp_path / "s.img")
    with open(small, "r+b") as f:
        f.seek(2 * 1024)
        f.write(b"XXXXXXXX")
    assert not ocfs2.probe(FileSource(small))
    with pytest.raises(FormatError, match="no OCFS2 superblock") as err:
        Ocfs2Volume(FileSource(small))
    assert err.value.source == str(small)
    # bad block-size bits in an otherwise valid superblock
    bits = copy_image(mkfs_images["b1k-c4k-default"].path, tmp_path / "bits.img")
    with open(bits, "r+b") as f:
        f.seek(2 * 1024 + 0xC0 + 0x38)
        f.write(struct.pack("<I", 12))
    with pytest.raises(FormatError, match="block size bits"):
        Ocfs2Volume(FileSource(bits))
    # the primary is gone but the backup at 1 GiB is there
    big = copy_image(mkfs_images["b4k-c1m-cluster"].path, tmp_path / "b.img")
    with open(big, "r+b") as f:
        f.seek(2 * 4096)
        f.write(bytes(4096))
    assert ocfs2.probe(FileSource(big))
    with Ocfs2Volume(FileSource(big)) as v:
        assert v.sb.label == "ovmrepo"
        assert any("backup" in w for w in v.warnings)
        assert "journal:0000" in [e.name for e in v.listdir("//")]


def test_truncated_image(mkfs_images, tmp_path):
    image = mkfs_images["b1k-c4k-default"]
    img = copy_image(image.path, tmp_path / "t.img")
    with vol(image) as v:
        journal = v.stat("//journal:0001")
        last = max(p for _, _, k, p in v.open("//journal:0001").physical_runs())
    with open(img, "r+b") as f:
        f.truncate(last + 10)
    with Ocfs2Volume(FileSource(img)) as v:
        assert any("truncated" in w for w in v.warnings)
        assert all(isinstance(w, Problem) and w.source == str(img) for w in v.warnings)
        f = v.open("//journal:0001")
        assert f.size == journal.size
        with pytest.raises(TruncatedError) as err:
            f.read(0, f.size)
        assert err.value.offset == last + 10
        assert v.listdir("")    # metadata before the cut still reads


def test_bad_directory_entry_is_a_warning(mkfs_images, tmp_path):
    image = mkfs_images["b512-c4k-compat"]
    img = copy_image(image.path, tmp_path / "d.img")
    with vol(image) as v:
        names = [e.name for e in v.listdir("//")]
        (_, _, first, _), = ocfs2_mkfs.extents_of(image.path, "//")[:1]
    # the 4th entry of the first system dir block gets an impossible rec_len
    with open(img, "r+b") as f:
        block = bytearray(image.path.read_bytes()[first * 512:first * 512 + 512])
        pos = 0
        for _ in range(3):
            pos += struct.unpack_from("<H", block, pos + 8)[0]
        f.seek(first * 512 + pos + 8)
        f.write(struct.pack("<H", 3))
    with Ocfs2Volume(FileSource(img)) as v:
        got = [e.name for e in v.listdir("//")]
        assert set(got) < set(names) and len(got) >= 1
        assert any("bad directory entry" in w for w in v.warnings)


# ---- fuzzing and memory -----------------------------------------------------------------------

class PatchedSource(ByteSource):
    """A file whose first bytes are replaced (the metadata region under test)."""

    def __init__(self, base: ByteSource, head: bytes):
        self.base, self.head, self.size, self.name = base, head, base.size, "fuzz.img"

    def read(self, offset, length):
        start, end = clip(self.size, offset, length)
        out = bytearray(self.base.read(start, end - start))
        if start < len(self.head):
            n = min(len(self.head), end) - start
            out[:n] = self.head[start:start + n]
        return bytes(out)


def _exercise(v: Ocfs2Volume) -> None:
    v.info()
    for directory, entries in v.walk(deleted=True):
        for e in entries[:20]:
            path = f"{directory}/{e.name}".lstrip("/")
            try:
                st_ = v.stat(path)
                if st_.type is FileType.FILE:
                    f = v.open(path)
                    list(f.extents())
                    f.read(0, 65536)
            except VmsiftError:
                pass
    sysv = v.system_volume()
    for e in v.listdir("//")[:30]:
        try:
            f = v.open("//" + e.name)
            f.read(0, 4096)
        except VmsiftError:
            pass
    del sysv


@pytest.fixture(scope="module")
def fuzz_base(mkfs_images):
    image = mkfs_images["b512-c4k-compat"]
    src = FileSource(image.path)
    return src, src.read(0, 48 * 1024)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_mutated_metadata(fuzz_base, data):
    src, head = fuzz_base
    damaged = mutate(data, head, hot=12 * 1024, rounds=6)
    damaged = damaged[:len(head)] + head[len(damaged):]   # keep offsets (cuts become zeros)
    try:
        v = Ocfs2Volume(PatchedSource(src, damaged))
    except VmsiftError:
        return
    try:
        _exercise(v)
    except VmsiftError:
        pass


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=12 * 1024))
def test_fuzz_random_bytes(raw):
    head = bytearray(raw.ljust(12 * 1024, b"\0"))
    head[1024:1032] = b"OCFSV2\0\0"   # let the random bytes reach the parser
    try:
        v = Ocfs2Volume(BytesSource(bytes(head), "random.img"))
        _exercise(v)
    except VmsiftError:
        pass


def test_huge_size_fields_stay_bounded(mkfs_images, tmp_path):
    image = mkfs_images["b1k-c4k-default"]
    img = copy_image(image.path, tmp_path / "huge.img")
    with vol(image) as v:
        journal = v.stat("//journal:0000").inode
        lost = v.stat("lost+found").inode
        sysdir = v.sb.system_dir_blkno
        assert not v.stat("//").extra["inline"]
    with open(img, "r+b") as f:
        f.seek(journal * 1024 + 0x20)             # i_size = 2^62
        f.write(struct.pack("<Q", 1 << 62))
        f.seek(lost * 1024 + 0x20)                # an inline dir claims 2^40 bytes
        f.write(struct.pack("<Q", 1 << 40))
        f.seek(sysdir * 1024 + 0x20)               # a block dir of 2^62 bytes
        f.write(struct.pack("<Q", 1 << 62))
    tracemalloc.start()
    try:
        with Ocfs2Volume(FileSource(img)) as v:
            f = v.open("//journal:0000")
            assert f.size == 1 << 62
            runs = list(f.extents())
            assert runs[-1].kind is Alloc.HOLE and runs[-1].end == 1 << 62
            assert f.read((1 << 62) - 10, 100) == bytes(10)
            assert len(f.read(0, 8192)) == 8192
            v.listdir("lost+found")
            assert any("inline bytes" in w for w in v.warnings)
            assert "global_bitmap" in [e.name for e in v.listdir("//")]
            assert any("only its mapped blocks are read" in w for w in v.warnings)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20


# ---- kernel-written images ---------------------------------------------------------------------

KERNEL = ["max4k", "default1k", "ovm4k1m"]


@pytest.mark.parametrize("name", KERNEL)
def test_kernel_tree_matches_guest(kernel_images, name):
    image = kernel_images[name]
    with Ocfs2Volume(FileSource(image.path)) as v:
        seen = {}
        for directory, entries in v.walk():
            for e in entries:
                seen[f"{directory}/{e.name}".lstrip("/")] = e
        expected = {p: m for p, m in image.manifest.items() if p}
        assert set(seen) == set(expected)
        for path, m in expected.items():
            st_ = v.stat(path)
            assert st_.type.value == m["type"], path
            assert (st_.inode, st_.nlink) == (m["inode"], m["nlink"]), path
            assert stat_mod.S_IMODE(m["mode"]) == st_.mode, path
            if m["type"] != "dir":
                assert st_.size == m["size"], path
            if m["type"] == "symlink":
                assert v.readlink(path) == m["target"] == st_.symlink_target
            if m["type"] == "file" and "md5" in m:
                f = v.open(path)
                h = hashlib.md5()
                for off in range(0, f.size, 8 << 20):
                    h.update(f.read(off, 8 << 20))
                assert h.hexdigest() == m["md5"], path
        assert not [w for w in v.warnings if "checksum" in w]


@pytest.mark.parametrize("name", KERNEL)
def test_kernel_extent_maps_match_fiemap(kernel_images, name):
    from tests.fixtures.ocfs2_kernel import FIEMAP_INLINE, FIEMAP_SHARED, FIEMAP_UNWRITTEN
    image = kernel_images[name]
    with Ocfs2Volume(FileSource(image.path)) as v:
        checked = 0
        for path, m in image.manifest.items():
            if "extents" not in m:
                continue
            f = v.open(path)
            if any(fl & FIEMAP_INLINE for *_, fl in m["extents"]):
                assert v.stat(path).extra["inline"]
                continue
            ours = [(o, n, k, p) for o, n, k, p in f.physical_runs() if k is not Alloc.HOLE]
            # merge physically contiguous pieces of one kind on both sides, then compare
            def cover(runs):
                out = []
                for o, n, k, p in runs:
                    if out and out[-1][0] + out[-1][1] == o and out[-1][2] == k and \
                            out[-1][3] + out[-1][1] == p:
                        out[-1] = (out[-1][0], out[-1][1] + n, k, out[-1][3])
                    else:
                        out.append((o, n, k, p))
                return out
            theirs = []
            for logical, physical, length, flags in m["extents"]:
                length = min(length, max(f.size - logical, 0))
                if length:
                    kind = Alloc.ZERO if flags & FIEMAP_UNWRITTEN else Alloc.DATA
                    theirs.append((logical, length, kind, physical))
            assert cover(ours) == cover(theirs), path
            shared = sum(min(ln, max(f.size - lo, 0)) for lo, _, ln, fl in m["extents"]
                         if fl & FIEMAP_SHARED)
            extra = v.stat(path).extra
            if shared:
                assert extra["refcount"]["shared_bytes"] == shared, path
            checked += 1
        assert checked


@pytest.mark.parametrize("name", KERNEL)
def test_kernel_refcount_against_debugfs(kernel_images, name):
    from tests.fixtures.ocfs2_kernel import FIEMAP_SHARED
    image = kernel_images[name]
    with Ocfs2Volume(FileSource(image.path)) as v:
        found = 0
        for path, m in image.manifest.items():
            if m["type"] != "file":
                continue
            extra = v.stat(path).extra
            if "refcount" not in extra:
                continue
            text = debugfs(image.path, f"refcount /{path}")
            rows = re.findall(r"^\s*\d+\s+(\d+)\s+(\d+)\s+(\d+)\s*$", text, re.M)
            # the tree is shared by every reflink of the file: we show the records that
            # overlap this file's shared extents, so that is what debugfs's rows are cut to
            cs = v.cluster_size
            wanted = [(ph // cs, (ph + ln + cs - 1) // cs) for _, ph, ln, fl in m["extents"]
                      if fl & FIEMAP_SHARED]
            theirs = {(int(a), int(b), int(c)) for a, b, c in rows
                      if any(lo < int(a) + int(b) and int(a) < hi for lo, hi in wanted)}
            ours = {(r["cluster"], r["clusters"], r["refcount"])
                    for r in extra["refcount"]["records"]}
            assert ours and ours == theirs, path
            found += 1
    assert found


@pytest.mark.parametrize("name", KERNEL)
def test_kernel_deleted_entries(kernel_images, name):
    image = kernel_images[name]
    assert image.deleted
    with Ocfs2Volume(FileSource(image.path)) as v:
        live = {f"{d}/{e.name}".lstrip("/") for d, es in v.walk() for e in es}
        checked = 0
        for gone in image.deleted:
            path = gone["path"]
            assert path not in live
            parent, leaf = path.rpartition("/")[0], path.rpartition("/")[2]
            if parent and parent not in live:
                continue     # its directory went too
            entries = [e for e in v.listdir(parent, deleted=True) if e.deleted]
            hit = [e for e in entries if e.name == leaf]
            assert hit and hit[0].type.value == gone["type"], (path, entries)
            assert hit[0].inode in (None, gone["inode"])
            checked += 1
        assert checked >= 2
        assert not [e for e in v.listdir("deltest") if e.deleted]
    # the CLI, whole volume: every live path once, and the recoverable deleted names marked
    out = vmsift("ds", "ls", "-R", "--deleted", image.path)
    assert out.returncode == 0, out.stderr
    shown = out.stdout.splitlines()
    gone = {line[:-len(" (deleted)")].rstrip("/") for line in shown if line.endswith(" (deleted)")}
    assert {line.rstrip("/") for line in shown if not line.endswith(")")} == live
    assert gone & {g["path"] for g in image.deleted}


@pytest.mark.parametrize("name", KERNEL)
def test_kernel_indexed_dirs_against_debugfs(kernel_images, name):
    image = kernel_images[name]
    with Ocfs2Volume(FileSource(image.path)) as v:
        checked = 0
        for directory, entries in v.walk():
            if not directory:
                continue
            extra = v.stat(directory).extra
            if "index" not in extra:
                continue
            text = debugfs(image.path, f"dx_dump /{directory}")
            total = int(re.search(r"Total Entry Count: (\d+)", text)[1])
            assert total == extra["index"]["entries"] == len(entries) + 2   # with . and ..
            checked += 1
    assert checked or name == "ovm4k1m"   # 200 names fit in one 1 MiB cluster: no index


def test_kernel_heartbeat_against_debugfs(kernel_images):
    image = kernel_images["ovm4k1m"]
    with Ocfs2Volume(FileSource(image.path)) as v:
        info = v.info()
    assert info.data["cluster_stack"]["cluster"] == "ovspool"
    text = debugfs(image.path, "hb")
    rows = re.findall(r"^\s*(\d+):\s+(\d+)\s+([0-9a-f]{16})\s+([0-9a-f]{16})\s+([0-9a-f]+)\s+(\d+)",
                      text, re.M)
    assert rows
    ours = {n["index"]: n for n in info.data["heartbeat"]["nodes"]}
    for idx, node, seq, gen, crc, dead in rows:
        n = ours[int(idx)]
        assert (n["node"], n["seq"], n["generation"], n["checksum"], n["dead_ms"]) == \
            (int(node), int(seq, 16), int(gen, 16), int(crc, 16), int(dead))
        assert n["checksum_ok"]
    assert info.data["backup_superblocks"] == [{"offset": 1 << 30, "present": True}]


def test_kernel_info_against_debugfs(kernel_images):
    for image in kernel_images.values():
        st_ = stats(image.path)
        with Ocfs2Volume(FileSource(image.path)) as v:
            info = v.info()
        assert info.data["uuid"] == image.params.get("uuid", info.data["uuid"])
        assert v.sb.uuid_hex == st_["UUID"]
        assert set(info.data["features"]["incompat"]) == set(st_["Feature Incompat"].split()[1:])
        assert all(not j["dirty"] for j in info.data["journals"])
        assert not [w for w in info.warnings if "checksum" in w]
