"""``open_simulator``: run the simulated PBX (commands + feed, two ports) inside a nursery.

The command port is hypercorn serving the Starlette app (commands, the feed
route, the controls); the feed port is trio-websocket. Both accept through
fault-injecting streams (:mod:`._streams`), under TLS when asked, so the feed
faults apply on either port. hypercorn's own ``serve`` binds its sockets
itself, so its per-connection server is driven here over our listeners.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import cast

import trio
from hypercorn.config import Config
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ASGIFramework, ConnectionState
from hypercorn.utils import wrap_app

from .._nursery import open_owned_nursery
from ._feed import FeedServer
from ._feed_port import serve_feed_port
from ._http import create_app
from ._simulator import Simulator
from ._state import SimState
from ._streams import FaultListener, StreamSwitch
from ._tls import SimTls, make_tls
from ._users import DEFAULT_USERS, SimUser

__all__ = ["open_simulator"]

logger = logging.getLogger("pbxsession.sim")

_KEEP_ALIVE = 3600.0
"""Hypercorn's idle keep-alive; long, so that a MockClock cannot fire it."""


def _config() -> Config:
    config = Config()
    config.keep_alive_timeout = _KEEP_ALIVE
    config.accesslog = None
    config.errorlog = logging.getLogger("pbxsession.sim.hypercorn")
    config.set_statsd_logger_class(StatsdLogger)
    return config


async def _serve_commands(
    sim: Simulator,
    host: str,
    port: int,
    switch: StreamSwitch,
    ssl_context: ssl.SSLContext | None,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the Starlette app with hypercorn on ``host:port`` until cancelled."""
    config = _config()
    app = wrap_app(cast(ASGIFramework, create_app(sim)), config.wsgi_max_body_size, "asgi")
    listeners = await trio.open_tcp_listeners(port, host=host)
    wrapped = [
        FaultListener(listener, switch, feed=False, ssl_context=ssl_context)
        for listener in listeners
    ]
    bound = wrapped[0].port
    handler = partial(TCPServer, app, config, WorkerContext(None), ConnectionState({}))
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, wrapped)
        task_status.started(bound)


def _url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


async def _sweep_expiry(state: SimState, clock: Callable[[], float]) -> None:
    """Expire idle contexts on time (only used with trio's own clock)."""
    while True:
        deadline = state.next_expiry()
        wait = state.idle_timeout if deadline is None else max(deadline - clock(), 0.0)
        await trio.sleep(wait + 0.001)
        state.expire_idle()


def _check_tls(tls: bool, require_client_cert: bool) -> None:
    if not isinstance(tls, bool) or not isinstance(require_client_cert, bool):
        raise TypeError("tls and require_client_cert must be True or False")
    if require_client_cert and not tls:
        raise ValueError("require_client_cert needs tls=True")


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
    tls: bool = False,
    require_client_cert: bool = False,
) -> AsyncIterator[Simulator]:
    """Run a simulated PBX for the duration of the ``async with`` block.

    Commands are served by hypercorn on ``host:port``, and the feed both
    there (``/api/feed``: a client given only ``sim.url`` finds it) and by
    trio-websocket on ``host:feed_port`` (``sim.ws_url``, for a separate
    ``ws_host``); 0 = any free port. ``clock`` defaults to
    :func:`trio.current_time`, so a trio ``MockClock`` drives idle expiry
    and lockout. Leaving the block stops everything.

    ``tls=True`` serves https and wss on both ports, with a certificate for
    ``127.0.0.1``, ``::1`` and ``localhost`` from a CA made now and thrown
    away at the end: trust it with ``sim.ca_path`` or ``sim.ssl_context``.
    ``require_client_cert=True`` (with ``tls``) refuses clients without a
    certificate from that CA; ``sim.client_cert_path`` holds one (with its
    key) and ``sim.ssl_context`` presents it.
    """
    _check_tls(tls, require_client_cert)
    state = SimState(
        DEFAULT_USERS if users is None else users,
        clock=clock or trio.current_time,
        lock_threshold=lock_threshold,
        lock_period=lock_period,
        idle_timeout=idle_timeout,
        ring_size=ring_size,
    )
    material: SimTls | None = make_tls(client_cert=require_client_cert) if tls else None
    feed = FeedServer(state)
    sim = Simulator(state, feed, event_rate=event_rate)
    server_context = None if material is None else material.server_context
    try:
        # An owned nursery: what the body raises leaves alone, not in a group.
        async with open_owned_nursery() as nursery:
            http_port: int = await nursery.start(
                _serve_commands, sim, host, port, feed.switch, server_context
            )
            bound_feed_port: int = await nursery.start(
                serve_feed_port, feed, host, feed_port, server_context
            )
            nursery.start_soon(sim.run_event_generator)
            if clock is None:
                nursery.start_soon(_sweep_expiry, state, trio.current_time)
            secure = "s" if material is not None else ""
            sim.url = _url(f"http{secure}", host, http_port)
            sim.ws_url = _url(f"ws{secure}", host, bound_feed_port)
            if material is not None:
                sim.ca_path = material.ca_path
                sim.client_cert_path = material.client_cert_path
                sim.ssl_context = material.client_context
            logger.debug("simulator serving %s (feed also %s)", sim.url, sim.ws_url)
            try:
                yield sim
            finally:
                nursery.cancel_scope.cancel()
    finally:
        feed.close()
        if material is not None:
            material.close()
