"""The logical volume of a VMFS datastore, assembled from its LVM devices.

A datastore's devices (partitions with an LVM header) are given in any order, one or several
for a spanned volume; their physical extents are laid out into one `LogicalVolume`. A device
that was not given leaves a gap: reading there is a clear error, the rest still reads.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import ErrorKind, FormatError, Problem, TruncatedError
from ..formats.vmfs import lvm as L
from ..source import Alloc, ByteSource, Run, clip, merge_runs


@dataclass
class _Piece:
    logical: int
    length: int
    source: ByteSource | None  # None: on a device that was not given
    physical: int
    device_size: int = 0  # the device's size by its LVM header

    @property
    def end(self) -> int:
        return self.logical + self.length


class LogicalVolume(ByteSource):
    """A VMFS logical volume assembled from the physical extents of its devices.

    Ranges whose device is missing map as DATA (their content is unknown, not zero) and
    reading them is a `FormatError` naming the range.
    """

    def __init__(self, pieces: list[_Piece], size: int, name: str):
        self.pieces = pieces
        self._starts = [p.logical for p in pieces]
        self.size = size
        self.name = name

    def _cover(self, start: int, end: int) -> Iterator[tuple[int, int, _Piece]]:
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        pos = start
        while pos < end and i < len(self.pieces):
            piece = self.pieces[i]
            if piece.end > pos:
                n = min(end, piece.end) - pos
                yield pos, n, piece
                pos += n
            i += 1

    def read(self, offset: int, length: int) -> bytes:
        start, end = clip(self.size, offset, length)
        out = []
        for pos, n, piece in self._cover(start, end):
            if piece.source is None:
                raise FormatError(f"LV range {piece.logical:#x}+{piece.length:#x} lives on a "
                                  f"device that was not given", source=self.name, offset=pos)
            at = piece.physical + pos - piece.logical
            if at + n > piece.source.size:
                short = L.cut_copy(piece.source.size, piece.device_size)
                raise TruncatedError(f"{short}: LV range {pos:#x}+{n:#x} is past its end",
                                     source=self.name, offset=pos)
            out.append(piece.source.read_exact(at, n, "logical volume extent"))
        return b"".join(out)

    def prefetch(self, offset: int, length: int) -> None:
        for pos, n, piece in self._cover(*clip(self.size, offset, length)):
            if piece.source is not None:
                piece.source.prefetch(piece.physical + pos - piece.logical, n)

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Run]:
        start, end = clip(self.size, offset, length)

        def runs() -> Iterator[Run]:
            for pos, n, piece in self._cover(start, end):
                if piece.source is None:
                    yield Run(pos, n, Alloc.DATA)
                    continue
                inner = piece.physical + pos - piece.logical
                for run in piece.source.extents(inner, n):
                    yield Run(run.offset - inner + pos, run.length, run.kind)

        return merge_runs(runs())

    @property
    def missing(self) -> list[tuple[int, int]]:
        return [(p.logical, p.length) for p in self.pieces if p.source is None]


def assemble(sources: list[ByteSource]) -> tuple[LogicalVolume, dict, list[str]]:
    """The logical volume of the given LVM devices, a description of it, and warnings."""
    warnings: list[Problem] = []
    devices = [(src, L.read_device(src)) for src in sources]
    seen: dict[str, str] = {}
    for src, dev in devices:
        if dev.uuid in seen:
            raise FormatError(f"device {dev.uuid} given twice (also {seen[dev.uuid]})",
                              source=src.name, offset=L.HEADER_OFFSET + 0x82)
        seen[dev.uuid] = src.name
    groups: dict[tuple[str, int], list[tuple[ByteSource, L.Device, L.LogicalVolumeEntry]]] = {}
    for src, dev in devices:
        for vol in dev.volumes:
            groups.setdefault(vol.key, []).append((src, dev, vol))
    if not groups:
        raise FormatError("no logical volume on the given devices", source=sources[0].name,
                          offset=L.HEADER_OFFSET + 0x66)
    key = max(groups, key=lambda k: (any(v.first_pe == 0 for _, _, v in groups[k]),
                                     len(groups[k])))
    members = sorted(groups[key], key=lambda m: m[2].first_pe)
    for other in groups:
        if other != key:
            warnings.append(Problem(f"ignored logical volume {other[0]} (snapshot {other[1]}) "
                                    f"on {', '.join(s.name for s, _, _ in groups[other])}",
                                    source=groups[other][0][0].name))
    for src, dev in devices:
        if src.size < dev.size:
            warnings.append(Problem(f"{src.name}: {L.cut_copy(src.size, dev.size)}",
                                    source=src.name))
        if not any(src is m[0] for m in members):
            warnings.append(Problem(f"{src.name} holds no part of logical volume {key[0]}",
                                    source=src.name))
    zero = next((m for m in members if m[2].first_pe == 0), members[0])
    lv_size = zero[2].size
    expected = max(v.num_devs for _, _, v in members)
    if expected > len(members):
        warnings.append(Problem(f"logical volume spans {expected} devices, {len(members)} given",
                                source=members[0][0].name))

    pieces: list[_Piece] = []
    for src, dev, vol in members:
        for ext in dev.extents.get(vol.volume_id, []):
            if ext.logical >= lv_size:
                warnings.append(Problem.at(src.name, None, f"extent at LV {ext.logical:#x} is "
                                           f"past the end of the volume ({lv_size:#x}); ignored"))
                continue
            pieces.append(_Piece(ext.logical, min(ext.length, lv_size - ext.logical), src,
                                 ext.physical, dev.size))
    pieces.sort(key=lambda p: p.logical)
    filled: list[_Piece] = []
    pos = 0
    for piece in pieces:
        if piece.logical < pos:
            raise FormatError(f"physical extents overlap at LV offset {piece.logical:#x}",
                              source=piece.source.name if piece.source else None)
        if piece.logical > pos:
            filled.append(_Piece(pos, piece.logical - pos, None, 0))
        filled.append(piece)
        pos = piece.end
    if pos < lv_size:
        filled.append(_Piece(pos, lv_size - pos, None, 0))
    lv = LogicalVolume(filled, lv_size, f"{members[0][0].name} (LV {key[0]})")
    for offset, length in lv.missing:
        warnings.append(Problem(f"LV range {offset:#x}+{length:#x} is on a missing device: "
                                f"reads there fail", source=lv.name, offset=offset,
                                kind=ErrorKind.IO))
    desc = {
        "lv_uuid": key[0], "snap_id": key[1], "name": zero[2].name, "size": lv_size,
        "state": zero[2].state, "generation": zero[2].generation, "num_devs": expected,
        "devices": [{**dev.to_dict(), "first_pe": vol.first_pe, "last_pe": vol.last_pe,
                     "extents": len(dev.extents.get(vol.volume_id, []))}
                    for _, dev, vol in members],
        "missing": [{"offset": o, "length": n} for o, n in lv.missing],
    }
    return lv, desc, warnings
