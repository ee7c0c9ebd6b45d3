"""`vmsift carve`: scan an image (raw, VMFS, OCFS2) for VM artefacts by signature."""

from __future__ import annotations

import sys

import click

from ..report import Table, human_size
from .render import document, echo_json, render_table

_SHOWN_FACTS = 4


def _facts(facts: dict) -> str:
    shown = [f"{k}={v}" for k, v in facts.items() if v not in (None, [], False)]
    return ", ".join(shown[:_SHOWN_FACTS])


@click.command()
@click.argument("image", type=click.Path(dir_okay=False, exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print the stable JSON document.")
@click.option("--extract", "extract_dir", type=click.Path(file_okay=False),
              help="Write each artefact found into this folder, named by its offset.")
@click.option("--unallocated-only", is_flag=True,
              help="Scan only space the datastore's allocation bitmaps mark free.")
def carve(image: str, as_json: bool, extract_dir: str | None, unallocated_only: bool) -> None:
    """Find VM artefacts in IMAGE by signature: VMDK sparse / COWD / SESparse headers and
    descriptors, .vmx, .vmsd, .nvram, .vmsn/.vmss, and deleted directory entries; says
    for each whether it lies in allocated space (VMFS3/5, OCFS2 images)."""
    from ..forensics.carve import carve as carve_image, extract

    if sys.stderr.isatty():
        from ..source import FileSource

        with FileSource(image) as src:  # a block device's size too
            size = src.size
        with click.progressbar(length=max(size, 1), label="carve",
                               file=sys.stderr) as bar:
            result = carve_image(image, unallocated_only=unallocated_only,
                                 progress=bar.update)
    else:
        result = carve_image(image, unallocated_only=unallocated_only)
    if extract_dir:
        result.warnings += extract(result, extract_dir)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        echo_json(document(path=image, **result.to_dict()))
        return
    rows = [[h.offset if h.offset is not None else "-", h.kind,
             h.length, {True: "allocated", False: "unallocated", None: "-"}[h.allocated],
             (f"in {h.within:#x}; " if h.within is not None else "") + _facts(h.facts)
             + (f" ({h.note})" if h.note else "")] for h in result.hits]
    click.echo(f"{image}: {result.layout}, {human_size(result.size)}, scanned "
               f"{human_size(result.scanned)} in {result.seconds:.2f} s")
    click.echo("\n".join(render_table(Table("artefacts", ["offset", "kind", "length",
                                                          "allocation", "facts"], rows))))
