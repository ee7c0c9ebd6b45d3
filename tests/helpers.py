"""Test helpers: where the public samples live, tools that must exist under CI, the CLI in a
child process, and damage and sparse-file helpers."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT.parent / "shared" / "samples"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str) -> None:
    """Skip for a missing oracle or sample locally; fail under CI, where all must exist."""
    if ON_CI:
        pytest.fail(f"{what} is missing under CI=true: .ci/run must provide it")
    pytest.skip(f"{what} is missing")


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        missing(f"tool {name!r}")
    return path


def sample(name: str) -> Path:
    path = SAMPLES / name
    if not path.exists():
        missing(f"sample {path}")
    return path


def vmsift(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    """The CLI run as a user runs it, in a child process; text output."""
    return subprocess.run([sys.executable, "-m", "vmsift", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def vmsift_ok(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    """`vmsift` that must succeed (its stderr is the failure message)."""
    out = vmsift(*args, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out


@contextlib.contextmanager
def dissect_vmfs(*paths, lvm: bool = True):
    """dissect.vmfs (AGPL, a test-only oracle) opened on a VMFS image: its LVM devices in any
    order, or (``lvm=False``) one logical volume. Yields its VMFS object (``.fh`` is the LV)."""
    try:
        from dissect.vmfs import lvm as dissect_lvm, vmfs as dissect_fs
    except ImportError:
        missing("dissect.vmfs (pip install dissect.vmfs)")
    with contextlib.ExitStack() as stack:
        fhs = [stack.enter_context(open(p, "rb")) for p in paths]
        yield dissect_fs.VMFS(dissect_lvm.LVM(fhs).volumes[0].open() if lvm else fhs[0])


def volatility_vmware_layer(vmem: Path, meta: Path):
    """Volatility 3's VMware layer (a test-only oracle) over ``vmem`` with the region map of
    the checkpoint file ``meta`` (.vmsn / .vmss)."""
    try:
        from volatility3.framework import contexts
        from volatility3.framework.layers import physical, vmware
    except ImportError:
        missing("volatility3 (pip install volatility3)")
    ctx = contexts.Context()
    ctx.config["base.location"] = Path(vmem).absolute().as_uri()
    ctx.add_layer(physical.FileLayer(ctx, "base", "base"))
    ctx.config["meta.location"] = Path(meta).absolute().as_uri()
    ctx.add_layer(physical.FileLayer(ctx, "meta", "meta"))
    ctx.config["vmw.base_layer"] = "base"
    ctx.config["vmw.meta_layer"] = "meta"
    return vmware.VmwareLayer(ctx, "vmw", "vmw")


def mutate(data, raw: bytes, *, hot: int | None = None, rounds: int = 8) -> bytes:
    """Damage ``raw`` with hypothesis ``data``: flipped bits, cuts, insertions, and fields set
    to all ones, zero or a random 32-bit value. With ``hot``, half the damage lands in the
    first ``hot`` bytes (the headers and tables that matter most)."""
    from hypothesis import strategies as st

    out = bytearray(raw)
    for _ in range(data.draw(st.integers(1, rounds))):
        if not out:
            break
        end = min(len(out), hot) if hot and data.draw(st.booleans()) else len(out)
        pos = data.draw(st.integers(0, end - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert", "max", "zero", "word"]))
        if action == "flip":
            out[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "cut":
            del out[pos:]
        elif action == "insert":
            out[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        elif action == "max":
            out[pos:pos + 8] = b"\xff" * 8
        elif action == "zero":
            out[pos:pos + 4] = bytes(4)
        else:
            out[pos:pos + 4] = data.draw(st.integers(0, (1 << 32) - 1)).to_bytes(4, "little")
    return bytes(out)


def data_runs(path: str | os.PathLike) -> list[tuple[int, int]]:
    """(offset, length) of each data region of a sparse file, by SEEK_DATA / SEEK_HOLE."""
    runs = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size, pos = os.fstat(fd).st_size, 0
        while pos < size:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole after pos
                break
            pos = os.lseek(fd, data, os.SEEK_HOLE)
            runs.append((data, pos - data))
    finally:
        os.close(fd)
    return runs


def stored_digest(path: str | os.PathLike) -> tuple[str, int]:
    """sha256 over the data regions of a sparse file (with their offsets), and their bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for offset, length in data_runs(path):
            fh.seek(offset)
            h.update(offset.to_bytes(8, "little") + fh.read(length))
    return h.hexdigest(), sum(n for _, n in data_runs(path))


def truncated_copy(src: str | os.PathLike, dst: Path, length: int) -> Path:
    """The first ``length`` bytes of ``src`` as ``dst`` (an image cut short)."""
    with open(src, "rb") as f:
        dst.write_bytes(f.read(length))
    return dst


def sparse_copy(src: str | os.PathLike, dst: str | os.PathLike, offset: int = 0) -> None:
    """Write ``src`` into ``dst`` (created if absent, never shortened) at ``offset``, copying
    only its data regions: holes stay holes."""
    size = os.path.getsize(src)
    fi, fo = os.open(src, os.O_RDONLY), os.open(dst, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        if os.fstat(fo).st_size < offset + size:
            os.ftruncate(fo, offset + size)
        for at, left in data_runs(src):
            while left:
                n = os.copy_file_range(fi, fo, left, at, offset + at)
                if n == 0:
                    raise OSError(f"copy_file_range made no progress at {at} of {src}")
                at, left = at + n, left - n
    finally:
        os.close(fi)
        os.close(fo)
