"""Virtual disk benchmark: vmsift vs qemu-img (export) and vs dissect / libvmdk (reads).

A 4 GiB disk: 40% unique data, 20% duplicates of that data, 40% never written, in 1 MiB
blocks spread over the disk. Made with qemu-img as monolithicSparse and streamOptimized.
Measured in one run: export to raw (wall time, peak RSS of the process), sequential read
throughput through each library's API, and a 2 TiB mostly-empty sparse disk (map + export).

    .venv/bin/python bench/bench_disk.py [--workdir DIR] [--size-gib 4]

Prints a Markdown table for docs/benchmarks.md. Peers that fail to install are reported as
missing, not skipped silently.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 1 << 20
VMSIFT = [sys.executable, "-m", "vmsift"]


def make_source(path: Path, size: int) -> None:
    """Write the 40/20/40 pattern into a sparse raw file."""
    rng = random.Random(20261123)
    blocks = size // MiB
    kinds = ["data"] * 40 + ["dup"] * 20 + ["hole"] * 40
    unique: list[int] = []
    with open(path, "w+b") as f:
        f.truncate(size)
        for i in range(blocks):
            kind = kinds[rng.randrange(100)]
            if kind == "hole" or (kind == "dup" and not unique):
                continue
            f.seek(i * MiB)
            if kind == "data":
                half = rng.randbytes(MiB // 2)  # half random, half text-like: compressible
                f.write(half + (b"vmsift benchmark line %08d\n" % i) * (MiB // 2 // 28)
                        + bytes(MiB // 2 % 28))
                unique.append(i)
            else:
                src = unique[rng.randrange(len(unique))]
                f.seek(src * MiB)
                data = f.read(MiB)
                f.seek(i * MiB)
                f.write(data)
        f.truncate(size)  # the text half runs past its block: the last one past the end


def timed(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one command, started with no dirty pages left by
    the previous one (else it pays for the previous writer's writeback)."""
    os.sync()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}: {proc.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss


def best_of(n: int, cmd: list[str], cleanup: Path | None = None) -> tuple[float, int]:
    results = []
    for _ in range(n):
        if cleanup and cleanup.exists():
            cleanup.unlink()
        results.append(timed(cmd))
    return min(r[0] for r in results), max(r[1] for r in results)


READERS = {
    "vmsift": """
from vmsift.datastore.disk import open_disk
from vmsift.datastore.folder import FolderVolume
import os, sys
p = sys.argv[1]
d = open_disk(FolderVolume(os.path.dirname(p)), os.path.basename(p))
read = lambda off, n: d.read(off, n)
size = d.size
""",
    "dissect.hypervisor": """
from dissect.hypervisor.disk.vmdk import VMDK
import sys
f = open(sys.argv[1], "rb")
d = VMDK(f)
size = d.size
def read(off, n):
    d.seek(off)
    return d.read(n)
""",
    "libvmdk": """
import pyvmdk, sys
d = pyvmdk.handle()
d.open(sys.argv[1])
d.open_extent_data_files()
size = d.get_media_size()
read = lambda off, n: d.read_buffer_at_offset(n, off)
""",
}
READ_LOOP = """
import time
t = time.perf_counter()
off = 0
while off < size:
    n = min(1 << 20, size - off)
    assert len(read(off, n)) == n
    off += n
print(time.perf_counter() - t)
"""


def read_throughput(name: str, image: Path) -> tuple[float, int] | str:
    code = READERS[name] + READ_LOOP
    try:
        out = subprocess.run([sys.executable, "-c", code, str(image)], capture_output=True,
                             text=True, check=True)
    except subprocess.CalledProcessError as e:
        return f"failed: {e.stderr.strip().splitlines()[-1] if e.stderr.strip() else e}"
    return float(out.stdout.strip().splitlines()[-1]), 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--size-gib", type=int, default=4)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vmsift-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    size = args.size_gib << 30
    src = work / "source.raw"
    if not src.exists():
        print(f"# building {args.size_gib} GiB source in {work}", file=sys.stderr)
        make_source(src, size)
    images = {}
    for sub in ("monolithicSparse", "streamOptimized"):
        img = work / f"{sub}.vmdk"
        if not img.exists():
            subprocess.run(["qemu-img", "convert", "-O", "vmdk", "-o", f"subformat={sub}",
                            str(src), str(img)], check=True)
        images[sub] = img
    out = work / "out.raw"
    rows = []
    for sub, img in images.items():
        q = best_of(2, ["qemu-img", "convert", "-O", "raw", str(img), str(out)], out)
        v = best_of(2, [*VMSIFT, "disk", "export", str(img), str(out)], out)
        subprocess.run(["cmp", str(out), str(src)], check=True)  # vmsift output is exact
        rows.append((f"export raw from {sub}", "qemu-img convert", q, v))
    out_vmdk = work / "out.vmdk"
    src_img = images["monolithicSparse"]
    q = best_of(2, ["qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized",
                    str(src_img), str(out_vmdk)], out_vmdk)
    v = best_of(2, [*VMSIFT, "disk", "export", "--format", "vmdk", "--subformat",
                    "streamOptimized", str(src_img), str(out_vmdk)], out_vmdk)
    subprocess.run(["qemu-img", "compare", str(out_vmdk), str(src)], check=True,
                   capture_output=True)
    rows.append(("export streamOptimized VMDK from monolithicSparse", "qemu-img convert", q, v))
    out_vmdk.unlink()
    print("| task | peer | peer s | vmsift s | vmsift/peer | peer RSS MiB | vmsift RSS MiB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for task, peer, (qs, qm), (vs, vm) in rows:
        print(f"| {task} | {peer} | {qs:.2f} | {vs:.2f} | {vs / qs:.2f} | {qm // 1024} | "
              f"{vm // 1024} |")
    print()
    print("| sequential read, 1 MiB blocks | " + " | ".join(READERS) + " |")
    print("|---|" + "---:|" * len(READERS))
    for sub, img in images.items():
        cells = []
        for name in READERS:
            r = read_throughput(name, img)
            cells.append(r if isinstance(r, str) else f"{size / MiB / r[0]:.0f} MiB/s")
        print(f"| {sub} | " + " | ".join(cells) + " |")
    big = work / "big-2t.vmdk"
    if not big.exists():
        subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(big), "2T"], check=True)
        subprocess.run(["qemu-io", "-f", "vmdk", "-c", "write -P 0x42 0 16M",
                        "-c", "write -P 0x43 1T 16M", "-c", "write -P 0x44 2047G 16M",
                        str(big)], check=True, capture_output=True)
    print()
    print("| 2 TiB sparse disk, 48 MiB written | peer s | vmsift s | peer RSS MiB | "
          "vmsift RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    q = best_of(1, ["qemu-img", "map", "--output=json", str(big)])
    v = best_of(1, [*VMSIFT, "disk", "map", "--json", str(big)])
    print(f"| map (qemu-img map) | {q[0]:.2f} | {v[0]:.2f} | {q[1] // 1024} | {v[1] // 1024} |")
    q = best_of(1, ["qemu-img", "convert", "-O", "raw", str(big), str(out)], out)
    v = best_of(1, [*VMSIFT, "disk", "export", str(big), str(out)], out)
    print(f"| export raw (qemu-img convert) | {q[0]:.2f} | {v[0]:.2f} | {q[1] // 1024} | "
          f"{v[1] // 1024} |")
    out.unlink()


if __name__ == "__main__":
    main()
