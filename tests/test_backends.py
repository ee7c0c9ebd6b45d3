"""One contract suite run on every backend (local folder, S3 on a real moto server, S3 through
a proxy injecting transient failures behind the retry wrapper), then the retry wrapper's
limits and whole backups into S3."""

from __future__ import annotations

import json
import os
import secrets
import subprocess

import pytest

from tests.fixtures import s3 as s3fix
from tests.helpers import missing, vmsift
from vmsift.backup.backends import TransientError
from vmsift.backup.backends.local import LocalBackend
from vmsift.backup.backends.retry import RetryBackend
from vmsift.errors import MissingObjectError, RepositoryError

NAME = "ab" + "0" * 62


@pytest.fixture(scope="session")
def s3_endpoint():
    try:
        import boto3  # noqa: F401
    except ImportError:
        missing("boto3 (pip install 'vmsift[s3]')")
    if not s3fix.moto_command():
        missing("moto_server (pip install 'moto[server]')")
    old = {k: os.environ.get(k) for k in s3fix.CREDENTIALS}
    os.environ.update(s3fix.CREDENTIALS)
    with s3fix.moto_server() as url:
        yield url
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def bucket(s3_endpoint):
    name = "b" + secrets.token_hex(6)
    s3fix.make_bucket(s3_endpoint, name)
    return name


@pytest.fixture
def proxy(s3_endpoint):
    p = s3fix.FaultProxy(s3_endpoint)
    yield p
    p.close()


def _s3(endpoint: str, bucket: str):
    from vmsift.backup.backends.s3 import S3Backend
    return S3Backend(f"s3:{endpoint}/{bucket}/repo")


@pytest.fixture(params=["local", "s3", "s3-faults"])
def backend(request, tmp_path):
    if request.param == "local":
        b = LocalBackend(str(tmp_path / "repo"))
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        name = request.getfixturevalue("bucket")
        if request.param == "s3":
            b = _s3(endpoint, name)
        else:
            p = request.getfixturevalue("proxy")
            p.plan = [500, "drop", 503, None, None, 500, None, "drop"] * 6
            b = RetryBackend(_s3(p.url, name), first_delay=0.01)
    b.create()
    return b


def test_contract_put_get_list_delete(backend):
    for kind in ("data", "index", "snapshots", "keys", "locks", "config"):
        assert list(backend.list(kind)) == []
    payload = bytes(range(256)) * 40
    backend.put("data", NAME, payload)
    backend.put("index", "cd" * 32, b"index")
    backend.put("config", "config", b"{}")
    assert backend.get("data", NAME) == payload
    assert backend.get("data", NAME, 1000, 300) == payload[1000:1300]
    assert backend.get("data", NAME, 0, 0) == b""
    assert sorted(backend.list("data")) == [(NAME, len(payload))]
    assert [n for n, _ in backend.list("index")] == ["cd" * 32]
    assert [n for n, _ in backend.list("config")] == ["config"]
    assert backend.exists("data", NAME) and not backend.exists("data", "ef" * 32)
    backend.put("data", NAME, b"other bytes")             # put-if-absent: the first stays
    assert backend.get("data", NAME) == payload
    backend.flush()                                       # every put is durable after it
    backend.flush()
    for kind in ("data", "index", "locks", "config"):     # objects are never leftovers
        assert backend.remove_leftovers(kind) == 0
    assert backend.get("data", NAME) == payload and backend.exists("index", "cd" * 32)
    with pytest.raises(RepositoryError, match="short|shorter"):
        backend.get("data", NAME, len(payload) - 10, 20)  # reaching past the end
    with pytest.raises(MissingObjectError):
        backend.get("snapshots", "ef" * 32)
    backend.delete("data", NAME)
    backend.delete("data", NAME)                          # deleting twice is fine
    assert list(backend.list("data")) == [] and not backend.exists("data", NAME)
    with pytest.raises(RepositoryError, match="bad object name"):
        backend.put("data", "../escape", b"x")
    with pytest.raises(RepositoryError, match="not empty"):
        backend.create()


def test_transient_failures_are_retried(proxy, bucket):
    b = RetryBackend(_s3(proxy.url, bucket), first_delay=0.01)
    b.create()
    proxy.plan = [503, 500, "drop", 503]
    b.put("data", NAME, b"x" * 1000)
    assert proxy.faults == 4 and b.retries == 4
    proxy.plan = ["drop", 500]
    assert b.get("data", NAME) == b"x" * 1000


def test_permanent_failures_end_in_a_clear_error(proxy, bucket):
    b = RetryBackend(_s3(proxy.url, bucket), attempts=4, first_delay=0.01)
    proxy.permanent = True
    with pytest.raises(RepositoryError, match="still failing after 4 attempts"):
        b.put("data", NAME, b"x")
    assert proxy.seen == 4


def test_retry_wrapper_bounds_its_backoff():
    class Flaky(LocalBackend):
        calls = 0

        def get(self, kind, name, offset=0, length=None):
            Flaky.calls += 1
            raise TransientError("busy")

    sleeps: list[float] = []
    b = RetryBackend(Flaky("/nonexistent"), attempts=7, first_delay=0.1, max_delay=1.0,
                     sleep=sleeps.append)
    with pytest.raises(RepositoryError):
        b.get("data", NAME)
    assert Flaky.calls == 7 and sleeps == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_missing_bucket_is_a_clear_error(s3_endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("VMSIFT_CACHE_DIR", str(tmp_path / "cache"))
    out = vmsift("init", "-r", f"s3:{s3_endpoint}/no-such-bucket", "--encryption", "none")
    assert out.returncode == 7 and "bucket 'no-such-bucket' does not exist" in out.stderr


def _make_disk(path):
    with open(path, "wb") as f:
        f.truncate(24 << 20)
        for i in (0, 3, 9, 17):
            f.seek(i << 20)
            f.write(secrets.token_bytes(1 << 20))


@pytest.mark.parametrize("through_proxy", [False, True])
def test_backup_restore_check_on_s3(s3_endpoint, bucket, proxy, tmp_path, monkeypatch,
                                    through_proxy):
    monkeypatch.setenv("VMSIFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VMSIFT_PASSWORD", "s3 pw")
    endpoint = proxy.url if through_proxy else s3_endpoint
    repo = f"s3:{endpoint}/{bucket}/vmsift"
    disk = tmp_path / "disk.img"
    _make_disk(disk)
    out = vmsift("init", "-r", repo)
    assert out.returncode == 0, out.stderr
    if through_proxy:  # failures all along the backup: each retried
        proxy.plan = [None, None, 503, None, "drop", None, 500, None, None, None] * 20
    out = vmsift("backup", "-r", repo, disk)
    assert out.returncode == 0, out.stderr
    proxy.plan = []
    out = vmsift("restore", "-r", repo, "latest", "--target", tmp_path / "out")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "out" / "disk.img").read_bytes() == disk.read_bytes()
    out = vmsift("check", "-r", repo, "--read-data", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["ok"]
    if through_proxy:
        assert proxy.faults > 0
    # a second client (no cache of its own) sees the same repository
    monkeypatch.setenv("VMSIFT_CACHE_DIR", str(tmp_path / "cache2"))
    out = vmsift("snapshots", "--json", "-r", repo)
    assert [s["vm"]["name"] for s in json.loads(out.stdout)["snapshots"]] == ["disk.img"]


def test_two_clients_back_up_into_s3_at_once(s3_endpoint, bucket, tmp_path, monkeypatch):
    import sys

    from tests.helpers import ROOT

    monkeypatch.setenv("VMSIFT_PASSWORD", "s3 pw")
    repo = f"s3:{s3_endpoint}/{bucket}"
    monkeypatch.setenv("VMSIFT_CACHE_DIR", str(tmp_path / "cache0"))
    assert vmsift("init", "-r", repo).returncode == 0
    disks = [tmp_path / "a.img", tmp_path / "b.img"]
    for d in disks:
        _make_disk(d)
    children = [subprocess.Popen([sys.executable, "-m", "vmsift", "backup", "-r", repo, str(d),
                                  "--host", f"host{i}"], cwd=ROOT, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env={**os.environ, "VMSIFT_CACHE_DIR": str(tmp_path / f"c{i}")})
                for i, d in enumerate(disks)]
    for c in children:
        _, err = c.communicate(timeout=300)
        assert c.returncode == 0, err
    out = vmsift("check", "-r", repo, "--read-data")
    assert out.returncode == 0, out.stderr
    snaps = json.loads(vmsift("snapshots", "--json", "-r", repo).stdout)["snapshots"]
    assert sorted(s["host"] for s in snaps) == ["host0", "host1"]
    for d in disks:
        out = vmsift("restore", "-r", repo, f"latest:{d.name}", "--target", tmp_path / "out")
        assert out.returncode == 0, out.stderr
        assert (tmp_path / "out" / d.name).read_bytes() == d.read_bytes()


def test_local_packs_are_flushed_before_an_index_and_a_cut_pack_is_rewritten(tmp_path,
                                                                              monkeypatch):
    """A pack is fsynced by flush (not by put); the repository flushes before it stores an
    index; a pack left short by a crash before its flush is written again by the next put."""
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    b = LocalBackend(str(tmp_path / "repo"))
    b.create()
    payload = os.urandom(70000)
    b.put("data", NAME, payload)
    assert synced == []                                   # writeback started, not waited for
    b.flush()
    assert len(synced) == 2                               # the pack, then its folder
    b.flush()
    assert len(synced) == 2                               # nothing left to flush
    path = tmp_path / "repo" / "data" / NAME[:2] / NAME
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:                          # what a power loss may leave
        f.truncate(4096)
    b.put("data", NAME, payload)
    assert b.get("data", NAME) == payload
    b.put("index", "cd" * 32, b"index")                   # other objects: durable at once
    assert len(synced) == 4


def test_repository_flushes_packs_before_each_index(tmp_path, monkeypatch):
    from vmsift.backup.repository import Repository

    calls: list[str] = []
    real_put, real_flush = LocalBackend.put, LocalBackend.flush
    monkeypatch.setattr(LocalBackend, "put", lambda self, kind, name, data: (
        calls.append(kind), real_put(self, kind, name, data))[1])
    monkeypatch.setattr(LocalBackend, "flush", lambda self: (calls.append("flush"),
                                                            real_flush(self))[1])
    monkeypatch.setenv("VMSIFT_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "disk.raw"
    src.write_bytes(os.urandom(1 << 20))
    repo = Repository.init(str(tmp_path / "repo"), encryption="none")
    from vmsift.backup.archiver import backup
    with repo.lock(exclusive=False):
        backup(repo, [str(src)])
    repo.close()
    assert "index" in calls and "data" in calls
    for i, kind in enumerate(calls):
        if kind == "index":                  # no pack put since the last flush
            last_flush = max(j for j in range(i) if calls[j] == "flush")
            assert "data" not in calls[last_flush:i]


def test_local_leftovers_of_killed_writers_are_removed_by_age(tmp_path):
    """A temporary a killed writer left (dot name, .tmp) is never listed, and is deleted by
    remove_leftovers once it is older than the age asked for; objects stay."""
    b = LocalBackend(str(tmp_path / "repo"))
    b.create()
    b.put("data", NAME, b"pack")
    b.put("locks", "ef" * 16, b"{}")
    root = tmp_path / "repo"
    old = [root / "data" / "ab" / f".{NAME}.0a0b0c0d.tmp", root / "index" / ".x.01020304.tmp"]
    young = root / "locks" / f".{'ef' * 16}.05060708.tmp"
    for path in (*old, young):
        path.write_bytes(b"half written")
    past = os.path.getmtime(young) - 600
    for path in old:
        os.utime(path, (past, past))
    assert [n for n, _ in b.list("data")] == [NAME]       # never listed
    assert b.remove_leftovers("locks", older_than=60) == 0 and young.exists()
    assert b.remove_leftovers("data", older_than=60) == 12
    assert b.remove_leftovers("index") == 12
    assert b.remove_leftovers("locks") == 12
    assert not any(p.exists() for p in (*old, young))
    assert b.get("data", NAME) == b"pack" and b.exists("locks", "ef" * 16)


def test_lock_taker_clears_old_lock_temporaries_and_prune_all_temporaries(tmp_path,
                                                                          monkeypatch):
    from vmsift.backup.pruner import prune
    from vmsift.backup.repository import Repository

    monkeypatch.setenv("VMSIFT_CACHE_DIR", str(tmp_path / "cache"))
    repo = Repository.init(str(tmp_path / "repo"), encryption="none")
    root = tmp_path / "repo"
    old_lock, new_lock = root / "locks" / ".a.00000001.tmp", root / "locks" / ".b.00000002.tmp"
    pack, index = root / "data" / "7f" / ".7f00.00000003.tmp", root / "index" / ".i.00000004.tmp"
    for path in (old_lock, new_lock, pack, index):
        path.write_bytes(b"x" * 100)
    past = os.path.getmtime(old_lock) - 120
    os.utime(old_lock, (past, past))
    with repo.lock(exclusive=False):
        assert not old_lock.exists() and new_lock.exists() and pack.exists()
    with repo.lock(exclusive=True):
        result = prune(repo)
    assert result.leftovers_freed == 200 and not pack.exists() and not index.exists()
    assert new_lock.exists()                              # a lock write may be under way
    repo.close()
