"""The ``vmsift`` command line: options in, library calls, reports out (text or JSON).

Exit codes (see docs/cli.md): 0 success, 2 usage, and each `VmsiftError` class's own code;
70 for an internal error (a bug: please report it; VMSIFT_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import sys
import traceback
from typing import Any

import click

from . import __version__
from .errors import VmsiftError
from .report import Report, Table

JSON_SCHEMA_VERSION = 1
INTERNAL_ERROR = 70
MAX_CELL = 80


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def report_document(path: str, report: Report) -> dict[str, Any]:
    """The stable JSON document of `vmsift inspect --json` (docs/json.md)."""
    return {"vmsift": __version__, "schema": JSON_SCHEMA_VERSION, "path": path,
            "kind": report.kind, "title": report.title, "detected_by": report.detected_by,
            "data": report.data, "warnings": report.warnings}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value).replace("\n", "\\n")
    return text if len(text) <= MAX_CELL else text[:MAX_CELL - 1] + "…"


def render_table(table: Table) -> list[str]:
    if not table.rows:
        return [f"{table.title}: none"]
    cells = [[_cell(c) for c in row] for row in table.rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(table.columns)]
    fmt = lambda row: "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
    return [f"{table.title} ({len(cells)})", fmt(table.columns),
            fmt(["-" * w for w in widths]), *map(fmt, cells)]


def render_text(path: str, report: Report) -> str:
    lines = [f"{path}: {report.title}"]
    shown = {k: v for k, v in report.fields.items() if v is not None}
    width = max((len(k) for k in shown), default=0)
    lines += [f"  {k.ljust(width)}  {_cell(v)}" for k, v in shown.items()]
    for table in report.tables:
        lines += ["", *render_table(table)]
    return "\n".join(lines)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vmsift")
def cli() -> None:
    """Read, inspect and export the storage behind VMware and Oracle VM machines."""


@cli.command()
@click.argument("path", type=click.Path(dir_okay=True, allow_dash=False))
@click.option("--json", "as_json", is_flag=True, help="Print the stable JSON document.")
def inspect(path: str, as_json: bool) -> None:
    """Decode one VM file, whatever its kind, recognised by its content.

    Knows .vmx, .vmsd, .vmxf, .vmtm, Oracle VM vm.cfg, VMDK descriptors and sparse extents,
    -ctk.vmdk, .nvram, .vmsn/.vmss, .vmem/.vswp and vmware.log.
    """
    from .inspect import inspect_folder, inspect_path

    if os.path.isdir(path):
        _inspect_folder(path, inspect_folder(path), as_json)
        return
    report = inspect_path(path)
    if as_json:
        click.echo(json.dumps(report_document(path, report), indent=2, ensure_ascii=False,
                              default=_json_default))
    else:
        click.echo(render_text(path, report))
        for warning in report.warnings:
            click.echo(f"warning: {warning}", err=True)


@cli.group()
def disk() -> None:
    """Open a VMware virtual disk with its snapshot chain: info, map, export."""


def _disk_options(f):
    f = click.option("--datastore", type=click.Path(file_okay=False, exists=True),
                     help="Folder that holds the whole chain (default: the disk's folder).")(f)
    f = click.option("--no-verify", is_flag=True,
                     help="Read on when CIDs or capacities of the chain disagree (warns).")(f)
    f = click.option("--snapshot", metavar="NAME|UID",
                     help="The disk as it was at this snapshot (from the .vmsd beside it).")(f)
    f = click.option("--device", type=click.Path(dir_okay=False, exists=True),
                     help="Image of the LUN behind a raw device mapping.")(f)
    f = click.option("--salvage", is_flag=True,
                     help="Read damaged sparse grains as zeros and list them (forensics).")(f)
    return click.argument("vmdk", type=click.Path(dir_okay=False))(f)


@contextlib.contextmanager
def _open_disk(vmdk: str, datastore: str | None, no_verify: bool, snapshot: str | None,
               device: str | None = None, salvage: bool = False):
    """The disk named on the command line, opened read-only, with its chain; warns about
    what salvage had to zero when done."""
    from .datastore.disk import OpenOptions, open_disk
    from .datastore.folder import FolderVolume
    from .datastore.snapshots import disk_at_snapshot
    from .errors import ChainError
    from .source import FileSource

    volume = FolderVolume(datastore or os.path.dirname(os.path.abspath(vmdk)))
    rel = os.path.relpath(os.path.realpath(vmdk), volume.root)
    if rel.startswith(".."):
        raise ChainError(f"{vmdk} is not inside the datastore folder {volume.root}")
    if snapshot is not None:
        rel = disk_at_snapshot(volume, rel, snapshot)
    with contextlib.ExitStack() as stack:
        dev = stack.enter_context(FileSource(device)) if device else None
        disk = stack.enter_context(open_disk(volume, rel, strict=not no_verify,
                                             options=OpenOptions(dev, salvage)))
        yield disk
        for link in disk.chain:
            for note in getattr(link.source, "damaged", []):
                click.echo(f"warning: salvaged: {note}", err=True)


def _echo_json(doc: dict[str, Any]) -> None:
    click.echo(json.dumps(doc, indent=2, ensure_ascii=False, default=_json_default))


@disk.command("info")
@_disk_options
@click.option("--json", "as_json", is_flag=True, help="Print the stable JSON document.")
def disk_info(vmdk: str, datastore: str | None, no_verify: bool, snapshot: str | None,
              device: str | None, salvage: bool, as_json: bool) -> None:
    """Chain, extents, geometry, adapter and change tracking of a disk."""
    from .datastore.disk import describe

    with _open_disk(vmdk, datastore, no_verify, snapshot, device, salvage) as d:
        report = describe(d)
    if as_json:
        _echo_json(report_document(vmdk, report))
        return
    click.echo(render_text(vmdk, report))
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)


@disk.command("map")
@_disk_options
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
def disk_map(vmdk: str, datastore: str | None, no_verify: bool, snapshot: str | None,
             device: str | None, salvage: bool, as_json: bool) -> None:
    """The allocation map of the flattened disk: DATA, ZERO and HOLE runs."""
    with _open_disk(vmdk, datastore, no_verify, snapshot, device, salvage) as d:
        runs = list(d.extents())
        size = d.size
    if as_json:
        _echo_json({"vmsift": __version__, "schema": JSON_SCHEMA_VERSION, "path": vmdk,
                    "size": size, "runs": [{"offset": r.offset, "length": r.length,
                                            "kind": r.kind.value} for r in runs]})
        return
    for r in runs:
        click.echo(f"{r.offset:>16}  {r.length:>16}  {r.kind.value}")


@disk.command("export")
@_disk_options
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["raw", "vmdk"]), default="raw",
              show_default=True, help="raw (sparse file) or a single-file VMDK.")
@click.option("--subformat", type=click.Choice(["monolithicSparse", "streamOptimized"]),
              default="monolithicSparse", show_default=True, help="VMDK kind to write.")
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
def disk_export(vmdk: str, datastore: str | None, no_verify: bool, snapshot: str | None,
                device: str | None, salvage: bool, out: str, fmt: str, subformat: str,
                force: bool) -> None:
    """Write the flattened disk to OUT (raw output is sparse; holes are never written)."""
    from .datastore.export import export_raw
    from .formats.vmdk.writer import ADAPTERS, write_vmdk

    with _open_disk(vmdk, datastore, no_verify, snapshot, device, salvage) as d:
        def run(progress=None):
            if fmt == "raw":
                return export_raw(d, out, overwrite=force, progress=progress)
            adapter = d.descriptor.ddb_get("adapterType")
            return write_vmdk(d, out, subformat, overwrite=force, progress=progress,
                              adapter=adapter if adapter in ADAPTERS else "lsilogic")

        if sys.stderr.isatty():
            with click.progressbar(length=d.size, label="export", file=sys.stderr) as bar:
                stats = run(bar.update)
        else:
            stats = run()
    if fmt == "raw":
        click.echo(f"{out}: {stats.size} bytes, {stats.written} written, "
                   f"{stats.skipped} left as holes", err=True)
    else:
        click.echo(f"{out}: {stats.subformat}, {stats.size} bytes, {stats.grains_stored} grains "
                   f"stored, file {stats.file_size} bytes", err=True)


@cli.group()
def ds() -> None:
    """Open a datastore (folder, VMFS or OCFS2 image, partitioned disk) read-only."""


def _ds_args(f):
    f = click.option("--span", "spans", multiple=True, type=click.Path(exists=True),
                     help="Another device of a spanned VMFS volume (repeatable).")(f)
    return click.argument("image", type=click.Path(exists=True))(f)


@contextlib.contextmanager
def _open_ds(image: str, spans: tuple[str, ...]):
    from .datastore.detect import open_datastore

    volume = open_datastore([image, *spans])
    try:
        yield volume
    finally:
        volume.close()


def _human(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@ds.command("info")
@_ds_args
@click.option("--json", "as_json", is_flag=True)
def ds_info(image: str, spans: tuple[str, ...], as_json: bool) -> None:
    """What the image is: kind, UUIDs, label, sizes, heartbeats, locks, slot maps."""
    with _open_ds(image, spans) as volume:
        report = volume.info()
    if as_json:
        _echo_json(report_document(image, report))
        return
    click.echo(render_text(image, report))
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)


@ds.command("ls")
@_ds_args
@click.argument("path", default="")
@click.option("-l", "long", is_flag=True, help="Type, size, allocation, time.")
@click.option("--deleted", is_flag=True, help="Also deleted entries that can be recovered.")
@click.option("--json", "as_json", is_flag=True)
def ds_ls(image: str, spans: tuple[str, ...], path: str, long: bool, deleted: bool,
          as_json: bool) -> None:
    """List a folder of the datastore."""
    import posixpath

    with _open_ds(image, spans) as volume:
        entries = volume.listdir(path, deleted=deleted)
        stats = {}
        if long or as_json:
            for e in entries:
                if not e.deleted:
                    with contextlib.suppress(VmsiftError):
                        stats[e.name] = volume.stat(posixpath.join(path, e.name))
    if as_json:
        _echo_json({"vmsift": __version__, "schema": JSON_SCHEMA_VERSION, "path": path,
                    "entries": [{"name": e.name, "type": e.type.value, "inode": e.inode,
                                 "deleted": e.deleted,
                                 "stat": stats[e.name].to_dict() if e.name in stats else None}
                                for e in entries]})
        return
    for e in entries:
        mark = " (deleted)" if e.deleted else ""
        if not long:
            click.echo(e.name + ("/" if e.type.value == "dir" else "") + mark)
            continue
        st = stats.get(e.name)
        when = "-"
        if st and st.mtime is not None:
            import datetime as dt
            when = dt.datetime.fromtimestamp(st.mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
        link = f" -> {st.symlink_target}" if st and st.symlink_target else ""
        click.echo(f"{e.type.value:7} {st.size if st else '-':>15} "
                   f"{_human(st.allocated) if st else '-':>10}  {when}  {e.name}{link}{mark}")


@ds.command("stat")
@_ds_args
@click.argument("path")
@click.option("--json", "as_json", is_flag=True)
def ds_stat(image: str, spans: tuple[str, ...], path: str, as_json: bool) -> None:
    """Everything the volume knows of one file."""
    with _open_ds(image, spans) as volume:
        st = volume.stat(path)
    if as_json:
        _echo_json({"vmsift": __version__, "schema": JSON_SCHEMA_VERSION, **st.to_dict()})
        return
    for key, value in st.to_dict().items():
        if key != "extra" and value is not None:
            click.echo(f"{key:15} {value}")
    for key, value in st.extra.items():
        click.echo(f"{key:15} {value}")


@ds.command("cat")
@_ds_args
@click.argument("path")
def ds_cat(image: str, spans: tuple[str, ...], path: str) -> None:
    """Write one file's contents to standard output."""
    out = click.get_binary_stream("stdout")
    with _open_ds(image, spans) as volume, volume.open(path) as src:
        for pos in range(0, src.size, 4 << 20):
            out.write(src.read_exact(pos, min(4 << 20, src.size - pos), "file data"))
    out.flush()


@ds.command("extract")
@_ds_args
@click.argument("path")
@click.argument("out_dir", type=click.Path(file_okay=False))
def ds_extract(image: str, spans: tuple[str, ...], path: str, out_dir: str) -> None:
    """Copy a file or folder out (sparse; never follows links or leaves OUT_DIR)."""
    from .datastore.extract import extract

    with _open_ds(image, spans) as volume:
        stats = extract(volume, path, out_dir)
    for skipped in stats.skipped:
        click.echo(f"warning: skipped {skipped}", err=True)
    click.echo(f"{out_dir}: {stats.files} files, {stats.dirs} folders, {stats.links} links, "
               f"{stats.bytes_written} bytes written", err=True)


@ds.command("vms")
@_ds_args
@click.option("--json", "as_json", is_flag=True)
def ds_vms(image: str, spans: tuple[str, ...], as_json: bool) -> None:
    """Every VM on the datastore with its disks, snapshots and sizes."""
    from .datastore.vm import find_vms

    with _open_ds(image, spans) as volume:
        vms = list(find_vms(volume))
    if as_json:
        _echo_json({"vmsift": __version__, "schema": JSON_SCHEMA_VERSION, "path": image,
                    "vms": [vm.to_dict() for vm in vms]})
        return
    rows = [[vm.kind, vm.name, vm.config, len(vm.disks), len(vm.snapshots),
             _human(vm.capacity), _human(vm.allocated)] for vm in vms]
    click.echo("\n".join(render_table(Table(
        "virtual machines", ["kind", "name", "config", "disks", "snapshots", "capacity",
                             "allocated"], rows))))
    for vm in vms:
        click.echo(f"\n{vm.name} ({vm.config})")
        for d in vm.disks:
            problem = f"  [{d.problem}]" if d.problem else ""
            click.echo(f"  {d.device}: {d.path or '-'} {d.mode or ''} "
                       f"{_human(d.capacity)} ({_human(d.allocated)} stored, "
                       f"{len(d.chain)} file(s)){problem}")
        for snap in vm.snapshots:
            mark = " (current)" if snap["uid"] == vm.current_snapshot else ""
            click.echo(f"  {'  ' * snap['depth']}snapshot {snap['uid']}: "
                       f"{snap['display_name']}{mark}")
        for warning in vm.warnings:
            click.echo(f"warning: {vm.config}: {warning}", err=True)


def _error_document(error: VmsiftError) -> dict[str, Any]:
    return {"class": type(error).__name__, "message": str(error), "exit_code": error.exit_code}


def _inspect_folder(path: str, entries: list, as_json: bool) -> None:
    """Print every file of a folder; files of unknown kind are listed, damaged ones named."""
    if as_json:
        files = []
        for e in entries:
            doc = {"name": e.name, "size": e.size}
            if e.report:
                doc.update(report_document(os.path.join(path, e.name), e.report))
            else:
                doc["error"] = _error_document(e.error)
            files.append(doc)
        click.echo(json.dumps({"vmsift": __version__, "schema": JSON_SCHEMA_VERSION,
                               "path": path, "kind": "folder", "files": files},
                              indent=2, ensure_ascii=False, default=_json_default))
        return
    rows = [[e.name, e.size, e.report.kind if e.report else "-",
             e.report.title if e.report else str(e.error.message)] for e in entries]
    click.echo(f"{path}: folder")
    click.echo("\n".join(["", *render_table(Table("files", ["name", "size", "kind", "what"], rows))]))
    for e in entries:
        if e.report:
            click.echo("\n" + render_text(os.path.join(path, e.name), e.report))
            for warning in e.report.warnings:
                click.echo(f"warning: {e.name}: {warning}", err=True)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map errors to one line on stderr and their exit code."""
    try:
        cli.main(args=argv, prog_name="vmsift", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("vmsift: aborted", err=True)
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except VmsiftError as e:
        click.echo(f"vmsift: error: {e}", err=True)
        return e.exit_code
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug: say so in one line unless debugging
        if os.environ.get("VMSIFT_DEBUG"):
            traceback.print_exc()
        click.echo(f"vmsift: internal error: {type(e).__name__}: {e} "
                   "(a bug; set VMSIFT_DEBUG=1 for details)", err=True)
        return INTERNAL_ERROR
    return 0


def entry() -> None:
    sys.exit(main())
