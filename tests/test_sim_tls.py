"""The simulator over TLS: honest handshakes on loopback with httpx and trio-websocket."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from pbxsession.sim import Simulator, open_simulator

API = "/api/api.whtm"
COOKIE = "Red60urne"
ALICE = {"cmd": "login", "sessionUser": "alice", "sessionPass": "alice-pass"}


def trusting(ca_path: str | None, cert: str | None = None) -> ssl.SSLContext:
    """What ``verify=ca_path`` means (httpx 0.28 deprecates a str there, and warnings fail)."""
    assert ca_path is not None
    context = ssl.create_default_context(cafile=ca_path)
    if cert is not None:
        context.load_cert_chain(cert)
    return context


@pytest.fixture
async def tls_sim() -> AsyncIterator[Simulator]:
    async with open_simulator(tls=True) as s:
        yield s


@asynccontextmanager
async def wss(url: str, cookie: str, context: ssl.SSLContext) -> AsyncIterator[WebSocketConnection]:
    headers = [(b"cookie", f"{COOKIE}={cookie}".encode())]
    async with open_websocket_url(
        url + "/api/feed", ssl_context=context, extra_headers=headers
    ) as ws:
        yield ws
    # trio-websocket 0.12's client leaves its socket open when the server closed first
    await ws._stream.aclose()


async def raw_get(url: str, context: ssl.SSLContext) -> bytes:
    """GET /_sim/stats over a raw TLS stream: the reply's bytes, b"" if refused."""
    port = int(url.rsplit(":", 1)[1])
    stream = await trio.open_ssl_over_tcp_stream(
        "127.0.0.1", port, ssl_context=context, https_compatible=True
    )
    try:
        await stream.send_all(b"GET /_sim/stats HTTP/1.1\r\nhost: x\r\n\r\n")
        with trio.fail_after(5):
            return bytes(await stream.receive_some())
    except trio.BrokenResourceError:
        return b""
    finally:
        await stream.aclose()


def causes(exc: BaseException | None) -> list[BaseException]:
    found = []
    while exc is not None:
        found.append(exc)
        exc = exc.__cause__ or exc.__context__
    return found


async def ready(ws: WebSocketConnection) -> dict[str, Any]:
    await ws.send_message(json.dumps({"type": "start", "since": None}))
    with trio.fail_after(5):
        frame: dict[str, Any] = json.loads(await ws.get_message())
    return frame


async def test_https_with_the_ca_path_and_a_secure_cookie(tls_sim: Simulator) -> None:
    assert tls_sim.url.startswith("https://127.0.0.1:")
    assert tls_sim.ws_url.startswith("wss://127.0.0.1:")
    assert tls_sim.ca_path is not None
    assert tls_sim.client_cert_path is None
    async with httpx.AsyncClient(base_url=tls_sim.url, verify=trusting(tls_sim.ca_path)) as client:
        response = await client.post(API, data=ALICE)
    assert response.status_code == 200
    assert 'login="alice"' in response.text
    set_cookie = response.headers["set-cookie"]
    assert set_cookie.endswith("; HttpOnly; Path=/; SameSite=lax; Secure")


async def test_the_certificate_names_every_loopback_name(tls_sim: Simulator) -> None:
    port = int(tls_sim.url.rsplit(":", 1)[1])
    stream = await trio.open_ssl_over_tcp_stream(
        "127.0.0.1", port, ssl_context=trusting(tls_sim.ca_path)
    )
    await stream.do_handshake()
    cert = stream.getpeercert()
    await stream.aclose()
    assert cert is not None
    names = {value for _kind, value in cert["subjectAltName"]}
    assert {"127.0.0.1", "localhost"} <= names
    assert names & {"::1", "0:0:0:0:0:0:0:1"}


async def test_default_trust_refuses_the_certificate(tls_sim: Simulator) -> None:
    async with httpx.AsyncClient(base_url=tls_sim.url) as client:
        with pytest.raises(httpx.ConnectError) as refused:
            await client.post(API, data=ALICE)
    assert any(isinstance(e, ssl.SSLCertVerificationError) for e in causes(refused.value))
    # the feed's TLS handshake, on either port, is refused the same way (a raw
    # TLS stream: trio-websocket's client reports a failed TLS handshake only
    # as a ConnectionTimeout, once its connect_timeout has run out)
    for url in (tls_sim.url, tls_sim.ws_url):
        port = int(url.rsplit(":", 1)[1])
        stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port)
        with pytest.raises(trio.BrokenResourceError) as broken:
            await stream.do_handshake()
        await stream.aclose()
        assert isinstance(broken.value.__cause__, ssl.SSLCertVerificationError)


async def test_wss_feed_on_both_ports_with_the_ssl_context(tls_sim: Simulator) -> None:
    assert tls_sim.ssl_context is not None
    async with httpx.AsyncClient(base_url=tls_sim.url, verify=tls_sim.ssl_context) as client:
        await client.post(API, data=ALICE)
        cookie = client.cookies[COOKIE]
    for url in (tls_sim.url.replace("https", "wss", 1), tls_sim.ws_url):
        async with wss(url, cookie, tls_sim.ssl_context) as ws:
            frame = await ready(ws)
            assert (frame["type"], frame["resumed"]) == ("ready", True)
            tls_sim.emit("chat", {"n": 1})
            with trio.fail_after(5):
                assert json.loads(await ws.get_message())["kind"] == "chat"


async def test_faults_apply_under_tls(tls_sim: Simulator) -> None:
    # The fault streams sit under TLS: a drop cuts the socket, a freeze holds pongs.
    assert tls_sim.ssl_context is not None
    async with httpx.AsyncClient(base_url=tls_sim.url, verify=trusting(tls_sim.ca_path)) as client:
        await client.post(API, data=ALICE)
        cookie = client.cookies[COOKIE]
    for url in (tls_sim.url.replace("https", "wss", 1), tls_sim.ws_url):
        async with wss(url, cookie, tls_sim.ssl_context) as ws:
            await ready(ws)
            tls_sim.freeze_feeds()
            with trio.move_on_after(0.3) as frozen:
                await ws.ping(b"frozen")
            assert frozen.cancelled_caught
            tls_sim.unfreeze_feeds()
            with trio.fail_after(2):
                await ws.ping(b"thawed")
            assert tls_sim.drop_feeds() == 1


async def test_the_ca_file_is_removed_at_close() -> None:
    async with open_simulator(tls=True) as s:
        assert s.ca_path is not None
        ca = Path(s.ca_path)
        assert ca.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert not ca.exists()
    assert not ca.parent.exists()


async def test_a_required_client_certificate() -> None:
    async with open_simulator(tls=True, require_client_cert=True) as s:
        assert s.ca_path is not None
        assert s.client_cert_path is not None
        assert s.ssl_context is not None
        async with httpx.AsyncClient(
            base_url=s.url, verify=trusting(s.ca_path, s.client_cert_path)
        ) as client:
            response = await client.post(API, data=ALICE)
            assert 'login="alice"' in response.text
            cookie = client.cookies[COOKIE]
        async with wss(s.ws_url, cookie, s.ssl_context) as ws:
            assert (await ready(ws))["type"] == "ready"
        # trusted, but no certificate: no reply (under TLS 1.3 the client only
        # learns it on reading, so raw TLS streams here, not httpx)
        assert (await raw_get(s.url, trusting(s.ca_path, s.client_cert_path))).startswith(
            b"HTTP/1.1 200"
        )
        assert await raw_get(s.url, trusting(s.ca_path)) == b""
        client_cert_path = Path(s.client_cert_path)
    assert not client_cert_path.exists()


async def test_tls_options_are_checked() -> None:
    with pytest.raises(ValueError, match="require_client_cert needs tls=True"):
        async with open_simulator(require_client_cert=True):
            pass  # pragma: no cover
    with pytest.raises(TypeError):
        async with open_simulator(tls="yes"):  # type: ignore[arg-type]
            pass  # pragma: no cover


def has_ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_ipv6_loopback_over_tls() -> None:
    async with open_simulator(host="::1", tls=True) as s:
        assert s.url.startswith("https://[::1]:")
        assert s.ssl_context is not None
        async with httpx.AsyncClient(base_url=s.url, verify=trusting(s.ca_path)) as client:
            await client.post(API, data=ALICE)
            cookie = client.cookies[COOKIE]
        async with wss(s.url.replace("https", "wss", 1), cookie, s.ssl_context) as ws:
            assert (await ready(ws))["type"] == "ready"
