"""streamOptimized benchmark: which inflate to use, and raw export against qemu-img.

The 1 GiB source of bench_disk.py's pattern (40% unique data, half random, half text; 20%
copies; 40% never written), written by `qemu-img convert` as streamOptimized (and as
monolithicSparse, for the ratio of every subformat). Measured in one run:

* in process, every compressed grain of the file inflated with zlib, isal (`isal.isal_zlib`)
  and zlib-ng (`zlib_ng.zlib_ng`): one grain at a time as the reader does
  (``decompressobj().decompress(data, grain)``), and in batches of 64 grains over a pool of
  2 threads (all three release the GIL);
* whole processes after `sync`, best of 5 (``--runs``): `qemu-img convert -O raw` (alone, and followed by
  `sync` of its output: vmsift fsyncs before it exits, qemu-img does not) and `vmsift disk
  export`, vmsift once with its default inflate and once with zlib-ng hidden (plain zlib);
  each output is compared with the source (`cmp`).

    .venv/bin/python bench/bench_inflate.py [--workdir DIR] [--size-gib 1]

Prints Markdown tables for docs/benchmarks.md. Inflate libraries that are not installed are
reported as missing, not skipped silently.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_disk import VMSIFT, best_of, make_source  # noqa: E402

LIBS = {"zlib": "zlib", "isal": "isal.isal_zlib", "zlib-ng": "zlib_ng.zlib_ng"}
BATCH = 64
# vmsift with zlib-ng hidden: the sparse reader falls back to the standard zlib
PLAIN_ZLIB = [sys.executable, "-c",
              "import sys; sys.modules['zlib_ng'] = None\n"
              "from vmsift.cli import entry; entry()"]


def grains(image: Path) -> tuple[list[bytes], int]:
    """The compressed bytes of every grain of a streamOptimized file, and the grain size."""
    from vmsift.formats.vmdk.sparse import SECTOR, SparseExtent
    from vmsift.source import FileSource

    with FileSource(image) as src:
        ext = SparseExtent(src)
        out = []
        for _, entry, _ in ext.grain_entries(0, -(-ext.size // ext.grain_bytes)):
            if entry > 1:
                head = src.read(entry * SECTOR, 12)
                out.append(src.read(entry * SECTOR + 12, int.from_bytes(head[8:], "little")))
        return out, ext.grain_bytes


def inflate_rows(packed: list[bytes], grain: int) -> list[tuple[str, str, str]]:
    """(library, one at a time, 2 threads batched): MiB/s of inflated data, or 'missing'."""
    total = len(packed) * grain / (1 << 20)
    rows = []
    for name, module in LIBS.items():
        try:
            z = importlib.import_module(module)
        except ImportError:
            rows.append((name, "missing", "missing"))
            continue

        def batch(i: int) -> None:
            for data in packed[i:i + BATCH]:
                z.decompressobj().decompress(data, grain)

        start = time.perf_counter()
        for i in range(0, len(packed), BATCH):
            batch(i)
        inline = time.perf_counter() - start
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            start = time.perf_counter()
            list(pool.map(batch, range(0, len(packed), BATCH)))
            threaded = time.perf_counter() - start
        rows.append((name, f"{total / inline:.0f} MiB/s", f"{total / threaded:.0f} MiB/s"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--size-gib", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5, help="best of this many (default 5)")
    ap.add_argument("--baseline", type=Path, help="a checkout of an older vmsift, measured "
                    "in the same run (before/after)")
    args = ap.parse_args()
    # an installed vmsift has its bytecode compiled (see bench_datastore.py)
    for tree in (ROOT, args.baseline):
        if tree:
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "vmsift")],
                           check=True)
    before = (["env", f"PYTHONPATH={args.baseline}", *VMSIFT] if args.baseline else None)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vmsift-inflate-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "source.raw"
    if not src.exists():
        make_source(src, args.size_gib << 30)
    images = {}
    for sub in ("streamOptimized", "monolithicSparse"):
        images[sub] = work / f"{sub}.vmdk"
        if not images[sub].exists():
            subprocess.run(["qemu-img", "convert", "-O", "vmdk", "-o", f"subformat={sub}",
                            str(src), str(images[sub])], check=True)

    packed, grain = grains(images["streamOptimized"])
    print(f"{len(packed)} compressed grains of {grain} bytes, "
          f"{sum(map(len, packed)) / (1 << 20):.0f} MiB stored\n")
    print("| inflate | one grain at a time | batches of 64 over 2 threads |")
    print("|---|---:|---:|")
    for row in inflate_rows(packed, grain):
        print("| " + " | ".join(row) + " |")

    out = work / "out.raw"
    print("\n| export raw from | qemu-img s | qemu-img + sync s | vmsift s | vmsift/qemu-img "
          "| vmsift/(qemu-img + sync) | vmsift with zlib s | with zlib/qemu-img "
          "| baseline s | baseline/qemu-img |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for sub, img in images.items():
        convert = ["qemu-img", "convert", "-O", "raw", str(img), str(out)]
        q, _ = best_of(args.runs, convert, out)
        # vmsift's output is durable when it exits (fsync); qemu-img's once `sync` is done
        qs, _ = best_of(args.runs, ["sh", "-c", f"{' '.join(convert)} && sync {out}"], out)
        v, _ = best_of(args.runs, [*VMSIFT, "disk", "export", str(img), str(out)], out)
        subprocess.run(["cmp", str(out), str(src)], check=True)
        z, _ = best_of(args.runs, [*PLAIN_ZLIB, "disk", "export", str(img), str(out)], out)
        subprocess.run(["cmp", str(out), str(src)], check=True)
        b = float("nan")
        if before:
            b, _ = best_of(args.runs, [*before, "disk", "export", str(img), str(out)], out)
            subprocess.run(["cmp", str(out), str(src)], check=True)
        print(f"| {sub} | {q:.2f} | {qs:.2f} | {v:.2f} | {v / q:.2f} | {v / qs:.2f} | {z:.2f} "
              f"| {z / q:.2f} | {b:.2f} | {b / q:.2f} |")
    out.unlink()


if __name__ == "__main__":
    main()
