"""The staged exit against the embedded simulator, over real loopback sockets.

Where time matters the tests run on trio's ``autojump_clock``: the
simulator's delays and the exit's timeouts then pass in virtual time.
"""

from __future__ import annotations

import dataclasses

import httpx
import pytest
import trio
import trio.lowlevel
import trio.testing
from _support import session_on

import pbxsession
from pbxsession import (
    ExitReport,
    ExitTimeouts,
    InvalidArgumentError,
    InvalidStateError,
    MemoryStore,
    PbxUnavailableError,
    SessionLostError,
    State,
    StepOutcome,
)
from pbxsession.sim import Simulator

OK = StepOutcome.OK
SKIPPED = StepOutcome.SKIPPED
FAILED = StepOutcome.FAILED
TIMED_OUT = StepOutcome.TIMED_OUT
STEPS = ("chat_offline", "history_save", "rtc_release", "logout")
STEP_COMMAND = {
    "chat_offline": "status",
    "history_save": "save",
    "rtc_release": "rtcreset",
    "logout": "logout",
}


def state_of(session: pbxsession.Session) -> State:
    """The state, read through a call so that type checkers do not narrow it."""
    return session.state


def outcomes(report: ExitReport) -> dict[str, StepOutcome]:
    return {name: result.outcome for name, result in report.steps.items()}


def call(n: int, state: str = "ended") -> dict[str, object]:
    return {"id": f"c{n}", "from": "201", "to": "202", "state": state, "duration": n}


async def set_presence(sim: Simulator, store: MemoryStore, show: str, login: str = "alice") -> None:
    """Set the user's presence as another program sharing the login would."""
    cookie = await store.get_cookie(sim.url, login)
    assert cookie is not None
    async with httpx.AsyncClient() as client:
        reply = await client.post(
            sim.url + "/api/api.whtm",
            data={"cmd": "status", "show": show},
            headers={"Cookie": f"Red60urne={cookie}"},
        )
    assert 'result="success"' in reply.text


async def log_in_with_everything(
    session: pbxsession.Session, sim: Simulator, store: MemoryStore, login: str = "alice"
) -> str:
    """Log in, go online, hold a WebRTC password; return that password."""
    await session.login(login, f"{login}-pass")
    if login != "bob":
        await set_presence(sim, store, "online", login)
    password = await session.rtc_reset(getnew=True)
    assert password is not None
    return password


async def emit_calls(
    session: pbxsession.Session, sim: Simulator, login: str, records: list[dict[str, object]]
) -> None:
    """Emit ``records`` as call events and wait until the session has them all."""
    events = session.events()
    for record in records:
        sim.emit("call", record, login=login)
    for _ in records:
        item = await events.receive()
        assert isinstance(item, pbxsession.FeedEvent)
    await events.aclose()


# ---------------------------------------------------------------- happy path


async def test_exit_runs_every_step(sim: Simulator, store: MemoryStore) -> None:
    seen: list[tuple[str, str]] = []
    async with session_on(sim, store) as session:
        held = await log_in_with_everything(session, sim, store)
        assert sim.user_view("alice")["presence"] == {"show": "online", "status": ""}
        session.on_transition(lambda a, b, e: seen.append((a.value, b.value)))
        report = await session.exit(logout=True)
        assert session.state is State.CLOSED
        assert outcomes(report) == dict.fromkeys(STEPS, OK)
        assert report.ok
        assert all(r.error is None and r.reason is None for r in report.steps.values())
        view = sim.user_view("alice")
        assert view["presence"] == {"show": "offline", "status": ""}
        assert view["rtc_pass"] != held
        assert view["history"] == []
        assert [c for c in sim.contexts() if c["login"] == "alice"] == []
        assert sim.stats()["feed_connections"] == 0
        assert not session.statistics().http_client_open
        assert session.exit_report is report
        record = await store.get_context(sim.url, "alice", None)
        assert record is not None and not record.logged_in
    assert seen == [("logged_in", "exiting"), ("exiting", "closed")]
    # rtcreset carried the held password, without getnew.
    assert sim.command_count("rtcreset") == 2


async def test_exit_without_logout_keeps_the_login(sim: Simulator, store: MemoryStore) -> None:
    async with session_on(sim, store) as session:
        held = await log_in_with_everything(session, sim, store)
        report = await session.exit(logout=False, timeout=ExitTimeouts(step=5, total=10))
        assert outcomes(report) == {
            "chat_offline": OK,
            "history_save": OK,
            "rtc_release": OK,
            "logout": SKIPPED,
        }
        assert report.steps["logout"].reason == "not requested"
        assert report.ok
        assert sim.command_count("logout") == 0
        assert [c["login"] for c in sim.contexts()] == ["alice"]
        assert sim.user_view("alice")["rtc_pass"] != held
        assert sim.stats()["feed_connections"] == 0  # the feed is closed all the same
        assert session.state is State.CLOSED


async def test_report_is_immutable_and_hides_the_password(
    sim: Simulator, store: MemoryStore
) -> None:
    async with session_on(sim, store) as session:
        held = await log_in_with_everything(session, sim, store)
        report = await session.exit(logout=True)
    assert list(report.steps) == list(STEPS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.duration = 0.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        report.steps["logout"] = report.steps["chat_offline"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.steps["logout"].outcome = FAILED  # type: ignore[misc]
    assert held not in repr(report)
    assert held not in repr(session)


# ------------------------------------------------------------ failing steps


@pytest.mark.parametrize("step", STEPS)
async def test_a_failing_step_does_not_stop_the_others(
    sim: Simulator, store: MemoryStore, step: str
) -> None:
    async with session_on(sim, store, retries=0) as session:
        held = await log_in_with_everything(session, sim, store)
        sim.fail_next(1, STEP_COMMAND[step])
        report = await session.exit(logout=True)
        assert session.state is State.CLOSED
    expected = dict.fromkeys(STEPS, OK)
    expected[step] = FAILED
    assert outcomes(report) == expected
    failed = report.steps[step]
    assert isinstance(failed.error, PbxUnavailableError)
    assert failed.reason is not None and "PbxUnavailableError" in failed.reason
    assert not report.ok
    view = sim.user_view("alice")
    assert (view["presence"] == {"show": "offline", "status": ""}) is (step != "chat_offline")
    assert (view["rtc_pass"] != held) is (step != "rtc_release")
    assert bool([c for c in sim.contexts() if c["login"] == "alice"]) is (step == "logout")


async def test_retry_safe_steps_survive_fewer_failures_than_retries(
    sim: Simulator, store: MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    async with session_on(sim, store, retries=2) as session:
        await log_in_with_everything(session, sim, store)
        for cmd in ("status", "save", "logout"):
            sim.fail_next(2, cmd)
        report = await session.exit(logout=True)
    assert outcomes(report) == dict.fromkeys(STEPS, OK)
    assert sim.command_count("status") == 1 + 3  # set_presence + three attempts
    assert sim.command_count("logout") == 3


@pytest.mark.parametrize("step", STEPS)
async def test_a_hanging_step_times_out_alone(
    sim: Simulator, store: MemoryStore, autojump_clock: trio.testing.MockClock, step: str
) -> None:
    async with session_on(sim, store) as session:
        await log_in_with_everything(session, sim, store)
        sim.set_delay(60, STEP_COMMAND[step])
        start = trio.current_time()
        report = await session.exit(logout=True, timeout=ExitTimeouts(step=5, total=10))
        elapsed = trio.current_time() - start
        assert session.state is State.CLOSED
    expected = dict.fromkeys(STEPS, OK)
    expected[step] = TIMED_OUT
    assert outcomes(report) == expected
    hung = report.steps[step]
    assert 5.0 <= hung.duration < 5.1
    assert hung.reason == "no answer within the step timeout of 5s"
    assert hung.error is None
    assert all(r.duration < 0.5 for n, r in report.steps.items() if n != step)
    assert 5.0 <= report.duration <= elapsed < 5.5


async def test_the_whole_exit_is_bounded(
    sim: Simulator, store: MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    # Commands may take longer than the steps: the exit's bounds are what is seen.
    timeout = pbxsession.Timeout(command=30, operation=60)
    async with session_on(sim, store, timeout=timeout) as session:
        await log_in_with_everything(session, sim, store)
        sim.set_delay(60)
        start = trio.current_time()
        report = await session.exit(logout=True, timeout=ExitTimeouts(step=8, total=10))
        elapsed = trio.current_time() - start
    assert outcomes(report) == dict.fromkeys(STEPS, TIMED_OUT)
    assert all(report.steps[n].duration == pytest.approx(8, abs=0.1) for n in STEPS[:3])
    assert report.steps["logout"].duration == pytest.approx(2, abs=0.1)
    assert report.steps["logout"].reason == "cut off when the time for the whole exit ran out"
    assert 10.0 <= elapsed < 10.5
    assert session.state is State.CLOSED


async def test_notloggedin_fails_its_step_and_skips_logout(
    sim: Simulator, store: MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    # No feed: the session must learn of the expiry from a step's answer.
    async with session_on(sim, store, feed=None) as session:
        held = await log_in_with_everything(session, sim, store)
        sim.set_delay(1.0, "status")  # status reaches the PBX after the expiry

        async def expire_soon() -> None:
            await trio.sleep(0.5)
            assert sim.expire("alice") == 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(expire_soon)
            report = await session.exit(logout=True)
        assert session.state is State.CLOSED
        assert outcomes(report) == {
            "chat_offline": FAILED,
            "history_save": OK,
            "rtc_release": OK,
            "logout": SKIPPED,
        }
        assert isinstance(report.steps["chat_offline"].error, SessionLostError)
        assert "notloggedin" in (report.steps["logout"].reason or "")
        assert sim.command_count("logout") == 0
        assert sim.user_view("alice")["rtc_pass"] != held
        record = await store.get_context(sim.url, "alice", None)
        assert record is not None and not record.logged_in


async def test_every_step_notloggedin(sim: Simulator, store: MemoryStore) -> None:
    async with session_on(sim, store, feed=None) as session:
        await log_in_with_everything(session, sim, store)
        sim.expire("alice")
        report = await session.exit(logout=True)
    assert outcomes(report) == {
        "chat_offline": FAILED,
        "history_save": FAILED,
        "rtc_release": FAILED,
        "logout": SKIPPED,
    }
    assert all(isinstance(report.steps[n].error, SessionLostError) for n in STEPS[:3])
    assert sim.command_count("logout") == 0


async def test_stale_password_is_skipped(sim: Simulator, store: MemoryStore) -> None:
    async with session_on(sim, store) as session:
        held = await log_in_with_everything(session, sim, store)
        # Another program, logged in as the same user, resets the password.
        async with session_on(sim, MemoryStore(), feed=None, keep_session=True) as other:
            await other.login("alice", "alice-pass")
            await other.rtc_reset()  # releases whatever it is, holds nothing
        newer = sim.user_view("alice")["rtc_pass"]
        assert newer != held
        report = await session.exit(logout=True)
    assert outcomes(report) == {
        "chat_offline": OK,
        "history_save": OK,
        "rtc_release": SKIPPED,
        "logout": OK,
    }
    assert report.steps["rtc_release"].reason == (
        "another program already reset the WebRTC password"
    )
    assert report.ok
    assert sim.user_view("alice")["rtc_pass"] == newer  # not ours to release


async def test_no_password_held_is_skipped(sim: Simulator, store: MemoryStore) -> None:
    async with session_on(sim, store) as session:
        await session.login("alice", "alice-pass")
        before = sim.user_view("alice")["rtc_pass"]
        report = await session.exit(logout=True)
    assert report.steps["rtc_release"].outcome is SKIPPED
    assert report.steps["rtc_release"].reason == "no WebRTC password held"
    assert sim.command_count("rtcreset") == 0
    assert sim.user_view("alice")["rtc_pass"] == before


async def test_released_password_is_not_released_twice(sim: Simulator, store: MemoryStore) -> None:
    async with session_on(sim, store) as session:
        await session.login("alice", "alice-pass")
        await session.rtc_reset(getnew=True)
        await session.rtc_reset()  # gives it up: nothing is held any more
        report = await session.exit(logout=True)
    assert report.steps["rtc_release"].outcome is SKIPPED
    assert sim.command_count("rtcreset") == 2


async def test_user_without_chat_skips_chat_offline(sim: Simulator, store: MemoryStore) -> None:
    async with session_on(sim, store) as session:
        held = await log_in_with_everything(session, sim, store, login="bob")
        report = await session.exit(logout=True)
    assert outcomes(report) == {
        "chat_offline": SKIPPED,
        "history_save": OK,
        "rtc_release": OK,
        "logout": OK,
    }
    assert report.steps["chat_offline"].reason == "the user has no chat permission"
    assert sim.command_count("status") == 0
    assert sim.user_view("bob")["rtc_pass"] != held


# ------------------------------------------------------------- concurrency


async def test_stages_run_their_steps_concurrently(
    sim: Simulator, store: MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    async with session_on(sim, store) as session:
        await log_in_with_everything(session, sim, store)
        sim.set_delay(1.0)
        start = trio.current_time()
        report = await session.exit(logout=True)
        elapsed = trio.current_time() - start
    assert outcomes(report) == dict.fromkeys(STEPS, OK)
    # Stage 1 (three steps at once) takes 1 s, stage 2 (logout) 1 s: not 4 s.
    assert 2.0 <= elapsed < 2.3
    assert report.duration == pytest.approx(elapsed, abs=0.01)
    for name in STEPS:
        assert 1.0 <= report.steps[name].duration < 1.1
    # Durations add up: the stages follow each other.
    assert report.duration >= report.steps["logout"].duration + max(
        report.steps[n].duration for n in STEPS[:3]
    )


async def test_cancelled_caller_still_gets_a_complete_exit(
    sim: Simulator, store: MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    async with session_on(sim, store) as session:
        held = await log_in_with_everything(session, sim, store)
        sim.set_delay(2.0)
        start = trio.current_time()
        with trio.move_on_after(0.5) as scope:
            await session.exit(logout=True)
            await trio.lowlevel.checkpoint()  # the cancellation shows at the next checkpoint
        assert scope.cancelled_caught
        assert trio.current_time() - start >= 4.0  # both stages ran to their end
        assert session.state is State.CLOSED
        report = session.exit_report
        assert report is not None
        assert outcomes(report) == dict.fromkeys(STEPS, OK)
    view = sim.user_view("alice")
    assert view["presence"] == {"show": "offline", "status": ""}
    assert view["rtc_pass"] != held
    assert [c for c in sim.contexts() if c["login"] == "alice"] == []


async def test_cancelled_caller_exit_is_still_bounded(
    sim: Simulator, store: MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    async with session_on(sim, store) as session:
        await log_in_with_everything(session, sim, store)
        sim.set_delay(60)
        start = trio.current_time()
        with trio.move_on_after(0.5):
            await session.exit(logout=True, timeout=ExitTimeouts(step=3, total=4))
        assert 4.0 <= trio.current_time() - start < 4.5
        report = session.exit_report
        assert report is not None
        assert outcomes(report) == dict.fromkeys(STEPS, TIMED_OUT)


async def test_concurrent_exit_waits_and_returns_the_same_report(
    sim: Simulator, store: MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    async with session_on(sim, store) as session:
        await log_in_with_everything(session, sim, store)
        sim.set_delay(1.0)
        reports: list[tuple[ExitReport, float]] = []

        async def exit_now(logout: bool) -> None:
            reports.append((await session.exit(logout=logout), trio.current_time()))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(exit_now, True)
            await trio.sleep(0.1)
            assert session.state is State.EXITING
            nursery.start_soon(exit_now, False)
        (first, first_done), (second, second_done) = reports
        assert first is second
        assert second_done >= first_done
        assert first.steps["logout"].outcome is OK  # the first call's options won
        assert sim.command_count("logout") == 1


async def test_exit_interrupts_an_operation_in_progress(
    sim: Simulator, store: MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    async with session_on(sim, store) as session:
        await session.login("admin", "admin-pass")
        sim.set_delay(30, "selcompany")
        errors: list[BaseException] = []

        async def select() -> None:
            try:
                await session.select_company("8")
            except InvalidStateError as exc:
                errors.append(exc)

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(select)
            await trio.sleep(1.0)
            report = await session.exit(logout=True)
        assert trio.current_time() - start < 2.0  # exit did not wait 30 s
        assert len(errors) == 1 and "exiting" in str(errors[0])
        assert outcomes(report) == {
            "chat_offline": OK,
            "history_save": OK,
            "rtc_release": SKIPPED,
            "logout": OK,
        }


# ------------------------------------------------------- exit in each state


async def test_exit_when_unconfigured(store: MemoryStore) -> None:
    async with pbxsession.open_session(store=store) as session:
        assert session.state is State.UNCONFIGURED
        report = await session.exit(logout=True)
        assert state_of(session) is State.CLOSED
        assert outcomes(report) == dict.fromkeys(STEPS, SKIPPED)
        assert all(r.reason == "not logged in" for r in report.steps.values())
        assert not session.statistics().http_client_open
        assert await session.exit() is report


@pytest.mark.parametrize("logout", [True, False])
async def test_exit_when_host_set_sends_nothing(
    sim: Simulator, store: MemoryStore, logout: bool
) -> None:
    async with session_on(sim, store) as session:
        report = await session.exit(logout=logout)
        assert session.state is State.CLOSED
    assert outcomes(report) == dict.fromkeys(STEPS, SKIPPED)
    assert report.ok
    assert report.steps["logout"].reason == ("not logged in" if logout else "not requested")
    assert sim.command_count() == 0


async def test_exit_after_the_session_was_lost(sim: Simulator, store: MemoryStore) -> None:
    async with session_on(sim, store) as session:
        await log_in_with_everything(session, sim, store)
        sim.expire("alice")  # the feed gets errno 2
        await session.wait_state(State.HOST_SET)
        sent = sim.command_count()
        report = await session.exit(logout=True)
    assert outcomes(report) == dict.fromkeys(STEPS, SKIPPED)
    assert sim.command_count() == sent


async def test_exit_when_company_selected(sim: Simulator, store: MemoryStore) -> None:
    async with session_on(sim, store) as session:
        held = await log_in_with_everything(session, sim, store, login="admin")
        await session.select_company("8")
        assert session.state is State.COMPANY_SELECTED
        report = await session.exit(logout=True)
        assert state_of(session) is State.CLOSED
    assert outcomes(report) == dict.fromkeys(STEPS, OK)
    assert sim.user_view("admin")["presence"] == {"show": "offline", "status": ""}
    assert sim.user_view("admin")["rtc_pass"] != held


async def test_exit_when_closed_returns_the_same_report(sim: Simulator, store: MemoryStore) -> None:
    async with session_on(sim, store) as session:
        await session.login("alice", "alice-pass")
        report = await session.exit(logout=False)
        sent = sim.command_count()
        assert await session.exit(logout=True) is report
        assert await session.exit(timeout=ExitTimeouts(step=1, total=1)) is report
        assert sim.command_count() == sent
    assert session.exit_report is report  # leaving the block did not exit again


async def test_leaving_the_block_exits_with_logout(sim: Simulator, store: MemoryStore) -> None:
    async with session_on(sim, store) as session:
        held = await log_in_with_everything(session, sim, store)
    report = session.exit_report
    assert report is not None
    assert outcomes(report) == dict.fromkeys(STEPS, OK)
    assert sim.user_view("alice")["rtc_pass"] != held


async def test_bad_timeouts_are_refused(sim: Simulator, store: MemoryStore) -> None:
    async with session_on(sim, store) as session:
        with pytest.raises(InvalidArgumentError):
            await session.exit(timeout={"step": 1})  # type: ignore[arg-type]
        assert session.state is State.HOST_SET
        with pytest.raises(InvalidArgumentError):
            ExitTimeouts(step=0)
        with pytest.raises(InvalidArgumentError):
            ExitTimeouts(total=-1)


# ------------------------------------------------------------- call history


async def test_history_round_trip(sim: Simulator, store: MemoryStore) -> None:
    async with session_on(sim, store) as session:
        await session.login("alice", "alice-pass")
        await emit_calls(
            session,
            sim,
            "alice",
            [call(1), call(2, state="ringing"), call(3), call(4, state="answered"), call(5)],
        )
        sim.emit("chat", {"state": "ended"}, login="alice")  # not a call: not kept
        report = await session.exit(logout=True)
    assert report.steps["history_save"].outcome is OK
    assert sim.user_view("alice")["history"] == [call(1), call(3), call(5)]

    # The next login loads it, adds to it, and saves it all again.
    async with session_on(sim, store) as session:
        await session.login("alice", "alice-pass")
        assert session.statistics().history_records == 3
        await emit_calls(session, sim, "alice", [call(6)])
        await session.exit(logout=True)
    assert sim.user_view("alice")["history"] == [call(1), call(3), call(5), call(6)]

    # A session that saw no calls re-saves what it loaded.
    async with session_on(sim, store) as session:
        await session.login("alice", "alice-pass")
        await session.exit(logout=True)
    assert sim.command_count("save") == 3
    assert sim.user_view("alice")["history"] == [call(1), call(3), call(5), call(6)]


async def test_history_keeps_the_newest_fifty(sim: Simulator, store: MemoryStore) -> None:
    async with session_on(sim, store) as session:
        await session.login("alice", "alice-pass")
        await emit_calls(session, sim, "alice", [call(n) for n in range(40)])
        await session.exit(logout=True)
    assert len(sim.user_view("alice")["history"]) == 40  # type: ignore[arg-type]
    async with session_on(sim, store) as session:
        await session.login("alice", "alice-pass")
        await emit_calls(session, sim, "alice", [call(n) for n in range(40, 55)])
        assert session.statistics().history_records == 50
        await session.exit(logout=True)
    assert sim.user_view("alice")["history"] == [call(n) for n in range(5, 55)]


async def test_history_of_one_user_stays_with_that_user(sim: Simulator, store: MemoryStore) -> None:
    async with session_on(sim, store) as session:
        await session.login("alice", "alice-pass")
        sim.emit("call", call(1), login="bob")  # nobody of alice's sees it
        await emit_calls(session, sim, "alice", [call(2)])
        await session.exit(logout=True)
    assert sim.user_view("alice")["history"] == [call(2)]
    assert sim.user_view("bob")["history"] == []


async def test_history_not_loaded_is_not_overwritten(sim: Simulator, store: MemoryStore) -> None:
    async with session_on(sim, store, retries=0) as session:
        await session.login("alice", "alice-pass")
        await emit_calls(session, sim, "alice", [call(1)])
        await session.exit(logout=True)
    async with session_on(sim, store, retries=0) as session:
        sim.fail_next(1, "load")
        await session.login("alice", "alice-pass")  # the login stands
        assert session.state is State.LOGGED_IN
        report = await session.exit(logout=True)
    assert report.steps["history_save"].outcome is SKIPPED
    assert report.steps["history_save"].reason == "the saved history could not be loaded at login"
    assert sim.user_view("alice")["history"] == [call(1)]


async def test_history_events_after_exit_are_not_collected(
    sim: Simulator, store: MemoryStore
) -> None:
    async with session_on(sim, store, keep_session=True) as session:
        await session.login("alice", "alice-pass")
        await session.exit()
        sim.emit("call", call(9), login="alice")
        await trio.testing.wait_all_tasks_blocked()
        assert session.statistics().history_records == 0


async def test_exit_logs_out_a_login_that_timed_out(
    sim: Simulator, store: MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    # Found by bench/load_faults.py: a login the client gave up on, carried out
    # late by the PBX, was left on it by exit(logout=True) from host_set.
    async with session_on(sim, store, feed=None, keep_session=True) as first:
        await first.login("alice", "alice-pass")  # the cookie is proven: no settling request
    sim.expire("alice")  # gone on the PBX; the store still has it logged in
    async with session_on(sim, store, feed=None, timeout=2) as session:
        sim.set_delay(3, "login")
        with pytest.raises(pbxsession.PbxTimeoutError):
            await session.login("alice", "alice-pass")
        await trio.sleep(2)  # the PBX carries it out after all
        assert [c["login"] for c in sim.contexts() if c["login"]] == ["alice"]
        assert session.state is State.HOST_SET
        report = await session.exit(logout=True)
    assert report.steps["logout"].outcome is StepOutcome.OK
    assert [c["login"] for c in sim.contexts() if c["login"]] == []
