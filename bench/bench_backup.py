"""Backup benchmark: vmsift's backup engine vs restic and borg, all measured in one run.

The workload is a VMware VM folder, ``vm/``: ``vm.vmx``, a monolithicFlat descriptor
``disk.vmdk`` and its flat extent ``disk-flat.vmdk``, a sparse file of ``--size`` (8 GiB by
default) laid out in 1 MiB blocks chosen at random from a seed: 40% random data, 20% copies of
earlier data blocks, 40% never written (holes in the host file). Each tool, in a repository of
its own, then:

1. backs the folder up (wall time, MiB/s of the logical size and of the data present, peak
   RSS from ``/usr/bin/time -v``, repository size with ``du -sb``; the size against the unique
   data shows how much of the copied blocks was deduplicated);
2. backs it up again with nothing changed (restic and borg skip the files their files
   caches know; vmsift's ``identity`` hint), then after 5% of the disk was changed by
   scattered 64 KiB writes (time, repository growth against the changed bytes);
3. restores the second backup (time, MiB/s, whether the output is sparse, and whether the
   restored flat extent has the source's sha256).

vmsift also (4) backs the disk up again with VMware change tracking beside it (a
``-ctk.vmdk`` that marks the same changed blocks: the ``ctk`` hint reads only them; restic and
borg have no change hints, so their incremental of step 2 is the peer figure), (5) backs it
up again after a snapshot: a delta made by ``qemu-img create -b`` takes the same changes
(written by ``qemu-io``) and the ``chain`` hint reads only its grains, and (6) makes
the first backup and the restore through its S3 backend into moto's S3 server on 127.0.0.1
(``--no-s3`` skips it; run the script with the venv's python, which has boto3 and moto).

The disk is put back as it was before the next tool runs, so every tool sees the same bytes.
Then each tool backs up a never-written thin disk (``--thin-size``, 50 GiB: one hole), and
vmsift alone a mostly-empty ``--big-size`` disk (2 TiB) and the same 48 MiB written on a disk
of the main size, to show its memory does not grow with the disk (restic and borg would read
2 TiB of zeros; they are skipped and the table says so).

Variants: restic (always encrypted; default compression ``auto`` = zstd), borg with ``-e none``
and ``--compression zstd,3`` (default chunker, and ``--chunker-params fixed,4194304``), borg
``-e repokey-blake2`` (``--borg-encrypted``), vmsift with ``--encryption none`` and
``repokey``. The page cache is dropped before every timed command when the script may write
``/proc/sys/vm/drop_caches`` (it says whether it could), and every command starts after
``sync``. The load average is printed with the results: the machine may be shared.

    .venv/bin/python bench/bench_backup.py [--size 8G] [--only restic,borg,vmsift]
        [--workdir DIR] [--vmsift PATH] [--thin-size 50G] [--big-size 2T]
        [--borg-encrypted] [--markdown] [--json FILE]
    .venv/bin/python bench/bench_backup.py --report FILE [--markdown]   # print a saved run again

vmsift is run as ``--vmsift PATH`` (default: this checkout installed as a user has it, in a
venv of its own under the work folder: `installed.install`); when it has no ``backup``
command yet the vmsift columns read "not available". A command that fails is reported with
its command line and error text and the other tools go on. Steps 1-3 need only the standard
library; 4 and 6 import the test fixtures (CTK writer, moto server) and boto3.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.fixtures: the CTK writer, moto's S3 server

from installed import install  # noqa: E402

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
CHANGE = 64 * KiB  # the size of each scattered write between the two backups
SEED = 20261203
PASSWORD = "vmsift-bench"
TIME = "/usr/bin/time"


# ----------------------------------------------------------------------------- the workload

def parse_size(text: str) -> int:
    """'8G', '50G', '2T', '512M' or a number of bytes."""
    m = re.fullmatch(r"(\d+)([KMGT]?)(i?B)?", text.strip(), re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(m[1]) << {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m[2].upper()]


def human(n: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):g} {unit}"
    return f"{n} B"


@dataclass
class Layout:
    """What each 1 MiB block of the disk holds: 'data', a copy of block N, or a hole."""

    size: int
    seed: int
    kinds: list[str]  # 'data', 'dup' or 'hole', one per block
    sources: dict[int, int]  # dup block -> the earlier data block it copies

    @classmethod
    def make(cls, size: int, seed: int = SEED) -> "Layout":
        blocks = size // MiB
        n_data, n_dup = blocks * 40 // 100, blocks * 20 // 100
        kinds = ["data"] * n_data + ["dup"] * n_dup + ["hole"] * (blocks - n_data - n_dup)
        rng = random.Random(seed)
        rng.shuffle(kinds)
        first = next((i for i, k in enumerate(kinds) if k != "hole"), None)
        if first is not None and kinds[first] == "dup":  # a copy needs an earlier original
            j = kinds.index("data")
            kinds[first], kinds[j] = "data", "dup"
        sources, seen = {}, []
        for i, kind in enumerate(kinds):
            if kind == "data":
                seen.append(i)
            elif kind == "dup":
                sources[i] = rng.choice(seen)
        return cls(size, seed, kinds, sources)

    def count(self, kind: str) -> int:
        return self.kinds.count(kind) * MiB

    @property
    def unique(self) -> int:
        return self.count("data")

    @property
    def present(self) -> int:
        return self.count("data") + self.count("dup")

    def block(self, i: int) -> bytes:
        """The bytes of data block ``i`` (random: zstd cannot shrink them)."""
        return random.Random(self.seed * 1_000_003 + i).randbytes(MiB)

    def original(self, i: int) -> bytes | None:
        """Block ``i`` as first written, None for a hole."""
        kind = self.kinds[i]
        if kind == "hole":
            return None
        return self.block(self.sources[i] if kind == "dup" else i)

    def changes(self) -> list[int]:
        """Offsets of the scattered 64 KiB writes: 5% of the disk, distinct, sorted."""
        rng = random.Random(self.seed + 1)
        slots = self.size // CHANGE
        return sorted(s * CHANGE for s in rng.sample(range(slots), slots * 5 // 100))


_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate a range of the host file (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)."""
    if _libc.fallocate(fd, 0x02 | 0x01, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def write_vm_folder(folder: Path, size: int, name: str) -> Path:
    """A minimal VMware VM: vm.vmx naming disk.vmdk, a monolithicFlat descriptor, and an
    empty (all hole) flat extent of ``size`` bytes. Returns the flat extent's path."""
    folder.mkdir(parents=True, exist_ok=True)
    sectors = size // 512
    uuid = " ".join(f"{b:02x}" for b in hashlib.md5(name.encode()).digest())
    uuid = uuid[:23] + "-" + uuid[24:]  # VMware writes the 16 bytes as 8 + "-" + 8
    (folder / "vm.vmx").write_text(
        '.encoding = "UTF-8"\n'
        'config.version = "8"\n'
        'virtualHW.version = "19"\n'
        f'displayName = "{name}"\n'
        'guestOS = "otherlinux-64"\n'
        'memsize = "2048"\n'
        'numvcpus = "2"\n'
        f'uuid.bios = "{uuid}"\n'
        'scsi0.present = "TRUE"\n'
        'scsi0.virtualDev = "pvscsi"\n'
        'scsi0:0.present = "TRUE"\n'
        'scsi0:0.fileName = "disk.vmdk"\n'
        'scsi0:0.deviceType = "scsi-hardDisk"\n')
    cylinders = min(sectors // (255 * 63), 65535)
    (folder / "disk.vmdk").write_text(
        "# Disk DescriptorFile\n"
        "version=1\n"
        'encoding="UTF-8"\n'
        "CID=5ca1ab1e\n"
        "parentCID=ffffffff\n"
        'createType="monolithicFlat"\n'
        "\n# Extent description\n"
        f'RW {sectors} FLAT "disk-flat.vmdk" 0\n'
        "\n# The Disk Data Base\n#DDB\n\n"
        'ddb.adapterType = "lsilogic"\n'
        f'ddb.geometry.cylinders = "{cylinders}"\n'
        'ddb.geometry.heads = "255"\n'
        'ddb.geometry.sectors = "63"\n'
        'ddb.virtualHWVersion = "19"\n')
    flat = folder / "disk-flat.vmdk"
    with open(flat, "wb") as f:
        f.truncate(size)
    return flat


def fill(flat: Path, layout: Layout) -> None:
    """Write the data and copied blocks with os.pwrite; holes are never written."""
    fd = os.open(flat, os.O_RDWR)
    try:
        for i, kind in enumerate(layout.kinds):
            if kind == "data":
                os.pwrite(fd, layout.block(i), i * MiB)
            elif kind == "dup":
                os.pwrite(fd, os.pread(fd, MiB, layout.sources[i] * MiB), i * MiB)
        os.fsync(fd)
    finally:
        os.close(fd)


def apply_changes(flat: Path, layout: Layout) -> int:
    """The scattered 64 KiB writes (new random bytes) between the two backups."""
    offsets = layout.changes()
    rng = random.Random(layout.seed + 2)
    fd = os.open(flat, os.O_RDWR)
    try:
        for off in offsets:
            os.pwrite(fd, rng.randbytes(CHANGE), off)
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(offsets) * CHANGE


def undo_changes(flat: Path, layout: Layout) -> None:
    """Put back every 1 MiB block the changes touched: its first bytes, or a hole."""
    fd = os.open(flat, os.O_RDWR)
    try:
        for i in sorted({off // MiB for off in layout.changes()}):
            data = layout.original(i)
            if data is None:
                punch_hole(fd, i * MiB, MiB)
            else:
                os.pwrite(fd, data, i * MiB)
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    buf = bytearray(4 * MiB)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def allocated(path: Path) -> int:
    """Bytes the file really occupies on disk (a sparse file: less than its size)."""
    return os.stat(path).st_blocks * 512


def du_sb(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[0])


@dataclass
class Source:
    """The VM folder of the main workload, kept between runs of the script in the workdir."""

    folder: Path
    flat: Path
    layout: Layout
    state_file: Path

    @classmethod
    def prepare(cls, work: Path, size: int) -> "Source":
        folder = work / "vm"
        layout = Layout.make(size)
        src = cls(folder, folder / "disk-flat.vmdk", layout, work / "vm.state.json")
        want = {"size": size, "seed": layout.seed, "state": "pristine"}
        state = json.loads(src.state_file.read_text()) if src.state_file.exists() else {}
        if state == {**want, "state": "changed"}:
            undo_changes(src.flat, layout)
            src.save("pristine")
        elif state != want:
            note(f"building the {human(size)} VM folder in {folder}")
            shutil.rmtree(folder, ignore_errors=True)
            write_vm_folder(folder, size, "bench-backup")
            fill(src.flat, layout)
            src.save("pristine")
        return src

    def save(self, state: str) -> None:
        self.state_file.write_text(json.dumps(
            {"size": self.layout.size, "seed": self.layout.seed, "state": state}))

    def change(self) -> int:
        self.save("changed")
        return apply_changes(self.flat, self.layout)

    def undo(self) -> None:
        undo_changes(self.flat, self.layout)
        self.save("pristine")


# ----------------------------------------------------------------------------- running tools

class ToolFailed(Exception):
    def __init__(self, cmd: list[str], cwd: Path, rc: int, output: str):
        tail = "\n".join(output.strip().splitlines()[-6:])
        super().__init__(f"`{' '.join(cmd)}` (in {cwd}) exited {rc}: {tail}")


CACHE_DROP = {"ok": None}


def drop_caches() -> bool:
    """sync, then drop the page cache if this process may; remembers whether it could."""
    os.sync()
    if CACHE_DROP["ok"] is False:
        return False
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        CACHE_DROP["ok"] = True
    except OSError:
        CACHE_DROP["ok"] = False
    return CACHE_DROP["ok"]


@dataclass
class Run:
    seconds: float
    rss: int  # peak resident set size, bytes
    load: float  # 1-minute load average when the command ended


def run(cmd: list[str], cwd: Path, env: dict[str, str], log: Path, timed: bool = True) -> Run:
    """Run ``cmd`` under /usr/bin/time -v; the output goes to ``log``."""
    if timed:
        drop_caches()
    rss_file = log.with_suffix(".time")
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.run([TIME, "-v", "-o", str(rss_file), *cmd], cwd=cwd, env=env,
                              stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise ToolFailed(cmd, cwd, proc.returncode, log.read_text(errors="replace"))
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", rss_file.read_text())
    return Run(seconds, int(m[1]) * KiB if m else 0, os.getloadavg()[0])


def find_restored(target: Path, size: int) -> Path:
    """The restored disk below ``target``: the (largest) file of the disk's size."""
    best = None
    for p in target.rglob("*"):
        if p.is_file() and not p.is_symlink() and p.stat().st_size == size:
            if p.name == "disk-flat.vmdk" or best is None:
                best = p
    if best is None:
        found = sorted(str(p.relative_to(target)) for p in target.rglob("*"))
        raise RuntimeError(f"no restored file of {size} bytes below {target}: {found[:10]}")
    return best


class Tool:
    """One backup tool in one configuration, with a repository of its own under ``work``."""

    name = ""
    family = ""

    def __init__(self, work: Path):
        self.work = work
        self.repo = work / "repos" / self.name
        self.cache = work / "cache" / self.name
        self.logs = work / "logs"

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def available(self) -> str | None:
        """None when the tool can run, else why not."""
        return None

    def fresh(self) -> None:
        for d in (self.repo, self.cache):
            shutil.rmtree(d, ignore_errors=True)
        self.repo.parent.mkdir(parents=True, exist_ok=True)
        self.cache.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)

    def cleanup(self) -> None:
        for d in (self.repo, self.cache):
            shutil.rmtree(d, ignore_errors=True)

    def run(self, step: str, cmd: list[str], cwd: Path | None = None, timed: bool = True) -> Run:
        return run(cmd, cwd or self.work, self.env(), self.logs / f"{self.name}-{step}.log",
                   timed)

    # each tool: init, backup(folder relative to work, snapshot name), restore(latest, target)
    def init(self) -> None: ...
    def backup(self, folder: str, snap: str) -> Run: ...
    def restore(self, snap: str, target: Path) -> Run: ...


class Restic(Tool):
    name = family = "restic"

    def env(self) -> dict[str, str]:
        return {**os.environ, "RESTIC_PASSWORD": PASSWORD, "RESTIC_CACHE_DIR": str(self.cache)}

    def available(self) -> str | None:
        return None if shutil.which("restic") else "restic not installed"

    def init(self) -> None:
        self.run("init", ["restic", "init", "-r", str(self.repo)], timed=False)

    def backup(self, folder: str, snap: str) -> Run:
        return self.run(f"backup-{snap}", ["restic", "-r", str(self.repo), "backup",
                                           "--host", "bench", "--tag", snap, folder])

    def restore(self, snap: str, target: Path) -> Run:
        return self.run(f"restore-{snap}", ["restic", "-r", str(self.repo), "restore",
                                            "latest", "--target", str(target)])


class Borg(Tool):
    family = "borg"

    def __init__(self, work: Path, name: str, encryption: str, chunker: str | None):
        self.name, self.encryption, self.chunker = name, encryption, chunker
        super().__init__(work)

    def env(self) -> dict[str, str]:
        return {**os.environ, "BORG_PASSPHRASE": PASSWORD, "BORG_BASE_DIR": str(self.cache),
                "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
                "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}

    def available(self) -> str | None:
        return None if shutil.which("borg") else "borg not installed"

    def init(self) -> None:
        self.run("init", ["borg", "init", "-e", self.encryption, str(self.repo)], timed=False)

    def backup(self, folder: str, snap: str) -> Run:
        cmd = ["borg", "create", "--compression", "zstd,3"]
        if self.chunker:
            cmd += ["--chunker-params", self.chunker]
        return self.run(f"backup-{snap}", [*cmd, f"{self.repo}::{snap}", folder])

    def restore(self, snap: str, target: Path) -> Run:
        return self.run(f"restore-{snap}", ["borg", "extract", f"{self.repo}::{snap}"],
                        cwd=target)


class Vmsift(Tool):
    family = "vmsift"

    def __init__(self, work: Path, name: str, encryption: str, exe: str):
        self.name, self.encryption, self.exe = name, encryption, exe
        super().__init__(work)

    def env(self) -> dict[str, str]:
        return {**os.environ, "VMSIFT_PASSWORD": PASSWORD, "XDG_CACHE_HOME": str(self.cache)}

    def available(self) -> str | None:
        if not os.access(self.exe, os.X_OK):
            return f"{self.exe} not found"
        probe = subprocess.run([self.exe, "backup", "--help"], capture_output=True, text=True)
        if probe.returncode != 0:
            lines = (probe.stderr or probe.stdout).strip().splitlines()
            return f"`{self.exe} backup --help`: {lines[-1] if lines else probe.returncode}"
        return None

    def init(self) -> None:
        self.run("init", [self.exe, "init", "-r", str(self.repo), "--encryption",
                          self.encryption], timed=False)

    def backup(self, folder: str, snap: str) -> Run:
        return self.run(f"backup-{snap}", [self.exe, "backup", "-r", str(self.repo), folder])

    def restore(self, snap: str, target: Path) -> Run:
        return self.run(f"restore-{snap}", [self.exe, "restore", "-r", str(self.repo), "latest",
                                            "--target", str(target), "--format", "raw"])


class S3Vmsift(Tool):
    """vmsift with its repository at an S3 URL (moto's credentials in the environment)."""

    def __init__(self, local: Vmsift, url: str):
        self.local, self.url, self.name = local, url, f"{local.name}-s3"
        super().__init__(local.work)

    def env(self) -> dict[str, str]:
        from tests.fixtures.s3 import CREDENTIALS
        return {**self.local.env(), **CREDENTIALS}

    def init(self) -> None:
        self.run("init", [self.local.exe, "init", "-r", self.url, "--encryption",
                          self.local.encryption], timed=False)

    def backup(self, folder: str, snap: str) -> Run:
        return self.run(f"backup-{snap}", [self.local.exe, "backup", "-r", self.url, folder])

    def restore(self, snap: str, target: Path) -> Run:
        return self.run(f"restore-{snap}", [self.local.exe, "restore", "-r", self.url,
                                            "latest", "--target", str(target), "--format",
                                            "raw"])


def make_tools(work: Path, families: set[str], vmsift: str, borg_encrypted: bool) -> list[Tool]:
    tools: list[Tool] = [
        Restic(work),
        Borg(work, "borg", "none", None),
        Borg(work, "borg-fixed4M", "none", "fixed,4194304"),
    ]
    if borg_encrypted:
        tools.append(Borg(work, "borg-repokey", "repokey-blake2", None))
    tools += [Vmsift(work, "vmsift", "none", vmsift),
              Vmsift(work, "vmsift-repokey", "repokey", vmsift)]
    return [t for t in tools if t.family in families]


# ----------------------------------------------------------------------------- measurements

@dataclass
class Result:
    tool: str
    values: dict[str, object] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def bench_main(tool: Tool, src: Source, res: Result, verify: str) -> None:
    """First backup, incremental after the changes, restore of the second one."""
    size, layout = src.layout.size, src.layout
    v = res.values
    tool.fresh()
    tool.init()
    before = du_sb(tool.repo)
    r = tool.backup("vm", "first")
    repo1 = du_sb(tool.repo)
    v.update(first_s=r.seconds, first_rss=r.rss, first_load=r.load, repo_empty=before,
             repo1=repo1, first_logical_mibs=size / MiB / r.seconds,
             first_present_mibs=layout.present / MiB / r.seconds,
             repo1_vs_unique=repo1 / layout.unique,
             copies_stored=(repo1 - before - layout.unique) / layout.count("dup"))
    r = tool.backup("vm", "again")  # nothing changed (restic and borg: their files caches)
    v.update(again_s=r.seconds, again_rss=r.rss)
    repo_again = du_sb(tool.repo)
    changed = src.change()
    target = tool.work / "restore" / tool.name
    try:
        r = tool.backup("vm", "second")
        repo2 = du_sb(tool.repo)
        v.update(incr_s=r.seconds, incr_rss=r.rss, incr_load=r.load, changed=changed,
                 growth=repo2 - repo_again, growth_vs_changed=(repo2 - repo_again) / changed)
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        r = tool.restore("second", target)
        t0 = time.perf_counter()
        os.sync()
        sync_s = time.perf_counter() - t0
        out = find_restored(target, size)
        v.update(restore_s=r.seconds, restore_sync_s=sync_s, restore_rss=r.rss,
                 restore_load=r.load, restore_mibs=size / MiB / r.seconds,
                 restore_alloc=allocated(out), restore_equal=sha256(out) == verify)
    finally:
        shutil.rmtree(target, ignore_errors=True)
        src.undo()


def set_ctk(src: Source, changes: dict[int, int] | None) -> None:
    """Give the disk a change-tracking file (``changes``: 64 KiB block -> sequence; every
    written block starts at 1) or, with None, take it away."""
    from tests.fixtures.ctk_writer import build_ctk

    desc, ctk = src.folder / "disk.vmdk", src.folder / "disk-ctk.vmdk"
    text = desc.read_text().replace('changeTrackPath="disk-ctk.vmdk"\n', "")
    if changes is None:
        ctk.unlink(missing_ok=True)
        desc.write_text(text)
        return
    ctk.write_bytes(build_ctk(src.layout.size // 512, CHANGE // 512, changes))
    desc.write_text(text + 'changeTrackPath="disk-ctk.vmdk"\n')


def bench_hinted(tool: Tool, src: Source, res: Result) -> None:
    """vmsift's incremental with a change hint: the disk has VMware change tracking (CTK),
    the same 5% is changed and the CTK marks those blocks; only they are read. (restic and
    borg have no change hints: their incremental of the same change is the one above.)"""
    layout = src.layout
    written = {b: 1 for i, kind in enumerate(layout.kinds) if kind != "hole"
               for b in range(i * MiB // CHANGE, (i + 1) * MiB // CHANGE)}
    set_ctk(src, written)
    try:
        tool.fresh()
        tool.init()
        tool.backup("vm", "ctk-first")
        repo1 = du_sb(tool.repo)
        changed = src.change()
        set_ctk(src, {**written, **{off // CHANGE: 2 for off in layout.changes()}})
        r = tool.backup("vm", "ctk-second")
        res.values.update(ctk_incr_s=r.seconds, ctk_incr_rss=r.rss,
                          ctk_growth_vs_changed=(du_sb(tool.repo) - repo1) / changed)
    finally:
        src.undo()
        set_ctk(src, None)


def write_delta(src: Source, delta: Path, pieces: Path) -> int:
    """A snapshot's delta above ``disk.vmdk`` made by qemu-img (monolithicSparse, 64 KiB
    grains), holding the same scattered 64 KiB writes as `apply_changes`, written by
    qemu-io; the VM's configuration then names it. Returns the bytes written."""
    offsets = src.layout.changes()
    rng = random.Random(src.layout.seed + 2)
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicSparse",
                    "-b", "disk.vmdk", "-F", "vmdk", delta.name], cwd=src.folder, check=True)
    pieces.mkdir(parents=True, exist_ok=True)
    try:
        script = []
        for n, off in enumerate(offsets):
            (pieces / f"{n}").write_bytes(rng.randbytes(CHANGE))
            script.append(f"write -q -s {pieces / str(n)} {off} {CHANGE}")
        subprocess.run(["qemu-io", "-f", "vmdk", str(delta)], check=True, capture_output=True,
                       input="\n".join(script) + "\nquit\n", text=True)
    finally:
        shutil.rmtree(pieces, ignore_errors=True)
    vmx = src.folder / "vm.vmx"
    vmx.write_text(vmx.read_text().replace('"disk.vmdk"', f'"{delta.name}"'))
    return len(offsets) * CHANGE


def bench_delta(tool: Tool, src: Source, res: Result) -> None:
    """vmsift's incremental with a snapshot chain as the hint: after the first backup the VM
    gets a snapshot whose delta takes the same 5% of scattered 64 KiB writes; only the
    delta's grains are read (the ``chain`` hint). The delta is removed afterwards."""
    delta = src.folder / "disk-000001.vmdk"
    vmx = src.folder / "vm.vmx"
    config = vmx.read_text()
    try:
        tool.fresh()
        tool.init()
        tool.backup("vm", "delta-first")
        repo1 = du_sb(tool.repo)
        changed = write_delta(src, delta, tool.work / "delta-pieces")
        r = tool.backup("vm", "delta-second")
        log = (tool.logs / f"{tool.name}-backup-delta-second.log").read_text()
        if "(chain hint)" not in log:
            raise RuntimeError(f"the chain hint was not used: {log.strip()[-300:]}")
        res.values.update(delta_incr_s=r.seconds, delta_incr_rss=r.rss,
                          delta_growth_vs_changed=(du_sb(tool.repo) - repo1) / changed)
    finally:
        vmx.write_text(config)
        delta.unlink(missing_ok=True)


def bench_s3(tool: Tool, src: Source, res: Result, verify: str) -> None:
    """The main workload's first backup and restore through the S3 backend, into moto's S3
    server on 127.0.0.1 (in memory), beside the local backend's rows."""
    from tests.fixtures.s3 import CREDENTIALS, moto_command, moto_server

    if moto_command() is None:
        raise RuntimeError("moto_server is not installed (pip install 'moto[server]')")
    src.change()
    target = tool.work / "restore" / f"{tool.name}-s3"
    try:
        with moto_server() as endpoint:
            import boto3
            boto3.client("s3", endpoint_url=endpoint, **{
                k.lower(): v for k, v in CREDENTIALS.items() if k != "AWS_DEFAULT_REGION"},
                region_name="us-east-1").create_bucket(Bucket="bench")
            s3 = S3Vmsift(tool, f"s3:{endpoint}/bench/vmsift")
            s3.init()
            r = s3.backup("vm", "s3-first")
            res.values.update(s3_first_s=r.seconds, s3_first_rss=r.rss,
                              s3_first_logical_mibs=src.layout.size / MiB / r.seconds)
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            r = s3.restore("s3-first", target)
            out = find_restored(target, src.layout.size)
            res.values.update(s3_restore_s=r.seconds, s3_restore_rss=r.rss,
                              s3_restore_equal=sha256(out) == verify)
    finally:
        shutil.rmtree(target, ignore_errors=True)
        src.undo()


def bench_thin(tool: Tool, folder: str, res: Result) -> None:
    tool.fresh()
    tool.init()
    r = tool.backup(folder, "thin")
    res.values.update(thin_s=r.seconds, thin_rss=r.rss, thin_repo=du_sb(tool.repo))


def bench_big(tool: Tool, folder: str, res: Result, key: str = "big") -> None:
    """A mostly-empty disk into a fresh repository: ``key`` is ``big`` (``--big-size``) or
    ``empty`` (the same 48 MiB written on a disk of the main size), so that the two peaks of
    memory differ only by the disk's size."""
    tool.fresh()
    tool.init()
    r = tool.backup(folder, key)
    res.values.update({f"{key}_s": r.seconds, f"{key}_rss": r.rss,
                       f"{key}_repo": du_sb(tool.repo)})


def make_thin(work: Path, size: int) -> str:
    name = f"thin-{size >> 30}g"
    flat = work / name / "disk-flat.vmdk"
    if not (flat.exists() and flat.stat().st_size == size and allocated(flat) == 0):
        shutil.rmtree(work / name, ignore_errors=True)
        write_vm_folder(work / name, size, name)
    return name


def make_big(work: Path, size: int) -> str:
    """A mostly-empty disk: 16 MiB of random data at its start, middle and end."""
    name = f"big-{size >> 30}g"
    flat = work / name / "disk-flat.vmdk"
    if not (flat.exists() and flat.stat().st_size == size):
        shutil.rmtree(work / name, ignore_errors=True)
        write_vm_folder(work / name, size, name)
        rng = random.Random(SEED + 3)
        fd = os.open(flat, os.O_RDWR)
        for off in (0, size // 2, size - 16 * MiB):
            os.pwrite(fd, rng.randbytes(16 * MiB), off)
        os.fsync(fd)
        os.close(fd)
    return name


# ----------------------------------------------------------------------------- the report

def mib(n: float) -> str:
    return f"{n / MiB:,.0f}"


ROWS = [  # (key, label, format)
    ("first_s", "first backup, s", "{:.1f}"),
    ("first_logical_mibs", "first backup, MiB/s of the logical size", "{:.0f}"),
    ("first_present_mibs", "first backup, MiB/s of the data present", "{:.0f}"),
    ("first_rss", "first backup, peak RSS MiB", mib),
    ("repo1", "repository after it, MiB (du -sb)", mib),
    ("repo1_vs_unique", "repository / unique data", "{:.2f}"),
    ("copies_stored", "copied blocks stored again (0% = all deduplicated)", "{:.0%}"),
    ("again_s", "backup again, nothing changed, s", "{:.2f}"),
    ("again_rss", "backup again, peak RSS MiB", mib),
    ("incr_s", "incremental backup, s", "{:.1f}"),
    ("incr_rss", "incremental backup, peak RSS MiB", mib),
    ("growth", "repository growth, MiB", mib),
    ("growth_vs_changed", "growth / changed bytes", "{:.1f}x"),
    ("restore_s", "restore, s", "{:.1f}"),
    ("restore_mibs", "restore, MiB/s of the logical size", "{:.0f}"),
    ("restore_sync_s", "then sync until on disk, s", "{:.1f}"),
    ("restore_rss", "restore, peak RSS MiB", mib),
    ("restore_alloc", "restored disk allocated, MiB (du)", mib),
    ("restore_equal", "restored disk = source (sha256)", lambda b: "yes" if b else "**NO**"),
    ("ctk_incr_s", "incremental with change tracking (CTK hint), s", "{:.1f}"),
    ("ctk_incr_rss", "incremental with CTK, peak RSS MiB", mib),
    ("ctk_growth_vs_changed", "incremental with CTK, growth / changed bytes", "{:.1f}x"),
    ("delta_incr_s", "incremental with a snapshot delta (chain hint), s", "{:.1f}"),
    ("delta_incr_rss", "incremental with a delta, peak RSS MiB", mib),
    ("delta_growth_vs_changed", "incremental with a delta, growth / changed bytes",
     "{:.1f}x"),
    ("s3_first_s", "first backup into S3 (moto on 127.0.0.1), s", "{:.1f}"),
    ("s3_first_logical_mibs", "first backup into S3, MiB/s of the logical size", "{:.0f}"),
    ("s3_first_rss", "first backup into S3, peak RSS MiB", mib),
    ("s3_restore_s", "restore from S3, s", "{:.1f}"),
    ("s3_restore_rss", "restore from S3, peak RSS MiB", mib),
    ("s3_restore_equal", "restored from S3 = source (sha256)",
     lambda b: "yes" if b else "**NO**"),
    ("thin_s", "thin disk (one hole) backup, s", "{:.1f}"),
    ("thin_rss", "thin disk backup, peak RSS MiB", mib),
    ("thin_repo", "thin disk repository, MiB", mib),
    ("big_s", "mostly-empty big disk backup, s", "{:.1f}"),
    ("big_rss", "mostly-empty big disk backup, peak RSS MiB", mib),
    ("big_repo", "mostly-empty big disk repository, MiB", mib),
    ("empty_s", "mostly-empty disk of the main size backup, s", "{:.1f}"),
    ("empty_rss", "mostly-empty disk of the main size backup, peak RSS MiB", mib),
]


def cell(res: Result, key: str, fmt) -> str:
    if key not in res.values:
        return res.values.get(f"{key}_missing", "-")
    value = res.values[key]
    return fmt(value) if callable(fmt) else fmt.format(value)


def table(results: list[Result], markdown: bool, labels: dict[str, str]) -> str:
    head = ["measure"] + [r.tool for r in results]
    rows = [[labels.get(key, label)] + [cell(r, key, fmt) for r in results]
            for key, label, fmt in ROWS if any(key in r.values or f"{key}_missing" in r.values
                                               for r in results)]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * len(results)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    fmt_row = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                    for i, (c, w) in enumerate(zip(row, widths)))
    return "\n".join([fmt_row(head), *(fmt_row(row) for row in rows)])


def versions() -> dict[str, str]:
    def first_line(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "not installed"
    return {"restic": first_line(["restic", "version"]), "borg": first_line(["borg", "--version"])}


def note(text: str) -> None:
    print(f"# {text}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- main

def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=parse_size, default=parse_size("8G"),
                    help="logical size of the main disk (default 8G)")
    ap.add_argument("--only", default="restic,borg,vmsift",
                    help="comma-separated tools to run (restic, borg, vmsift)")
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp/vmsift-bench-backup"),
                    help="where the VM folders, repositories and restores go; kept between runs")
    ap.add_argument("--vmsift", help="the vmsift executable (default: this checkout, installed)")
    ap.add_argument("--thin-size", type=parse_size, default=parse_size("50G"),
                    help="never-written thin disk backed up by each tool (0: skip)")
    ap.add_argument("--big-size", type=parse_size, default=parse_size("2T"),
                    help="mostly-empty disk backed up by vmsift only (0: skip)")
    ap.add_argument("--no-s3", action="store_true",
                    help="skip vmsift's backup and restore through S3 (moto)")
    ap.add_argument("--borg-encrypted", action="store_true",
                    help="also run borg with -e repokey-blake2")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--json", type=Path, help="write the raw results to this file")
    ap.add_argument("--keep", action="store_true", help="keep the repositories")
    ap.add_argument("--report", type=Path, metavar="JSON",
                    help="only print the results saved by an earlier --json")
    args = ap.parse_args()
    if args.size % MiB or args.size < 16 * MiB:
        ap.error("--size must be a multiple of 1 MiB, at least 16 MiB")
    return args


def check_space(work: Path, size: int) -> None:
    free = shutil.disk_usage(work).free
    need = size * 3  # source (60% allocated) + the largest repository + a dense restore
    note(f"workdir {work}: {human(free)} free, about {human(need)} needed")
    if free < need:
        raise SystemExit(f"not enough space in {work}: {human(free)} free, need {human(need)}")


def main() -> None:
    args = parse_args()
    if args.report:
        return reprint(args.report, args.markdown)
    families = {f.strip() for f in args.only.split(",") if f.strip()}
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    check_space(work, args.size)
    if args.vmsift is None:  # a copy of the checkout as it is now, with its bytecode
        shutil.rmtree(work / "vmsift-installed", ignore_errors=True)
        args.vmsift = str(install(ROOT, work / "vmsift-installed"))
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_start = os.getloadavg()
    src = Source.prepare(work, args.size)
    layout = src.layout
    note(f"source: {human(layout.size)} logical, {human(layout.present)} present, "
         f"{human(layout.unique)} unique, allocated {human(allocated(src.flat))}")
    src.change()
    verify = sha256(src.flat)  # what the restore of the second backup must give back
    src.undo()
    thin = make_thin(work, args.thin_size) if args.thin_size else None
    big = make_big(work, args.big_size) if args.big_size and "vmsift" in families else None
    empty = make_big(work, args.size) if big else None

    results = []
    for tool in make_tools(work, families, args.vmsift, args.borg_encrypted):
        res = Result(tool.name)
        results.append(res)
        why = tool.available()
        if why:
            print(f"{tool.name}: not available ({why})", flush=True)
            res.errors.append(f"not available: {why}")
            res.values.update({f"{k}_missing": "n/a" for k, _, _ in ROWS})
            continue
        steps = [("main", lambda: bench_main(tool, src, res, verify))]
        if tool.family == "vmsift":
            steps.append(("hinted", lambda: bench_hinted(tool, src, res)))
            steps.append(("delta", lambda: bench_delta(tool, src, res)))
            if not args.no_s3 and tool.name == "vmsift":
                steps.append(("s3", lambda: bench_s3(tool, src, res, verify)))
        if thin:
            steps.append(("thin", lambda: bench_thin(tool, thin, res)))
        if big and tool.family == "vmsift":
            steps.append(("big", lambda: bench_big(tool, big, res)))
            steps.append(("empty", lambda: bench_big(tool, empty, res, "empty")))
        elif args.big_size:
            res.values.update(big_s_missing="skipped", big_rss_missing="skipped",
                              big_repo_missing="skipped", empty_s_missing="skipped",
                              empty_rss_missing="skipped")
        for step, fn in steps:
            note(f"{tool.name}: {step}")
            try:
                fn()
            except (ToolFailed, RuntimeError, OSError) as e:
                print(f"{tool.name} {step}: FAILED: {e}", flush=True)
                res.errors.append(f"{step}: {e}")
                if step == "main":
                    break
        if not args.keep:
            tool.cleanup()
        note(f"{tool.name}: {json.dumps(res.values, default=str)}")

    report(args, results, layout, started, load_start, thin, big)


def report(args, results, layout, started, load_start, thin, big) -> None:
    cache = {True: "yes", False: "no (not permitted)", None: "not tried"}[CACHE_DROP["ok"]]
    labels = {}
    if thin:
        labels.update(thin_s=f"{human(args.thin_size)} thin disk (one hole) backup, s")
    if args.big_size:
        labels.update(big_s=f"{human(args.big_size)} mostly-empty disk (48 MiB written) "
                            "backup, s (vmsift only)",
                      empty_s=f"{human(args.size)} mostly-empty disk (the same 48 MiB) "
                              "backup, s (vmsift only)")
    info = {
        "date": started,
        "versions": versions(),
        "vmsift": args.vmsift,
        "disk": f"{human(layout.size)} logical: {human(layout.present)} present "
                f"({human(layout.unique)} unique data, {human(layout.count('dup'))} copies "
                f"of it), {human(layout.count('hole'))} holes; "
                f"changed between backups: {human(len(layout.changes()) * CHANGE)} "
                f"in {len(layout.changes())} writes of 64 KiB",
        "page cache dropped before each timed command": cache,
        "load average at start (1, 5, 15 min)": " ".join(f"{x:.2f}" for x in load_start),
        "load average at end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "cores": os.cpu_count(),
    }
    if args.json:
        args.json.write_text(json.dumps({"info": info, "labels": labels, "results": [
            {"tool": r.tool, "values": r.values, "errors": r.errors} for r in results]},
            indent=2, default=str))
    print_report(info, results, labels, args.markdown)


def print_report(info: dict, results: list[Result], labels: dict[str, str],
                 markdown: bool) -> None:
    print()
    for k, v in info.items():
        print(f"{k}: {v}")
    for r in results:
        loads = [r.values[k] for k in ("first_load", "incr_load", "restore_load")
                 if k in r.values]
        if loads:
            print(f"{r.tool}: 1-min load average after its first backup, incremental, "
                  "restore: " + ", ".join(f"{x:.2f}" for x in loads))
        for e in r.errors:
            print(f"{r.tool}: {e}")
    print()
    print(table(results, markdown, labels))


def reprint(path: Path, markdown: bool) -> None:
    """Print the results a previous run saved with --json."""
    saved = json.loads(path.read_text())
    results = [Result(r["tool"], r["values"], r["errors"]) for r in saved["results"]]
    print_report(saved["info"], results, saved.get("labels", {}), markdown)

if __name__ == "__main__":
    main()
