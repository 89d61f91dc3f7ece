"""The feed connection's inbox, on a real trio-websocket connection over loopback.

The server is a raw trio socket speaking WebSocket through wsproto, so that a
burst of frames goes out in one write, as a busy PBX's would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Message, Request

from pbxsession._ws_inbox import Inbox, install


class RawServer:
    """One WebSocket client at a time; the test says what to send."""

    def __init__(self) -> None:
        self.outgoing: trio.MemorySendChannel[list[str] | None]
        self._incoming: trio.MemoryReceiveChannel[list[str] | None]
        self.outgoing, self._incoming = trio.open_memory_channel(10)

    async def serve(self, stream: trio.SocketStream) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        while True:
            ws.receive_data(await stream.receive_some())
            if any(isinstance(event, Request) for event in ws.events()):
                break
        await stream.send_all(ws.send(AcceptConnection()))
        async for burst in self._incoming:
            if burst is None:  # close the connection
                await stream.send_all(ws.send(CloseConnection(code=1000)))
                return
            # Every frame of the burst in one write.
            await stream.send_all(b"".join(ws.send(Message(data=text)) for text in burst))


@asynccontextmanager
async def connected() -> AsyncIterator[tuple[RawServer, trio_websocket.WebSocketConnection]]:
    server = RawServer()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server.serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            with trio.fail_after(5):
                ws = await trio_websocket.wrap_client_stream(nursery, stream, "127.0.0.1", "/")
            yield server, ws
        finally:
            await trio.aclose_forcefully(stream)  # no close handshake: the server has left
            nursery.cancel_scope.cancel()


async def take(inbox: Inbox, count: int) -> tuple[list[str | bytes], int]:
    """``count`` messages as the feed task takes them, and how many waits that took."""
    taken: list[str | bytes] = []
    waits = 0
    while len(taken) < count:
        await inbox.wait()
        waits += 1
        assert inbox.messages or inbox.closed
        while inbox.messages:
            taken.append(inbox.messages.popleft())
    return taken, waits


async def test_a_burst_is_taken_in_one_wait() -> None:
    # With trio-websocket's own channel the reader hands over one message per
    # scheduler round, and the reading task is woken once per message.
    async with connected() as (server, ws):
        inbox = install(ws)
        burst = [f"event {i}" for i in range(40)]
        await server.outgoing.send(burst)
        with trio.fail_after(5):
            taken, waits = await take(inbox, len(burst))
        assert taken == burst
        assert waits == 1


async def test_messages_come_in_order_across_bursts() -> None:
    async with connected() as (server, ws):
        inbox = install(ws)
        expected: list[str | bytes] = []
        for round_number in range(5):
            burst = [f"{round_number}.{i}" for i in range(round_number + 1)]
            expected += burst
            await server.outgoing.send(burst)
        with trio.fail_after(5):
            taken, _ = await take(inbox, len(expected))
        assert taken == expected


async def test_get_message_reads_through_the_inbox_until_the_close() -> None:
    async with connected() as (server, ws):
        install(ws)
        await server.outgoing.send(["one", "two"])
        await server.outgoing.send(None)
        with trio.fail_after(5):
            assert await ws.get_message() == "one"
            assert await ws.get_message() == "two"
            with pytest.raises(trio_websocket.ConnectionClosed):
                await ws.get_message()


async def test_the_close_wakes_a_waiting_reader_after_what_came_before() -> None:
    async with connected() as (server, ws):
        inbox = install(ws)
        await server.outgoing.send(["last words"])
        await server.outgoing.send(None)
        with trio.fail_after(5):
            while not inbox.closed:
                await inbox.wait()
                if inbox.closed:
                    break
                await trio.testing.wait_all_tasks_blocked()
        assert list(inbox.messages) == ["last words"]
        with pytest.raises(trio.ClosedResourceError):
            await inbox.send("too late")


async def test_install_keeps_what_the_channel_already_held() -> None:
    async with connected() as (server, ws):
        await server.outgoing.send(["early"])
        with trio.fail_after(5):
            while ws._recv_channel.statistics().current_buffer_used == 0:
                await trio.testing.wait_all_tasks_blocked()
        inbox = install(ws)
        await server.outgoing.send(["later"])
        with trio.fail_after(5):
            taken, _ = await take(inbox, 2)
        assert taken == ["early", "later"]


async def test_a_cancelled_receive_takes_nothing() -> None:
    async with connected() as (server, ws):
        inbox = install(ws)
        await server.outgoing.send(["kept"])
        with trio.fail_after(5):
            await inbox.wait()
        with trio.CancelScope() as scope:
            scope.cancel()
            await inbox.receive()
        assert scope.cancelled_caught
        assert list(inbox.messages) == ["kept"]
        assert await inbox.receive() == "kept"
