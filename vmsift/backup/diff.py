"""What changed between two snapshots, from their manifests alone (no chunk is read): per
disk the byte ranges whose content differs, per small file whether it changed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .repository import Repository, StreamSource
from .snapshot import Snapshot


def _runs(stream: StreamSource, lo: int, hi: int) -> Iterator[tuple[int, int, bytes | None]]:
    """(start, end, chunk id or None for zeros) of ``stream`` over bytes [lo, hi)."""
    for off, n, chunk_id in stream.chunks(lo, hi - lo):
        yield max(off, lo), min(off + n, hi), chunk_id


def changed_ranges(a: StreamSource, b: StreamSource, lo: int = 0, hi: int | None = None
                   ) -> list[tuple[int, int]]:
    """Merged (offset, length) ranges of [lo, hi) where ``a`` and ``b`` differ (zeros and
    holes count as the same); past the shorter stream's end, everything differs."""
    hi = max(a.size, b.size) if hi is None else hi
    common = min(hi, a.size, b.size)
    out: list[tuple[int, int]] = []

    def add(start: int, end: int) -> None:
        if out and out[-1][0] + out[-1][1] == start:
            out[-1] = (out[-1][0], end - out[-1][0])
        elif end > start:
            out.append((start, end - start))

    ra, rb = _runs(a, lo, common), _runs(b, lo, common)
    x, y = next(ra, None), next(rb, None)
    while x and y:
        start, end = max(x[0], y[0]), min(x[1], y[1])
        if x[2] != y[2]:
            add(start, end)
        if x[1] <= end:
            x = next(ra, None)
        if y[1] <= end:
            y = next(rb, None)
    if hi > common:
        add(max(lo, common), hi)
    return out


def diff(repo: Repository, old: Snapshot, new: Snapshot) -> dict[str, Any]:
    """The differences between ``old`` and ``new`` (a JSON-ready document)."""
    disks = []
    old_disks = {d.name: d for d in old.disks}
    new_disks = {d.name: d for d in new.disks}
    for name in sorted(old_disks.keys() | new_disks.keys()):
        a, b = old_disks.get(name), new_disks.get(name)
        if a is None or b is None:
            disks.append({"name": name, "status": "added" if a is None else "removed"})
            continue
        ranges = changed_ranges(repo.open_stream(a.stream, name), repo.open_stream(b.stream, name))
        disks.append({"name": name, "status": "changed" if ranges else "same",
                      "old_size": a.size, "new_size": b.size,
                      "changed_bytes": sum(n for _, n in ranges),
                      "ranges": [{"offset": o, "length": n} for o, n in ranges]})
    files = []
    old_files = {f.name: f for f in old.files}
    new_files = {f.name: f for f in new.files}
    for name in sorted(old_files.keys() | new_files.keys()):
        a, b = old_files.get(name), new_files.get(name)
        if a is None or b is None:
            status = "added" if a is None else "removed"
        else:
            status = "same" if (a.size, a.stream.leaves) == (b.size, b.stream.leaves) else "changed"
        files.append({"name": name, "status": status})
    return {"old": old.id, "new": new.id, "old_vm": old.vm_name, "new_vm": new.vm_name,
            "disks": disks, "files": files}
