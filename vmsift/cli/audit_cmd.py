"""`vmsift audit`: hardening findings for a .vmx, a vm.cfg, a VM folder or a datastore."""

from __future__ import annotations

import click

from .render import document, echo_json, render_table


@click.command()
@click.argument("source", type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(["table", "json", "sarif"]),
              default="table", show_default=True, help="Output: a table, JSON or SARIF 2.1.0.")
def audit(source: str, fmt: str) -> None:
    """Check every VM of SOURCE against hardening guidance (rules: docs/audit.md).

    SOURCE is a .vmx, a vm.cfg, a VM folder, or a datastore folder or image (every VM on
    it). Findings name the rule, severity, key, its value, what is expected and why.
    """
    from .. import __version__
    from ..forensics.audit import audit as run_audit, expected_text, to_sarif
    from ..forensics.target import open_target
    from ..report import Table

    with open_target(source) as target:
        result = run_audit(target)
    for problem in result.problems:
        click.echo(f"warning: {problem}", err=True)
    if fmt == "sarif":
        echo_json(to_sarif(result.findings, __version__))
        return
    if fmt == "json":
        echo_json(document(path=source, kind="audit", vms=result.vms,
                           findings=[f.to_dict() for f in result.findings],
                           warnings=result.problems))
        return
    click.echo("\n".join(render_table(Table("virtual machines", ["name", "kind", "config",
                                                                  "findings"],
                                            [[v["name"], v["kind"], v["config"], v["findings"]]
                                             for v in result.vms]))))
    rows = [[f.rule.severity, f.rule.id, f.vm, f.key,
             "(absent)" if f.value is None else f.value, expected_text(f.rule), f.rule.why]
            for f in result.findings]
    click.echo("\n" + "\n".join(render_table(Table(
        "findings", ["severity", "rule", "vm", "key", "value", "expected", "why"], rows))))
