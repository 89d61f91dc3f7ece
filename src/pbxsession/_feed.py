"""The live feed task: the socket loop around :mod:`._feed_policy`.

One :class:`FeedRunner` per login. The session starts it with
``nursery.start(runner.run)``; it reports ready once the PBX's ``ready``
frame arrived (or the first attempt failed and retrying goes on in the
background), so ``login`` returns with the feed running. It publishes
events, gaps and the outage items (``FeedDown``/``FeedUp``) through the hub;
``run`` *returns* its ending (``FeedStopped``/``SessionLost``) without
publishing it: the session publishes it after its own transition. Every
decision (resume, duplicates, gaps, retry or stop) is the policy's.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import urlsplit

import trio
import trio_websocket

from . import _feed_policy as policy_
from . import _wire as wire
from ._errors import ProtocolError
from ._fanout import FeedHub
from ._feed_policy import BackoffPolicy, Failure, FeedEnding, FeedPolicy, FullJitterBackoff, Stop
from ._models import FeedEvent, FeedOptions, FeedStopped
from ._nursery import leaves
from ._tls import tls_failure
from ._ws_inbox import Inbox, install

__all__ = ["BackoffPolicy", "FeedRunner", "FeedStatistics", "FullJitterBackoff"]

log = logging.getLogger("pbxsession.feed")


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
    """One connection (or attempt) ended with ``failure``."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class FeedRunner:
    """Runs the feed of one login until stopped, lost or out of retries."""

    __slots__ = (
        "_cancel_scope",
        "_cookie_header",
        "_finished",
        "_hub",
        "_on_event",
        "_options",
        "_policy",
        "_running",
        "_ssl_context",
        "_url",
    )

    def __init__(
        self,
        *,
        hub: FeedHub,
        options: FeedOptions,
        url: str,
        cookie_header: Callable[[], Awaitable[str | None]],
        on_event: Callable[[FeedEvent], None] | None = None,
        backoff: BackoffPolicy | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._hub = hub
        self._options = options
        self._url = url
        self._cookie_header = cookie_header
        self._on_event = on_event
        self._ssl_context = ssl_context
        self._policy = FeedPolicy(
            max_retry_time=options.max_ws_retry_time, backoff=backoff or FullJitterBackoff()
        )
        self._cancel_scope = trio.CancelScope()
        self._finished = trio.Event()
        self._running = False

    def statistics(self) -> FeedStatistics:
        """The feed's figures now."""
        policy = self._policy
        return FeedStatistics(
            connected=policy.up_since is not None,
            connected_since=policy.up_since,
            reconnects=policy.reconnects,
            events_received=policy.events,
            last_seq=policy.last_seq,
            gaps=policy.gaps,
        )

    async def stop(self) -> None:
        """Stop the feed and wait until :meth:`run` has returned (if it ever started)."""
        self._cancel_scope.cancel()
        if self._running:
            await self._finished.wait()

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> FeedEnding | None:
        """The feed task: its ending, or ``None`` when stopped. Never raises.

        The ending is not published here: the session makes its transition
        first, then publishes it, so that a consumer who sees ``SessionLost``
        already reads the new state.
        """
        self._hub.feed_started()
        self._running = True
        started = False

        def report_started() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        ending: FeedEnding | None = None
        try:
            with self._cancel_scope:
                ending = await self._run(report_started)
        except Exception as exc:  # a bug must not tear down the session's nursery
            log.exception("feed task failed")
            ending = FeedStopped(f"internal error: {exc!r}")
        finally:
            self._policy.up_since = None
            self._finished.set()
            report_started()
        return ending

    async def _run(self, report_started: Callable[[], None]) -> FeedEnding:
        policy = self._policy
        while True:
            try:
                await self._connection(report_started)
            except _Disconnected as exc:
                decision = policy.on_failure(exc.failure, trio.current_time())
            if isinstance(decision, Stop):
                if isinstance(decision.ending, FeedStopped):
                    log.warning("live feed stopped: %s", decision.ending.reason)
                return decision.ending
            if decision.down is not None:
                # The text, not the exception: a handler that keeps records
                # (pytest, MemoryHandler) would keep its traceback's frames.
                down = decision.down
                log.warning("live feed lost (errno %d): %s; reconnecting", down.errno, down.reason)
                self._hub.publish(down)
            report_started()
            await trio.sleep(decision.delay)

    async def _connection(self, report_started: Callable[[], None]) -> NoReturn:
        """One connection, from the handshake to its end (always ``_Disconnected``)."""
        deadline = trio.current_time() + self._options.handshake_timeout
        cookie = await self._cookie_header()
        async with _open_feed(self._url, cookie, deadline, self._ssl_context) as (ws, inbox):
            ready = await self._start(ws, deadline)
            started = self._policy.on_ready(ready.seq, ready.resumed, trio.current_time())
            if started.gap is not None:
                self._hub.publish(started.gap)
            if started.up is not None:
                log.info("live feed is back")
                self._hub.publish(started.up)
            report_started()
            await self._pump(ws, inbox)
        raise AssertionError("unreachable: _pump ends only by raising")  # pragma: no cover

    async def _start(
        self, ws: trio_websocket.WebSocketConnection, deadline: float
    ) -> wire.ReadyFrame:
        options = self._options
        frame = wire.start_frame(
            self._policy.since(),
            device=options.device,
            presence=options.presence,
            mailbox=options.mailbox,
            queue=options.queue,
        )
        with trio.move_on_at(deadline) as scope:
            await _send(ws, frame)
            ready = await _receive(ws)
        if scope.cancelled_caught:
            raise _Disconnected(policy_.NO_READY)
        if isinstance(ready, wire.ErrorFrame):
            raise _Disconnected(Failure(ready.errno, ready.message))
        if not isinstance(ready, wire.ReadyFrame):
            raise _Disconnected(policy_.NOT_READY_FIRST)
        return ready

    async def _pump(self, ws: trio_websocket.WebSocketConnection, inbox: Inbox) -> NoReturn:
        # Reading and keep-alive in this one task (no nursery, no second
        # task per session): read for ``pingtime``, then ping and wait for
        # the pong. Meanwhile the inbox keeps what arrives; it is read next,
        # and before the connection is dropped for a missing pong, so that
        # nothing that came in is lost with it. One cancel scope per ping
        # period, none per message.
        options = self._options
        while True:
            with trio.move_on_after(options.pingtime):
                await self._read(inbox)
            with trio.move_on_after(options.pong_timeout) as waiting:
                try:
                    await ws.ping()
                except trio_websocket.ConnectionClosed:
                    continue  # the inbox holds the close: the next read reports it
            if waiting.cancelled_caught:
                with trio.CancelScope() as draining:
                    draining.cancel()  # ``_read`` stops at its first wait
                    await self._read(inbox)
                raise _Disconnected(policy_.NO_PONG)

    async def _read(self, inbox: Inbox) -> NoReturn:
        # The feed's hot loop: ``_receive`` and ``FeedPolicy.accept`` inlined,
        # lookups bound once. Keep them in step. It takes every message the
        # inbox holds per wake-up; the inbox fills only while this task waits.
        messages = inbox.messages
        parse = wire.parse_feed_frame
        publish = self._hub.deliver
        on_event = self._on_event
        policy = self._policy
        while True:
            if not messages:
                await inbox.wait()
                if not messages:
                    raise _Disconnected(policy_.CLOSED)
            message = messages.popleft()
            try:
                frame = parse(message)  # type: ignore[arg-type]  # bytes: ProtocolError
            except ProtocolError as exc:
                raise _Disconnected(Failure.off_protocol(str(exc))) from exc
            if isinstance(frame, FeedEvent):
                seq = frame.seq
                position = policy.position
                if position is not None and seq <= position:
                    continue  # already delivered before a reconnect
                policy.position = policy.last_seq = seq
                policy.events += 1
                if on_event is not None:
                    on_event(frame)
                publish(frame)
            elif isinstance(frame, wire.ErrorFrame):
                raise _Disconnected(Failure(frame.errno, frame.message))
            else:
                raise _Disconnected(policy_.UNEXPECTED_READY)


async def _send(ws: trio_websocket.WebSocketConnection, text: str) -> None:
    try:
        await ws.send_message(text)
    except trio_websocket.ConnectionClosed as exc:
        raise _Disconnected(policy_.CLOSED) from exc


async def _receive(
    ws: trio_websocket.WebSocketConnection,
) -> wire.ReadyFrame | FeedEvent | wire.ErrorFrame:
    # FeedRunner._read has this inlined: keep the two in step.
    try:
        message = await ws.get_message()
    except trio_websocket.ConnectionClosed as exc:
        raise _Disconnected(policy_.CLOSED) from exc
    try:
        return wire.parse_feed_frame(message)  # type: ignore[arg-type]  # bytes: ProtocolError
    except ProtocolError as exc:
        raise _Disconnected(Failure.off_protocol(str(exc))) from exc


@asynccontextmanager
async def _open_feed(
    url: str,
    cookie_header: str | None,
    deadline: float,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[tuple[trio_websocket.WebSocketConnection, Inbox]]:
    """One feed connection whose socket this module owns, and its :class:`Inbox`.

    Built on ``wrap_client_stream`` rather than ``open_websocket_url``: in
    trio-websocket 0.12 the latter leaves the socket open when the handshake
    is refused or times out, or when the peer cut the connection off first,
    and may replace the body's exception with a closing failure. Here the
    socket is always closed on the way out, handshake failures become feed
    failures (``Failure.handshake_refused``: 403 is errno 2, 404 and the
    rest errno 91; a TLS failure stops the feed), and the body's own
    exception leaves unwrapped.
    """
    target = _Target.of(url)
    headers = [] if cookie_header is None else [(b"Cookie", cookie_header.encode("latin-1"))]
    stream: trio.abc.Stream | None = None
    # The body's own exception, raised again unwrapped. Its traceback holds
    # this frame, so the list is emptied on the way out: a local still holding
    # it would be a reference cycle, and the closed session's objects would
    # wait for the cyclic GC. (Raised outside the handler for the same reason:
    # there it would take the group as context, whose traceback holds trio's
    # frame that holds the error.)
    body_errors: list[BaseException] = []
    try:
        try:
            async with trio.open_nursery() as nursery:
                with trio.move_on_at(deadline) as timeout:
                    stream = await _connect(target, ssl_context)
                    ws = await trio_websocket.wrap_client_stream(
                        nursery, stream, target.host_header, target.resource, extra_headers=headers
                    )
                if timeout.cancelled_caught:
                    raise _Disconnected(policy_.HANDSHAKE_TIMEOUT)
                try:
                    yield ws, install(ws)
                except BaseException as exc:
                    body_errors.append(exc)
                    raise
                finally:
                    nursery.cancel_scope.cancel()  # ends the reader task; the socket closes below
        except BaseExceptionGroup as group:
            if not body_errors:
                raise _handshake_failure(group, url) from None
        if body_errors:
            raise body_errors[0] from body_errors[0].__cause__
    finally:
        body_errors.clear()
        if stream is not None:
            await trio.aclose_forcefully(stream)


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a feed URL points: the socket's end and the HTTP request's."""

    secure: bool
    host: str
    port: int
    host_header: str
    resource: str

    @classmethod
    def of(cls, url: str) -> _Target:
        parts = urlsplit(url)
        secure = parts.scheme == "wss"
        host = parts.hostname or ""
        port = parts.port or (443 if secure else 80)
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if parts.port is None else f"{shown}:{port}"
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(secure, host, port, host_header, resource)


async def _connect(
    target: _Target, ssl_context: ssl.SSLContext | None
) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    """The feed's socket, its TLS handshake done (closed again if that fails)."""
    if not target.secure:
        return await trio.open_tcp_stream(target.host, target.port)
    stream = await trio.open_ssl_over_tcp_stream(
        target.host,
        target.port,
        ssl_context=ssl_context or ssl.create_default_context(),
        https_compatible=True,
    )
    try:
        # Here, not in trio-websocket's reader task: there a refused
        # certificate only shows as a handshake timeout, much later.
        await stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


def _handshake_failure(group: BaseExceptionGroup[BaseException], url: str) -> BaseException:
    """The one exception that stands for a failed handshake (its nursery's group)."""
    found = list(leaves(group))
    for exc in found:
        if isinstance(exc, trio_websocket.ConnectionRejected):
            return _Disconnected(Failure.handshake_refused(exc.status_code or 0, url))
    for exc in found:
        if isinstance(exc, _Disconnected | trio.Cancelled) or not isinstance(exc, Exception):
            return exc
    for exc in found:
        tls = tls_failure(exc, url)
        if tls is not None:  # one line that says why; never retried
            return _Disconnected(Failure(wire.ERRNO_OPEN_FAILED, str(tls), tls=True))
    return _Disconnected(Failure(wire.ERRNO_OPEN_FAILED, f"cannot open the feed: {found[0]!r}"))
