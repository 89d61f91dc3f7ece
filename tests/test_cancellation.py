"""Cancellation at random points of login, select_company and exit.

Time runs on trio's ``autojump_clock`` (a ``MockClock``); the simulator
delays every command by ``DELAY`` seconds of that clock, and each test is
cancelled after a seeded random fraction of the operation's length. The
documented outcome (README, "A failed or cancelled call leaves the state it
found"; ``Session.exit``: shielded, bounded, the caller sees the
cancellation at its next checkpoint):

* ``login`` and ``select_company`` leave the state they found, and the
  session still works afterwards;
* ``exit`` still ends ``closed`` with its report, within its bound;
* nothing is left behind: after the session block the simulator shows no
  feed connection (warnings are errors, so an unclosed socket fails too).
"""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing
from _support import session_on

import pbxsession
from pbxsession import MemoryStore, State, StepOutcome
from pbxsession.sim import Simulator

DELAY = 2.0
FRACTIONS = [0.0, *sorted(round(random.Random(7000 + i).random(), 3) for i in range(7)), 0.999]


async def no_feed_left(sim: Simulator) -> None:
    """The simulator sees every feed connection closed (it notices asynchronously)."""
    with trio.fail_after(5):
        while sim.stats()["feed_connections"]:
            await trio.sleep(0.01)


def feeds_of(sim: Simulator, login: str) -> int:
    return sum(int(c["feeds"]) for c in sim.contexts() if c["login"] == login)  # type: ignore[call-overload]


@pytest.mark.parametrize("fraction", FRACTIONS)
async def test_cancelled_login_leaves_host_set(
    sim: Simulator, store: MemoryStore, autojump_clock: trio.testing.MockClock, fraction: float
) -> None:
    async with session_on(sim, store) as session:
        sim.set_delay(DELAY)  # login and the history load: two delays
        with trio.move_on_after(fraction * 2 * DELAY) as scope:
            await session.login("alice", "alice-pass")
        assert scope.cancelled_caught
        assert session.state is State.HOST_SET
        assert session.user is None
        await no_feed_left(sim)
        # The lock was released and nothing half-done blocks a new login.
        sim.set_delay(0)
        user = await session.login("alice", "alice-pass")
        assert user.login == "alice"
        assert session.state is State.LOGGED_IN
        with trio.fail_after(5):
            while feeds_of(sim, "alice") != 1:
                await trio.sleep(0.01)
    await no_feed_left(sim)


@pytest.mark.parametrize("fraction", FRACTIONS[1:])
async def test_login_cancelled_after_the_pbx_accepted_it(
    sim: Simulator, store: MemoryStore, autojump_clock: trio.testing.MockClock, fraction: float
) -> None:
    """Cancelled during the history load: the PBX holds the login, the client does not.

    The client is back in host_set with no feed and no user; the PBX-side
    login stays (the client cannot know whether its command was carried out)
    and a ``checkonly`` login adopts it.
    """
    async with session_on(sim, store) as session:
        sim.set_delay(DELAY, "load")
        with trio.move_on_after(fraction * DELAY) as scope:
            await session.login("alice", "alice-pass")
        assert scope.cancelled_caught
        assert session.state is State.HOST_SET
        assert session.user is None
        assert [c["login"] for c in sim.contexts()] == ["alice"]
        await no_feed_left(sim)
        sim.set_delay(0, "load")
        assert (await session.login("alice", checkonly=True)).login == "alice"
        assert session.state is State.LOGGED_IN
    await no_feed_left(sim)


@pytest.mark.parametrize("fraction", FRACTIONS)
@pytest.mark.parametrize("start", [State.LOGGED_IN, State.COMPANY_SELECTED])
async def test_cancelled_select_company_leaves_the_state_it_found(
    sim: Simulator,
    store: MemoryStore,
    autojump_clock: trio.testing.MockClock,
    fraction: float,
    start: State,
) -> None:
    async with session_on(sim, store) as session:
        await session.login("admin", "admin-pass")
        if start is State.COMPANY_SELECTED:
            await session.select_company("8")
        user_before = session.user
        sim.set_delay(DELAY)
        with trio.move_on_after(fraction * DELAY) as scope:
            await session.select_company("9")
        assert scope.cancelled_caught
        assert session.state is start
        assert session.user == user_before
        sim.set_delay(0)
        chosen = await session.select_company("9")
        assert chosen.company == "9"
        assert session.state is State.COMPANY_SELECTED
    await no_feed_left(sim)


async def _ready_for_exit(session: pbxsession.Session) -> None:
    """Every exit step has work: a chat user with a held WebRTC password."""
    await session.login("alice", "alice-pass")
    assert await session.rtc_reset(getnew=True) is not None


@pytest.mark.parametrize("fraction", FRACTIONS)
async def test_cancelled_exit_still_closes(
    sim: Simulator, store: MemoryStore, autojump_clock: trio.testing.MockClock, fraction: float
) -> None:
    async with session_on(sim, store) as session:
        await _ready_for_exit(session)
        sim.set_delay(DELAY)  # stage one: one delay; stage two (logout): another
        reached = after = False
        start = trio.current_time()
        with trio.move_on_after(fraction * 2 * DELAY) as scope:
            report = await session.exit(logout=True)
            reached = True
            await trio.lowlevel.checkpoint()
            after = True
        elapsed = trio.current_time() - start
        assert reached and scope.cancelled_caught and not after
        assert session.state is State.CLOSED
        assert report is session.exit_report
        assert {r.outcome for r in report.steps.values()} == {StepOutcome.OK}
        assert elapsed == pytest.approx(2 * DELAY, abs=0.1)
        assert not [c for c in sim.contexts() if c["login"] == "alice"]
        await no_feed_left(sim)
    await no_feed_left(sim)


@pytest.mark.parametrize("fraction", FRACTIONS)
async def test_cancelled_exit_is_bounded(
    sim: Simulator, store: MemoryStore, autojump_clock: trio.testing.MockClock, fraction: float
) -> None:
    """Against a PBX that never answers in time, a cancelled exit still ends on its bound."""
    timeouts = pbxsession.ExitTimeouts(step=2.0, total=3.0)
    async with session_on(sim, store, exit_timeout=timeouts) as session:
        await _ready_for_exit(session)
        sim.set_delay(1000)
        start = trio.current_time()
        with trio.move_on_after(fraction * timeouts.total) as scope:
            report = await session.exit(logout=True)
            await trio.lowlevel.checkpoint()  # where the caller sees the cancellation
        elapsed = trio.current_time() - start
        assert scope.cancelled_caught
        assert session.state is State.CLOSED
        assert elapsed <= timeouts.total + 1.0 + 0.01  # the bound plus the closing grace
        outcomes = {name: r.outcome for name, r in report.steps.items()}
        assert outcomes["chat_offline"] is StepOutcome.TIMED_OUT
        assert outcomes["logout"] is StepOutcome.TIMED_OUT
        await no_feed_left(sim)
    await no_feed_left(sim)


@pytest.mark.parametrize("fraction", FRACTIONS)
async def test_cancelling_the_block_runs_the_exit(
    sim: Simulator, store: MemoryStore, autojump_clock: trio.testing.MockClock, fraction: float
) -> None:
    """The block is cancelled from outside: leaving it still runs the (shielded) exit."""
    sessions: list[pbxsession.Session] = []
    with trio.move_on_after(1.0 + fraction * 2 * DELAY) as scope:
        async with session_on(sim, store) as session:
            sessions.append(session)
            await _ready_for_exit(session)
            sim.set_delay(DELAY)
            await trio.sleep(1.0)
            await session.rtc_reset()  # cancelled part-way (or at its start)
    assert scope.cancelled_caught
    (session,) = sessions
    assert session.state is State.CLOSED
    report = session.exit_report
    assert report is not None
    assert report.steps["logout"].outcome is StepOutcome.OK
    assert not [c for c in sim.contexts() if c["login"] == "alice"]
    await no_feed_left(sim)
