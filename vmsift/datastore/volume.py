"""`Volume`: a read-only file tree (a plain folder, a VMFS or OCFS2 image) that disks live on.

Paths inside a volume are POSIX-style and relative to its root. Names read from files
(descriptor extents, parent hints, vmx disk paths) are resolved with `Volume.resolve`, which
refuses anything that would leave the volume.
"""

from __future__ import annotations

import posixpath
import re

from ..errors import ChainError
from ..source import ByteSource

_ESX_ABSOLUTE = re.compile(r"^/vmfs/volumes/[^/]+/(.+)$")


class Volume:
    """Interface of a datastore file tree; subclasses implement `open`, `exists`, `listdir`."""

    name: str = "<volume>"

    def open(self, path: str) -> ByteSource:
        raise NotImplementedError

    def exists(self, path: str) -> bool:
        raise NotImplementedError

    def listdir(self, path: str = "") -> list[str]:
        raise NotImplementedError

    def resolve(self, base_dir: str, ref: str) -> str:
        """The volume path a file at ``base_dir`` means by ``ref``.

        Relative names are joined to ``base_dir``. Absolute ESXi names
        (``/vmfs/volumes/<datastore>/<dir>/<file>``) are tried as ``<dir>/<file>`` from the
        root, then as ``<file>`` beside the referring file (a copied VM folder).
        """
        if ref.startswith("/"):
            candidates = []
            if m := _ESX_ABSOLUTE.match(ref):
                candidates.append(posixpath.normpath(m[1]))
            candidates.append(posixpath.join(base_dir, posixpath.basename(ref)))
            for candidate in candidates:
                if not candidate.startswith("../") and self.exists(candidate):
                    return candidate.lstrip("/") or "."
            raise ChainError(f"{ref!r} is not on this datastore (looked for "
                             f"{' and '.join(candidates)})", source=self.name)
        path = posixpath.normpath(posixpath.join(base_dir, ref))
        if path == ".." or path.startswith("../") or path.startswith("/"):
            raise ChainError(f"{ref!r} (from {base_dir or '.'}) leaves the datastore",
                             source=self.name)
        return path
