"""Repository locks: ``locks/<random name>`` objects saying who works on the repository.

Backups take shared locks, operations that delete (prune) or must see a still repository
take exclusive ones; two locks conflict when either is exclusive. A lock records host, pid,
the process's start time and when it was last refreshed (every `REFRESH` seconds, by writing
a new lock and deleting the old). A lock is stale, and cleared by whoever finds it, when its
process is gone from this host (or the pid now belongs to a later process), or when it was
not refreshed for `STALE_AFTER` seconds (a host that died). Whoever takes a lock also
deletes the temporaries of lock writes killed before they were renamed into place, once they
are `LEFTOVER_AGE` seconds old (a lock is written in microseconds).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from dataclasses import dataclass

from ..errors import LockedError, MissingObjectError, RepositoryError
from .backends import Backend

REFRESH = 300
STALE_AFTER = 1800
POLL = 1.0
LEFTOVER_AGE = 60


def process_start(pid: int) -> str | None:
    """An opaque start time of ``pid`` (from /proc), to tell a reused pid apart; None when
    there is no such process (or only its zombie is left)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return fields[19].decode()


@dataclass
class LockInfo:
    name: str
    host: str
    pid: int
    start: str | None
    time: float
    exclusive: bool

    def describe(self) -> str:
        when = dt.datetime.fromtimestamp(self.time, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        return (f"{'exclusive' if self.exclusive else 'shared'} lock by pid {self.pid} on "
                f"{self.host}, refreshed {when} UTC")

    def stale(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        if self.host == os.uname().nodename:
            started = process_start(self.pid)
            return started is None or started != self.start
        return now - self.time > STALE_AFTER


def read_locks(backend: Backend) -> list[LockInfo]:
    out = []
    for name, _ in backend.list("locks"):
        try:
            d = json.loads(backend.get("locks", name))
            out.append(LockInfo(name, d["host"], int(d["pid"]), d.get("start"),
                                float(d["time"]), bool(d["exclusive"])))
        except MissingObjectError:
            continue  # removed while we listed
        except (ValueError, KeyError, TypeError):
            # a lock we cannot read is treated as a live exclusive one: never ignored
            out.append(LockInfo(name, "?", 0, None, time.time(), True))
    return out


class Lock:
    """A held lock; `release` (or the end of a ``with`` block) removes it."""

    def __init__(self, backend: Backend, exclusive: bool):
        self.backend = backend
        self.exclusive = exclusive
        self.name: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self) -> str:
        name = os.urandom(16).hex()
        doc = {"host": os.uname().nodename, "pid": os.getpid(),
               "start": process_start(os.getpid()), "time": time.time(),
               "exclusive": self.exclusive}
        self.backend.put("locks", name, json.dumps(doc).encode())
        return name

    def acquire(self, wait: float = 0.0) -> Lock:
        """Take the lock, clearing stale ones; wait up to ``wait`` seconds for live ones."""
        deadline = time.monotonic() + wait
        while True:
            self.name = self._write()
            blocking = []
            for other in read_locks(self.backend):
                if other.name == self.name:
                    continue
                if other.stale():  # any stale lock found is cleared, conflicting or not
                    self.backend.delete("locks", other.name)
                elif self.exclusive or other.exclusive:
                    blocking.append(other)
            if not blocking:
                self.backend.remove_leftovers("locks", older_than=LEFTOVER_AGE)
                break
            self.backend.delete("locks", self.name)
            self.name = None
            if time.monotonic() >= deadline:
                raise LockedError("repository is locked: " + "; ".join(
                    b.describe() for b in blocking) + " (--retry-lock waits; `vmsift unlock` "
                    "removes stale locks)", source=self.backend.location)
            # jitter: two exclusive takers that saw each other do not retry in step
            import random  # here: most locks are taken at once

            time.sleep(min(POLL * random.uniform(0.5, 1.5),
                           max(deadline - time.monotonic(), 0.01)))
        self._thread = threading.Thread(target=self._refresh, name="vmsift-lock", daemon=True)
        self._thread.start()
        return self

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH):
            try:
                old, self.name = self.name, self._write()
                if old:
                    self.backend.delete("locks", old)
            except RepositoryError:
                pass  # tried again at the next refresh; STALE_AFTER leaves room

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.name:
            self.backend.delete("locks", self.name)
            self.name = None

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def clear_stale(backend: Backend, everything: bool = False) -> list[LockInfo]:
    """Remove stale locks (with ``everything``, every lock); return those removed."""
    removed = []
    for lock in read_locks(backend):
        if everything or lock.stale():
            backend.delete("locks", lock.name)
            removed.append(lock)
    return removed
