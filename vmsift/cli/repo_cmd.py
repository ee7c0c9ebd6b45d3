"""`vmsift init|snapshots|ls|cat|check|unlock|stats`: a backup repository.

Shared by the repository commands: ``-r REPO`` (or ``VMSIFT_REPOSITORY``), the password from
``VMSIFT_PASSWORD``, ``--password-file`` or a prompt on a terminal, `open_repo`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import sys

import click

from ..errors import IntegrityError, RepositoryError
from ..report import human_size
from .render import document, echo_json

repo_option = click.option("-r", "--repo", "repo_path", envvar="VMSIFT_REPOSITORY",
                           required=True, metavar="REPO",
                           help="Repository folder (or set VMSIFT_REPOSITORY).")
password_option = click.option("--password-file", type=click.Path(dir_okay=False, exists=True),
                               help="Read the password from this file (first line).")
json_option = click.option("--json", "as_json", is_flag=True, help="JSON output.")


def repo_options(f):
    return repo_option(password_option(f))


def _password(password_file: str | None, confirm: bool = False):
    """A function giving the password: the file, VMSIFT_PASSWORD, or a prompt."""
    def get() -> bytes:
        if password_file:
            with open(password_file, "rb") as fh:
                return fh.readline().rstrip(b"\r\n")
        if "VMSIFT_PASSWORD" in os.environ:
            return os.environ["VMSIFT_PASSWORD"].encode()
        if not sys.stdin.isatty():
            raise RepositoryError("the repository is encrypted and no password was given "
                                  "(VMSIFT_PASSWORD or --password-file)")
        return click.prompt("repository password", hide_input=True,
                            confirmation_prompt=confirm, err=True).encode()
    return get


@contextlib.contextmanager
def open_repo(repo_path: str, password_file: str | None):
    from ..backup.repository import Repository

    repo = Repository.open(repo_path, _password(password_file))
    try:
        yield repo
    finally:
        repo.close()


def parse_duration(text: str | None) -> float:
    """Seconds in ``30``, ``30s``, ``5m``, ``2h``."""
    if not text:
        return 0.0
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", text.strip())
    if not m:
        raise click.BadParameter(f"{text!r} is not a duration like 30s, 5m or 1h")
    return float(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[m[2]]


retry_lock_option = click.option("--retry-lock", metavar="DURATION",
                                 help="Wait this long for a lock held by another process "
                                      "(30s, 5m, 1h).")


def _time(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@click.command("init")
@repo_options
@click.option("--encryption", type=click.Choice(["repokey", "none"]), default="repokey",
              show_default=True, help="repokey: AES-256-GCM, keys sealed by the password.")
@click.option("--cell-size", type=int, default=None,
              help="Bytes per chunk cell (a power of two, 4 KiB to 16 MiB; default 64 KiB).")
@json_option
def init_cmd(repo_path: str, password_file: str | None, encryption: str,
             cell_size: int | None, as_json: bool) -> None:
    """Make a new, empty repository at REPO."""
    from ..backup.repository import CELL_SIZE, Repository

    password = _password(password_file, confirm=True)() if encryption == "repokey" else None
    repo = Repository.init(repo_path, encryption=encryption, password=password,
                           cell_size=cell_size or CELL_SIZE)
    repo.close()
    if as_json:
        echo_json(document(repository=repo.location, id=repo.id, encryption=encryption,
                           cell_size=repo.cell_size))
    else:
        click.echo(f"created repository {repo.id} at {repo.location} (encryption "
                   f"{encryption}, {human_size(repo.cell_size)} cells)")


def _snapshot_row(s) -> dict:
    return {"id": s.id, "short_id": s.short_id, "time": s.time.isoformat(), "host": s.host,
            "vm": s.vm, "tags": s.tags, "source": s.source, "run": s.run,
            "disks": [{"name": d.name, "device": d.device, "size": d.size} for d in s.disks],
            "files": len(s.files), "size": sum(d.size for d in s.disks) + sum(
                f.size for f in s.files), "problems": s.problems}


@click.command("snapshots")
@repo_options
@click.option("--vm", "vm_name", help="Only the snapshots of this VM.")
@json_option
def snapshots_cmd(repo_path: str, password_file: str | None, vm_name: str | None,
                  as_json: bool) -> None:
    """List the snapshots, oldest first."""
    from .render import render_table
    from ..report import Table

    with open_repo(repo_path, password_file) as repo:
        snaps = [s for s in repo.snapshots() if vm_name is None or s.vm_name == vm_name]
    if as_json:
        echo_json(document(repository=repo.location, snapshots=[_snapshot_row(s)
                                                                 for s in snaps]))
        return
    rows = [[s.short_id, _time(s.time), s.host, s.vm_name, len(s.disks),
             human_size(sum(d.size for d in s.disks)), ",".join(s.tags) or None,
             f"{len(s.problems)} problem(s)" if s.problems else None] for s in snaps]
    click.echo("\n".join(render_table(Table("snapshots", ["id", "time (UTC)", "host", "vm",
                                                          "disks", "size", "tags", "notes"],
                                            rows))))


@click.command("ls")
@repo_options
@click.argument("snapshot")
@click.option("--vm", "vm_name", help="With `latest`: the latest snapshot of this VM.")
@json_option
def ls_cmd(repo_path: str, password_file: str | None, snapshot: str, vm_name: str | None,
           as_json: bool) -> None:
    """The VM, disks and files of SNAPSHOT (an id, `latest` or `latest:VMNAME`)."""
    from .render import render_table
    from ..report import Table

    with open_repo(repo_path, password_file) as repo:
        s = repo.find_snapshot(snapshot, vm_name)
        if as_json:
            echo_json(document(repository=repo.location, snapshot=s.to_dict() | {"id": s.id}))
            return
        data: list[str] = []  # from each disk's manifest: a hinted backup read only part
        for name in repo.sync_index():
            click.echo(f"warning: index {name[:16]} is damaged and was left out", err=True)
        for d in s.disks:
            try:
                with repo.open_disk(s, d.name) as src:
                    data.append(human_size(src.stored_bytes()))
            except RepositoryError as e:  # a damaged repository is listed all the same
                data.append("?")
                click.echo(f"warning: disk {d.name}: {e}", err=True)
    click.echo(f"snapshot {s.short_id} of VM {s.vm_name!r} ({s.vm.get('kind')}), "
               f"{_time(s.time)} UTC on {s.host}, from {s.source}")
    disks = Table("disks", ["name", "device", "size", "capacity", "data"],
                  [[d.name, d.device, d.size, human_size(d.size), n]
                   for d, n in zip(s.disks, data)])
    files = Table("files", ["name", "size"], [[f.name, f.size] for f in s.files])
    click.echo("\n".join(["", *render_table(disks), "", *render_table(files)]))
    for p in s.problems:
        click.echo(f"warning: at backup: {p}", err=True)


@click.command("cat")
@repo_options
@click.argument("kind", type=click.Choice(["config", "keys", "snapshot", "index", "pack",
                                           "blob", "file", "disk"]))
@click.argument("names", nargs=-1)
def cat_cmd(repo_path: str, password_file: str | None, kind: str, names: tuple[str, ...]) -> None:
    """One object, decoded: `config`, `keys`, `snapshot ID`, `index NAME`, `pack NAME`
    (its header), `blob ID` (raw bytes), or `file SNAPSHOT NAME` / `disk SNAPSHOT NAME`
    (the stored bytes, to standard output)."""
    from ..backup import index as index_mod
    from ..backup.pack import read_header

    def need(n: int) -> None:
        if len(names) != n:
            raise click.UsageError(f"cat {kind} takes {n} name(s)")

    with open_repo(repo_path, password_file) as repo:
        out = sys.stdout.buffer
        if kind == "config":
            doc = {k: v for k, v in repo.config.items() if k != "id_key"}
            echo_json(doc)
        elif kind == "keys":
            echo_json({"keys": [json.loads(repo.backend.get("keys", n))["kdf"] | {"name": n}
                                for n, _ in repo.backend.list("keys")]})
        elif kind == "snapshot":
            need(1)
            s = repo.find_snapshot(names[0])
            echo_json(s.to_dict() | {"id": s.id})
        elif kind == "index":
            need(1)
            packs = index_mod.decode(repo.keys, repo.backend.get("index", names[0]), names[0])
            echo_json({"packs": [{"id": p, "blobs": [[e.type, e.id.hex(), e.offset, e.length,
                                                      e.raw_length] for e in es]}
                                 for p, es in packs.items()]})
        elif kind == "pack":
            need(1)
            entries = read_header(repo.keys, repo.backend.get("data", names[0]), names[0])
            echo_json({"pack": names[0], "blobs": [
                {"type": e.type, "id": e.id.hex(), "offset": e.offset, "length": e.length,
                 "raw_length": e.raw_length} for e in entries]})
        elif kind == "blob":
            need(1)
            repo.sync_index()
            out.write(repo.load_blob(bytes.fromhex(names[0])))
        else:
            need(2)
            repo.sync_index()
            s = repo.find_snapshot(names[0])
            src = repo.open_file(s, names[1]) if kind == "file" else repo.open_disk(s, names[1])
            for pos in range(0, src.size, 4 << 20):
                out.write(src.read(pos, 4 << 20))
        out.flush()


@click.command("check")
@repo_options
@click.option("--read-data", is_flag=True, help="Read and authenticate every stored byte.")
@retry_lock_option
@json_option
def check_cmd(repo_path: str, password_file: str | None, read_data: bool,
              retry_lock: str | None, as_json: bool) -> None:
    """Check the repository; damaged objects name the snapshots, VMs and disks they
    affect (exit 8)."""
    from ..backup.checker import check

    with open_repo(repo_path, password_file) as repo, \
            repo.lock(exclusive=False, wait=parse_duration(retry_lock)):
        result = check(repo, read_data=read_data)
    if as_json:
        echo_json(document(repository=repo.location, ok=result.ok, counts=result.counts,
                           problems=[p.to_dict() for p in result.problems],
                           notes=result.notes))
    else:
        c = result.counts
        click.echo(f"checked {c.get('snapshots', 0)} snapshot(s), {c.get('packs', 0)} "
                   f"pack(s), {c.get('blobs', 0)} blob(s)" +
                   (", every byte read" if read_data else ""))
        for note in result.notes:
            click.echo(f"note: {note}")
        for p in result.problems:
            click.echo(f"damaged: {p}", err=True)
        if result.ok:
            click.echo("no problems found")
    if not result.ok:
        raise IntegrityError(f"{len(result.problems)} problem(s) found", source=repo.location)


@click.command("unlock")
@repo_options
@click.option("--remove-all", is_flag=True, help="Remove live locks too (only when sure "
                                                 "no other vmsift works on the repository).")
@json_option
def unlock_cmd(repo_path: str, password_file: str | None, remove_all: bool,
               as_json: bool) -> None:
    """Remove stale locks (processes gone, or not refreshed for 30 minutes)."""
    from ..backup.lock import clear_stale

    with open_repo(repo_path, password_file) as repo:
        removed = clear_stale(repo.backend, everything=remove_all)
    if as_json:
        echo_json(document(removed=[{"name": r.name, "host": r.host, "pid": r.pid,
                                     "exclusive": r.exclusive} for r in removed]))
        return
    for r in removed:
        click.echo(f"removed {r.describe()}")
    click.echo(f"{len(removed)} lock(s) removed")


@click.command("stats")
@repo_options
@json_option
def stats_cmd(repo_path: str, password_file: str | None, as_json: bool) -> None:
    """Sizes: what the snapshots hold, what is stored, and the savings."""
    with open_repo(repo_path, password_file) as repo:
        repo.sync_index()
        snaps = repo.snapshots()
        blobs, stored, raw = repo.index.count()
        packs = list(repo.backend.list("data"))
    logical = sum(d.size for s in snaps for d in s.disks) + sum(
        f.size for s in snaps for f in s.files)
    data = {"snapshots": len(snaps), "vms": len({s.vm_name for s in snaps}),
            "logical_bytes": logical, "unique_blobs": blobs, "unique_plain_bytes": raw,
            "stored_blob_bytes": stored, "packs": len(packs),
            "repository_bytes": sum(n for _, n in packs)}
    if as_json:
        echo_json(document(repository=repo.location, **data))
        return
    ratio = f"{logical / data['repository_bytes']:.1f}x" if data["repository_bytes"] else "-"
    click.echo(f"{data['snapshots']} snapshot(s) of {data['vms']} VM(s)\n"
               f"  logical size      {human_size(logical)}\n"
               f"  unique chunks     {blobs} ({human_size(raw)} before compression)\n"
               f"  stored in packs   {human_size(data['repository_bytes'])} in {len(packs)} "
               f"pack(s)\n  logical / stored  {ratio}")



@click.command("diff")
@repo_options
@click.argument("old")
@click.argument("new")
@json_option
def diff_cmd(repo_path: str, password_file: str | None, old: str, new: str,
             as_json: bool) -> None:
    """What changed from snapshot OLD to NEW: per disk the byte ranges (from the chunk
    lists, no data read), per small file whether it changed."""
    from ..backup.diff import diff

    with open_repo(repo_path, password_file) as repo:
        repo.sync_index()
        doc = diff(repo, repo.find_snapshot(old), repo.find_snapshot(new))
    if as_json:
        echo_json(document(**doc))
        return
    click.echo(f"{doc['old'][:8]} ({doc['old_vm']}) -> {doc['new'][:8]} ({doc['new_vm']})")
    for d in doc["disks"]:
        if d["status"] != "changed":
            click.echo(f"  disk {d['name']}: {d['status']}")
            continue
        click.echo(f"  disk {d['name']}: {human_size(d['changed_bytes'])} changed in "
                   f"{len(d['ranges'])} range(s)")
        for r in d["ranges"][:20]:
            click.echo(f"    {r['offset']:>16}  {r['length']:>12}")
        if len(d["ranges"]) > 20:
            click.echo(f"    ... and {len(d['ranges']) - 20} more (--json lists all)")
    for f in doc["files"]:
        if f["status"] != "same":
            click.echo(f"  file {f['name']}: {f['status']}")
