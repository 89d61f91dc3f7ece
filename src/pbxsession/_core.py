"""The one path every operation of a session runs, and what a session owns.

:class:`SessionCore` holds the session's lifecycle, its current
:class:`~pbxsession._login.Login`, the feed hub, the operation lock, the HTTP
client and the nursery. It runs each asynchronous operation by its rule
(:meth:`SessionCore.run`): the lock, the rule's check, a cancel scope the
exit can cut short, and the end of the login when the PBX says it is gone.
It starts and watches each login's feed (the feed reports how it ended; the
core acts on it), and it runs the exit and the close. The public face is
:class:`~pbxsession.Session`.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx
import trio

from . import _wire as wire
from ._config import SessionConfig
from ._errors import InvalidStateError, PbxTimeoutError, SessionLostError
from ._exit import STEP_NAMES, ExitPlan, run_exit
from ._fanout import FeedHub
from ._feed import FeedRunner, FeedStatistics
from ._lifecycle import RULES, Condition, Lifecycle, Operation, Rule, State
from ._login import FeedPlan, Login, LoginRequest, Route, close_login, open_login
from ._models import ExitReport, SessionLost, StepResult, User
from ._timeouts import ExitTimeouts
from ._transport import CommandTransport
from .stores import CookieSlot

__all__ = ["SessionCore", "SessionStatistics", "StateSignal"]

log = logging.getLogger("pbxsession")
T = TypeVar("T")

_EXIT_CLOSE_GRACE = 1.0
"""Seconds past the exit's bound that closing the feed and HTTP client may take."""


class StateSignal:
    """Wakes every task waiting for the session's next transition; a lifecycle listener.

    An object of its own, not a method of the core: a lifecycle holding a
    bound method of the core that holds the lifecycle is a reference cycle,
    and every closed session would then wait for the cyclic GC to free it.
    """

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting = trio.lowlevel.ParkingLot()

    def __call__(self, *_: object) -> None:
        self._waiting.unpark_all()

    async def wait(self) -> None:
        """Return after the next transition."""
        await self._waiting.park()


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


class SessionCore:
    """What one session owns, and the path its operations run (see the module)."""

    __slots__ = (
        "_lock",
        "_operation_scope",
        "client",
        "config",
        "exit_report",
        "host",
        "hub",
        "lifecycle",
        "login",
        "nursery",
        "ssl_context",
        "state_changed",
        "sub_id",
        "transport",
        "unsure",
        "ws_host",
    )

    def __init__(
        self,
        config: SessionConfig,
        *,
        client: httpx.AsyncClient,
        ssl_context: ssl.SSLContext,
        nursery: trio.Nursery,
    ) -> None:
        self.config = config
        self.client = client
        self.ssl_context = ssl_context
        self.nursery = nursery
        self.transport = CommandTransport(
            client=client, timeout=config.timeout, retries=config.retries
        )
        self.lifecycle = Lifecycle()
        self.host = ""  # meaningful once the lifecycle says the host is set
        self.ws_host = config.ws_host
        self.sub_id = config.subid
        self.login: Login | None = None
        self.unsure: Route | None = None  # a login attempt that timed out (see log_in)
        self.exit_report: ExitReport | None = None
        self.hub = FeedHub()
        self.state_changed = StateSignal()
        self._operation_scope: trio.CancelScope | None = None
        self._lock = trio.Lock()
        self.lifecycle.add_listener(self.state_changed)

    # ------------------------------------------------------------ reading

    def facts(self) -> frozenset[Condition]:
        """The conditions the rules may ask about, from the login there is."""
        return frozenset() if self.login is None else self.login.facts()

    def current_login(self) -> Login:
        """The login an operation the rules allowed works on."""
        if self.login is None:  # unreachable: the rules allow this only when logged in
            raise InvalidStateError("command", self.lifecycle.state.value, ("logged_in",))
        return self.login

    def deadline(self) -> float:
        """The deadline of an operation starting now (``timeout.operation``)."""
        return trio.current_time() + self.config.timeout.operation

    def feed_ws_host(self) -> str | None:
        """The live feed's host: set explicitly, or derived from the host."""
        if self.ws_host is not None:
            return self.ws_host
        return wire.ws_host_for(self.host) if self.host else None

    def statistics(self) -> SessionStatistics:
        """The session's figures now."""
        login = self.login
        feed = login.feed if login is not None else None
        return SessionStatistics(
            state=self.lifecycle.state,
            commands_sent=self.transport.commands_sent,
            history_records=len(login.history or ()) if login is not None else 0,
            feed=feed.statistics() if feed is not None else None,
            subscribers=self.hub.subscriber_count,
            tasks=len(self.nursery.child_tasks),
            http_client_open=not self.client.is_closed,
        )

    # ---------------------------------------------------------- operations

    async def run(self, operation: Operation, work: Callable[[Rule], Awaitable[T]]) -> T:
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
            rule = self.lifecycle.begin(operation, self.facts())
            try:
                with trio.CancelScope() as scope:  # exit() cancels it: it never waits for us
                    self._operation_scope = scope
                    return await work(rule)
            except SessionLostError as exc:
                await self._lost(rule, exc)
                raise
            finally:
                self._operation_scope = None
                self.lifecycle.end(rule)
            raise InvalidStateError(  # only reached when exit() cancelled the work
                operation.value, State.EXITING.value, (), "interrupted: the session is exiting"
            )
        finally:
            self._lock.release()

    async def _lost(self, rule: Rule, error: SessionLostError) -> None:
        if self.login is not None:
            lost = SessionLost(f"the PBX answered notloggedin: {error.message or error.cmd}")
            await self.end_login(self.login, lambda: self.lifecycle.lost(rule), lost)

    async def log_in(self, rule: Rule, request: LoginRequest) -> User:
        """Open the :class:`Login` ``request`` asks for and make it the session's."""
        store = self.config.store
        # A checkonly login with no user name adopts the newest login on this host.
        user = request.username or await store.latest_user(self.host)
        if not user:
            raise wire.command_error(
                "login", wire.CODE_NOT_LOGGED_IN, "the session store has no login on this host"
            )
        route = Route(self.transport, self.host, request.sub_id, CookieSlot(store, self.host, user))
        start = self.start_feed if self.config.feed is not None else None
        try:
            login = await open_login(route, request, start_feed=start, deadline=self.deadline())
        except PbxTimeoutError:
            self.unsure = route  # the PBX may have made it: the exit logs it out too
            raise
        self.login, self.sub_id, self.unsure = login, request.sub_id, None
        self.lifecycle.succeeded(rule, login.facts())
        log.info("logged in to %s as %s", self.host, login.user.login)
        return login.user

    async def start_feed(self, login: Login) -> None:
        """Start ``login``'s feed in the session's nursery; return once it runs."""
        options, ws_host = self.config.feed, self.feed_ws_host()
        if options is not None and ws_host is not None:
            plan = FeedPlan(options, ws_host, self.hub, self.config.backoff, self.ssl_context)
            login.feed = plan.runner_for(login)
            await self.nursery.start(self._watch_feed, login, login.feed)

    async def _watch_feed(
        self, login: Login, feed: FeedRunner, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """Run ``login``'s feed and act on how it ended (the feed reports one way)."""
        ending = await feed.run(task_status=task_status)
        if isinstance(ending, SessionLost):
            async with self._lock:  # after any operation in progress
                if self.login is login:  # else that login is already over
                    rule = RULES[Operation.SESSION_LOST]
                    await self.end_login(login, lambda: self.lifecycle.succeeded(rule), ending)
        elif ending is not None:
            self.hub.publish(ending)

    async def end_login(
        self, login: Login, transition: Callable[[], object], lost: SessionLost | None
    ) -> None:
        """End ``login``: stop its feed, change the state, tell consumers, note the store."""
        with trio.CancelScope(shield=True):
            await login.stop_feed()
            self.login = None
            transition()
            if lost is not None:
                log.warning("session lost: %s", lost.reason)
                self.hub.publish(lost)  # the state already reads host_set
            await close_login(login, logged_out=True)

    # ----------------------------------------------------------- the end

    async def exit(
        self, logout: bool, bounds: ExitTimeouts, *, detached: bool = False
    ) -> ExitReport:
        """The staged exit (or, ``detached``, a close without its steps); shielded.

        An operation in progress is interrupted first. Called again, or while
        another call is exiting, it returns the same report.
        """
        deadline = trio.current_time() + bounds.total
        with trio.CancelScope(shield=True):
            if self._operation_scope is not None:
                self._operation_scope.cancel()
            async with self._lock:
                plan = ExitPlan(self.login, logout, detached=detached, unsure=self.unsure)
                report = await self._exit(plan, bounds, deadline)
        return report

    async def _exit(self, plan: ExitPlan, bounds: ExitTimeouts, deadline: float) -> ExitReport:
        if self.exit_report is not None:  # closed: the earlier report
            return self.exit_report
        started = trio.current_time()
        rule = self.lifecycle.begin(Operation.EXIT)
        results: dict[str, StepResult] = {}
        try:
            await run_exit(plan, bounds, deadline, results)
        finally:
            # Also when interrupted (KeyboardInterrupt is not held off by the
            # shield): the session still closes, and the report says so.
            await self._close(plan.logged_out(results), deadline + _EXIT_CLOSE_GRACE)
            report = ExitReport(
                steps={name: results[name] for name in STEP_NAMES},
                duration=trio.current_time() - started,
            )
            self.exit_report = report
            self.lifecycle.end(rule)
        log.info(
            "exit finished in %.2fs: %s",
            report.duration,
            ", ".join(f"{name} {r.outcome.value}" for name, r in report.steps.items()),
        )
        return report

    async def _close(self, logged_out: bool, close_by: float) -> None:
        """Close the login, the consumers' channels and (if owned) the HTTP client."""
        login, self.login = self.login, None
        if login is not None:
            await close_login(login, logged_out=logged_out, deadline=close_by)
        self.hub.close()
        if self.config.http_client is None:  # the caller's own client stays open
            with trio.move_on_at(close_by):
                await self.client.aclose()

    async def close_on_leave(self) -> None:
        """What leaving the ``open_session`` block does: the exit, or a detached close."""
        config = self.config
        await self.exit(
            not config.keep_session, config.exit_timeout, detached=not config.exit_on_close
        )
