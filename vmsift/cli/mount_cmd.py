"""`vmsift mount` / `vmsift umount`: datastores and backup repositories as read-only folders."""

from __future__ import annotations

import click

from ..errors import UnsupportedError


def _fuse():
    """The FUSE layer, or a clear error when its extra is not installed."""
    try:
        from ..fuse import ops, views
    except ImportError as e:
        raise UnsupportedError(f"FUSE mounts need pyfuse3 and trio (pip install "
                               f"'vmsift[fuse]'): {e}") from None
    return ops, views


@click.command("mount")
@click.argument("args", nargs=-1, required=True, metavar="SOURCE... MOUNTPOINT")
@click.option("--span", "spans", multiple=True, type=click.Path(exists=True),
              help="Another device of a spanned VMFS volume (repeatable).")
@click.option("-r", "--repo", "repo", metavar="REPO",
              help="Mount this backup repository instead of a datastore.")
@click.option("--password-file", type=click.Path(dir_okay=False, exists=True),
              help="The repository's password, first line (else VMSIFT_PASSWORD or a prompt).")
@click.option("-f", "--foreground", is_flag=True, help="Stay in the foreground.")
@click.option("--allow-other", is_flag=True, help="Let other users read the mount too.")
@click.option("--deleted", is_flag=True, help="Also list deleted entries the format keeps.")
@click.option("--direct-io", is_flag=True,
              help="Bypass the page cache: faster bulk reads, slower small ones, no mmap.")
def mount(args: tuple[str, ...], spans: tuple[str, ...], repo: str | None,
          password_file: str | None, foreground: bool, allow_other: bool,
          deleted: bool, direct_io: bool) -> None:
    """Mount a datastore (folder, VMFS or OCFS2 image) read-only at MOUNTPOINT: files/ is
    the volume, vms/ each VM's disks at each snapshot. With -r, a backup repository:
    snapshots/, by-time/, latest/. Returns once the mount is usable; `vmsift umount
    MOUNTPOINT` ends it."""
    *sources, mountpoint = args
    if bool(sources) == bool(repo) or (deleted or spans) and repo:
        raise click.UsageError("give SOURCE... MOUNTPOINT, or -r REPO MOUNTPOINT")
    ops, views = _fuse()
    if repo:
        from ..backup.repository import Repository
        from .repo_cmd import _password

        tree = views.repository_tree(Repository.open(repo, _password(password_file)))
    else:
        from ..datastore.detect import open_datastore

        volume = open_datastore([*sources, *spans])
        tree = views.datastore_tree(volume, deleted=deleted)
    ops.mount(tree, mountpoint, foreground=foreground, allow_other=allow_other,
              direct_io=direct_io)


@click.command("umount")
@click.argument("mountpoint", type=click.Path())
def umount(mountpoint: str) -> None:
    """Unmount a vmsift mount (a dead one, whose process ended, is cleaned up)."""
    ops, _ = _fuse()
    if ops.unmount(mountpoint):
        click.echo(f"{mountpoint}: the mount was dead (its process had ended); cleaned up",
                   err=True)
