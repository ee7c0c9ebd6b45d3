"""`vmsift ds ...`: a datastore (folder, VMFS or OCFS2 image) opened read-only."""

from __future__ import annotations

import contextlib
import datetime as dt
import posixpath
import stat as stat_mod
from typing import TYPE_CHECKING

import click

from ..errors import SourceError, VmsiftError
from ..report import Table, human_size, size_field
from .render import document, echo_json, print_report, render_table

if TYPE_CHECKING:
    from ..datastore.volume import DirEntry, Volume


@click.group()
def ds() -> None:
    """Open a datastore (folder, VMFS or OCFS2 image, partitioned disk) read-only."""


_span_option = click.option("--span", "spans", multiple=True, type=click.Path(exists=True),
                            help="Another device of a spanned VMFS volume (repeatable).")


def _ds_images(f):
    """IMAGE... : one image, or every device of a spanned VMFS volume."""
    f = _span_option(f)
    return click.argument("images", nargs=-1, required=True, type=click.Path(exists=True))(f)


def _ds_args(f):
    f = _span_option(f)
    return click.argument("image", type=click.Path(exists=True))(f)


@contextlib.contextmanager
def _open_ds(image: str, spans: tuple[str, ...]):
    from ..datastore.detect import open_datastore

    volume = open_datastore([image, *spans])
    try:
        yield volume
    finally:
        volume.close()


@ds.command("info")
@_ds_images
@click.option("--json", "as_json", is_flag=True)
def ds_info(images: tuple[str, ...], spans: tuple[str, ...], as_json: bool) -> None:
    """What the image is: kind, UUIDs, label, sizes, heartbeats, locks, slot maps."""
    from ..datastore.vm import oracle_vm_role

    image, *more = images
    with _open_ds(image, (*more, *spans)) as volume:
        report = volume.info()
        role = oracle_vm_role(volume)
    report.data["oracle_vm"] = role
    if role:
        report.fields["Oracle VM"] = role["role"] + "".join(
            f", {k} {role['keys'][k]}" for k in ("OVS_REPO_ALIAS", "OVS_REPO_UUID")
            if k in role["keys"])
    print_report(image, report, as_json)


@ds.command("ls")
@_ds_args
@click.argument("path", default="")
@click.option("-l", "long", is_flag=True, help="Type, size, allocation, time.")
@click.option("-R", "recursive", is_flag=True, help="Every folder below PATH, full paths.")
@click.option("--deleted", is_flag=True, help="Also deleted entries that can be recovered.")
@click.option("--json", "as_json", is_flag=True)
def ds_ls(image: str, spans: tuple[str, ...], path: str, long: bool, recursive: bool,
          deleted: bool, as_json: bool) -> None:
    """List a folder of the datastore (a file is listed alone, as ls does)."""
    problems: list[str] = []
    with _open_ds(image, spans) as volume:
        listed = _listing(volume, path, recursive, deleted, problems)
        stats = {}
        if long or as_json:
            for i, (full, e) in enumerate(listed):
                if not e.deleted:
                    with contextlib.suppress(VmsiftError):
                        stats[i] = volume.stat(full)
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)
    if as_json:
        echo_json(document(path=path, entries=[
            {"name": e.name, "path": full, "type": e.type.value, "inode": e.inode,
             "deleted": e.deleted, "stat": stats[i].to_dict() if i in stats else None}
            for i, (full, e) in enumerate(listed)]))
        return
    lines = []
    for i, (full, e) in enumerate(listed):
        name = full if recursive else e.name
        mark = " (deleted)" if e.deleted else ""
        if not long:
            lines.append(name + ("/" if e.type.value == "dir" else "") + mark)
            continue
        st = stats.get(i)
        when = "-"
        if st and st.mtime is not None:
            when = dt.datetime.fromtimestamp(st.mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
        link = f" -> {st.symlink_target}" if st and st.symlink_target else ""
        kind = e.type.value  # "rdm" for a VMFS raw device mapping
        lines.append(f"{kind:7} {st.size if st else '-':>15} "
                     f"{human_size(st.allocated) if st else '-':>10}  {when}  {name}{link}{mark}")
    if lines:
        click.echo("\n".join(lines))


def _listing(volume: Volume, path: str, recursive: bool, deleted: bool,
             problems: list[str]) -> list[tuple[str, DirEntry]]:
    """(volume path, entry) of what `ds ls` shows: the folder's entries, every folder's below
    it with ``recursive`` (unreadable ones go to ``problems``), or a file alone."""
    from ..datastore.volume import DirEntry, FileType

    try:
        entries = volume.listdir(path, deleted=deleted)
    except SourceError:
        top = volume.stat(path)  # not there at all: its own error
        if top.type is FileType.DIR:
            raise
        return [(top.path, DirEntry(posixpath.basename(top.path), top.type, top.inode))]
    if not recursive:
        # the volume's own form of the path: OCFS2 keeps the "//" of its system directory
        folder = volume.lookup(path).path
        return [(posixpath.join(folder, e.name), e) for e in entries]
    return [(posixpath.join(folder, e.name), e)
            for folder, entries in volume.walk(path, deleted=deleted, problems=problems)
            for e in entries]


@ds.command("stat")
@_ds_args
@click.argument("path")
@click.option("--json", "as_json", is_flag=True)
def ds_stat(image: str, spans: tuple[str, ...], path: str, as_json: bool) -> None:
    """Everything the volume knows of one file."""
    with _open_ds(image, spans) as volume:
        st = volume.stat(path)
    if as_json:
        echo_json(document(**st.to_dict()))
        return
    facts = st.to_dict()
    facts.update(facts.pop("extra"))
    click.echo("\n".join(_stat_lines(facts)))


_TIME_KEYS = ("mtime", "ctime", "atime", "dtime")


def _when(seconds: float) -> str:
    """A POSIX time as UTC, with microseconds where the volume records them."""
    when = dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M:%S" + (".%f" if when.microsecond else "") + " UTC")


def _stat_value(key: str, value) -> str:
    """One stat fact for people: permissions as in ls, times in UTC, sizes with units."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    if isinstance(value, int) and key in ("mode", "raw_mode"):
        return f"{value & 0o7777:04o} ({stat_mod.filemode(value)[1:]})"
    if isinstance(value, (int, float)) and key in _TIME_KEYS and value > 0:
        return _when(value)
    if isinstance(value, int) and key in ("size", "allocated", "unwritten_bytes"):
        return size_field(value)
    return str(value)


def _stat_lines(facts: dict, indent: str = "") -> list[str]:
    """``key  value`` lines; a nested mapping (lock, RDM, index ...) or list of them (lock
    holders) indented below its key."""
    shown = {k: v for k, v in facts.items() if v is not None}
    width = max((len(k) for k in shown), default=0)
    lines = []
    for key, value in shown.items():
        if isinstance(value, dict):
            lines += [f"{indent}{key}", *_stat_lines(value, indent + "  ")]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                lines += [f"{indent}{key}[{i}]", *_stat_lines(item, indent + "  ")]
        else:
            lines.append(f"{indent}{key.ljust(width)}  {_stat_value(key, value)}")
    return lines


@ds.command("cat")
@_ds_args
@click.argument("path")
def ds_cat(image: str, spans: tuple[str, ...], path: str) -> None:
    """Write one file's contents to standard output."""
    from ..datastore.export import FILE_BLOCK

    out = click.get_binary_stream("stdout")
    with _open_ds(image, spans) as volume, volume.open(path) as src:
        for pos in range(0, src.size, FILE_BLOCK):
            out.write(src.read_exact(pos, min(FILE_BLOCK, src.size - pos), "file data"))
    out.flush()


@ds.command("extract")
@_ds_args
@click.argument("path")
@click.argument("out_dir", type=click.Path(file_okay=False))
def ds_extract(image: str, spans: tuple[str, ...], path: str, out_dir: str) -> None:
    """Copy a file or folder out (sparse; never follows links or leaves OUT_DIR).

    Goes on past what cannot be read or written, names it, and then exits 1."""
    from ..datastore.extract import extract

    with _open_ds(image, spans) as volume:
        stats = extract(volume, path, out_dir)
    for skipped in stats.skipped:
        click.echo(f"warning: skipped {skipped}", err=True)
    for failed in stats.failed:
        click.echo(f"warning: not extracted: {failed}", err=True)
    click.echo(f"{out_dir}: {stats.files} files, {stats.dirs} folders, {stats.links} links, "
               f"{stats.bytes_written} bytes written", err=True)
    if stats.failed:
        raise VmsiftError(f"{len(stats.failed)} not extracted (named above); everything else "
                          f"was", source=out_dir)


def _role(vm) -> str | None:
    """template (Oracle VM Templates/), assembly (Assemblies/), package (an OVF), or none."""
    if vm.template:
        return "template"
    if vm.package:
        return "assembly" if vm.package["assembly"] else f"{vm.package['kind']} package"
    return None


@ds.command("vms")
@_ds_images
@click.option("--json", "as_json", is_flag=True)
def ds_vms(images: tuple[str, ...], spans: tuple[str, ...], as_json: bool) -> None:
    """Every VM on the datastore with its disks, snapshots and sizes."""
    from ..datastore.vm import find_vms, oracle_vm_role

    image, *more = images
    problems: list[str] = []
    with _open_ds(image, (*more, *spans)) as volume:
        vms = list(find_vms(volume, problems))
        role = oracle_vm_role(volume)
    if as_json:
        echo_json(document(path=image, oracle_vm=role, vms=[vm.to_dict() for vm in vms],
                           problems=problems))
        return
    if role:
        click.echo(f"Oracle VM {role['role']} ({role['marker']})")
    rows = [[vm.kind, vm.name, vm.config, len(vm.disks), len(vm.snapshots),
             human_size(vm.capacity), human_size(vm.allocated), _role(vm)] for vm in vms]
    click.echo("\n".join(render_table(Table(
        "virtual machines", ["kind", "name", "config", "disks", "snapshots", "capacity",
                             "allocated", "role"], rows))))
    for vm in vms:
        click.echo(f"\n{vm.name} ({vm.config})")
        for d in vm.disks:
            problem = f"  [{d.problem}]" if d.problem else ""
            click.echo(f"  {d.device}: {d.path or '-'} {d.mode or ''} "
                       f"{human_size(d.capacity)} ({human_size(d.allocated)} stored, "
                       f"{len(d.chain)} file(s)){problem}")
        for snap in vm.snapshots:
            mark = " (current)" if snap["uid"] == vm.current_snapshot else ""
            click.echo(f"  {'  ' * snap['depth']}snapshot {snap['uid']}: "
                       f"{snap['display_name']}{mark}")
        for warning in vm.warnings:
            click.echo(f"warning: {vm.config}: {warning}", err=True)
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)
