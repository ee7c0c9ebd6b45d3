"""`vmsift inspect`: decode one file, or every file of a folder."""

from __future__ import annotations

import os

import click

from ..report import Table
from .render import (document, echo_json, error_document, print_report, render_table,
                     render_text, report_document)


@click.command()
@click.argument("path", type=click.Path(dir_okay=True, allow_dash=False))
@click.option("--json", "as_json", is_flag=True, help="Print the stable JSON document.")
def inspect(path: str, as_json: bool) -> None:
    """Decode one VM file, whatever its kind, recognised by its content.

    Knows .vmx, .vmsd, .vmxf, .vmtm, Oracle VM vm.cfg, VMDK descriptors, sparse, COWD and
    SESparse extents, -ctk.vmdk, .nvram, .vmsn/.vmss, .vmem/.vswp, vmware.log, MBR/GPT
    partition tables, OCFS2 superblocks and OVF packages (.ova, .ovf). Given a folder,
    decodes every file in it.
    """
    from ..inspect import inspect_folder, inspect_path

    if os.path.isdir(path):
        _inspect_folder(path, inspect_folder(path), as_json)
        return
    print_report(path, inspect_path(path), as_json)



def _inspect_folder(path: str, entries: list, as_json: bool) -> None:
    """Print every file of a folder; files of unknown kind are listed, damaged ones named."""
    if as_json:
        files = []
        for e in entries:
            doc = {"name": e.name, "size": e.size}
            if e.report:
                doc.update(report_document(os.path.join(path, e.name), e.report))
            else:
                doc["error"] = error_document(e.error)
            files.append(doc)
        echo_json(document(path=path, kind="folder", files=files))
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
