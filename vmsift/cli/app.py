"""The root `vmsift` command group; each command lives in its own module, imported only when
that command runs (or when ``--help`` lists them all), so a command pays no start-up time for
the others.

A new command joins with one line in `COMMANDS`: its name and ``"module:attribute"`` of its
click command or group, defined in its module with plain ``@click.command()`` /
``@click.group()`` (not registered on `cli`)::

    COMMANDS = {..., "backup": "vmsift.cli.backup_cmd:backup"}
"""

from __future__ import annotations

import importlib

import click

from .. import __version__

COMMANDS: dict[str, str] = {
    "disk": "vmsift.cli.disk_cmd:disk",
    "ds": "vmsift.cli.ds_cmd:ds",
    "inspect": "vmsift.cli.inspect_cmd:inspect",
    "verify": "vmsift.cli.verify_cmd:verify",
    "init": "vmsift.cli.repo_cmd:init_cmd",
    "backup": "vmsift.cli.backup_cmd:backup_cmd",
    "snapshots": "vmsift.cli.repo_cmd:snapshots_cmd",
    "ls": "vmsift.cli.repo_cmd:ls_cmd",
    "cat": "vmsift.cli.repo_cmd:cat_cmd",
    "diff": "vmsift.cli.repo_cmd:diff_cmd",
    "restore": "vmsift.cli.restore_cmd:restore_cmd",
    "check": "vmsift.cli.repo_cmd:check_cmd",
    "forget": "vmsift.cli.prune_cmd:forget_cmd",
    "prune": "vmsift.cli.prune_cmd:prune_cmd",
    "unlock": "vmsift.cli.repo_cmd:unlock_cmd",
    "stats": "vmsift.cli.repo_cmd:stats_cmd",
    "mount": "vmsift.cli.mount_cmd:mount",
    "umount": "vmsift.cli.mount_cmd:umount",
    "audit": "vmsift.cli.audit_cmd:audit",
    "timeline": "vmsift.cli.timeline_cmd:timeline",
    "memory": "vmsift.cli.memory_cmd:memory",
    "carve": "vmsift.cli.carve_cmd:carve",
}


class LazyGroup(click.Group):
    """A click group whose commands are imported from `COMMANDS` when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMANDS:
            module, _, attr = COMMANDS[name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vmsift")
def cli() -> None:
    """Read, inspect and export the storage behind VMware and Oracle VM machines."""
