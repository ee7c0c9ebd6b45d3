"""History: `diff` between snapshots, retention (`forget`), `prune` (also killed at random
moments), and several clients backing up into one repository at once."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, vmsift, vmsift_ok as ok
from vmsift.backup.repository import Repository
from vmsift.backup.retention import Policy, apply
from vmsift.backup.snapshot import Snapshot
from vmsift.errors import RepositoryError

MIB = 1 << 20
CELL = 64 << 10


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("VMSIFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VMSIFT_PASSWORD", "pw")


def write_at(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def make_disk(path: Path, mib: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(mib * MIB)
    for i in range(0, mib, 2):
        write_at(path, i * MIB, rng.randbytes(MIB))


def snapshots(repo) -> list[dict]:
    return json.loads(ok("snapshots", "--json", "-r", repo).stdout)["snapshots"]


def test_diff_names_changed_ranges_and_files(tmp_path, env):
    repo, vm = tmp_path / "repo", tmp_path / "vm"
    vm.mkdir()
    disk = vm / "d.img"
    make_disk(disk, 16, seed=1)
    (vm / "vm.cfg").write_text("name = 'x'\n")
    ok("init", "-r", repo)
    ok("backup", "-r", repo, disk)
    write_at(disk, 3 * CELL + 100, b"changed")          # one cell
    write_at(disk, 40 * CELL, os.urandom(2 * CELL))      # two cells
    ok("backup", "-r", repo, disk)
    old, new = snapshots(repo)
    doc = json.loads(ok("diff", "--json", "-r", repo, old["short_id"], new["short_id"]).stdout)
    (d,) = doc["disks"]
    assert d["status"] == "changed" and d["ranges"] == [
        {"offset": 3 * CELL, "length": CELL}, {"offset": 40 * CELL, "length": 2 * CELL}]
    text = ok("diff", "-r", repo, old["short_id"], "latest").stdout
    assert "192 KiB changed in 2 range(s)" in text
    same = json.loads(ok("diff", "--json", "-r", repo, "latest", "latest").stdout)
    assert same["disks"][0]["status"] == "same" and same["disks"][0]["ranges"] == []


def _snap(vm: str, when: str, tags=()) -> Snapshot:
    s = Snapshot(dt.datetime.fromisoformat(when), "h", "/src", {"kind": "vmware", "name": vm,
                                                                "uuid": vm}, [], [],
                 list(tags))
    s.id = f"{vm}-{when}"
    return s


def test_retention_policies_per_vm():
    snaps = [_snap("a", f"2026-11-{d:02d}T{h:02d}:00:00+00:00") for d in range(1, 29)
             for h in (1, 13)] + [_snap("b", "2026-01-05T00:00:00+00:00", ["gold"]),
                                  _snap("b", "2026-06-05T00:00:00+00:00")]
    keep = {s.id for s in apply(snaps, Policy(last=3)).keep}
    assert keep == {"a-2026-11-28T13:00:00+00:00", "a-2026-11-28T01:00:00+00:00",
                    "a-2026-11-27T13:00:00+00:00", "b-2026-06-05T00:00:00+00:00",
                    "b-2026-01-05T00:00:00+00:00"}
    daily = apply(snaps, Policy(daily=7)).keep
    assert sorted(s.id for s in daily if s.vm["name"] == "a") == [
        f"a-2026-11-{d}T13:00:00+00:00" for d in range(22, 29)]   # the newest of each day
    weekly = [s for s in apply(snaps, Policy(weekly=2, tags=("gold",))).keep]
    assert {s.id for s in weekly} == {"a-2026-11-28T13:00:00+00:00",   # ISO week 48
                                      "a-2026-11-22T13:00:00+00:00",   # ISO week 47
                                      "b-2026-06-05T00:00:00+00:00",
                                      "b-2026-01-05T00:00:00+00:00"}   # tag (and a week)
    monthly = apply(snaps, Policy(monthly=1)).keep
    assert {s.id for s in monthly} == {"a-2026-11-28T13:00:00+00:00",
                                       "b-2026-06-05T00:00:00+00:00"}
    with pytest.raises(RepositoryError, match="no retention rule"):
        apply(snaps, Policy())


def test_forget_and_prune_keep_what_kept_snapshots_use(tmp_path, env):
    repo, disk = tmp_path / "repo", tmp_path / "d.img"
    make_disk(disk, 24, seed=2)
    ok("init", "-r", repo)
    states = []
    for round_ in range(4):
        write_at(disk, 6 * MIB, os.urandom(3 * MIB))  # the same region each time
        ok("backup", "-r", repo, disk, "--tag", f"r{round_}")
        states.append(disk.read_bytes())
    before = json.loads(ok("stats", "--json", "-r", repo).stdout)["repository_bytes"]
    out = ok("forget", "-r", repo, "--keep-last", "1", "--keep-tag", "r0", "--dry-run")
    assert out.stdout.count("would forget") == 2 and len(snapshots(repo)) == 4
    out = ok("forget", "--json", "-r", repo, "--keep-last", "1", "--keep-tag", "r0",
             "--prune", "--max-unused", "0")
    doc = json.loads(out.stdout)
    assert len(doc["forget"]) == 2 and doc["prune"]["packs_repacked"] + doc["prune"][
        "packs_deleted"] >= 1
    after = json.loads(ok("stats", "--json", "-r", repo).stdout)["repository_bytes"]
    assert after < before - 5 * MIB     # the two forgotten rounds' 3 MiB changes are gone
    ok("check", "-r", repo, "--read-data")
    kept = snapshots(repo)
    assert [s["tags"] for s in kept] == [["r0"], ["r3"]]
    for snap, state in zip(kept, (states[0], states[3])):
        target = tmp_path / snap["short_id"]
        ok("restore", "-r", repo, snap["short_id"], "--target", target)
        assert (target / "d.img").read_bytes() == state
    assert "0 pack(s) deleted, 0 repacked" in ok("prune", "-r", repo, "--max-unused", "0").stdout


def stored_packs(repo: Path) -> set[str]:
    return {p.name for p in (repo / "data").rglob("*") if p.is_file()}


def test_a_reader_whose_pack_a_prune_repacked_finds_its_chunks_again(tmp_path, env,
                                                                     monkeypatch):
    """A reader that located a disk's chunks (as a mount does, once per manifest leaf) before
    a prune elsewhere (another process, its own cache) moved them to a new pack brings its
    index up to date and finds them, instead of failing."""
    repo, disk = tmp_path / "repo", tmp_path / "d.img"
    make_disk(disk, 24, seed=3)
    ok("init", "-r", repo)
    ok("backup", "-r", repo, disk)
    write_at(disk, 6 * MIB, os.urandom(3 * MIB))
    ok("backup", "-r", repo, disk)
    now = disk.read_bytes()
    monkeypatch.setenv("VMSIFT_CACHE_DIR", str(tmp_path / "reader-cache"))
    with contextlib.closing(Repository.open(str(repo), b"pw")) as library:
        monkeypatch.setenv("VMSIFT_CACHE_DIR", str(tmp_path / "cache"))  # the pruner's
        assert library.sync_index() == []  # as a mount does when it starts
        snap = library.snapshots()[-1]
        with library.open_disk(snap, "d.img") as src:
            assert src.read(0, src.size) == now  # its chunks located, most in the first pack
            packs = stored_packs(repo)
            out = ok("forget", "--json", "-r", repo, "--keep-last", "1", "--prune",
                     "--max-unused", "0")
            assert json.loads(out.stdout)["prune"]["packs_repacked"] >= 1
            assert packs - stored_packs(repo)  # a pack it read from is gone
            assert src.read(0, src.size) == now
            assert src.read(5 * MIB, 2 * MIB) == now[5 * MIB:7 * MIB]


@pytest.mark.slow
def test_prune_killed_at_random_moments_loses_nothing(tmp_path, env):
    repo, disk = tmp_path / "repo", tmp_path / "d.img"
    make_disk(disk, 96, seed=3)
    ok("init", "-r", repo)
    states = []
    for round_ in range(4):
        for i in range(round_, 96, 5):  # a fifth of the disk changes each time
            write_at(disk, i * MIB, os.urandom(MIB))
        ok("backup", "-r", repo, disk)
        states.append(disk.read_bytes())
    ok("forget", "-r", repo, "--keep-last", "2")
    seed = int(os.environ.get("VMSIFT_CRASH_SEED", time.time()))
    rng = random.Random(seed)
    mid_prune = 0
    phases = ["marking", "repacking", "writing the new index", "deleting"]
    for round_ in range(5):
        # killed once a phase of its choice has begun (prune says each on stderr), a
        # moment later: every phase of the prune gets interrupted across the rounds
        child = subprocess.Popen([sys.executable, "-m", "vmsift", "prune", "-r", str(repo),
                                  "--max-unused", "0"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        wanted = phases[round_ % len(phases)]
        for line in child.stderr:
            if wanted in line:
                time.sleep(rng.uniform(0, 0.05))
                break
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stderr.close()
        mid_prune += bool(list((repo / "locks").iterdir()))  # killed while it held its lock
        out = vmsift("check", "-r", repo)
        assert out.returncode == 0, f"seed {seed} round {round_}: {out.stdout}{out.stderr}"
    assert mid_prune, f"seed {seed}: no kill landed inside a prune"
    ok("prune", "-r", repo, "--max-unused", "0")
    ok("check", "-r", repo, "--read-data")
    kept = snapshots(repo)
    assert len(kept) == 2
    for snap, state in zip(kept, states[2:]):
        ok("restore", "-r", repo, snap["short_id"], "--target", tmp_path / snap["short_id"])
        assert (tmp_path / snap["short_id"] / "d.img").read_bytes() == state


def test_two_clients_back_up_at_once(tmp_path, env):
    repo = tmp_path / "repo"
    disks = [tmp_path / "one.img", tmp_path / "two.img"]
    for i, d in enumerate(disks):
        make_disk(d, 48, seed=10 + i)
    ok("init", "-r", repo)
    children = [subprocess.Popen([sys.executable, "-m", "vmsift", "backup", "-r", str(repo),
                                  str(d), "--host", f"host{i}"], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for i, d in enumerate(disks)]
    for c in children:
        _, err = c.communicate(timeout=300)
        assert c.returncode == 0, err
    snaps = snapshots(repo)
    assert sorted((s["host"], s["vm"]["name"]) for s in snaps) == [("host0", "one.img"),
                                                                  ("host1", "two.img")]
    ok("check", "-r", repo, "--read-data")
    for d in disks:
        ok("restore", "-r", repo, f"latest:{d.name}", "--target", tmp_path / "out")
        assert (tmp_path / "out" / d.name).read_bytes() == d.read_bytes()
    # prune takes an exclusive lock: refused while a backup holds its shared one
    from vmsift.backup.lock import Lock
    from vmsift.backup.backends import open_backend

    with Lock(open_backend(str(repo)), exclusive=False).acquire():
        out = vmsift("prune", "-r", repo)
        assert out.returncode == 9 and "shared lock" in out.stderr
