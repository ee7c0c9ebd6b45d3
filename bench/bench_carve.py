"""Carving benchmark: `vmsift carve` against plain reads of the same image, in one run.

The image is ``--size`` (2 GiB by default) of pseudo-random data (16 MiB of random bytes,
each copy shifted so no two blocks are equal) with artefacts planted at seeded random offsets:
``--count`` copies each of a VMDK sparse header, a COWD header, a descriptor, a .vmx and a
.vmsd, half of them sector-aligned and crossing nothing, some straddling 16 MiB edges. The
file is read once before timing, so every command reads it from the page cache.

Timed, each once, in this order: ``cat IMAGE > /dev/null`` (the read rate of the machine),
``grep -c -a -b KDMV IMAGE`` (one literal, a byte-search peer), and ``vmsift carve --json``
(all signatures; its own scan time from the JSON ``seconds`` and the wall time of the whole
command). The planted offsets are checked against the hits. The machine may be shared: the
load average is printed with the results.

    python3 bench/bench_carve.py [--size 2G] [--count 20] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20


def size_arg(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def artefacts() -> dict[str, bytes]:
    """One of each kind, made by the project's writers (KDMV and COWD headers as real tools
    lay them out)."""
    sys.path.insert(0, str(ROOT))
    from tests.fixtures import vmsn_writer as w

    work = Path(tempfile.mkdtemp(prefix="bench-carve-art-"))
    try:
        subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(work / "d.vmdk"), "64M"],
                       check=True)
        sparse = (work / "d.vmdk").read_bytes()
    finally:
        shutil.rmtree(work)
    from tests.fixtures.cowd_writer import header_bytes

    cowd = header_bytes(8192, 1, 4, 1, 6)
    vmsd = (b'.encoding = "UTF-8"\nsnapshot.lastUID = "1"\nsnapshot.numSnapshots = "1"\n'
            b'snapshot0.uid = "1"\nsnapshot0.displayName = "bench"\n')
    return {"vmdk-sparse": sparse, "vmdk-cowd": cowd, "vmx": w.vmx_text(), "vmsd": vmsd}


def build(path: Path, size: int, count: int, seed: int = 7) -> dict[int, str]:
    rng = random.Random(seed)
    noise = bytearray(rng.randbytes(16 * MIB))
    planted: dict[int, str] = {}
    kinds = artefacts()
    with open(path, "wb") as f:
        for pos in range(0, size, 16 * MIB):
            noise[0:8] = pos.to_bytes(8, "little")  # blocks differ
            f.write(noise[:min(16 * MIB, size - pos)])
        slots = sorted(rng.sample(range(1, size // MIB - 2), count * len(kinds)))
        for i, slot in enumerate(slots):
            kind = list(kinds)[i % len(kinds)]
            at = slot * MIB + (rng.randrange(0, 1024) * 512 if i % 3 else 0)
            if kind in ("vmx", "vmsd"):
                at -= 9  # text crosses a 1 MiB (and, for some, a 16 MiB) edge
                f.seek(at - 1)
                f.write(b"\0")
            f.seek(at)
            f.write(kinds[kind] + b"\0")
            planted[at] = kind
    return planted


def timed(cmd: str) -> float:
    began = time.monotonic()
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - began


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=size_arg, default=2 << 30)
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--workdir")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-carve-"))
    work.mkdir(parents=True, exist_ok=True)
    image = work / "planted.img"
    try:
        planted = build(image, args.size, args.count)
        subprocess.run(f"cat {image} > /dev/null", shell=True, check=True)  # warm the cache
        cat = timed(f"cat {image} > /dev/null")
        grep = timed(f"grep -c -a -b KDMV {image} | cat || true")  # | cat: grep stops early on /dev/null
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        began = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "vmsift", "carve", "--json", str(image)],
                             check=True, capture_output=True, text=True, env=env).stdout
        wall = time.monotonic() - began
        doc = json.loads(out)
        found = {h["offset"]: h["kind"] for h in doc["hits"] if h["within"] is None}
        missed = {at: k for at, k in planted.items() if found.get(at) != k}
        mib = args.size / MIB
        print(f"image {mib:.0f} MiB, {len(planted)} artefacts planted, "
              f"{len(planted) - len(missed)} found, {len(found) - len(planted) + len(missed)} "
              f"other hits; load average {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
        print("| reader | seconds | MiB/s |\n|---|---:|---:|")
        print(f"| `cat > /dev/null` | {cat:.2f} | {mib / cat:.0f} |")
        print(f"| `grep -c -a -b KDMV` (one literal) | {grep:.2f} | {mib / grep:.0f} |")
        from vmsift.forensics.signatures import SIGNATURES

        print(f"| `vmsift carve` call: detect, scan, decode ({len(doc['hits'])} hits, "
              f"{len(SIGNATURES)} signatures) | "
              f"{doc['seconds']:.2f} | {mib / doc['seconds']:.0f} |")
        print(f"| `vmsift carve --json` whole command | {wall:.2f} | {mib / wall:.0f} |")
        if missed:
            print(f"MISSED: {sorted(missed.items())[:10]}")
            sys.exit(1)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
