"""The simulator's live feed, whatever carries it: handshake rules, streaming, faults.

``GET /api/feed[?subid=X]`` with the session cookie, on the command port
(a Starlette WebSocket route, :mod:`._feed_route`) or on the feed's own port
(trio-websocket, :mod:`._feed_port`); both end up here. Handshake answers:
404 for another path, 503 while handshakes are being refused (a fault), 403
when the context is not logged in (or the cookie is unknown, or the sub-ID
is malformed). After the upgrade the client sends one ``start`` frame and
gets ``ready``, the replay, then live ``event`` frames, as PROTOCOL.md says.
The fault controls (drop, error, refuse, freeze) apply to both.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from ._state import ContextKey, SimState
from ._streams import FaultStream, StreamSwitch
from ._wire import (
    ERRNO_BAD_START,
    ERRNO_LOGGED_OUT,
    FEED_PATH,
    STATUS,
    BadStart,
    cookie_from_headers,
    error_frame,
    feed_subids,
    parse_start,
    ready_frame,
    valid_subid,
)

__all__ = ["FeedClosed", "FeedServer", "FeedSocket", "Rejection"]

logger = logging.getLogger("pbxsession.sim")

START_TIMEOUT = 30.0
"""Seconds a client has to send its start frame after the upgrade."""
PROGRESS_TIMEOUT = 2.0
"""Seconds :meth:`FeedServer.wait_backlog` waits without any feed progress."""


class FeedClosed(Exception):
    """The feed connection is closed (raised by :class:`FeedSocket` adapters)."""


class FeedSocket(Protocol):
    """One accepted feed connection, whatever server carries it."""

    async def get_message(self) -> str | bytes:
        """The next message from the client; :class:`FeedClosed` once closed."""

    async def send_message(self, message: str) -> None:
        """Send a text frame; :class:`FeedClosed` once closed."""


@dataclass(frozen=True)
class Rejection:
    """A refused handshake: the HTTP status and body to answer with."""

    status: int
    body: bytes


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
        """Handshakes received (accepted or not), on either port."""
        state.add_listener(self)

    def close(self) -> None:
        """Stop listening to the state."""
        self._state.remove_listener(self)

    # -- state listener ------------------------------------------------------

    def context_event(self, key: ContextKey) -> None:
        """Wake the connections of ``key``."""
        for conn in self._conns.get(key, ()):
            conn.wake.set()

    def context_ended(self, key: ContextKey, reason: str) -> None:
        """End the connections of ``key`` with errno 2."""
        for conn in self._conns.get(key, ()):
            conn.end = (ERRNO_LOGGED_OUT, f"user has been logged out ({reason})")
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

    # -- handshake -----------------------------------------------------------

    def admit(self, target: str, headers: Iterable[tuple[bytes, bytes]]) -> ContextKey | Rejection:
        """Decide a handshake for ``target`` (path and query): its context, or a refusal."""
        self.handshakes += 1
        path, subids = feed_subids(target)
        if path != FEED_PATH:
            return Rejection(STATUS["not_found"], b"no such path")
        if self.refuse_remaining > 0:
            self.refuse_remaining -= 1
            return Rejection(STATUS["feed_refused"], b"feed unavailable (simulated)")
        subid = "" if subids is None else subids[0]
        if subids is not None and (len(subids) != 1 or not valid_subid(subid)):
            return Rejection(STATUS["feed_forbidden"], b"bad subid")
        key = self._state.feed_context(cookie_from_headers(headers), subid)
        if key is None:
            return Rejection(STATUS["feed_forbidden"], b"not logged in")
        return key

    # -- one connection ------------------------------------------------------

    async def serve_connection(
        self, ws: FeedSocket, key: ContextKey, stream: FaultStream | None
    ) -> None:
        """Run one accepted connection of context ``key`` until it ends."""
        conn = _Conn(key, stream)
        self._conns.setdefault(key, set()).add(conn)
        try:
            await self._run(ws, conn)
        except (FeedClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            conns = self._conns.get(key)
            if conns is not None:
                conns.discard(conn)
                if not conns:
                    del self._conns[key]
            if conn.dropped and conn.stream is not None:
                conn.stream.abort()

    async def _run(self, ws: FeedSocket, conn: _Conn) -> None:
        start: str | bytes | None = None
        with trio.move_on_after(START_TIMEOUT):
            start = await ws.get_message()
        if start is None or conn.dropped:
            return
        try:
            since, conn.excluded = parse_start(start)
        except BadStart as exc:
            await ws.send_message(error_frame(ERRNO_BAD_START, f"bad start frame: {exc}"))
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
    async def _drain_incoming(ws: FeedSocket, scope: trio.CancelScope) -> None:
        try:
            while True:
                await ws.get_message()
        except FeedClosed:
            scope.cancel()

    async def _stream(self, ws: FeedSocket, conn: _Conn) -> None:
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
