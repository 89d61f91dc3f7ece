"""TLS through a whole session (issue 11): honest handshakes on loopback, both channels.

The simulator serves https and wss from a throw-away CA (``open_simulator(tls=True)``);
a small trio TLS server (``tests/hostile.py``) stands in for a PBX whose
certificate names another host. Every case runs ``open_session`` as a caller would.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
import trustme
from hostile import Hostile, replying, serve_hostile

import pbxsession
from pbxsession import (
    FeedDown,
    FeedEvent,
    FeedItem,
    FeedOptions,
    FeedStopped,
    FeedSubscription,
    FeedUp,
    MemoryStore,
    State,
    TlsError,
)
from pbxsession._tls import trust_context
from pbxsession.sim import Simulator, open_simulator


class NoDelay:
    """Reconnect at once: a drop costs no time."""

    reset_after = 60.0

    def delay(self, attempt: int) -> float:
        return 0.0


ZERO = NoDelay()
VERIFY_OFF = "TLS certificate verification is off for this session (verify=False)"


@pytest.fixture(autouse=True)
def no_env_trust(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's SSL_CERT_FILE/SSL_CERT_DIR must not decide these tests."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


@pytest.fixture
async def tls_sim() -> AsyncIterator[Simulator]:
    async with open_simulator(tls=True) as s:
        yield s


def ca_of(sim: Simulator) -> str:
    assert sim.ca_path is not None
    return sim.ca_path


async def next_item(events: FeedSubscription, within: float = 5.0) -> FeedItem:
    with trio.fail_after(within):
        return await events.receive()


def feed_connected(session: pbxsession.Session) -> bool:
    feed = session.statistics().feed
    assert feed is not None
    return feed.connected


# ------------------------------------------------------------- refused


async def test_default_trust_refuses_the_simulator_on_commands(tls_sim: Simulator) -> None:
    async with pbxsession.open_session(tls_sim.url, store=MemoryStore()) as session:
        with pytest.raises(TlsError) as caught:
            await session.login("alice", "alice-pass")
        assert session.state is State.HOST_SET
    message = str(caught.value)
    assert message == (
        f"certificate verify failed: unable to get local issuer certificate ({tls_sim.url})"
    )
    assert "\n" not in message
    assert isinstance(caught.value, pbxsession.PbxUnavailableError)


async def test_a_refused_certificate_is_tried_once(nursery: trio.Nursery) -> None:
    # A server from a CA nobody trusts, counting its connections: no retry.
    ca = trustme.CA()
    server = await serve_hostile(
        nursery, replying("200 OK", b""), tls=server_context(ca, "127.0.0.1")
    )
    async with pbxsession.open_session(server.url, store=MemoryStore(), retries=5) as session:
        with pytest.raises(TlsError, match=r"^certificate verify failed: "):
            await session.login("alice", "alice-pass")
    assert server.connections == 1


async def test_default_trust_refuses_the_feed_while_the_commands_are_trusted(
    tls_sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    # A caller-owned http_client brings its own TLS settings (it trusts the CA);
    # the feed follows verify= (default trust), which refuses the certificate.
    async with (
        httpx.AsyncClient(verify=trust_context(ca_of(tls_sim))) as client,
        pbxsession.open_session(
            tls_sim.url, http_client=client, store=MemoryStore(), backoff=ZERO
        ) as session,
    ):
        await session.login("alice", "alice-pass")
        assert session.state is State.LOGGED_IN
        stopped = session.events().receive_nowait()  # at once, even subscribing late
        assert isinstance(stopped, FeedStopped)
        assert stopped.errno == 91
        assert stopped.reason == (
            "certificate verify failed: unable to get local issuer certificate "
            f"({tls_sim.url.replace('https', 'wss', 1)}/api/feed)"
        )
        assert not feed_connected(session)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert f"live feed stopped: {stopped.reason}" in warnings


async def test_commands_trusted_but_the_feed_host_from_another_ca(
    tls_sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    # What a deployment sees when the feed host's certificate comes from a CA
    # the session does not trust: login succeeds (the commands work), the feed
    # stops at once with the reason, logged at WARNING, and every consumer,
    # present or later, receives the FeedStopped; the feed is not connected.
    async with (
        open_simulator(tls=True) as other,
        pbxsession.open_session(
            tls_sim.url,
            ws_host=other.ws_url,
            verify=ca_of(tls_sim),
            store=MemoryStore(),
            backoff=ZERO,
        ) as session,
    ):
        early = session.events()
        await session.login("alice", "alice-pass")
        late = session.events()
        for events in (early, late):
            item = events.receive_nowait()
            assert isinstance(item, FeedStopped)
            assert item.errno == 91
            assert item.reason.startswith("certificate verify failed: ")
            assert item.reason.endswith(f"({other.ws_url}/api/feed)")
        assert not feed_connected(session)
        # the commands still work: the session is usable without its feed
        await session.rtc_reset()
        assert session.state is State.LOGGED_IN
    records = [r for r in caplog.records if "live feed stopped" in r.getMessage()]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


@pytest.fixture
async def elsewhere(nursery: trio.Nursery, tmp_path: Path) -> tuple[Hostile, str]:
    """A TLS server on 127.0.0.1 whose (trusted) certificate names only pbx.example.com."""
    ca = trustme.CA()
    ca_path = tmp_path / "other-ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    server = await serve_hostile(
        nursery, replying("200 OK", b""), tls=server_context(ca, "pbx.example.com")
    )
    return server, str(ca_path)


async def test_a_certificate_for_another_host_name_is_refused_on_commands(
    elsewhere: tuple[Hostile, str],
) -> None:
    server, ca_path = elsewhere
    async with pbxsession.open_session(server.url, verify=ca_path, store=MemoryStore()) as session:
        with pytest.raises(TlsError) as caught:
            await session.login("alice", "alice-pass")
    assert str(caught.value) == (
        "certificate verify failed: IP address mismatch, certificate is not valid for "
        f"'127.0.0.1' ({server.url})"
    )
    assert server.connections == 1


async def test_a_certificate_for_another_host_name_is_refused_on_the_feed(
    tls_sim: Simulator, elsewhere: tuple[Hostile, str], tmp_path: Path
) -> None:
    server, other_ca = elsewhere
    bundle = tmp_path / "both.pem"  # trusts both CAs: only the name is wrong
    bundle.write_text(Path(ca_of(tls_sim)).read_text() + Path(other_ca).read_text())
    ws_host = server.url.replace("https", "wss", 1)
    async with pbxsession.open_session(
        tls_sim.url, ws_host=ws_host, verify=str(bundle), store=MemoryStore(), backoff=ZERO
    ) as session:
        await session.login("alice", "alice-pass")
        item = session.events().receive_nowait()
        assert isinstance(item, FeedStopped)
        assert item.reason == (
            "certificate verify failed: IP address mismatch, certificate is not valid for "
            f"'127.0.0.1' ({ws_host}/api/feed)"
        )
        assert not feed_connected(session)


# ------------------------------------------------------------- trusted


async def whole_lifecycle(sim: Simulator, **tls: object) -> None:
    """Login, select_company, rtc_reset, wss events, a drop with resume, logout, exit."""
    async with pbxsession.open_session(
        sim.url,
        store=MemoryStore(),
        backoff=ZERO,
        feed=FeedOptions(),
        **tls,  # type: ignore[arg-type]
    ) as session:
        events = session.events()
        user = await session.login("admin", "admin-pass")
        assert session.host is not None and session.host.startswith("https://")
        assert session.ws_host is not None and session.ws_host.startswith("wss://")
        assert feed_connected(session)
        company = next(c.id for c in user.companies if c.id != user.company)
        assert (await session.select_company(company)).company == company
        assert await session.rtc_reset(getnew=True)
        sim.emit("chat", {"n": 1}, "admin")
        first = await next_item(events)
        assert isinstance(first, FeedEvent) and first.seq == 1
        assert sim.drop_feeds() == 1
        sim.emit("chat", {"n": 2}, "admin")  # while the client is disconnected
        down, up, second = [await next_item(events) for _ in range(3)]
        assert isinstance(down, FeedDown)
        assert isinstance(up, FeedUp) and up.resumed
        assert isinstance(second, FeedEvent) and second.seq == 2
        await session.logout()
        assert session.state is State.HOST_SET
        report = await session.exit()
        assert report.ok
        assert session.state is State.CLOSED


async def test_verify_with_the_ca_path_runs_a_whole_lifecycle(tls_sim: Simulator) -> None:
    await whole_lifecycle(tls_sim, verify=ca_of(tls_sim))


async def test_verify_with_an_ssl_context_runs_a_whole_lifecycle(tls_sim: Simulator) -> None:
    context = ssl.create_default_context(cafile=ca_of(tls_sim))
    await whole_lifecycle(tls_sim, verify=context)


async def test_ssl_cert_file_is_honoured(
    tls_sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", ca_of(tls_sim))
    await whole_lifecycle(tls_sim)
    # trust_env=False ignores it: the default trust refuses the certificate again
    async with pbxsession.open_session(
        tls_sim.url, trust_env=False, store=MemoryStore()
    ) as session:
        with pytest.raises(TlsError, match=r"^certificate verify failed: "):
            await session.login("alice", "alice-pass")


async def test_a_client_certificate_reaches_a_simulator_that_requires_one() -> None:
    async with open_simulator(tls=True, require_client_cert=True) as sim:
        assert sim.client_cert_path is not None
        # both channels present it: the commands (login) and the feed (events)
        await whole_lifecycle(sim, verify=ca_of(sim), cert=sim.client_cert_path)
        async with pbxsession.open_session(
            sim.url, verify=ca_of(sim), store=MemoryStore()
        ) as session:
            # without one the server hangs up after the handshake, sending no
            # alert (trio's server side): the client can only say it broke
            with pytest.raises(pbxsession.PbxUnavailableError) as caught:
                await session.login("alice", "alice-pass")
        assert str(caught.value).startswith("login: cannot reach the PBX: ")


async def test_verify_false_works_and_warns_once_per_session(
    tls_sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    for _ in range(2):
        async with pbxsession.open_session(
            tls_sim.url, verify=False, store=MemoryStore(), backoff=ZERO
        ) as session:
            events = session.events()
            await session.login("alice", "alice-pass")
            tls_sim.emit("chat", {}, "alice")
            assert isinstance(await next_item(events), FeedEvent)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [VERIFY_OFF, VERIFY_OFF]
