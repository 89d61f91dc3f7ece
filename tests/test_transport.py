"""The command transport against hostile servers on loopback.

Deadlines (issue 15 point 1): a reply trickled at one byte per second, a body
that never ends (chunked or close-delimited), endless 1xx responses, a server
that never answers: each ends in ``PbxTimeoutError`` at the attempt's deadline,
and a retried operation at the operation's. Decompression bombs (point 2):
refused with ``ProtocolError`` before they cost memory. The client's own
cookie jar is never used, and a caller's client is never closed.
"""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import AsyncIterator

import httpx
import pytest
import trio
import trio.testing
from hostile import (
    Behaviour,
    MiB,
    Request,
    bomb,
    endless_chunked,
    endless_close_delimited,
    endless_informational,
    gzip_of,
    gzip_zeros,
    head,
    never_answer,
    replying,
    serve_hostile,
    trickle,
)

import pbxsession
from pbxsession import PbxTimeoutError, PbxUnavailableError, ProtocolError, State
from pbxsession import _wire as wire
from pbxsession._timeouts import Timeout
from pbxsession._tls import trust_context
from pbxsession._transport import CommandTransport, new_http_client

LOGOUT_OK = b'<?xml version="1.0"?><response result="success" cmd="logout"/>'


class Slot:
    """A cookie slot in memory, compare-and-set like the stores'."""

    def __init__(self, cookie: str | None = None) -> None:
        self.cookie = cookie
        self.puts: list[tuple[str | None, str | None]] = []

    async def get(self) -> str | None:
        return self.cookie

    async def put(self, cookie: str | None, *, replacing: str | None) -> str | None:
        self.puts.append((cookie, replacing))
        if self.cookie == replacing:
            self.cookie = cookie
        return self.cookie


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with new_http_client(trust_context(True)) as http:
        yield http


# ------------------------------------------------------------------ deadlines

STALLS = [never_answer, trickle, endless_chunked, endless_close_delimited, endless_informational]


@pytest.mark.parametrize("behaviour", STALLS, ids=lambda b: b.__name__)
async def test_login_ends_at_the_command_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, behaviour: Behaviour
) -> None:
    # Fails on main: each read gets a byte within request_timeout, so login hangs.
    server = await serve_hostile(nursery, behaviour)
    store = pbxsession.MemoryStore()
    # A cookie already proven (its context seen logged in): the password login
    # is the only request.
    await store.set_cookie(server.url, "alice", "settled", replacing=None)
    await store.record_context(server.url, "alice", None, True)
    with trio.fail_after(120):
        async with pbxsession.open_session(
            server.url, store=store, feed=None, timeout=5
        ) as session:
            started = trio.current_time()
            with pytest.raises(PbxTimeoutError) as caught:
                await session.login("alice", "alice-pass")
            assert trio.current_time() - started <= 5.01
            assert session.state is State.HOST_SET
    assert str(caught.value) == (
        "login: the PBX did not answer in time: it accepted the connection"
        " but sent no whole reply within 5s (1 attempt)"
    )
    assert isinstance(caught.value, TimeoutError)
    logins = [r for r in server.requests if b"cmd=login" in r.body]
    assert len(logins) == 1  # a password login is never sent twice
    # Leaving the block, the exit logs out the login the PBX may have made late.
    assert [b"cmd=logout" in r.body for r in server.requests[1:]] == [True] * (
        len(server.requests) - 1
    )


async def test_retries_stop_at_the_operation_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, client: httpx.AsyncClient
) -> None:
    server = await serve_hostile(nursery, trickle)
    transport = CommandTransport(client=client, timeout=Timeout(command=2, operation=5), retries=10)
    started = trio.current_time()
    with pytest.raises(PbxTimeoutError, match=r"within 2s \(3 attempts, 5\.0s in all\)"):
        await transport.send(server.url, wire.logout_command(), None, Slot())
    assert trio.current_time() - started <= 5.01
    assert len(server.requests) == 3


async def test_a_given_deadline_bounds_the_call(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, client: httpx.AsyncClient
) -> None:
    server = await serve_hostile(nursery, never_answer)
    transport = CommandTransport(client=client, timeout=Timeout(command=5), retries=0)
    started = trio.current_time()
    with pytest.raises(PbxTimeoutError):
        await transport.send(
            server.url, wire.logout_command(), None, Slot(), deadline=started + 1.5
        )
    assert trio.current_time() - started == pytest.approx(1.5, abs=0.01)


async def test_refused_connection_is_unavailable_not_timeout(client: httpx.AsyncClient) -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    transport = CommandTransport(client=client, retries=0)
    with pytest.raises(PbxUnavailableError, match="cannot reach the PBX") as caught:
        await transport.send(f"http://127.0.0.1:{port}", wire.logout_command(), None, Slot())
    assert not isinstance(caught.value, PbxTimeoutError)
    assert type(caught.value.__cause__).__name__ == "SanitisedCause"
    assert caught.value.__context__ is None


async def test_http_5xx_is_retried_for_safe_commands(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await serve_hostile(nursery, replying("500 Internal Server Error", b""))
    transport = CommandTransport(client=client, retries=2, retry_backoff=0.001)
    with pytest.raises(PbxUnavailableError, match="HTTP 500"):
        await transport.send(server.url, wire.logout_command(), None, Slot())
    assert len(server.requests) == 3


# ---------------------------------------------------------------------- bombs

BOMBS = [
    pytest.param(100 * MiB, True, 1, id="100MiB-length"),
    pytest.param(100 * MiB, False, 1, id="100MiB-chunked"),
    pytest.param(1024 * MiB, True, 1, id="1GiB-length"),
    pytest.param(1024 * MiB, False, 1, id="1GiB-chunked"),
    pytest.param(1024 * MiB, True, 2, id="1GiB-gzip-in-gzip-length"),
    pytest.param(1024 * MiB, False, 2, id="1GiB-gzip-in-gzip-chunked"),
]


@pytest.mark.parametrize(("size", "with_length", "layers"), BOMBS)
async def test_a_gzip_bomb_is_refused_in_bounded_memory(
    nursery: trio.Nursery, size: int, with_length: bool, layers: int
) -> None:
    # Fails on main: the whole body is decoded before the size check.
    behaviour = bomb(size, content_length=with_length, layers=layers)  # built before measuring
    server = await serve_hostile(nursery, behaviour)
    store = pbxsession.MemoryStore()
    async with pbxsession.open_session(server.url, store=store, feed=None) as session:
        tracemalloc.start()
        try:
            with pytest.raises(ProtocolError, match="over 1048576 bytes"):
                await session.login("alice", "alice-pass")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 4 * MiB


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)),
        ("gzip, gzip", lambda data: gzip.compress(gzip.compress(data))),
        ("identity", lambda data: data),
    ],
    ids=["gzip", "deflate-zlib", "deflate-raw", "gzip-gzip", "identity"],
)
async def test_compressed_replies_are_decoded(
    nursery: trio.Nursery, client: httpx.AsyncClient, encoding: str, encode: object
) -> None:
    assert callable(encode)
    body = encode(LOGOUT_OK)
    server = await serve_hostile(nursery, replying("200 OK", body, f"Content-Encoding: {encoding}"))
    transport = CommandTransport(client=client, retries=0)
    reply = await transport.send(server.url, wire.logout_command(), None, Slot())
    assert reply.cmd == "logout"
    assert server.requests[0].headers["accept-encoding"] == "gzip, deflate"


@pytest.mark.parametrize(
    ("encoding", "body", "message"),
    [
        ("br", b"x", "unsupported content encoding 'br'"),
        ("gzip", b"not gzip at all", "content encoding is corrupt"),
        ("gzip, gzip, gzip, gzip", LOGOUT_OK, "more than 3 content encodings"),
    ],
)
async def test_bad_encodings_are_protocol_errors(
    nursery: trio.Nursery, client: httpx.AsyncClient, encoding: str, body: bytes, message: str
) -> None:
    server = await serve_hostile(nursery, replying("200 OK", body, f"Content-Encoding: {encoding}"))
    transport = CommandTransport(client=client, retries=0)
    with pytest.raises(ProtocolError, match=message):
        await transport.send(server.url, wire.logout_command(), None, Slot())


async def test_an_inner_layer_is_bounded_too(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    # The outer layer decodes to 4 MiB of gzip that itself decodes to little.
    inner = gzip_zeros(4 * MiB) * 40  # concatenated members: only the first is read
    server = await serve_hostile(
        nursery, replying("200 OK", gzip_of(inner), "Content-Encoding: gzip, gzip")
    )
    transport = CommandTransport(client=client, retries=0)
    with pytest.raises(ProtocolError, match="over"):
        await transport.send(server.url, wire.logout_command(), None, Slot())


# -------------------------------------------------------------------- cookies


async def test_a_shared_client_keeps_no_cookie_and_stays_open(nursery: trio.Nursery) -> None:
    server = await serve_hostile(
        nursery, replying("200 OK", LOGOUT_OK, "Set-Cookie: Red60urne=fresh-1; Path=/")
    )
    async with httpx.AsyncClient() as shared:
        shared.cookies.set("Red60urne", "from-the-jar", domain="127.0.0.1")
        transport = CommandTransport(client=shared, retries=0)
        slot = Slot("mine")
        await transport.send(server.url, wire.logout_command(), None, slot)
        assert server.requests[0].headers["cookie"] == "Red60urne=mine"
        assert slot.cookie == "fresh-1"
        assert [c.value for c in shared.cookies.jar] == ["from-the-jar"]
        assert not shared.is_closed


async def test_a_lost_cookie_race_sends_again_under_the_winner(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    async def pbx(stream: trio.abc.Stream, request: Request) -> None:
        # Like the PBX: a request without a cookie gets a fresh context.
        fresh = () if "cookie" in request.headers else ("Set-Cookie: Red60urne=ours",)
        await stream.send_all(head(length=len(LOGOUT_OK), extra=fresh) + LOGOUT_OK)

    server = await serve_hostile(nursery, pbx)

    class Raced(Slot):
        async def put(self, cookie: str | None, *, replacing: str | None) -> str | None:
            self.cookie = "theirs"  # another program stored its cookie first
            return await super().put(cookie, replacing=replacing)

    slot = Raced()
    transport = CommandTransport(client=client, retries=0)
    await transport.send(server.url, wire.logout_command(), None, slot)
    assert "cookie" not in server.requests[0].headers
    assert server.requests[1].headers["cookie"] == "Red60urne=theirs"
    assert slot.cookie == "theirs"
