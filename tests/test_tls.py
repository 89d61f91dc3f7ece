"""TLS trust and handshake failures over real TLS sockets on loopback (issue 11).

A throw-away CA from ``trustme`` issues the server's certificate; a small
trio TLS server (``tests/hostile.py`` over ``trio.SSLStream``) answers. Each
case is an honest handshake through the command transport.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio
import trustme
from hostile import Hostile, replying, serve_hostile

from pbxsession import InvalidArgumentError, PbxUnavailableError, TlsError
from pbxsession import _wire as wire
from pbxsession._tls import trust_context
from pbxsession._transport import CommandTransport, new_http_client

LOGOUT_OK = b'<?xml version="1.0"?><response result="success" cmd="logout"/>'


class Slot:
    async def get(self) -> str | None:
        return None

    async def put(self, cookie: str | None, *, replacing: str | None) -> str | None:
        return cookie


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_path(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


@pytest.fixture
async def tls_server(nursery: trio.Nursery, ca: trustme.CA) -> Hostile:
    return await serve_hostile(
        nursery, replying("200 OK", LOGOUT_OK), tls=server_context(ca, "127.0.0.1", "localhost")
    )


async def logout(url: str, context: ssl.SSLContext, retries: int = 0) -> str:
    async with new_http_client(context) as client:
        transport = CommandTransport(client=client, retries=retries)
        reply = await transport.send(url, wire.logout_command(), None, Slot())
        return reply.cmd


@pytest.fixture
def no_env_trust(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


async def test_default_trust_refuses_a_private_ca_and_never_retries(
    tls_server: Hostile, no_env_trust: None
) -> None:
    with pytest.raises(TlsError) as caught:
        await logout(tls_server.url, trust_context(True), retries=3)
    assert str(caught.value) == (
        f"certificate verify failed: unable to get local issuer certificate ({tls_server.url})"
    )
    assert tls_server.connections == 1


async def test_a_self_signed_certificate_is_named(
    nursery: trio.Nursery, ca: trustme.CA, tmp_path: Path, no_env_trust: None
) -> None:
    # The CA's own certificate is self-signed: served as the leaf, it is named so.
    key_and_cert = tmp_path / "self-signed.pem"
    key_and_cert.write_bytes(ca.private_key_pem.bytes() + ca.cert_pem.bytes())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(key_and_cert))
    server = await serve_hostile(nursery, replying("200 OK", LOGOUT_OK), tls=context)
    with pytest.raises(TlsError) as caught:
        await logout(server.url, trust_context(True))
    assert str(caught.value) == f"certificate verify failed: self-signed certificate ({server.url})"


async def test_a_ca_path_and_a_context_are_trusted(
    tls_server: Hostile, ca: trustme.CA, ca_path: str
) -> None:
    assert await logout(tls_server.url, trust_context(ca_path)) == "logout"
    assert await logout(tls_server.url, trust_context(Path(ca_path))) == "logout"
    context = ssl.create_default_context()
    ca.configure_trust(context)
    assert await logout(tls_server.url, trust_context(context)) == "logout"


async def test_a_certificate_for_another_name_is_refused(
    nursery: trio.Nursery, ca: trustme.CA, ca_path: str
) -> None:
    server = await serve_hostile(
        nursery, replying("200 OK", LOGOUT_OK), tls=server_context(ca, "other.example")
    )
    with pytest.raises(TlsError, match=r"certificate is not valid for '127\.0\.0\.1'"):
        await logout(server.url, trust_context(ca_path))


async def test_ssl_cert_file_is_honoured(
    tls_server: Hostile, ca_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", ca_path)
    assert await logout(tls_server.url, trust_context(True)) == "logout"
    with pytest.raises(TlsError):
        await logout(tls_server.url, trust_context(True, trust_env=False))


@pytest.fixture
async def mtls_server(nursery: trio.Nursery, ca: trustme.CA) -> Hostile:
    context = server_context(ca, "127.0.0.1")
    context.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(context)
    return await serve_hostile(nursery, replying("200 OK", LOGOUT_OK), tls=context)


async def test_a_client_certificate_reaches_a_server_that_asks(
    mtls_server: Hostile, ca: trustme.CA, ca_path: str, tmp_path: Path
) -> None:
    client_pem = tmp_path / "client.pem"
    ca.issue_cert("client.example").private_key_and_cert_chain_pem.write_to_path(str(client_pem))
    assert await logout(mtls_server.url, trust_context(ca_path, cert=str(client_pem))) == "logout"
    # Without one, the server ends the connection after the handshake (a
    # real server sends an alert first; this one may not get to).
    with pytest.raises(PbxUnavailableError, match=r"cannot reach the PBX: \S"):
        await logout(mtls_server.url, trust_context(ca_path))
    assert mtls_server.connections == 2
    assert len(mtls_server.requests) == 1


async def test_tls_behind_a_plain_url_says_use_https(tls_server: Hostile, ca_path: str) -> None:
    url = tls_server.url.replace("https://", "http://")
    with pytest.raises(TlsError) as caught:
        await logout(url, trust_context(ca_path))
    assert str(caught.value) == f"{url} speaks TLS: use https://"


async def test_plain_behind_a_tls_url_says_use_http(nursery: trio.Nursery, ca_path: str) -> None:
    server = await serve_hostile(nursery, replying("200 OK", LOGOUT_OK))
    url = server.url.replace("http://", "https://")
    with pytest.raises(TlsError) as caught:
        await logout(url, trust_context(ca_path))
    assert str(caught.value) == f"{url} is not a TLS server: use http://"


# ------------------------------------------------------------- trust_context


def test_contexts_are_built_once_per_distinct_input(ca_path: str) -> None:
    assert trust_context(True) is trust_context(True)
    assert trust_context(ca_path) is trust_context(ca_path)
    assert trust_context(ca_path) is not trust_context(True)
    assert trust_context(False) is trust_context(False)


def test_a_context_is_used_as_is_and_paths_keep_hostname_checks(ca_path: str) -> None:
    context = ssl.create_default_context()
    assert trust_context(context) is context
    assert trust_context(ca_path).check_hostname
    assert trust_context(ca_path).verify_mode is ssl.CERT_REQUIRED
    assert not trust_context(False).check_hostname


@pytest.mark.parametrize("verify", ["/nonexistent/ca.pem", 1, None, b"ca.pem"])
def test_bad_verify_values_are_refused(verify: object) -> None:
    with pytest.raises(InvalidArgumentError):
        trust_context(verify)  # type: ignore[arg-type]


def test_a_client_cert_with_a_context_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="load_cert_chain"):
        trust_context(ssl.create_default_context(), cert="client.pem")


async def test_new_http_client_uses_the_given_trust(tls_server: Hostile, ca_path: str) -> None:
    async with new_http_client(trust_context(ca_path)) as client:
        response = await client.post(tls_server.url + "/api/api.whtm", content=b"cmd=logout")
        assert response.status_code == 200
        assert not client.follow_redirects
