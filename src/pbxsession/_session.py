"""``open_session`` and ``Session``: one path for every operation.

Each operation runs the same path (DESIGN.md): ask the lifecycle machine
whether it is allowed now, build the command (``_wire``), send it
(``_transport``), and only then tell the machine what happened, so that a
failed or cancelled call leaves the state it found. The session owns a
nursery; the live feed and the exit's stages run in it, and nothing started
there outlives the ``async with open_session(...)`` block.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import trio

from . import _wire as wire
from ._errors import (
    InvalidArgumentError,
    InvalidStateError,
    LoginError,
    PbxError,
    PermissionDeniedError,
    SessionLostError,
    StaleCredentialError,
    UnknownCompanyError,
)
from ._exit import STEP_NAMES, ExitStep, StepSkipped, run_stage
from ._fanout import FeedHub, FeedSubscription
from ._feed import BackoffPolicy, FeedRunner, FeedStatistics
from ._lifecycle import Condition, Event, Lifecycle, Operation, State
from ._models import (
    ExitReport,
    FeedEvent,
    FeedOptions,
    SessionLost,
    StepOutcome,
    StepResult,
    User,
)
from ._nursery import open_owned_nursery
from ._transport import CommandTransport, new_http_client, tls_context
from .stores import SessionStore, default_store

__all__ = ["ExitTimeouts", "Session", "SessionStatistics", "open_session"]

R = TypeVar("R")
log = logging.getLogger("pbxsession")

_EXIT_CLOSE_GRACE = 1.0
"""Seconds past the exit's bound that closing the feed and HTTP client may take."""

LoginCallback = Callable[[bool, str], None]
TransitionCallback = Callable[[State, State, Event], None]


@dataclass(frozen=True, slots=True)
class ExitTimeouts:
    """Bounds of the staged exit: ``step`` seconds per step, ``total`` for all of it."""

    step: float = 5.0
    total: float = 10.0

    def __post_init__(self) -> None:
        for name in ("step", "total"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise InvalidArgumentError(f"exit timeout {name} must be a positive number")


@dataclass(frozen=True, slots=True)
class SessionStatistics:
    """Figures of one session: its state, commands sent, and the feed's figures."""

    state: State
    commands_sent: int
    history_records: int
    feed: FeedStatistics | None


class Session:
    """A session with one PBX; get one from :func:`open_session`.

    Operations are serialized: a second call waits for the first. The state
    lives in the lifecycle machine only (:attr:`state`).
    """

    def __init__(
        self,
        *,
        host: str | None,
        ws_host: str | None,
        subid: str | None,
        store: SessionStore,
        allow_insecure: bool,
        feed: FeedOptions | None,
        exit_timeouts: ExitTimeouts,
        backoff: BackoffPolicy | None,
    ) -> None:
        if feed is not None and not isinstance(feed, FeedOptions):
            raise InvalidArgumentError("feed must be a FeedOptions or None")
        self._lifecycle = Lifecycle()
        self._allow_insecure = allow_insecure
        self._store = store
        self._feed_options = feed
        self._exit_timeouts = exit_timeouts
        self._backoff = backoff
        self._host: str | None = None
        self._ws_host: str | None = None
        self._sub_id: str | None = None if subid is None else wire.validate_sub_id(subid)
        self._sub_id_at_login = False
        self._user: User | None = None
        self._rtc_password: str | None = None
        self._history: deque[Mapping[str, Any]] = deque(maxlen=wire.MAX_HISTORY)
        self._history_loaded = False
        self._generation = 0
        self._exit_report: ExitReport | None = None
        self._operation_scope: trio.CancelScope | None = None
        self._lock = trio.Lock()
        self._state_changed = trio.Event()
        self._hub = FeedHub()
        self._feed: FeedRunner | None = None
        self._nursery: trio.Nursery | None = None
        self._client: httpx.AsyncClient | None = None
        self._ssl_context: ssl.SSLContext | None = None
        self._transport: CommandTransport | None = None
        self._lifecycle.add_listener(self._on_transition)
        if ws_host is not None:
            self.set_ws_host(ws_host)
        if host is not None:
            self.set_host(host)

    # ------------------------------------------------------------ properties

    @property
    def state(self) -> State:
        """The current lifecycle state."""
        return self._lifecycle.state

    @property
    def user(self) -> User | None:
        """The logged-in user, or ``None`` when not logged in."""
        return self._user if self.state.is_logged_in else None

    @property
    def sub_id(self) -> str | None:
        """The active sub-ID, or ``None`` when this session shares the default context."""
        return self._sub_id

    @property
    def host(self) -> str | None:
        """The PBX host (``scheme://host[:port]``), or ``None`` before ``set_host``."""
        return self._host

    @property
    def ws_host(self) -> str | None:
        """The live feed's host: set explicitly, or derived from :attr:`host`."""
        if self._ws_host is not None:
            return self._ws_host
        return None if self._host is None else wire.ws_host_for(self._host)

    @property
    def exit_report(self) -> ExitReport | None:
        """The report of the exit, once the session is closed."""
        return self._exit_report

    def __repr__(self) -> str:
        user = self.user
        login = user.login if user is not None else None
        return (
            f"<Session host={self._host!r} state={self.state.value} "
            f"user={login!r} sub_id={self._sub_id!r}>"
        )

    # ------------------------------------------------ synchronous operations

    def set_host(self, uri: str) -> None:
        """Point the session at the PBX ``uri`` (``https://host[:port]``). No I/O."""
        self._check(Operation.SET_HOST)
        self._host = wire.validate_host(uri, allow_insecure=self._allow_insecure)
        self._lifecycle.apply(Event.HOST_CONFIGURED)

    def set_ws_host(self, uri: str) -> None:
        """Put the live feed on ``uri`` (``wss://host[:port]``); the state stays. No I/O."""
        self._check(Operation.SET_WS_HOST)
        self._ws_host = wire.validate_host(uri, websocket=True, allow_insecure=self._allow_insecure)

    def get_sub_id(self) -> str:
        """Make, activate and return a random sub-ID; later calls return the same one.

        When logged in, only allowed if a sub-ID was active at login (it is returned).
        """
        self._check(Operation.GET_SUB_ID)
        if self._sub_id is None:
            self._sub_id = wire.new_sub_id()
        return self._sub_id

    def on_transition(self, callback: TransitionCallback) -> Callable[[], None]:
        """Call ``callback(source, target, event)`` after every state change.

        The callback runs synchronously inside the transition: it must not
        block or raise. Returns a function that removes it.
        """
        return self._lifecycle.add_listener(callback)

    def events(self) -> FeedSubscription:
        """A receive channel of the feed items that arrive from now on.

        Each call is a new, independent consumer with its own bounded buffer
        (``FeedOptions.buffer_size``); see the slow-consumer policy in the
        README. The channel ends when the session closes.
        """
        size = self._feed_options.buffer_size if self._feed_options else FeedOptions().buffer_size
        return self._hub.subscribe(size)

    def statistics(self) -> SessionStatistics:
        """The session's figures now."""
        return SessionStatistics(
            state=self.state,
            commands_sent=self._transport.commands_sent if self._transport else 0,
            history_records=len(self._history),
            feed=self._feed.statistics() if self._feed is not None else None,
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
        """
        async with self._operation(Operation.LOGIN):
            command = wire.login_command(username, password, checkonly=checkonly)
            previous_sub_id = self._sub_id
            if subid is not None:
                self._sub_id = wire.validate_sub_id(subid)
            try:
                user = await self._log_in(command)
            except BaseException as exc:
                self._sub_id = previous_sub_id
                if on_result is not None and isinstance(exc, PbxError):
                    on_result(False, str(exc))
                raise
        if on_result is not None:
            on_result(True, f"logged in as {user.login}")
        return user

    async def login_shared(self, username: str, password: str, *, subid: str | None = None) -> User:
        """Log in once for everything sharing the store: adopt the login, else make it.

        Under the store's lock for this host (``store.lock(host)``: one task at
        a time among the sessions sharing the store, across processes for
        :class:`~pbxsession.SqliteStore` and :class:`~pbxsession.RedisStore`),
        a ``checkonly`` login first adopts the login that another session
        already made or restored in this context; only if the PBX answers
        ``notloggedin`` is the password sent. So when many sessions find the
        shared login lost at once, one password login reaches the PBX and the
        others adopt it. ``subid`` is as for :meth:`login`; raises as it does.
        """
        wire.login_command(username, password)  # bad arguments fail before any I/O
        if self._host is None:
            self._check(Operation.LOGIN)  # raises: no host, no login
        async with self._store.lock(self._require_host()):
            try:
                return await self.login(username, checkonly=True, subid=subid)
            except LoginError as exc:
                if exc.code != "notloggedin":
                    raise
            return await self.login(username, password, subid=subid)

    async def _log_in(self, command: wire.Command[wire.UserReply]) -> User:
        host = self._require_host()
        user = (await self._send(command)).user
        await self._store.record_context(host, self._sub_id, user.login)
        await self._load_history()
        self._generation += 1
        feed = self._new_feed(self._generation)
        try:
            if feed is not None:
                await self._nursery_or_fail().start(feed.run)
        except BaseException:
            with trio.CancelScope(shield=True):
                if feed is not None:
                    await feed.stop()
            raise
        self._feed = feed
        self._user = user
        self._sub_id_at_login = self._sub_id is not None
        self._lifecycle.apply(Event.LOGIN_SUCCEEDED)
        log.info("logged in to %s as %s", host, user.login)
        return user

    async def _load_history(self) -> None:
        self._history.clear()
        self._history_loaded = False
        try:
            reply = await self._send(wire.load_history_command())
        except (SessionLostError, trio.Cancelled):
            raise
        except PbxError as exc:
            # The login stands; exit will not overwrite a history it never saw.
            log.warning("could not load the saved call history: %s", str(exc))
            return
        self._history.extend(reply.records)
        self._history_loaded = True

    async def select_company(self, company_id: str) -> User:
        """Select the company a multi-company administrator works in; returns the user."""
        async with self._operation(Operation.SELECT_COMPANY):
            user = self._user
            assert user is not None
            if not isinstance(company_id, str) or not company_id:
                raise InvalidArgumentError("company_id must be a non-empty string")
            if not user.is_multi_company:
                raise PermissionDeniedError(
                    "selcompany", "norole", f"{user.login} does not administer several companies"
                )
            if company_id not in {c.id for c in user.companies}:
                raise UnknownCompanyError(
                    "selcompany",
                    "badcompany",
                    f"{company_id!r} is not one of the login's companies",
                )
            reply = await self._send(wire.select_company_command(company_id))
            self._user = dataclasses.replace(user, company=reply.user.company, home=reply.user.home)
            self._lifecycle.apply(Event.COMPANY_CHOSEN)
            return self._user

    async def rtc_reset(self, getnew: bool = False) -> str | None:
        """Release and randomise the WebRTC phone password; with ``getnew``, return the new one.

        The session remembers a password it obtained, so that ``exit`` releases it.
        """
        async with self._operation(Operation.RTC_RESET):
            if getnew:
                self._rtc_password = (await self._send(wire.rtc_new_password_command())).password
            else:
                await self._send(wire.rtc_reset_command())
                self._rtc_password = None
            return self._rtc_password

    async def logout(self) -> None:
        """Log out of the PBX and stop the live feed.

        A PBX that says the session was already logged out counts as success.
        """
        async with self._operation(Operation.LOGOUT):
            try:
                await self._send(wire.logout_command())
            except SessionLostError:
                return  # _send has already moved the session to host_set
            await self._drop_login(Event.LOGGED_OUT, "logged out")

    async def exit(
        self, logout: bool = False, *, timeouts: ExitTimeouts | None = None
    ) -> ExitReport:
        """The staged super-logout; ends ``closed`` and returns the :class:`ExitReport`.

        Stage 1, concurrently: chat presence offline, save call history, release
        the WebRTC password held. Stage 2: stop the feed, then ``logout`` if asked.
        Each step is bounded by ``timeouts.step`` and the whole exit by
        ``timeouts.total`` (default: the session's ``exit_timeouts``), counted
        from this call; closing the feed, the HTTP client and noting the
        logout in the store may take up to one second more. The exit is
        carried to its bound even when the caller is cancelled (the caller
        then sees the cancellation at its next checkpoint). An operation in
        progress (``login`` and so on) is interrupted: it raises
        :class:`InvalidStateError`. Step failures are reported, not raised.
        Called again, or while another call is exiting, it returns the same
        report.
        """
        if timeouts is not None and not isinstance(timeouts, ExitTimeouts):
            raise InvalidArgumentError("timeouts must be an ExitTimeouts or None")
        bounds = timeouts or self._exit_timeouts
        deadline = trio.current_time() + bounds.total
        with trio.CancelScope(shield=True):
            if self._operation_scope is not None:
                self._operation_scope.cancel()
            async with self._lock:
                report = self._exit_report
                if report is None:
                    self._check(Operation.EXIT)
                    report = await self._exit(bool(logout), bounds, deadline)
        assert report is not None  # a shielded scope swallows nothing
        return report

    async def _detach(self) -> None:
        """Close without the exit's steps: the login stays as the PBX has it."""
        async with self._lock:
            if self._exit_report is not None:
                return
            started = trio.current_time()
            self._lifecycle.apply(Event.EXIT_STARTED)
            await self._exit_close(started + self._exit_timeouts.total + _EXIT_CLOSE_GRACE)
            skipped = StepResult(StepOutcome.SKIPPED, reason="detached: exit_on_close=False")
            self._exit_report = ExitReport(
                steps=dict.fromkeys(STEP_NAMES, skipped),
                duration=trio.current_time() - started,
            )
            self._lifecycle.apply(Event.EXIT_FINISHED)

    # -------------------------------------------------------------- internals

    def _facts(self) -> frozenset[Condition]:
        """The conditions beyond the state that the rules may ask about."""
        if self._sub_id_at_login:
            return frozenset({Condition.SUB_ID_ACTIVE_AT_LOGIN})
        return frozenset()

    def _check(self, operation: Operation) -> None:
        self._lifecycle.check(operation, self._facts())
        if self._lock.locked() and operation is not Operation.EXIT:
            raise InvalidStateError(
                operation.value, self.state.value, (), "another operation is in progress"
            )

    @asynccontextmanager
    async def _operation(self, operation: Operation) -> AsyncIterator[None]:
        # Uncontended, the lock is taken without a trip through the scheduler
        # (the call checkpoints in its I/O anyway): it is on every command's path.
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()
        try:
            # Checked after the lock: the state may have changed while waiting.
            self._lifecycle.check(operation, self._facts())
            # exit() cancels this scope: it must not wait for a slow call.
            with trio.CancelScope() as scope:
                self._operation_scope = scope
                try:
                    yield
                finally:
                    self._operation_scope = None
            if scope.cancelled_caught:
                raise InvalidStateError(
                    operation.value, State.EXITING.value, (), "interrupted: the session is exiting"
                )
        finally:
            self._lock.release()

    def _require_host(self) -> str:
        if self._host is None:  # unreachable: the machine only allows commands after set_host
            raise InvalidStateError("command", self.state.value, ("host_set",))
        return self._host

    def _nursery_or_fail(self) -> trio.Nursery:
        if self._nursery is None:
            raise InvalidStateError("command", self.state.value, (), "the session is not open")
        return self._nursery

    async def _send(self, command: wire.Command[R]) -> R:
        if self._transport is None:
            raise InvalidStateError(command.cmd, self.state.value, (), "the session is not open")
        try:
            return await self._transport.send(self._require_host(), command, self._sub_id)
        except SessionLostError:
            if self.state.is_logged_in:
                await self._drop_login(
                    Event.SESSION_LOST, f"the PBX answered notloggedin to {command.cmd}"
                )
            raise

    async def _drop_login(self, event: Event, reason: str) -> None:
        """Leave the login: stop the feed, tell the machine, note it in the store."""
        feed = self._feed
        await self._stop_feed()
        if event is Event.SESSION_LOST:
            if feed is None or not feed.session_lost:  # the feed may have said so already
                self._hub.publish(SessionLost(reason))
            log.warning("session lost: %s", reason)
        self._generation += 1
        self._user = None
        self._rtc_password = None
        self._lifecycle.apply(event)
        with trio.CancelScope(shield=True):
            await self._store.record_context(self._require_host(), self._sub_id, None)

    async def _stop_feed(self, deadline: float = math.inf) -> None:
        """Stop the login's feed (shielded), waiting for it until ``deadline`` at most."""
        feed, self._feed = self._feed, None
        if feed is not None:
            with trio.CancelScope(shield=True, deadline=deadline):
                await feed.stop()

    def _new_feed(self, generation: int) -> FeedRunner | None:
        if self._feed_options is None:
            return None
        ws_host = self.ws_host
        host = self._require_host()
        assert ws_host is not None

        async def cookie_header() -> str | None:
            cookie = await self._store.get_cookie(host)
            return None if cookie is None else wire.cookie_header(cookie)

        return FeedRunner(
            hub=self._hub,
            options=self._feed_options,
            url=wire.feed_url(ws_host, self._sub_id),
            cookie_header=cookie_header,
            on_session_lost=lambda reason: self._on_feed_lost(generation, reason),
            on_event=self._on_feed_event,
            backoff=self._backoff,
            ssl_context=self._ssl_context,
        )

    def _on_feed_event(self, event: FeedEvent) -> None:
        record = wire.call_record(event)
        if record is not None:
            self._history.append(record)

    def _on_feed_lost(self, generation: int, reason: str) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._handle_feed_lost, generation, reason)

    async def _handle_feed_lost(self, generation: int, reason: str) -> None:
        async with self._lock:
            if generation != self._generation or not self.state.is_logged_in:
                return  # that login is already over
            await self._drop_login(Event.SESSION_LOST, reason or "the PBX logged this session out")

    def _on_transition(self, source: State, target: State, event: Event) -> None:
        log.debug("state %s -> %s (%s)", source.value, target.value, event.value)
        changed, self._state_changed = self._state_changed, trio.Event()
        changed.set()

    async def _exit(self, logout: bool, bounds: ExitTimeouts, deadline: float) -> ExitReport:
        """Run the two stages and close; called shielded, with the lock held."""
        started = trio.current_time()
        user = self._user if self.state.is_logged_in else None
        self._lifecycle.apply(Event.EXIT_STARTED)
        lost: list[str] = []  # notloggedin answers seen by the steps
        steps: dict[str, StepResult] = {}
        try:
            if self._transport is None:
                not_open = StepResult(StepOutcome.SKIPPED, reason="the session is not open")
                steps.update(dict.fromkeys(STEP_NAMES, not_open))
            else:
                stage_one = [
                    ExitStep("chat_offline", lambda: self._step_chat_offline(user, lost)),
                    ExitStep("history_save", lambda: self._step_history_save(user, lost)),
                    ExitStep("rtc_release", lambda: self._step_rtc_release(user, lost)),
                ]
                await run_stage(
                    stage_one, step_timeout=bounds.step, deadline=deadline, results=steps
                )
                # The feed goes before logout, which would otherwise end it with errno 2.
                await self._stop_feed(deadline)
                stage_two = [ExitStep("logout", lambda: self._step_logout(logout, user, lost))]
                await run_stage(
                    stage_two, step_timeout=bounds.step, deadline=deadline, results=steps
                )
        finally:
            # Also when interrupted (KeyboardInterrupt is not held off by the
            # shield): the session still closes, and the report says so.
            interrupted = StepResult(StepOutcome.FAILED, reason="interrupted before it ended")
            for name in STEP_NAMES:
                steps.setdefault(name, interrupted)
            await self._exit_close(deadline + _EXIT_CLOSE_GRACE)
            logged_out = steps["logout"].outcome is StepOutcome.OK or bool(lost)
            if user is not None and logged_out and self._host is not None:
                try:
                    with trio.move_on_at(deadline + _EXIT_CLOSE_GRACE):
                        await self._store.record_context(self._host, self._sub_id, None)
                except Exception as exc:  # the report matters more than the store's note
                    log.warning("could not note the logout in the session store: %s", str(exc))
            report = ExitReport(
                steps={name: steps[name] for name in STEP_NAMES},
                duration=trio.current_time() - started,
            )
            self._exit_report = report
            self._lifecycle.apply(Event.EXIT_FINISHED)
        log.info(
            "exit finished in %.2fs: %s",
            report.duration,
            ", ".join(f"{name} {r.outcome.value}" for name, r in report.steps.items()),
        )
        return report

    async def _exit_close(self, deadline: float) -> None:
        """Close the feed, the subscribers' channels and the HTTP client."""
        self._user = None
        self._rtc_password = None
        self._generation += 1
        await self._stop_feed(deadline)
        self._hub.close()
        if self._client is not None:
            with trio.move_on_at(deadline):
                await self._client.aclose()

    async def _exit_command(self, command: wire.Command[R], lost: list[str]) -> R:
        """Send one step's command; a ``notloggedin`` answer is noted in ``lost``."""
        assert self._transport is not None
        try:
            return await self._transport.send(self._require_host(), command, self._sub_id)
        except SessionLostError as exc:
            lost.append(str(exc))
            raise

    async def _step_chat_offline(self, user: User | None, lost: list[str]) -> None:
        if user is None:
            raise StepSkipped("not logged in")
        if not user.has_permission("chat"):
            raise StepSkipped("the user has no chat permission")
        await self._exit_command(wire.status_command("offline"), lost)

    async def _step_history_save(self, user: User | None, lost: list[str]) -> None:
        if user is None:
            raise StepSkipped("not logged in")
        if not self._history_loaded:
            raise StepSkipped("the saved history could not be loaded at login")
        await self._exit_command(wire.save_history_command(list(self._history)), lost)

    async def _step_rtc_release(self, user: User | None, lost: list[str]) -> None:
        if user is None:
            raise StepSkipped("not logged in")
        held, self._rtc_password = self._rtc_password, None
        if held is None:
            raise StepSkipped("no WebRTC password held")
        try:
            await self._exit_command(wire.rtc_reset_command(release=held), lost)
        except StaleCredentialError:
            raise StepSkipped("another program already reset the WebRTC password") from None

    async def _step_logout(self, requested: bool, user: User | None, lost: list[str]) -> None:
        if not requested:
            raise StepSkipped("not requested")
        if user is None:
            raise StepSkipped("not logged in")
        if lost:
            raise StepSkipped("already logged out: the PBX answered notloggedin")
        try:
            await self._exit_command(wire.logout_command(), lost)
        except SessionLostError:
            raise StepSkipped("already logged out: the PBX answered notloggedin") from None


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
    request_timeout: float = 10.0,
    verify: bool = True,
    retries: int = 2,
    exit_timeouts: ExitTimeouts = ExitTimeouts(),
    backoff: BackoffPolicy | None = None,
    exit_on_close: bool = True,
) -> AsyncIterator[Session]:
    """Open a session with the PBX at ``host``; leaving the block ends it.

    The session owns a nursery (its live feed and exit stages run there) and
    an HTTP client. Leaving the block performs ``exit(logout=not
    keep_session)`` if the session is still open: shielded from cancellation
    and bounded by ``exit_timeouts.total``. What escapes the block is the
    body's own exception or one documented :class:`PbxError`, never an
    ``ExceptionGroup``.

    ``allow_insecure`` permits plain ``http``/``ws`` to non-loopback hosts;
    ``verify`` (TLS certificate checks) is on by default. ``request_timeout`` bounds
    each HTTP request; ``retries`` bounds retries of commands that are safe to
    repeat. ``store`` is where the session cookie is kept: sessions sharing a
    store share a login, like browser tabs (default: one per process).
    ``exit_on_close=False`` leaves without the exit's steps (a command-line
    tool that borrowed a login for one command, say): the feed and client
    are closed, the PBX is told nothing, and every step is reported skipped.
    """
    if (
        not isinstance(request_timeout, int | float)
        or isinstance(request_timeout, bool)
        or not request_timeout > 0
    ):
        raise InvalidArgumentError("request_timeout must be a positive number of seconds")
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise InvalidArgumentError("retries must be a non-negative int")
    session = Session(
        host=host,
        ws_host=ws_host,
        subid=subid,
        store=store if store is not None else default_store(),
        allow_insecure=allow_insecure,
        feed=feed,
        exit_timeouts=exit_timeouts,
        backoff=backoff,
    )
    # The feed's TLS follows the same verification choice as the commands'
    # (one shared context per process: building one per session is costly).
    session._ssl_context = tls_context(verify)
    async with new_http_client(timeout=request_timeout, verify=verify) as client:
        session._client = client
        session._transport = CommandTransport(client, session._store, retries=retries)
        async with open_owned_nursery() as nursery:
            session._nursery = nursery
            try:
                yield session
            finally:
                with trio.CancelScope(shield=True):
                    if session._exit_report is None and exit_on_close:
                        await session.exit(logout=not keep_session)
                    elif session._exit_report is None:
                        await session._detach()
                    nursery.cancel_scope.cancel()
