"""The one error hierarchy of vmsift.

Every error a caller can expect from damaged, hostile or unsupported input is a
`VmsiftError`. Each class carries the exit code the CLI uses for it (documented in
``docs/cli.md``) and renders as one line: the file, the byte offset where known, and what
was wrong.
"""

from __future__ import annotations


class VmsiftError(Exception):
    """Something vmsift cannot do with this input."""

    exit_code = 1

    def __init__(self, message: str, *, source: str | None = None, offset: int | None = None):
        super().__init__(message)
        self.message = message
        self.source = source
        self.offset = offset

    def __str__(self) -> str:
        where = ""
        if self.source is not None:
            where = self.source
            if self.offset is not None:
                where += f" @ {self.offset:#x}"
            where += ": "
        elif self.offset is not None:
            where = f"@ {self.offset:#x}: "
        return where + self.message


class SourceError(VmsiftError):
    """A file or device could not be opened or read (missing, permission, I/O error)."""

    exit_code = 6


class FormatError(VmsiftError):
    """Bytes do not follow the format they claim to be (bad magic, bad field, bad syntax)."""

    exit_code = 3


class TruncatedError(FormatError):
    """A structure runs past the end of its file."""


class LimitError(FormatError):
    """A field asks for more than any real file would (absurd size or count)."""


class UnsupportedError(VmsiftError):
    """The input is recognised but this kind or feature is not supported, or not recognised."""

    exit_code = 4


class ChainError(VmsiftError):
    """A snapshot or disk chain is broken: missing parent, CID mismatch, loop, escape."""

    exit_code = 5


class RepositoryError(VmsiftError):
    """A backup repository is missing, damaged or incompatible."""

    exit_code = 7


class IntegrityError(RepositoryError):
    """Stored data does not match its checksum or authentication tag."""

    exit_code = 8


class LockedError(RepositoryError):
    """A repository is locked by another process."""

    exit_code = 9


def check_limit(value: int, limit: int, what: str, *, source: str | None = None,
                offset: int | None = None) -> int:
    """Return ``value`` if ``0 <= value <= limit``, else raise `LimitError`."""
    if not 0 <= value <= limit:
        raise LimitError(f"{what} is {value}, outside 0..{limit}", source=source, offset=offset)
    return value


class MissingObjectError(RepositoryError):
    """An object a repository names (pack, index, snapshot, key) is not there."""


class PartialError(VmsiftError):
    """Part of the work could not be done (a disk that could not be read was skipped); the
    rest was done and kept."""

    exit_code = 10
