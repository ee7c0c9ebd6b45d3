"""Units of the backup engine: the chunker's cell map, manifest leaves, sealing, packs."""

from __future__ import annotations

import os
import random

import pytest

from vmsift.backup.chunker import segments
from vmsift.backup.crypto import Keys, open_keys, seal_keys
from vmsift.backup.manifest import LeafBuilder, decode_leaf
from vmsift.backup.pack import PackWriter, read_header
from vmsift.errors import IntegrityError
from vmsift.source import Alloc, ByteSource, Run

RANK = {Alloc.HOLE: 0, Alloc.ZERO: 1, Alloc.DATA: 2}


class MapOnly(ByteSource):
    def __init__(self, runs):
        self.runs, self.size = runs, runs[-1].end

    def extents(self, offset=0, length=None):
        return iter(self.runs)


def expected_cells(runs, cell):
    size = runs[-1].end
    kinds = []
    for c in range(-(-size // cell)):
        lo, hi = c * cell, min(size, (c + 1) * cell)
        touching = [r.kind for r in runs if r.offset < hi and r.end > lo]
        kinds.append(max(touching, key=RANK.__getitem__))
    return kinds


def test_cells_take_the_strongest_kind_they_touch():
    rng = random.Random(7)
    for _ in range(3000):
        cell, pos, runs, last = rng.choice([1, 2, 4, 8]), 0, [], None
        for _ in range(rng.randint(1, 8)):
            kind = rng.choice([k for k in Alloc if k is not last])
            n = rng.randint(1, 20)
            runs.append(Run(pos, n, kind))
            pos, last = pos + n, kind
        got = [s.kind for s in segments(MapOnly(runs), cell) for _ in range(s.count)]
        assert got == expected_cells(runs, cell), (runs, cell)


def test_leaf_round_trip_and_damage():
    b = LeafBuilder()
    b.empty(Alloc.HOLE, 3)
    b.empty(Alloc.HOLE, 2)
    b.data(b"\1" * 32)
    b.empty(Alloc.ZERO, 1)
    raw = b.finish()
    assert decode_leaf(raw, 7, "leaf") == [(Alloc.HOLE, 5, None), (Alloc.DATA, 1, b"\1" * 32),
                                           (Alloc.ZERO, 1, None)]
    with pytest.raises(IntegrityError, match="covers 7 cells, not 8"):
        decode_leaf(raw, 8, "leaf")
    with pytest.raises(IntegrityError, match="bad record"):
        decode_leaf(raw + b"\x07", 7, "leaf")


@pytest.mark.parametrize("encrypted", [False, True])
def test_seal_and_pack(encrypted):
    keys = Keys.generate(encrypted)
    text, noise = b"abc" * 10000, os.urandom(5000)
    for data in (text, noise):
        sealed = keys.seal(data, b"aad")
        assert keys.unseal(sealed, b"aad", "x") == data
    assert len(keys.seal(text, b"aad")) < 200            # compressed
    assert len(keys.seal(noise, b"aad")) <= 5000 + 1 + 28  # random data stored as is
    if encrypted:
        with pytest.raises(IntegrityError, match="fails authentication"):
            keys.unseal(keys.seal(text, b"aad"), b"other", "x")
        sealed = bytearray(keys.seal(text, b"aad"))
        sealed[20] ^= 1
        with pytest.raises(IntegrityError):
            keys.unseal(bytes(sealed), b"aad", "x")
    w = PackWriter(keys)
    for data in (text, noise):
        w.add(0, keys.blob_id(data), keys.seal(data, keys.blob_id(data)), len(data))
    name, raw, entries = w.finish()
    assert read_header(keys, raw, name) == entries
    with pytest.raises(IntegrityError):
        read_header(keys, raw[:-3], name)


def test_key_file_opens_only_with_its_password():
    keys = Keys.generate(True)
    sealed = seal_keys(keys, b"correct horse")
    assert open_keys(sealed, b"correct horse") == keys
    assert open_keys(sealed, b"wrong") is None
