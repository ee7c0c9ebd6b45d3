"""Disks of other formats named ``.vmdk`` (made by qemu-img, which is also the oracle of what
they are), VMFS and LVM devices given to `inspect`: each is named, exit code 4 everywhere."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.fixtures.vmfs_images import image
from tests.helpers import require_tool, vmsift

# qemu-img create -f FORMAT [-o OPTIONS]; qemu-img cannot create DMG images
CREATE = {"vpc": [], "vpc-fixed": ["-o", "subformat=fixed"], "vhdx": [], "qcow2": [],
          "qcow": [], "qed": [], "vdi": [], "parallels": [], "raw": []}


def _qemu_image(tmp_path, kind: str):
    qemu = require_tool("qemu-img")
    path = tmp_path / "disk.vmdk"
    subprocess.run([qemu, "create", "-q", "-f", kind.split("-")[0], *CREATE[kind], path, "36M"],
                   check=True)
    info = json.loads(subprocess.run([qemu, "info", "--output=json", path], check=True,
                                     capture_output=True, text=True).stdout)
    return path, info["format"]


@pytest.mark.parametrize("kind", sorted(CREATE))
def test_other_formats_named_like_vmdk_are_named_by_their_magic(tmp_path, kind):
    path, qemu_says = _qemu_image(tmp_path, kind)
    for command in (["disk", "info"], ["inspect"]):
        out = vmsift(*command, path)
        assert out.returncode == 4, (command, out.stderr)
        assert f"(qemu-img format {qemu_says})" in out.stderr, (command, out.stderr)
        assert "VMDK descriptor" not in out.stderr
    if kind == "vpc-fixed":  # qemu-img probes a fixed VHD as raw; its footer says VHD
        assert "fixed VHD" in out.stderr


def test_a_delta_extent_opened_alone_is_not_called_raw(tmp_path):
    # a COWD extent is a VMDK: opening it without its descriptor is its own error
    (tmp_path / "x-delta.vmdk").write_bytes(b"COWD" + bytes(4092))
    out = vmsift("disk", "info", tmp_path / "x-delta.vmdk")
    assert "qemu-img format raw" not in out.stderr


@pytest.mark.parametrize("name, what", [("vmfs/vmfs5", "an LVM device of a VMFS datastore"),
                                        ("lvm/lvm5", "an LVM device of a VMFS datastore"),
                                        ("vmfs/vmfs6d", "a VMFS datastore volume")])
def test_inspect_names_datastore_devices_and_points_at_ds(cache_dir, name, what):
    path = image(name, cache_dir)  # ESXi-made; vmfs6d is a VMFS volume without LVM
    out = vmsift("inspect", path)
    assert out.returncode == 4
    assert what in out.stderr and f"vmsift ds info {path}" in out.stderr
