"""Fixed binary layouts, declared field by field and read with one `struct` unpack.

    Header = Struct(
        "magic" / Const(b"KDMV"),
        "version" / Int32ul,
        Padding(4),
        "table" / Array(4, Int64ul),
        "entry" / Entry,             # a layout inside a layout
    )
    h = Header.parse(raw)            # h.version, h.table[0], h.entry.lba; h["version"] too
    Header.sizeof(), Header.build({"version": 1, ...})

The notation is construct's (``"name" / field``), for the part of it that fixed layouts
need: little-endian integers, byte strings, constants, padding, arrays of a fixed count
and nested layouts. Each `Struct` compiles to one `struct.Struct` when it is declared, so
a parse is one unpack, and importing this costs nothing beyond `struct`; construct itself
took 40-60 ms of every command's start-up (docs/benchmarks.md) and parsed about ten times
slower. ``parse`` reads the first `sizeof` bytes of what it is given; fewer is a
`LayoutError`, as is a constant that does not match (readers check magic first and say
where, so either is a bug of the caller).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from typing import Any


class LayoutError(ValueError):
    """Bytes that do not fit a layout: too few, or a constant that differs."""


class Container(dict):
    """A parsed layout: its fields by name, as attributes or keys."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Field:
    """One field's `struct` format and how its unpacked values become a value."""

    fmt = ""
    values = 1  # how many unpacked values it takes

    def take(self, values: Iterator[Any]) -> Any:
        return next(values)

    def give(self, value: Any) -> list[Any]:
        return [value]

    def __rtruediv__(self, name: str) -> Named:
        return Named(name, self)


class Named:
    """A field with its name in a layout (``"name" / field``)."""

    def __init__(self, name: str, field: Field):
        self.name, self.field = name, field


class _Int(Field):
    def __init__(self, fmt: str):
        self.fmt = fmt


Int8ul, Int16ul, Int32ul, Int64ul = _Int("B"), _Int("H"), _Int("I"), _Int("Q")
Int16sl = _Int("h")


class Bytes(Field):
    def __init__(self, length: int):
        self.fmt = f"{length}s"
        self.length = length

    def give(self, value: bytes) -> list[Any]:
        if len(value) != self.length:
            raise LayoutError(f"{len(value)} bytes given for a field of {self.length}")
        return [value]


class Const(Bytes):
    """Bytes that must be ``value`` (checked when parsed; built from it when not given)."""

    def __init__(self, value: bytes):
        super().__init__(len(value))
        self.value = value

    def take(self, values: Iterator[Any]) -> Any:
        got = next(values)
        if got != self.value:
            raise LayoutError(f"expected {self.value!r}, found {got!r}")
        return got


class Padding(Field):
    """Bytes skipped when parsed and zero when built; not a field of the result."""

    values = 0

    def __init__(self, length: int):
        self.fmt = f"{length}x"

    def take(self, values: Iterator[Any]) -> Any:
        return None

    def give(self, value: Any) -> list[Any]:
        return []


class Array(Field):
    """``count`` of ``field`` one after another, as a list."""

    def __init__(self, count: int, field: Field):
        self.count, self.field = count, field
        self.fmt = field.fmt * count
        self.values = field.values * count

    def take(self, values: Iterator[Any]) -> Any:
        return [self.field.take(values) for _ in range(self.count)]

    def give(self, value: list[Any]) -> list[Any]:
        if len(value) != self.count:
            raise LayoutError(f"{len(value)} items given for an array of {self.count}")
        return [v for item in value for v in self.field.give(item)]


class Struct(Field):
    """Fields in order, packed with no alignment (``<``): a layout, and a field of another."""

    def __init__(self, *fields: Named | Padding):
        self.fields = [(f.name, f.field) if isinstance(f, Named) else (None, f)
                       for f in fields]
        self.fmt = "".join(field.fmt for _, field in self.fields)
        self.values = sum(field.values for _, field in self.fields)
        self._struct = struct.Struct("<" + self.fmt)
        # fields that are one plain value each parse with a zip, without a step per field
        self._plain = all(type(field) in (_Int, Bytes, Padding) for _, field in self.fields)
        self._names = [name for name, field in self.fields if field.values]

    def sizeof(self) -> int:
        return self._struct.size

    def parse(self, data: bytes | bytearray | memoryview) -> Container:
        if len(data) < self._struct.size:
            raise LayoutError(f"{len(data)} bytes, the layout needs {self._struct.size}")
        values = self._struct.unpack_from(data)
        if self._plain:
            return Container(zip(self._names, values))
        return self.take(iter(values))

    def take(self, values: Iterator[Any]) -> Any:
        out = Container()
        for name, field in self.fields:
            value = field.take(values)
            if name is not None:
                out[name] = value
        return out

    def build(self, value: Mapping[str, Any]) -> bytes:
        return self._struct.pack(*self.give(value))

    def give(self, value: Mapping[str, Any]) -> list[Any]:
        out: list[Any] = []
        for name, field in self.fields:
            if name is None:
                out += field.give(None)
            elif isinstance(field, Const) and name not in value:
                out.append(field.value)
            else:
                out += field.give(value[name])
        return out
