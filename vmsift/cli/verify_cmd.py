"""`vmsift verify`: check every digest of an OVA's or OVF's manifest, and its signature."""

from __future__ import annotations

import sys

import click

from .render import document, echo_json


@click.command()
@click.argument("package", type=click.Path(dir_okay=False, exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print the stable JSON document.")
def verify(package: str, as_json: bool) -> None:
    """Check every digest of the manifest of an OVA or .ovf (each file read once, as a
    stream) and the signature of its .cert. Exit 8 names the files that do not match."""
    from ..datastore.ovf import open_package
    from ..datastore.ovf_check import failures, signature_status
    from ..datastore.ovf_check import verify as verify_package

    with open_package(package) as pkg:
        total = sum(pkg.volume.stat(p).size for p in pkg.files_in_manifest())
        if sys.stderr.isatty() and not as_json:
            with click.progressbar(length=total, label="verify", file=sys.stderr) as bar:
                checks = verify_package(pkg, bar.update)
        else:
            checks = verify_package(pkg)
        signature = signature_status(pkg)
        manifest = pkg.manifest_path
    error = failures(checks, signature, package)
    if as_json:
        echo_json(document(path=package, manifest=manifest, checks=[c.to_dict() for c in checks],
                           certificate=signature, ok=error is None))
    else:
        for c in checks:
            status, _, why = c.status.partition(": ")
            click.echo(f"{status.upper():8}  {c.algorithm:6}  {c.name}"
                       + (f"  ({why})" if why else ""))
        if signature:
            click.echo(f"{'SIGNED' if signature['signature'] == 'valid' else 'SIGNATURE'}  "
                       f"{signature['algorithm']}  {signature['path']}: {signature['signature']}"
                       + (f" ({signature['subject']})" if signature["subject"] else ""))
    if error is not None:
        raise error
