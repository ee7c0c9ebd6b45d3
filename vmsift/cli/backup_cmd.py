"""`vmsift backup`: VMs of a datastore image or folder, a VM folder, or one disk, into a
repository (one snapshot per VM)."""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
import threading

import click

from ..errors import PartialError
from ..report import human_size
from .repo_cmd import open_repo, parse_duration, repo_options, retry_lock_option


def _line(e: dict) -> str:
    if e["event"] == "disk":
        if "skipped" in e:
            return f"{e['vm']}: disk {e['disk']} not backed up: {e['skipped']}"
        s = e["stats"]
        missed = e.get("hint_missed")
        check = f"; the hint MISSED {len(missed)} range(s)" if missed else \
            ("; the hint missed nothing" if missed is not None else "")
        return (f"{e['vm']}: disk {e['disk']} ({e['hint']} hint{check}): "
                f"{human_size(s['size'])}, read "
                f"{human_size(s['read'])}, skipped {human_size(s['skipped'] + s['zero'])} "
                f"zero/hole, reused {human_size(s['reused'])}, "
                + (f"kept {human_size(s['kept'])} as it was, " if s['kept'] else "")
                + f"new {human_size(s['new'])} "
                f"stored as {human_size(s['stored'])}, {s['seconds']:.1f} s" + _tree(e))
    s = e["stats"]
    return (f"snapshot {e['short_id']} saved: VM {e['vm']}, {e['disks']} disk(s), "
            f"{e['files']} file(s), {human_size(s['new'])} new, {human_size(s['stored'])} "
            f"stored, {s['seconds']:.1f} s")


def _tree(e: dict) -> str:
    links = e.get("links")
    if not links:
        return ""
    read = sum(link["read"] or 0 for link in links[:-1])
    return (f"; snapshot tree of {len(links)} file(s), {human_size(read)} read for the files "
            f"below the current one")


@click.command("backup")
@repo_options
@click.argument("source", type=click.Path(exists=True))
@click.option("--span", "spans", multiple=True, type=click.Path(exists=True),
              help="Another device of a spanned VMFS volume (repeatable).")
@click.option("--vm", "vms", multiple=True, metavar="NAME",
              help="Only VMs of this name (shell pattern; repeatable).")
@click.option("--disk", "disks", multiple=True, metavar="GLOB",
              help="Only disks whose name or device matches (repeatable).")
@click.option("--tag", "tags", multiple=True, help="Tag the snapshots (repeatable).")
@click.option("--host", help="Host name recorded in the snapshots (default: this host).")
@click.option("--no-hints", is_flag=True, help="Read every disk in full (no change hints).")
@click.option("--verify-hints", is_flag=True,
              help="Read every disk in full anyway and report any block a hint missed.")
@click.option("--chain", is_flag=True,
              help="Also keep each disk's snapshot tree: the disk at every snapshot of the "
                   "VM's .vmsd (restore --chain rebuilds it).")
@retry_lock_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line per event.")
def backup_cmd(repo_path: str, password_file: str | None, source: str, spans: tuple[str, ...],
               vms: tuple[str, ...], disks: tuple[str, ...], tags: tuple[str, ...],
               host: str | None, no_hints: bool, verify_hints: bool, chain: bool,
               retry_lock: str | None, as_json: bool) -> None:
    """Back up SOURCE: a VMFS/OCFS2 image (bare, partitioned, spanned with --span), a
    datastore or VM folder, or one VMDK or raw disk image. Each disk is stored flattened at
    its current state; a disk that cannot be read is reported and skipped (exit 10). A disk
    backed up before is read only where a change hint (change tracking, new snapshot deltas,
    unchanged files) says it may have changed."""
    from ..backup import repository  # noqa: F401 - before the thread below, not beside it

    # The engine is imported on a thread while the repository opens: an encrypted one
    # derives its key first (scrypt, 0.2 s), which lets go of the interpreter lock.
    engine = threading.Thread(target=importlib.import_module, args=("vmsift.backup.archiver",),
                              name="vmsift-import")
    engine.start()

    def events(e: dict) -> None:
        if as_json:
            click.echo(json.dumps(e))
        else:
            click.echo(_line(e), err=e["event"] == "disk" and "skipped" in e)

    bars = contextlib.ExitStack()

    def progress(label: str, total: int):
        if as_json or not sys.stderr.isatty() or not total:
            return None
        bars.close()
        bar = bars.enter_context(click.progressbar(length=total, label=label, file=sys.stderr))
        return bar.update

    with open_repo(repo_path, password_file) as repo, \
            repo.lock(exclusive=False, wait=parse_duration(retry_lock)), bars:
        engine.join()
        from ..backup.archiver import backup  # (an error importing it is raised here)

        hints = "verify" if verify_hints else "off" if no_hints else "auto"
        result = backup(repo, [source, *spans], vms=vms, disks=disks, tags=tags, host=host,
                        hints=hints, chain=chain, events=events, progress=progress)
    for p in result.problems:
        click.echo(f"warning: {p}", err=True)
    if result.partial:
        raise PartialError(f"{len(result.problems)} part(s) not backed up; the rest is in "
                           f"{len(result.snapshots)} snapshot(s)", source=source)
