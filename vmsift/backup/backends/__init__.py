"""Where a repository's objects live: one narrow interface, implementations per kind of
store, and wrappers stacked on them (`retry.RetryBackend`).

Objects are named by kind (``config``, ``keys``, ``data``, ``index``, ``snapshots``,
``locks``) and name (hex). Every object is immutable: `put` creates it atomically (a reader
never sees part of it) and leaves an existing object of that name alone, so a repeated put
is harmless (names are content hashes). Packs may become durable only at `flush`, which
the repository calls before it stores an index naming them. Backends raise `TransientError` for failures worth
retrying (a dropped connection, a busy server) and `RepositoryError` for the rest;
`MissingObjectError` when an object is not there.
"""

from __future__ import annotations

from collections.abc import Iterator

from ...errors import MissingObjectError, RepositoryError

KINDS = ("config", "keys", "data", "index", "snapshots", "locks")


class TransientError(Exception):
    """A failure that may go away if the call is repeated."""


class Backend:
    """The interface every store implements."""

    location: str = "<backend>"

    def list(self, kind: str) -> Iterator[tuple[str, int]]:
        """(name, size) of every object of ``kind``, in no particular order."""
        raise NotImplementedError

    def get(self, kind: str, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """The object's bytes, or ``length`` of them from ``offset``; a short answer is an
        error (the object is smaller than the caller was told)."""
        raise NotImplementedError

    def put(self, kind: str, name: str, data: bytes) -> None:
        """Store ``data`` under (kind, name) atomically unless an object of that name exists.
        A ``data`` object (a pack) need not be durable until `flush`; every other object is
        durable when put returns."""
        raise NotImplementedError

    def flush(self) -> None:
        """Make every object put so far durable (called before an index names packs)."""

    def remove_leftovers(self, kind: str, older_than: float = 0.0) -> int:
        """Delete the temporaries of ``kind`` that killed writers left (never listed) and
        that are at least ``older_than`` seconds old; return the bytes freed. With no age
        this is safe only while nobody else writes: prune calls it under its exclusive lock.
        Stores whose puts are atomic leave none."""
        return 0

    def delete(self, kind: str, name: str) -> None:
        """Remove the object; a missing one is not an error."""
        raise NotImplementedError

    def exists(self, kind: str, name: str) -> bool:
        raise NotImplementedError

    def create(self) -> None:
        """Prepare an empty store for a new repository (refuse one that is not empty)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


def open_backend(location: str, retry: bool = True) -> Backend:
    """The backend for a repository location: ``s3:ENDPOINT/BUCKET[/PREFIX]`` or a local
    folder; wrapped in `retry.RetryBackend` unless ``retry`` is off."""
    from .retry import RetryBackend

    if location.startswith("s3:"):
        from .s3 import S3Backend
        backend: Backend = S3Backend(location)
    elif "://" in location:
        raise RepositoryError("unknown repository location (a folder, or "
                              "s3:ENDPOINT/BUCKET[/PREFIX])", source=location)
    else:
        from .local import LocalBackend
        backend = LocalBackend(location)
    return RetryBackend(backend) if retry else backend


__all__ = ["Backend", "KINDS", "MissingObjectError", "TransientError", "open_backend"]
