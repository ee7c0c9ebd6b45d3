"""`vmsift memory extract`: guest physical memory out of a .vmsn / .vmss (+ .vmem)."""

from __future__ import annotations

import click

from .render import document, echo_json


@click.group()
def memory() -> None:
    """Guest memory of VMware checkpoint files (.vmsn snapshot, .vmss suspend state)."""


@memory.command("extract")
@click.argument("checkpoint", type=click.Path(dir_okay=False, exists=True))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--vmem", type=click.Path(dir_okay=False, exists=True),
              help="The memory image (default: the .vmem of the same name beside CHECKPOINT, "
                   "when the RAM is not inside it).")
@click.option("--max-gib", type=click.IntRange(1), default=32768, show_default=True,
              help="Refuse a guest physical address space larger than this many GiB.")
@click.option("--force", is_flag=True, help="Overwrite OUT (and the files beside it).")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def memory_extract(checkpoint: str, out: str, vmem: str | None, max_gib: int, force: bool,
                   as_json: bool) -> None:
    """Write the guest's physical memory to OUT as a sparse raw image (regions at their
    guest-physical addresses, gaps left as holes), and the embedded config (OUT.vmx), NVRAM
    (OUT.nvram) and screenshot (OUT.png) beside it."""
    from ..forensics.memory import extract_memory

    result = extract_memory(checkpoint, out, vmem=vmem, overwrite=force,
                            max_size=max_gib << 30)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        echo_json(document(path=checkpoint, **result.to_dict()))
        return
    click.echo(f"{out}: {result.size} bytes of guest physical memory, {result.written} "
               f"written, {len(result.regions)} regions")
    for role, path in result.files.items():
        click.echo(f"{path}: {role}")
