"""Backups killed with SIGKILL at random moments, and a repository on a file system that
fills up: `check` passes afterwards, the next backup completes, nothing kept is lost."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ON_CI, ROOT, missing, vmsift, vmsift_ok as ok

MIB = 1 << 20


def make_image(path: Path, mib: int, seed: int) -> None:
    """A raw disk: random MiBs, some repeated, some never written."""
    rng = random.Random(seed)
    blocks: list[bytes] = []
    with open(path, "wb") as f:
        f.truncate(mib * MIB)
        for i in range(mib):
            roll = rng.random()
            if roll < 0.25:
                continue
            block = rng.choice(blocks) if blocks and roll < 0.4 else rng.randbytes(MIB)
            blocks = (blocks + [block])[-8:]
            f.seek(i * MIB)
            f.write(block)


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("VMSIFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VMSIFT_PASSWORD", "pw")


@pytest.mark.slow
def test_sigkill_during_backup_then_check_then_backup(tmp_path, env):
    repo, image = tmp_path / "repo", tmp_path / "disk.img"
    make_image(image, 160, seed=1)
    ok("init", "-r", repo)
    started = time.monotonic()
    ok("backup", "-r", repo, image)       # something to lose, if anything were lost
    took = time.monotonic() - started     # kills land anywhere in a backup this long
    seed = int(os.environ.get("VMSIFT_CRASH_SEED", time.time()))
    rng = random.Random(seed)
    mid_backup = 0
    for round_ in range(5):
        make_image(image, 160, seed=2 + round_)  # new data: no round finds its work done
        child = subprocess.Popen([sys.executable, "-m", "vmsift", "backup", "-r", str(repo),
                                  str(image)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        if round_ % 2:  # anywhere, start-up included
            time.sleep(rng.uniform(0.1, took))
        else:  # once it holds its lock (a fast start-up must not make every kill miss it)
            while child.poll() is None and not [
                    p for p in (repo / "locks").iterdir() if not p.name.startswith(".")]:
                time.sleep(0.002)
            time.sleep(rng.uniform(0, took / 2))
        child.send_signal(signal.SIGKILL)
        child.wait()
        mid_backup += bool(list((repo / "locks").iterdir()))  # killed while it held its lock
        out = vmsift("check", "-r", repo)
        assert out.returncode == 0, f"seed {seed} round {round_}: {out.stdout}{out.stderr}"
    assert mid_backup, f"seed {seed}: no kill landed inside a backup"
    past = time.time() - 120  # a lock write killed before its rename: cleared once a minute old
    for temp in (repo / "locks").glob(".*.tmp"):
        os.utime(temp, (past, past))
    ok("backup", "-r", repo, image)       # the dead backups' locks are cleared without unlock
    ok("check", "-r", repo, "--read-data")
    snaps = json.loads(ok("snapshots", "--json", "-r", repo).stdout)["snapshots"]
    ok("restore", "-r", repo, snaps[-1]["short_id"], "--target", tmp_path / "out")
    assert (tmp_path / "out" / "disk.img").read_bytes() == image.read_bytes()
    assert not list((repo / "locks").iterdir())
    ok("prune", "-r", repo)               # and the dead writers' temporaries by prune
    assert not list(repo.rglob(".*.tmp"))
    ok("check", "-r", repo, "--read-data")


@pytest.fixture
def small_fs(tmp_path):
    """A 24 MiB tmpfs (root only), unmounted afterwards."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        missing("root, to mount a small tmpfs")
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        if ON_CI:
            pytest.fail(f"cannot mount a tmpfs: {out.stderr}")
        pytest.skip(f"cannot mount a tmpfs: {out.stderr}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def test_out_of_space_is_a_clear_error_and_loses_nothing(tmp_path, env, small_fs):
    repo, small, big = small_fs / "repo", tmp_path / "small.img", tmp_path / "big.img"
    make_image(small, 4, seed=3)
    make_image(big, 64, seed=4)
    ok("init", "-r", repo)
    ok("backup", "-r", repo, small)
    out = vmsift("backup", "-r", repo, big)
    assert out.returncode == 7 and "No space left on device" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    ok("check", "-r", repo)
    ok("restore", "-r", repo, "latest", "--target", tmp_path / "out")
    assert (tmp_path / "out" / "small.img").read_bytes() == small.read_bytes()
    assert json.loads(ok("snapshots", "--json", "-r", repo).stdout)["snapshots"][0]["vm"][
        "name"] == "small.img"
