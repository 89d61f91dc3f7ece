"""The login kept between invocations, and each PBX call's bound.

``login`` notes the host, user and sub-ID in ``cli.json`` (never a password)
next to the SQLite session store; every later command adopts that login
with a ``checkonly`` login. Every wait on the PBX is bounded by
``--timeout`` so a PBX that accepts and never answers is reported in time.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Final, TypeVar

import click
import trio

import pbxsession
from pbxsession import FeedOptions, FeedSubscription, Session, User

from .errors import (
    EXIT_BAD_INPUT,
    EXIT_STORE,
    EXIT_UNREACHABLE,
    EXIT_WRONG_STATE,
    NOT_LOGGED_IN,
    CliFailure,
)
from .output import Options

__all__ = [
    "CACERT_ENV",
    "PASSWORD_ENV",
    "Profile",
    "adopted",
    "adopted_feed",
    "bounded",
    "open_cli_session",
    "read_password",
    "save_profile",
    "spinner",
]

T = TypeVar("T")

PASSWORD_ENV: Final = "PBXSESSION_PASSWORD"
CACERT_ENV: Final = "PBXSESSION_CACERT"

# The library bounds each operation by --timeout (each attempt by at most
# _ATTEMPT_SECONDS); the command line's own deadline is a backstop _GRACE later.
_ATTEMPT_SECONDS: Final = 5.0
_GRACE: Final = 1.0


@dataclass
class Profile:
    """The PBX a previous ``login`` used."""

    host: str
    user: str
    ws_host: str | None = None
    subid: str | None = None
    insecure: bool = False
    cacert: str | None = None  # the CA the login trusted: later commands trust the same


def _load_profile(options: Options) -> Profile:
    try:
        data = json.loads(options.profile_path.read_text(encoding="utf-8"))
        return Profile(**data)
    except FileNotFoundError:
        raise CliFailure(NOT_LOGGED_IN, EXIT_WRONG_STATE, "not_logged_in") from None
    except (ValueError, TypeError) as exc:
        raise CliFailure(f"unreadable {options.profile_path}: {exc}", EXIT_STORE) from exc


def save_profile(options: Options, profile: Profile) -> None:
    """Note ``profile`` for later commands (mode 0600, in a 0700 folder)."""
    from pbxsession.stores._files import make_private_dirs

    make_private_dirs(options.state_dir)  # each new folder 0700, whatever the umask
    fd = os.open(options.profile_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(asdict(profile), file)


def session_arguments(options: Options) -> dict[str, Any]:
    """The ``open_session`` keywords every command passes.

    ``--timeout`` bounds each operation (its attempts included, at most
    5 s each); :func:`bounded` is the backstop over the whole command.
    """
    from pbxsession import Timeout
    from pbxsession.stores import SqliteStore

    return {
        "store": SqliteStore(options.store_path),
        "timeout": Timeout(
            command=min(_ATTEMPT_SECONDS, options.timeout), operation=options.timeout
        ),
        "keep_session": True,
        "exit_on_close": False,
    }


def open_cli_session(
    options: Options,
    host: str,
    *,
    ws_host: str | None,
    subid: str | None,
    insecure: bool,
    feed: FeedOptions | None,
    cacert: str | None = None,
) -> AbstractAsyncContextManager[Session]:
    """``open_session`` as every command opens it: the kept store, no exit on close.

    ``cacert`` (a CA file or folder) replaces the default trust, on the
    commands and the feed alike.
    """
    return pbxsession.open_session(
        host,
        ws_host=ws_host,
        subid=subid,
        allow_insecure=insecure,
        feed=feed,
        verify=True if cacert is None else cacert,
        **session_arguments(options),
    )


async def bounded(options: Options, call: Callable[[], Awaitable[T]]) -> T:
    """Await ``call()``, failing with exit status 4 past ``--timeout``."""
    seconds = options.timeout
    try:
        with trio.fail_after(seconds):
            return await call()
    except trio.TooSlowError:
        message = f"PBX unreachable: no answer within {seconds:g} s (--timeout)"
        raise CliFailure(message, EXIT_UNREACHABLE, "timeout") from None


@contextmanager
def spinner(options: Options, text: str) -> Iterator[None]:
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


def _open_profile_session(
    options: Options, profile: Profile, feed: FeedOptions | None
) -> AbstractAsyncContextManager[Session]:
    return open_cli_session(
        options,
        profile.host,
        ws_host=profile.ws_host,
        subid=profile.subid,
        insecure=profile.insecure,
        feed=feed,
        cacert=profile.cacert,
    )


async def _check_login(options: Options, session: Session, profile: Profile) -> User:
    with spinner(options, "Checking the login…"):
        return await bounded(options, lambda: session.login(profile.user, checkonly=True))


@asynccontextmanager
async def adopted(options: Options) -> AsyncIterator[tuple[Session, User]]:
    """A session that adopts the login of an earlier ``login`` (checkonly)."""
    profile = _load_profile(options)
    async with _open_profile_session(options, profile, None) as session:
        yield session, await _check_login(options, session, profile)


@asynccontextmanager
async def adopted_feed(
    options: Options, feed: FeedOptions
) -> AsyncIterator[tuple[Session, FeedSubscription]]:
    """Like :func:`adopted`, with the feed and a subscription to it.

    The subscription opens before the login check, which starts the feed:
    an event that comes with the feed's first frame arrives before the check
    returns, and a consumer that subscribed after it would never see it.
    """
    profile = _load_profile(options)
    async with (
        _open_profile_session(options, profile, feed) as session,
        session.events() as events,
    ):
        await _check_login(options, session, profile)
        yield session, events


def read_password(password_stdin: bool) -> str:
    """The password from standard input, the environment or a prompt, in that order."""
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
