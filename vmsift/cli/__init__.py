"""The ``vmsift`` command line: options in, library calls, reports out (text or JSON).

Exit codes (see docs/cli.md): 0 success, 2 usage, and each `VmsiftError` class's own code;
70 for an internal error (a bug: please report it; VMSIFT_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import os
import sys

import click

from ..errors import VmsiftError
from .app import cli

INTERNAL_ERROR = 70


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map errors to one line on stderr and their exit code."""
    try:
        cli.main(args=argv, prog_name="vmsift", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("vmsift: aborted", err=True)
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except VmsiftError as e:
        click.echo(f"vmsift: error: {e}", err=True)
        return e.exit_code
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug: say so in one line unless debugging
        if os.environ.get("VMSIFT_DEBUG"):
            import traceback

            traceback.print_exc()
        click.echo(f"vmsift: internal error: {type(e).__name__}: {e} "
                   "(a bug; set VMSIFT_DEBUG=1 for details)", err=True)
        return INTERNAL_ERROR
    return 0


def entry() -> None:
    sys.exit(main())
