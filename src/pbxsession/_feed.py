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
import math
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import trio
import trio_websocket

from . import _wire as wire
from ._errors import InvalidArgumentError, ProtocolError
from ._fanout import FeedHub
from ._models import FeedEvent, FeedGap, FeedOptions, FeedStopped, SessionLost
from ._nursery import leaves

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

    def __post_init__(self) -> None:
        for name in ("base", "cap", "reset_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidArgumentError(f"{name} must be a number of seconds")
            if not value > 0 or math.isinf(value):
                raise InvalidArgumentError(f"{name} must be a positive, finite number of seconds")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt``."""
        return random.uniform(0, min(self.cap, self.base * 2 ** min(attempt, 30)))


@dataclass(frozen=True, slots=True)
class FeedStatistics:
    """Feed figures of one login.

    ``connected_since`` is when the current connection started, in
    ``trio.current_time()`` seconds (``None`` while disconnected);
    ``reconnects`` counts connections made again after the first one (failed
    attempts are not counted); ``events_received`` counts events delivered
    (duplicates from a resume are not); ``last_seq`` is the newest delivered
    event's number; ``gaps`` counts ``FeedGap(reason="server")``.
    """

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
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._hub = hub
        self._options = options
        self._url = url
        self._cookie_header = cookie_header
        self._on_session_lost = on_session_lost
        self._on_event = on_event
        self._backoff: BackoffPolicy = backoff or FullJitterBackoff()
        self._connect_timeout = connect_timeout
        self._ssl_context = ssl_context
        self._cancel_scope = trio.CancelScope()
        self._finished = trio.Event()
        self._running = False
        self._session_lost = False
        self._connected_since: float | None = None
        self._reconnects = 0
        self._ever_connected = False
        self._events = 0
        self._last_seq: int | None = None
        # Where the feed stands: the newest sequence number delivered or, before
        # any event, the PBX's newest at the first ``ready``. Resume from here.
        self._position: int | None = None
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

    @property
    def session_lost(self) -> bool:
        """Whether this feed has published ``SessionLost`` (errno 2 or a 403)."""
        return self._session_lost

    async def stop(self) -> None:
        """Stop the feed and wait until its task has finished (if it ever started)."""
        self._cancel_scope.cancel()
        if self._running:
            await self._finished.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The feed task. Never raises; every ending is published."""
        self._running = True
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
                async with _open_feed(
                    self._url,
                    await self._cookie_header(),
                    self._connect_timeout,
                    self._ssl_context,
                ) as ws:
                    await self._start(ws)
                    up_since = trio.current_time()
                    if self._ever_connected:
                        self._reconnects += 1
                    self._ever_connected = True
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
                    self._session_lost = True
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
                    # The text, not the exception: a handler that keeps records
                    # (pytest, MemoryHandler) would keep its traceback's frames.
                    log.warning(
                        "live feed lost (errno %d): %s; reconnecting", exc.errno, exc.message
                    )
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
                await trio.sleep(delay)

    async def _start(self, ws: trio_websocket.WebSocketConnection) -> None:
        options = self._options
        frame = wire.start_frame(
            self._position,
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
        position = self._position
        if position is None:
            # A fresh start: only what comes after the PBX's newest event. Later
            # reconnects resume from here even before any event arrived.
            self._position = ready.seq
        elif not ready.resumed:
            self._gaps += 1
            self._hub.publish(FeedGap("server", after_seq=position, resumed_at=ready.seq))
            if ready.seq < position:
                # The PBX's numbering restarted: continue with its numbers.
                self._position = ready.seq

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
        # The feed's hot loop: ``_receive`` inlined and lookups bound once.
        get_message = ws.get_message
        parse = wire.parse_feed_frame
        publish = self._hub.publish
        on_event = self._on_event
        while True:
            try:
                message = await get_message()
            except trio_websocket.ConnectionClosed as exc:
                raise _Disconnected(
                    wire.ERRNO_CONNECTION_FAILED, "feed closed without error"
                ) from exc
            try:
                frame = parse(message)
            except ProtocolError as exc:
                raise _Disconnected(wire.ERRNO_CONNECTION_FAILED, str(exc)) from exc
            if isinstance(frame, FeedEvent):
                seq = frame.seq
                position = self._position
                if position is not None and seq <= position:
                    continue  # already delivered before a reconnect
                self._position = self._last_seq = seq
                self._events += 1
                if on_event is not None:
                    on_event(frame)
                publish(frame)
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
    # FeedRunner._read has this inlined: keep the two in step.
    try:
        message = await ws.get_message()
    except trio_websocket.ConnectionClosed as exc:
        raise _Disconnected(wire.ERRNO_CONNECTION_FAILED, "feed closed without error") from exc
    try:
        return wire.parse_feed_frame(message)
    except ProtocolError as exc:
        raise _Disconnected(wire.ERRNO_CONNECTION_FAILED, str(exc)) from exc


@asynccontextmanager
async def _open_feed(
    url: str,
    cookie_header: str | None,
    connect_timeout: float,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """One feed connection whose socket this module owns.

    Built on ``wrap_client_stream`` rather than ``open_websocket_url``: in
    trio-websocket 0.12 the latter leaves the socket open when the handshake
    is refused or times out, or when the peer cut the connection off first,
    and may replace the body's exception with a closing failure. Here the
    socket is always closed on the way out, handshake failures become feed
    errnos (403 is errno 2), and the body's own exception leaves unwrapped.
    """
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    host_header = host if parts.port is None else f"{host}:{port}"
    if ":" in host:
        host_header = f"[{host}]" if parts.port is None else f"[{host}]:{port}"
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = [] if cookie_header is None else [(b"Cookie", cookie_header.encode("latin-1"))]
    stream: trio.abc.Stream | None = None
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            with trio.move_on_after(connect_timeout) as timeout:
                if secure:
                    stream = await trio.open_ssl_over_tcp_stream(
                        host,
                        port,
                        ssl_context=ssl_context or ssl.create_default_context(),
                        https_compatible=True,
                    )
                else:
                    stream = await trio.open_tcp_stream(host, port)
                ws = await trio_websocket.wrap_client_stream(
                    nursery, stream, host_header, resource, extra_headers=headers
                )
            if timeout.cancelled_caught:
                raise _Disconnected(wire.ERRNO_OPEN_FAILED, "feed handshake timed out")
            try:
                yield ws
            except BaseException as exc:
                body_error = exc
                raise
            finally:
                nursery.cancel_scope.cancel()  # ends the reader task; the socket is closed below
    except BaseExceptionGroup as group:
        if body_error is not None:
            raise body_error from body_error.__cause__
        raise _handshake_failure(group) from None
    finally:
        if stream is not None:
            await trio.aclose_forcefully(stream)


def _handshake_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception that stands for a failed handshake (its nursery's group)."""
    found = list(leaves(group))
    for exc in found:
        if isinstance(exc, trio_websocket.ConnectionRejected):
            if exc.status_code == 403:
                return _Disconnected(2, "the PBX refused the feed: not logged in")
            return _Disconnected(
                wire.ERRNO_OPEN_FAILED, f"feed handshake refused: HTTP {exc.status_code}"
            )
    for exc in found:
        if isinstance(exc, _Disconnected | trio.Cancelled) or not isinstance(exc, Exception):
            return exc
    return _Disconnected(wire.ERRNO_OPEN_FAILED, f"cannot open the feed: {found[0]!r}")
