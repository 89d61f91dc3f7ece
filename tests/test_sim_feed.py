"""The simulator's live feed, over real loopback sockets (raw trio-websocket).

Every test runs twice: against the feed on the command port (``sim.url``,
a Starlette route under hypercorn) and on the feed's own port
(``sim.ws_url``, trio-websocket). Both must behave the same, faults included.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import trio
import trio.testing
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    open_websocket_url,
)

from pbxsession.sim import Simulator, open_simulator

API = "/api/api.whtm"
COOKIE = "Red60urne"
FORM = {"content-type": "application/x-www-form-urlencoded"}

CARRIER: ContextVar[str] = ContextVar("CARRIER", default="feed-port")


@pytest.fixture(autouse=True, params=["command-port", "feed-port"])
def carrier(request: pytest.FixtureRequest) -> Iterator[str]:
    """Which port the feed helpers below talk to, for this run of the test."""
    token = CARRIER.set(request.param)
    yield request.param
    CARRIER.reset(token)


def feed_base(sim: Simulator) -> str:
    """The feed's ws:// base URL on the port this run tests."""
    if CARRIER.get() == "command-port":
        return "ws" + sim.url.removeprefix("http")
    return sim.ws_url


async def command(client: httpx.AsyncClient, **fields: str) -> str:
    response = await client.post(API, content=urlencode(fields).encode(), headers=FORM)
    assert response.status_code == 200
    return response.text


async def login(client: httpx.AsyncClient, user: str = "alice", **extra: str) -> str:
    text = await command(client, cmd="login", sessionUser=user, sessionPass=f"{user}-pass", **extra)
    assert 'result="success"' in text
    return client.cookies[COOKIE]


@asynccontextmanager
async def feed(
    sim: Simulator, cookie: str | None, subid: str | None = None
) -> AsyncIterator[WebSocketConnection]:
    url = feed_base(sim) + "/api/feed" + (f"?subid={subid}" if subid is not None else "")
    headers = [(b"cookie", f"{COOKIE}={cookie}".encode())] if cookie else []
    async with open_websocket_url(url, extra_headers=headers) as ws:
        yield ws
    # trio-websocket 0.12's client never closes its socket when the server closed
    # the connection first (its aclose() returns early); close it here so the
    # warnings-as-errors run only ever reports the server's own leaks.
    await ws._stream.aclose()


async def start(ws: WebSocketConnection, since: int | None = None, **flags: bool) -> dict[str, Any]:
    frame = {
        "type": "start",
        "since": since,
        "device": True,
        "presence": True,
        "mailbox": True,
        "queue": True,
        **flags,
    }
    await ws.send_message(json.dumps(frame))
    return await receive(ws)


async def receive(ws: WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(5):
        data: dict[str, Any] = json.loads(await ws.get_message())
    return data


async def closed_without_error(ws: WebSocketConnection) -> int | None:
    """Read until the connection closes; fail on any error frame; return the close code."""
    with trio.fail_after(5):
        try:
            while True:
                frame = json.loads(await ws.get_message())
                assert frame["type"] != "error", frame
        except ConnectionClosed as exc:
            return exc.reason.code if exc.reason else None


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with open_simulator() as s:
        yield s


@pytest.fixture
async def small() -> AsyncIterator[Simulator]:
    """A simulator whose ring buffer keeps only 5 events."""
    async with open_simulator(ring_size=5) as s:
        yield s


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.url) as c:
        yield c


@pytest.fixture
async def small_client(small: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=small.url) as c:
        yield c


async def rejected_status(
    sim: Simulator, cookie: str | None, subid: str | None = None, path: str = "/api/feed"
) -> int:
    """Try a feed handshake with plain httpx and return the HTTP status it gets.

    (trio-websocket's client leaks its socket when a handshake is rejected, which
    warnings-as-errors would report; the handshake itself is plain HTTP.)
    """
    headers = {
        "connection": "Upgrade",
        "upgrade": "websocket",
        "sec-websocket-version": "13",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    if cookie:
        headers["cookie"] = f"{COOKIE}={cookie}"
    url = "http" + feed_base(sim).removeprefix("ws") + path
    params = {"subid": subid} if subid is not None else None
    async with httpx.AsyncClient() as http:
        response = await http.get(url, params=params, headers=headers)
    assert response.status_code != 101
    return response.status_code


async def test_handshake_refused_unless_logged_in(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    assert await rejected_status(sim, None) == 403
    assert await rejected_status(sim, "unknown") == 403
    await command(client, cmd="logout")
    cookie = client.cookies[COOKIE]
    assert await rejected_status(sim, cookie) == 403  # known cookie, not logged in
    await login(client)
    assert await rejected_status(sim, cookie, "other") == 403
    assert await rejected_status(sim, cookie, "bad!id") == 403
    assert await rejected_status(sim, cookie, "x&y") == 403
    assert await rejected_status(sim, cookie, path="/elsewhere") == 404
    async with feed(sim, cookie) as ws:
        assert await start(ws) == {"type": "ready", "seq": 0, "resumed": True}
    await login(client, "bob", subid="s1")
    async with feed(sim, cookie, "s1") as ws:
        assert (await start(ws))["type"] == "ready"


async def test_events_flow_and_subids_are_isolated(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    cookie = await login(client, "alice")
    await login(client, "bob", subid="b")
    async with feed(sim, cookie) as ws, feed(sim, cookie, "b") as wb:
        await start(ws)
        await start(wb)
        sim.emit("chat", {"text": "hi"}, login="alice")
        sim.emit("device", {"d": 1})
        assert await receive(ws) == {
            "type": "event",
            "seq": 1,
            "kind": "chat",
            "data": {"text": "hi"},
        }
        assert await receive(ws) == {"type": "event", "seq": 2, "kind": "device", "data": {"d": 1}}
        assert await receive(wb) == {"type": "event", "seq": 1, "kind": "device", "data": {"d": 1}}
        views = {c["subid"]: (c["seq"], c["feeds"]) for c in sim.contexts()}
        assert views == {"": (2, 1), "b": (1, 1)}


async def test_resume_and_gap_semantics(small: Simulator, small_client: httpx.AsyncClient) -> None:
    cookie = await login(small_client)
    for i in range(1, 11):
        small.emit("device", {"i": i})
    # ring_size=5: events 6..10 are kept
    async with feed(small, cookie) as ws:
        assert await start(ws, since=7) == {"type": "ready", "seq": 10, "resumed": True}
        assert [(await receive(ws))["seq"] for _ in range(3)] == [8, 9, 10]
    async with feed(small, cookie) as ws:
        assert await start(ws, since=5) == {"type": "ready", "seq": 10, "resumed": True}
        assert [(await receive(ws))["seq"] for _ in range(5)] == [6, 7, 8, 9, 10]
    async with feed(small, cookie) as ws:
        assert await start(ws, since=2) == {"type": "ready", "seq": 10, "resumed": False}
        assert [(await receive(ws))["data"]["i"] for _ in range(5)] == [6, 7, 8, 9, 10]
    async with feed(small, cookie) as ws:
        # numbering restarted: the client continues with the server's numbers
        assert await start(ws, since=99) == {"type": "ready", "seq": 10, "resumed": False}
        small.emit("call", {"id": "x", "state": "ringing"})
        assert (await receive(ws))["seq"] == 11
    async with feed(small, cookie) as ws:
        # a fresh start replays nothing
        assert await start(ws, since=None) == {"type": "ready", "seq": 11, "resumed": True}
        small.emit("chat", {})
        assert (await receive(ws))["seq"] == 12


async def test_filters(sim: Simulator, client: httpx.AsyncClient) -> None:
    cookie = await login(client)
    async with feed(sim, cookie) as ws:
        await start(ws, device=False, presence=False, mailbox=False, queue=True)
        for kind in ("device", "presence", "mailbox", "queue", "chat", "call"):
            sim.emit(kind, {"k": kind})
        got = [((f := await receive(ws))["seq"], f["kind"]) for _ in range(3)]
        assert got == [(4, "queue"), (5, "chat"), (6, "call")]


async def test_bad_start_frame_gets_errno_1(sim: Simulator, client: httpx.AsyncClient) -> None:
    cookie = await login(client)
    async with feed(sim, cookie) as ws:
        await ws.send_message('{"type": "start", "since": "yesterday"}')
        frame = await receive(ws)
        assert (frame["type"], frame["errno"]) == ("error", 1)


@pytest.mark.parametrize("how", ["logout", "expire", "other-user", "check-expiry"])
async def test_errno_2_when_the_context_stops_being_logged_in(how: str) -> None:
    now = [0.0]
    async with (
        open_simulator(clock=lambda: now[0], idle_timeout=60) as sim,
        httpx.AsyncClient(base_url=sim.url) as client,
    ):
        cookie = await login(client)
        async with feed(sim, cookie) as ws:
            await start(ws)
            if how == "logout":
                await command(client, cmd="logout")
            elif how == "expire":
                assert sim.expire(cookie=cookie) == 1
            elif how == "other-user":
                await login(client, "bob")
            else:
                now[0] += 61
                assert sim.check_expiry() == 1
            frame = await receive(ws)
            assert (frame["type"], frame["errno"]) == ("error", 2)
            with pytest.raises(ConnectionClosed):
                await receive(ws)


async def test_idle_expiry_on_trio_time_ends_the_feed() -> None:
    async with (
        open_simulator(idle_timeout=0.3) as sim,
        httpx.AsyncClient(base_url=sim.url) as client,
    ):
        cookie = await login(client)
        async with feed(sim, cookie) as ws:
            await start(ws)
            frame = await receive(ws)
            assert (frame["type"], frame["errno"]) == ("error", 2)


async def test_relogin_as_same_user_keeps_the_feed(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    cookie = await login(client)
    async with feed(sim, cookie) as ws:
        await start(ws)
        await login(client)
        await command(client, cmd="login", checkonly="1")
        sim.emit("chat", {"n": 1})
        assert (await receive(ws))["kind"] == "chat"


async def test_drop_feed_error_and_refuse(sim: Simulator, client: httpx.AsyncClient) -> None:
    cookie = await login(client)
    async with feed(sim, cookie) as ws:
        await start(ws)
        assert sim.drop_feeds() == 1
        assert await closed_without_error(ws) == 1006  # cut off: no closing handshake
    async with feed(sim, cookie) as ws:
        await start(ws)
        assert sim.feed_error(100, "upgraded") == 1
        assert await receive(ws) == {"type": "error", "errno": 100, "message": "upgraded"}
        with pytest.raises(ConnectionClosed):
            await receive(ws)
    sim.refuse_handshakes(2)
    assert await rejected_status(sim, cookie) == 503
    assert await rejected_status(sim, cookie) == 503
    async with feed(sim, cookie) as ws:
        assert (await start(ws))["type"] == "ready"
    assert sim.stats()["feed_handshakes"] == 5


async def test_freeze_stops_pongs_until_unfrozen(sim: Simulator, client: httpx.AsyncClient) -> None:
    cookie = await login(client)
    async with feed(sim, cookie) as ws:
        await start(ws)
        with trio.fail_after(2):
            await ws.ping(b"warm")
        sim.freeze_feeds()
        sim.emit("chat", {"n": 1})
        with trio.move_on_after(0.3) as scope:
            await ws.ping(b"frozen")
        assert scope.cancelled_caught, "a frozen feed must not answer pings"
        sim.unfreeze_feeds()
        with trio.fail_after(2):
            await ws.ping(b"thawed")
        assert (await receive(ws))["seq"] == 1  # what was held back goes out


async def test_falling_behind_the_ring_closes_without_error(
    small: Simulator, small_client: httpx.AsyncClient
) -> None:
    cookie = await login(small_client)
    async with feed(small, cookie) as ws:
        await start(ws)
        small.freeze_feeds()
        small.emit("device", {"i": 1})
        await trio.sleep(0.05)  # let the feed block on sending event 1
        for i in range(2, 12):
            small.emit("device", {"i": i})  # ring_size=5: 2..6 are lost
        small.unfreeze_feeds()
        assert (await receive(ws))["seq"] == 1
        assert await closed_without_error(ws) == 1000
    async with feed(small, cookie) as ws:
        assert await start(ws, since=1) == {"type": "ready", "seq": 11, "resumed": False}


async def test_restart_cuts_feeds_and_restarts_numbering(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    cookie = await login(client)
    sim.emit("chat", {})
    async with feed(sim, cookie) as ws:
        await start(ws)
        sim.restart()
        await closed_without_error(ws)
    assert await rejected_status(sim, cookie) == 403
    new_cookie = await login(client)
    assert new_cookie != cookie
    async with feed(sim, new_cookie) as ws:
        assert await start(ws, since=1) == {"type": "ready", "seq": 0, "resumed": False}


async def test_burst_and_event_generator() -> None:
    async with open_simulator(ring_size=100) as sim, httpx.AsyncClient(base_url=sim.url) as client:
        cookie = await login(client)
        async with feed(sim, cookie) as ws:
            await start(ws)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sim.emit_burst, 2000)
                seqs = [(await receive(ws))["seq"] for _ in range(2000)]
            assert seqs == list(range(1, 2001))
            sim.set_event_rate(500)
            kinds: set[str] = set()
            with trio.fail_after(5):
                while not {"device", "presence", "call"} <= kinds:
                    frame = await receive(ws)
                    kinds.add(frame["kind"])
            sim.set_event_rate(0)
            assert frame["seq"] > 2000


async def test_shutdown_with_live_frozen_feed_is_prompt() -> None:
    """Leaving open_simulator with a connected (even frozen) feed is quick and clean."""
    outcome: list[int | None] = []

    async def hold_feed(sim: Simulator, cookie: str, task_status: trio.TaskStatus[None]) -> None:
        async with feed(sim, cookie) as ws:
            await start(ws)
            task_status.started()
            outcome.append(await closed_without_error(ws))

    async with trio.open_nursery() as clients:
        start_time = trio.current_time()
        async with open_simulator() as sim, httpx.AsyncClient(base_url=sim.url) as client:
            cookie = await login(client)
            await clients.start(hold_feed, sim, cookie)
            sim.freeze_feeds()
        assert trio.current_time() - start_time < 3
    assert outcome == [1006]


async def test_default_clock_is_trio_time(autojump_clock: trio.testing.MockClock) -> None:
    """Under a MockClock, lockout and idle expiry follow virtual time."""
    async with (
        open_simulator(idle_timeout=600) as sim,
        httpx.AsyncClient(base_url=sim.url) as client,
    ):
        for _ in range(5):
            text = await command(client, cmd="login", sessionUser="alice", sessionPass="x")
            assert 'code="badauth"' in text
        text = await command(client, cmd="login", sessionUser="alice", sessionPass="alice-pass")
        assert 'code="locked"' in text
        await trio.sleep(61)
        cookie = await login(client)
        began = trio.current_time()
        async with feed(sim, cookie) as ws:
            await start(ws)
            with trio.fail_after(700):
                frame = json.loads(await ws.get_message())
            assert (frame["type"], frame["errno"]) == ("error", 2)
            assert trio.current_time() - began >= 600


@pytest.mark.parametrize("separate_feed_host", [False, True])
async def test_open_session_needs_no_ws_host(separate_feed_host: bool) -> None:
    # PROTOCOL.md: ws_host defaults to host, so sim.url alone must give a live feed;
    # sim.ws_url stays for a ws_host of its own. (Fails on main: 404 at sim.url.)
    import pbxsession

    async with open_simulator() as sim:
        ws_host = {"ws_host": sim.ws_url} if separate_feed_host else {}
        async with pbxsession.open_session(
            sim.url, store=pbxsession.MemoryStore(), **ws_host
        ) as session:
            await session.login("alice", "alice-pass")
            async with session.events() as events:
                sim.emit("chat", {"text": "hello"})
                with trio.fail_after(5):
                    async for item in events:
                        if isinstance(item, pbxsession.FeedEvent):
                            break
            assert item.kind == "chat"
            assert item.data == {"text": "hello"}
            assert sim.stats()["feed_handshakes"] == 1
