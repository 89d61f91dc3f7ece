"""The feed on the command port: a Starlette WebSocket route at ``/api/feed``.

PROTOCOL.md says the feed's host defaults to the command host, so a client
given only ``sim.url`` finds its feed here. Refusals use the ASGI
WebSocket denial response (hypercorn supports it), so the statuses are the
same as on the feed's own port (``FEED_PATH``, else 404).
"""

from __future__ import annotations

import logging

from starlette.responses import Response
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ._feed import FeedClosed, FeedServer, Rejection
from ._streams import peer_name

__all__ = ["feed_routes"]

logger = logging.getLogger("pbxsession.sim")


class _StarletteSocket:
    """A Starlette WebSocket as a :class:`._feed.FeedSocket`."""

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws

    async def get_message(self) -> str | bytes:
        message = await self._ws.receive()
        if message["type"] == "websocket.disconnect":
            raise FeedClosed
        text: str | None = message.get("text")
        return text if text is not None else bytes(message.get("bytes") or b"")

    async def send_message(self, message: str) -> None:
        try:
            await self._ws.send_text(message)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            raise FeedClosed from exc


def _target(ws: WebSocket) -> str:
    query = ws.scope.get("query_string", b"").decode("latin-1")
    path: str = ws.scope["path"]
    return path + (f"?{query}" if query else "")


async def _reject(ws: WebSocket, rejection: Rejection) -> None:
    await ws.send_denial_response(Response(rejection.body, status_code=rejection.status))


def feed_routes(feed: FeedServer) -> list[WebSocketRoute]:
    """One WebSocket route for every path: the feed's, and 404 for the others."""

    async def endpoint(ws: WebSocket) -> None:
        try:
            verdict = feed.admit(_target(ws), ws.scope["headers"])
            if isinstance(verdict, Rejection):
                await _reject(ws, verdict)
                return
            await ws.accept()
            client = ws.scope.get("client") or ("", 0)
            stream = feed.switch.mark_feed(peer_name(*client))
            await feed.serve_connection(_StarletteSocket(ws), verdict, stream)
            await ws.close()
        except Exception:
            logger.debug("feed connection failed", exc_info=True)

    # admit() answers 404 for a path other than FEED_PATH, as the feed port does
    return [WebSocketRoute("/{path:path}", endpoint)]
