"""Rendering for the CLI: reports as aligned text or as the stable JSON documents."""

from __future__ import annotations

import enum
from typing import Any

import click

from .. import __version__
from ..errors import VmsiftError
from ..report import Report, Table

JSON_SCHEMA_VERSION = 1
MAX_CELL = 80


def json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def report_document(path: str, report: Report) -> dict[str, Any]:
    """The stable JSON document of a report (docs/json.md)."""
    return document(path=path, kind=report.kind, title=report.title,
                    detected_by=report.detected_by, data=report.data, warnings=report.warnings)


def cell(value: Any, limit: int | None = MAX_CELL) -> str:
    """A value on one line: ``-`` for none, yes/no, cut to ``limit`` characters (tables)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value).replace("\n", "\\n")
    return text if limit is None or len(text) <= limit else text[:limit - 1] + "…"


def render_table(table: Table) -> list[str]:
    if not table.rows:
        return [f"{table.title}: none"]
    cells = [[cell(c) for c in row] for row in table.rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(table.columns)]
    fmt = lambda row: "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
    return [f"{table.title} ({len(cells)})", fmt(table.columns),
            fmt(["-" * w for w in widths]), *map(fmt, cells)]


def render_text(path: str, report: Report) -> str:
    lines = [f"{path}: {report.title}"]
    shown = {k: v for k, v in report.fields.items() if v is not None}
    width = max((len(k) for k in shown), default=0)
    lines += [f"  {k.ljust(width)}  {cell(v, limit=None)}" for k, v in shown.items()]
    for table in report.tables:
        lines += ["", *render_table(table)]
    return "\n".join(lines)



def echo_json(doc: dict[str, Any]) -> None:
    import json  # only --json needs it: start-up time

    click.echo(json.dumps(doc, indent=2, ensure_ascii=False, default=json_default))


def document(**fields: Any) -> dict[str, Any]:
    """A JSON document with the version header every `--json` output starts with."""
    return {"vmsift": __version__, "schema": JSON_SCHEMA_VERSION, **fields}


def print_report(path: str, report: Report, as_json: bool) -> None:
    """A report as JSON, or as text with its warnings on stderr."""
    if as_json:
        echo_json(report_document(path, report))
        return
    click.echo(render_text(path, report))
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)


def error_document(error: VmsiftError) -> dict[str, Any]:
    return {"class": type(error).__name__, "message": str(error), "exit_code": error.exit_code}

