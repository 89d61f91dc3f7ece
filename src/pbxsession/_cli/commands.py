"""The click commands: a demo, the simulator, and commands for a real PBX.

Commands against a PBX share one login across invocations the way browser
tabs do (see ``profile``). ``--json`` and ``--timeout`` are accepted before
or after the command name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import click
import trio

import pbxsession
from pbxsession import FeedOptions, FeedStopped, PbxError, SessionLost

from .errors import EXIT_WRONG_STATE, CliFailure, failure_for
from .output import (
    Options,
    configure_logging,
    describe,
    emit,
    make_console,
    print_json,
    print_user,
    report_dict,
)
from .profile import (
    CACERT_ENV,
    Profile,
    adopted,
    adopted_feed,
    bounded,
    open_cli_session,
    read_password,
    save_profile,
    spinner,
)

__all__ = ["DEFAULT_TIMEOUT", "cli"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: Seconds within which a PBX that never answers is reported (``--timeout``).
DEFAULT_TIMEOUT: Final = 15.0

EPILOG: Final = (
    "Exit status: 0 success, 1 other PBX error, 2 bad input, 3 bad credentials "
    "(or locked), 4 PBX unreachable or no answer in time, 5 wrong state (e.g. not "
    "logged in), 6 store error, 130 interrupted. Under --json an error is one JSON "
    'object on standard error: {"error": ..., "kind": ..., "exit_status": ...}.'
)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(_Pending).as_json = True


def _set_timeout(ctx: click.Context, _param: click.Parameter, value: float | None) -> None:
    if value is not None:
        ctx.ensure_object(_Pending).timeout = value


class _Pending:
    """Options given after the command name, before ``Options`` is complete."""

    as_json: bool = False
    timeout: float | None = None


def common_options(command: F) -> F:
    """``--json`` and ``--timeout``, accepted on the group and on every command."""
    command = click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        metavar="SECONDS",
        expose_value=False,
        callback=_set_timeout,
        help=f"Give up on a silent PBX after SECONDS (default {DEFAULT_TIMEOUT:g}).",
    )(command)
    return click.option(
        "--json",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="Print JSON for scripts (errors too, on standard error).",
    )(command)


def _options(ctx: click.Context) -> Options:
    """The shared options, with those given after the command name applied."""
    options = ctx.find_object(Options)
    assert options is not None  # the group always makes one
    pending = ctx.find_object(_Pending)
    if pending is not None:
        options.as_json = options.as_json or pending.as_json
        if pending.timeout is not None:
            options.timeout = pending.timeout
    return options


def _run(work: Callable[[], Awaitable[T]]) -> T:
    try:
        return trio.run(work)
    except PbxError as exc:
        raise failure_for(exc) from exc


# ------------------------------------------------------------------ commands


@click.group(epilog=EPILOG)
@click.version_option(
    pbxsession.__version__, prog_name="pbxsession", message="%(prog)s %(version)s"
)
@common_options
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="PBXSESSION_STATE_DIR",
    help="Where the session store lives (default: the user's state directory).",
)
@click.option(
    "-v", "--verbose", is_flag=True, help="Show the library's log (what the PBX and feed did)."
)
@click.pass_context
def cli(ctx: click.Context, state_dir: Path | None, verbose: bool) -> None:
    """Manage a session with an IPCortex-style PBX: try it on the simulator or a real PBX."""
    configure_logging(verbose)
    pending = ctx.ensure_object(_Pending)
    ctx.obj = Options(
        as_json=pending.as_json,
        state_dir_option=state_dir,
        timeout=pending.timeout or DEFAULT_TIMEOUT,
        out=make_console(),
        err=make_console(stderr=True),
    )


@cli.command()
@common_options
@click.option("--seconds", default=3.0, show_default=True, help="How long to show feed events.")
@click.pass_context
def demo(ctx: click.Context, seconds: float) -> None:
    """Run a whole session lifecycle against the embedded simulator."""
    from pbxsession.demo import run_demo

    options = _options(ctx)
    _run(lambda: run_demo(options.out, seconds=seconds, as_json=options.as_json))


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
@common_options
@click.option("--host", required=True, help="The PBX, e.g. https://pbx.example.com")
@click.option("--ws-host", help="The live feed's host, if not the PBX's.")
@click.option("--user", "username", required=True, help="The user name.")
@click.option("--subid", help="A sub-ID, to keep this login apart from others.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--insecure", is_flag=True, help="Allow plain http to a non-loopback host.")
@click.option(
    "--cacert",
    envvar=CACERT_ENV,
    type=click.Path(exists=True, resolve_path=True),
    help=f"Trust this CA file or folder (a company CA; env {CACERT_ENV}); later commands keep it.",
)
@click.pass_context
def login(
    ctx: click.Context,
    host: str,
    ws_host: str | None,
    username: str,
    subid: str | None,
    password_stdin: bool,
    insecure: bool,
    cacert: str | None,
) -> None:
    """Log in, and keep the login for later commands (the password is never stored)."""
    options = _options(ctx)
    password = read_password(password_stdin)

    async def work() -> None:
        async with open_cli_session(
            options,
            host,
            ws_host=ws_host,
            subid=subid,
            insecure=insecure,
            feed=None,
            cacert=cacert,
        ) as session:
            with spinner(options, "Logging in…"):
                user = await bounded(options, lambda: session.login(username, password))
            profile = Profile(
                host=session.host or host,
                user=user.login,
                ws_host=ws_host,
                subid=session.sub_id,
                insecure=insecure,
                cacert=cacert,
            )
            save_profile(options, profile)
            print_user(options, user, session)

    _run(work)


@cli.command()
@common_options
@click.pass_context
def whoami(ctx: click.Context) -> None:
    """Show who the kept login is."""
    options = _options(ctx)

    async def work() -> None:
        async with adopted(options) as (session, user):
            print_user(options, user, session)

    _run(work)


def _feed_ended(item: FeedStopped | SessionLost) -> CliFailure:
    if isinstance(item, SessionLost):
        return CliFailure(f"session lost: {item.reason}", EXIT_WRONG_STATE, "session_lost")
    return CliFailure(
        f"feed stopped (errno {item.errno}): {item.reason}", EXIT_WRONG_STATE, "feed_stopped"
    )


@cli.command()
@common_options
@click.option("--no-device", is_flag=True, help="Leave out device events.")
@click.option("--no-presence", is_flag=True, help="Leave out presence events.")
@click.pass_context
def feed(ctx: click.Context, no_device: bool, no_presence: bool) -> None:
    """Print live feed events, outages and gaps until Ctrl-C."""
    options = _options(ctx)

    async def work() -> None:
        feed_options = FeedOptions(device=not no_device, presence=not no_presence)
        async with adopted_feed(options, feed_options) as (_session, events):
            if not options.as_json:
                options.err.print("[dim]live feed running; Ctrl-C stops it[/]")
            async for item in events:
                if isinstance(item, FeedStopped | SessionLost):
                    # Said once, as the error, with its own exit status.
                    raise _feed_ended(item)
                data, text = describe(item)
                if options.as_json:
                    print_json(data)
                else:
                    options.out.print(text)

    _run(work)


@cli.command(name="select-company")
@common_options
@click.argument("company_id")
@click.pass_context
def select_company(ctx: click.Context, company_id: str) -> None:
    """Select the company a multi-company administrator works in."""
    options = _options(ctx)

    async def work() -> None:
        async with adopted(options) as (session, _user):
            user = await bounded(options, lambda: session.select_company(company_id))
            print_user(options, user, session)

    _run(work)


@cli.command(name="rtc-reset")
@common_options
@click.option("--getnew", is_flag=True, help="Print the new WebRTC password.")
@click.pass_context
def rtc_reset(ctx: click.Context, getnew: bool) -> None:
    """Release and randomise the WebRTC phone password."""
    options = _options(ctx)

    async def work() -> None:
        async with adopted(options) as (session, _user):
            password = await bounded(options, lambda: session.rtc_reset(getnew=getnew))
            emit(
                options,
                {"reset": True, "password": password},
                lambda: options.out.print(password or "WebRTC password released", markup=False),
            )

    _run(work)


@cli.command()
@common_options
@click.pass_context
def logout(ctx: click.Context) -> None:
    """Log the kept login out of the PBX."""
    options = _options(ctx)

    async def work() -> None:
        async with adopted(options) as (session, _user):
            await bounded(options, session.logout)
            emit(options, {"state": session.state.value}, lambda: options.out.print("logged out"))

    _run(work)


@cli.command(name="exit")
@common_options
@click.option("--logout", "with_logout", is_flag=True, help="Log out as well.")
@click.pass_context
def exit_command(ctx: click.Context, with_logout: bool) -> None:
    """The staged super-logout: chat offline, save history, release WebRTC, logout."""
    from pbxsession.demo import report_table

    options = _options(ctx)

    async def work() -> None:
        async with adopted(options) as (session, _user):
            with spinner(options, "Exiting…"):
                # Bounded by the exit's own timeouts (10 s), not by --timeout.
                report = await session.exit(logout=with_logout)
            emit(
                options,
                report_dict(report) | {"logout": with_logout},
                lambda: options.out.print(report_table(report, logout=with_logout)),
            )

    _run(work)


@cli.command()
@click.argument("directory", default="diagrams", type=click.Path(path_type=Path))
@click.option("--check", is_flag=True, help="Only report files that differ.")
def diagrams(directory: Path, check: bool) -> None:
    """Regenerate the lifecycle diagrams and rules table from the machine."""
    from pbxsession.diagrams import main as diagrams_main

    status = diagrams_main([str(directory), *(["--check"] if check else [])])
    if status:
        raise CliFailure("diagrams are stale", status)
