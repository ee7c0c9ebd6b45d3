"""The one error hierarchy of vmsift.

Every error a caller can expect from damaged, hostile or unsupported input is a
`VmsiftError`. Each class carries the exit code the CLI uses for it (documented in
``docs/cli.md``) and renders as one line: the file, the byte offset where known, and what
was wrong.

Every error also has a `kind` (`ErrorKind`: not found, not a folder, is a folder, damaged,
I/O ...), a default per class that a raise may override (``SourceError(..., kind=NOT_FOUND)``),
and an ``errno`` derived from it, so that a file system (FUSE) answers ``e.errno`` without
reading messages. Warnings (damage worked around) are `Problem`s: the same one line of text
as ever, carrying the file, offset and kind for programs.
"""

from __future__ import annotations

import enum
import errno as errno_mod


class ErrorKind(enum.Enum):
    """What kind of failure an error is; ``errno`` is the POSIX number a file system gives."""

    NOT_FOUND = "not found"               # no such name
    NOT_A_DIR = "not a folder"            # a path component, or listdir, that is no folder
    IS_A_DIR = "is a folder"              # open or readlink of a folder
    IS_A_LINK = "is a link"               # open of a symbolic link (links are never followed)
    NOT_A_LINK = "not a link"             # readlink of something else
    NOT_A_FILE = "not a regular file"     # open of a device, socket, fifo
    PERMISSION = "permission denied"      # the host refused (folder datastores)
    DAMAGED = "damaged"                   # the bytes do not follow their format
    IO = "I/O error"                      # the host could not read
    UNSUPPORTED = "unsupported"           # recognised, not readable (an RDM's LUN, a feature)
    BUSY = "busy"                         # locked by another process

    @property
    def errno(self) -> int:
        return _ERRNO[self]

    @classmethod
    def from_errno(cls, number: int | None) -> ErrorKind:
        """The kind of a host ``OSError.errno`` (IO for any number not listed)."""
        return _FROM_ERRNO.get(number, cls.IO)


_ERRNO = {ErrorKind.NOT_FOUND: errno_mod.ENOENT, ErrorKind.NOT_A_DIR: errno_mod.ENOTDIR,
          ErrorKind.IS_A_DIR: errno_mod.EISDIR, ErrorKind.IS_A_LINK: errno_mod.ELOOP,
          ErrorKind.NOT_A_LINK: errno_mod.EINVAL, ErrorKind.NOT_A_FILE: errno_mod.ENXIO,
          ErrorKind.PERMISSION: errno_mod.EACCES, ErrorKind.DAMAGED: errno_mod.EIO,
          ErrorKind.IO: errno_mod.EIO, ErrorKind.UNSUPPORTED: errno_mod.EOPNOTSUPP,
          ErrorKind.BUSY: errno_mod.EBUSY}
_FROM_ERRNO = {errno_mod.ENOENT: ErrorKind.NOT_FOUND, errno_mod.ENOTDIR: ErrorKind.NOT_A_DIR,
               errno_mod.EISDIR: ErrorKind.IS_A_DIR, errno_mod.ELOOP: ErrorKind.IS_A_LINK,
               errno_mod.EACCES: ErrorKind.PERMISSION, errno_mod.EPERM: ErrorKind.PERMISSION}


def _where(source: str | None, offset: int | None) -> str:
    """The ``file @ 0xoffset: `` prefix of a one-line message."""
    if source is not None:
        return source + (f" @ {offset:#x}" if offset is not None else "") + ": "
    return f"@ {offset:#x}: " if offset is not None else ""


class VmsiftError(Exception):
    """Something vmsift cannot do with this input."""

    exit_code = 1
    kind = ErrorKind.IO

    def __init__(self, message: str, *, source: str | None = None, offset: int | None = None,
                 kind: ErrorKind | None = None):
        super().__init__(message)
        self.message = message
        self.source = source
        self.offset = offset
        if kind is not None:
            self.kind = kind

    @property
    def errno(self) -> int:
        """The POSIX errno of this error's `kind` (ENOENT, ENOTDIR, EISDIR, EIO ...)."""
        return self.kind.errno

    def __str__(self) -> str:
        return _where(self.source, self.offset) + self.message


class SourceError(VmsiftError):
    """A file or device could not be opened or read (missing, permission, I/O error)."""

    exit_code = 6


class FormatError(VmsiftError):
    """Bytes do not follow the format they claim to be (bad magic, bad field, bad syntax)."""

    exit_code = 3
    kind = ErrorKind.DAMAGED


class TruncatedError(FormatError):
    """A structure runs past the end of its file."""


class LimitError(FormatError):
    """A field asks for more than any real file would (absurd size or count)."""


class UnsupportedError(VmsiftError):
    """The input is recognised but this kind or feature is not supported, or not recognised."""

    exit_code = 4
    kind = ErrorKind.UNSUPPORTED


class ChainError(VmsiftError):
    """A snapshot or disk chain is broken: missing parent, CID mismatch, loop, escape."""

    exit_code = 5
    kind = ErrorKind.DAMAGED


class RepositoryError(VmsiftError):
    """A backup repository is missing, damaged or incompatible."""

    exit_code = 7
    kind = ErrorKind.DAMAGED


class IntegrityError(RepositoryError):
    """Stored data does not match its checksum or authentication tag."""

    exit_code = 8


class LockedError(RepositoryError):
    """A repository is locked by another process."""

    exit_code = 9
    kind = ErrorKind.BUSY


class Problem(str):
    """A warning: damage worked around, as a record. It *is* its one line of text (so lists
    of problems print, compare and serialise to JSON as the strings they always were) and
    carries ``what`` was wrong, the ``source`` file, the byte ``offset`` and the `kind` for
    programs.

    ``Problem(text, source=..., offset=...)`` keeps ``text`` as the line; `Problem.at` writes
    the line as an error would (``file @ 0xoffset: what``); `Problem.of` notes an error.
    """

    what: str
    source: str | None
    offset: int | None
    kind: ErrorKind

    def __new__(cls, text: str, *, source: str | None = None, offset: int | None = None,
                kind: ErrorKind = ErrorKind.DAMAGED, what: str | None = None) -> Problem:
        self = super().__new__(cls, text)
        self.what = text if what is None else what
        self.source, self.offset, self.kind = source, offset, kind
        return self

    @classmethod
    def at(cls, source: str | None, offset: int | None, what: str,
           kind: ErrorKind = ErrorKind.DAMAGED) -> Problem:
        """The problem ``what`` in ``source`` at byte ``offset``."""
        return cls(_where(source, offset) + what, source=source, offset=offset, kind=kind,
                   what=what)

    @classmethod
    def of(cls, error: VmsiftError, context: str = "") -> Problem:
        """``error`` worked around (``context`` says what was skipped), as a problem."""
        return cls(f"{context}{error}", source=error.source, offset=error.offset,
                   kind=error.kind, what=error.message)

    def __repr__(self) -> str:
        return f"Problem({str(self)!r})"


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
