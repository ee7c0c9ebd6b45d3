"""What an examiner names on the command line, opened read-only: a VM configuration file
(``.vmx``, ``vm.cfg``), a VM folder or a datastore folder, or a datastore image.

A `Target` is the volume plus the part of it that was named: the configuration file (a file
was given) or the whole volume. A file opens its host folder as the volume, so the disks and
snapshot files beside it are read too.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

from ..datastore.detect import open_datastore
from ..datastore.vm import VmRecord, find_vms, read_vm
from ..datastore.volume import Volume
from ..errors import Problem, SourceError


@dataclass
class Target:
    source: str                 # as given
    volume: Volume
    config: str | None          # volume path of the one configuration named, else None
    is_folder: bool             # the volume is a host folder (paths are shown on the host)

    def shown(self, volume_path: str) -> str:
        """A volume path as reports name it: a host path for folders, ``IMAGE:path`` else."""
        if self.is_folder:
            root = os.path.dirname(self.source) if self.config else self.source
            return os.path.join(root, volume_path) if volume_path else root
        return f"{self.source}:{volume_path}"

    def vms(self, problems: list[Problem]) -> Iterator[VmRecord]:
        """The VM named, or every VM of the volume (unreadable folders go to ``problems``);
        their disks' allocated bytes are not counted (no report needs them)."""
        if self.config is not None:
            yield read_vm(self.volume, self.config, stored=False)
        else:
            yield from find_vms(self.volume, problems, stored=False)

    @property
    def scope(self) -> str:
        """The volume folder the target covers ("" for the whole volume)."""
        return posixpath.dirname(self.config) if self.config else ""

    def close(self) -> None:
        self.volume.close()

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_config(path: str) -> bool:
    name = os.path.basename(path).lower()
    return name.endswith(".vmx") or name == "vm.cfg"


def open_target(path: str) -> Target:
    """Open ``path`` read-only: a configuration file, a folder, or an image."""
    if not os.path.exists(path):
        raise SourceError("no such file or folder", source=path)
    if os.path.isfile(path) and _is_config(path):
        from ..datastore.folder import FolderVolume

        volume = FolderVolume(os.path.dirname(os.path.abspath(path)))
        return Target(path, volume, os.path.basename(path), True)
    return Target(path, open_datastore([path]), None, os.path.isdir(path))
