"""FUSE benchmark: a flattened VM disk read through `vmsift mount` vs the library's own read.

A folder datastore with one VM: a monolithicSparse base disk (qemu-img convert of a raw
file, 80% random data in 1 MiB blocks, 20% never written) and one qemu-img delta over it
with 5% of the blocks rewritten, so every read goes through a two-link chain. Measured in
one run, each figure the best of ``--repeat``:

* sequential 1 MiB reads of the whole disk: ``open_disk(...).read`` in this process
  (direct) and ``os.pread`` on ``vms/<vm>/current/<disk>.raw`` of a fresh mount (no page
  cache of the mount's own), once with the disk's host files in the host page cache
  ("hot": memory speed, where FUSE's own cost shows) and once after
  ``POSIX_FADV_DONTNEED`` on them ("cold": read from the storage, as evidence is);
* 4 KiB reads at seeded random offsets: direct, and through the mount with
  ``POSIX_FADV_RANDOM`` (what a random reader asks for) and with the default readahead;
* the same through a ``--direct-io`` mount (no page cache: each read goes to vmsift).

* a backed-up disk read through mounts of backup repositories: the flattened disk exported
  as a sparse raw file and backed up by restic (``restic mount``) and borg (``borg mount``,
  ``-e none``, zstd), and the VM backed up by vmsift (``vmsift mount -r``,
  ``snapshots/<id>/<vm>/<disk>.raw``); sequential 1 MiB and random 4 KiB reads through each,
  each tool's repository files cold (evicted) before each pass (``--no-peers`` skips this).

    .venv/bin/python bench/bench_fuse.py [--workdir DIR] [--size-mib 1024] [--repeat 3]

Prints a Markdown table for docs/benchmarks.md; the target is a sequential ratio >= 0.70.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent
VMSIFT = [sys.executable, "-m", "vmsift"]
RANDOM_READS = 4000


def run(*cmd: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    subprocess.run(cmd, check=True, capture_output=True, cwd=cwd, env=env)


def make_datastore(root: Path, size: int) -> None:
    """root/bench/: bench.vmdk (base) <- bench-000001.vmdk (delta), bench.vmx."""
    vm = root / "bench"
    if (vm / "bench.vmx").exists():
        return
    vm.mkdir(parents=True, exist_ok=True)
    rng = random.Random(20261203)
    raw = root / "base.raw"
    with open(raw, "wb") as f:
        f.truncate(size)
        for i in range(size // MiB):
            if rng.random() < 0.8:
                f.seek(i * MiB)
                f.write(rng.randbytes(MiB))
    run("qemu-img", "convert", "-O", "vmdk", "-o", "subformat=monolithicSparse", str(raw),
        str(vm / "bench.vmdk"))
    raw.unlink()
    run("qemu-img", "create", "-q", "-f", "vmdk", "-b", "bench.vmdk", "-F", "vmdk",
        "bench-000001.vmdk", cwd=vm)
    writes = [arg for i in range(size // MiB) if rng.random() < 0.05
              for arg in ("-c", f"write -P {i % 251} {i}M 1M")]
    run("qemu-io", "-f", "vmdk", *writes, "bench-000001.vmdk", cwd=vm)
    (vm / "bench.vmx").write_text('.encoding = "UTF-8"\ndisplayName = "bench"\n'
                                  'scsi0:0.present = "TRUE"\n'
                                  'scsi0:0.fileName = "bench-000001.vmdk"\n')


@contextlib.contextmanager
def mounted(datastore: Path, mnt: Path, *options: str):
    mnt.mkdir(exist_ok=True)
    subprocess.run([*VMSIFT, "mount", *options, str(datastore), str(mnt)], check=True, cwd=ROOT)
    try:
        yield mnt / "vms" / "bench" / "current" / "bench.raw"
    finally:
        subprocess.run([*VMSIFT, "umount", str(mnt)], check=True, cwd=ROOT)
        while os.path.ismount(mnt):
            time.sleep(0.05)


def drop_cache(datastore: Path) -> None:
    """Evict the datastore's host files from the page cache (only theirs)."""
    for path in datastore.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def sequential(read, size: int) -> float:
    """MB/s of reading ``size`` bytes in 1 MiB requests with ``read(offset, length)``."""
    start = time.perf_counter()
    for at in range(0, size, MiB):
        if len(read(at, MiB)) != min(MiB, size - at):
            raise SystemExit(f"short read at {at}")
    return size / (time.perf_counter() - start) / 1e6


def scattered(read, offsets: list[int]) -> float:
    """4 KiB reads per second at ``offsets``."""
    start = time.perf_counter()
    for at in offsets:
        read(at, 4096)
    return len(offsets) / (time.perf_counter() - start)


def best(n: int, measure) -> float:
    return max(measure() for _ in range(n))


def wait_for(path: Path, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the mount for {path} ended ({proc.returncode})")
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} did not appear")
        time.sleep(0.1)


@contextlib.contextmanager
def backup_mount(tool: str, repo: Path, mnt: Path, env: dict[str, str]):
    """Mount ``repo`` of ``tool`` (restic, borg, vmsift) at ``mnt``; yield the restored
    disk's path inside it."""
    mnt.mkdir(parents=True, exist_ok=True)
    proc = None
    if tool == "restic":
        proc = subprocess.Popen(["restic", "-r", str(repo), "mount", str(mnt)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        disk = next_file(mnt / "snapshots" / "latest", proc, "bench.raw")
    elif tool == "borg":
        run("borg", "mount", f"{repo}::a", str(mnt), env=env)
        disk = next_file(mnt, None, "bench.raw")
    else:
        subprocess.run([*VMSIFT, "mount", "-r", str(repo), str(mnt)], check=True, cwd=ROOT,
                       env=env)
        disk = next_file(mnt / "latest" / "bench", None, "bench.raw")
    try:
        yield disk
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        if proc is not None:
            proc.wait(30)
        while os.path.ismount(mnt):
            time.sleep(0.05)


def next_file(top: Path, proc: subprocess.Popen | None, name: str) -> Path:
    """The first file called ``name`` below ``top`` (backup tools keep the source's path)."""
    wait_for(top, proc)
    for dirpath, _, files in os.walk(top):
        if name in files:
            return Path(dirpath) / name
    raise SystemExit(f"no {name} below {top}")


def backups(work: Path, datastore: Path, size: int) -> dict[str, tuple[Path, dict[str, str]]]:
    """The disk in a restic, a borg and a vmsift repository (made once per workdir)."""
    flat = work / "flat"
    flat.mkdir(exist_ok=True)
    if not (flat / "bench.raw").exists():
        subprocess.run([*VMSIFT, "disk", "export", str(datastore / "bench" / "bench-000001.vmdk"),
                        str(flat / "bench.raw")], check=True, cwd=ROOT, capture_output=True)
    base = {**os.environ, "RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": str(work / "rcache"),
            "BORG_BASE_DIR": str(work / "bcache"),
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
            "VMSIFT_PASSWORD": "bench", "VMSIFT_CACHE_DIR": str(work / "vcache")}
    repos = {name: work / f"repo-{name}" for name in ("restic", "borg", "vmsift")}
    if not repos["restic"].exists():
        run("restic", "init", "-r", str(repos["restic"]), env=base)
        run("restic", "-r", str(repos["restic"]), "backup", "bench.raw", cwd=flat, env=base)
    if not repos["borg"].exists():
        run("borg", "init", "-e", "none", str(repos["borg"]), env=base)
        run("borg", "create", "--compression", "zstd,3", f"{repos['borg']}::a", "bench.raw",
            cwd=flat, env=base)
    if not repos["vmsift"].exists():
        subprocess.run([*VMSIFT, "init", "-r", str(repos["vmsift"]), "--encryption", "none"],
                       check=True, cwd=ROOT, env=base, capture_output=True)
        subprocess.run([*VMSIFT, "backup", "-r", str(repos["vmsift"]), str(datastore / "bench")],
                       check=True, cwd=ROOT, env=base, capture_output=True)
    return {name: (repo, base) for name, repo in repos.items()}


def peer_mounts(work: Path, datastore: Path, size: int, offsets: list[int],
                repeat: int) -> list[str]:
    rows = []
    for tool, (repo, env) in backups(work, datastore, size).items():
        def measure(fn) -> float:
            with backup_mount(tool, repo, work / f"mnt-{tool}", env) as path:
                drop_cache(repo)
                fd = os.open(path, os.O_RDONLY)
                try:
                    return fn(lambda at, n: os.pread(fd, n, at))
                finally:
                    os.close(fd)

        seq = best(repeat, lambda: measure(lambda r: sequential(r, size)))
        rand = best(repeat, lambda: measure(lambda r: scattered(r, offsets)))
        rows.append(f"| {tool} | {seq:.0f} MB/s | {rand:.0f} reads/s |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-peers", action="store_true",
                        help="skip the restic / borg / vmsift backup-repository mounts")
    parser.add_argument("--only-peers", action="store_true",
                        help="only the backup-repository mounts")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vmsift-bench-fuse-"))
    size = args.size_mib * MiB
    datastore = work / "datastore"
    make_datastore(datastore, size)
    sys.path.insert(0, str(ROOT))
    from vmsift.datastore.disk import open_disk
    from vmsift.datastore.folder import FolderVolume

    rng = random.Random(7)
    offsets = [rng.randrange(size // 4096) * 4096 for _ in range(RANDOM_READS)]
    if not args.no_peers:
        rows = peer_mounts(work, datastore, size, offsets, args.repeat)
        print(f"| {args.size_mib} MiB backed-up disk, through the tool's mount | sequential "
              f"1 MiB reads, repository cold | random 4 KiB reads |")
        print("|---|---|---|")
        print("\n".join(rows))
        print()
    if args.only_peers:
        return
    volume = FolderVolume(str(datastore))
    with open_disk(volume, "bench/bench-000001.vmdk") as disk:
        sequential(disk.read, size)  # warm the host page cache for both sides
        direct_seq = best(args.repeat, lambda: sequential(disk.read, size))

        def cold_direct() -> float:
            drop_cache(datastore)
            return sequential(disk.read, size)

        direct_cold = best(args.repeat, cold_direct)
        direct_rand = best(args.repeat, lambda: scattered(disk.read, offsets))

    def through_mount(measure, advice: int | None = None, cold: bool = False,
                      options: tuple[str, ...] = ()) -> float:
        with mounted(datastore, work / "mnt", *options) as path:
            if cold:
                drop_cache(datastore)
            fd = os.open(path, os.O_RDONLY)
            try:
                if advice is not None:
                    os.posix_fadvise(fd, 0, 0, advice)
                return measure(lambda at, n: os.pread(fd, n, at))
            finally:
                os.close(fd)

    mount_seq = best(args.repeat, lambda: through_mount(lambda r: sequential(r, size)))
    mount_cold = best(args.repeat, lambda: through_mount(lambda r: sequential(r, size),
                                                         cold=True))
    direct_io = ("--direct-io",)
    dio_seq = best(args.repeat, lambda: through_mount(lambda r: sequential(r, size),
                                                      options=direct_io))
    dio_cold = best(args.repeat, lambda: through_mount(lambda r: sequential(r, size),
                                                       cold=True, options=direct_io))
    dio_rand = best(args.repeat, lambda: through_mount(lambda r: scattered(r, offsets),
                                                       options=direct_io))
    mount_rand = best(args.repeat, lambda: through_mount(lambda r: scattered(r, offsets),
                                                         os.POSIX_FADV_RANDOM))
    mount_rand_ra = best(args.repeat, lambda: through_mount(lambda r: scattered(r, offsets)))
    print(f"| read of a {args.size_mib} MiB flattened disk (2-link chain) | direct "
          f"(open_disk) | through the mount | ratio |")
    print("|---|---|---|---|")
    print(f"| sequential, 1 MiB reads, host files cold | {direct_cold:.0f} MB/s | "
          f"{mount_cold:.0f} MB/s | {mount_cold / direct_cold:.2f} |")
    print(f"| sequential, 1 MiB reads, host files hot | {direct_seq:.0f} MB/s | "
          f"{mount_seq:.0f} MB/s | {mount_seq / direct_seq:.2f} |")
    print(f"| sequential, 1 MiB reads, cold, `--direct-io` | {direct_cold:.0f} MB/s | "
          f"{dio_cold:.0f} MB/s | {dio_cold / direct_cold:.2f} |")
    print(f"| sequential, 1 MiB reads, hot, `--direct-io` | {direct_seq:.0f} MB/s | "
          f"{dio_seq:.0f} MB/s | {dio_seq / direct_seq:.2f} |")
    print(f"| random 4 KiB reads, `--direct-io` | {direct_rand:.0f} reads/s | "
          f"{dio_rand:.0f} reads/s | {dio_rand / direct_rand:.2f} |")
    print(f"| random 4 KiB reads, POSIX_FADV_RANDOM | {direct_rand:.0f} reads/s | "
          f"{mount_rand:.0f} reads/s | {mount_rand / direct_rand:.2f} |")
    print(f"| random 4 KiB reads, default readahead | {direct_rand:.0f} reads/s | "
          f"{mount_rand_ra:.0f} reads/s | {mount_rand_ra / direct_rand:.2f} |")


if __name__ == "__main__":
    main()
