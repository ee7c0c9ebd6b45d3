"""The pyfuse3 adapter: a `Tree` served read-only to the kernel. It knows nothing of VMs.

* Every request that would change something (write, create, setattr, mkdir, unlink, rename,
  setxattr ...) answers ``EROFS``; the mount is also made ``ro``.
* Folder fills, file opens, allocation maps and reads run in trio's worker threads (at most
  `WORKERS` at once, handed over with less ceremony than ``trio.to_thread``), so a slow
  source never stalls other readers. Nothing serialises reads: several requests for one
  file (the kernel's read-ahead keeps a few in flight) and for different files run at once,
  as the backup's readers do.
* A read is the source's own: every vmsift source answers its HOLE and ZERO runs from its
  map without reading storage. Reads smaller than `CACHE_BLOCK` are served from a bounded
  cache of recently read aligned blocks; larger ones go straight to the source (the
  kernel's page cache keeps them).
* The kernel is let read ahead `READAHEAD` (4 MiB) so that sequential readers send 1 MiB
  (`MAX_READ`) requests, several at once; with ``direct_io`` the page cache is bypassed and
  requests are as the reader asks (up to 1 MiB).
* A source that fails (damage, missing data) answers ``EIO`` (or the error's own errno, see
  `errno_of`), with one warning line on stderr per file naming it and the offset; the mount
  stays up, also when the failure is a bug (any exception).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pyfuse3
import trio

from ..cache import LruCache
from ..errors import SourceError, VmsiftError
from ..source import ByteSource, clip
from .tree import Dir, File, Node, Symlink, Tree

MAX_READ = 1 << 20          # largest read request asked of the kernel
READAHEAD = 4 << 20         # kernel read-ahead on the mount: several requests in flight
CACHE_BLOCK = 128 << 10     # reads below this size go through the block cache
CACHE_BYTES = 64 << 20      # memory the block cache may hold
WORKERS = 8                 # source operations running at once
TIMEOUT = 3600.0            # the tree never changes: the kernel may keep what it learnt
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT


def errno_of(e: BaseException) -> int:
    """The errno a failure answers with: a vmsift error's own (from its kind), EIO for
    anything else (a bug)."""
    return e.errno if isinstance(e, VmsiftError) else errno.EIO


async def in_thread(limiter: trio.CapacityLimiter, fn: Callable[..., Any], *args) -> Any:
    """``fn(*args)`` run in one of trio's cached threads, at most ``limiter``'s count at once.

    A leaner hand-off than ``trio.to_thread.run_sync`` (no context copy, no
    ``trio.from_thread`` support; not cancellable, which pyfuse3 never asks: it does not pass
    on the kernel's INTERRUPT): a round trip costs 90 instead of 130 µs here, and every
    1 MiB read request pays one."""
    async with limiter:
        task = trio.lowlevel.current_task()
        token = trio.lowlevel.current_trio_token()

        def deliver(result: Any) -> None:  # an outcome.Value or outcome.Error
            token.run_sync_soon(trio.lowlevel.reschedule, task, result)

        trio.lowlevel.start_thread_soon(lambda: fn(*args), deliver)  # captures fn's outcome
        return await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)


class OpenSource:
    """A file's source, shared by all handles open on it (sources may be read from several
    threads at once, as the backup's readers do)."""

    def __init__(self, source: ByteSource):
        self.source = source
        self.users = 0


class TreeOps(pyfuse3.Operations):
    """pyfuse3 operations serving ``tree`` read-only."""

    supports_dot_lookup = True

    def __init__(self, tree: Tree, *, workers: int = WORKERS, direct_io: bool = False):
        super().__init__()
        self.tree = tree
        self.direct_io = direct_io
        self.uid, self.gid = os.getuid(), os.getgid()
        self.cache = LruCache(CACHE_BYTES, len)  # (inode, block index) -> bytes
        self._limiter = trio.CapacityLimiter(workers)
        self._open: dict[int, OpenSource] = {}      # inode -> its open source
        self._handles: dict[int, File] = {}         # fh -> node
        self._next_fh = 1
        self._open_lock = threading.Lock()
        self._warned: set[int] = set()

    # -- helpers ----------------------------------------------------------------------
    async def _work(self, fn: Callable[..., Any], *args) -> Any:
        """Run ``fn(*args)`` in a worker thread; a vmsift error becomes its errno."""
        return await in_thread(self._limiter, self._guarded, fn, *args)

    def _guarded(self, fn: Callable[..., Any], *args) -> Any:
        try:
            return fn(*args)
        except pyfuse3.FUSEError:
            raise
        except Exception as e:  # noqa: BLE001  (a bug must not end pyfuse3's loop)
            if not isinstance(e, VmsiftError):
                print(f"vmsift: warning: {_describe(e)}", file=sys.stderr, flush=True)
            raise pyfuse3.FUSEError(errno_of(e)) from None

    def _children(self, folder: Dir) -> dict[str, Node]:
        """The folder's children, filled now if need be; a failure is warned of once."""
        try:
            return folder.children()
        except VmsiftError as e:
            self._warn(folder, 0, e)
            raise

    def _node(self, inode: int) -> Node:
        try:
            return self.tree.node(inode)
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    def _warn(self, node: Node, offset: int, e: BaseException) -> None:
        """One line on stderr for the first failure of a file or folder."""
        if node.inode in self._warned:
            return
        self._warned.add(node.inode)
        print(f"vmsift: warning: {self.tree.path(node)} @ {offset:#x}: {_describe(e)} (answered "
              f"{errno.errorcode.get(errno_of(e), 'EIO')}; further errors of this file are "
              f"not shown)", file=sys.stderr, flush=True)

    def _blocks(self, node: File) -> int:
        """512-byte blocks of ``node``: the view's figure or its DATA runs (computed once)."""
        if node.attrs.blocks is None:
            try:
                with node.opener() as src:
                    stored = src.stored_bytes()
            except VmsiftError:
                stored = 0  # unreadable: it holds nothing we can give
            node.attrs.blocks = (stored + 511) // 512
        return node.attrs.blocks

    def _entry(self, node: Node, parent: Dir | None = None) -> pyfuse3.EntryAttributes:
        """The attributes of ``node`` (may open it for its allocation map)."""
        a = node.attrs
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = self.tree.number(node, parent)
        entry.generation = 0
        entry.entry_timeout = entry.attr_timeout = TIMEOUT
        entry.st_mode = node.mode
        entry.st_nlink = a.nlink
        entry.st_uid = self.uid if a.uid is None else a.uid
        entry.st_gid = self.gid if a.gid is None else a.gid
        entry.st_rdev = 0
        entry.st_size = node.size
        entry.st_blksize = MAX_READ
        entry.st_blocks = self._blocks(node) if isinstance(node, File) else (a.blocks or 0)
        entry.st_atime_ns = int(a.atime * 1e9)
        entry.st_mtime_ns = int(a.mtime * 1e9)
        entry.st_ctime_ns = int(a.ctime * 1e9)
        return entry

    @staticmethod
    def _cheap(node: Node) -> bool:
        """True when the attributes of ``node`` need no source access."""
        return not isinstance(node, File) or node.attrs.blocks is not None

    async def _attributes(self, node: Node, parent: Dir | None = None):
        if self._cheap(node):
            return self._entry(node, parent)
        return await self._work(self._entry, node, parent)

    # -- lookups and listings ------------------------------------------------------------
    async def lookup(self, parent_inode, name, ctx=None):
        parent = self._node(parent_inode)
        if not isinstance(parent, Dir):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        text = os.fsdecode(name)
        if text == ".":
            return await self._attributes(parent)
        if text == "..":
            return await self._attributes(self.tree.parent(parent_inode))
        children = parent.children() if parent.filled else await self._work(self._children,
                                                                             parent)
        node = children.get(text)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return await self._attributes(node, parent)

    async def getattr(self, inode, ctx=None):
        return await self._attributes(self._node(inode))

    async def readlink(self, inode, ctx):
        node = self._node(inode)
        if not isinstance(node, Symlink):
            raise pyfuse3.FUSEError(errno.EINVAL)
        return os.fsencode(node.target)

    async def opendir(self, inode, ctx):
        node = self._node(inode)
        if not isinstance(node, Dir):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh, start_id, token):
        folder = self._node(fh)
        children = folder.children() if folder.filled else await self._work(self._children,
                                                                             folder)
        items = list(children.items())[start_id:]
        if not all(self._cheap(node) for _, node in items):
            await self._work(lambda: [self._blocks(n) for _, n in items if isinstance(n, File)])
        for i, (name, node) in enumerate(items, start_id + 1):
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._entry(node, folder), i):
                break

    async def releasedir(self, fh):
        pass

    async def statfs(self, ctx):
        st = pyfuse3.StatvfsData()
        st.f_bsize = st.f_frsize = 512
        st.f_blocks = st.f_bfree = st.f_bavail = 0
        st.f_files = len(self.tree)
        st.f_ffree = st.f_favail = 0
        st.f_namemax = 255
        return st

    # -- extended attributes --------------------------------------------------------------
    async def listxattr(self, inode, ctx):
        return [name.encode() for name in self._node(inode).xattrs]

    async def getxattr(self, inode, name, ctx):
        node = self._node(inode)
        key = os.fsdecode(name)
        if key not in node.xattrs:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        value = node.xattrs[key]
        return await self._work(node.xattr, key) if callable(value) else node.xattr(key)

    # -- reading ----------------------------------------------------------------------------
    async def open(self, inode, flags, ctx):
        node = self._node(inode)
        if flags & _WRITE_FLAGS:
            raise pyfuse3.FUSEError(errno.EROFS)
        if not isinstance(node, File):
            raise pyfuse3.FUSEError(errno.EISDIR if isinstance(node, Dir) else errno.EINVAL)
        await self._work(self._acquire, node)
        with self._open_lock:
            fh, self._next_fh = self._next_fh, self._next_fh + 1
            self._handles[fh] = node
        return pyfuse3.FileInfo(fh=fh, direct_io=self.direct_io, keep_cache=not self.direct_io)

    def _acquire(self, node: File) -> None:
        with self._open_lock:
            shared = self._open.get(node.inode)
            if shared is not None:
                shared.users += 1
                return
        try:
            source = node.opener()
        except Exception as e:  # noqa: BLE001  (as for reads)
            self._warn(node, 0, e)
            raise pyfuse3.FUSEError(errno_of(e)) from None
        with self._open_lock:
            shared = self._open.setdefault(node.inode, OpenSource(source))
            shared.users += 1
        if shared.source is not source:  # another thread opened it meanwhile
            source.close()

    async def release(self, fh):
        with self._open_lock:
            node = self._handles.pop(fh, None)
            if node is None:
                return
            shared = self._open[node.inode]
            shared.users -= 1
            if shared.users:
                return
            del self._open[node.inode]
        await self._work(shared.source.close)

    async def flush(self, fh):
        pass

    async def fsync(self, fh, datasync):
        pass

    async def read(self, fh, off, size):
        node = self._handles.get(fh)
        if node is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        return await in_thread(self._limiter, self._read, node, off, size)

    def _read(self, node: File, offset: int, length: int) -> bytes:
        src = self._open[node.inode].source
        start, end = clip(src.size, offset, length)
        try:
            return self._data(node.inode, src, start, end - start) if end > start else b""
        except Exception as e:  # noqa: BLE001  (damage or a bug: the read fails, not the mount)
            self._warn(node, offset, e)
            raise pyfuse3.FUSEError(errno_of(e)) from None

    def _data(self, inode: int, src: ByteSource, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset``; small reads through the cache."""
        if length >= CACHE_BLOCK:
            return src.read_exact(offset, length)
        first, last = offset // CACHE_BLOCK, (offset + length - 1) // CACHE_BLOCK
        blocks = []
        for index in range(first, last + 1):
            block = self.cache.get((inode, index))
            if block is None:
                at = index * CACHE_BLOCK
                try:
                    block = src.read_exact(at, min(CACHE_BLOCK, src.size - at))
                except VmsiftError:  # damage near, not in, the asked range: read just that
                    return src.read_exact(offset, length)
                self.cache.put((inode, index), block)
            blocks.append(block)
        joined = blocks[0] if len(blocks) == 1 else b"".join(blocks)
        skip = offset - first * CACHE_BLOCK
        return joined[skip:skip + length]

    # -- everything that would write ------------------------------------------------------
    async def _read_only(self, *args, **kwargs):
        raise pyfuse3.FUSEError(errno.EROFS)

    setattr = mknod = mkdir = unlink = rmdir = symlink = rename = link = _read_only
    write = create = setxattr = removexattr = fallocate = _read_only


def _describe(e: BaseException) -> str:
    """A failure in one line: a vmsift error as it renders, anything else as the bug it is."""
    if isinstance(e, VmsiftError):
        return str(e)
    return f"internal error {type(e).__name__}: {e} (a bug in vmsift; please report it)"


def mount(tree: Tree, mountpoint: str, *, foreground: bool = False,
          allow_other: bool = False, direct_io: bool = False) -> None:
    """Mount ``tree`` read-only at ``mountpoint`` and serve it until unmounted or signalled
    (SIGTERM, SIGINT, SIGHUP unmount cleanly).

    ``direct_io`` bypasses the kernel's page cache: each read goes to the tree as asked
    (about twice the throughput of large sequential reads), small-block readers pay a
    round trip per block (the block cache softens that) and files cannot be mmap'ed.

    Without ``foreground`` the calling process exits (status 0) as soon as the mount is
    usable and a child serves it. Only the mounting user may enter the mount unless
    ``allow_other``.
    """
    if not os.path.isdir(mountpoint):
        raise SourceError("not a folder (or a dead mount: run vmsift umount on it)",
                          source=mountpoint)
    options = set(pyfuse3.default_options) | {
        f"fsname={tree.name}", "subtype=vmsift", "ro"}
    if allow_other:
        options.add("allow_other")
    ops = TreeOps(tree, direct_io=direct_io)
    target = os.path.realpath(mountpoint)  # not after mounting: that would wait on us
    try:
        pyfuse3.init(ops, mountpoint, options)
    except RuntimeError as e:
        raise SourceError(f"cannot mount ({e}; is /dev/fuse there, and fusermount3?)",
                          source=mountpoint) from None
    device = _device(target)
    if not foreground:
        _detach(lambda: _widen_readahead(target, device))
    try:
        trio.run(_serve, None if not foreground else lambda: _widen_readahead(target, device))
    finally:
        pyfuse3.close(unmount=True)


def _device(target: str) -> str | None:
    """The ``major:minor`` of the mount at ``target`` (from mountinfo: no request to it)."""
    with open("/proc/self/mountinfo") as f:
        devices = [line.split()[2] for line in f
                   if line.split()[4].replace("\\040", " ") == target]
    return devices[-1] if devices else None


def _widen_readahead(target: str, device: str | None) -> None:
    """Let the kernel read ahead `READAHEAD` bytes on the mount (its default, 128 KiB, caps
    each read request at that; more than `MAX_READ` keeps several requests in flight). Set
    once the kernel's INIT is answered (the answer would lower it again), which the
    ``statvfs`` waits for; needs root, else the default stays."""
    try:
        os.statvfs(target)
        if device:
            with open(f"/sys/class/bdi/{device}/read_ahead_kb", "w") as f:
                f.write(str(READAHEAD >> 10))
    except OSError:
        pass


def _detach(when_served: Callable[[], None]) -> None:
    """Fork: the child goes on to serve the mount; the parent runs ``when_served`` (which
    waits for the child's first answer) and exits. The child keeps stderr only when it is
    a terminal (a pipe would never close)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork():
        when_served()
        os._exit(0)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    if not os.isatty(2):
        os.dup2(null, 2)
    os.close(null)


async def _serve(when_serving: Callable[[], None] | None) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal)
        if when_serving:
            nursery.start_soon(trio.to_thread.run_sync, when_serving)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


async def _stop_on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for _ in signals:
            pyfuse3.terminate()
            return


def unmount(mountpoint: str) -> bool:
    """Unmount a vmsift (or any FUSE) mount with ``fusermount3 -u``. Returns True when the
    mount was dead (its serving process had ended) and has been cleaned up."""
    try:
        os.statvfs(mountpoint)  # asks the serving process (a stat may be answered by cache)
        dead = False
    except OSError as e:
        if e.errno != errno.ENOTCONN:
            raise SourceError(f"cannot unmount: {e.strerror}", source=mountpoint) from None
        dead = True
    if not dead and not os.path.ismount(mountpoint):
        raise SourceError("not a mount point", source=mountpoint)
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool is None:
        raise SourceError("cannot unmount: fusermount3 is not installed", source=mountpoint)
    done = subprocess.run([tool, "-u", mountpoint], capture_output=True, text=True, check=False)
    if done.returncode:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        raise SourceError(f"cannot unmount: {reason}", source=mountpoint)
    return dead
