"""The root `vmsift` command group; each command lives in its own module."""

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vmsift")
def cli() -> None:
    """Read, inspect and export the storage behind VMware and Oracle VM machines."""
