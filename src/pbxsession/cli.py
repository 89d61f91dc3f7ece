"""The ``pbxsession`` command line: a demo, the simulator, and commands for a real PBX.

Commands against a PBX share one login across invocations the way browser
tabs do: the session cookie lives in a persistent store (SQLite, in the
user's state directory), ``login`` makes the login once, and every later
command adopts it with a ``checkonly`` login, without a password. A password
is read from a prompt, the ``PBXSESSION_PASSWORD`` environment variable or
standard input (``--password-stdin``), never from a command-line flag.

Exit status: 0 success, 1 other PBX error, 2 bad input, 3 bad credentials
(or locked), 4 PBX unreachable, 5 wrong state (e.g. not logged in), 6 store
error, 130 interrupted.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
import trio
from rich.console import Console

import pbxsession
from pbxsession import (
    ExitReport,
    FeedEvent,
    FeedGap,
    FeedItem,
    FeedOptions,
    FeedStopped,
    InvalidArgumentError,
    InvalidStateError,
    LoginError,
    PbxError,
    PbxUnavailableError,
    Session,
    SessionLost,
    SessionLostError,
    StoreError,
    UnknownCompanyError,
    User,
)
from pbxsession.demo import report_table

__all__ = ["main"]

T = TypeVar("T")

EXIT_OK = 0
EXIT_PBX_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_BAD_CREDENTIALS = 3
EXIT_UNREACHABLE = 4
EXIT_WRONG_STATE = 5
EXIT_STORE = 6
EXIT_INTERRUPTED = 130

PASSWORD_ENV = "PBXSESSION_PASSWORD"


class CliFailure(Exception):
    """A failure to report as one line with a distinct exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Options:
    """What every command shares: output mode and where the login is kept."""

    as_json: bool
    state_dir_option: Path | None
    out: Console
    err: Console

    @property
    def state_dir(self) -> Path:
        """The folder of the session store and the profile."""
        return self.state_dir_option or _default_state_dir()

    @property
    def store_path(self) -> Path:
        """The SQLite session store."""
        return self.state_dir / "sessions.sqlite3"

    @property
    def profile_path(self) -> Path:
        """Where ``login`` notes the host, user and sub-ID (never a password)."""
        return self.state_dir / "cli.json"


@dataclass
class Profile:
    """The PBX a previous ``login`` used."""

    host: str
    user: str
    ws_host: str | None = None
    subid: str | None = None
    insecure: bool = False


# ------------------------------------------------------------------ plumbing


def _default_state_dir() -> Path:
    from pbxsession.stores import default_store_path

    path: Path = default_store_path().parent
    return path


def _status_for(exc: BaseException) -> tuple[str, int]:
    if isinstance(exc, LoginError) and exc.code in ("badauth", "locked"):
        return f"login refused: {exc.code} ({exc.message or 'bad username or password'})", (
            EXIT_BAD_CREDENTIALS
        )
    if isinstance(exc, LoginError | SessionLostError):
        return "not logged in: run `pbxsession login` first", EXIT_WRONG_STATE
    if isinstance(exc, InvalidStateError):
        return str(exc), EXIT_WRONG_STATE
    if isinstance(exc, InvalidArgumentError | UnknownCompanyError):
        return f"bad input: {exc}", EXIT_BAD_INPUT
    if isinstance(exc, PbxUnavailableError):
        return f"PBX unreachable: {exc}", EXIT_UNREACHABLE
    if isinstance(exc, StoreError):
        return f"session store: {exc}", EXIT_STORE
    return f"PBX error: {exc}", EXIT_PBX_ERROR


def _run(options: Options, work: Callable[[], Awaitable[T]]) -> T:
    try:
        return trio.run(work)
    except PbxError as exc:
        message, status = _status_for(exc)
        raise CliFailure(message, status) from exc


@contextmanager
def _spinner(options: Options, text: str) -> Iterator[None]:
    """Show a spinner on a terminal when the wait passes half a second.

    rich draws it from a thread of its own, so a timer thread starts it: no
    nursery, nothing for the awaited call's exceptions to be wrapped in.
    """
    if options.as_json or not options.err.is_terminal:
        yield
        return
    status = options.err.status(text)
    timer = threading.Timer(0.5, status.start)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()
        status.stop()


def _print_json(data: Any) -> None:
    # One compact object per line (JSON lines), unwrapped: rich would wrap it.
    print(json.dumps(data, default=str), flush=True)


def _emit(options: Options, data: Any, text: Callable[[], None]) -> None:
    if options.as_json:
        _print_json(data)
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


def _print_user(options: Options, user: User, session: Session) -> None:
    data = _user_dict(user) | {"state": session.state.value, "sub_id": session.sub_id}

    def text() -> None:
        companies = ", ".join(f"{c.id} {c.name}" for c in user.companies) or "-"
        options.out.print(f"[bold]{user.name}[/] ({user.login}, id {user.id})")
        options.out.print(f"company {user.company} (home {user.home}); companies: {companies}")
        options.out.print(f"permissions: {', '.join(p.name for p in user.permissions) or '-'}")
        options.out.print(f"state: {session.state.value}; sub-ID: {session.sub_id or '-'}")

    _emit(options, data, text)


def _report_dict(report: ExitReport) -> dict[str, Any]:
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


def _describe(item: FeedItem) -> tuple[dict[str, Any], str]:
    if isinstance(item, FeedEvent):
        data = dict(item.data)
        return {"type": "event", "seq": item.seq, "kind": item.kind, "data": data}, (
            f"#{item.seq} {item.kind}: {json.dumps(data, default=str)}"
        )
    if isinstance(item, FeedGap):
        return {"type": "gap"} | asdict(item), f"[yellow]gap[/] {item}"
    if isinstance(item, FeedStopped):
        return {"type": "stopped"} | asdict(item), f"[red]feed stopped[/]: {item.reason}"
    assert isinstance(item, SessionLost)
    return {"type": "session_lost", "reason": item.reason}, f"[red]session lost[/]: {item.reason}"


# ------------------------------------------------------------------ profile


def _load_profile(options: Options) -> Profile:
    try:
        data = json.loads(options.profile_path.read_text(encoding="utf-8"))
        return Profile(**data)
    except FileNotFoundError:
        raise CliFailure("not logged in: run `pbxsession login` first", EXIT_WRONG_STATE) from None
    except (ValueError, TypeError) as exc:
        raise CliFailure(f"unreadable {options.profile_path}: {exc}", EXIT_STORE) from exc


def _save_profile(options: Options, profile: Profile) -> None:
    options.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = options.profile_path
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(asdict(profile), file)


@asynccontextmanager
async def _adopted(
    options: Options, *, feed: FeedOptions | None = None
) -> AsyncIterator[tuple[Session, User]]:
    """A session that adopts the login of an earlier ``login`` (checkonly)."""
    from pbxsession.stores import SqliteStore

    profile = _load_profile(options)
    async with pbxsession.open_session(
        profile.host,
        ws_host=profile.ws_host,
        subid=profile.subid,
        store=SqliteStore(options.store_path),
        allow_insecure=profile.insecure,
        feed=feed,
        keep_session=True,
        exit_on_close=False,
    ) as session:
        with _spinner(options, "Checking the login…"):
            user = await session.login(profile.user, checkonly=True)
        yield session, user


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise CliFailure("no password on standard input", EXIT_BAD_INPUT)
        return line
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env:
        return from_env
    if not sys.stdin.isatty():
        raise CliFailure(
            f"no password: type it at the prompt (on a terminal), set {PASSWORD_ENV}, "
            "or pipe it with --password-stdin",
            EXIT_BAD_INPUT,
        )
    password: str = click.prompt("Password", hide_input=True, err=True)
    return password


# ------------------------------------------------------------------ commands


@click.group()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="PBXSESSION_STATE_DIR",
    help="Where the session store lives (default: the user's state directory).",
)
@click.pass_context
def cli(ctx: click.Context, as_json: bool, state_dir: Path | None) -> None:
    """Manage a session with an IPCortex-style PBX: try it on the simulator or a real PBX."""
    ctx.obj = Options(
        as_json=as_json,
        state_dir_option=state_dir,
        out=Console(),
        err=Console(stderr=True),
    )


@cli.command()
@click.option("--seconds", default=3.0, show_default=True, help="How long to show feed events.")
@click.pass_obj
def demo(options: Options, seconds: float) -> None:
    """Run a whole session lifecycle against the embedded simulator."""
    from pbxsession.demo import run_demo

    _run(options, lambda: run_demo(options.out, seconds=seconds, as_json=options.as_json))


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,  # --help goes to the simulator's own parser
)
@click.pass_context
def sim(ctx: click.Context) -> None:
    """Run the simulator standalone (options: pbxsession sim --help)."""
    from pbxsession.sim import main as sim_main

    ctx.exit(sim_main(ctx.args))


@cli.command()
@click.option("--host", required=True, help="The PBX, e.g. https://pbx.example.com")
@click.option("--ws-host", help="The live feed's host, if not the PBX's.")
@click.option("--user", "username", required=True, help="The user name.")
@click.option("--subid", help="A sub-ID, to keep this login apart from others.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--insecure", is_flag=True, help="Allow plain http to a non-loopback host.")
@click.pass_obj
def login(
    options: Options,
    host: str,
    ws_host: str | None,
    username: str,
    subid: str | None,
    password_stdin: bool,
    insecure: bool,
) -> None:
    """Log in, and keep the login for later commands (the password is never stored)."""
    password = _read_password(password_stdin)

    async def work() -> None:
        from pbxsession.stores import SqliteStore

        async with pbxsession.open_session(
            host,
            ws_host=ws_host,
            subid=subid,
            store=SqliteStore(options.store_path),
            allow_insecure=insecure,
            feed=None,
            keep_session=True,
            exit_on_close=False,
        ) as session:
            with _spinner(options, "Logging in…"):
                user = await session.login(username, password)
            _save_profile(
                options,
                Profile(
                    host=session.host or host,
                    user=user.login,
                    ws_host=ws_host,
                    subid=session.sub_id,
                    insecure=insecure,
                ),
            )
            _print_user(options, user, session)

    _run(options, work)


@cli.command()
@click.pass_obj
def whoami(options: Options) -> None:
    """Show who the kept login is."""

    async def work() -> None:
        async with _adopted(options) as (session, user):
            _print_user(options, user, session)

    _run(options, work)


@cli.command()
@click.option("--no-device", is_flag=True, help="Leave out device events.")
@click.option("--no-presence", is_flag=True, help="Leave out presence events.")
@click.pass_obj
def feed(options: Options, no_device: bool, no_presence: bool) -> None:
    """Print live feed events until Ctrl-C."""

    async def work() -> None:
        feed_options = FeedOptions(device=not no_device, presence=not no_presence)
        async with _adopted(options, feed=feed_options) as (session, _user):
            if not options.as_json:
                options.err.print("[dim]live feed running; Ctrl-C stops it[/]")
            async with session.events() as events:
                async for item in events:
                    data, text = _describe(item)
                    if options.as_json:
                        _print_json(data)
                    else:
                        options.out.print(text)
                    if isinstance(item, FeedStopped | SessionLost):
                        raise CliFailure(f"the live feed ended: {item}", EXIT_WRONG_STATE)

    _run(options, work)


@cli.command(name="select-company")
@click.argument("company_id")
@click.pass_obj
def select_company(options: Options, company_id: str) -> None:
    """Select the company a multi-company administrator works in."""

    async def work() -> None:
        async with _adopted(options) as (session, _user):
            user = await session.select_company(company_id)
            _print_user(options, user, session)

    _run(options, work)


@cli.command(name="rtc-reset")
@click.option("--getnew", is_flag=True, help="Print the new WebRTC password.")
@click.pass_obj
def rtc_reset(options: Options, getnew: bool) -> None:
    """Release and randomise the WebRTC phone password."""

    async def work() -> None:
        async with _adopted(options) as (session, _user):
            password = await session.rtc_reset(getnew=getnew)
            _emit(
                options,
                {"reset": True, "password": password},
                lambda: options.out.print(password or "WebRTC password released"),
            )

    _run(options, work)


@cli.command()
@click.pass_obj
def logout(options: Options) -> None:
    """Log the kept login out of the PBX."""

    async def work() -> None:
        async with _adopted(options) as (session, _user):
            await session.logout()
            _emit(options, {"state": session.state.value}, lambda: options.out.print("logged out"))

    _run(options, work)


@cli.command(name="exit")
@click.option("--logout", "with_logout", is_flag=True, help="Log out as well.")
@click.pass_obj
def exit_command(options: Options, with_logout: bool) -> None:
    """The staged super-logout: chat offline, save history, release WebRTC, logout."""

    async def work() -> None:
        async with _adopted(options) as (session, _user):
            with _spinner(options, "Exiting…"):
                report = await session.exit(logout=with_logout)
            _emit(
                options,
                _report_dict(report),
                lambda: options.out.print(report_table(report)),
            )

    _run(options, work)


@cli.command()
@click.argument("directory", default="diagrams", type=click.Path(path_type=Path))
@click.option("--check", is_flag=True, help="Only report files that differ.")
def diagrams(directory: Path, check: bool) -> None:
    """Regenerate the lifecycle diagrams and rules table from the machine."""
    from pbxsession.diagrams import main as diagrams_main

    status = diagrams_main([str(directory), *(["--check"] if check else [])])
    if status:
        raise CliFailure("diagrams are stale", status)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (no traceback for known failures)."""
    err = Console(stderr=True)
    try:
        result = cli.main(args=argv, prog_name="pbxsession", standalone_mode=False)
    except CliFailure as exc:
        err.print(f"pbxsession: {exc}", markup=False, highlight=False, soft_wrap=True)
        return exc.status
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return EXIT_BAD_INPUT
    except (click.exceptions.Abort, KeyboardInterrupt):
        err.print("pbxsession: interrupted", highlight=False)
        return EXIT_INTERRUPTED
    except BaseExceptionGroup as group:  # a KeyboardInterrupt inside trio's nurseries
        if group.subgroup(KeyboardInterrupt) is not None:
            err.print("pbxsession: interrupted", highlight=False)
            return EXIT_INTERRUPTED
        raise
    return result if isinstance(result, int) else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
