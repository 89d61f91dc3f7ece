"""Printing for terminals and for scripts.

On a terminal rich draws colours and tables at the terminal's width; into a
pipe nothing is ever wrapped (a JSON line cut at 80 columns is no JSON).
Under ``--json`` every result is one compact JSON object per line.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.markup import escape

from pbxsession import (
    ExitReport,
    FeedDown,
    FeedEvent,
    FeedGap,
    FeedItem,
    FeedStopped,
    FeedUp,
    Session,
    User,
)

__all__ = [
    "Options",
    "configure_logging",
    "describe",
    "emit",
    "make_console",
    "print_json",
    "print_user",
    "report_dict",
]

# Wide enough that rich never wraps a line written into a pipe or a file.
_PIPE_WIDTH: Final = 100_000


def make_console(*, stderr: bool = False) -> Console:
    """A console that wraps only at a terminal's real width, never in a pipe."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr, soft_wrap=True)
    return Console(stderr=stderr, soft_wrap=True, width=_PIPE_WIDTH, highlight=False)


@dataclass
class Options:
    """What every command shares: output mode, where the login is kept, the bound."""

    as_json: bool
    state_dir_option: Path | None
    timeout: float
    out: Console
    err: Console

    @property
    def state_dir(self) -> Path:
        """The folder of the session store and the profile."""
        if self.state_dir_option is not None:
            return self.state_dir_option
        from pbxsession import default_store_path

        return default_store_path().parent

    @property
    def store_path(self) -> Path:
        """The SQLite session store."""
        return self.state_dir / "sessions.sqlite3"

    @property
    def profile_path(self) -> Path:
        """Where ``login`` notes the host, user and sub-ID (never a password)."""
        return self.state_dir / "cli.json"


def configure_logging(verbose: bool) -> None:
    """Show the library's log only with ``--verbose``.

    Every outcome the command line reports itself (errors, feed items,
    outages); the library's WARNING about the same would say it twice.
    """
    logger = logging.getLogger("pbxsession")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("pbxsession: %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO if verbose else logging.CRITICAL + 1)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)


def print_json(data: Any) -> None:
    """One compact object on one line (JSON lines), never wrapped."""
    print(json.dumps(data, default=str), flush=True)


def emit(options: Options, data: Any, text: Callable[[], None]) -> None:
    """Print ``data`` as JSON under ``--json``, else run ``text``."""
    if options.as_json:
        print_json(data)
    else:
        text()


def _user_dict(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "login": user.login,
        "name": user.name,
        "company": user.company,
        "home": user.home,
        "permissions": [p.name for p in user.permissions],
        "companies": [{"id": c.id, "name": c.name} for c in user.companies],
    }


def print_user(options: Options, user: User, session: Session) -> None:
    """Who is logged in, in which company and state."""
    data = _user_dict(user) | {"state": session.state.value, "sub_id": session.sub_id}

    def text() -> None:
        out = options.out
        companies = ", ".join(f"{c.id} {c.name}" for c in user.companies) or "-"
        out.print(f"[bold]{escape(user.name)}[/] ({escape(user.login)}, id {user.id})")
        out.print(escape(f"company {user.company} (home {user.home}); companies: {companies}"))
        out.print(f"permissions: {', '.join(p.name for p in user.permissions) or '-'}")
        out.print(escape(f"state: {session.state.value}; sub-ID: {session.sub_id or '-'}"))

    emit(options, data, text)


def report_dict(report: ExitReport) -> dict[str, Any]:
    """The exit report as plain data."""
    return {
        "duration": report.duration,
        "steps": {
            name: {
                "outcome": r.outcome.value,
                "duration": r.duration,
                "reason": r.reason,
                "error": None if r.error is None else str(r.error),
            }
            for name, r in report.steps.items()
        },
    }


def describe(item: FeedItem) -> tuple[dict[str, Any], str]:
    """A feed item as JSON data and as one line of rich markup."""
    if isinstance(item, FeedEvent):
        data = dict(item.data)
        line = f"#{item.seq} {escape(item.kind)}: {escape(json.dumps(data, default=str))}"
        return {"type": "event", "seq": item.seq, "kind": item.kind, "data": data}, line
    if isinstance(item, FeedGap):
        return {"type": "gap"} | asdict(item), f"[yellow]gap[/] {escape(str(item))}"
    if isinstance(item, FeedDown):
        line = f"[yellow]feed down[/] (errno {item.errno}): {escape(item.reason)}; reconnecting"
        return {"type": "down"} | asdict(item), line
    if isinstance(item, FeedUp):
        how = "resumed" if item.resumed else "back, events were lost"
        return {"type": "up"} | asdict(item), f"[green]feed {how}[/] after {item.downtime:.1f}s"
    if isinstance(item, FeedStopped):
        return {"type": "stopped"} | asdict(item), f"[red]feed stopped[/]: {escape(item.reason)}"
    return {"type": "session_lost", "reason": item.reason}, (
        f"[red]session lost[/]: {escape(item.reason)}"
    )
