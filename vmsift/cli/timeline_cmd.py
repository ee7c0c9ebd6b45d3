"""`vmsift timeline`: one sorted list of events of a datastore or a VM."""

from __future__ import annotations

import click

from .render import cell, document, echo_json, render_table


@click.command()
@click.argument("source", type=click.Path(exists=True))
@click.option("--json", "fmt", flag_value="json", help="The stable JSON document.")
@click.option("--csv", "fmt", flag_value="csv", help="CSV: time,source,what,detail.")
@click.option("--bodyfile", "fmt", flag_value="bodyfile",
              help="The Sleuth Kit 3.x body format, for mactime.")
def timeline(source: str, fmt: str | None) -> None:
    """File times, deleted entries, snapshots, vmware.log events, checkpoint files,
    heartbeats and locks of SOURCE (a datastore image or folder, a VM folder or a .vmx /
    vm.cfg: its folder), as one list sorted by time (UTC); untimed facts come last."""
    from ..forensics.target import open_target
    from ..forensics.timeline import bodyfile, collect
    from ..report import Table

    with open_target(source) as target:
        tl = collect(target)
    for problem in tl.problems:
        click.echo(f"warning: {problem}", err=True)
    if fmt == "json":
        echo_json(document(path=source, kind="timeline",
                           events=[e.to_dict() for e in tl.events], warnings=tl.problems))
    elif fmt == "csv":
        import csv
        import sys

        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(["time", "source", "what", "detail"])
        out.writerows([e.iso or "", e.source, e.what, e.detail] for e in tl.events)
    elif fmt == "bodyfile":
        for line in bodyfile(tl):
            click.echo(line)
    else:
        rows = [[e.iso or "(no time)", e.what, e.source, cell(e.detail, None)] for e in tl.events]
        click.echo("\n".join(render_table(Table("timeline (UTC)",
                                                ["time", "what", "source", "detail"], rows))))
