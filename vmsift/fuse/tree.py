"""A generic read-only file tree for FUSE mounts, filled by views (`vmsift.fuse.views`).

A tree is made of `Dir`, `File` and `Symlink` nodes. A `Dir` holds named children, given at
once or made on first use by its ``fill`` callable (a folder of a 2 TiB datastore is only
read when someone looks into it). A `File` is backed by an ``opener`` that returns a
`ByteSource`; its allocation map gives ``st_blocks`` unless the view knows them. Every node
has `Attrs` (permissions, times, link count) and extended attributes, whose values may be
callables computed when asked. `Tree` hands out inode numbers as nodes are first reached.

Nothing here knows about FUSE or VMs: the adapter (`vmsift.fuse.ops`) reads the tree, the
views build it. Fills and openers may be slow (they read the source): the adapter runs them
in worker threads, so filling is guarded by a lock per folder.
"""

from __future__ import annotations

import itertools
import stat as stat_mod
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..source import ByteSource

XattrValue = bytes | str | Callable[[], bytes | str]


@dataclass
class Attrs:
    """What ``stat`` shows of a node; ``None`` owner means the mounting user, ``None``
    blocks means "from the allocation map" for files."""

    perm: int = 0o444
    nlink: int = 1
    uid: int | None = None
    gid: int | None = None
    atime: float = 0.0
    mtime: float = 0.0
    ctime: float = 0.0
    blocks: int | None = None


class Node:
    """One entry of the tree."""

    type_bits = 0

    def __init__(self, attrs: Attrs | None = None,
                 xattrs: dict[str, XattrValue] | None = None):
        self.attrs = attrs or Attrs()
        self.xattrs: dict[str, XattrValue] = dict(xattrs or {})
        self.inode: int | None = None

    @property
    def mode(self) -> int:
        return self.type_bits | (self.attrs.perm & 0o7777)

    @property
    def size(self) -> int:
        return 0

    def xattr(self, name: str) -> bytes | None:
        """The value of extended attribute ``name`` (computed now if it is a callable)."""
        value = self.xattrs.get(name)
        if callable(value):
            value = value()
        return value.encode() if isinstance(value, str) else value


class Dir(Node):
    """A folder; ``fill()`` yields its (name, node) pairs once, when first needed. ``size``
    is what stat shows (a volume's own figure for its folder)."""

    type_bits = stat_mod.S_IFDIR

    def __init__(self, fill: Callable[[], Iterable[tuple[str, Node]]] | None = None,
                 attrs: Attrs | None = None, xattrs: dict[str, XattrValue] | None = None,
                 size: int = 0):
        super().__init__(attrs or Attrs(0o555, 2), xattrs)
        self._size = size
        self._fill = fill
        self._children: dict[str, Node] | None = None if fill else {}
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._size

    @property
    def filled(self) -> bool:
        return self._children is not None

    def add(self, name: str, node: Node) -> Node:
        """Add a child made by the view; a name given twice is an error in the view."""
        children = self.children()
        if name in children or not name or "/" in name or name in (".", ".."):
            raise ValueError(f"bad or duplicate name {name!r}")
        children[name] = node
        return node

    def children(self) -> dict[str, Node]:
        """Name -> node, filled on first use (the fill may read the source)."""
        if self._children is None:
            with self._lock:
                if self._children is None:
                    made: dict[str, Node] = {}
                    for name, node in self._fill():
                        made[unique_name(made, name)] = node
                    self._children = made
        return self._children


def unique_name(taken: dict[str, Node] | set[str], name: str) -> str:
    """``name`` made safe for a folder (no ``/`` or NUL) and unique in it (`` (2)`` ...)."""
    name = name.replace("/", "_").replace("\0", "_") or "_"
    if name in (".", ".."):
        name = name.replace(".", "_")
    candidate = name
    for n in itertools.count(2):
        if candidate not in taken:
            return candidate
        candidate = f"{name} ({n})"
    raise AssertionError("unreachable")


class File(Node):
    """A regular file of ``size`` bytes whose contents ``opener()`` opens."""

    type_bits = stat_mod.S_IFREG

    def __init__(self, opener: Callable[[], ByteSource], size: int,
                 attrs: Attrs | None = None, xattrs: dict[str, XattrValue] | None = None):
        super().__init__(attrs, xattrs)
        self.opener = opener
        self._size = size

    @property
    def size(self) -> int:
        return self._size


class Symlink(Node):
    type_bits = stat_mod.S_IFLNK

    def __init__(self, target: str, attrs: Attrs | None = None,
                 xattrs: dict[str, XattrValue] | None = None):
        super().__init__(attrs or Attrs(0o777), xattrs)
        self.target = target

    @property
    def size(self) -> int:
        return len(self.target.encode())


class Tree:
    """The root folder and the inode table: a node gets its number when first reached."""

    ROOT_INODE = 1

    def __init__(self, root: Dir, name: str = "vmsift"):
        self.root = root
        self.name = name
        self._nodes: dict[int, Node] = {}
        self._next = itertools.count(self.ROOT_INODE)
        self._parents: dict[int, Dir] = {}
        self._lock = threading.Lock()
        self.number(root)

    def number(self, node: Node, parent: Dir | None = None) -> int:
        """The inode number of ``node`` (a child of ``parent``), given now if it has none."""
        if node.inode is None:
            with self._lock:
                if node.inode is None:
                    node.inode = next(self._next)
                    self._nodes[node.inode] = node
                    self._parents[node.inode] = parent or self.root
        return node.inode

    def node(self, inode: int) -> Node:
        """The node numbered ``inode`` (KeyError if none was handed out)."""
        return self._nodes[inode]

    def parent(self, inode: int) -> Dir:
        """The folder that holds ``inode`` (the root for the root)."""
        return self._parents[inode]

    def path(self, node: Node) -> str:
        """The path of ``node`` from the root, for messages ("/" for the root)."""
        names = []
        while node is not self.root and node.inode is not None:
            parent = self._parents[node.inode]
            names.append(next((n for n, c in parent.children().items() if c is node), "?"))
            node = parent
        return "/" + "/".join(reversed(names))

    def __len__(self) -> int:
        return len(self._nodes)
