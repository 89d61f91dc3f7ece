"""Run the command line: every failure becomes one line (or JSON) and a status."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from .commands import cli
from .errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, CliFailure, report_failure

__all__ = ["main", "wants_json"]


def wants_json(argv: Sequence[str]) -> bool:
    """Whether ``--json`` was given anywhere (before ``--``), even on a usage error."""
    for arg in argv:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


def _interrupted(as_json: bool) -> int:
    return report_failure("interrupted", EXIT_INTERRUPTED, "interrupted", as_json=as_json)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (no traceback for known failures)."""
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = wants_json(args)
    try:
        result = cli.main(args=args, prog_name="pbxsession", standalone_mode=False)
    except CliFailure as exc:
        return report_failure(str(exc), exc.status, exc.kind, as_json=as_json)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        if as_json:
            return report_failure(exc.format_message(), EXIT_BAD_INPUT, "usage", as_json=True)
        exc.show()
        return EXIT_BAD_INPUT
    except (click.exceptions.Abort, KeyboardInterrupt):
        return _interrupted(as_json)
    except BaseExceptionGroup as group:  # a KeyboardInterrupt inside trio's nurseries
        if group.subgroup(KeyboardInterrupt) is not None:
            return _interrupted(as_json)
        raise
    return result if isinstance(result, int) else EXIT_OK
