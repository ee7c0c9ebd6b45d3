"""The kernel-written OCFS2 fixtures, checked with independent oracles.

The images come from tests/fixtures/ocfs2_kernel.py (real Linux kernel under QEMU). Here
they are checked with fsck.ocfs2 and debugfs.ocfs2 (ocfs2-tools), with md5s recomputed on the
host from the pattern recipe, and with qemu-img/qemu-io for the VMware folder they carry.
The special images (a real orphan left by an unclean power-off; an Oracle VM server pool
file system) and the deleted entries are also read with vmsift and compared with debugfs and
the guest's own records.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.fixtures import ocfs2_kernel as ok
from tests.helpers import missing, require_tool, vmsift

NAMES = [s.name for s in ok.SPECS]
SPEC = {s.name: s for s in ok.SPECS}


def _build(builder, cache_dir: Path) -> dict[str, ok.KernelImage]:
    gone = ok.missing_tools()
    if gone:
        missing(f"OCFS2 image build tools {gone}")
    try:
        return builder(cache_dir)
    except ok.GuestBuildError as exc:  # loud: the message carries the guest console log
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def images(cache_dir: Path) -> dict[str, ok.KernelImage]:
    return _build(ok.build_images, cache_dir)


@pytest.fixture(scope="session")
def special(cache_dir: Path) -> dict[str, ok.KernelImage]:
    """orphan4k and ovspoolfs (built in the same run as the standard images)."""
    return _build(ok.build_special_images, cache_dir)



def vmsift_json(*args) -> dict:
    out = vmsift(*args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def debugfs(image: Path, *commands: str) -> str:
    require_tool("debugfs.ocfs2")
    args = ["debugfs.ocfs2"]
    for c in commands:
        args += ["-R", c]
    proc = subprocess.run(args + [str(image)], capture_output=True, text=True, check=True)
    return proc.stdout


def debugfs_script(image: Path, commands: list[str], tmp: Path) -> str:
    script = tmp / "cmds"
    script.write_text("\n".join(commands) + "\n")
    # debugfs.ocfs2 -f exits 1 even when every command worked: callers check the results
    proc = subprocess.run(["debugfs.ocfs2", "-f", str(script), str(image)],
                          capture_output=True, text=True)
    return proc.stdout + proc.stderr


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def files(img: ok.KernelImage) -> list[str]:
    return sorted(p for p, e in img.manifest.items() if e["type"] == "file")


# ---- unit checks of the fixture module itself (no build) --------------------------------------

def test_pattern_bytes_matches_o2fill_definition():
    # bytes o2fill wrote for "pattern f 1 3 21" (xxd of the C program's output)
    data = ok.pattern_bytes(1, 3, 21)
    assert data == bytes([0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 0, 0, 1, 0, 0])
    assert ok.pattern_bytes(5, 4096, 8) == ((5 << 40) | 512).to_bytes(8, "little")


def test_parse_manifest():
    text = ("#PARAMS\nkernel|6.1.0-x\n#STAT\ndirectory|3896|3|5|8|755|.\n"
            "regular file|13|2|70|1|644|./a b.txt\nsymbolic link|5|1|71|0|777|./l\n"
            "#MD5\nba28676f3493e4aad101cefdb846fe74  ./a b.txt\n#LINK\n'./l' -> 'a b.txt'\n"
            "#FIEMAP ./a b.txt\n0 4096 3896 769\n#DELETED\nx/y|9|regular file|4|abc\n"
            "#ORPHAN\nx/z|10|21480|def\n#END\n")
    entries, deleted, kernel, orphans = ok.parse_manifest(text)
    assert kernel == "6.1.0-x"
    assert entries[""] == {"type": "dir", "size": 3896, "nlink": 3, "inode": 5, "blocks": 8,
                           "mode": 0o755}
    assert entries["a b.txt"]["md5"] == "ba28676f3493e4aad101cefdb846fe74"
    assert entries["a b.txt"]["extents"] == [[0, 4096, 3896, 769]]
    assert entries["l"]["target"] == "a b.txt"
    assert deleted == [{"path": "x/y", "inode": 9, "type": "file", "size": 4, "md5": "abc"}]
    assert orphans == [{"path": "x/z", "inode": 10, "size": 21480, "md5": "def"}]
    with pytest.raises(ValueError):
        ok.parse_manifest(text.replace("#END\n", ""))


def test_recipe_hash_is_stable_and_sensitive():
    assert ok.recipe_hash(ok.SPECS) == ok.recipe_hash(list(ok.SPECS))
    assert ok.recipe_hash(ok.SPECS) != ok.recipe_hash(ok.SPECS[:1])
    assert ok.recipe_hash(ok.ALL_SPECS) != ok.recipe_hash(ok.SPECS)


def test_special_recipes():
    orphan, poolfs = (next(s for s in ok.SPECIAL_SPECS if s.name == n)
                      for n in ("orphan4k", "ovspoolfs"))
    assert orphan.content == "orphan" and not orphan.cluster_mode
    assert orphan.orphan_size % orphan.block_size  # a partial last block
    assert poolfs.content == "poolfs" and poolfs.global_heartbeat
    args = poolfs.mkfs_args(Path("p.img"))
    assert "--global-heartbeat" in args
    assert f"--cluster-name={ok.POOLFS_IDS['POOLFS_CLUSTER']}" in args
    # the volume UUID is the pool file system id; the cluster name fits o2cb's 16 characters
    assert poolfs.uuid.replace("-", "") == ok.POOLFS_IDS["POOLFS_UUID"]
    assert len(poolfs.cluster_name) == 16


# ---- the built images -------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_fsck_passes(images, name):
    require_tool("fsck.ocfs2")
    proc = subprocess.run(["fsck.ocfs2", "-fn", str(images[name].path)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All passes succeeded" in proc.stdout


@pytest.mark.parametrize("name", NAMES)
def test_superblock_matches_recipe(images, name):
    img, spec = images[name], SPEC[name]
    out = debugfs(img.path, "stats")
    assert f"Block Size Bits: {spec.block_size.bit_length() - 1}" in out
    assert f"Cluster Size Bits: {spec.cluster_size.bit_length() - 1}" in out
    assert f"Max Node Slots: {spec.slots}" in out
    assert f"Label: {spec.label}" in out
    assert spec.uuid.replace("-", "").upper() in out
    incompat = img.params["features"]["incompat"]
    assert ("local" in incompat) is (not spec.cluster_mode)
    assert ("metaecc" in incompat) is (spec.feature_level == "max-features")
    for feat in ("sparse", "inline-data", "indexed-dirs", "refcount"):
        assert feat in incompat
    assert "unwritten" in img.params["features"]["ro_compat"]
    assert img.params["kernel"].endswith("-amd64")


@pytest.mark.parametrize("name", NAMES)
def test_contents_match_host_recipe(images, name):
    """md5s the guest computed equal md5s of the data the recipe says was written."""
    m, spec = images[name].manifest, SPEC[name]
    cs, pat = spec.cluster_size, ok.pattern_bytes
    assert m["small.txt"]["md5"] == md5(b"hello-inline\n")
    assert m["inline-dir/b.txt"]["md5"] == md5(b"bee\n")
    sparse = bytearray(117440512)
    sparse[104857600:104857600 + 8192] = pat(3, 104857600, 8192)
    assert m["sparse.bin"]["md5"] == md5(sparse)
    assert m["prealloc.bin"]["md5"] == md5(pat(4, 0, cs) + bytes(3 * cs))
    size = ok.reflink_size(spec)
    src = pat(5, 0, size)
    clone = bytearray(src)
    clone[2 * cs + 512:2 * cs + 1024] = pat(6, 2 * cs + 512, 512)
    assert m["reflink-src.bin"]["md5"] == md5(src)
    assert m["reflink-clone.bin"]["md5"] == md5(clone)
    assert m["frag-dense.bin"]["md5"] == md5(pat(7, 0, spec.frag_dense * cs))
    sparse_frag = bytearray((2 * (spec.frag_sparse - 1)) * cs + spec.block_size)
    for i in range(spec.frag_sparse):
        off = 2 * i * cs
        sparse_frag[off:off + spec.block_size] = pat(8, off, spec.block_size)
    assert m["frag-sparse.bin"]["md5"] == md5(sparse_frag)
    for i in range(spec.dir_files):
        if i != 7:
            assert m[f"big-dir/f{i}"]["md5"] == md5(f"f{i}\n".encode())
    assert m["slow-link"]["target"] == "slow/" * 800
    assert m["fast-link"]["target"] == "small.txt"
    assert m["hardlink.txt"]["inode"] == m["small.txt"]["inode"]
    assert m["small.txt"]["nlink"] == 2
    names = [p for p in m if p.startswith("big-dir/")]
    assert len(names) == spec.dir_files - 1  # f7 was deleted


@pytest.mark.parametrize("name", NAMES)
def test_debugfs_cat_equals_guest_md5(images, name, tmp_path):
    """Every regular file dumped by debugfs.ocfs2 has the md5 the guest computed."""
    require_tool("debugfs.ocfs2")
    img = images[name]
    # big-dir's 10,000 one-line files: a sample here (all are checked against the recipe)
    big = [p for p in files(img) if p.startswith("big-dir/")]
    paths = [p for p in files(img) if not p.startswith("big-dir/")] + big[::50] + big[-1:]
    out = tmp_path / "out"
    out.mkdir()
    cmds = [f"dump /{p} {out}/{i}" for i, p in enumerate(paths)]
    debugfs_script(img.path, cmds, tmp_path)
    bad = []
    for i, p in enumerate(paths):
        got = out / str(i)
        h = hashlib.md5()
        with open(got, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        if h.hexdigest() != img.manifest[p]["md5"]:
            bad.append(p)
    assert not bad


_LS = re.compile(r"^\s*(\d+)\s+([-dlcbps][-rwxsStT]{9})\s+(\d+)\s+\d+\s+\d+\s+(\d+)\s+"
                 r"\S+\s+\S+\s(.+)$")


def ls_dir(image: Path, path: str) -> dict[str, tuple[int, str, int, int]]:
    out = debugfs(image, f"ls -l /{path}")
    entries = {}
    for line in out.splitlines():
        m = _LS.match(line)
        if m:
            entries[m.group(5)] = (int(m.group(1)), m.group(2), int(m.group(3)),
                                   int(m.group(4)))
    return entries


@pytest.mark.parametrize("name", NAMES)
def test_debugfs_ls_agrees_with_manifest(images, name):
    img = images[name]
    m = img.manifest
    dirs = [p for p, e in m.items() if e["type"] == "dir"]
    kinds = {"-": "file", "d": "dir", "l": "symlink"}
    for d in dirs:
        listing = ls_dir(img.path, d)
        children = {p.rsplit("/", 1)[-1]: e for p, e in m.items()
                    if p and (p.rsplit("/", 1)[0] if "/" in p else "") == d}
        assert set(listing) - {".", ".."} == set(children), d
        for child, e in children.items():
            inode, mode, links, size = listing[child]
            assert (inode, kinds[mode[0]], links, size) == \
                (e["inode"], e["type"], e["nlink"], e["size"]), f"{d}/{child}"


def stat(img: ok.KernelImage, path: str) -> str:
    return debugfs(img.path, f"stat /{path}")


def extent_recs(out: str) -> list[tuple[int, int, int, int]]:
    """(cpos, clusters, blkno, flags) of the leaf records in a debugfs 'stat' output."""
    recs = []
    depth_zero = False
    for line in out.splitlines():
        m = re.match(r"\s*Tree Depth: (\d+)", line)
        if m:
            depth_zero = m.group(1) == "0"
            continue
        m = re.match(r"\s*\d+\s+(\d+)\s+(\d+)\s+(\d+)\s+0x([0-9a-f]+)", line)
        if m and depth_zero:
            recs.append(tuple(int(g) for g in m.groups()[:3]) + (int(m.group(4), 16),))
    return recs


def tree_depth(out: str) -> int:
    return int(re.search(r"Tree Depth: (\d+)", out).group(1))


@pytest.mark.parametrize("name", NAMES)
def test_stat_shows_extent_features(images, name):
    img, spec = images[name], SPEC[name]
    cs, bs = spec.cluster_size, spec.block_size
    assert "Inline Data" in stat(img, "small.txt")
    assert "Inline Data" in stat(img, "inline-dir")
    assert "Indexed" in stat(img, "big-dir")
    # fragmented files: one record per piece, trees as deep as the record counts demand
    dense, sparse = stat(img, "frag-dense.bin"), stat(img, "frag-sparse.bin")
    assert len(extent_recs(dense)) == spec.frag_dense
    assert len(extent_recs(sparse)) == spec.frag_sparse
    inode_cap = (bs - 0xD0) // 16
    leaf_cap = (bs - 0x40) // 16
    expect_depth = 0 if spec.frag_sparse <= inode_cap else \
        1 if spec.frag_sparse <= inode_cap * leaf_cap else 2
    assert tree_depth(sparse) == expect_depth
    if name == "default1k":
        assert expect_depth == 2
    elif name == "max4k":
        assert tree_depth(dense) == 1
    assert [r[0] for r in extent_recs(sparse)] == [2 * i for i in range(spec.frag_sparse)]
    # sparse file: one record at 100 MiB, nothing before it
    recs = extent_recs(stat(img, "sparse.bin"))
    assert recs and recs[0][0] == 104857600 // cs and len(recs) == 1
    # prealloc: a written cluster then unwritten ones
    recs = extent_recs(stat(img, "prealloc.bin"))
    assert [(r[0], r[1], r[3]) for r in recs] == [(0, 1, 0), (1, 3, 1)]
    assert "Unwritten" in stat(img, "prealloc.bin")
    # reflink: both inodes refcounted, same tree; clone's rewritten part unshared (flag 0x2)
    src, clone = stat(img, "reflink-src.bin"), stat(img, "reflink-clone.bin")
    for out in (src, clone):
        assert "Refcounted" in out
    tree = re.search(r"Refcount Block: (\d+)", src).group(1)
    assert tree != "0" and f"Refcount Block: {tree}" in clone
    crecs = extent_recs(clone)
    assert any(r[3] & 2 for r in crecs) and any(not r[3] & 2 for r in crecs)
    first = next(r for r in crecs if r[0] <= 2 < r[0] + r[1])
    assert not first[3] & 2  # the cluster written after cloning was copied
    # the refcount tree: two inodes; the still-shared clusters have reference count 2
    tree_out = debugfs(img.path, "refcount /reflink-src.bin")
    assert "Reftree Count: 2" in tree_out
    shared = [r for r in crecs if r[3] & 2]
    counts = {(int(a), int(b)): int(c) for a, b, c in
              re.findall(r"^\s*\d+\s+(\d+)\s+(\d+)\s+(\d+)\s*$", tree_out, re.M)}
    for cpos, clusters, blkno, _ in shared:
        assert counts.get((blkno * bs // cs, clusters)) == 2, (cpos, tree_out)


@pytest.mark.parametrize("name", NAMES)
def test_fiemap_matches_debugfs_extents(images, name):
    """The guest's FIEMAP and debugfs agree on where the data lives and its flags."""
    img, spec = images[name], SPEC[name]
    cs, bs = spec.cluster_size, spec.block_size
    for path in ("prealloc.bin", "reflink-clone.bin", "frag-dense.bin", "sparse.bin"):
        fiemap = img.manifest[path]["extents"]
        recs = extent_recs(stat(img, path))
        # FIEMAP merges physically contiguous records; compare byte coverage instead
        guest = {}
        for logical, physical, length, flags in fiemap:
            for off in range(0, length, cs):
                guest[logical + off] = (physical + off,
                                        bool(flags & ok.FIEMAP_UNWRITTEN),
                                        bool(flags & ok.FIEMAP_SHARED))
        host = {}
        for cpos, clusters, blkno, flags in recs:
            for c in range(clusters):
                host[(cpos + c) * cs] = (blkno * bs + c * cs, bool(flags & 1), bool(flags & 2))
        size = img.manifest[path]["size"]
        host = {k: v for k, v in host.items() if k < size}
        assert {k: v[:2] for k, v in guest.items()} == {k: v[:2] for k, v in host.items()}, path
    assert img.manifest["small.txt"]["extents"][0][3] & ok.FIEMAP_INLINE


@pytest.mark.parametrize("name", NAMES)
def test_deleted_entries_are_gone(images, name):
    img = images[name]
    paths = {d["path"] for d in img.deleted}
    assert paths == {"deltest/gone.bin", "deltest/gone-dir/lost.txt", "deltest/gone-dir",
                     "big-dir/f7"}
    assert not paths & set(img.manifest)
    assert set(ls_dir(img.path, "deltest")) - {".", ".."} == {"keep.txt"}
    gone = next(d for d in img.deleted if d["path"] == "deltest/gone.bin")
    cs = SPEC[name].cluster_size
    assert gone["md5"] == md5(ok.pattern_bytes(9, 0, 3 * cs))


def test_vmware_folder_reads_back_with_qemu(images, tmp_path):
    """The VMware VM folder dumped from the OCFS2 image is a valid 3-deep qemu-img chain."""
    require_tool("qemu-img")
    require_tool("qemu-io")
    img = images["max4k"]
    folder = ok.VMWARE_DIR
    names = sorted(p.rsplit("/", 1)[1] for p in img.manifest if p.startswith(folder + "/"))
    assert names == ["testvm-000001.vmdk", "testvm-000002.vmdk", "testvm.vmdk",
                     "testvm.vmsd", "testvm.vmx"]
    debugfs_script(img.path, [f"dump /{folder}/{n} {tmp_path}/{n}" for n in names], tmp_path)
    assert (tmp_path / "testvm.vmx").read_text() == ok.VMX
    assert (tmp_path / "testvm.vmsd").read_text() == ok.VMSD
    top = tmp_path / "testvm-000002.vmdk"
    info = subprocess.run(["qemu-img", "info", "--backing-chain", str(top)],
                          capture_output=True, text=True, check=True).stdout
    assert len(re.findall(r"^image: ", info, re.M)) == 3
    assert len(re.findall(r"^file format: vmdk$", info, re.M)) == 3
    for pattern, off, length in (("0x31", "1M", "4k"), ("0x21", "512k", "64k"),
                                 ("0x11", "0", "512k"), ("0x12", "64M", "64k"),
                                 ("0x32", "200M", "64k"), ("0", "100M", "64k")):
        proc = subprocess.run(["qemu-io", "-r", "-f", "vmdk", "-c",
                               f"read -P {pattern} {off} {length}", str(top)],
                              capture_output=True, text=True)
        assert proc.returncode == 0 and "Pattern verification failed" not in proc.stdout, \
            proc.stdout


def test_oracle_vm_repository(images, tmp_path):
    from vmsift.formats import vmcfg

    img = images["ovm4k1m"]
    m, ids = img.manifest, ok.OVM_IDS
    for d in ("Assemblies", "ISOs", "Templates", "VirtualDisks", "VirtualMachines"):
        assert m[d]["type"] == "dir"
    out = debugfs(img.path, "cat /.ovsrepo")
    assert f"OVS_REPO_UUID={ids['OVM_REPO_ID']}" in out and "OVS_REPO_ALIAS=" in out
    for vm, disk in (("OVM_VM1", "OVM_DISK1"), ("OVM_VM2", "OVM_DISK2")):
        text = debugfs(img.path, f"cat /VirtualMachines/{ids[vm]}/vm.cfg")
        cfg = vmcfg.parse(text.encode(), f"{vm}/vm.cfg")
        assert cfg.name == ids[vm]
        disks = cfg.disks
        assert disks[0].path == (f"/OVS/Repositories/{ids['OVM_REPO_ID']}/VirtualDisks/"
                                 f"{ids[disk]}.img")
        assert disks[1].cdrom
        assert m[f"VirtualDisks/{ids[disk]}.img"]["type"] == "file"
    # the second VM's disk is a thin clone (reflink) of the first
    a = stat(img, f"VirtualDisks/{ids['OVM_DISK1']}.img")
    b = stat(img, f"VirtualDisks/{ids['OVM_DISK2']}.img")
    tree = re.search(r"Refcount Block: (\d+)", a).group(1)
    assert tree != "0" and f"Refcount Block: {tree}" in b
    cs = SPEC["ovm4k1m"].cluster_size
    disk1 = bytearray(32 * cs)
    disk1[:2 * cs] = ok.pattern_bytes(10, 0, 2 * cs)
    disk1[16 * cs:17 * cs] = ok.pattern_bytes(10, 16 * cs, cs)
    assert m[f"VirtualDisks/{ids['OVM_DISK1']}.img"]["md5"] == md5(disk1)
    disk1[512:1024] = ok.pattern_bytes(11, 512, 512)
    assert m[f"VirtualDisks/{ids['OVM_DISK2']}.img"]["md5"] == md5(disk1)


def test_cluster_mode_image_has_real_heartbeat(images):
    img, spec = images["ovm4k1m"], SPEC["ovm4k1m"]
    stats = debugfs(img.path, "stats")
    assert re.search(r"Cluster stack:\s*o2cb", stats, re.I) or "o2cb" in stats
    assert spec.cluster_name in stats
    assert "clusterinfo" in img.params["features"]["incompat"]
    hb = debugfs(img.path, "hb")
    rows = [line.split() for line in hb.splitlines() if re.match(r"\s*\d+:", line)]
    assert rows, hb
    node, seq = rows[0][1], int(rows[0][2], 16)
    assert node == "0" and seq > 0  # written by the guest's o2hb thread
    # the first backup superblock (volume > 1 GiB)
    with open(img.path, "rb") as fh:
        fh.seek(1 << 30)
        block = fh.read(spec.block_size)
    assert block.startswith(b"OCFSV2")
    assert int.from_bytes(block[0x50:0x58], "little") == (1 << 30) // spec.block_size


# ---- the benchmark image (1 GiB write under TCG: ~45 s, so only on request) -------------------

def test_bench_recipe():
    spec = ok.BENCH_SPEC
    assert spec.bench_size == 1 << 30 and spec.bench_size // spec.bench_chunk == 4096
    assert spec.dir_files == 10_000

# The 1 GiB bench image itself is built and checked (md5 against the guest) by
# bench/bench_datastore.py, not here: it takes ~45 s under TCG.


# ---- deleted entries: what the kernel leaves and `vmsift ds ls --deleted` recovers -------------

@pytest.mark.parametrize("name", NAMES)
def test_ds_ls_deleted_recovers_names_the_guest_deleted(images, name):
    """Every entry the guest removed from a directory that still exists is listed by
    `ds ls --deleted` under its name and type. The kernel (ocfs2_delete_entry) zeroes the
    inode number of a removed entry, so none can be tied to its inode: inode is null."""
    img = images[name]
    by_parent: dict[str, list[dict]] = {}
    for gone in img.deleted:
        parent = gone["path"].rpartition("/")[0]
        if parent in img.manifest:  # deltest/gone-dir went with its entry lost.txt
            by_parent.setdefault(parent, []).append(gone)
    assert sorted(by_parent) == ["big-dir", "deltest"]
    for parent, gone in by_parent.items():
        doc = vmsift_json("ds", "ls", "--deleted", img.path, parent)
        listed = {e["name"]: e for e in doc["entries"] if e["deleted"]}
        for g in gone:
            leaf = g["path"].rpartition("/")[2]
            assert leaf in listed, (parent, sorted(listed))
            assert listed[leaf]["type"] == g["type"]
            assert listed[leaf]["inode"] is None and listed[leaf]["stat"] is None
        live = {e["name"] for e in doc["entries"] if not e["deleted"]}
        assert live == {p.rpartition("/")[2] for p in img.manifest
                        if p.rpartition("/")[0] == parent and p}
    # without --deleted nothing deleted shows
    doc = vmsift_json("ds", "ls", img.path, "deltest")
    assert [e["name"] for e in doc["entries"]] == ["keep.txt"]
    out = vmsift("ds", "ls", "--deleted", img.path, "deltest")
    assert out.stdout.splitlines() == ["gone-dir/ (deleted)", "gone.bin (deleted)", "keep.txt"]


# ---- a real orphan: open file unlinked, sync, power off without umount ------------------------

def test_orphan_left_on_disk_per_debugfs(special):
    img = special["orphan4k"]
    (orphan,) = img.orphans
    assert orphan["path"] == "work/held-open.bin"
    assert orphan["size"] == ok.SPECIAL_SPECS[0].orphan_size
    assert orphan["md5"] == md5(ok.pattern_bytes(14, 0, orphan["size"]))
    listing = ls_dir(img.path, "/orphan_dir:0000")
    entries = {k: v for k, v in listing.items() if k not in (".", "..")}
    # the kernel names an orphan entry by its inode number, 16 hex digits
    assert entries == {f"{orphan['inode']:016x}": (orphan["inode"], "-rw-r--r--", 0,
                                                   orphan["size"])}
    out = debugfs(img.path, f"stat <{orphan['inode']}>")
    assert re.search(r"Flags: Valid Orphan", out) and "Orphan Slot: 0" in out
    assert re.search(rf"Size: {orphan['size']}\s", out) and "Links: 0" in out
    # unclean power-off: the journal of slot 0 is still marked dirty
    assert "Journal Flags: Dirty" in debugfs(img.path, "stat //journal:0000")
    # the file unlinked while closed was freed at once: not an orphan
    closed = next(d for d in img.deleted if d["path"] == "work/unlinked-closed.bin")
    assert closed["inode"] != orphan["inode"]
    require_tool("fsck.ocfs2")
    proc = subprocess.run(["fsck.ocfs2", "-fn", str(img.path)], capture_output=True, text=True)
    assert "Skipping journal replay" in proc.stdout and "All passes succeeded" in proc.stdout


def test_orphan_reported_and_read_by_vmsift(special):
    from vmsift.datastore.detect import open_datastore
    from vmsift.report import Table

    img = special["orphan4k"]
    (orphan,) = img.orphans
    ino, size = orphan["inode"], orphan["size"]
    with open_datastore([str(img.path)]) as v:
        info = v.info()
        assert info.data["orphans"] == [{"slot": 0, "name": f"{ino:016x}", "inode": ino,
                                         "size": size, "mode": 0o100644, "dtime": 0}]
        assert [j["dirty"] for j in info.data["journals"]] == [True]
        assert [w for w in info.warnings if "journal" in w] == [
            "journal of slot 0 is dirty: the volume is mounted or was not cleanly unmounted; "
            "changes still only in the journal are not shown (vmsift does not replay journals)"]
        tables = {t.title: t for t in info.tables}
        assert isinstance(tables["orphans"], Table)
        assert tables["orphans"].rows == [[0, ino, size]]
        assert tables["journals"].rows[0][3] is True
        # the orphan's data, read by inode number, is what the guest wrote
        f = v.open_inode(ino)
        assert f.size == size and md5(f.read(0, size)) == orphan["md5"]
        assert [(r.offset, r.length, r.kind.value) for r in f.extents()] == [(0, size, "data")]
        st = v.stat_inode(ino)
        assert (st.nlink, st.size, st.type.value) == (0, size, "file")
        assert "orphaned" in st.extra["flags"] and st.extra["orphaned_slot"] == 0
        # the live tree is exactly what the guest saw after the unlink
        seen = {f"{d}/{e.name}".lstrip("/") for d, es in v.walk() for e in es}
        assert seen == {p for p in img.manifest if p}
        # both unlinked names are recoverable from work/, without inode numbers
        gone = {e.name: e for e in v.listdir("work", deleted=True) if e.deleted}
        assert set(gone) == {"held-open.bin", "unlinked-closed.bin"}
        assert all(e.inode is None and e.type.value == "file" for e in gone.values())
    doc = vmsift_json("ds", "info", img.path)
    assert doc["data"]["orphans"] == info.data["orphans"]
    assert doc["data"]["journals"][0]["dirty"] is True
    out = vmsift("ds", "info", img.path)
    assert out.returncode == 0 and re.search(r"^orphans \(1\)$", out.stdout, re.M)
    assert re.search(rf"^\s*0\s+{ino}\s+{size}\s*$", out.stdout, re.M)


def test_clean_images_have_no_orphans(images):
    from vmsift.datastore.detect import open_datastore

    for img in images.values():
        with open_datastore([str(img.path)]) as v:
            info = v.info()
        assert info.data["orphans"] == [] and img.orphans == []
        assert not any(j["dirty"] for j in info.data["journals"])


# ---- Oracle VM server pool file system ---------------------------------------------------------

def test_pool_filesystem_per_debugfs(special):
    img, spec = special["ovspoolfs"], ok.SPECIAL_SPECS[1]
    stats = debugfs(img.path, "stats")
    assert f"UUID: {ok.POOLFS_IDS['POOLFS_UUID'].upper()}" in stats
    assert f"Cluster name: {ok.POOLFS_IDS['POOLFS_CLUSTER']}" in stats
    assert re.search(r"Cluster flags: 1 Globalheartbeat", stats)
    assert f"Max Node Slots: {spec.slots}" in stats
    hb = re.findall(r"^\s*(\d+):\s+(\d+)\s+([0-9a-f]{16})", debugfs(img.path, "hb"), re.M)
    assert hb and hb[0][:2] == ("0", "0") and int(hb[0][2], 16) > 0
    text = debugfs(img.path, "cat /.ovspoolfs")
    assert f"OVS_POOLFS_UUID={ok.POOLFS_IDS['POOLFS_UUID']}" in text
    assert set(ls_dir(img.path, "")) - {".", ".."} == {".ovspoolfs", ".generic_fs_stamp",
                                                       "lost+found"}
    require_tool("fsck.ocfs2")
    proc = subprocess.run(["fsck.ocfs2", "-fn", str(img.path)], capture_output=True, text=True)
    assert proc.returncode == 0 and "All passes succeeded" in proc.stdout, proc.stdout


def test_pool_filesystem_recognised_by_vmsift(special):
    from vmsift.datastore.detect import open_datastore
    from vmsift.datastore.vm import find_vms, oracle_vm_role

    img = special["ovspoolfs"]
    ids = ok.POOLFS_IDS
    keys = {"OVS_POOLFS_UUID": ids["POOLFS_UUID"], "OVS_POOLFS_POOL_UUID": ids["POOLFS_POOL_UUID"],
            "OVS_POOLFS_MGR_UUID": ids["POOLFS_MGR_UUID"], "OVS_POOLFS_VERSION": "3.0",
            "OVS_POOLFS_TYPE": "lun", "OVS_POOLFS_TARGET": ids["POOLFS_TARGET"],
            "OVS_POOLFS_CLUSTER": ids["POOLFS_CLUSTER"]}
    with open_datastore([str(img.path)]) as v:
        role = oracle_vm_role(v)
        assert role == {"role": "server pool file system", "marker": ".ovspoolfs", "keys": keys}
        problems: list[str] = []
        assert list(find_vms(v, problems)) == [] and problems == []
        info = v.info()
        assert info.data["uuid"] == ok.SPECIAL_SPECS[1].uuid
        assert info.data["cluster_stack"] == {"mode": "cluster", "stack": "o2cb",
                                              "classic": False,
                                              "cluster": ids["POOLFS_CLUSTER"],
                                              "global_heartbeat": True}
        nodes = info.data["heartbeat"]["nodes"]
        assert nodes and nodes[0]["node"] == 0 and nodes[0]["checksum_ok"]
        assert not any(j["dirty"] for j in info.data["journals"])
        assert v.open(".generic_fs_stamp").read(0, 16) == b"OCFS2\n"
    doc = vmsift_json("ds", "info", img.path)
    assert doc["data"]["oracle_vm"] == role
    out = vmsift("ds", "info", img.path)
    assert re.search(r"^\s*Oracle VM\s+server pool file system$", out.stdout, re.M)
    doc = vmsift_json("ds", "vms", img.path)
    assert doc["vms"] == [] and doc["problems"] == []
    assert doc["oracle_vm"] == role
    out = vmsift("ds", "vms", img.path)
    assert out.stdout.startswith("Oracle VM server pool file system (.ovspoolfs)\n")
