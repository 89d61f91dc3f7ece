"""The ``pbxsession`` command's entry point: it needs the ``cli`` extra.

This module imports nothing heavy, so that without click and rich the
command says in one line what to install (exit status 2) instead of a
traceback. The commands themselves live in ``pbxsession._cli``.

Exit status: 0 success, 1 other PBX error, 2 bad input (or a missing
extra), 3 bad credentials (or locked), 4 PBX unreachable or no answer in
time, 5 wrong state (e.g. not logged in), 6 store error, 130 interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

MISSING_EXTRA = "pbxsession: the command line needs click and rich: pip install 'pbxsession[cli]'"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    try:
        import click  # noqa: F401 - only to learn whether the extra is installed
        import rich  # noqa: F401
    except ImportError:
        print(MISSING_EXTRA, file=sys.stderr)
        return 2
    from pbxsession._cli import main as run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
