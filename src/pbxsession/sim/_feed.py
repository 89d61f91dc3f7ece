"""The simulator's live feed: a trio-websocket server on its own loopback port.

``GET /api/feed[?subid=X]`` with the session cookie. Handshake answers:
404 for another path, 503 while handshakes are being refused (a fault), 403
when the context is not logged in (or the cookie is unknown, or the sub-ID
is malformed). After the upgrade the client sends one ``start`` frame and
gets ``ready``, the replay, then live ``event`` frames, as PROTOCOL.md says.

Every handler catches everything: an exception escaping a trio-websocket
handler would tear the whole server down.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import trio
import trio_websocket

from ._render import error_frame, ready_frame
from ._state import ContextKey, SimState, valid_subid
from ._streams import FaultListener, FaultStream, StreamSwitch

__all__ = ["COOKIE_NAME", "FeedServer", "cookie_from_headers"]

logger = logging.getLogger("pbxsession.sim")

COOKIE_NAME = "Red60urne"
FEED_PATH = "/api/feed"
START_TIMEOUT = 30.0
"""Seconds a client has to send its start frame after the upgrade."""
PROGRESS_TIMEOUT = 2.0
"""Seconds :meth:`FeedServer.wait_backlog` waits without any feed progress."""
_FILTERABLE = ("device", "presence", "mailbox", "queue")


def cookie_from_headers(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The ``Red60urne`` value in the ``Cookie`` headers, if any."""
    for name, value in headers:
        if name.lower() != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            key, sep, val = part.strip().partition("=")
            if sep and key == COOKIE_NAME:
                return val.strip().strip('"')
    return None


class _BadStart(Exception):
    pass


@dataclass(eq=False)
class _Conn:
    key: ContextKey
    stream: FaultStream | None
    wake: trio.Event = field(default_factory=trio.Event)
    last: int = 0
    streaming: bool = False
    end: tuple[int, str] | None = None
    dropped: bool = False
    excluded: frozenset[str] = frozenset()

    def poke(self) -> None:
        self.wake.set()


def _parse_start(text: str | bytes) -> tuple[int | None, frozenset[str]]:
    try:
        frame = json.loads(text)
    except ValueError as exc:
        raise _BadStart("start frame is not JSON") from exc
    if not isinstance(frame, dict) or frame.get("type") != "start":
        raise _BadStart("expected a start frame")
    since = frame.get("since")
    if since is not None and (not isinstance(since, int) or isinstance(since, bool) or since < 0):
        raise _BadStart("since must be null or a non-negative integer")
    excluded = set()
    for kind in _FILTERABLE:
        flag = frame.get(kind, True)
        if not isinstance(flag, bool):
            raise _BadStart(f"{kind} must be true or false")
        if not flag:
            excluded.add(kind)
    return since, frozenset(excluded)


class FeedServer:
    """Serves the feed and carries out the feed faults; a state listener."""

    def __init__(self, state: SimState) -> None:
        self._state = state
        self.switch = StreamSwitch()
        self._conns: dict[ContextKey, set[_Conn]] = {}
        self._progress = trio.Event()
        self.refuse_remaining = 0
        """Handshakes still to refuse with HTTP 503."""
        self.handshakes = 0
        """Handshakes received (accepted or not)."""
        self.port = 0
        """The bound TCP port, once serving."""
        state.add_listener(self)

    # -- state listener ------------------------------------------------------

    def context_event(self, key: ContextKey) -> None:
        """Wake the connections of ``key``."""
        for conn in self._conns.get(key, ()):
            conn.wake.set()

    def context_ended(self, key: ContextKey, reason: str) -> None:
        """End the connections of ``key`` with errno 2."""
        for conn in self._conns.get(key, ()):
            conn.end = (2, f"user has been logged out ({reason})")
            conn.poke()

    def contexts_forgotten(self) -> None:
        """Cut off every connection without an error frame (restart)."""
        self.drop_all()

    # -- faults and views ----------------------------------------------------

    def _all(self) -> list[_Conn]:
        return [c for conns in self._conns.values() for c in conns]

    def drop_all(self) -> int:
        """Cut off every feed connection abruptly (no error frame); return how many."""
        conns = self._all()
        for conn in conns:
            conn.dropped = True
            if conn.stream is not None:
                conn.stream.abort()
            conn.poke()
        self.switch.abort_all()
        return len(conns)

    def error_all(self, errno: int, message: str = "") -> int:
        """Send every feed connection an error frame, then close it; return how many."""
        conns = self._all()
        for conn in conns:
            conn.end = (errno, message or f"simulated error {errno}")
            conn.poke()
        return len(conns)

    def connection_count(self, key: ContextKey | None = None) -> int:
        """How many feed connections are open (for one context, or in all)."""
        if key is not None:
            return len(self._conns.get(key, ()))
        return sum(len(c) for c in self._conns.values())

    def backlog(self) -> int:
        """The largest number of events a streaming connection has yet to send."""
        return max(
            (self._state.newest_seq(c.key) - c.last for c in self._all() if c.streaming),
            default=0,
        )

    async def wait_backlog(self, limit: int) -> None:
        """Wait until no streaming connection is more than ``limit`` events behind.

        Gives up when no connection makes progress for ``PROGRESS_TIMEOUT`` s.
        """
        while self.backlog() > limit:
            self._progress = trio.Event()
            with trio.move_on_after(PROGRESS_TIMEOUT) as scope:
                await self._progress.wait()
            if scope.cancelled_caught:
                return

    # -- serving -------------------------------------------------------------

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` and serve the feed until cancelled."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        wrapped = [FaultListener(listener, self.switch) for listener in listeners]
        self.port = wrapped[0].port
        # trio-websocket only names socket listeners in its types; any Listener works
        server = trio_websocket.WebSocketServer(
            self._handle, cast("list[Any]", wrapped), disconnect_timeout=2.0
        )
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(server.run)
                task_status.started(self.port)
        finally:
            self._state.remove_listener(self)

    async def _handle(self, request: trio_websocket.WebSocketRequest) -> None:
        try:
            await self._handle_request(request)
        except Exception:
            logger.debug("feed connection failed", exc_info=True)

    async def _handle_request(self, request: trio_websocket.WebSocketRequest) -> None:
        self.handshakes += 1
        target = urlsplit(request.path)
        if target.path != FEED_PATH:
            await request.reject(404, body=b"no such path")
            return
        if self.refuse_remaining > 0:
            self.refuse_remaining -= 1
            await request.reject(503, body=b"feed unavailable (simulated)")
            return
        subids = parse_qs(target.query, keep_blank_values=True).get("subid")
        subid = "" if subids is None else subids[0]
        if subids is not None and (len(subids) != 1 or not valid_subid(subid)):
            await request.reject(403, body=b"bad subid")
            return
        key = self._state.feed_context(cookie_from_headers(request.headers), subid)
        if key is None:
            await request.reject(403, body=b"not logged in")
            return
        ws = await request.accept()
        conn = _Conn(key, self.switch.find(str(request.remote)))
        self._conns.setdefault(key, set()).add(conn)
        try:
            await self._run(ws, conn)
        except (
            trio_websocket.ConnectionClosed,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
        ):
            pass
        finally:
            conns = self._conns.get(key)
            if conns is not None:
                conns.discard(conn)
                if not conns:
                    del self._conns[key]
            if conn.dropped and conn.stream is not None:
                conn.stream.abort()

    async def _run(self, ws: trio_websocket.WebSocketConnection, conn: _Conn) -> None:
        start: str | bytes | None = None
        with trio.move_on_after(START_TIMEOUT):
            start = await ws.get_message()
        if start is None or conn.dropped:
            return
        try:
            since, conn.excluded = _parse_start(start)
        except _BadStart as exc:
            await ws.send_message(error_frame(1, f"bad start frame: {exc}"))
            return
        newest = self._state.newest_seq(conn.key)
        if since is None or since > newest:
            conn.last, resumed = newest, since is None
        else:
            events, resumed = self._state.events_after(conn.key, since)
            conn.last = since if resumed else (events[0].seq - 1 if events else newest)
        if conn.end is None and not conn.dropped:
            await ws.send_message(ready_frame(newest, resumed))
        conn.streaming = True
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._drain_incoming, ws, nursery.cancel_scope)
            await self._stream(ws, conn)
            nursery.cancel_scope.cancel()

    @staticmethod
    async def _drain_incoming(
        ws: trio_websocket.WebSocketConnection, scope: trio.CancelScope
    ) -> None:
        try:
            while True:
                await ws.get_message()
        except trio_websocket.ConnectionClosed:
            scope.cancel()

    async def _stream(self, ws: trio_websocket.WebSocketConnection, conn: _Conn) -> None:
        state = self._state
        while True:
            if conn.dropped:
                return
            if conn.end is not None:
                errno, message = conn.end
                await ws.send_message(error_frame(errno, message))
                return
            conn.wake = trio.Event()
            events, complete = state.events_after(conn.key, conn.last)
            if not complete:
                return  # fell behind the ring buffer: close, the client resumes
            if not events:
                await conn.wake.wait()
                continue
            excluded = conn.excluded
            for event in events:
                if event.kind not in excluded:
                    await ws.send_message(event.frame)
                conn.last = event.seq
                if conn.end is not None or conn.dropped:
                    break
            self._progress.set()
