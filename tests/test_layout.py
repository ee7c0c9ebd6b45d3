"""The binary layout notation (vmsift.formats.layout) on its own; every format's tests read
real files through it."""

from __future__ import annotations

import struct

import pytest

from vmsift.formats.layout import (Array, Bytes, Const, Int8ul, Int16sl, Int16ul, Int32ul,
                                   Int64ul, LayoutError, Padding, Struct)

Inner = Struct("lba" / Int64ul, "count" / Int16ul)
Outer = Struct(
    "magic" / Const(b"MAGI"),
    "small" / Int8ul,
    "signed" / Int16sl,
    Padding(3),
    "word" / Int32ul,
    "table" / Array(3, Int32ul),
    "name" / Bytes(5),
    "inner" / Inner,
    "pairs" / Array(2, Inner),
)


def test_parse_reads_each_field_at_its_offset():
    raw = struct.pack("<4sBh3xI3I5sQH" + "QH" * 2, b"MAGI", 7, -2, 0xDEADBEEF, 1, 2, 3,
                      b"hello", 1 << 40, 9, 10, 11, 12, 13) + b"trailing bytes are ignored"
    h = Outer.parse(raw)
    assert Outer.sizeof() == 4 + 1 + 2 + 3 + 4 + 12 + 5 + 10 + 20
    assert (h.magic, h.small, h.signed, h.word, h.table, h.name) == (
        b"MAGI", 7, -2, 0xDEADBEEF, [1, 2, 3], b"hello")
    assert h.inner == {"lba": 1 << 40, "count": 9} and h["inner"].count == 9
    assert [(p.lba, p.count) for p in h.pairs] == [(10, 11), (12, 13)]
    assert set(h) == {"magic", "small", "signed", "word", "table", "name", "inner", "pairs"}
    assert Outer.build(h) == raw[:Outer.sizeof()]
    with pytest.raises(AttributeError):
        h.missing


def test_build_fills_constants_and_padding():
    value = {"small": 1, "signed": -1, "word": 2, "table": [3, 4, 5], "name": b"abcde",
             "inner": {"lba": 6, "count": 7}, "pairs": [{"lba": 8, "count": 9}] * 2}
    raw = Outer.build(value)
    assert raw[:4] == b"MAGI" and raw[7:10] == bytes(3) and Outer.parse(raw).table == [3, 4, 5]
    with pytest.raises(LayoutError, match="4 bytes given for a field of 5"):
        Outer.build({**value, "name": b"abcd"})
    with pytest.raises(LayoutError, match="2 items given for an array of 3"):
        Outer.build({**value, "table": [1, 2]})


def test_bytes_that_do_not_fit_are_refused():
    raw = Outer.build({"small": 1, "signed": 0, "word": 2, "table": [0] * 3, "name": bytes(5),
                       "inner": {"lba": 0, "count": 0}, "pairs": [{"lba": 0, "count": 0}] * 2})
    with pytest.raises(LayoutError, match=f"{Outer.sizeof() - 1} bytes, the layout needs"):
        Outer.parse(raw[:-1])
    with pytest.raises(LayoutError, match="expected b'MAGI', found b'XAGI'"):
        Outer.parse(b"X" + raw[1:])
    assert Inner.parse(memoryview(raw)[4:]).lba == int.from_bytes(raw[4:12], "little")
