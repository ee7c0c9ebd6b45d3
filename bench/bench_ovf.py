"""OVA benchmark: `disk export` from inside an OVA vs the same streamOptimized disk outside the
tar, vs `qemu-img convert` of the extracted disk, vs `tar -x` (the peer for "look inside
without unpacking"), plus `vmsift verify` vs `sha256sum` of the extracted files.

A 1 GiB disk, ~40% data (1 MiB blocks, half random and half text-like, spread over the disk),
made with qemu-img as streamOptimized and packed by GNU tar (ustar, descriptor first).

    .venv/bin/python bench/bench_ovf.py [--workdir DIR] [--size-gib 1]

Prints a Markdown table for docs/benchmarks.md (one measured run of each, after one warm-up
run that fills the page cache, so every tool reads from memory).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_disk import timed  # noqa: E402 - one way to time a command
from tests.fixtures import ova  # noqa: E402

MiB = 1 << 20
VMSIFT = [sys.executable, "-m", "vmsift"]


def make_raw(path: Path, size: int) -> None:
    rng = random.Random(20261203)
    with open(path, "wb") as f:
        f.truncate(size)
        for i in range(size // MiB):
            if rng.random() < 0.4:
                f.seek(i * MiB)
                f.write(rng.randbytes(MiB // 2) + (b"vmsift ova bench %08d\n" % i).ljust(
                    MiB // 2, b"."))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--size-gib", type=float, default=1.0)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vmsift-bench-ovf-"))
    work.mkdir(parents=True, exist_ok=True)
    size = int(args.size_gib * (1 << 30))
    raw, vmdk = work / "src.raw", work / "disk1.vmdk"
    if not vmdk.exists():
        make_raw(raw, size)
        ova.stream_vmdk(raw, vmdk)
        spec = ova.DiskSpec("vmdisk1", "disk1.vmdk", size, vmdk.stat().st_size)
        (work / "b.ovf").write_text(ova.descriptor([spec], [("vm1", ["vmdisk1"])]))
        ova.write_manifest(work, "b.mf", ["b.ovf", "disk1.vmdk"])
        ova.pack(work, work / "b.ova", ["b.ovf", "b.mf", "disk1.vmdk"])
    out, extract = work / "out.raw", work / "x"
    extract.mkdir(exist_ok=True)
    cases = {
        "vmsift disk export X.ova (in the tar)":
            [*VMSIFT, "disk", "export", work / "b.ova", out, "--force"],
        "vmsift disk export disk1.vmdk (outside the tar)":
            [*VMSIFT, "disk", "export", vmdk, out, "--force"],
        "qemu-img convert disk1.vmdk (extracted) -O raw":
            ["qemu-img", "convert", "-f", "vmdk", "-O", "raw", vmdk, out],
        "tar -xf X.ova (extraction alone)": ["tar", "-xf", work / "b.ova", "-C", extract],
        "vmsift verify X.ova": [*VMSIFT, "verify", work / "b.ova"],
        "sha256sum of the extracted files": ["sha256sum", work / "b.ovf", vmdk],
    }
    for cmd in cases.values():  # warm-up: the page cache holds every input afterwards
        timed([str(c) for c in cmd])
    results = {}
    for name, cmd in cases.items():
        if out.exists():
            out.unlink()
        results[name] = timed([str(c) for c in cmd])
    print(f"disk {size / (1 << 30):g} GiB, streamOptimized file {vmdk.stat().st_size / MiB:.0f} "
          f"MiB, OVA {(work / 'b.ova').stat().st_size / MiB:.0f} MiB\n")
    base = results["vmsift disk export disk1.vmdk (outside the tar)"][0]
    print("| command | wall s | peak RSS MiB | vs export outside the tar |")
    print("| --- | ---: | ---: | ---: |")
    for name, (secs, rss) in results.items():
        print(f"| {name} | {secs:.2f} | {rss / 1024:.0f} | {secs / base:.2f}x |")


if __name__ == "__main__":
    main()
