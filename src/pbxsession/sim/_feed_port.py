"""The feed on a port of its own: trio-websocket over fault-injecting streams.

This is ``sim.ws_url``, kept for tests of a separate ``ws_host``. Every
handler catches everything: an exception escaping a trio-websocket handler
would tear the whole server down.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any, cast

import trio
import trio_websocket

from ._feed import FeedClosed, FeedServer, Rejection
from ._streams import FaultListener, peer_name

__all__ = ["serve_feed_port"]

logger = logging.getLogger("pbxsession.sim")


class _TrioWebSocket:
    """A trio-websocket connection as a :class:`._feed.FeedSocket`."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws

    async def get_message(self) -> str | bytes:
        try:
            return await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise FeedClosed from exc

    async def send_message(self, message: str) -> None:
        try:
            await self._ws.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            raise FeedClosed from exc


def _peer(remote: object) -> str:
    address, port = getattr(remote, "address", None), getattr(remote, "port", None)
    return peer_name(address, port) if port is not None else str(remote)


async def _handle(feed: FeedServer, request: trio_websocket.WebSocketRequest) -> None:
    try:
        verdict = feed.admit(request.path, request.headers)
        if isinstance(verdict, Rejection):
            await request.reject(verdict.status, body=verdict.body)
            return
        ws = await request.accept()
        await feed.serve_connection(_TrioWebSocket(ws), verdict, feed.switch.find(_peer(ws.remote)))
    except Exception:
        logger.debug("feed connection failed", exc_info=True)


async def serve_feed_port(
    feed: FeedServer,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` (TLS with ``ssl_context``) and serve the feed until cancelled."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    wrapped = [
        FaultListener(listener, feed.switch, feed=True, ssl_context=ssl_context)
        for listener in listeners
    ]
    bound = wrapped[0].port

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        await _handle(feed, request)

    # trio-websocket only names socket listeners in its types; any Listener works
    server = trio_websocket.WebSocketServer(
        handler, cast("list[Any]", wrapped), disconnect_timeout=2.0
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        task_status.started(bound)
