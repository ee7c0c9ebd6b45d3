"""A backend wrapper that repeats calls failing with `TransientError`: bounded, with
exponential back-off. Puts are idempotent (objects are immutable and named by content), so
repeating one is always safe."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from ...errors import RepositoryError
from . import Backend, TransientError

T = TypeVar("T")


class RetryBackend(Backend):
    def __init__(self, inner: Backend, attempts: int = 6, first_delay: float = 0.1,
                 max_delay: float = 5.0, sleep: Callable[[float], None] = time.sleep):
        self.inner = inner
        self.location = inner.location
        self.attempts = attempts
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.retries = 0  # how many calls were repeated, for reports and tests

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        delay = self.first_delay
        for attempt in range(self.attempts):
            try:
                return fn()
            except TransientError as e:
                if attempt == self.attempts - 1:
                    raise RepositoryError(f"{what} still failing after {self.attempts} "
                                          f"attempts: {e}", source=self.location) from None
                self.retries += 1
                self.sleep(delay)
                delay = min(delay * 2, self.max_delay)
        raise AssertionError("unreachable")

    def list(self, kind: str) -> Iterator[tuple[str, int]]:
        return iter(self._call(f"list {kind}", lambda: list(self.inner.list(kind))))

    def get(self, kind: str, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._call(f"get {kind}/{name}",
                          lambda: self.inner.get(kind, name, offset, length))

    def put(self, kind: str, name: str, data: bytes) -> None:
        self._call(f"put {kind}/{name}", lambda: self.inner.put(kind, name, data))

    def flush(self) -> None:
        self._call("flush", self.inner.flush)

    def remove_leftovers(self, kind: str, older_than: float = 0.0) -> int:
        return self._call(f"clean {kind}", lambda: self.inner.remove_leftovers(kind, older_than))

    def delete(self, kind: str, name: str) -> None:
        self._call(f"delete {kind}/{name}", lambda: self.inner.delete(kind, name))

    def exists(self, kind: str, name: str) -> bool:
        return self._call(f"stat {kind}/{name}", lambda: self.inner.exists(kind, name))

    def create(self) -> None:
        self._call("create", self.inner.create)

    def close(self) -> None:
        self.inner.close()
