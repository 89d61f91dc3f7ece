"""No password escapes: not in a log record, a repr, an exception or a store file.

A whole lifecycle runs with every logger at DEBUG (pytest's ``caplog`` and a
handler of our own on the root logger, which formats each record with its
traceback): a login with a bad password, then the right one (with the
``on_result`` callback), the live feed's events, ``select_company``,
``rtc_reset(getnew=True)`` (the WebRTC password), ``exit(logout=True)``
(which releases that WebRTC password); then a failed login, a lost session
(``SessionLostError``), an unreachable PBX (an exception chained to httpx's).
The login passwords (raw and form-encoded) and every WebRTC password the
client saw must appear in no log record (message, args, traceback), in no
``repr``/``str`` of a public object (session, user, statistics, report, feed
items, store, exceptions with their ``__cause__``/``__context__`` chains and
notes), in no ``on_result`` message, and in no byte of the SQLite store's
files.
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
import types
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from urllib.parse import quote_plus

import hostile
import httpx
import pytest
import trio
import trio.testing
import trustme
from hostile import serve_hostile

import pbxsession
from pbxsession import (
    FeedEvent,
    LoginError,
    PbxUnavailableError,
    SessionLostError,
    State,
    StepOutcome,
)
from pbxsession.sim import DEFAULT_USERS, Simulator, open_simulator

LOGIN_PASSWORD = "Zq7 horse&battery=4412"
BAD_PASSWORD = "Wr0ng guess%8821"
USERS = [
    dataclasses.replace(u, password=LOGIN_PASSWORD) if u.login == "admin" else u
    for u in DEFAULT_USERS
]


class Collect(logging.Handler):
    """Every record, formatted with its traceback, plus its raw msg and args."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.texts: list[str] = []
        self.names: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        self.names.add(record.name)
        self.texts.append(self.format(record))
        self.texts.append(f"{record.msg!r} {record.args!r}")


def forms(secret: str) -> list[str]:
    """The secret as written, and as it travels in a form body."""
    return sorted({secret, quote_plus(secret)})


def leaks(texts: Iterable[str], secrets: Iterable[str]) -> list[tuple[str, str]]:
    found = []
    for text in texts:
        for secret in secrets:
            for form in forms(secret):
                if form in text:
                    found.append((secret, text[:300]))
    return found


def exception_texts(exc: BaseException) -> Iterator[str]:
    """str, repr, args and notes of an exception and everything it is chained to."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield repr(current.args)
        yield from getattr(current, "__notes__", [])
        yield repr(vars(current)) if hasattr(current, "__dict__") else ""
        todo += [current.__cause__, current.__context__]


def store_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file())


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with open_simulator(USERS) as simulator:
        yield simulator


@pytest.fixture
def collect() -> Iterator[Collect]:
    handler = Collect()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_the_scanner_finds_a_secret() -> None:
    """The checks below can fail: a secret, raw or form-encoded, is found."""
    assert leaks(["x" + LOGIN_PASSWORD], [LOGIN_PASSWORD])
    assert leaks(["sessionPass=" + quote_plus(LOGIN_PASSWORD)], [LOGIN_PASSWORD])
    chained = RuntimeError("outer")
    chained.__cause__ = ValueError(f"inner {BAD_PASSWORD}")
    assert leaks(exception_texts(chained), [BAD_PASSWORD])


async def test_no_secret_anywhere(
    sim: Simulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    collect: Collect,
) -> None:
    caplog.set_level(logging.DEBUG)
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    store = pbxsession.SqliteStore(store_dir / "sessions.db")
    texts: list[str] = []  # reprs, strs and messages gathered along the way
    errors: list[BaseException] = []
    rtc_passwords: list[str] = []
    callback_messages: list[str] = []
    store_snapshots: list[bytes] = []

    def on_result(success: bool, message: str) -> None:
        callback_messages.append(f"{success} {message}")

    async with pbxsession.open_session(sim.url, ws_host=sim.ws_url, store=store) as session:
        with pytest.raises(LoginError) as bad:
            await session.login("admin", BAD_PASSWORD, on_result=on_result)
        errors.append(bad.value)
        user = await session.login("admin", LOGIN_PASSWORD, on_result=on_result)
        store_snapshots.append(store_bytes(store_dir))
        events = session.events()
        sim.emit("device", {"device": "SIP/100", "state": "ringing"})
        sim.emit("call", {"id": "c1", "state": "ended", "from": "100", "to": "200"})
        received = []
        with trio.fail_after(5):
            async for item in events:
                received.append(item)
                if isinstance(item, FeedEvent) and item.kind == "call":
                    break
        texts += [repr(item) for item in received] + [str(item) for item in received]
        await session.select_company("8")
        rtc = await session.rtc_reset(getnew=True)
        assert rtc is not None and rtc == sim.user_view("admin")["rtc_pass"]
        rtc_passwords.append(rtc)
        texts += [repr(session), repr(user), repr(session.user), repr(session.statistics())]
        texts += [repr(store), repr(events)]
        store_snapshots.append(store_bytes(store_dir))
        report = await session.exit(logout=True)
        assert report.steps["rtc_release"].outcome is StepOutcome.OK
        assert report.steps["logout"].outcome is StepOutcome.OK
        texts += [repr(report), str(report), repr(session), repr(session.statistics())]

    # A failed login and a lost session, in a second session sharing the store.
    async with pbxsession.open_session(sim.url, ws_host=sim.ws_url, store=store) as session:
        with pytest.raises(LoginError) as failed:
            await session.login("admin", BAD_PASSWORD)
        errors.append(failed.value)
        await session.login("admin", LOGIN_PASSWORD)
        rtc = await session.rtc_reset(getnew=True)
        assert rtc is not None
        rtc_passwords.append(rtc)
        sim.expire("admin")
        with pytest.raises(SessionLostError) as lost:
            await session.rtc_reset(getnew=True)
        errors.append(lost.value)
        assert session.state is State.HOST_SET
        texts += [repr(session), repr(session.statistics())]
        store_snapshots.append(store_bytes(store_dir))
        report = await session.exit(logout=True)
        texts += [repr(report), str(report)]
        for step in report.steps.values():
            texts.append(repr(step))
            if step.error is not None:
                errors.append(step.error)

    # An unreachable PBX: the error is chained to httpx's own.
    async with (
        sim_closed_port() as url,
        pbxsession.open_session(url, store=store, feed=None) as session,
    ):
        with pytest.raises(PbxUnavailableError) as unreachable:
            await session.login("admin", LOGIN_PASSWORD)
        errors.append(unreachable.value)
        assert unreachable.value.__cause__ is not None

    store_snapshots.append(store_bytes(store_dir))
    secrets = [LOGIN_PASSWORD, BAD_PASSWORD, *rtc_passwords]

    # The lifecycle really was logged at DEBUG, by the library and by httpx.
    assert any(n.startswith("pbxsession") for n in collect.names)
    assert any(n.startswith(("httpx", "httpcore")) for n in collect.names)
    assert any(
        r.levelno == logging.DEBUG and r.name.startswith("pbxsession") for r in caplog.records
    )
    assert len(errors) >= 4

    assert leaks(collect.texts, secrets) == []
    caplog_texts = [r.getMessage() for r in caplog.records] + [repr(r.args) for r in caplog.records]
    caplog_texts += [caplog.text]
    assert leaks(caplog_texts, secrets) == []
    # The library's records carry only plain values: no object (a command, an
    # exception with its traceback) that holds a password or keeps a session alive.
    plain = (str, int, float, bool, type(None))
    for record in caplog.records:
        if record.name.startswith("pbxsession") and isinstance(record.args, tuple):
            assert all(isinstance(a, plain) for a in record.args), (record.msg, record.args)
    assert leaks(texts, secrets) == []
    assert leaks(callback_messages, secrets) == []
    assert callback_messages[0].startswith("False") and callback_messages[1].startswith("True")
    assert leaks([t for e in errors for t in exception_texts(e)], secrets) == []
    for snapshot in store_snapshots:
        assert snapshot, "the store wrote nothing"
        for secret in secrets:
            for form in forms(secret):
                assert form.encode() not in snapshot, f"{secret!r} is in the store file"


class sim_closed_port:
    """A loopback URL where nothing listens (the port is bound, never listened on)."""

    async def __aenter__(self) -> str:
        self._sock = trio.socket.socket()
        await self._sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        self._sock.close()


# ------------------------------------------- failures against hostile servers
# (issue 15 point 3) After a password login fails to get through (timeout,
# refused connection, HTTP 5xx, TLS failure), nothing reachable from the
# raised exception (its chain, their attributes such as an HTTP library's
# request with its body and headers, args, notes) holds the password or the
# session cookie; and no log record shows the cookie, httpcore's included.

SESSION_COOKIE = "Ck9-secret-session-cookie-7781"
_LEAVES = (str, bytes, bytearray, memoryview)
_SKIP = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
         types.TracebackType, types.FrameType, types.CodeType)  # fmt: skip


def reachable_texts(root: object, *, limit: int = 20000, depth: int = 10) -> Iterator[str]:
    """Every string and byte string reachable from ``root`` through attributes,
    containers, exception chains, args and notes (frames and tracebacks aside)."""
    seen: set[int] = set()
    todo: list[tuple[object, int]] = [(root, 0)]
    while todo and len(seen) < limit:
        current, level = todo.pop()
        if id(current) in seen or isinstance(current, _SKIP) or level > depth:
            continue
        seen.add(id(current))
        if isinstance(current, _LEAVES):
            yield bytes(current).decode("latin-1") if not isinstance(current, str) else current
            continue
        if isinstance(current, BaseException):
            yield str(current)
            yield repr(current)
            children: list[object] = [
                current.__cause__, current.__context__, current.args,
                getattr(current, "__notes__", None),
            ]  # fmt: skip
        else:
            children = []
        if isinstance(current, dict):
            children += [*current.keys(), *current.values()]
        elif isinstance(current, list | tuple | set | frozenset):
            children += list(current)
        elif isinstance(current, types.MethodType):
            children.append(current.__self__)
        if hasattr(current, "__dict__"):
            children.append(vars(current))
        for name in getattr(type(current), "__slots__", ()):
            children.append(getattr(current, name, None))
        todo += [(child, level + 1) for child in children if child is not None]


def secret_forms() -> list[str]:
    return [*forms(LOGIN_PASSWORD), SESSION_COOKIE]


def test_the_sweep_finds_a_request_in_a_chain() -> None:
    """The sweep can fail: httpx's request, two links down, holds the form body."""
    request = httpx.Request(
        "POST", "http://pbx/api", content=f"sessionPass={quote_plus(LOGIN_PASSWORD)}".encode(),
        headers={"Cookie": f"Red60urne={SESSION_COOKIE}"},
    )  # fmt: skip
    inner = httpx.ReadTimeout("timed out", request=request)
    outer = PbxUnavailableError("login: timed out")
    outer.__context__ = RuntimeError("middle")
    outer.__context__.__cause__ = inner
    found = [t for t in reachable_texts(outer) for f in secret_forms() if f in t]
    assert any(quote_plus(LOGIN_PASSWORD) in t for t in found)
    assert any(SESSION_COOKIE in t for t in found)


def hostile_ca() -> trustme.CA:
    return trustme.CA()


async def a_server(nursery: trio.Nursery, kind: str) -> str:
    if kind == "timeout":
        return (await serve_hostile(nursery, hostile.never_answer)).url
    if kind == "http-500":
        return (await serve_hostile(nursery, hostile.replying("500 Oops", b"busy"))).url
    if kind == "tls":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        hostile_ca().issue_cert("127.0.0.1").configure_cert(context)
        ok = hostile.replying("200 OK", b"")
        return (await serve_hostile(nursery, ok, tls=context)).url
    if kind == "reset":

        async def hang_up(stream: trio.abc.Stream, request: hostile.Request) -> None:
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")

        return (await serve_hostile(nursery, hang_up)).url
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()  # "refused": nothing listens there now
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("kind", ["timeout", "refused", "http-500", "tls", "reset"])
async def test_no_secret_reachable_from_a_failed_login(
    nursery: trio.Nursery, kind: str, collect: Collect, autojump_clock: trio.testing.MockClock
) -> None:
    # Fails on main: PbxUnavailableError.__cause__.request.content holds the password
    # (timeout, refused, reset), and its headers the session cookie.
    url = await a_server(nursery, kind)
    store = pbxsession.MemoryStore()
    await store.set_cookie(url, "alice", SESSION_COOKIE, replacing=None)
    async with pbxsession.open_session(url, store=store, feed=None) as session:
        with pytest.raises(PbxUnavailableError) as caught:
            await session.login("admin", LOGIN_PASSWORD)
    texts = list(reachable_texts(caught.value))
    assert texts, "the sweep saw nothing"
    leaked = [(f, t[:200]) for t in texts for f in secret_forms() if f in t]
    assert leaked == []
    assert [(f, t[:200]) for t in collect.texts for f in secret_forms() if f in t] == []


async def test_httpcore_debug_records_show_no_cookie(
    nursery: trio.Nursery, collect: Collect, caplog: pytest.LogCaptureFixture
) -> None:
    # Fails on main: httpcore's receive_response_headers record shows Set-Cookie.
    caplog.set_level(logging.DEBUG)
    refused = b'<?xml version="1.0"?><response result="fail" cmd="login" code="badauth"/>'
    server = await serve_hostile(
        nursery,
        hostile.replying("200 OK", refused, f"Set-Cookie: Red60urne={SESSION_COOKIE}; Path=/"),
    )
    store = pbxsession.MemoryStore()
    async with pbxsession.open_session(server.url, store=store, feed=None) as session:
        with pytest.raises(LoginError):
            await session.login("admin", LOGIN_PASSWORD)
    assert any(n.startswith("httpcore") for n in collect.names)
    assert any("[redacted]" in t for t in collect.texts)
    everything = [*collect.texts, caplog.text]
    assert [(f, t[:200]) for t in everything for f in secret_forms() if f in t] == []


@pytest.mark.parametrize("name", [b"Set-Cookie", b"cookie", b"Authorization"])
def test_the_httpcore_filter_redacts_cookie_headers(name: bytes) -> None:
    from pbxsession._redact import RedactCookies

    headers = [(name, f"Red60urne={SESSION_COOKIE}; Path=/".encode()), (b"X-Other", b"kept")]
    record = logging.LogRecord(
        "httpcore.http11", logging.DEBUG, __file__, 1,
        "receive_response_headers.complete return_value=%r", ((b"HTTP/1.1", 200, b"OK", headers),),
        None,
    )  # fmt: skip
    assert RedactCookies().filter(record)
    assert SESSION_COOKIE not in record.getMessage()
    assert "b'kept'" in record.getMessage()
