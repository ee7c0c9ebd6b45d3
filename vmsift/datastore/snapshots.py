"""Find the disk file that holds a VM disk's state at a given snapshot.

The .vmsd lists, for each snapshot, the disk file that was current when it was taken; that
file has not changed since (later writes went to a newer delta), so opening it with its
parents gives the disk as it was at the snapshot.
"""

from __future__ import annotations

import posixpath

from ..errors import ChainError, VmsiftError
from ..formats import vmsd as vmsd_mod
from .disk import open_disk
from .volume import Volume

MAX_VMSD = 16 << 20


def find_vmsd(volume: Volume, folder: str) -> list[str]:
    return [posixpath.join(folder, e.name) for e in volume.listdir(folder)
            if e.name.lower().endswith(".vmsd")]


def pick_snapshot(db: vmsd_mod.Vmsd, wanted: str) -> vmsd_mod.Snapshot:
    """A snapshot by uid (digits) or by display name; ambiguous names are an error."""
    if wanted.isdigit() and (snap := db.by_uid(int(wanted))):
        return snap
    matches = [s for s in db.snapshots if s.display_name == wanted]
    if len(matches) == 1:
        return matches[0]
    names = ", ".join(f"{s.uid}={s.display_name!r}" for s in db.snapshots) or "none"
    if matches:
        raise ChainError(f"{len(matches)} snapshots are called {wanted!r}; give a uid ({names})")
    raise ChainError(f"no snapshot {wanted!r} (snapshots: {names})")


def _base_of(volume: Volume, path: str) -> str | None:
    try:
        with open_disk(volume, path, strict=False) as disk:
            return disk.chain[-1].path
    except VmsiftError:
        return None


def disk_at_snapshot(volume: Volume, vmdk: str, wanted: str, vmsd_path: str | None = None) -> str:
    """The volume path of the file holding ``vmdk``'s disk at snapshot ``wanted``."""
    folder = posixpath.dirname(vmdk)
    candidates = [vmsd_path] if vmsd_path else find_vmsd(volume, folder)
    if not candidates:
        raise ChainError(f"no .vmsd snapshot database beside {vmdk}")
    base = _base_of(volume, vmdk)
    for path in candidates:
        with volume.open(path) as src:
            db = vmsd_mod.read(src)
        if not db.snapshots:
            continue
        snap = pick_snapshot(db, wanted)
        for disk in snap.disks:
            if not disk.filename:
                continue
            target = volume.resolve(posixpath.dirname(path), disk.filename)
            if volume.exists(target) and _base_of(volume, target) == base:
                return target
        raise ChainError(f"snapshot {snap.uid} ({snap.display_name!r}) in {path} has no disk "
                         f"of the chain of {vmdk}")
    raise ChainError(f"the .vmsd beside {vmdk} lists no snapshots")
