"""`vmsift restore`: one disk, or a VM's folder, from a snapshot."""

from __future__ import annotations

import contextlib
import sys

import click

from ..report import human_size
from .render import document, echo_json
from .repo_cmd import open_repo, repo_options


@click.command("restore")
@repo_options
@click.argument("snapshot")
@click.option("--vm", "vm_name", help="With `latest`: the latest snapshot of this VM.")
@click.option("--disk", "disk_name", help="Only this disk (name or device, as `vmsift ls` "
                                          "shows).")
@click.option("--target", required=True, type=click.Path(file_okay=False),
              help="Folder to restore into (created if missing).")
@click.option("--format", "fmt", type=click.Choice(["raw", "vmdk"]), default="raw",
              show_default=True, help="Disks as sparse raw files or as VMDKs.")
@click.option("--subformat", type=click.Choice(["monolithicSparse", "streamOptimized"]),
              default="monolithicSparse", show_default=True, help="VMDK kind to write.")
@click.option("--chain", is_flag=True,
              help="Rebuild each disk's snapshot tree (base, deltas, .vmsd) as it was; needs "
                   "a snapshot made by `backup --chain`.")
@click.option("--at", "at", metavar="UID|FILE",
              help="With --disk: the disk as it was at this .vmsd snapshot (uid) or tree file "
                   "(needs `backup --chain`).")
@click.option("--force", is_flag=True, help="Overwrite files that exist in the target.")
@click.option("--json", "as_json", is_flag=True)
def restore_cmd(repo_path: str, password_file: str | None, snapshot: str,
                vm_name: str | None, disk_name: str | None, target: str, fmt: str,
                subformat: str, chain: bool, at: str | None, force: bool,
                as_json: bool) -> None:
    """Restore SNAPSHOT (an id, `latest` or `latest:VMNAME`) into TARGET: one disk with
    --disk, else the whole VM folder (disks, small files, the .vmx pointing at the restored
    disks). Every chunk is verified before it is written; nothing is overwritten without
    --force. With --chain the VM comes back with its snapshot tree; with --disk and --at, one
    disk as it was at a snapshot of its .vmsd."""
    import os

    from ..backup.restorer import Restored, restore_disk, restore_tree, restore_vm

    bars = contextlib.ExitStack()

    def progress(label: str, total: int):
        if as_json or not sys.stderr.isatty() or not total:
            return None
        bars.close()
        return bars.enter_context(click.progressbar(length=total, label=label,
                                                    file=sys.stderr)).update

    with open_repo(repo_path, password_file) as repo, bars:
        repo.sync_index()
        snap = repo.find_snapshot(snapshot, vm_name)
        if at and not disk_name:
            raise click.UsageError("--at needs --disk")
        if disk_name and chain:
            os.makedirs(target, exist_ok=True)
            result = Restored(restore_tree(repo, snap, snap.disk(disk_name), target, fmt=fmt,
                                           overwrite=force, progress=progress))
        elif disk_name or snap.vm.get("kind") == "disk":
            entry = snap.disk(disk_name) if disk_name else snap.disks[0]
            if at:
                entry = entry.at(at)
            os.makedirs(target, exist_ok=True)
            result = Restored(restore_disk(repo, snap, entry, target, fmt=fmt,
                                           subformat=subformat, overwrite=force,
                                           progress=progress(entry.name, entry.size)))
        else:
            result = restore_vm(repo, snap, target, fmt=fmt, subformat=subformat,
                                overwrite=force, chain=chain, progress=progress)
    if as_json:
        echo_json(document(snapshot=snap.id, vm=snap.vm, written=result.written,
                           skipped=result.skipped))
        return
    for w in result.written:
        extra = f", {human_size(w['written'])} written" if "written" in w else ""
        click.echo(f"{w['path']}: {w['kind']}" + (f", {human_size(w['size'])}" if "size" in w
                                                   else "") + extra)
    for s in result.skipped:
        click.echo(f"note: not restored: {s}", err=True)
