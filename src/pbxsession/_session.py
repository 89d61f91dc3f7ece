"""``open_session`` and the ``Session`` facade: one path for every operation.

Each operation runs the same path (DESIGN.md): the lifecycle gives its
:class:`~pbxsession.Rule` (or refuses it), the command goes out over the
login's :class:`~pbxsession._login.Route`, and only then does the lifecycle
send the rule's events, so that a failed or cancelled call leaves the state
it found. The session owns a nursery; each login's feed and the exit's
stages run in it, and nothing started there outlives the ``async with
open_session(...)`` block.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import replace
from typing import Any, NoReturn, TypeVar

import httpx
import trio

from . import _checks as checks
from . import _wire as wire
from ._config import CertTypes, SessionConfig, VerifyTypes
from ._core import SessionCore, SessionStatistics
from ._errors import (
    InvalidArgumentError,
    LoginError,
    PbxError,
    SessionLostError,
)
from ._fanout import FeedSubscription
from ._feed import BackoffPolicy
from ._http import new_http_client
from ._lifecycle import Operation, Rule, State, TransitionListener
from ._login import LoginRequest
from ._models import ExitReport, FeedOptions, User
from ._nursery import open_owned_nursery
from ._timeouts import ExitTimeouts, Timeout
from ._tls import trust_context
from .stores import SessionStore

__all__ = ["Session", "SessionStatistics", "open_session"]

log = logging.getLogger("pbxsession")
T = TypeVar("T")

_EXIT_CLOSE_GRACE = 1.0
"""Seconds past the exit's bound that closing the feed and HTTP client may take."""

LoginCallback = Callable[[bool, str], None]


class _NoPublicConstructor(type):
    """Like trio's: ``Session(...)`` is refused; :func:`open_session` builds one whole."""

    def __call__(cls, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError(f"{cls.__name__} has no public constructor: use open_session()")

    def _create(cls: type[T], *args: Any, **kwargs: Any) -> T:
        return super().__call__(*args, **kwargs)  # type: ignore[misc, no-any-return]


class Session(metaclass=_NoPublicConstructor):
    """A session with one PBX; get one from :func:`open_session`.

    Asynchronous operations are serialized (a second call waits for the
    first); a synchronous one made meanwhile raises :class:`SessionBusyError`.
    The state lives in the lifecycle machine only (:attr:`state`).
    """

    __slots__ = ("_core",)

    def __init__(self, core: SessionCore) -> None:
        self._core = core
        if core.config.host is not None:
            self.set_host(core.config.host)

    # ------------------------------------------------------------ properties

    @property
    def state(self) -> State:
        """The current lifecycle state."""
        return self._core.lifecycle.state

    @property
    def user(self) -> User | None:
        """The logged-in user, or ``None`` when not logged in."""
        return None if self._core.login is None else self._core.login.user

    @property
    def sub_id(self) -> str | None:
        """The active sub-ID, or ``None`` when this session uses the default context."""
        return self._core.sub_id

    @property
    def host(self) -> str | None:
        """The PBX host (``scheme://host[:port]``), or ``None`` before ``set_host``."""
        return self._core.host or None

    @property
    def ws_host(self) -> str | None:
        """The live feed's host: set explicitly, or derived from :attr:`host`."""
        return self._core.feed_ws_host()

    @property
    def exit_report(self) -> ExitReport | None:
        """The report of the exit, once the session is closed."""
        return self._core.exit_report

    def __repr__(self) -> str:
        user = self.user
        return (
            f"<Session host={self.host!r} state={self.state.value} "
            f"user={user.login if user else None!r} sub_id={self._core.sub_id!r}>"
        )

    # ------------------------------------------------ synchronous operations

    def set_host(self, uri: str) -> None:
        """Point the session at the PBX ``uri`` (``https://host[:port]``). No I/O."""
        rule = self._core.lifecycle.check(Operation.SET_HOST)
        self._core.host = wire.validate_host(uri, allow_insecure=self._core.config.allow_insecure)
        self._core.lifecycle.succeeded(rule)

    def set_ws_host(self, uri: str) -> None:
        """Put the live feed on ``uri`` (``wss://host[:port]``); the state stays. No I/O."""
        rule = self._core.lifecycle.check(Operation.SET_WS_HOST)
        insecure = self._core.config.allow_insecure
        self._core.ws_host = wire.validate_host(uri, websocket=True, allow_insecure=insecure)
        self._core.lifecycle.succeeded(rule)

    def get_sub_id(self) -> str:
        """Make, activate and return a random sub-ID; later calls return the same one.

        When logged in, only allowed if a sub-ID was active at login (it is returned).
        """
        rule = self._core.lifecycle.check(Operation.GET_SUB_ID, self._core.facts())
        if self._core.sub_id is None:
            self._core.sub_id = wire.new_sub_id()
        self._core.lifecycle.succeeded(rule)
        return self._core.sub_id

    def on_transition(self, callback: TransitionListener) -> Callable[[], None]:
        """Call ``callback(source, target, event)`` after every state change.

        It runs once the transition is complete; one that raises is logged at
        ERROR and changes neither the operation's outcome nor the state.
        Returns a function that removes it.
        """
        return self._core.lifecycle.add_listener(callback)

    def events(self) -> FeedSubscription:
        """A receive channel of the feed items that arrive from now on.

        Each call is a new, independent consumer with its own bounded buffer
        (``FeedOptions.buffer_size``). A consumer that subscribes while the
        feed is down or has ended first receives, at once, the item that
        says so (``FeedDown``, ``FeedStopped`` or ``SessionLost``). The
        channel ends when the session closes.
        """
        return self._core.hub.subscribe((self._core.config.feed or FeedOptions()).buffer_size)

    def statistics(self) -> SessionStatistics:
        """The session's figures now."""
        return self._core.statistics()

    async def wait_state(self, *states: State) -> State:
        """Wait until the session is in one of ``states``; return that state."""
        if not states:
            raise InvalidArgumentError("wait_state() needs at least one state")
        while self.state not in states:
            await self._core.state_changed.wait()
        return self.state

    # ----------------------------------------------------- async operations

    async def login(
        self,
        username: str,
        password: str | None = None,
        *,
        checkonly: bool = False,
        subid: str | None = None,
        on_result: LoginCallback | None = None,
    ) -> User:
        """Log in; with ``checkonly``, adopt a login another program made (no password).

        ``subid`` activates that sub-ID for this login. ``on_result(success,
        message)`` mirrors the 6.5 API's callback form; failures still raise.
        With a feed configured, the feed is running when this returns.
        A ``checkonly`` login with an empty user name adopts the most recent
        login the store saw on this host.
        """
        wire.login_command(username, password, checkonly=checkonly)  # bad arguments: no I/O
        sub_id = self._core.sub_id if subid is None else wire.validate_sub_id(subid)
        request = LoginRequest(username, password, checkonly, sub_id, settle=True)
        try:
            user = await self._core.run(
                Operation.LOGIN, lambda rule: self._core.log_in(rule, request)
            )
        except PbxError as exc:
            if on_result is not None:
                on_result(False, str(exc))
            raise
        if on_result is not None:
            on_result(True, f"logged in as {user.login}")
        return user

    async def login_shared(self, username: str, password: str, *, subid: str | None = None) -> User:
        """Log in once for everything sharing the store: adopt the login, else make it.

        Under the store's lock for this host and user (one task at a time
        among the sessions sharing the store, across processes for
        :class:`~pbxsession.SqliteStore` and :class:`~pbxsession.RedisStore`),
        a ``checkonly`` login first adopts the login another session already
        made in this context; only if the PBX answers ``notloggedin`` is the
        password sent. ``subid`` is as for :meth:`login`; raises as it does.
        """
        wire.login_command(username, password)  # bad arguments: no I/O
        sub_id = self._core.sub_id if subid is None else wire.validate_sub_id(subid)
        adopt = LoginRequest(username, None, True, sub_id, settle=False)
        self._core.lifecycle.allowed(Operation.LOGIN)  # no host, no lock: refuse before waiting
        async with self._core.config.store.lock(self._core.host, username):
            try:
                return await self._core.run(
                    Operation.LOGIN, lambda rule: self._core.log_in(rule, adopt)
                )
            except LoginError as exc:
                if not wire.is_not_logged_in(exc):
                    raise
            # Nothing to adopt: this task logs in for everyone (the cookie is settled).
            request = LoginRequest(username, password, False, sub_id, settle=False)
            return await self._core.run(
                Operation.LOGIN, lambda rule: self._core.log_in(rule, request)
            )

    async def _log_in(self, request: LoginRequest) -> User:
        core = self._core
        return await core.run(Operation.LOGIN, lambda rule: core.log_in(rule, request))

    async def select_company(self, company_id: str) -> User:
        """Select the company a multi-company administrator works in; returns the user."""

        async def select(rule: Rule) -> User:
            login = self._core.current_login()
            wire.check_company(login.user, company_id)  # refused here: nothing sent
            command = wire.select_company_command(company_id)
            reply = await login.route.send(command, self._core.deadline())
            login.user = replace(login.user, company=reply.user.company, home=reply.user.home)
            self._core.lifecycle.succeeded(rule, login.facts())
            return login.user

        return await self._core.run(Operation.SELECT_COMPANY, select)

    async def rtc_reset(self, getnew: bool = False) -> str | None:
        """Release and randomise the WebRTC phone password; with ``getnew``, return the new one.

        The session remembers a password it obtained, so that ``exit`` releases it.
        """
        getnew = checks.boolean("getnew", getnew)

        async def reset(rule: Rule) -> str | None:
            login = self._core.current_login()
            if getnew:
                reply = await login.route.send(
                    wire.rtc_new_password_command(), self._core.deadline()
                )
                login.rtc_password = reply.password
            else:
                await login.route.send(wire.rtc_reset_command(), self._core.deadline())
                login.rtc_password = None
            self._core.lifecycle.succeeded(rule)
            return login.rtc_password

        return await self._core.run(Operation.RTC_RESET, reset)

    async def logout(self) -> None:
        """Log out of the PBX and stop the live feed (first, so the PBX's errno 2 never comes).

        A PBX that says the session was already logged out counts as success.
        If the PBX cannot be told, the login stands and its feed starts again.
        """

        async def log_out(rule: Rule) -> None:
            login = self._core.current_login()
            await login.stop_feed()
            try:
                await login.route.send(wire.logout_command(), self._core.deadline())
            except SessionLostError:
                raise
            except PbxError:
                await self._core.start_feed(login)  # the login stands, and so does its feed
                raise
            await self._core.end_login(login, lambda: self._core.lifecycle.succeeded(rule), None)

        try:
            await self._core.run(Operation.LOGOUT, log_out)
        except SessionLostError:
            return  # the session has already moved to host_set

    async def exit(
        self,
        logout: bool = False,
        *,
        timeout: float | ExitTimeouts | None = None,  # noqa: ASYNC109 - the exit's own bound
    ) -> ExitReport:
        """The staged super-logout; ends ``closed`` and returns the :class:`ExitReport`.

        Stage 1, concurrently: chat presence offline, save call history, release
        the WebRTC password held. Stage 2: stop the feed, then ``logout`` if asked.
        ``timeout`` bounds the whole exit in seconds, or is an
        :class:`ExitTimeouts` (per step and total); default: the session's
        ``exit_timeout``. Closing the feed, the HTTP client and noting the
        logout in the store may take up to one second more. The exit is
        carried to its bound even when the caller is cancelled; an operation
        in progress is interrupted (it raises :class:`InvalidStateError`).
        Step failures are reported, not raised. Called again, it returns the
        same report.
        """
        logout = checks.boolean("logout", logout)
        bounds = self._core.config.exit_timeout if timeout is None else ExitTimeouts.coerce(timeout)
        return await self._core.exit(logout, bounds)


@asynccontextmanager
async def open_session(
    host: str | None = None,
    *,
    ws_host: str | None = None,
    subid: str | None = None,
    store: SessionStore | None = None,
    keep_session: bool = False,
    allow_insecure: bool = False,
    feed: FeedOptions | None = FeedOptions(),  # noqa: B008 - immutable
    timeout: float | Timeout = Timeout(),  # noqa: B008, ASYNC109 - immutable; per command
    verify: VerifyTypes = True,
    cert: CertTypes = None,
    trust_env: bool = True,
    retries: int = 2,
    exit_timeout: float | ExitTimeouts = ExitTimeouts(),  # noqa: B008 - immutable
    backoff: BackoffPolicy | None = None,
    exit_on_close: bool = True,
    http_client: httpx.AsyncClient | None = None,
) -> AsyncIterator[Session]:
    """Open a session with the PBX at ``host``; leaving the block ends it.

    Every option is checked here, before anything is sent. The session owns
    a nursery (its live feed and exit stages run there). What escapes the
    block is the body's own exception or one documented :class:`PbxError`,
    never an ``ExceptionGroup``. Leaving the block performs ``exit(logout=not
    keep_session)`` if the session is still open (shielded, bounded by
    ``exit_timeout``); ``exit_on_close=False`` closes without the exit's
    steps instead (the PBX is told nothing; every step is reported skipped).

    ``timeout`` bounds each command attempt and each operation (a number, or
    a :class:`Timeout`); ``retries`` bounds retries of commands that are safe
    to repeat. ``verify`` is what httpx takes (``True``: the system's trust
    store; a CA bundle path; an ``ssl.SSLContext``; ``False`` logs a
    warning), ``cert`` a client certificate, ``trust_env`` honours
    ``SSL_CERT_FILE``/``SSL_CERT_DIR``; the same trust serves the commands
    and the feed. ``allow_insecure`` permits plain ``http``/``ws`` to
    non-loopback hosts. ``store`` keeps the session cookies (default: one
    per process): sessions sharing a store and a user share a login, like
    browser tabs. ``http_client`` is an ``httpx.AsyncClient`` you own and
    close, shared by many sessions (its cookie jar is never used).
    """
    config = SessionConfig.build(
        host=host, ws_host=ws_host, subid=subid, store=store, keep_session=keep_session,
        allow_insecure=allow_insecure, feed=feed, timeout=timeout, verify=verify, cert=cert,
        trust_env=trust_env, retries=retries, exit_timeout=exit_timeout, backoff=backoff,
        exit_on_close=exit_on_close, http_client=http_client,
    )  # fmt: skip
    ssl_context = trust_context(config.verify, config.cert, config.trust_env)
    if config.verify is False:
        log.warning("TLS certificate verification is off for this session (verify=False)")
    # No AsyncExitStack: it would hold a 600-byte deque for the session's whole life.
    async with (
        _own_client(config.http_client, ssl_context) as client,
        open_owned_nursery() as nursery,
    ):
        core = SessionCore(config, client=client, ssl_context=ssl_context, nursery=nursery)
        session = Session._create(core)
        try:
            yield session
        finally:
            with trio.CancelScope(shield=True):
                await core.close_on_leave()
                nursery.cancel_scope.cancel()


def _own_client(
    shared: httpx.AsyncClient | None, ssl_context: ssl.SSLContext
) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    """The caller's client, left open; else the session's own, closed with it."""
    return nullcontext(shared) if shared is not None else new_http_client(ssl_context)
