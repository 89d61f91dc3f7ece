"""The live feed task: connect, start, keep alive, resume, back off, stop.

One :class:`FeedRunner` per login. The session starts it with
``nursery.start(runner.run)``; it reports ready once the PBX's ``ready``
frame arrived (or the first attempt failed and retrying goes on in the
background), so ``login`` returns with the feed running. It never raises:
every ending is published as a feed item, and a lost session is reported to
the session through ``on_session_lost`` (a synchronous callback).

Delivery is exactly-once and in order across reconnects: the runner resumes
with ``since`` = the last sequence number it delivered and drops any event
it has already delivered. Only a ``ready`` with ``resumed: false`` means
loss, published as ``FeedGap(reason="server")``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import trio
import trio_websocket

from . import _wire as wire
from ._errors import ProtocolError
from ._fanout import FeedHub
from ._models import FeedEvent, FeedGap, FeedOptions, FeedStopped, SessionLost

__all__ = ["BackoffPolicy", "FeedRunner", "FeedStatistics", "FullJitterBackoff"]

log = logging.getLogger("pbxsession.feed")


class BackoffPolicy(Protocol):
    """How long to wait before reconnect attempt number ``attempt`` (0-based)."""

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt`` of the current outage."""
        ...

    @property
    def reset_after(self) -> float:
        """Seconds a connection must stay up before the attempt count resets."""
        ...


@dataclass(frozen=True, slots=True)
class FullJitterBackoff:
    """Full-jitter exponential backoff: uniform(0, min(cap, base * 2**attempt)).

    The attempt count starts again once a connection stayed up ``reset_after``
    seconds.
    """

    base: float = 0.5
    cap: float = 30.0
    reset_after: float = 60.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt``."""
        return random.uniform(0, min(self.cap, self.base * 2 ** min(attempt, 30)))


@dataclass(frozen=True, slots=True)
class FeedStatistics:
    """Feed figures: ``connected_since`` is in ``trio.current_time()`` seconds."""

    connected: bool
    connected_since: float | None
    reconnects: int
    events_received: int
    last_seq: int | None
    gaps: int


class _Disconnected(Exception):
    """One connection ended; ``errno`` says how (PROTOCOL.md's numbers)."""

    def __init__(self, errno: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno
        self.message = message


class FeedRunner:
    """Runs the feed of one login until stopped, lost or out of retries."""

    def __init__(
        self,
        *,
        hub: FeedHub,
        options: FeedOptions,
        url: str,
        cookie_header: Callable[[], Awaitable[str | None]],
        on_session_lost: Callable[[str], None],
        on_event: Callable[[FeedEvent], None] | None = None,
        backoff: BackoffPolicy | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self._hub = hub
        self._options = options
        self._url = url
        self._cookie_header = cookie_header
        self._on_session_lost = on_session_lost
        self._on_event = on_event
        self._backoff: BackoffPolicy = backoff or FullJitterBackoff()
        self._connect_timeout = connect_timeout
        self._cancel_scope = trio.CancelScope()
        self._finished = trio.Event()
        self._connected_since: float | None = None
        self._reconnects = 0
        self._events = 0
        self._last_seq: int | None = None
        self._gaps = 0
        self._outage_logged = False

    def statistics(self) -> FeedStatistics:
        """The feed's figures now."""
        return FeedStatistics(
            connected=self._connected_since is not None,
            connected_since=self._connected_since,
            reconnects=self._reconnects,
            events_received=self._events,
            last_seq=self._last_seq,
            gaps=self._gaps,
        )

    async def stop(self) -> None:
        """Stop the feed and wait until its task has finished."""
        self._cancel_scope.cancel()
        await self._finished.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The feed task. Never raises; every ending is published."""
        started = False

        def report_started() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        try:
            with self._cancel_scope:
                await self._run(report_started)
        except Exception as exc:  # a bug must not tear down the session's nursery
            log.exception("feed task failed")
            self._hub.publish(FeedStopped(f"internal error: {exc!r}"))
        finally:
            self._connected_since = None
            self._finished.set()
            report_started()

    async def _run(self, report_started: Callable[[], None]) -> None:
        attempt = 0
        outage_started: float | None = None
        while True:
            up_since: float | None = None
            try:
                async with _Connection(
                    self._url, await self._cookie_header(), self._connect_timeout
                ) as ws:
                    await self._start(ws)
                    up_since = trio.current_time()
                    self._connected_since = up_since
                    if self._outage_logged:
                        log.info("live feed is back")
                        self._outage_logged = False
                    report_started()
                    await self._pump(ws)
            except _Disconnected as exc:
                self._connected_since = None
                reaction = wire.feed_reaction(exc.errno)
                if reaction is wire.FeedReaction.SESSION_LOST:
                    self._hub.publish(SessionLost(exc.message or "logged out by the PBX"))
                    self._on_session_lost(exc.message)
                    return
                if reaction is wire.FeedReaction.FATAL:
                    self._hub.publish(FeedStopped(exc.message or "PBX version changed", exc.errno))
                    log.warning("live feed stopped for good: errno %d", exc.errno)
                    return
                now = trio.current_time()
                if up_since is not None:
                    # A connection that was up starts a new outage; one that
                    # stayed up long enough also starts the backoff afresh.
                    outage_started = now
                    if now - up_since >= self._backoff.reset_after:
                        attempt = 0
                elif outage_started is None:
                    outage_started = now
                if not self._outage_logged:
                    log.warning("live feed lost (errno %d): %s; reconnecting", exc.errno, exc)
                    self._outage_logged = True
                limit = self._options.max_ws_retry_time
                elapsed = now - outage_started
                if limit is not None and elapsed >= limit:
                    self._hub.publish(
                        FeedStopped(f"gave up reconnecting after {elapsed:.1f}s", exc.errno)
                    )
                    log.warning("live feed stopped: retry time of %ss used up", limit)
                    return
                report_started()
                delay = self._backoff.delay(attempt)
                if limit is not None:
                    delay = min(delay, limit - elapsed)
                attempt += 1
                self._reconnects += 1
                await trio.sleep(delay)

    async def _start(self, ws: trio_websocket.WebSocketConnection) -> None:
        options = self._options
        frame = wire.start_frame(
            self._last_seq,
            device=options.device,
            presence=options.presence,
            mailbox=options.mailbox,
            queue=options.queue,
        )
        with trio.move_on_after(self._connect_timeout) as scope:
            await _send(ws, frame)
            ready = await _receive(ws)
        if scope.cancelled_caught:
            raise _Disconnected(wire.ERRNO_OPEN_FAILED, "no ready frame in time")
        if isinstance(ready, wire.ErrorFrame):
            raise _Disconnected(ready.errno, ready.message)
        if not isinstance(ready, wire.ReadyFrame):
            raise _Disconnected(wire.ERRNO_CONNECTION_FAILED, "feed did not start with ready")
        if not ready.resumed and self._last_seq is not None:
            self._gaps += 1
            self._hub.publish(FeedGap("server", after_seq=self._last_seq, resumed_at=ready.seq))
            if ready.seq < self._last_seq:
                # The PBX's numbering restarted: continue with its numbers.
                self._last_seq = 0

    async def _pump(self, ws: trio_websocket.WebSocketConnection) -> None:
        # Reading and keep-alive run side by side (the pong is processed by
        # the reader); each catches its own ending so that no exception group
        # leaves this nursery.
        ending: _Disconnected | None = None

        async with trio.open_nursery() as nursery:

            async def read() -> None:
                nonlocal ending
                try:
                    await self._read(ws)
                except _Disconnected as exc:
                    ending = exc
                nursery.cancel_scope.cancel()

            async def keep_alive() -> None:
                nonlocal ending
                await self._keep_alive(ws)
                ending = _Disconnected(wire.ERRNO_CONNECTION_FAILED, "no pong in time")
                nursery.cancel_scope.cancel()

            nursery.start_soon(read)
            nursery.start_soon(keep_alive)
        if ending is not None:
            raise ending

    async def _read(self, ws: trio_websocket.WebSocketConnection) -> None:
        while True:
            frame = await _receive(ws)
            if isinstance(frame, FeedEvent):
                if self._last_seq is not None and frame.seq <= self._last_seq:
                    continue  # already delivered before a reconnect
                self._last_seq = frame.seq
                self._events += 1
                if self._on_event is not None:
                    self._on_event(frame)
                self._hub.publish(frame)
            elif isinstance(frame, wire.ErrorFrame):
                raise _Disconnected(frame.errno, frame.message)
            else:
                raise _Disconnected(wire.ERRNO_CONNECTION_FAILED, "unexpected ready frame")

    async def _keep_alive(self, ws: trio_websocket.WebSocketConnection) -> None:
        """Return when a ping went unanswered for ``pong_timeout`` seconds."""
        while True:
            await trio.sleep(self._options.pingtime)
            with trio.move_on_after(self._options.pong_timeout):
                try:
                    await ws.ping()
                except trio_websocket.ConnectionClosed:
                    await trio.sleep_forever()  # the reader reports the close
                continue
            return


async def _send(ws: trio_websocket.WebSocketConnection, text: str) -> None:
    try:
        await ws.send_message(text)
    except trio_websocket.ConnectionClosed as exc:
        raise _Disconnected(wire.ERRNO_CONNECTION_FAILED, "feed closed") from exc


async def _receive(
    ws: trio_websocket.WebSocketConnection,
) -> wire.ReadyFrame | FeedEvent | wire.ErrorFrame:
    try:
        message = await ws.get_message()
    except trio_websocket.ConnectionClosed as exc:
        raise _Disconnected(wire.ERRNO_CONNECTION_FAILED, "feed closed without error") from exc
    try:
        return wire.parse_feed_frame(message)
    except ProtocolError as exc:
        raise _Disconnected(wire.ERRNO_CONNECTION_FAILED, str(exc)) from exc


class _Connection:
    """``open_websocket_url`` with handshake failures mapped to feed errnos."""

    def __init__(self, url: str, cookie_header: str | None, connect_timeout: float) -> None:
        headers = [] if cookie_header is None else [(b"Cookie", cookie_header.encode("latin-1"))]
        self._cm = trio_websocket.open_websocket_url(
            url,
            extra_headers=headers,
            connect_timeout=connect_timeout,
            disconnect_timeout=1.0,
        )

    async def __aenter__(self) -> trio_websocket.WebSocketConnection:
        try:
            return await self._cm.__aenter__()
        except trio_websocket.ConnectionRejected as exc:
            if exc.status_code == 403:
                raise _Disconnected(2, "the PBX refused the feed: not logged in") from exc
            raise _Disconnected(
                wire.ERRNO_OPEN_FAILED, f"feed handshake refused: HTTP {exc.status_code}"
            ) from exc
        except (trio_websocket.HandshakeError, OSError, trio.TooSlowError) as exc:
            raise _Disconnected(wire.ERRNO_OPEN_FAILED, f"cannot open the feed: {exc}") from exc

    async def __aexit__(self, *exc_info: object) -> bool:
        try:
            return bool(await self._cm.__aexit__(*exc_info))  # type: ignore[arg-type]
        except trio_websocket.ConnectionClosed as exc:
            raise _Disconnected(wire.ERRNO_CONNECTION_FAILED, "feed closed") from exc
