"""Which cell size should a repository use? Measures vmsift's backup engine at several cell
sizes on the backup benchmark's workload (bench_backup.py: 40% random data, 20% copies of
earlier 1 MiB-aligned blocks, 40% never written; then 5% of the disk changed by scattered
64 KiB writes), through the library, in one run:

* first backup: seconds, MiB/s of the data present, repository bytes, blobs (index rows);
* incremental after the changes: seconds, repository growth, growth / changed bytes;
* the local index cache's size.

    python3 bench/bench_cell_size.py [--size 2G] [--cells 64K,128K,256K,1M,4M] [--workdir DIR]

The disk is smaller than bench_backup's 8 GiB by default (the ratios do not depend on it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_backup import Layout, apply_changes, fill, parse_size, write_vm_folder  # noqa: E402

MiB = 1 << 20


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(cell: int, vm: Path, flat: Path, layout: Layout, work: Path) -> dict:
    from vmsift.backup.archiver import backup
    from vmsift.backup.repository import Repository

    repo_dir, cache = work / f"repo-{cell}", work / f"cache-{cell}"
    os.environ["VMSIFT_CACHE_DIR"] = str(cache)
    repo = Repository.init(str(repo_dir), encryption="repokey", password=b"bench",
                           cell_size=cell)
    try:
        started = time.monotonic()
        backup(repo, [str(vm)])
        first = time.monotonic() - started
        size1 = du(repo_dir)
        blobs = repo.index.count()[0]
        changed = apply_changes(flat, layout)
        started = time.monotonic()
        backup(repo, [str(vm)])
        second = time.monotonic() - started
        growth = du(repo_dir) - size1
    finally:
        repo.close()
    return {"cell": cell, "first_s": first, "first_mibs": layout.present / MiB / first,
            "repo": size1, "blobs": blobs, "incr_s": second, "growth": growth,
            "ratio": growth / changed, "index": du(cache)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="2G")
    ap.add_argument("--cells", default="64K,128K,256K,1M,4M")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="vmsift-cells-", dir=args.workdir or "/var/tmp"))
    rows = []
    try:
        for cell in [parse_size(c) for c in args.cells.split(",")]:
            vm = work / "vm"
            shutil.rmtree(vm, ignore_errors=True)
            layout = Layout.make(size)
            flat = write_vm_folder(vm, size, "cells")
            fill(flat, layout)
            rows.append(measure(cell, vm, flat, layout, work))
            r = rows[-1]
            print(f"cell {r['cell'] // 1024:>5} KiB: first {r['first_s']:6.2f} s "
                  f"({r['first_mibs']:6.0f} MiB/s), repo {r['repo'] / MiB:8.1f} MiB, "
                  f"{r['blobs']:>7} blobs, index cache {r['index'] / MiB:6.1f} MiB; "
                  f"incremental {r['incr_s']:6.2f} s, growth {r['growth'] / MiB:7.1f} MiB "
                  f"= {r['ratio']:5.2f}x the changed bytes", flush=True)
            shutil.rmtree(work / f"repo-{cell}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n| cell | first backup | MiB/s | repository | blobs | index cache | incremental |"
          " growth | growth / changed |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['cell'] // 1024} KiB | {r['first_s']:.2f} s | {r['first_mibs']:.0f} | "
              f"{r['repo'] / MiB:.0f} MiB | {r['blobs']} | {r['index'] / MiB:.1f} MiB | "
              f"{r['incr_s']:.2f} s | {r['growth'] / MiB:.1f} MiB | {r['ratio']:.2f}x |")


if __name__ == "__main__":
    main()
