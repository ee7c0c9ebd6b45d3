"""Values made by a pool before the thread that drives a backup needs them.

The thread that walks a stream in order (the archiver's) should not wait on storage: each
system call it makes waits, when it returns, for the pool's threads to let go of the
interpreter (tens of microseconds each while they hash and compress). `Ahead` has the pool
make the value for a key (a map window, a manifest leaf) when the key is first wanted, up to
``limit`` values at once (the memory they hold), and forgets the values of keys below the one
last asked for: keys are asked in increasing order.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any


class Ahead:
    def __init__(self, pool: concurrent.futures.Executor, make: Callable[[int], Any],
                 limit: int):
        self.pool, self.make, self.limit = pool, make, limit
        self._jobs: dict[int, concurrent.futures.Future] = {}

    def want(self, key: int) -> None:
        """Start making the value for ``key`` unless it is under way or `limit` are."""
        if key not in self._jobs and len(self._jobs) < self.limit:
            self._jobs[key] = self.pool.submit(self.make, key)

    def get(self, key: int) -> Any:
        """The value for ``key`` (its maker's error raised here); keys below it are done."""
        for done in [k for k in self._jobs if k < key]:
            del self._jobs[done]
        job = self._jobs.get(key)
        if job is None or job.cancel():  # not started: made here, not behind the queue
            value = self.make(key)
            job = self._jobs[key] = concurrent.futures.Future()
            job.set_result(value)
        return job.result()
