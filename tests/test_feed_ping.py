"""The feed's keep-alive against a server that never answers a ping.

The server is a raw trio socket speaking WebSocket through wsproto (which,
unlike trio-websocket, leaves pongs to its user), so it can answer a ping
with an event and no pong. Logging in goes to the simulator; the feed goes
to this server.
"""

from __future__ import annotations

import json
from functools import partial

import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Message, Ping, Request

import pbxsession
from pbxsession import FeedDown, FeedEvent, FeedItem, FeedOptions, MemoryStore
from pbxsession.sim import Simulator

READY = json.dumps({"type": "ready", "seq": 0, "resumed": False})


def event(seq: int) -> str:
    return json.dumps({"type": "event", "seq": seq, "kind": "presence", "data": {"n": seq}})


async def answers_pings_with_an_event(stream: trio.SocketStream) -> None:
    ws = WSConnection(ConnectionType.SERVER)
    seq = 0
    while True:
        data = await stream.receive_some()
        if not data:
            return
        ws.receive_data(data)
        for item in ws.events():
            if isinstance(item, Request):
                await stream.send_all(ws.send(AcceptConnection()))
            elif isinstance(item, Message):  # the start frame
                await stream.send_all(ws.send(Message(data=READY)))
            elif isinstance(item, Ping):  # an event, and no pong
                seq += 1
                await stream.send_all(ws.send(Message(data=event(seq))))


async def test_what_arrives_while_a_ping_waits_is_delivered_before_the_outage(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    # The event comes while the feed waits for the pong that never comes;
    # when the wait ends the connection is dropped, but the event it holds
    # is delivered first, not lost with it.
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, answers_pings_with_an_event, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        async with pbxsession.open_session(
            sim.url,
            ws_host=f"ws://127.0.0.1:{port}",
            store=MemoryStore(),
            feed=FeedOptions(pingtime=10, pong_timeout=5),
        ) as session:
            events = session.events()
            await session.login("alice", "alice-pass")
            items: list[FeedItem] = []
            with trio.fail_after(60):
                while not any(isinstance(item, FeedDown) for item in items):
                    items.append(await events.receive())
            delivered = [item for item in items if isinstance(item, FeedEvent)]
            assert [item.seq for item in delivered] == [1]
            assert items[-1] == FeedDown(92, "no pong in time")
        nursery.cancel_scope.cancel()
