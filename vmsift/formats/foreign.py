"""Disk image formats vmsift does not read, told by their magic so that errors can name them.

A VHD, qcow2 or VDI file renamed ``.vmdk`` is not a damaged VMDK: `identify` says what it is
(with qemu-img's name for it), and callers raise `UnsupportedError` (exit code 4).

    identify(src) -> "a qcow2 disk image (qemu-img format qcow2)" | None
"""

from __future__ import annotations

from ..source import ByteSource
from .vmdk import cowd, descriptor, sesparse, sparse

SECTOR = 512

# (offset of the magic, magic, what it is, qemu-img's format name); offsets < 0 count
# from the end of the file
_MAGICS: tuple[tuple[int, bytes, str, str], ...] = (
    (0, b"QFI\xfb\x00\x00\x00\x01", "a qcow (version 1) disk image", "qcow"),
    (0, b"QFI\xfb", "a qcow2 disk image", "qcow2"),
    (0, b"QED\x00", "a QED disk image", "qed"),
    (0, b"vhdxfile", "a VHDX (Hyper-V) disk image", "vhdx"),
    (0, b"conectix", "a dynamic VHD (Virtual PC, Hyper-V) disk image", "vpc"),
    (0x40, b"\x7f\x10\xda\xbe", "a VDI (VirtualBox) disk image", "vdi"),
    (0, b"WithoutFreeSpace", "a Parallels disk image", "parallels"),
    (0, b"WithouFreSpacExt", "a Parallels disk image", "parallels"),
    (0, b"LUKS\xba\xbe", "a LUKS encrypted volume", "luks"),
    (-SECTOR, b"koly", "a DMG (Apple disk image)", "dmg"),
    # a fixed VHD is raw data with the footer at its end; qemu-img probes it as raw
    (-SECTOR, b"conectix", "a fixed VHD disk image (raw data with a VHD footer)", "raw"),
)


def identify(src: ByteSource) -> str | None:
    """What ``src`` is when its magic is one of another disk format's, else None."""
    head = src.read(0, 0x44)
    tail = src.read(src.size - SECTOR, SECTOR) if src.size >= 2 * SECTOR else b""
    for offset, magic, what, qemu in _MAGICS:
        data = head[offset:] if offset >= 0 else tail
        if data.startswith(magic):
            return f"{what} (qemu-img format {qemu})"
    return None


def looks_raw(src: ByteSource) -> bool:
    """True when ``src`` cannot be a descriptor (binary or larger than any, and no descriptor
    text before its first NUL: qemu-img pads descriptors with NULs) nor a VMDK extent. Such
    a file is what qemu-img calls raw."""
    head = src.read(0, 4096)
    if head.startswith((sparse.MAGIC, cowd.MAGIC, sesparse.MAGIC_BYTES)):
        return False
    if descriptor.sniff(head.split(b"\0", 1)[0]):
        return False
    return src.size > descriptor.MAX_SIZE or b"\0" in head


def not_vmdk_message(src: ByteSource) -> str | None:
    """Why ``src`` is not a VMDK at all, naming its real format; None when it may be one."""
    what = identify(src)
    if what is None and looks_raw(src):
        what = ("a raw disk image, or a flat extent whose descriptor is to be opened instead: "
                "no VMDK header and no descriptor text (qemu-img format raw)")
    return None if what is None else f"not a VMDK: this is {what}"
