"""A closed session is freed by reference counting: it leaves no reference cycles.

Cyclic garbage waits for the cyclic GC, and at thousands of sessions its full
collections walk every live session (bench/scale.py: pauses of seconds). So
each whole life of a session, its feed and exit included, runs with the GC
off, and the garbage the GC then finds must hold nothing of the library's.
"""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import pytest
import trio

import pbxsession
from pbxsession.sim import Simulator

LIBRARY = Path(pbxsession.__file__).resolve().parent
SIMULATOR = LIBRARY / "sim"


def _ours(thing: object) -> str | None:
    """A description of ``thing`` if the library (not its simulator) made it."""
    if isinstance(thing, FrameType):
        path = Path(thing.f_code.co_filename).resolve()
        if path.is_relative_to(LIBRARY) and not path.is_relative_to(SIMULATOR):
            return f"frame of {thing.f_code.co_name} ({path.name}:{thing.f_lineno})"
        return None
    module = type(thing).__module__
    if module.startswith("pbxsession") and not module.startswith("pbxsession.sim"):
        return f"{module}.{type(thing).__qualname__}"
    return None


@contextmanager
def cyclic_garbage() -> Iterator[list[str]]:
    """The library's objects that only the cyclic GC freed, made within the block."""
    found: list[str] = []
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.collect()
        found.extend(sorted({d for d in map(_ours, gc.garbage) if d is not None}))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def _exit_with_logout(session: pbxsession.Session, sim: Simulator) -> None:
    await session.exit(logout=True)


async def _feed_dropped_then_exit(session: pbxsession.Session, sim: Simulator) -> None:
    async with session.events() as events:
        sim.drop_feeds()
        async for item in events:
            if isinstance(item, pbxsession.FeedUp):
                break
    await session.exit(logout=True)


async def _logout_then_leave(session: pbxsession.Session, sim: Simulator) -> None:
    await session.logout()


async def _exit_step_fails(session: pbxsession.Session, sim: Simulator) -> None:
    sim.fail_next(5, cmd="status")  # the chat_offline step
    report = await session.exit(logout=True)
    assert report.steps["chat_offline"].outcome is not pbxsession.StepOutcome.OK


async def _wrong_password_then_exit(session: pbxsession.Session, sim: Simulator) -> None:
    await session.logout()
    with pytest.raises(pbxsession.PbxError):
        await session.login("alice", "wrong")
    await session.exit()


async def _session_lost(session: pbxsession.Session, sim: Simulator) -> None:
    async with session.events() as events:
        sim.restart()  # the PBX forgets every login: the feed says the session is lost
        async for item in events:
            if isinstance(item, pbxsession.SessionLost):
                break
    await session.exit()


async def _leave_logged_in(session: pbxsession.Session, sim: Simulator) -> None:
    pass  # the block's end runs the exit


@pytest.mark.parametrize(
    "ending",
    [
        _exit_with_logout,
        _feed_dropped_then_exit,
        _logout_then_leave,
        _exit_step_fails,
        _wrong_password_then_exit,
        _session_lost,
        _leave_logged_in,
    ],
    ids=[
        "exit",
        "feed-dropped",
        "logout",
        "exit-step-fails",
        "wrong-password",
        "lost",
        "block-end",
    ],
)
async def test_a_closed_session_leaves_no_reference_cycles(
    sim: Simulator,
    store: pbxsession.MemoryStore,
    ending: Callable[[pbxsession.Session, Simulator], Awaitable[None]],
) -> None:
    async def one_life() -> None:
        async with pbxsession.open_session(sim.url, ws_host=sim.ws_url, store=store) as session:
            await session.login("alice", "alice-pass")
            with trio.fail_after(10):
                await ending(session, sim)

    await one_life()  # first use: imports, caches
    with cyclic_garbage() as found:
        await one_life()
        await trio.testing.wait_all_tasks_blocked()
    assert found == []
