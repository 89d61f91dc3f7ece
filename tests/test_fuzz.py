"""Stateful fuzzing of the public API against the simulator, with injected faults.

A Hypothesis ``RuleBasedStateMachine`` drives one session through random
operations (``set_host``, ``set_ws_host``, ``get_sub_id``, password logins
good and bad, ``checkonly`` logins, ``select_company`` valid and invalid,
``rtc_reset``, ``logout``, ``exit``) while injecting faults into the
simulator (command delays, HTTP 500s, commands that outlast the session's
``timeout``, expiry, restarts, feed drops, feed error frames with
errno 1, 2, 3, 90 and 100, refused feed handshakes, frozen feeds) and acting
as "another program" sharing the session store that logs in as some user
(so that ``checkonly`` can adopt a login). The store keeps one session
cookie per (host, user), so that program uses the cookie of the user it
logs in as: it lands in that user's context, never in another user's, and
may log in while the session is logged in as someone else. The model keeps
one ``events()`` channel open for the whole example and reads it after every
step.

Hypothesis' stateful testing is synchronous, and a session must live across
rules, so each example runs a :class:`Driver`: a thread running ``trio.run``
that opens a fresh embedded simulator and one session and keeps them open;
each rule submits a coroutine with ``trio.from_thread.run`` and waits for its
outcome.

After every step the invariants hold:

* every exception raised is one the operation documents for that situation
  (a :class:`PbxError` subclass, never an ``ExceptionGroup`` nor a bare
  httpx/trio exception);
* a failed operation left the state it found, except ``SessionLostError``
  (→ ``host_set``) and the documented asynchronous loss after an injected
  expiry/restart (the feed's errno 2);
* a command that outlasts ``timeout`` raises ``PbxUnavailableError``
  and leaves the state; the PBX still carries it out late (the simulator
  does not notice the client gave up), and the model then treats that late
  effect like another program's doing: a late login is a foreign login, a
  late logout is a loss the feed reports (errno 2);
* the feed's errno 2 brings ``host_set`` and a ``SessionLost`` item; errno
  100 a ``FeedStopped(errno=100)`` item while the session stays logged in
  (with no feed connection until the next login); every ``session_lost``
  transition has its ``SessionLost`` item, and no other ``FeedStopped`` or
  slow-consumer gap ever appears;
* while the feeds are frozen the client learns nothing (an error frame held
  back has no effect until they thaw), and a login made meanwhile does not
  return before its feed's handshake and ``ready`` got through;
* the client's view matches the simulator's context for the cookie of the
  user it is logged in as and its sub-ID: logged in as the same user with
  the same company, one feed connection, and no feed anywhere else; a login
  (password or adopted) whose company is not home is ``company_selected``;
  a ``checkonly`` login with no user name adopts the store's latest user's
  login, or fails ``notloggedin`` sending nothing; in ``host_set`` no feed
  is left; every other login on the PBX, in any user's context, is one the
  model knows another program (or a late command) made; after an injected
  expiry the client may still believe it is logged in until its next
  command or the feed's errno 2, but that next command must move it to
  ``host_set``; after errno 100 the client hears of a loss only from its
  next command;
* no exception raised (its chain, its attributes) nor exit report holds a
  password or a session cookie;
* when the example ends, the session's block is left cleanly and the
  simulator shows no feed connection at all; warnings are errors.

The simulator runs on the real clock, so fault waits are kept short (the
feed's keep-alive cannot be exercised: ``pingtime`` is at least 10 s, so a
frozen feed is thawed within the step instead of waiting for a missing
pong). CI runs a bounded campaign (60 examples of up to 20 steps, well under
a minute). A long campaign::

    PBXSESSION_FUZZ_EXAMPLES=2000 .venv/bin/pytest tests/test_fuzz.py

(``PBXSESSION_FUZZ_STEPS`` changes the steps per example, default 20). It runs
as consecutive Hypothesis runs of ``CHUNK`` examples, so that its memory stays
bounded (Hypothesis keeps every example of a run).
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

import pbxsession
from pbxsession import (
    CommandError,
    FeedOptions,
    FullJitterBackoff,
    InvalidHostError,
    InvalidStateError,
    LoginError,
    PbxError,
    PbxTimeoutError,
    PbxUnavailableError,
    PermissionDeniedError,
    SessionBusyError,
    SessionLostError,
    State,
    StepOutcome,
    UnknownCompanyError,
)
from pbxsession import _wire as wire
from pbxsession.sim import DEFAULT_USERS, Simulator, open_simulator

EXAMPLES = int(os.environ.get("PBXSESSION_FUZZ_EXAMPLES", "60"))
CHUNK = 250
"""Examples per Hypothesis run. Its engine keeps every example it generated in
memory for the whole run (its result cache holds up to 10,000: about 60 KiB
each here), so a long campaign is several runs in a row to stay bounded."""
STEPS = int(os.environ.get("PBXSESSION_FUZZ_STEPS", "20"))

PASSWORDS = {u.login: u.password for u in DEFAULT_USERS}
COMPANIES = {u.login: [c.id for c in u.companies] for u in DEFAULT_USERS}
HOMES = {u.login: u.home for u in DEFAULT_USERS}
LOGGED_IN = (State.LOGGED_IN, State.COMPANY_SELECTED)
SETTLE = 5.0  # seconds an asynchronous consequence (feed reconnect, close) may take
REQUEST_TIMEOUT = 0.3  # the model's session: a command delayed longer fails
SHORT_DELAY, LONG_DELAY = 0.15, 0.4  # around REQUEST_TIMEOUT
TIMEOUTS_PER_EXAMPLE = 1  # commands delayed past the timeout (up to ~1.3 s each with retries)
FROZEN_FOR = 0.03  # seconds the feeds stay frozen in one step

users = st.sampled_from(sorted(PASSWORDS))
commands = st.sampled_from(
    [None, "login", "load", "selcompany", "rtcreset", "logout", "status", "save"]
)


STEPS_RUN: Counter[tuple[str, str, str]] = Counter()
"""(rule, state before, state after) of every step run in this process: coverage."""


def counted(fn: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(fn)
    def step(self: SessionMachine, **kwargs: Any) -> None:
        before = self.session.state.value
        fn(self, **kwargs)
        STEPS_RUN[(fn.__name__, before, self.session.state.value)] += 1

    return step


class Outcome:
    def __init__(
        self, value: Any = None, error: BaseException | None = None, state: State | None = None
    ) -> None:
        self.value = value
        self.error = error
        self.state = state  # the session's state right after the call, on its own thread


class Driver:
    """A thread running trio: a fresh simulator and one open session, serving calls."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, name="fuzz-driver", daemon=True)
        self.crash: BaseException | None = None
        self.leftover_feeds: int | None = None
        self.sim: Simulator
        self.store = pbxsession.MemoryStore()
        self.session: pbxsession.Session
        self.events: pbxsession.FeedSubscription
        self.lost_transitions = 0  # session_lost transitions seen by on_transition
        self.completed: Counter[str] = Counter()  # commands the simulator has carried out
        self.errors: list[BaseException] = []  # raised by calls, not yet swept for secrets
        self.busy = False  # an asynchronous call submitted by the model is running
        self.nursery: trio.Nursery
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the fuzz driver did not start")
        if self.crash is not None:
            raise self.crash

    def _thread_main(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self.crash = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._stop = trio.Event()
        async with open_simulator() as sim:
            self.sim = sim
            async with pbxsession.open_session(
                sim.url,
                ws_host=sim.ws_url,
                store=self.store,
                timeout=REQUEST_TIMEOUT,
                feed=FeedOptions(pong_timeout=5.0),
                backoff=FullJitterBackoff(base=0.02, cap=0.1),
            ) as session:
                self.session = session
                self.events = session.events()
                session.on_transition(self._transition)
                self._track_completions(sim)
                self._token = trio.lowlevel.current_trio_token()
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery  # for probes running beside a call
                    self._ready.set()
                    await self._stop.wait()
            # The block is left: nothing of the session may stay connected.
            with trio.move_on_after(SETTLE):
                while sim.stats()["feed_connections"]:
                    await trio.sleep(0.01)
            self.leftover_feeds = int(sim.stats()["feed_connections"])  # type: ignore[call-overload]

    def _transition(self, source: State, target: State, event: pbxsession.Event) -> None:
        if event is pbxsession.Event.SESSION_LOST:
            self.lost_transitions += 1

    def _track_completions(self, sim: Simulator) -> None:
        """Count commands past their delay: the simulator asks for a failure right then."""
        faults = sim.state.faults
        take_failure = faults.take_failure

        def counted(cmd: str) -> bool:
            self.completed[cmd] += 1
            return take_failure(cmd)

        faults.take_failure = counted  # type: ignore[method-assign]

    def in_flight(self, cmd: str) -> int:
        """Commands ``cmd`` received and not yet carried out (sleeping in a delay)."""
        return self.sim.state.command_counts[cmd] - self.completed[cmd]

    def run(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        assert self._token is not None
        return trio.from_thread.run(fn, trio_token=self._token)

    def attempt(self, fn: Callable[[], Awaitable[Any]]) -> Outcome:
        async def call() -> Outcome:
            # The state is read before any checkpoint: nothing else (a feed's
            # errno 2 waiting for the lock, say) has run since the call ended.
            self.busy = True
            try:
                value = await fn()
            except BaseException as exc:
                self.errors.append(exc)
                return Outcome(error=exc, state=self.session.state)
            finally:
                self.busy = False
            return Outcome(value=value, state=self.session.state)

        outcome: Outcome = self.run(call)
        return outcome

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a synchronous ``fn`` on the trio thread (where the simulator's state lives)."""

        async def call() -> Any:
            return fn(*args, **kwargs)

        return self.run(call)

    def attempt_sync(self, fn: Callable[[], Any]) -> Outcome:
        async def call() -> Any:
            return fn()

        return self.attempt(call)

    def stop(self) -> None:
        if self._token is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(60)
        assert not self._thread.is_alive(), "the session block did not finish"


def exception_text(error: BaseException) -> str:
    """The text of ``error``, its ``__cause__``/``__context__`` chain and their attributes."""
    parts: list[str] = []
    seen: set[int] = set()
    todo: list[BaseException] = [error]
    while todo:
        exc = todo.pop()
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        parts += [repr(exc), str(exc), *map(repr, exc.args)]
        parts += [repr(value) for value in getattr(exc, "__dict__", {}).values()]
        todo += [e for e in (exc.__cause__, exc.__context__) if e is not None]
        if isinstance(exc, BaseExceptionGroup):
            todo += list(exc.exceptions)
    return "\n".join(parts)


def check_error(outcome: Outcome, *allowed: type[BaseException]) -> BaseException | None:
    """The outcome's error, asserted to be a documented one (or none)."""
    error = outcome.error
    if error is None:
        return None
    assert not isinstance(error, BaseExceptionGroup), f"an ExceptionGroup escaped: {error!r}"
    assert isinstance(error, PbxError), f"undocumented exception {error!r}"
    assert isinstance(error, allowed), f"{error!r} is not one of {allowed}"
    return error


class SessionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.driver = Driver()
        self.driver.start()
        self.sim = self.driver.sim
        self.session = self.driver.session
        self.loss_expected = False  # an expiry/restart the client has not noticed yet
        # Logins on the PBX the session does not hold: another program's, a
        # late login's, or one the session lost on an injected errno 2.
        # (cookie, subid) -> login. The store keeps one cookie per (host, user),
        # so several users' contexts can be logged in at once.
        self.foreign: dict[tuple[str, str], str] = {}
        self.bad_logins: dict[str, int] = {}
        self.sub_id: str | None = None
        self.feed_stopped = False  # errno 100 ended this login's feed for good
        self.lost_items = 0  # SessionLost items read from the model's events() channel
        self.stopped_items = 0  # FeedStopped items read from it
        self.stops_allowed = 0  # errno 100 frames that reached a feed
        self.timeouts_left = TIMEOUTS_PER_EXAMPLE

    # ------------------------------------------------------------ helpers

    def cookie(self, user: str | None) -> str | None:
        """The store's session cookie for ``user`` on the simulator (one per host and user)."""
        if not user:
            return None
        cookie: str | None = self.driver.run(
            lambda: self.driver.store.get_cookie(self.sim.url, user)
        )
        return cookie

    def own_user(self) -> str | None:
        """The user the session is logged in as, or that a login check would adopt."""
        user = self.session.user
        if user is not None:
            return user.login
        return self.latest_user()

    def latest_user(self) -> str | None:
        latest: str | None = self.driver.run(lambda: self.driver.store.latest_user(self.sim.url))
        return latest

    def key(self, user: str | None = None) -> tuple[str | None, str]:
        """The context (cookie, sub-ID) of ``user`` (default: :meth:`own_user`)."""
        return self.cookie(user or self.own_user()), self.session.sub_id or ""

    def context(self, user: str | None = None) -> dict[str, object] | None:
        return self.context_at(self.key(user))

    def context_at(self, key: tuple[str | None, str]) -> dict[str, object] | None:
        cookie, subid = key
        contexts: list[dict[str, object]] = self.driver.call(self.sim.contexts)
        for ctx in contexts:
            if ctx["cookie"] == cookie and ctx["subid"] == subid:
                return ctx
        return None

    def logged_in_contexts(self) -> dict[tuple[str, str], str]:
        """Every logged-in context on the PBX: (cookie, subid) -> login."""
        contexts: list[dict[str, object]] = self.driver.call(self.sim.contexts)
        return {
            (str(c["cookie"]), str(c["subid"])): str(c["login"])
            for c in contexts
            if c["login"] is not None
        }

    def expected_company(self, user: str) -> str:
        """The company a login as ``user`` must show: a kept login's, else home.

        The PBX keeps the company of a context already logged in as the user
        (a password login as the same user does not reset it).
        """
        cookie, subid = self.key(user)
        ctx = self.context_at((cookie, subid))
        if cookie is not None and self.foreign.get((cookie, subid)) == user:
            assert ctx is not None
            return str(ctx["company"])
        return HOMES[user]

    def check_logged_in(self, user: str, company: str) -> None:
        """Logged in as ``user`` in ``company``; another company means company_selected."""
        current = self.session.user
        assert current is not None and current.login == user, current
        assert current.company == company, (current, company)
        expected = State.LOGGED_IN if company == current.home else State.COMPANY_SELECTED
        assert self.session.state is expected, (self.session.state, current)
        # This context is the session's own now, no other program's.
        self.foreign.pop((str(self.cookie(user)), self.session.sub_id or ""), None)

    def failures_pending(self) -> bool:
        return bool(self.driver.call(self.sim.state.faults.snapshot)["failures"])

    def may_be_locked(self, login: str) -> bool:
        return self.bad_logins.get(login, 0) >= 5

    def lost_allowed(self, before: State) -> bool:
        """The state may have moved to host_set behind our back (expiry, restart)."""
        return self.loss_expected and before in LOGGED_IN

    def assert_unchanged_or_lost(self, before: State) -> None:
        after = self.session.state
        if after is before:
            return
        assert self.lost_allowed(before) and after is State.HOST_SET, (before, after)

    def feed_running(self) -> bool:
        """The login's feed is running (so it reports a loss by itself)."""
        return self.session.state in LOGGED_IN and not self.feed_stopped

    def read_events(self) -> None:
        """Read what the model's ``events()`` channel holds; check each item."""

        def drain() -> tuple[int, list[pbxsession.FeedItem]]:
            # The count first, then the items, with no checkpoint in between: a
            # SessionLost is published before its transition is made.
            lost = self.driver.lost_transitions
            items = []
            while True:
                try:
                    items.append(self.driver.events.receive_nowait())
                except trio.WouldBlock:
                    return lost, items
                except trio.EndOfChannel:
                    # Every channel ends when the session closes, and only then.
                    assert self.session.state is State.CLOSED, self.session.state
                    return lost, items

        lost, items = self.driver.call(drain)
        for item in items:
            if isinstance(item, pbxsession.SessionLost):
                self.lost_items += 1
            elif isinstance(item, pbxsession.FeedStopped):
                assert item.errno == 100, f"the feed stopped without errno 100: {item!r}"
                self.stopped_items += 1
            elif isinstance(item, pbxsession.FeedGap):
                assert item.reason == "server", f"a consumer that keeps up saw {item!r}"
        assert self.stopped_items <= self.stops_allowed, "more FeedStopped than errno 100s"
        assert self.lost_items >= lost, "a session_lost transition without a SessionLost item"

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait (on the trio thread, real clock) until ``condition()`` holds."""

        async def wait() -> None:
            with trio.move_on_after(SETTLE):
                while not condition():
                    await trio.sleep(0.005)
            assert condition(), f"timed out waiting for {what}"

        self.driver.run(wait)

    def wait_carried_out(self, cmd: str) -> None:
        """Wait until the simulator has carried out every ``cmd`` it received."""
        self.wait_until(lambda: self.driver.in_flight(cmd) == 0, f"{cmd} to be carried out")
        # What it set off (a feed's errno 2, the session's reaction) gets to run.
        self.driver.run(trio.testing.wait_all_tasks_blocked)

    def adopt_context_login(self, user: str) -> None:
        """``user``'s context holds a login the client has not made (or no longer holds)."""
        cookie, subid = self.key(user)
        if cookie is None:
            return
        ctx = self.context_at((cookie, subid))
        if ctx is not None and ctx["login"] is not None:
            self.foreign[(cookie, subid)] = str(ctx["login"])
        else:
            self.foreign.pop((cookie, subid), None)

    def command(
        self, fn: Callable[[], Awaitable[Any]], *allowed: type[BaseException]
    ) -> tuple[State, Outcome]:
        before = self.session.state
        failures = self.failures_pending()
        outcome = self.driver.attempt(fn)
        error = check_error(outcome, InvalidStateError, *allowed, PbxUnavailableError)
        if isinstance(error, PbxUnavailableError):
            assert failures, f"unavailable without an injected failure: {error!r}"
        if isinstance(error, SessionLostError):
            assert self.lost_allowed(before), f"unexpected loss: {error!r}"
            assert self.session.state is State.HOST_SET
        elif error is not None:
            self.assert_unchanged_or_lost(before)
        return before, outcome

    def after_command_sent(self, before: State, outcome: Outcome) -> None:
        """A command reached the PBX: an expiry it revealed has moved the state."""
        if self.lost_allowed(before) and not isinstance(outcome.error, PbxUnavailableError):
            assert self.session.state is State.HOST_SET, self.session.state

    # -------------------------------------------------------------- rules

    @initialize()
    def start(self) -> None:
        assert self.session.state is State.HOST_SET

    @rule(good=st.booleans())
    @counted
    def set_host(self, good: bool) -> None:
        before = self.session.state
        uri = self.sim.url if good else "ftp://127.0.0.1/x"
        outcome = self.driver.attempt_sync(lambda: self.session.set_host(uri))
        error = check_error(outcome, InvalidStateError, InvalidHostError)
        if before is State.HOST_SET and good:
            assert error is None
        if error is None:
            # (an asynchronous loss may have come between ``before`` and the call)
            assert before is State.HOST_SET or self.lost_allowed(before), before
            assert self.session.state is State.HOST_SET
            assert self.session.host == self.sim.url
        else:
            self.assert_unchanged_or_lost(before)
            if isinstance(error, InvalidHostError):
                # (an asynchronous loss may have come between ``before`` and the call)
                assert outcome.state is State.HOST_SET

    @rule(good=st.booleans())
    @counted
    def set_ws_host(self, good: bool) -> None:
        before = self.session.state
        uri = self.sim.ws_url if good else "http://127.0.0.1/feed?x=1"
        outcome = self.driver.attempt_sync(lambda: self.session.set_ws_host(uri))
        error = check_error(outcome, InvalidStateError, InvalidHostError)
        if error is None:
            assert before is State.HOST_SET or self.lost_allowed(before), before
            assert self.session.ws_host == self.sim.ws_url
        else:
            if isinstance(error, InvalidStateError):
                assert before is not State.HOST_SET
        self.assert_unchanged_or_lost(before)

    @rule()
    @counted
    def get_sub_id(self) -> None:
        before = self.session.state
        outcome = self.driver.attempt_sync(self.session.get_sub_id)
        error = check_error(outcome, InvalidStateError)
        if error is None:
            if self.sub_id is not None:
                assert outcome.value == self.sub_id, "get_sub_id must return the same id"
            self.sub_id = outcome.value
            assert self.session.sub_id == self.sub_id
        else:
            assert before is not State.HOST_SET or self.lost_allowed(before), error
        self.assert_unchanged_or_lost(before)

    @rule(user=users)
    @counted
    def login(self, user: str) -> None:
        self._login(user, good=True)

    @rule(user=users)
    @counted
    def login_bad_password(self, user: str) -> None:
        self._login(user, good=False)

    def _login(self, user: str, *, good: bool) -> None:
        password = PASSWORDS[user] if good else "not-" + PASSWORDS[user]
        company = self.expected_company(user)
        before, outcome = self.command(
            lambda: self.session.login(user, password), LoginError, SessionLostError
        )
        error = outcome.error
        if before is not State.HOST_SET and not self.lost_allowed(before):
            assert isinstance(error, InvalidStateError), outcome.error
        if error is None:
            assert good, "a bad password logged in"
            # The login lands in the user's own context (cookie per user): other
            # users' logins on the PBX stay as they are.
            self.check_logged_in(user, company)
            self.bad_logins[user] = 0
            self.loss_expected = False
            self.feed_stopped = False
        elif isinstance(error, LoginError):
            assert error.code in ("badauth", "locked"), error.code
            if error.code == "locked":
                assert self.may_be_locked(user)
            else:
                assert not good, "the right password was refused"
                self.bad_logins[user] = self.bad_logins.get(user, 0) + 1

    @rule(user=st.sampled_from(["", "alice", "admin"]))
    @counted
    def login_checkonly(self, user: str) -> None:
        # With no user name the session adopts the most recent login the store
        # saw on the host (its user's cookie); with none, it fails sending nothing.
        target = user or self.latest_user()
        subid = self.session.sub_id or ""
        adoptable = {
            u: self.expected_company(u)
            for u in PASSWORDS
            if (c := self.cookie(u)) is not None and self.foreign.get((c, subid)) == u
        }
        sent_before = self.driver.call(self.sim.command_count, "login")
        lost_before = self.driver.lost_transitions
        before, outcome = self.command(
            lambda: self.session.login(user, checkonly=True), LoginError, SessionLostError
        )
        error = outcome.error
        # A loss that landed while the call waited changes the store's latest user.
        raced = self.driver.lost_transitions != lost_before and not user
        if error is None:
            assert before is State.HOST_SET or self.lost_allowed(before)
            login = self.session.user.login if self.session.user is not None else None
            assert login in adoptable, f"checkonly adopted a login nobody made: {login}"
            assert raced or login == target, (login, target)
            assert login is not None
            self.check_logged_in(login, adoptable[login])
            self.loss_expected = False
            self.feed_stopped = False
        elif isinstance(error, LoginError):
            assert error.code == "notloggedin", error.code
            assert raced or target not in adoptable, (target, adoptable)
            if not target and not raced:
                sent = self.driver.call(self.sim.command_count, "login")
                assert sent == sent_before, "a login check with no known user sent a command"

    @rule(valid=st.booleans())
    @counted
    def select_company(self, valid: bool) -> None:
        user = self.session.user
        companies = COMPANIES[user.login] if user is not None else []
        self._select_company(companies[-1] if valid and companies else "999", companies)

    def _select_company(self, company: str, companies: list[str]) -> None:
        before, outcome = self.command(
            lambda: self.session.select_company(company),
            PermissionDeniedError,
            UnknownCompanyError,
            SessionLostError,
        )
        error = outcome.error
        if isinstance(error, PermissionDeniedError | UnknownCompanyError):
            assert error.code == ("norole" if len(companies) < 2 else "badcompany")
            return  # refused before sending
        if error is None:
            assert before in LOGGED_IN
            assert self.session.state is State.COMPANY_SELECTED
            assert self.session.user is not None and self.session.user.company == company
        if not isinstance(error, InvalidStateError):
            self.after_command_sent(before, outcome)

    @rule(getnew=st.booleans())
    @counted
    def rtc_reset(self, getnew: bool) -> None:
        before, outcome = self.command(
            lambda: self.session.rtc_reset(getnew=getnew), SessionLostError
        )
        error = outcome.error
        if error is None:
            assert before in LOGGED_IN
            assert self.session.state is before
            user = self.session.user
            assert user is not None
            if getnew:
                assert outcome.value == self.driver.call(self.sim.user_view, user.login)["rtc_pass"]
            else:
                assert outcome.value is None
        if not isinstance(error, InvalidStateError):
            self.after_command_sent(before, outcome)

    @rule()
    @counted
    def logout(self) -> None:
        key = self.key()
        before, outcome = self.command(self.session.logout)
        error = outcome.error
        if error is None:
            assert before in LOGGED_IN
            assert self.session.state is State.HOST_SET
            ctx = self.context_at(key)
            assert ctx is None or ctx["login"] is None
        if not isinstance(error, InvalidStateError):
            self.after_command_sent(before, outcome)

    @rule(logout=st.booleans())
    @counted
    def exit(self, logout: bool) -> None:
        self._exit(logout)

    def _exit(self, logout: bool) -> tuple[State, pbxsession.ExitReport]:
        before = self.session.state
        key = self.key()
        outcome = self.driver.attempt(lambda: self.session.exit(logout=logout))
        assert check_error(outcome) is None  # exit reports, it does not raise
        report: pbxsession.ExitReport = outcome.value
        assert report is not None and report is self.session.exit_report
        assert self.session.state is State.CLOSED
        # The report's step errors are swept for secrets like raised ones.
        self.driver.errors += [r.error for r in report.steps.values() if r.error is not None]
        self.assert_no_secret(repr(report), "the exit report")
        assert set(report.steps) == {"chat_offline", "history_save", "rtc_release", "logout"}
        if before is State.CLOSED:
            return before, report
        if before not in LOGGED_IN:
            assert all(r.outcome is StepOutcome.SKIPPED for r in report.steps.values())
        ctx = next(
            (c for c in self.driver.call(self.sim.contexts) if (c["cookie"], c["subid"]) == key),
            None,
        )
        if report.steps["logout"].outcome is StepOutcome.OK:
            assert ctx is None or ctx["login"] is None
        self.foreign.clear()  # closed: the model no longer looks at the PBX
        return before, report

    # ------------------------------------------------------------- faults

    @rule(seconds=st.sampled_from([0.0, 0.0, 0.02, 0.1]), cmd=commands)
    @counted
    def fault_delay(self, seconds: float, cmd: str | None) -> None:
        self.driver.call(self.sim.set_delay, seconds, cmd)

    @rule(n=st.integers(1, 3), cmd=commands)
    @counted
    def fault_fail(self, n: int, cmd: str | None) -> None:
        self.driver.call(self.sim.fail_next, n, cmd)

    @rule()
    @counted
    def fault_clear_failures(self) -> None:
        self.driver.call(self.sim.state.faults.clear)

    @rule(wait=st.booleans())
    @counted
    def fault_expire(self, wait: bool) -> None:
        """Expire the context; with ``wait``, the feed's errno 2 must bring host_set."""
        cookie, subid = self.key()
        if cookie is None:
            return
        expired = self.driver.call(self.sim.expire, cookie=cookie, subid=subid)
        self.foreign.pop((cookie, subid), None)
        if expired and self.session.state in LOGGED_IN:
            self.loss_expected = True
            if wait and self.feed_running():
                self.wait_for_host_set()

    def wait_for_host_set(self) -> None:
        async def wait() -> None:
            with trio.fail_after(SETTLE):
                await self.session.wait_state(State.HOST_SET)

        self.driver.run(wait)

    @rule(wait=st.booleans())
    @counted
    def fault_restart(self, wait: bool) -> None:
        """Restart the PBX; with ``wait``, the feed's refused reconnect must bring host_set."""
        self.driver.call(self.sim.restart)
        self.foreign.clear()
        if self.session.state in LOGGED_IN:
            self.loss_expected = True
            if wait and self.feed_running():
                self.wait_for_host_set()

    @rule()
    @counted
    def fault_drop_feeds(self) -> None:
        self.driver.call(self.sim.drop_feeds)

    @rule(errno=st.sampled_from([1, 2, 3, 90, 100]))
    @counted
    def fault_feed_error(self, errno: int) -> None:
        self.read_events()
        before, user = self.session.state, self.own_user()
        sent = self.driver.call(self.sim.feed_error, errno, "injected")
        self.after_feed_error(errno, sent, before, user)

    def after_feed_error(self, errno: int, sent: int, before: State, user: str | None) -> None:
        """What an error frame that reached ``sent`` feed connections must bring."""
        if not sent:
            return
        # A feed connection exists only while logged in (the invariant says so).
        assert before in LOGGED_IN, (before, sent)
        STEPS_RUN[("feed_error_reached_a_feed", str(errno), before.value)] += 1
        if errno == 100:
            self.stops_allowed += 1
        was_lost = self.loss_expected
        if was_lost and not self.feed_running():
            # A connection on its way out after an unnoticed loss: the frame may
            # reach nobody, and only the next command can tell the client.
            return
        lost_before = self.lost_items
        if errno == 2:
            # Lost: host_set and a SessionLost item. The PBX still has the login
            # (only the frame was injected): from now on it is a foreign one.
            self.wait_for_host_set()
            self.read_events()
            if not was_lost:  # (else the loss's own item may have been read already)
                assert self.lost_items > lost_before, "errno 2 without a SessionLost item"
            self.loss_expected = False
            self.feed_stopped = False
            assert user is not None
            self.adopt_context_login(user)
        elif errno == 100:
            # The feed stops for good (FeedStopped), the login stays. Unless an
            # unnoticed expiry's errno 2 got there first (one frame per connection).
            stopped_before = self.stopped_items

            def settled() -> bool:
                self.read_events()
                return self.stopped_items > stopped_before or self.session.state not in LOGGED_IN

            self.wait_until_main(settled, "FeedStopped or the loss")
            if self.stopped_items > stopped_before:
                if not self.loss_expected:
                    assert self.session.state is before, (before, self.session.state)
                if self.session.state in LOGGED_IN:
                    self.feed_stopped = True
                    stats = self.driver.call(self.session.statistics)
                    assert stats.feed is not None and not stats.feed.connected
            else:
                assert self.loss_expected, "errno 100 ended the login"

    def wait_until_main(self, condition: Callable[[], bool], what: str) -> None:
        """Poll ``condition()`` from the test thread (it may call the driver itself)."""
        deadline = time.monotonic() + SETTLE
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.005)

    @rule(n=st.integers(1, 3), drop=st.booleans())
    @counted
    def fault_refuse_handshakes(self, n: int, drop: bool) -> None:
        """The next ``n`` feed handshakes get HTTP 503 (errno 91: retry); ``drop`` forces one."""
        self.driver.call(self.sim.refuse_handshakes, n)
        if drop:
            self.driver.call(self.sim.drop_feeds)

    @rule(during=st.sampled_from(["nothing", "drop", "login", 1, 2, 100]))
    @counted
    def fault_freeze(self, during: str | int) -> None:
        """Freeze the feeds for a moment; meanwhile drop them, log in or send an error."""
        self.read_events()
        before, user = self.session.state, self.own_user()
        self.driver.call(self.sim.freeze_feeds)
        try:
            if during == "login":
                self._login_while_frozen()
                return
            sent = 0
            if during == "drop":
                self.driver.call(self.sim.drop_feeds)
            elif isinstance(during, int):
                sent = self.driver.call(self.sim.feed_error, during, "injected while frozen")
            time.sleep(FROZEN_FOR)
            # Nothing got through: the client has learned nothing.
            if not self.loss_expected:
                assert self.session.state is before, (before, self.session.state)
        finally:
            self.driver.call(self.sim.unfreeze_feeds)
        if isinstance(during, int):
            self.after_feed_error(during, sent, before, user)

    def _login_while_frozen(self) -> None:
        """A password login while the feeds are frozen returns only after they thaw."""
        user = "alice"
        before = self.session.state
        thawed_at: list[float] = []

        async def login_and_thaw() -> tuple[Outcome, float]:
            outcome = Outcome()
            done_at = 0.0

            async def login() -> None:
                nonlocal done_at
                try:
                    outcome.value = await self.session.login(user, PASSWORDS[user])
                except BaseException as exc:
                    outcome.error = exc
                outcome.state = self.session.state
                done_at = trio.current_time()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(login)
                await trio.sleep(FROZEN_FOR)
                thawed_at.append(trio.current_time())
                self.sim.unfreeze_feeds()
            return outcome, done_at

        failures = self.failures_pending()
        company = self.expected_company(user)
        outcome, done_at = self.driver.run(login_and_thaw)
        error = check_error(
            outcome, InvalidStateError, LoginError, SessionLostError, PbxUnavailableError
        )
        if isinstance(error, PbxUnavailableError):
            assert failures, f"unavailable without an injected failure: {error!r}"
        if before is not State.HOST_SET and not self.lost_allowed(before):
            assert isinstance(error, InvalidStateError), error
        if error is None:
            assert outcome.state is self.session.state
            self.check_logged_in(user, company)
            assert done_at >= thawed_at[0], "login returned before its feed could start"
            STEPS_RUN[("login_while_frozen", before.value, outcome.state.value)] += 1
            self.bad_logins[user] = 0
            self.loss_expected = False
            self.feed_stopped = False
        elif isinstance(error, LoginError):
            assert error.code == "locked" and self.may_be_locked(user), error
            assert outcome.state is before
        elif not isinstance(error, SessionLostError):
            assert outcome.state is before, (before, outcome.state)

    @rule(
        op=st.sampled_from(
            ["login", "login_bad", "load", "select_company", "rtc_reset", "logout", "exit"]
        ),
        seconds=st.sampled_from([SHORT_DELAY, LONG_DELAY]),
    )
    @counted
    def command_delayed(self, op: str, seconds: float) -> None:
        """One command delayed just under or over the session's ``timeout``.

        Over it, at most ``TIMEOUTS_PER_EXAMPLE`` times an example (they are slow).
        """
        if seconds > REQUEST_TIMEOUT:
            if not self.timeouts_left:
                seconds = SHORT_DELAY
            else:
                self.timeouts_left -= 1
        cmd = {
            "login": "login",
            "login_bad": "login",
            "load": "load",
            "select_company": "selcompany",
            "rtc_reset": "rtcreset",
            "logout": "logout",
            "exit": "logout",
        }[op]
        delays = self.driver.call(self.sim.state.faults.snapshot)["delays"]
        self.driver.call(self.sim.set_delay, seconds, cmd)
        try:
            if seconds < REQUEST_TIMEOUT:
                self._delayed_in_time(op)
            else:
                self._delayed_too_long(op, cmd)
        finally:
            self.driver.call(self.sim.set_delay, delays.get(cmd, 0.0), cmd)

    def _delayed_in_time(self, op: str) -> None:
        """Under ``timeout`` a delay changes nothing but the time taken."""
        user = self.session.user
        if op in ("login", "load"):
            self._login("admin", good=True)
        elif op == "login_bad":
            self._login("admin", good=False)
        elif op == "select_company":
            companies = COMPANIES[user.login] if user is not None else []
            self._select_company(companies[-1] if companies else "999", companies)
        elif op == "rtc_reset":
            self.rtc_reset(getnew=True)
        elif op == "logout":
            self.logout()
        else:
            self._exit(logout=True)

    def _delayed_too_long(self, op: str, cmd: str) -> None:
        """Over ``timeout``: PbxUnavailableError, the state unchanged, a late effect."""
        before = self.session.state
        if op == "load":
            # The login stands without its history (the load is retried, then given up).
            self._login("admin", good=True)
            self.wait_carried_out(cmd)
            return
        if op == "exit":
            lost = self.lost_allowed(before)
            _, report = self._exit(logout=True)
            step = report.steps["logout"]
            if before in LOGGED_IN and not lost and step.outcome is not StepOutcome.SKIPPED:
                # A step whose command hit its own deadline is reported timed_out.
                assert step.outcome is StepOutcome.TIMED_OUT, step
                assert isinstance(step.error, PbxTimeoutError), step
            self.wait_carried_out(cmd)
            return
        user = self.session.user
        call: Callable[[], Awaitable[Any]]
        if op in ("login", "login_bad"):
            password = PASSWORDS["admin"] if op == "login" else "wrong"
            call = functools.partial(self.session.login, "admin", password)
        elif op == "select_company":
            # The company already selected: the late selcompany changes nothing.
            company = user.company if user is not None else "7"
            call = functools.partial(self.session.select_company, company)
        elif op == "rtc_reset":
            call = functools.partial(self.session.rtc_reset, getnew=True)
        else:
            call = self.session.logout
        logged_in_before = self.logged_in_contexts()
        outcome = self.driver.attempt(call)
        error = check_error(outcome, InvalidStateError, PermissionDeniedError, PbxUnavailableError)
        assert outcome.state is before, (before, outcome.state)
        if isinstance(error, InvalidStateError | PermissionDeniedError):
            return  # refused before sending
        assert isinstance(error, PbxUnavailableError), f"{op} outlasted the timeout: {error!r}"
        STEPS_RUN[("command_timed_out", op, before.value)] += 1
        self.wait_carried_out(cmd)
        # The PBX carried the command out after the client gave up.
        if op in ("login", "login_bad"):
            if op == "login_bad":
                self.bad_logins["admin"] = self.bad_logins.get("admin", 0) + 1
            if self.session.state is State.HOST_SET:
                self.adopt_context_login("admin")
                # Before a password goes out with a cookie not seen logged in
                # (one the PBX may have forgotten in a restart), the session
                # settles it: a late login never lands under a cookie the
                # client did not learn (it did before the fix).
                for key, login in self.logged_in_contexts().items():
                    if key not in logged_in_before and login == "admin":
                        assert key in self.foreign, f"a late login under an unknown cookie {key}"
        elif op == "logout" and self.session.state in LOGGED_IN:
            ctx = self.context()
            if ctx is None or ctx["login"] is None:
                # Logged out at the PBX: the feed's errno 2 (or its next
                # handshake's 403) brings host_set; a stopped feed cannot tell.
                self.loss_expected = True
                if self.feed_running():
                    self.wait_for_host_set()

    @rule(user=st.sampled_from(["alice", "admin"]))
    @counted
    def another_program_logs_in(self, user: str) -> None:
        """Another program sharing the store logs in as ``user`` under the session's sub-ID.

        The store keeps one cookie per (host, user): the program uses ``user``'s
        cookie (getting and storing one if there is none yet, as a session
        would) and notes the login in the store. So it logs in to ``user``'s
        context, never to another user's: while the session is logged in as
        someone else, its login must stay untouched (discrete users are
        isolated). A program logging in as the session's own user would share
        (and re-login) the session's context: not done while logged in.
        """
        state, own = self.session.state, self.session.user
        if state is not State.HOST_SET and state not in LOGGED_IN:
            return
        if own is not None and own.login == user:
            return
        subid = self.session.sub_id or ""
        form = {"cmd": "login", "sessionUser": user, "sessionPass": PASSWORDS[user]}
        if subid:
            form["subid"] = subid
        url, store = self.sim.url, self.driver.store

        async def post() -> tuple[httpx.Response, str | None]:
            cookie = await store.get_cookie(url, user)
            headers = {} if cookie is None else {"Cookie": wire.cookie_header(cookie)}
            async with httpx.AsyncClient(trust_env=False) as client:
                reply = await client.post(url + wire.COMMAND_PATH, data=form, headers=headers)
            update = wire.session_cookie(reply.headers.get_list("set-cookie"), url)
            if update is not None:
                cookie = await store.set_cookie(url, user, update.value, replacing=cookie)
            if reply.status_code == 200 and 'result="success"' in reply.text:
                await store.record_context(url, user, subid or None, True)
            return reply, cookie

        reply, cookie = self.driver.run(post)
        if reply.status_code == 200 and 'result="success"' in reply.text:
            assert cookie is not None
            self.foreign[(cookie, subid)] = user
            self.bad_logins[user] = 0

    @rule(user=st.sampled_from(["alice", "admin"]), by_name=st.booleans())
    @counted
    def adopt_another_programs_login(self, user: str, by_name: bool) -> None:
        """Another program logs in as ``user``; a login check (named or not) adopts it.

        Adoption needs host_set and another's login in the right context at
        once, which random steps rarely line up: this rule makes it common.
        """
        self.another_program_logs_in(user=user)
        self.login_checkonly(user=user if by_name else "")

    @rule(select=st.booleans(), by_name=st.booleans())
    @counted
    def lose_then_adopt(self, select: bool, by_name: bool) -> None:
        """The feed's errno 2 ends the login (left on the PBX); a login check adopts it again.

        With ``select``, a multi-company user first selects another company: the
        adopted login then shows a company other than home (company_selected).
        """
        if not self.feed_running() or self.loss_expected:
            return
        user = self.own_user()
        if select:
            self.select_company(valid=True)
        if not self.feed_running() or self.loss_expected:
            return
        self.fault_feed_error(errno=2)
        self.login_checkonly(user=(user or "") if by_name else "")

    @rule(sync=st.sampled_from(["set_host", "set_ws_host", "get_sub_id"]))
    @counted
    def sync_call_during_async(self, sync: str) -> None:
        """A synchronous call made while an asynchronous one runs raises SessionBusyError.

        A password login (from host_set) or ``rtc_reset`` (logged in), its
        command delayed under the timeout, runs through the model's own rule;
        meanwhile a probe on the trio thread makes the synchronous call. It
        changes nothing; an operation the state does not allow is refused as
        such (InvalidStateError) first.
        """
        state = self.session.state
        if state is State.HOST_SET:
            cmd, run = "login", functools.partial(self._login, "alice", good=True)
        elif state in LOGGED_IN:
            cmd, run = "rtcreset", functools.partial(self.rtc_reset, getnew=False)
        else:
            return
        calls: dict[str, Callable[[], object]] = {
            "set_host": lambda: self.session.set_host(self.sim.url),
            "set_ws_host": lambda: self.session.set_ws_host(self.sim.ws_url),
            "get_sub_id": self.session.get_sub_id,
        }
        probe: dict[str, object] = {}

        def view() -> tuple[object, ...]:
            session = self.session
            return session.state, session.host, session.ws_host, session.sub_id

        async def prober() -> None:
            await trio.sleep(SHORT_DELAY / 3)
            probe["busy"], probe["before"] = self.driver.busy, view()
            try:
                probe["value"] = calls[sync]()
            except BaseException as exc:
                probe["error"] = exc
            probe["after"] = view()

        delays = self.driver.call(self.sim.state.faults.snapshot)["delays"]
        self.driver.call(self.sim.set_delay, SHORT_DELAY, cmd)
        try:
            self.driver.call(self.driver.nursery.start_soon, prober)
            run()
        finally:
            self.driver.call(self.sim.set_delay, delays.get(cmd, 0.0), cmd)
        self.wait_until(lambda: "after" in probe, "the probe")
        if not probe["busy"]:
            return  # the call had already ended (a fast failure): nothing to check
        error = probe.get("error")
        before = probe["before"]
        assert isinstance(before, tuple)
        busy_state = before[0]
        STEPS_RUN[("sync_call_while_busy", sync, str(busy_state))] += 1
        assert "value" not in probe, f"{sync} ran during an asynchronous call"
        assert not isinstance(error, BaseExceptionGroup), error
        assert probe["after"] == before, (before, probe["after"])
        if busy_state is State.HOST_SET or (sync == "get_sub_id" and self.sub_id is not None):
            assert isinstance(error, SessionBusyError), repr(error)
        elif busy_state in LOGGED_IN and sync != "get_sub_id":
            assert isinstance(error, InvalidStateError), repr(error)  # no host change logged in
        else:
            assert isinstance(error, SessionBusyError | InvalidStateError), repr(error)

    # ---------------------------------------------------------- invariants

    @invariant()
    def client_matches_simulator(self) -> None:
        async def check() -> None:
            state = self.session.state
            subid = self.session.sub_id or ""
            store = self.driver.store
            own: tuple[str | None, str] | None = None  # the session's own context

            def ctx() -> dict[str, object] | None:
                assert own is not None
                for c in self.sim.contexts():
                    if (c["cookie"], c["subid"]) == own:
                        return c
                return None

            if state in LOGGED_IN:
                user = self.session.user
                assert user is not None
                # The context of the user the session is logged in as (cookie per user).
                own = (await store.get_cookie(self.sim.url, user.login), subid)
                if self.loss_expected:
                    current = ctx()
                    assert current is None or current["login"] is None
                else:
                    current = ctx()
                    assert current is not None and current["login"] == user.login
                    assert current["company"] == user.company
                    # The feed is (re)connected: exactly one connection (none once
                    # errno 100 stopped it).
                    feeds = 0 if self.feed_stopped else 1
                    with trio.fail_after(SETTLE):
                        while (current := ctx()) is None or current["feeds"] != feeds:
                            assert current is not None and current["feeds"] in (0, 1)
                            await trio.sleep(0.01)
                        # ... and none in any other context (other logins have no feed).
                        while self.sim.stats()["feed_connections"] != feeds:
                            await trio.sleep(0.01)
            else:
                assert self.session.user is None
                if state is State.HOST_SET:
                    # No feed of this session is left anywhere.
                    with trio.fail_after(SETTLE):
                        while self.sim.stats()["feed_connections"]:
                            await trio.sleep(0.01)
            if state is State.HOST_SET or state in LOGGED_IN:
                # Every other login on the PBX, in any user's context, is one
                # the model knows another program (or a late command) made.
                logged_in: dict[tuple[str, str], object] = {}
                for c in self.sim.contexts():
                    key = (str(c["cookie"]), str(c["subid"]))
                    if c["login"] is not None and key != own:
                        assert self.foreign.get(key) == c["login"], (c, self.foreign)
                        logged_in[key] = c["login"]
                # ... and each of those is still there: nothing the session did
                # (its logins, logouts, losses as another user) ended it.
                for key, login in self.foreign.items():
                    assert logged_in.get(key) == login, (key, login, self.sim.contexts())

        self.driver.run(check)
        if self.session.state is State.HOST_SET:
            self.loss_expected = False
        if self.session.state not in LOGGED_IN:
            self.feed_stopped = False

    @invariant()
    def feed_items_are_documented(self) -> None:
        self.read_events()

    @invariant()
    def no_secret_in_repr(self) -> None:
        text = self.driver.call(
            lambda: repr(self.session) + repr(self.session.user) + repr(self.session.statistics())
        )
        self.assert_no_secret(text, "the session's repr")

    @invariant()
    def no_secret_in_errors(self) -> None:
        """No exception raised (nor its chain, nor their attributes) holds a password or cookie."""
        errors, self.driver.errors = self.driver.errors, []
        for error in errors:
            self.assert_no_secret(exception_text(error), repr(error))

    def secrets(self) -> list[str]:
        """The passwords and every session cookie the store or the simulator knows."""

        async def cookies() -> list[str]:
            found = [str(c["cookie"]) for c in self.sim.contexts()]
            for user in PASSWORDS:
                cookie = await self.driver.store.get_cookie(self.sim.url, user)
                if cookie is not None:
                    found.append(cookie)
            return found

        found: list[str] = self.driver.run(cookies)
        return [*PASSWORDS.values(), *found]

    def assert_no_secret(self, text: str, where: str) -> None:
        for secret in self.secrets():
            assert secret not in text, f"a password or session cookie in {where}"

    def teardown(self) -> None:
        self.driver.stop()
        if self.driver.crash is not None:
            raise self.driver.crash
        assert self.driver.leftover_feeds == 0, "a feed connection outlived its session"


@pytest.mark.filterwarnings("error")
def test_fuzz_public_api_with_faults() -> None:
    remaining = EXAMPLES
    while remaining > 0:
        run_state_machine_as_test(
            SessionMachine,
            settings=settings(
                max_examples=min(remaining, CHUNK),
                stateful_step_count=STEPS,
                deadline=None,
                # CI runs the same examples every time; a long campaign explores.
                derandomize=EXAMPLES <= CHUNK and "PBXSESSION_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                print_blob=True,
            ),
        )
        remaining -= CHUNK


def test_the_driver_reports_a_leaked_feed() -> None:
    """The teardown check can fail: a feed left open after the block is seen."""
    driver = Driver()
    driver.start()
    try:
        assert driver.run(lambda: driver.session.login("alice", "alice-pass")).login == "alice"
        assert driver.call(driver.sim.stats)["feed_connections"] == 1
    finally:
        driver.stop()
    assert driver.crash is None
    assert driver.leftover_feeds == 0


def test_errors_are_checked() -> None:
    """check_error refuses what the API does not document."""
    with pytest.raises(AssertionError, match="undocumented"):
        check_error(Outcome(error=httpx.ConnectError("boom")))
    with pytest.raises(AssertionError, match="ExceptionGroup"):
        check_error(Outcome(error=ExceptionGroup("g", [LoginError("login", "badauth")])))
    with pytest.raises(AssertionError, match="not one of"):
        check_error(Outcome(error=CommandError("x", "y")), LoginError)
    assert check_error(Outcome(value=1)) is None


async def test_concurrent_first_logins_sharing_a_fresh_store() -> None:
    """Sessions sharing a store that has no cookie yet all log in at once (sub-ID each)."""
    store = pbxsession.MemoryStore()
    outcomes: dict[int, str] = {}
    async with open_simulator() as sim:

        async def one(i: int) -> None:
            async with pbxsession.open_session(
                sim.url, ws_host=sim.ws_url, store=store, subid=f"first{i}"
            ) as session:
                try:
                    await session.login("alice", "alice-pass")
                    outcomes[i] = session.state.value
                except PbxError as exc:
                    outcomes[i] = repr(exc)

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(one, i)
    assert outcomes == dict.fromkeys(range(20), "logged_in")


def test_the_secret_sweep_reads_chains_and_attributes() -> None:
    """exception_text sees a secret held by a cause's attribute or a context's args."""

    class Holder(Exception):
        def __init__(self) -> None:
            super().__init__("nothing here")
            self.request = "sessionPass=alice-pass"

    try:
        try:
            raise ValueError("cookie=SECRETCOOKIE")
        except ValueError:
            try:
                raise Holder
            except Holder as inner:
                raise PbxUnavailableError("login: down") from inner
    except PbxUnavailableError as exc:
        text = exception_text(exc)
    assert "alice-pass" in text
    assert "SECRETCOOKIE" in text
