"""The ceiling of a pyfuse3 file system: what a 1 MiB sequential read through FUSE costs when
the file system does no work at all.

One read-only file of ``--size-mib`` whose ``read`` returns one prebuilt 1 MiB buffer (no
source, no copy), mounted four ways: the reply made on the trio loop or in a worker thread
(with the adapter's own hand-off, `vmsift.fuse.ops.in_thread`, as vmsift does so that a slow
source never stalls other readers), each with the kernel's page cache (readahead raised as
vmsift does) and with ``direct_io``. The reader is ``os.pread`` of 1 MiB in a fresh process,
its page cache of the mount dropped before each pass; best of 3. Compare with the direct read of
`bench_fuse.py`: no FUSE file system in Python can be faster than these figures.

    .venv/bin/python bench/bench_fuse_ceiling.py [--size-mib 1024]     (as root, for readahead)
"""

from __future__ import annotations

import argparse
import errno
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
MiB = 1 << 20
MODES = {"trio loop": (False, False), "worker thread": (True, False),
         "trio loop, direct_io": (False, True), "worker thread, direct_io": (True, True)}


def serve(mountpoint: str, size: int, in_thread_mode: bool, direct_io: bool) -> None:
    import pyfuse3
    import trio

    block = bytes(MiB)

    class Ops(pyfuse3.Operations):
        async def getattr(self, inode, ctx=None):
            attr = pyfuse3.EntryAttributes()
            if inode == pyfuse3.ROOT_INODE:
                attr.st_mode = stat.S_IFDIR | 0o755
            elif inode == 2:
                attr.st_mode, attr.st_size = stat.S_IFREG | 0o444, size
            else:
                raise pyfuse3.FUSEError(errno.ENOENT)
            attr.st_ino, attr.entry_timeout, attr.attr_timeout = inode, 300, 300
            return attr

        async def statfs(self, ctx):
            return pyfuse3.StatvfsData()

        async def lookup(self, parent, name, ctx=None):
            if name != b"f":
                raise pyfuse3.FUSEError(errno.ENOENT)
            return await self.getattr(2)

        async def open(self, inode, flags, ctx):
            return pyfuse3.FileInfo(fh=inode, direct_io=direct_io)

        async def read(self, fh, off, length):
            n = min(length, size - off)
            if in_thread_mode:
                return await in_thread(limiter, lambda: block if n == MiB else block[:n])
            return block if n == MiB else block[:n]

    from vmsift.fuse.ops import WORKERS, _device, _widen_readahead, in_thread  # vmsift's own

    limiter = trio.CapacityLimiter(WORKERS)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, _widen_readahead, mountpoint, device)
            await pyfuse3.main()

    pyfuse3.init(Ops(), mountpoint, set(pyfuse3.default_options) | {"ro", "fsname=ceiling"})
    device = _device(mountpoint)
    try:
        trio.run(main)
    finally:
        pyfuse3.close(unmount=True)


def read_all(path: str) -> float:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        started, pos = time.perf_counter(), 0
        while block := os.pread(fd, MiB, pos):
            pos += len(block)
        return pos / (time.perf_counter() - started) / 1e6
    finally:
        os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)  # mountpoint thread direct
    args = ap.parse_args()
    size = args.size_mib * MiB
    if args.serve:
        mnt, in_thread, direct = args.serve
        serve(mnt, size, in_thread == "1", direct == "1")
        return
    print("| 1 MiB sequential reads of a file whose read handler does nothing | MB/s |")
    print("|---|---:|")
    for label, (in_thread, direct) in MODES.items():
        with tempfile.TemporaryDirectory() as mnt:
            server = subprocess.Popen([sys.executable, __file__, "--size-mib", str(args.size_mib),
                                       "--serve", mnt, str(int(in_thread)), str(int(direct))])
            try:
                for _ in range(100):
                    if os.path.exists(os.path.join(mnt, "f")):
                        break
                    time.sleep(0.05)
                time.sleep(0.2)  # the readahead is raised after the first answer
                best = max(read_all(os.path.join(mnt, "f")) for _ in range(3))
                print(f"| {label} | {best:.0f} |")
            finally:
                subprocess.run(["fusermount3", "-u", mnt], check=False)
                server.wait(timeout=30)


if __name__ == "__main__":
    main()
