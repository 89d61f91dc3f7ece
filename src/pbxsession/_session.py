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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, NoReturn, TypeVar

import httpx
import trio

from . import _checks as checks
from . import _wire as wire
from ._config import CertTypes, SessionConfig, VerifyTypes
from ._errors import (
    InvalidArgumentError,
    InvalidStateError,
    LoginError,
    PbxError,
    SessionLostError,
)
from ._exit import STEP_NAMES, ExitPlan, run_exit
from ._fanout import FeedHub, FeedSubscription
from ._feed import BackoffPolicy, FeedRunner, FeedStatistics
from ._lifecycle import RULES, Condition, Lifecycle, Operation, Rule, State, TransitionListener
from ._login import FeedPlan, Login, LoginRequest, Route, close_login, open_login
from ._models import ExitReport, FeedOptions, SessionLost, StepResult, User
from ._nursery import open_owned_nursery
from ._timeouts import ExitTimeouts, Timeout
from ._tls import trust_context
from ._transport import CommandTransport, new_http_client
from .stores import CookieSlot, SessionStore

__all__ = ["Session", "SessionStatistics", "open_session"]

log = logging.getLogger("pbxsession")
T = TypeVar("T")

_EXIT_CLOSE_GRACE = 1.0
"""Seconds past the exit's bound that closing the feed and HTTP client may take."""

LoginCallback = Callable[[bool, str], None]


@dataclass(frozen=True, slots=True)
class SessionStatistics:
    """Figures of one session now.

    ``tasks`` counts the tasks running in the session's nursery (a login's
    feed); ``subscribers`` the open :meth:`Session.events` channels;
    ``http_client_open`` whether the session's HTTP client can still send.
    """

    state: State
    commands_sent: int
    history_records: int
    feed: FeedStatistics | None
    subscribers: int
    tasks: int
    http_client_open: bool


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

    def __init__(
        self,
        config: SessionConfig,
        *,
        client: httpx.AsyncClient,
        ssl_context: ssl.SSLContext,
        nursery: trio.Nursery,
    ) -> None:
        self._config = config
        self._client = client
        self._owns_client = config.http_client is None
        self._ssl_context = ssl_context
        self._transport = CommandTransport(
            client=client, timeout=config.timeout, retries=config.retries
        )
        self._nursery = nursery
        self._lifecycle = Lifecycle()
        self._host = ""  # meaningful once the lifecycle says the host is set
        self._ws_host = config.ws_host
        self._sub_id = config.subid
        self._login: Login | None = None
        self._exit_report: ExitReport | None = None
        self._operation_scope: trio.CancelScope | None = None
        self._lock = trio.Lock()
        self._state_changed = trio.Event()
        self._hub = FeedHub()
        self._lifecycle.add_listener(self._wake_waiters)
        if config.host is not None:
            self.set_host(config.host)

    # ------------------------------------------------------------ properties

    @property
    def state(self) -> State:
        """The current lifecycle state."""
        return self._lifecycle.state

    @property
    def user(self) -> User | None:
        """The logged-in user, or ``None`` when not logged in."""
        return None if self._login is None else self._login.user

    @property
    def sub_id(self) -> str | None:
        """The active sub-ID, or ``None`` when this session uses the default context."""
        return self._sub_id

    @property
    def host(self) -> str | None:
        """The PBX host (``scheme://host[:port]``), or ``None`` before ``set_host``."""
        return self._host or None

    @property
    def ws_host(self) -> str | None:
        """The live feed's host: set explicitly, or derived from :attr:`host`."""
        if self._ws_host is not None:
            return self._ws_host
        return wire.ws_host_for(self._host) if self._host else None

    @property
    def exit_report(self) -> ExitReport | None:
        """The report of the exit, once the session is closed."""
        return self._exit_report

    def __repr__(self) -> str:
        user = self.user
        return (
            f"<Session host={self.host!r} state={self.state.value} "
            f"user={user.login if user else None!r} sub_id={self._sub_id!r}>"
        )

    # ------------------------------------------------ synchronous operations

    def set_host(self, uri: str) -> None:
        """Point the session at the PBX ``uri`` (``https://host[:port]``). No I/O."""
        rule = self._lifecycle.check(Operation.SET_HOST)
        self._host = wire.validate_host(uri, allow_insecure=self._config.allow_insecure)
        self._lifecycle.succeeded(rule)

    def set_ws_host(self, uri: str) -> None:
        """Put the live feed on ``uri`` (``wss://host[:port]``); the state stays. No I/O."""
        rule = self._lifecycle.check(Operation.SET_WS_HOST)
        insecure = self._config.allow_insecure
        self._ws_host = wire.validate_host(uri, websocket=True, allow_insecure=insecure)
        self._lifecycle.succeeded(rule)

    def get_sub_id(self) -> str:
        """Make, activate and return a random sub-ID; later calls return the same one.

        When logged in, only allowed if a sub-ID was active at login (it is returned).
        """
        rule = self._lifecycle.check(Operation.GET_SUB_ID, self._facts())
        if self._sub_id is None:
            self._sub_id = wire.new_sub_id()
        self._lifecycle.succeeded(rule)
        return self._sub_id

    def on_transition(self, callback: TransitionListener) -> Callable[[], None]:
        """Call ``callback(source, target, event)`` after every state change.

        It runs once the transition is complete; one that raises is logged at
        ERROR and changes neither the operation's outcome nor the state.
        Returns a function that removes it.
        """
        return self._lifecycle.add_listener(callback)

    def events(self) -> FeedSubscription:
        """A receive channel of the feed items that arrive from now on.

        Each call is a new, independent consumer with its own bounded buffer
        (``FeedOptions.buffer_size``). A consumer that subscribes while the
        feed is down or has ended first receives, at once, the item that
        says so (``FeedDown``, ``FeedStopped`` or ``SessionLost``). The
        channel ends when the session closes.
        """
        return self._hub.subscribe((self._config.feed or FeedOptions()).buffer_size)

    def statistics(self) -> SessionStatistics:
        """The session's figures now."""
        login = self._login
        feed = login.feed if login is not None else None
        return SessionStatistics(
            state=self.state,
            commands_sent=self._transport.commands_sent,
            history_records=len(login.history or ()) if login is not None else 0,
            feed=feed.statistics() if feed is not None else None,
            subscribers=self._hub.subscriber_count,
            tasks=len(self._nursery.child_tasks),
            http_client_open=not self._client.is_closed,
        )

    async def wait_state(self, *states: State) -> State:
        """Wait until the session is in one of ``states``; return that state."""
        if not states:
            raise InvalidArgumentError("wait_state() needs at least one state")
        while self.state not in states:
            await self._state_changed.wait()
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
        sub_id = self._sub_id if subid is None else wire.validate_sub_id(subid)
        request = LoginRequest(username, password, checkonly, sub_id, settle=True)
        try:
            user = await self._run(Operation.LOGIN, lambda rule: self._log_in(rule, request))
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
        sub_id = self._sub_id if subid is None else wire.validate_sub_id(subid)
        adopt = LoginRequest(username, None, True, sub_id, settle=False)
        self._lifecycle.allowed(Operation.LOGIN)  # no host, no lock: refuse before waiting
        async with self._config.store.lock(self._host, username):
            try:
                return await self._run(Operation.LOGIN, lambda rule: self._log_in(rule, adopt))
            except LoginError as exc:
                if not wire.is_not_logged_in(exc):
                    raise
            # Nothing to adopt: this task logs in for everyone (the cookie is settled).
            request = LoginRequest(username, password, False, sub_id, settle=False)
            return await self._run(Operation.LOGIN, lambda rule: self._log_in(rule, request))

    async def select_company(self, company_id: str) -> User:
        """Select the company a multi-company administrator works in; returns the user."""

        async def select(rule: Rule) -> User:
            login = self._current_login()
            wire.check_company(login.user, company_id)  # refused here: nothing sent
            command = wire.select_company_command(company_id)
            reply = await login.route.send(command, self._deadline())
            login.user = replace(login.user, company=reply.user.company, home=reply.user.home)
            self._lifecycle.succeeded(rule, login.facts())
            return login.user

        return await self._run(Operation.SELECT_COMPANY, select)

    async def rtc_reset(self, getnew: bool = False) -> str | None:
        """Release and randomise the WebRTC phone password; with ``getnew``, return the new one.

        The session remembers a password it obtained, so that ``exit`` releases it.
        """
        getnew = checks.boolean("getnew", getnew)

        async def reset(rule: Rule) -> str | None:
            login = self._current_login()
            if getnew:
                reply = await login.route.send(
                    wire.rtc_reset_command(getnew=True), self._deadline()
                )
                login.rtc_password = reply.password
            else:
                await login.route.send(wire.rtc_reset_command(), self._deadline())
                login.rtc_password = None
            self._lifecycle.succeeded(rule)
            return login.rtc_password

        return await self._run(Operation.RTC_RESET, reset)

    async def logout(self) -> None:
        """Log out of the PBX and stop the live feed (first, so the PBX's errno 2 never comes).

        A PBX that says the session was already logged out counts as success.
        If the PBX cannot be told, the login stands and its feed starts again.
        """

        async def log_out(rule: Rule) -> None:
            login = self._current_login()
            await login.stop_feed()
            try:
                await login.route.send(wire.logout_command(), self._deadline())
            except SessionLostError:
                raise
            except PbxError:
                await self._start_feed(login)  # the login stands, and so does its feed
                raise
            await self._end_login(login, lambda: self._lifecycle.succeeded(rule), None)

        try:
            await self._run(Operation.LOGOUT, log_out)
        except SessionLostError:
            return  # the session has already moved to host_set

    async def exit(
        self, logout: bool = False, *, timeout: float | ExitTimeouts | None = None
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
        bounds = self._config.exit_timeout if timeout is None else ExitTimeouts.coerce(timeout)
        deadline = trio.current_time() + bounds.total
        with trio.CancelScope(shield=True):
            if self._operation_scope is not None:
                self._operation_scope.cancel()
            async with self._lock:
                report = await self._exit(ExitPlan(self._login, logout), bounds, deadline)
        return report

    # -------------------------------------------------------------- internals

    def _facts(self) -> frozenset[Condition]:
        return frozenset() if self._login is None else self._login.facts()

    def _current_login(self) -> Login:
        if self._login is None:  # unreachable: the rules allow this only when logged in
            raise InvalidStateError("command", self.state.value, ("logged_in",))
        return self._login

    def _deadline(self) -> float:
        return trio.current_time() + self._config.timeout.operation

    async def _run(self, operation: Operation, work: Callable[[Rule], Awaitable[T]]) -> T:
        """Run one asynchronous operation under the lock, by its rule.

        ``work`` sends the rule's success events itself once its data is in
        place (through :meth:`Lifecycle.succeeded`); a ``notloggedin`` answer
        ends the login here, by the rule's ``on_lost``.
        """
        if not self._lock.locked():  # free: no trip through the scheduler (hot path)
            self._lock.acquire_nowait()
        else:
            await self._lock.acquire()
        try:
            rule = self._lifecycle.begin(operation, self._facts())
            try:
                with trio.CancelScope() as scope:  # exit() cancels it: it never waits for us
                    self._operation_scope = scope
                    return await work(rule)
            except SessionLostError as exc:
                if self._login is not None:
                    lost = SessionLost(f"the PBX answered notloggedin: {exc.message or exc.cmd}")
                    await self._end_login(self._login, lambda: self._lifecycle.lost(rule), lost)
                raise
            finally:
                self._operation_scope = None
                self._lifecycle.end(rule)
            raise InvalidStateError(  # only reached when exit() cancelled the work
                operation.value, State.EXITING.value, (), "interrupted: the session is exiting"
            )
        finally:
            self._lock.release()

    async def _log_in(self, rule: Rule, request: LoginRequest) -> User:
        store = self._config.store
        # A checkonly login with no user name adopts the newest login on this host.
        user = request.username or await store.latest_user(self._host)
        if not user:
            raise wire.command_error(
                "login", wire.CODE_NOT_LOGGED_IN, "the session store has no login on this host"
            )
        slot = CookieSlot(store, self._host, user)
        route = Route(self._transport, self._host, request.sub_id, slot)
        start = self._start_feed if self._config.feed is not None else None
        login = await open_login(route, request, start_feed=start, deadline=self._deadline())
        self._login, self._sub_id = login, request.sub_id
        self._lifecycle.succeeded(rule, login.facts())
        log.info("logged in to %s as %s", self._host, login.user.login)
        return login.user

    async def _start_feed(self, login: Login) -> None:
        options, ws_host = self._config.feed, self.ws_host
        if options is not None and ws_host is not None:
            plan = FeedPlan(options, ws_host, self._hub, self._config.backoff, self._ssl_context)
            login.feed = plan.runner_for(login)
            await self._nursery.start(self._watch_feed, login, login.feed)

    async def _watch_feed(
        self, login: Login, feed: FeedRunner, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """Run ``login``'s feed and act on how it ended (the feed reports one way)."""
        ending = await feed.run(task_status=task_status)
        if isinstance(ending, SessionLost):
            async with self._lock:  # after any operation in progress
                if self._login is login:  # else that login is already over
                    rule = RULES[Operation.SESSION_LOST]
                    await self._end_login(login, lambda: self._lifecycle.succeeded(rule), ending)
        elif ending is not None:
            self._hub.publish(ending)

    async def _end_login(
        self, login: Login, transition: Callable[[], object], lost: SessionLost | None
    ) -> None:
        """End ``login``: stop its feed, change the state, tell consumers, note the store."""
        with trio.CancelScope(shield=True):
            await login.stop_feed()
            self._login = None
            transition()
            if lost is not None:
                log.warning("session lost: %s", lost.reason)
                self._hub.publish(lost)  # the state already reads host_set
            await close_login(login, logged_out=True)

    async def _exit(self, plan: ExitPlan, bounds: ExitTimeouts, deadline: float) -> ExitReport:
        """Run the exit's stages and close; called shielded, with the lock held."""
        if self._exit_report is not None:  # closed: the earlier report
            return self._exit_report
        started = trio.current_time()
        rule = self._lifecycle.begin(Operation.EXIT)
        results: dict[str, StepResult] = {}
        try:
            await run_exit(plan, bounds, deadline, results)
        finally:
            # Also when interrupted (KeyboardInterrupt is not held off by the
            # shield): the session still closes, and the report says so.
            close_by = deadline + _EXIT_CLOSE_GRACE
            login, self._login = self._login, None
            if login is not None:
                await close_login(login, logged_out=plan.logged_out(results), deadline=close_by)
            self._hub.close()
            if self._owns_client:
                with trio.move_on_at(close_by):
                    await self._client.aclose()
            report = ExitReport(
                steps={name: results[name] for name in STEP_NAMES},
                duration=trio.current_time() - started,
            )
            self._exit_report = report
            self._lifecycle.end(rule)
        log.info(
            "exit finished in %.2fs: %s",
            report.duration,
            ", ".join(f"{name} {r.outcome.value}" for name, r in report.steps.items()),
        )
        return report

    async def _close_on_leave(self) -> None:
        """What leaving the ``open_session`` block does: the exit, or a detached close."""
        config = self._config
        if config.exit_on_close:
            await self.exit(logout=not config.keep_session)
            return
        deadline = trio.current_time() + config.exit_timeout.total
        async with self._lock:
            plan = ExitPlan(self._login, logout=False, detached=True)
            await self._exit(plan, config.exit_timeout, deadline)

    def _wake_waiters(self, *_: object) -> None:
        changed, self._state_changed = self._state_changed, trio.Event()
        changed.set()


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
    timeout: float | Timeout = Timeout(),  # noqa: B008 - immutable
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
    async with AsyncExitStack() as stack:
        client = config.http_client or await stack.enter_async_context(new_http_client(ssl_context))
        nursery = await stack.enter_async_context(open_owned_nursery())
        session = Session._create(config, client=client, ssl_context=ssl_context, nursery=nursery)
        try:
            yield session
        finally:
            with trio.CancelScope(shield=True):
                await session._close_on_leave()
                nursery.cancel_scope.cancel()
