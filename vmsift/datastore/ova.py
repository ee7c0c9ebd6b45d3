"""`inspect` of an OVA: a tar archive whose first member is an OVF descriptor."""

from __future__ import annotations

from ..formats import tar
from ..report import Report
from ..source import ByteSource
from .ovf import open_ova
from .ovf_report import describe

KIND = "ova"
EXTENSIONS = (".ova",)


def sniff(head: bytes) -> bool:
    """A tar header whose member is a ``.ovf`` (the OVF spec puts the descriptor first)."""
    return tar.sniff(head) and head[:100].split(b"\x00", 1)[0].lower().endswith(b".ovf")


def inspect(src: ByteSource) -> Report:
    with open_ova(src, src.name, owns=False) as pkg:
        return describe(pkg)
