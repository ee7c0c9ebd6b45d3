"""The backup engine end to end, on VM folders made by qemu-img: back up, change blocks with
qemu-io, back up again, restore every disk of both points in time and compare with
`qemu-img convert` of the source; whole VM folders read back by qemu-img and `ds vms`;
encrypted and plain; bad passwords, other repositories, locks, damage, a full disk."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.helpers import require_tool, vmsift, vmsift_ok as ok

MIB = 1 << 20
VMX = """.encoding = "UTF-8"
config.version = "8"
virtualHW.version = "14"
displayName = "web"
guestOS = "ubuntu-64"
uuid.bios = "56 4d 12 34 56 78 9a bc-de f0 12 34 56 78 9a bc"
memsize = "1024"
scsi0.present = "TRUE"
scsi0.virtualDev = "lsilogic"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "web-000001.vmdk"
scsi0:1.present = "TRUE"
scsi0:1.fileName = "data.vmdk"
nvram = "web.nvram"
"""
VMSD = """.encoding = "UTF-8"
snapshot.lastUID = "1"
snapshot.current = "1"
snapshot0.uid = "1"
snapshot0.filename = "web-Snapshot1.vmsn"
snapshot0.displayName = "base"
snapshot0.createTimeHigh = "389212"
snapshot0.createTimeLow = "-1424476416"
snapshot0.numDisks = "1"
snapshot0.disk0.fileName = "web.vmdk"
snapshot0.disk0.node = "scsi0:0"
snapshot.numSnapshots = "1"
"""


def run(*args: str | Path) -> str:
    out = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    assert out.returncode == 0, f"{args}: {out.stderr}"
    return out.stdout


def qemu_io(disk: Path, *commands: str) -> None:
    args = ["qemu-io", "-f", "vmdk"]
    for c in commands:
        args += ["-c", c]
    run(*args, disk)


def convert(disk: Path, out: Path, fmt: str = "vmdk") -> bytes:
    run("qemu-img", "convert", "-f", fmt, "-O", "raw", disk, out)
    return out.read_bytes()


def make_vm(folder: Path) -> None:
    """A VM folder: a monolithicSparse base with a -b child (current state) and a split
    (twoGbMaxExtentSparse) second disk, a .vmx, an NVRAM and a log."""
    require_tool("qemu-img")
    require_tool("qemu-io")
    folder.mkdir()
    base, child, data = folder / "web.vmdk", folder / "web-000001.vmdk", folder / "data.vmdk"
    run("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicSparse", base, "64M")
    qemu_io(base, "write -P 0x11 0 4M", "write -P 0x22 20M 1M", "write -P 0x11 40M 4M")
    run("qemu-img", "create", "-q", "-f", "vmdk", "-b", "web.vmdk", "-F", "vmdk", child)
    qemu_io(child, "write -P 0x33 1M 128k", "write -P 0 20M 1M")  # zeros over data
    run("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse",
        data, "40M")
    qemu_io(data, "write -P 0x44 0 3M", "write -P 0x45 30M 64k")
    (folder / "web.vmx").write_text(VMX)
    (folder / "web.nvram").write_bytes(b"MRVN" + bytes(range(256)) * 8)
    (folder / "vmware.log").write_text("2026-12-03T10:00:00.000Z In(05) vmx Log for VMware\n")
    (folder / "web.vmsd").write_text(VMSD)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VMSIFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VMSIFT_PASSWORD", "correct horse")
    return tmp_path / "cache"


def backup_json(repo: Path, *args) -> list[dict]:
    out = vmsift("backup", "--json", "-r", repo, *args)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def stored_bytes(path: Path) -> int:
    return path.stat().st_blocks * 512


@pytest.mark.parametrize("encryption", ["none", "repokey"])
def test_back_up_change_back_up_restore_both(tmp_path, cache, encryption):
    vm, repo = tmp_path / "vm", tmp_path / "repo"
    make_vm(vm)
    ok("init", "-r", repo, "--encryption", encryption)
    first = {n: convert(vm / n, tmp_path / f"1-{n}.raw") for n in ("web-000001.vmdk", "data.vmdk")}
    ev1 = backup_json(repo, vm)
    snap1 = ev1[-1]
    assert snap1["event"] == "snapshot" and snap1["vm"] == "web" and snap1["disks"] == 2
    assert snap1["files"] == 4 and snap1["problems"] == []
    disk1 = {e["disk"]: e["stats"] for e in ev1 if e["event"] == "disk"}
    assert set(disk1) == {"web.vmdk", "data.vmdk"}
    # holes are never read; the 1 MiB of zeros the child wrote over data reads as zero
    assert disk1["web.vmdk"]["skipped"] >= 54 * MIB and disk1["web.vmdk"]["zero"] == MIB
    # the second 4 MiB block of 0x11 is a copy of the first: stored once
    assert disk1["web.vmdk"]["reused"] >= 4 * MIB - 128 * 1024
    qemu_io(vm / "web-000001.vmdk", "write -P 0x55 8M 64k", "write -P 0x56 33M 64k")
    qemu_io(vm / "data.vmdk", "write -P 0x57 10M 64k")
    second = {n: convert(vm / n, tmp_path / f"2-{n}.raw") for n in first}
    ev2 = backup_json(repo, vm)
    disk2 = {e["disk"]: e["stats"] for e in ev2 if e["event"] == "disk"}
    # an incremental stores the changed cells only (64 KiB each), the rest is reused
    assert disk2["web.vmdk"]["new"] == 2 * 64 * 1024
    assert disk2["data.vmdk"]["new"] == 64 * 1024
    snaps = json.loads(ok("snapshots", "--json", "-r", repo).stdout)["snapshots"]
    assert [s["id"] for s in snaps] == [snap1["id"], ev2[-1]["id"]]
    for snap, expected in ((snap1["short_id"], first), ("latest:web", second)):
        out = tmp_path / f"out-{snap}"
        for name, image in (("web.vmdk", "web-000001.vmdk"), ("data.vmdk", "data.vmdk")):
            ok("restore", "-r", repo, snap, "--disk", name, "--target", out)
            raw = out / name.replace(".vmdk", ".raw")
            assert raw.read_bytes() == expected[image]
            data_runs = sum(1 for i in range(0, len(expected[image]), 64 * 1024)
                            if expected[image][i:i + 64 * 1024].strip(b"\0"))
            assert stored_bytes(raw) <= data_runs * 64 * 1024 + 64 * 1024  # sparse
    assert "no problems found" in ok("check", "--read-data", "-r", repo).stdout


def test_whole_vm_folder_restores_runnable(tmp_path, cache):
    vm, repo = tmp_path / "vm", tmp_path / "repo"
    make_vm(vm)
    expected = {n: convert(vm / n, tmp_path / f"{n}.raw") for n in ("web-000001.vmdk", "data.vmdk")}
    ok("init", "-r", repo, "--encryption", "none")
    ok("backup", "-r", repo, vm)
    for fmt, sub in (("vmdk", "monolithicSparse"), ("vmdk", "streamOptimized"), ("raw", None)):
        target = tmp_path / f"restored-{fmt}-{sub}"
        args = ["--subformat", sub] if sub else []
        out = ok("restore", "-r", repo, "latest", "--target", target, "--format", fmt, *args)
        assert "not restored: web.vmsd: snapshot database" in out.stderr
        names = sorted(p.name for p in target.iterdir())
        flat = ["data-flat.vmdk", "web-flat.vmdk"] if fmt == "raw" else []
        assert names == sorted(["data.vmdk", "vmware.log", "web.nvram", "web.vmdk", "web.vmx",
                                *flat])
        vmx = (target / "web.vmx").read_text()
        assert 'scsi0:0.fileName = "web.vmdk"' in vmx and 'scsi0:1.fileName = "data.vmdk"' in vmx
        assert vmx.replace('"web.vmdk"', '"web-000001.vmdk"') == VMX
        assert (target / "web.nvram").read_bytes() == (vm / "web.nvram").read_bytes()
        for name, image in (("web.vmdk", "web-000001.vmdk"), ("data.vmdk", "data.vmdk")):
            info = json.loads(run("qemu-img", "info", "--output=json", target / name))
            assert info["format"] == "vmdk" and info["virtual-size"] == len(expected[image])
            assert convert(target / name, tmp_path / "back.raw") == expected[image]
        doc = json.loads(ok("ds", "vms", "--json", target).stdout)
        (found,) = doc["vms"]
        assert found["name"] == "web" and [d["problem"] for d in found["disks"]] == [None, None]
    again = vmsift("restore", "-r", repo, "latest", "--target", tmp_path / "restored-raw-None")
    assert again.returncode == 6 and "output exists" in again.stderr  # never overwritten
    ok("restore", "-r", repo, "latest", "--target", tmp_path / "restored-raw-None", "--force")


def test_bare_disk_and_raw_image_sources(tmp_path, cache):
    vm, repo = tmp_path / "vm", tmp_path / "repo"
    make_vm(vm)
    ok("init", "-r", repo, "--encryption", "none")
    ok("backup", "-r", repo, vm / "web-000001.vmdk")
    raw = tmp_path / "lun.img"
    with open(raw, "wb") as f:
        f.truncate(32 * MIB)
        f.seek(5 * MIB)
        f.write(b"\x99" * MIB)
    ok("backup", "-r", repo, raw, "--tag", "lun")
    snaps = json.loads(ok("snapshots", "--json", "-r", repo).stdout)["snapshots"]
    assert [(s["vm"]["kind"], s["vm"]["name"], s["tags"]) for s in snaps] == [
        ("disk", "web-000001.vmdk", []), ("disk", "lun.img", ["lun"])]
    ok("restore", "-r", repo, snaps[0]["short_id"], "--target", tmp_path / "a")
    assert (tmp_path / "a" / "web.raw").read_bytes() == convert(vm / "web-000001.vmdk",
                                                                tmp_path / "q.raw")
    ok("restore", "-r", repo, "latest:lun.img", "--target", tmp_path / "b")
    assert (tmp_path / "b" / "lun.img").read_bytes() == raw.read_bytes()
    assert stored_bytes(tmp_path / "b" / "lun.img") <= 2 * MIB


def test_listing_cat_and_stats(tmp_path, cache):
    vm, repo = tmp_path / "vm", tmp_path / "repo"
    make_vm(vm)
    ok("init", "-r", repo)
    ok("backup", "-r", repo, vm)
    ls = json.loads(ok("ls", "--json", "-r", repo, "latest").stdout)["snapshot"]
    assert ls["vm"]["kind"] == "vmware" and ls["vm"]["uuid"].startswith("56 4d 12 34")
    disk = next(d for d in ls["disks"] if d["name"] == "web.vmdk")
    assert disk["device"] == "scsi0:0" and disk["size"] == 64 * MIB
    assert disk["facts"]["adapter"] == "lsilogic" or disk["facts"]["adapter"] == "ide"
    assert [i["path"] for i in disk["identity"] if i["role"] == "descriptor"] == [
        "web-000001.vmdk", "web.vmdk"]
    assert sorted(f["name"] for f in ls["files"]) == ["vmware.log", "web.nvram", "web.vmsd",
                                                      "web.vmx"]
    cat = vmsift("cat", "-r", repo, "file", "latest", "web.vmx")
    assert cat.returncode == 0 and cat.stdout == VMX
    config = json.loads(ok("cat", "-r", repo, "config").stdout)
    assert config["encryption"] == "repokey" and "id_key" not in config
    stats = json.loads(ok("stats", "--json", "-r", repo).stdout)
    assert stats["snapshots"] == 1 and stats["logical_bytes"] == 104 * MIB + sum(
        (vm / f).stat().st_size for f in ("vmware.log", "web.nvram", "web.vmsd", "web.vmx"))
    assert stats["repository_bytes"] < 5 * MIB   # patterns compress, holes cost nothing


def test_wrong_password_and_foreign_repositories(tmp_path, cache, monkeypatch):
    repo = tmp_path / "repo"
    ok("init", "-r", repo)
    monkeypatch.setenv("VMSIFT_PASSWORD", "wrong")
    out = vmsift("snapshots", "-r", repo)
    assert out.returncode == 7 and "wrong password" in out.stderr
    (tmp_path / "pw").write_text("correct horse\n")
    monkeypatch.delenv("VMSIFT_PASSWORD")
    ok("snapshots", "-r", repo, "--password-file", tmp_path / "pw")
    borg = tmp_path / "borg"
    borg.mkdir()
    (borg / "README").write_text(
        "This is a Borg Backup repository.\nSee https://borgbackup.readthedocs.io/\n")
    (borg / "config").write_text("[repository]\nversion = 1\n")
    out = vmsift("snapshots", "-r", borg)
    assert out.returncode == 7 and "borg repository" in out.stderr
    newer = tmp_path / "newer"
    ok("init", "-r", newer, "--encryption", "none")
    config = json.loads((newer / "config").read_text())
    (newer / "config").chmod(0o644)
    (newer / "config").write_text(json.dumps({**config, "version": 2}))
    out = vmsift("snapshots", "-r", newer)
    assert out.returncode == 7 and "newer" in out.stderr
    out = vmsift("init", "-r", newer, "--encryption", "none")
    assert out.returncode == 7 and "not empty" in out.stderr
    out = vmsift("snapshots", "-r", tmp_path / "nothing")
    assert out.returncode == 7 and "vmsift init" in out.stderr


def test_unreadable_disk_is_skipped_and_the_rest_kept(tmp_path, cache):
    vm, repo = tmp_path / "vm", tmp_path / "repo"
    make_vm(vm)
    (vm / "lun.vmdk").write_text('# Disk DescriptorFile\nversion=1\nCID=12345678\n'
                                 'parentCID=ffffffff\ncreateType="vmfsRawDeviceMap"\n'
                                 'RW 2048 VMFSRDM "lun-rdm.vmdk"\n')
    (vm / "web.vmx").write_text(VMX + 'scsi0:2.present = "TRUE"\nscsi0:2.fileName = "lun.vmdk"\n')
    ok("init", "-r", repo, "--encryption", "none")
    out = vmsift("backup", "-r", repo, vm)
    assert out.returncode == 10, out.stderr
    assert "lun.vmdk (scsi0:2) not backed up: raw device mapping" in out.stderr
    ls = json.loads(ok("ls", "--json", "-r", repo, "latest").stdout)["snapshot"]
    assert sorted(d["name"] for d in ls["disks"]) == ["data.vmdk", "web.vmdk"]
    assert any("raw device mapping" in p for p in ls["problems"])


def _lock(repo: Path, pid: int, exclusive: bool = True) -> Path:
    from vmsift.backup.lock import process_start
    import time

    path = repo / "locks" / ("ab" * 16)
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": pid,
                                "start": process_start(pid), "time": time.time(),
                                "exclusive": exclusive}))
    return path


def test_locks_live_stale_and_waited_for(tmp_path, cache):
    vm, repo = tmp_path / "vm", tmp_path / "repo"
    make_vm(vm)
    ok("init", "-r", repo, "--encryption", "none")
    holder = subprocess.Popen(["sleep", "30"])
    try:
        _lock(repo, holder.pid)
        out = vmsift("backup", "-r", repo, vm)
        assert out.returncode == 9 and f"exclusive lock by pid {holder.pid}" in out.stderr
        assert out.stdout == "" and not list((repo / "snapshots").iterdir())
    finally:
        holder.kill()
        holder.wait()
    ok("backup", "-r", repo, vm)   # the holder is gone: its lock is stale and cleared
    assert list((repo / "locks").iterdir()) == []
    holder = subprocess.Popen(["sleep", "2"])
    _lock(repo, holder.pid)
    ok("backup", "-r", repo, vm, "--retry-lock", "20s")
    holder.wait()
    _lock(repo, 2 ** 22 + 7)  # no such process
    assert "1 lock(s) removed" in ok("unlock", "-r", repo).stdout


def _pack_files(repo: Path) -> list[Path]:
    return sorted(p for p in (repo / "data").rglob("*") if p.is_file())


def _writable(path: Path) -> None:
    path.chmod(0o644)


@pytest.mark.parametrize("encryption", ["none", "repokey"])
def test_check_names_what_damage_affects(tmp_path, cache, encryption):
    vm, repo = tmp_path / "vm", tmp_path / "repo"
    make_vm(vm)
    ok("init", "-r", repo, "--encryption", encryption)
    ok("backup", "-r", repo, vm)
    ok("check", "-r", repo, "--read-data")
    pack = max(_pack_files(repo), key=lambda p: p.stat().st_size)
    original = pack.read_bytes()
    _writable(pack)
    flipped = bytearray(original)
    flipped[100] ^= 0xFF
    pack.write_bytes(bytes(flipped))
    out = vmsift("check", "-r", repo, "--read-data")
    assert out.returncode == 8 and "VM 'web'" in out.stderr and "disk 'web.vmdk'" in out.stderr
    restore = vmsift("restore", "-r", repo, "latest", "--disk", "web.vmdk", "--target",
                     tmp_path / "r")
    assert restore.returncode == 8 and not (tmp_path / "r" / "web.raw").exists()
    pack.write_bytes(original[:len(original) // 2])        # truncated: found without reading
    out = vmsift("check", "-r", repo)
    assert out.returncode == 8 and "truncated" in out.stderr and "VM 'web'" in out.stderr
    pack.unlink()                                           # missing
    out = vmsift("check", "-r", repo, "--json")
    doc = json.loads(out.stdout)
    assert out.returncode == 8 and not doc["ok"]
    assert any(p["what"] == "missing" and p["affects"] for p in doc["problems"])
    out = vmsift("ls", "-r", repo, "latest")  # still lists what it can
    assert out.returncode == 0 and "warning: disk web.vmdk:" in out.stderr
    assert next(x for x in out.stdout.splitlines() if x.strip().startswith("web.vmdk")
                ).split()[-1] == "?"
    pack.write_bytes(original)
    ok("check", "-r", repo, "--read-data")
    index = next((repo / "index").iterdir())
    saved = index.read_bytes()
    _writable(index)
    index.write_bytes(saved[:-1] + bytes([saved[-1] ^ 1]))
    out = vmsift("check", "-r", repo)
    assert out.returncode == 8 and "index" in out.stderr and "VM 'web'" in out.stderr
    index.unlink()                                          # missing: its blobs are lost
    out = vmsift("check", "-r", repo)
    assert out.returncode == 8 and "not in any index" in out.stderr and "VM 'web'" in out.stderr
    index.write_bytes(saved)
    ok("check", "-r", repo)
    snap = next((repo / "snapshots").iterdir())
    _writable(snap)
    snap.write_bytes(snap.read_bytes()[:-5])
    out = vmsift("check", "-r", repo)
    assert out.returncode == 8 and f"snapshot {snap.name[:8]}" in out.stderr


def test_backup_refuses_a_disk_that_changes_while_read(tmp_path, cache):
    from vmsift.backup.archiver import backup
    from vmsift.backup.repository import Repository

    vm, repo_path = tmp_path / "vm", tmp_path / "repo"
    make_vm(vm)
    repo = Repository.init(str(repo_path), encryption="none")
    touched = []

    def progress(label, total):
        if "web.vmdk" in label and not touched:
            touched.append(label)
            os.utime(vm / "web-000001.vmdk", (1, 1))  # a writer changed the top delta
        return None

    with repo:
        result = backup(repo, [str(vm)], progress=progress)
    assert touched and result.partial
    (snap,) = result.snapshots
    assert [d.name for d in snap.disks] == ["data.vmdk"]
    assert any("changed while it was read" in p and "web-000001.vmdk" in p for p in snap.problems)


def test_restore_never_writes_outside_the_target(tmp_path):
    from vmsift.backup.restorer import _safe_join
    from vmsift.errors import UnsupportedError

    assert _safe_join(str(tmp_path), "a/b.vmx") == str(tmp_path / "a" / "b.vmx")
    for name in ("../x", "/etc/passwd", "a/../../x", "", "a//b", "./x"):
        with pytest.raises(UnsupportedError, match="unsafe name"):
            _safe_join(str(tmp_path), name)


def _disk_events(repo, *args) -> dict[str, dict]:
    return {e["disk"]: e for e in backup_json(repo, *args) if e["event"] == "disk"}


def test_change_hints_identity_chain_and_full(tmp_path, cache):
    vm, repo = tmp_path / "vm", tmp_path / "repo"
    make_vm(vm)
    ok("init", "-r", repo, "--encryption", "none")
    first = _disk_events(repo, vm)
    assert first["web.vmdk"]["hint"] == "none"
    again = _disk_events(repo, vm)                       # nothing changed: nothing read
    assert {d: e["hint"] for d, e in again.items()} == {"web.vmdk": "identity",
                                                         "data.vmdk": "identity"}
    assert again["web.vmdk"]["stats"]["read"] == 0
    # the disk's one manifest leaf (64 MiB of 64 KiB cells) is taken over by id, unloaded
    assert again["web.vmdk"]["stats"]["kept"] == 64 * MIB
    assert again["web.vmdk"]["stats"]["reused"] == 0
    # a snapshot is taken: a new delta above the disk the last backup saw, written to
    run("qemu-img", "create", "-q", "-f", "vmdk", "-b", "web-000001.vmdk", "-F", "vmdk",
        vm / "web-000002.vmdk")
    qemu_io(vm / "web-000002.vmdk", "write -P 0x66 50M 64k", "write -P 0x67 2M 4k")
    (vm / "web.vmx").write_text(VMX.replace("web-000001.vmdk", "web-000002.vmdk"))
    third = _disk_events(repo, vm)
    assert third["web.vmdk"]["hint"] == "chain"
    assert third["web.vmdk"]["stats"]["read"] == 2 * 64 * 1024   # the delta's two grains
    assert third["web.vmdk"]["stats"]["new"] == 2 * 64 * 1024
    ok("restore", "-r", repo, "latest", "--disk", "web.vmdk", "--target", tmp_path / "r")
    assert (tmp_path / "r" / "web.raw").read_bytes() == convert(vm / "web-000002.vmdk",
                                                                tmp_path / "q.raw")
    full = _disk_events(repo, vm, "--no-hints")
    assert full["web.vmdk"]["hint"] == "none"
    # read in full: every data cell, the 1 MiB of written zeros too (kept as ZERO before)
    assert full["web.vmdk"]["stats"]["read"] == third["web.vmdk"]["stats"]["read"] + \
        third["web.vmdk"]["stats"]["reused"] + MIB
    verified = _disk_events(repo, vm, "--verify-hints")
    assert verified["web.vmdk"]["hint"] == "identity" and verified["web.vmdk"]["hint_missed"] == []


def _vm_of_five_leaves(vm: Path, repo: Path) -> Path:
    """A VM of one 18 MiB monolithicSparse disk with data in three places, and a repository
    of 4 KiB cells for it: a manifest leaf covers 4 MiB, so the disk has five (the last one
    2 MiB)."""
    vm.mkdir()
    disk = vm / "d.vmdk"
    run("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicSparse", disk,
        "18M")
    qemu_io(disk, "write -P 0x21 0 3M", "write -P 0x22 9M 2M", "write -P 0x23 17M 1M")
    (vm / "v.vmx").write_text('displayName = "leaves"\nscsi0:0.present = "TRUE"\n'
                              'scsi0:0.fileName = "d.vmdk"\n')
    ok("init", "-r", repo, "--encryption", "none", "--cell-size", "4096")
    return disk


def test_unchanged_manifest_leaves_are_kept_whole(tmp_path, cache, monkeypatch):
    """Leaves of the previous backup that a hint says did not change are taken over by id,
    without loading them: an unchanged disk keeps every leaf, a change rebuilds only the
    leaves it touches, and both restore right."""
    from vmsift.backup.repository import Repository

    vm, repo = tmp_path / "vm", tmp_path / "repo"
    disk = _vm_of_five_leaves(vm, repo)
    before = convert(disk, tmp_path / "before.raw")
    first_snap = backup_json(repo, vm)[-1]
    again = _disk_events(repo, vm)["d.vmdk"]
    assert again["hint"] == "identity"
    assert again["stats"]["kept"] == 18 * MIB
    assert again["stats"]["read"] == again["stats"]["reused"] == again["stats"]["skipped"] == 0
    delta = vm / "d-000001.vmdk"
    run("qemu-img", "create", "-q", "-f", "vmdk", "-b", "d.vmdk", "-F", "vmdk", delta)
    qemu_io(delta, "write -P 0x31 10M 64k")  # inside the third leaf only
    (vm / "v.vmx").write_text((vm / "v.vmx").read_text().replace('"d.vmdk"', '"d-000001.vmdk"'))
    third = _disk_events(repo, vm)["d.vmdk"]
    assert third["hint"] == "chain" and third["stats"]["read"] == 64 * 1024
    assert third["stats"]["kept"] == 14 * MIB  # every leaf but the third
    # the third leaf, cell by cell: 2 MiB of holes, the unchanged data, the 16 new cells
    # (all alike: one stored)
    assert third["stats"]["skipped"] == 2 * MIB and third["stats"]["new"] == 4096
    assert third["stats"]["reused"] == 2 * MIB - 4096
    with Repository.open(str(repo)) as library:
        leaves = [s.disk("d.vmdk").stream.leaves for s in library.snapshots()]
    assert leaves[1] == leaves[0] and len(leaves[0]) == 5
    assert [a == b for a, b in zip(leaves[2], leaves[1])] == [True, True, False, True, True]
    # the data a disk holds comes from its manifest, not from what its backup read (also
    # with a cache that has never seen the repository)
    for where in ("cache", "new-cache"):
        monkeypatch.setenv("VMSIFT_CACHE_DIR", str(tmp_path / where))
        out = ok("ls", "-r", repo, "latest")
        line = next(x for x in out.stdout.splitlines() if "d.vmdk" in x)
        assert line.split()[-2:] == ["6", "MiB"] and out.stderr == ""
    after = convert(delta, tmp_path / "after.raw")
    oldest = json.loads(ok("snapshots", "--json", "-r", repo).stdout)["snapshots"][0]
    assert oldest["short_id"] == first_snap["short_id"]
    for spec, expected in (("latest", after), (oldest["short_id"], before)):
        out = tmp_path / f"out-{spec}"
        ok("restore", "-r", repo, spec, "--disk", "d.vmdk", "--target", out)
        assert (out / "d.raw").read_bytes() == expected


def test_leaves_a_hinted_backup_builds_from_are_loaded_once_in_batches(tmp_path, cache,
                                                                       monkeypatch):
    """The previous backup's leaves that changed cells split are loaded each once, a batch
    at a time (here 2), and the leaves rebuilt from them are the ones a full read makes."""
    from vmsift.backup.archiver import backup
    from vmsift.backup.repository import Repository, StreamSource

    vm, repo = tmp_path / "vm", tmp_path / "repo"
    _vm_of_five_leaves(vm, repo)
    backup_json(repo, vm)
    delta = vm / "d-000001.vmdk"
    run("qemu-img", "create", "-q", "-f", "vmdk", "-b", "d.vmdk", "-F", "vmdk", delta)
    # two changes in the first leaf, one in the third, fourth and fifth
    qemu_io(delta, *(f"write -P 0x41 {at} 64k" for at in ("64k", "2M", "10M", "13M", "17M")))
    (vm / "v.vmx").write_text((vm / "v.vmx").read_text().replace('"d.vmdk"', '"d-000001.vmdk"'))
    batches: list[list[int]] = []
    load = StreamSource.indexed_leaves

    def counted(self, indices):
        batches.append(list(indices))
        return load(self, indices)

    monkeypatch.setattr(StreamSource, "LEAVES_AT_ONCE", 2)
    with monkeypatch.context() as patch, Repository.open(str(repo)) as library:
        patch.setattr(StreamSource, "indexed_leaves", counted)
        (hinted,) = backup(library, [str(vm)]).snapshots
    assert hinted.disk("d.vmdk").stats["hint"] == "chain"
    assert batches == [[0, 2], [3, 4]]
    with Repository.open(str(repo)) as library:
        (full,) = backup(library, [str(vm)], hints="off").snapshots
    assert hinted.disk("d.vmdk").stream == full.disk("d.vmdk").stream


def test_chain_hint_reads_its_cells_without_the_map(tmp_path, cache, monkeypatch):
    """What a chain's deltas hold is never a hole, so the chain hint reads its cells without
    walking the disk's map; a grain the delta marks zero (over data and over a hole of the
    base) is still recorded as ZERO, and the stream equals a full read's."""
    from vmsift.backup.archiver import backup
    from vmsift.backup.repository import Repository
    from vmsift.datastore.disk import VirtualDisk

    vm, repo = tmp_path / "vm", tmp_path / "repo"
    _vm_of_five_leaves(vm, repo)
    backup_json(repo, vm)
    delta = vm / "d-000001.vmdk"
    run("qemu-img", "create", "-q", "-f", "vmdk", "-o", "zeroed_grain=on", "-b", "d.vmdk",
        "-F", "vmdk", delta)
    qemu_io(delta, "write -P 0x31 10M 64k", "write -z 0 64k", "write -z 5M 64k")
    (vm / "v.vmx").write_text((vm / "v.vmx").read_text().replace('"d.vmdk"', '"d-000001.vmdk"'))

    def no_map(self, offset=0, length=None):
        raise AssertionError("the map was asked for")

    with monkeypatch.context() as patch, Repository.open(str(repo)) as library:
        patch.setattr(VirtualDisk, "extents", no_map)
        (hinted,) = backup(library, [str(vm)]).snapshots
    stats = hinted.disk("d.vmdk").stats
    assert stats["hint"] == "chain" and stats["read"] == 3 * 64 * 1024
    with Repository.open(str(repo)) as library:
        (full,) = backup(library, [str(vm)], hints="off").snapshots
        assert full.disk("d.vmdk").stats["hint"] == "none"
        assert hinted.disk("d.vmdk").stream == full.disk("d.vmdk").stream
    ok("restore", "-r", repo, "latest", "--disk", "d.vmdk", "--target", tmp_path / "r")
    assert (tmp_path / "r" / "d.raw").read_bytes() == convert(delta, tmp_path / "q.raw")


def test_a_previous_backup_the_index_lost_is_not_taken_over(tmp_path, cache, monkeypatch):
    """When the index no longer has the previous backup's manifest leaves (its index objects
    lost, read from a new cache), a hint is not followed: the disk is read in full, the
    notes say why, and the new snapshot restores."""
    vm, repo = tmp_path / "vm", tmp_path / "repo"
    disk = _vm_of_five_leaves(vm, repo)
    backup_json(repo, vm)
    for index in [p for p in (repo / "index").rglob("*") if p.is_file()]:
        index.unlink()
    monkeypatch.setenv("VMSIFT_CACHE_DIR", str(tmp_path / "another-cache"))
    again = _disk_events(repo, vm)["d.vmdk"]
    assert again["hint"] == "none" and again["stats"]["kept"] == 0
    assert "is not in the index" in " ".join(again["hint_notes"])
    assert again["stats"]["read"] == 6 * MIB and again["stats"]["new"] > 0
    ok("restore", "-r", repo, "latest", "--disk", "d.vmdk", "--target", tmp_path / "out")
    assert (tmp_path / "out" / "d.raw").read_bytes() == convert(disk, tmp_path / "d.raw")


def _flat_vm_with_ctk(folder: Path, size: int) -> Path:
    from tests.fixtures.ctk_writer import write_ctk

    folder.mkdir()
    (folder / "v.vmx").write_text('displayName = "ctkvm"\nscsi0:0.present = "TRUE"\n'
                                  'scsi0:0.fileName = "v.vmdk"\n')
    (folder / "v.vmdk").write_text(
        "# Disk DescriptorFile\nversion=1\nCID=1234abcd\nparentCID=ffffffff\n"
        f'createType="monolithicFlat"\nRW {size // 512} FLAT "v-flat.vmdk" 0\n'
        'ddb.adapterType = "lsilogic"\nchangeTrackPath="v-ctk.vmdk"\n')
    flat = folder / "v-flat.vmdk"
    with open(flat, "wb") as f:
        f.truncate(size)
        for block in (0, 5, 40):
            f.seek(block * 65536)
            f.write(bytes([block + 1]) * 65536)
    write_ctk(folder / "v-ctk.vmdk", size // 512, 128, {0: 1, 5: 1, 40: 1}, change_seq=3)
    return flat


def test_change_tracking_hint_and_its_checks(tmp_path, cache):
    from tests.fixtures.ctk_writer import write_ctk

    vm, repo, size = tmp_path / "vm", tmp_path / "repo", 8 * MIB
    flat = _flat_vm_with_ctk(vm, size)
    ok("init", "-r", repo, "--encryption", "none")
    _disk_events(repo, vm)

    def write(block: int, byte: int) -> None:
        with open(flat, "r+b") as f:
            f.seek(block * 65536)
            f.write(bytes([byte]) * 65536)

    write(7, 0x70)                                       # the guest writes block 7 ...
    write_ctk(vm / "v-ctk.vmdk", size // 512, 128, {0: 1, 5: 1, 40: 1, 7: 4}, change_seq=4)
    second = _disk_events(repo, vm)["v.vmdk"]            # ... and CTK marks it
    assert second["hint"] == "ctk" and second["stats"]["read"] == 65536
    ok("restore", "-r", repo, "latest", "--disk", "v.vmdk", "--target", tmp_path / "r")
    assert (tmp_path / "r" / "v.raw").read_bytes() == flat.read_bytes()
    # a CTK older than the last backup is not trusted: the next hint is used, and said so
    write(9, 0x90)
    write_ctk(vm / "v-ctk.vmdk", size // 512, 128, {0: 1, 5: 1, 40: 1}, change_seq=2)
    third = _disk_events(repo, vm)["v.vmdk"]
    assert third["hint"] == "none" and "older than the previous backup" in " ".join(
        third["hint_notes"])
    assert third["stats"]["read"] == 5 * 65536
    # a CTK that contradicts the disk (block 12 written, not marked): --verify-hints says so
    write(12, 0xC0)
    write(30, 0x30)
    write_ctk(vm / "v-ctk.vmdk", size // 512, 128, {0: 1, 5: 1, 40: 1, 30: 6}, change_seq=6)
    fourth = _disk_events(repo, vm, "--verify-hints")["v.vmdk"]
    assert fourth["hint"] == "ctk"
    assert fourth["hint_missed"] == [{"offset": 12 * 65536, "length": 65536}]
    text = vmsift("backup", "-r", repo, vm, "--verify-hints")
    assert "the hint missed nothing" in text.stdout   # the CTK now matches the last backup


def test_disk_whose_data_cannot_be_read_midway_is_skipped_with_file_and_offset(tmp_path,
                                                                              cache):
    """A grain past the end of a cut extent fails in the middle of the stream (a read job of
    the pool): that disk is reported with the file and offset and left out, the rest kept."""
    vm, repo = tmp_path / "vm", tmp_path / "repo"
    make_vm(vm)
    extent = vm / "data-s001.vmdk"
    size = extent.stat().st_size
    with open(extent, "r+b") as f:             # the last grains (the 0x45 write) cut off
        f.truncate(size - 32 * 1024)
    ok("init", "-r", repo, "--encryption", "none")
    out = vmsift("backup", "-r", repo, vm)
    assert out.returncode == 10, out.stderr
    (line,) = [x for x in out.stderr.splitlines() if x.startswith("warning:")]
    assert "disk data.vmdk (scsi0:1) not backed up:" in line and "data-s001.vmdk @ 0x" in line
    assert "runs past the end of the file" in line, line
    assert "Traceback" not in out.stderr
    ls = json.loads(ok("ls", "--json", "-r", repo, "latest").stdout)["snapshot"]
    assert [d["name"] for d in ls["disks"]] == ["web.vmdk"]
