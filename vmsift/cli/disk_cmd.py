"""`vmsift disk info|map|export`: a VMware virtual disk with its snapshot chain."""

from __future__ import annotations

import contextlib
import os
import sys

import click

from .render import document, echo_json, print_report


@click.group()
def disk() -> None:
    """Open a VMware virtual disk with its snapshot chain: info, map, export."""


def _disk_options(f):
    f = click.option("--datastore", type=click.Path(exists=True),
                     help="Folder that holds the whole chain (default: the disk's folder), or "
                          "a datastore image (VMFS, OCFS2, partitioned disk): VMDK is then a "
                          "path inside it.")(f)
    f = click.option("--no-verify", is_flag=True,
                     help="Read on when CIDs or capacities of the chain disagree (warns).")(f)
    f = click.option("--snapshot", metavar="NAME|UID",
                     help="The disk as it was at this snapshot (from the .vmsd beside it).")(f)
    f = click.option("--device", type=click.Path(dir_okay=False, exists=True),
                     help="Image of the LUN behind a raw device mapping.")(f)
    f = click.option("--salvage", is_flag=True,
                     help="Read damaged sparse grains as zeros and list them (forensics).")(f)
    f = click.option("--disk", "package_disk", metavar="N|NAME",
                     help="For an OVA or .ovf: the disk, by number (1-based), disk id or "
                          "file name (needed when the package has several).")(f)
    return click.argument("vmdk", type=click.Path(dir_okay=False))(f)


def _is_package(path: str) -> bool:
    return path.lower().endswith((".ova", ".ovf"))


@contextlib.contextmanager
def _open_package_disk(path: str, spec: str | None, datastore: str | None,
                       snapshot: str | None, device: str | None):
    """A disk of the OVA or OVF package at ``path``, read in place."""
    from ..datastore.ovf import open_package, open_package_disk
    from ..errors import UnsupportedError

    if datastore or snapshot or device:
        raise UnsupportedError("--datastore, --snapshot and --device do not apply to an "
                               "OVF package", source=path)
    with open_package(path) as pkg, open_package_disk(pkg, pkg.find_disk(spec)) as d:
        yield d


@contextlib.contextmanager
def _open_disk(vmdk: str, datastore: str | None, no_verify: bool, snapshot: str | None,
               device: str | None = None, salvage: bool = False, package_disk: str | None = None):
    """The disk named on the command line, opened read-only, with its chain; warns about
    what salvage had to zero when done. An OVA or .ovf opens its disk ``package_disk``."""
    if _is_package(vmdk):
        with _open_package_disk(vmdk, package_disk, datastore, snapshot, device) as d:
            yield d
        return
    from ..datastore.detect import open_datastore
    from ..datastore.disk import OpenOptions, open_disk
    from ..datastore.folder import FolderVolume
    from ..datastore.snapshots import disk_at_snapshot
    from ..datastore.volume import normalize
    from ..errors import ChainError
    from ..source import FileSource

    with contextlib.ExitStack() as stack:
        if datastore and not os.path.isdir(datastore):
            volume = stack.enter_context(open_datastore([datastore]))
            rel = normalize(vmdk)
        else:
            volume = FolderVolume(datastore or os.path.dirname(os.path.abspath(vmdk)))
            rel = os.path.relpath(os.path.realpath(vmdk), volume.root)
            if rel.startswith(".."):
                raise ChainError(f"{vmdk} is not inside the datastore folder {volume.root}")
        if snapshot is not None:
            rel = disk_at_snapshot(volume, rel, snapshot)
        dev = stack.enter_context(FileSource(device)) if device else None
        disk = stack.enter_context(open_disk(volume, rel, strict=not no_verify,
                                             options=OpenOptions(dev, salvage)))
        yield disk
        for note in disk.damaged():
            click.echo(f"warning: salvaged: {note}", err=True)


@disk.command("info")
@_disk_options
@click.option("--json", "as_json", is_flag=True, help="Print the stable JSON document.")
def disk_info(vmdk: str, datastore: str | None, no_verify: bool, snapshot: str | None,
              device: str | None, salvage: bool, package_disk: str | None,
              as_json: bool) -> None:
    """Chain, extents, geometry, adapter and change tracking of a disk."""
    from ..datastore.disk import describe
    from ..datastore.ovf import StreamedDisk
    from ..datastore.ovf_report import describe_streamed

    with _open_disk(vmdk, datastore, no_verify, snapshot, device, salvage, package_disk) as d:
        report = describe_streamed(d) if isinstance(d, StreamedDisk) else describe(d)
    print_report(vmdk, report, as_json)


@disk.command("map")
@_disk_options
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
def disk_map(vmdk: str, datastore: str | None, no_verify: bool, snapshot: str | None,
             device: str | None, salvage: bool, package_disk: str | None,
             as_json: bool) -> None:
    """The allocation map of the flattened disk: DATA, ZERO and HOLE runs."""
    with _open_disk(vmdk, datastore, no_verify, snapshot, device, salvage, package_disk) as d:
        runs = list(d.extents())
        size = d.size
    if as_json:
        echo_json(document(path=vmdk, size=size, runs=[
            {"offset": r.offset, "length": r.length, "kind": r.kind.value} for r in runs]))
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
                device: str | None, salvage: bool, package_disk: str | None, out: str, fmt: str,
                subformat: str, force: bool) -> None:
    """Write the flattened disk to OUT (raw output is sparse; holes are never written)."""
    from ..datastore.export import export_raw
    from ..datastore.ovf import StreamedDisk, export_stream
    from ..errors import UnsupportedError
    from ..formats.vmdk.writer import ADAPTERS, write_vmdk

    with _open_disk(vmdk, datastore, no_verify, snapshot, device, salvage, package_disk) as d:
        def run(progress=None):
            if isinstance(d, StreamedDisk):
                if fmt != "raw":
                    raise UnsupportedError("a gzip-compressed package disk exports as raw "
                                           "only (it is read once, as a stream)", source=d.name)
                return export_stream(d, out, overwrite=force, progress=progress)
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
