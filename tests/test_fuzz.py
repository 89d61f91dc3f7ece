"""Stateful fuzzing of the public API against the simulator, with injected faults.

A Hypothesis ``RuleBasedStateMachine`` drives one session through random
operations (``set_host``, ``set_ws_host``, ``get_sub_id``, password logins
good and bad, ``checkonly`` logins, ``select_company`` valid and invalid,
``rtc_reset``, ``logout``, ``exit``) while injecting faults into the
simulator (command delays, HTTP 500s, expiry, restarts, feed drops and feed
error frames) and acting as "another program" that logs in to the session's
context (so that ``checkonly`` can adopt a login).

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
* the client's view matches the simulator's context for its cookie and
  sub-ID: logged in as the same user with the same company and one feed
  connection; or, in ``host_set``, not logged in (unless another program
  logged in) with no feed; after an injected expiry the client may still
  believe it is logged in until its next command or the feed's errno 2, but
  that next command must move it to ``host_set``;
* when the example ends, the session's block is left cleanly and the
  simulator shows no feed connection at all; warnings are errors.

CI runs a bounded campaign (60 examples of up to 20 steps, a few seconds). A long campaign::

    PBXSESSION_FUZZ_EXAMPLES=2000 .venv/bin/pytest tests/test_fuzz.py

(``PBXSESSION_FUZZ_STEPS`` changes the steps per example, default 20).
"""

from __future__ import annotations

import functools
import os
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import trio
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
    PbxUnavailableError,
    PermissionDeniedError,
    SessionLostError,
    State,
    StepOutcome,
    UnknownCompanyError,
)
from pbxsession import _wire as wire
from pbxsession.sim import DEFAULT_USERS, Simulator, open_simulator

EXAMPLES = int(os.environ.get("PBXSESSION_FUZZ_EXAMPLES", "60"))
STEPS = int(os.environ.get("PBXSESSION_FUZZ_STEPS", "20"))

PASSWORDS = {u.login: u.password for u in DEFAULT_USERS}
COMPANIES = {u.login: [c.id for c in u.companies] for u in DEFAULT_USERS}
LOGGED_IN = (State.LOGGED_IN, State.COMPANY_SELECTED)
SETTLE = 5.0  # seconds an asynchronous consequence (feed reconnect, close) may take

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
    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error


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
                request_timeout=5.0,
                feed=FeedOptions(pong_timeout=5.0),
                backoff=FullJitterBackoff(base=0.02, cap=0.1),
            ) as session:
                self.session = session
                self._token = trio.lowlevel.current_trio_token()
                self._ready.set()
                await self._stop.wait()
            # The block is left: nothing of the session may stay connected.
            with trio.move_on_after(SETTLE):
                while sim.stats()["feed_connections"]:
                    await trio.sleep(0.01)
            self.leftover_feeds = int(sim.stats()["feed_connections"])  # type: ignore[call-overload]

    def run(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        assert self._token is not None
        return trio.from_thread.run(fn, trio_token=self._token)

    def attempt(self, fn: Callable[[], Awaitable[Any]]) -> Outcome:
        async def call() -> Outcome:
            try:
                return Outcome(value=await fn())
            except BaseException as exc:
                return Outcome(error=exc)

        return self.run(call)

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
        self.foreign: tuple[str, str, str] | None = (
            None  # (cookie, subid, login) of another program
        )
        self.bad_logins: dict[str, int] = {}
        self.sub_id: str | None = None

    # ------------------------------------------------------------ helpers

    def cookie(self) -> str | None:
        return self.driver.run(lambda: self.driver.store.get_cookie(self.sim.url))

    def key(self) -> tuple[str | None, str]:
        return self.cookie(), self.session.sub_id or ""

    def context(self) -> dict[str, object] | None:
        cookie, subid = self.key()
        for ctx in self.driver.call(self.sim.contexts):
            if ctx["cookie"] == cookie and ctx["subid"] == subid:
                return ctx
        return None

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
            assert before is State.HOST_SET
            assert self.session.state is State.HOST_SET
            assert self.session.host == self.sim.url
        else:
            self.assert_unchanged_or_lost(before)
            if isinstance(error, InvalidHostError):
                assert before is State.HOST_SET

    @rule(good=st.booleans())
    @counted
    def set_ws_host(self, good: bool) -> None:
        before = self.session.state
        uri = self.sim.ws_url if good else "http://127.0.0.1/feed?x=1"
        outcome = self.driver.attempt_sync(lambda: self.session.set_ws_host(uri))
        error = check_error(outcome, InvalidStateError, InvalidHostError)
        if error is None:
            assert before is State.HOST_SET
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
        before, outcome = self.command(
            lambda: self.session.login(user, password), LoginError, SessionLostError
        )
        error = outcome.error
        if before is not State.HOST_SET and not self.lost_allowed(before):
            assert isinstance(error, InvalidStateError), outcome.error
        if error is None:
            assert good, "a bad password logged in"
            assert self.session.state is State.LOGGED_IN
            assert self.session.user is not None and self.session.user.login == user
            self.bad_logins[user] = 0
            self.loss_expected = False
            self.foreign = None
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
        before, outcome = self.command(
            lambda: self.session.login(user, checkonly=True), LoginError, SessionLostError
        )
        error = outcome.error
        foreign_here = self.foreign is not None and self.foreign[:2] == self.key()
        adoptable = foreign_here and user in ("", self.foreign[2] if self.foreign else "")
        if error is None:
            assert before is State.HOST_SET or self.lost_allowed(before)
            assert adoptable, "checkonly adopted a login nobody made"
            assert self.session.state is State.LOGGED_IN
            assert self.foreign is not None and self.session.user is not None
            assert self.session.user.login == self.foreign[2]
            self.foreign = None
            self.loss_expected = False
        elif isinstance(error, LoginError):
            assert error.code == "notloggedin", error.code
            assert not adoptable

    @rule(valid=st.booleans())
    @counted
    def select_company(self, valid: bool) -> None:
        user = self.session.user
        companies = COMPANIES[user.login] if user is not None else []
        company = companies[-1] if valid and companies else "999"
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
        before, outcome = self.command(self.session.logout)
        error = outcome.error
        if error is None:
            assert before in LOGGED_IN
            assert self.session.state is State.HOST_SET
            ctx = self.context()
            assert ctx is None or ctx["login"] is None
        if not isinstance(error, InvalidStateError):
            self.after_command_sent(before, outcome)

    @rule(logout=st.booleans())
    @counted
    def exit(self, logout: bool) -> None:
        before = self.session.state
        key = self.key()
        outcome = self.driver.attempt(lambda: self.session.exit(logout=logout))
        assert check_error(outcome) is None  # exit reports, it does not raise
        report = outcome.value
        assert self.session.state is State.CLOSED
        assert report is self.session.exit_report
        assert set(report.steps) == {"chat_offline", "history_save", "rtc_release", "logout"}
        if before is State.CLOSED:
            return
        if before not in LOGGED_IN:
            assert all(r.outcome is StepOutcome.SKIPPED for r in report.steps.values())
        ctx = next(
            (c for c in self.driver.call(self.sim.contexts) if (c["cookie"], c["subid"]) == key),
            None,
        )
        if report.steps["logout"].outcome is StepOutcome.OK:
            assert ctx is None or ctx["login"] is None
        self.foreign = None

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
        if self.foreign is not None and self.foreign[:2] == (cookie, subid):
            self.foreign = None
        if expired and self.session.state in LOGGED_IN:
            self.loss_expected = True
            if wait:
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
        self.foreign = None
        if self.session.state in LOGGED_IN:
            self.loss_expected = True
            if wait:
                self.wait_for_host_set()

    @rule()
    @counted
    def fault_drop_feeds(self) -> None:
        self.driver.call(self.sim.drop_feeds)

    @rule(errno=st.sampled_from([1, 3, 90]))
    @counted
    def fault_feed_error(self, errno: int) -> None:
        self.driver.call(self.sim.feed_error, errno, "injected")

    @rule(user=st.sampled_from(["alice", "admin"]))
    @counted
    def another_program_logs_in(self, user: str) -> None:
        """Another program sharing the cookie logs in to this session's context."""
        cookie, subid = self.key()
        if cookie is None or self.session.state is not State.HOST_SET:
            return
        form = {"cmd": "login", "sessionUser": user, "sessionPass": PASSWORDS[user]}
        if subid:
            form["subid"] = subid

        async def post() -> httpx.Response:
            async with httpx.AsyncClient(trust_env=False) as client:
                return await client.post(
                    self.sim.url + wire.COMMAND_PATH,
                    data=form,
                    headers={"Cookie": wire.cookie_header(cookie)},
                )

        reply = self.driver.run(post)
        if reply.status_code == 200 and 'result="success"' in reply.text:
            self.foreign = (cookie, subid, user)
            self.bad_logins[user] = 0

    # ---------------------------------------------------------- invariants

    @invariant()
    def client_matches_simulator(self) -> None:
        async def check() -> None:
            state = self.session.state
            cookie = await self.driver.store.get_cookie(self.sim.url)
            subid = self.session.sub_id or ""

            def ctx() -> dict[str, object] | None:
                for c in self.sim.contexts():
                    if c["cookie"] == cookie and c["subid"] == subid:
                        return c
                return None

            if state in LOGGED_IN:
                user = self.session.user
                assert user is not None
                if self.loss_expected:
                    current = ctx()
                    assert current is None or current["login"] is None
                    return
                current = ctx()
                assert current is not None and current["login"] == user.login
                assert current["company"] == user.company
                # The feed is (re)connected: exactly one connection.
                with trio.fail_after(SETTLE):
                    while (current := ctx()) is None or current["feeds"] != 1:
                        assert current is not None and current["feeds"] <= 1
                        await trio.sleep(0.01)
            else:
                assert self.session.user is None
                if state is State.HOST_SET:
                    current = ctx()
                    if current is not None and current["login"] is not None:
                        assert self.foreign == (cookie, subid, current["login"]), current
                # No feed of this session is left anywhere.
                with trio.fail_after(SETTLE):
                    while self.sim.stats()["feed_connections"]:
                        await trio.sleep(0.01)

        self.driver.run(check)
        if self.session.state is State.HOST_SET:
            self.loss_expected = False

    @invariant()
    def no_secret_in_repr(self) -> None:
        text = self.driver.call(
            lambda: repr(self.session) + repr(self.session.user) + repr(self.session.statistics())
        )
        for password in PASSWORDS.values():
            assert password not in text

    def teardown(self) -> None:
        self.driver.stop()
        if self.driver.crash is not None:
            raise self.driver.crash
        assert self.driver.leftover_feeds == 0, "a feed connection outlived its session"


@pytest.mark.filterwarnings("error")
def test_fuzz_public_api_with_faults() -> None:
    run_state_machine_as_test(
        SessionMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            print_blob=True,
        ),
    )


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
