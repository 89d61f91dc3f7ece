"""The ``pbxsession`` command line, one job per module.

``errors`` maps failures to one line and an exit status, ``output`` prints
for terminals and scripts, ``profile`` keeps the login between invocations,
``commands`` holds the click commands, ``app`` runs them, and ``helptext``
renders every ``--help`` for the documentation. ``pbxsession.cli`` imports
this package only once click and rich are known to be installed.
"""

from __future__ import annotations

from .app import main

__all__ = ["main"]
