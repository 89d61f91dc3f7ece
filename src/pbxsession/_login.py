"""One login as one object: opened by :func:`open_login`, ended by :func:`close_login`.

A :class:`Login` holds everything that lives exactly as long as one login:
the user, the context it lives in (:class:`Route`: host, cookie slot,
sub-ID), the saved call history, the WebRTC password obtained, and the live
feed. The session holds ``Login | None``; a report about a login that is
over (a feed ending late, say) is recognised by the object's identity.
"""

from __future__ import annotations

import contextlib
import logging
import math
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from . import _wire as wire
from ._errors import LoginError, PbxError, SessionLostError
from ._fanout import FeedHub
from ._feed import BackoffPolicy, FeedRunner
from ._lifecycle import Condition
from ._models import FeedEvent, FeedOptions, User
from ._transport import CommandTransport
from .stores import CookieSlot

__all__ = [
    "FeedPlan",
    "Login",
    "LoginRequest",
    "Route",
    "close_login",
    "open_login",
    "settle_cookie",
]

log = logging.getLogger("pbxsession")

R = TypeVar("R")

_STORE_NOTE_TIMEOUT = 5.0
"""Seconds the store may take to note a logout before it is given up (logged)."""


@dataclass(frozen=True, slots=True)
class Route:
    """Where one login's commands go: the PBX host, the context, the transport.

    The context is the cookie (one per host and user, kept in ``cookies``)
    and the sub-ID.
    """

    transport: CommandTransport
    host: str
    sub_id: str | None
    cookies: CookieSlot

    async def send(self, command: wire.Command[R], deadline: float | None = None) -> R:
        """Send ``command`` in this context; ``deadline`` bounds the whole operation."""
        return await self.transport.send(
            self.host, command, self.sub_id, self.cookies, deadline=deadline
        )


_NO_FACTS: frozenset[Condition] = frozenset()


@dataclass(eq=False, slots=True)
class Login:
    """One login: who, where, and what the session holds for it until it ends."""

    user: User
    route: Route
    history: list[Mapping[str, Any]] | None
    """The call history loaded at login and added to by ended calls, the newest
    :data:`~._wire.MAX_HISTORY` records (``None``: not loaded). A list, not a
    ``deque``: an empty deque holds a 600-byte block in every idle session."""
    feed: FeedRunner | None = None
    rtc_password: str | None = field(default=None, repr=False)

    @property
    def sub_id(self) -> str | None:
        """The sub-ID this login lives under (``None``: the default context)."""
        return self.route.sub_id

    def facts(self) -> frozenset[Condition]:
        """The conditions the lifecycle rules may ask about, as this login stands."""
        if self.route.sub_id is None and self.user.company == self.user.home:
            return _NO_FACTS  # the usual login: nothing to build (hot path)
        facts = set()
        if self.route.sub_id is not None:
            facts.add(Condition.SUB_ID_ACTIVE_AT_LOGIN)
        if self.user.company != self.user.home:
            facts.add(Condition.COMPANY_OTHER_THAN_HOME)
        return frozenset(facts)

    def record_call(self, event: FeedEvent) -> None:
        """Keep the call record an ended-call feed event carries (for the exit's save)."""
        if self.history is not None:
            record = wire.call_record(event)
            if record is not None:
                self.history.append(record)
                del self.history[: -wire.MAX_HISTORY]

    async def stop_feed(self, deadline: float = math.inf) -> None:
        """Stop the feed (shielded) and wait for it until ``deadline`` at most."""
        feed, self.feed = self.feed, None
        if feed is not None:
            with trio.CancelScope(shield=True, deadline=deadline):
                await feed.stop()


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """What a login call asked for, checked before any I/O.

    ``settle``: get the context's cookie first if the store has none (see
    :func:`settle_cookie`).
    """

    username: str
    password: str | None = field(repr=False)
    checkonly: bool
    sub_id: str | None
    settle: bool


@dataclass(frozen=True, slots=True)
class FeedPlan:
    """How the session makes each login's feed."""

    options: FeedOptions
    ws_host: str
    hub: FeedHub
    backoff: BackoffPolicy | None
    ssl_context: ssl.SSLContext

    def runner_for(self, login: Login) -> FeedRunner:
        """A feed for ``login``: its context's cookie and sub-ID, its call history."""
        cookies = login.route.cookies

        async def cookie_header() -> str | None:
            cookie = await cookies.get()
            return None if cookie is None else wire.cookie_header(cookie)

        return FeedRunner(
            hub=self.hub,
            options=self.options,
            url=wire.feed_url(self.ws_host, login.sub_id),
            cookie_header=cookie_header,
            on_event=login.record_call,
            backoff=self.backoff,
            ssl_context=self.ssl_context,
        )


async def open_login(
    route: Route,
    request: LoginRequest,
    *,
    start_feed: Callable[[Login], Awaitable[None]] | None,
    deadline: float,
) -> Login:
    """Log in over ``route`` as ``route.cookies.user`` and return the whole :class:`Login`.

    Settles the cookie if asked, sends the login, notes the context in the
    store, loads the saved call history, then starts the feed with
    ``start_feed`` (which returns once the feed is running). If anything
    after the login command fails, the feed is stopped again; the login
    stays on the PBX as it answered.
    """
    command = wire.login_command(route.cookies.user, request.password, checkonly=request.checkonly)
    if request.settle and not request.checkonly:
        await settle_cookie(route, deadline)
    reply = await route.send(command, deadline)
    login = Login(user=reply.user, route=route, history=None)
    store = route.cookies.store
    await store.record_context(route.host, reply.user.login, route.sub_id, True)
    login.history = await _load_history(route, deadline)
    if start_feed is not None:
        try:
            await start_feed(login)
        except BaseException:
            await login.stop_feed()
            raise
    return login


async def settle_cookie(route: Route, deadline: float) -> None:
    """Make sure of the context's cookie before a password goes out, under the store's lock.

    Sessions of one user that log in at once on a store with no cookie
    would each get a cookie of their own, and all but one login would be
    left on the PBX under a cookie nobody keeps. And a cookie the PBX has
    forgotten (a restart) would have it set a fresh one on the password
    login's reply, which may be lost to a deadline. So unless this context
    is known to be logged in with the stored cookie, one cookie-only request
    (a ``checkonly`` login, answered ``notloggedin``, with a new cookie if
    one is due) goes first, under the lock.
    """
    cookies = route.cookies
    if await _cookie_proven(route):
        return
    async with cookies.store.lock(route.host, cookies.user):
        if not await _cookie_proven(route):
            with contextlib.suppress(LoginError):
                await route.send(wire.login_command(cookies.user, None, checkonly=True), deadline)


async def _cookie_proven(route: Route) -> bool:
    """Whether the store has a cookie, and this context was last seen logged in with it."""
    cookies = route.cookies
    if await cookies.get() is None:
        return False
    record = await cookies.store.get_context(route.host, cookies.user, route.sub_id)
    return record is not None and record.logged_in


async def _load_history(route: Route, deadline: float) -> list[Mapping[str, Any]] | None:
    try:
        reply = await route.send(wire.load_history_command(), deadline)
    except SessionLostError:
        raise
    except PbxError as exc:
        # The login stands; the exit will not overwrite a history it never saw.
        log.warning("could not load the saved call history: %s", str(exc))
        return None
    return list(reply.records[-wire.MAX_HISTORY :])


async def close_login(login: Login, *, logged_out: bool, deadline: float = math.inf) -> None:
    """End ``login`` on this side: stop its feed; note in the store if it was logged out.

    Shielded and bounded by ``deadline``: a store that cannot note the logout
    is logged, not raised (the login is over on the PBX either way).
    """
    await login.stop_feed(deadline)
    if not logged_out:
        return
    route = login.route
    with trio.CancelScope(shield=True, deadline=min(deadline, _store_deadline())) as scope:
        try:
            await route.cookies.store.record_context(
                route.host, login.user.login, route.sub_id, False
            )
        except PbxError as exc:
            log.warning("could not note the logout in the session store: %s", str(exc))
    if scope.cancelled_caught:
        log.warning("could not note the logout in the session store: it did not answer in time")


def _store_deadline() -> float:
    return trio.current_time() + _STORE_NOTE_TIMEOUT
