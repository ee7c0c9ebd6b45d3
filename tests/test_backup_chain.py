"""`backup --chain` / `restore --chain`: a VM's snapshot tree (made with qemu-img, with a
branch), stored file by file and rebuilt as base + sparse deltas + .vmsd, read back at every
snapshot by qemu-img and by `vmsift disk export --snapshot`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import vmsift, vmsift_ok as ok
from tests.test_backup import VMX, backup_json, convert, qemu_io, run

MIB = 1 << 20
GRAIN = 64 << 10
VMSD = """.encoding = "UTF-8"
snapshot.lastUID = "3"
snapshot.current = "3"
snapshot0.uid = "1"
snapshot0.filename = "web-Snapshot1.vmsn"
snapshot0.displayName = "clean"
snapshot0.numDisks = "1"
snapshot0.disk0.fileName = "web.vmdk"
snapshot0.disk0.node = "scsi0:0"
snapshot1.uid = "2"
snapshot1.parent = "1"
snapshot1.filename = "web-Snapshot2.vmsn"
snapshot1.displayName = "patched"
snapshot1.numDisks = "1"
snapshot1.disk0.fileName = "web-000001.vmdk"
snapshot1.disk0.node = "scsi0:0"
snapshot2.uid = "3"
snapshot2.parent = "1"
snapshot2.filename = "web-Snapshot3.vmsn"
snapshot2.displayName = "upgrade"
snapshot2.numDisks = "1"
snapshot2.disk0.fileName = "web-000002.vmdk"
snapshot2.disk0.node = "scsi0:0"
snapshot.numSnapshots = "3"
"""
TREE = ["web.vmdk", "web-000001.vmdk", "web-000002.vmdk", "web-000003.vmdk"]


def _child(folder: Path, name: str, parent: str, *writes: str) -> None:
    run("qemu-img", "create", "-q", "-f", "vmdk", "-b", parent, "-F", "vmdk", folder / name)
    qemu_io(folder / name, *writes)


def make_tree_vm(folder: Path) -> None:
    """web.vmdk (snapshot 1 "clean") with two branches: web-000001 (snapshot 2 "patched",
    reverted from) and web-000002 (snapshot 3 "upgrade") under the current web-000003; and
    data.vmdk, a disk without snapshots."""
    folder.mkdir()
    run("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicSparse",
        folder / "web.vmdk", "64M")
    qemu_io(folder / "web.vmdk", "write -P 0x11 0 4M", "write -P 0x12 32M 2M")
    _child(folder, "web-000001.vmdk", "web.vmdk", "write -P 0x21 1M 128k", "write -P 0 32M 64k")
    _child(folder, "web-000002.vmdk", "web.vmdk", "write -P 0x31 8M 256k")
    _child(folder, "web-000003.vmdk", "web-000002.vmdk", "write -P 0x41 8M 64k",
           "write -P 0x42 60M 64k")
    run("qemu-img", "create", "-q", "-f", "vmdk", folder / "data.vmdk", "16M")
    qemu_io(folder / "data.vmdk", "write -P 0x51 0 1M")
    (folder / "web.vmx").write_text(VMX.replace("web-000001.vmdk", "web-000003.vmdk"))
    (folder / "web.vmsd").write_text(VMSD)
    for i in (1, 2, 3):
        (folder / f"web-Snapshot{i}.vmsn").write_bytes(b"\xd2\xbe\xd2\xbe" + bytes(60))
    (folder / "web.nvram").write_bytes(b"MRVN" + bytes(64))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VMSIFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VMSIFT_PASSWORD", "correct horse")


def _events(repo: Path, *args) -> dict[str, dict]:
    return {e["disk"]: e for e in backup_json(repo, *args) if e["event"] == "disk"}


def _same_raw(a: Path, b: Path, tmp: Path) -> bool:
    return convert(a, tmp / "a.raw") == convert(b, tmp / "b.raw")


def test_chain_backup_restores_the_tree_at_every_snapshot(tmp_path, cache):
    vm, repo = tmp_path / "vm", tmp_path / "repo"
    make_tree_vm(vm)
    ok("init", "-r", repo, "--encryption", "repokey")
    web = _events(repo, vm, "--chain")["web.vmdk"]
    links = {link["name"]: link for link in web["links"]}
    assert list(links) == TREE                              # parents first
    assert links["web.vmdk"]["snapshots"] == [1] and links["web-000001.vmdk"]["snapshots"] == [2]
    # the base is read whole; every delta only for its own grains (chain hint)
    assert links["web.vmdk"]["read"] == 6 * MIB
    assert links["web-000001.vmdk"]["hint"] == "chain"
    assert links["web-000001.vmdk"]["read"] == 128 * 1024 + GRAIN
    assert links["web-000002.vmdk"]["read"] == 256 * 1024
    assert web["hint"] == "chain" and web["stats"]["read"] == 2 * GRAIN

    out = tmp_path / "r"
    restored = json.loads(ok("restore", "-r", repo, "latest", "--chain", "--target", out,
                             "--format", "vmdk", "--json").stdout)
    kinds = {Path(w["path"]).name: w["kind"] for w in restored["written"]}
    assert {k: kinds[k] for k in TREE} == {"web.vmdk": "monolithicSparse",
                                          "web-000001.vmdk": "delta",
                                          "web-000002.vmdk": "delta",
                                          "web-000003.vmdk": "delta"}
    assert (out / "web.vmsd").read_bytes() == (vm / "web.vmsd").read_bytes()
    assert 'scsi0:0.fileName = "web-000003.vmdk"' in (out / "web.vmx").read_text()
    for name in [*TREE, "data.vmdk"]:                       # qemu-img follows each chain
        assert _same_raw(vm / name, out / name, tmp_path), name
    # a delta holds only its own grains, and its zero grain over the parent's data
    assert (out / "web-000001.vmdk").stat().st_size < 2 * MIB
    info = json.loads(run("qemu-img", "info", "--backing-chain", "--output=json",
                          out / "web-000003.vmdk"))
    assert [Path(i["filename"]).name for i in info] == ["web-000003.vmdk", "web-000002.vmdk",
                                                        "web.vmdk"]
    # vmsift reads the rebuilt folder's snapshot tree as it read the original
    vms = json.loads(ok("ds", "vms", out, "--json").stdout)["vms"]
    assert [s["uid"] for s in vms[0]["snapshots"]] == [1, 2, 3]
    assert not any("error" in json.dumps(d) for d in vms[0]["disks"])
    for uid, name in ((1, "web.vmdk"), (2, "web-000001.vmdk"), (3, "web-000002.vmdk")):
        ok("disk", "export", out / "web-000003.vmdk", tmp_path / f"s{uid}.raw",
           "--snapshot", str(uid))
        assert (tmp_path / f"s{uid}.raw").read_bytes() == convert(vm / name, tmp_path / "q.raw")


def test_one_disk_at_a_snapshot_and_the_tree_alone(tmp_path, cache):
    vm, repo = tmp_path / "vm", tmp_path / "repo"
    make_tree_vm(vm)
    ok("init", "-r", repo, "--encryption", "none")
    backup_json(repo, vm, "--chain")
    ok("restore", "-r", repo, "latest", "--disk", "web.vmdk", "--at", "2",
       "--target", tmp_path / "at")
    assert (tmp_path / "at" / "web-000001.raw").read_bytes() == convert(
        vm / "web-000001.vmdk", tmp_path / "q.raw")
    ok("restore", "-r", repo, "latest", "--disk", "web.vmdk", "--chain",
       "--target", tmp_path / "tree")
    # raw: the base as a flat extent with its descriptor; deltas name it as their parent
    assert (tmp_path / "tree" / "web-flat.vmdk").exists()
    for name in TREE:
        assert _same_raw(vm / name, tmp_path / "tree" / name, tmp_path), name
    bad = vmsift("restore", "-r", repo, "latest", "--disk", "web.vmdk", "--at", "9",
                 "--target", tmp_path / "x")
    assert bad.returncode == 7 and "no snapshot-tree file or snapshot '9'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_chain_again_reads_nothing_and_prune_keeps_the_tree(tmp_path, cache):
    vm, repo = tmp_path / "vm", tmp_path / "repo"
    make_tree_vm(vm)
    ok("init", "-r", repo, "--encryption", "none")
    first = backup_json(repo, vm, "--chain", "--tag", "tree")
    again = _events(repo, vm, "--chain")["web.vmdk"]
    assert again["hint"] == "identity" and again["stats"]["read"] == 0
    assert {link["hint"] for link in again["links"][:-1]} == {"identity"}
    assert sum(link["read"] for link in again["links"][:-1]) == 0
    # a flattened backup after a change; then only the first (tree) snapshot is kept
    before = convert(vm / "web-000003.vmdk", tmp_path / "before.raw")
    qemu_io(vm / "web-000003.vmdk", "write -P 0x77 16M 1M")
    backup_json(repo, vm)
    chain_snap = next(e["id"] for e in first if e["event"] == "snapshot")
    ok("forget", "-r", repo, "--keep-tag", "tree")
    snaps = json.loads(ok("snapshots", "-r", repo, "--json").stdout)["snapshots"]
    assert [s["id"] for s in snaps] == [chain_snap]
    ok("prune", "-r", repo, "--max-unused", "0")
    ok("check", "-r", repo, "--read-data")
    out = tmp_path / "r"
    ok("restore", "-r", repo, chain_snap[:8], "--chain", "--target", out)
    for name in TREE[:-1]:            # the branch's own chunks survived the prune
        assert _same_raw(vm / name, out / name, tmp_path), name
    assert convert(out / "web-000003.vmdk", tmp_path / "after.raw") == before


def test_restore_chain_of_a_flattened_backup_says_what_to_do(tmp_path, cache):
    vm, repo = tmp_path / "vm", tmp_path / "repo"
    make_tree_vm(vm)
    ok("init", "-r", repo, "--encryption", "none")
    backup_json(repo, vm)
    out = vmsift("restore", "-r", repo, "latest", "--chain", "--target", tmp_path / "r")
    assert out.returncode == 7 and "back it up with `vmsift backup --chain`" in out.stderr


def test_repository_mount_shows_the_tree(tmp_path, cache):
    """`mount -r`: `<disk>.tree/` holds the disk with each tree file on top, as qemu-img
    reads that file of the source, marked with its .vmsd snapshots."""
    import os

    from tests.test_fuse import mounted

    vm, repo = tmp_path / "vm", tmp_path / "repo"
    make_tree_vm(vm)
    ok("init", "-r", repo, "--encryption", "repokey")
    backup_json(repo, vm, "--chain")
    with mounted(tmp_path, "-r", repo) as mnt:
        tree = mnt / "latest" / "web" / "web.tree"
        assert sorted(p.name for p in tree.iterdir()) == sorted(
            n.replace(".vmdk", ".raw") for n in TREE)
        for name in TREE:
            raw = tree / name.replace(".vmdk", ".raw")
            assert raw.read_bytes() == convert(vm / name, tmp_path / "q.raw"), name
        assert os.getxattr(tree / "web-000001.raw", "user.vmsift.snapshots") == b"2"
        assert os.getxattr(tree / "web-000003.raw", "user.vmsift.parent").endswith(
            b"web-000002.vmdk")
