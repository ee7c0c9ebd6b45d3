"""Tell what a datastore image is and open it as a `Volume`.

Accepted: a plain folder; a bare VMFS or OCFS2 volume; a tar archive (an OVA); a whole disk with an MBR or GPT
partition table (each partition is tried); the devices of a spanned VMFS volume (several
images). Each volume module offers ``probe(src) -> bool`` and ``open_volume(sources)``.
"""

from __future__ import annotations

import contextlib
import importlib
import os

from ..errors import UnsupportedError, VmsiftError
from ..source import ByteSource, FileSource
from .volume import Volume

#: Volume modules, tried in this order.
VOLUME_MODULES: tuple[str, ...] = ("vmsift.datastore.vmfs", "vmsift.datastore.ocfs2",
                                   "vmsift.datastore.archive")


def candidates(src: ByteSource) -> list[ByteSource]:
    """The places a volume may start on ``src``: its partitions, then the whole image."""
    from ..formats import partition  # binary layouts: loaded for images only

    out: list[ByteSource] = []
    with contextlib.suppress(VmsiftError):
        table = partition.read_table(src)
        out += [p.open(src) for p in table.partitions if not p.is_container]
    return out + [src]


def open_datastore(paths: list[str]) -> Volume:
    """Open a folder, or one or several images, read-only, as a datastore volume."""
    if len(paths) == 1 and os.path.isdir(paths[0]):
        from .folder import FolderVolume  # imported only for folders: start-up time

        return FolderVolume(paths[0])
    sources = [FileSource(p) for p in paths]
    try:
        places = [c for src in sources for c in candidates(src)]
        tried = ["partition table (MBR, GPT)"]
        for name in VOLUME_MODULES:  # imported one at a time: each costs start-up time
            module = importlib.import_module(name)
            matching = [c for c in places if module.probe(c)]
            tried.append(module.KIND)
            if matching:
                return module.open_volume(matching)
    except BaseException:
        for src in sources:
            src.close()
        raise
    for src in sources:
        src.close()
    raise UnsupportedError(f"no datastore found (tried: {', '.join(tried)}, on the whole "
                           f"image and on each partition)", source=", ".join(paths))
