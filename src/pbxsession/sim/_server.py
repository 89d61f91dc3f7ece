"""``open_simulator``: run the simulated PBX (HTTP + feed) inside a nursery."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import cast

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import ASGIFramework

from .._nursery import open_owned_nursery
from ._feed import FeedServer
from ._http import create_app
from ._simulator import Simulator
from ._state import SimState
from ._users import DEFAULT_USERS, SimUser

__all__ = ["open_simulator"]

logger = logging.getLogger("pbxsession.sim")

_KEEP_ALIVE = 3600.0
"""Hypercorn's idle keep-alive; long, so that a MockClock cannot fire it."""


def _config(host: str, port: int) -> Config:
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.graceful_timeout = 0.1
    config.keep_alive_timeout = _KEEP_ALIVE
    config.accesslog = None
    config.errorlog = logging.getLogger("pbxsession.sim.hypercorn")
    return config


def _url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


async def _sweep_expiry(state: SimState, clock: Callable[[], float]) -> None:
    """Expire idle contexts on time (only used with trio's own clock)."""
    while True:
        deadline = state.next_expiry()
        wait = state.idle_timeout if deadline is None else max(deadline - clock(), 0.0)
        await trio.sleep(wait + 0.001)
        state.expire_idle()


@asynccontextmanager
async def open_simulator(
    users: Sequence[SimUser] | None = None,
    *,
    event_rate: float = 0.0,
    lock_threshold: int = 5,
    lock_period: float = 60.0,
    idle_timeout: float = 1800.0,
    ring_size: int = 1000,
    host: str = "127.0.0.1",
    port: int = 0,
    feed_port: int = 0,
    clock: Callable[[], float] | None = None,
) -> AsyncIterator[Simulator]:
    """Run a simulated PBX for the duration of the ``async with`` block.

    Commands are served by hypercorn on ``host:port`` and the feed by
    trio-websocket on ``host:feed_port`` (0 = any free port). ``clock``
    defaults to :func:`trio.current_time`, so a trio ``MockClock`` drives
    idle expiry and lockout. Leaving the block stops everything.
    """
    state = SimState(
        DEFAULT_USERS if users is None else users,
        clock=clock or trio.current_time,
        lock_threshold=lock_threshold,
        lock_period=lock_period,
        idle_timeout=idle_timeout,
        ring_size=ring_size,
    )
    feed = FeedServer(state)
    sim = Simulator(state, feed, event_rate=event_rate)
    shutdown = trio.Event()
    # An owned nursery: what the body raises leaves alone, not in a group.
    async with open_owned_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(
                serve,
                cast(ASGIFramework, create_app(sim)),
                _config(host, port),
                shutdown_trigger=shutdown.wait,
            )
        )
        feed_scope = trio.CancelScope()
        background = trio.CancelScope()

        async def run_feed(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
            with feed_scope:
                await feed.serve(host, feed_port, task_status=task_status)

        async def run_background() -> None:
            with background:
                async with trio.open_nursery() as tasks:
                    tasks.start_soon(sim.run_event_generator)
                    if clock is None:
                        tasks.start_soon(_sweep_expiry, state, trio.current_time)

        bound_feed_port: int = await nursery.start(run_feed)
        nursery.start_soon(run_background)
        http_port = int(binds[0].rsplit(":", 1)[1])
        sim.url = _url("http", host, http_port)
        sim.ws_url = _url("ws", host, bound_feed_port)
        logger.debug("simulator serving %s (feed %s)", sim.url, sim.ws_url)
        try:
            yield sim
        finally:
            shutdown.set()
            feed_scope.cancel()
            background.cancel()
            # hypercorn stops within its graceful timeout; never wait long
            nursery.cancel_scope.deadline = trio.current_time() + 2.0
