"""Replies that break the protocol, served by a deliberately broken PBX over loopback."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from functools import partial

import hypercorn.config
import hypercorn.trio
import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

import pbxsession
from pbxsession import LoginError, PbxUnavailableError, ProtocolError, State

XML = "text/xml; charset=utf-8"
GOOD_LOGIN = (
    '<response result="success" cmd="login">\n'
    '<user id="1" login="u" name="U" company="7" home="7"/>\n'
    "</response>\n"
)
BOMB = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>\n'
    '<response result="success" cmd="login">&lol3;</response>\n'
)
EXTERNAL = (
    '<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
    '<response result="success" cmd="login">&x;</response>\n'
)


class BrokenPbx:
    """Answers every command with whatever the test put in ``reply``."""

    def __init__(self) -> None:
        self.reply: Response = Response(GOOD_LOGIN, media_type=XML)

    async def command(self, request: Request) -> Response:
        await request.body()
        return self.reply


@pytest.fixture
async def broken() -> AsyncIterator[tuple[BrokenPbx, str]]:
    pbx = BrokenPbx()
    app = Starlette(routes=[Route("/api/api.whtm", pbx.command, methods=["POST"])])
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 0.1
    config.accesslog = None
    config.errorlog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            partial(hypercorn.trio.serve, app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
        )
        yield pbx, urls[0]
        stop.set()


async def endless_xml() -> AsyncIterator[bytes]:
    yield b'<response result="success" cmd="login">\n'
    for _ in range(2000):  # 2 MiB, sent chunked: no Content-Length to go by
        yield b"<x/>\n" * 200


CASES = {
    "over 1 MiB, chunked": (StreamingResponse(endless_xml(), media_type=XML), ProtocolError),
    "malformed": (Response("<response result=", media_type=XML), ProtocolError),
    "over 1 MiB": (
        Response(
            GOOD_LOGIN.replace("</response>", "<x/>\n" * 300_000 + "</response>"), media_type=XML
        ),
        ProtocolError,
    ),
    "entity bomb": (Response(BOMB, media_type=XML), ProtocolError),
    "external entity": (Response(EXTERNAL, media_type=XML), ProtocolError),
    "no user element": (
        Response('<response result="success" cmd="login">\n</response>\n', media_type=XML),
        ProtocolError,
    ),
    "wrong root": (Response("<html/>", media_type=XML), ProtocolError),
    "not xml": (Response("{}", media_type="application/json"), ProtocolError),
    "http 500": (Response("oops", status_code=500), PbxUnavailableError),
    "http 503": (Response("busy", status_code=503), PbxUnavailableError),
    "http 404": (Response("no", status_code=404), ProtocolError),
    # Issue 15.6: a login reply must be about a real user, the one asked for.
    "reply for another user": (
        Response(GOOD_LOGIN.replace('login="u"', 'login="bob"'), media_type=XML),
        ProtocolError,
    ),
    "user login empty": (
        Response(GOOD_LOGIN.replace('login="u"', 'login=""'), media_type=XML),
        ProtocolError,
    ),
    "user login with a line break": (
        Response(GOOD_LOGIN.replace('login="u"', 'login="u&#10;"'), media_type=XML),
        ProtocolError,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_broken_reply_is_refused_and_state_kept(
    broken: tuple[BrokenPbx, str], case: str
) -> None:
    pbx, url = broken
    pbx.reply, expected = CASES[case]
    async with pbxsession.open_session(
        url, store=pbxsession.MemoryStore(), feed=None, retries=0
    ) as session:
        with pytest.raises(expected):
            await session.login("u", "secret-pw")
        assert session.state is State.HOST_SET
        pbx.reply = Response(GOOD_LOGIN, media_type=XML)
        user = await session.login("u", "secret-pw")
        assert user.login == "u"


async def test_huge_failure_text_is_clipped(
    broken: tuple[BrokenPbx, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 15.6: a 900 KB error text is neither carried nor logged whole."""
    pbx, url = broken
    text = "x" * 900_000
    pbx.reply = Response(
        f'<response result="fail" cmd="login" code="badauth">{text}</response>', media_type=XML
    )
    caplog.set_level(logging.DEBUG)
    async with pbxsession.open_session(
        url, store=pbxsession.MemoryStore(), feed=None, retries=0
    ) as session:
        with pytest.raises(LoginError) as info:
            await session.login("u", "secret-pw")
    assert len(info.value.message.encode()) <= 1024
    assert len(str(info.value)) <= 2048
    assert all(len(record.getMessage()) <= 4096 for record in caplog.records)


@pytest.mark.parametrize(
    "inner",
    ["", "<rtc/>", '<rtc pass=""/>', '<other pass="x"/>'],
    ids=["none", "no pass", "empty", "other"],
)
async def test_new_rtc_password_reply_without_password(
    broken: tuple[BrokenPbx, str], inner: str
) -> None:
    """Issue 13.4: a getnew reply always carries its password, else ProtocolError."""
    pbx, url = broken
    async with pbxsession.open_session(
        url, store=pbxsession.MemoryStore(), feed=None, retries=0
    ) as session:
        await session.login("u", "secret-pw")
        pbx.reply = Response(
            f'<response result="success" cmd="rtcreset">{inner}</response>', media_type=XML
        )
        with pytest.raises(ProtocolError):
            await session.rtc_reset(getnew=True)
        assert session.state is State.LOGGED_IN
        pbx.reply = Response(
            '<response result="success" cmd="rtcreset"><rtc pass="new-pw"/></response>',
            media_type=XML,
        )
        assert await session.rtc_reset(getnew=True) == "new-pw"
        # The exit's rtcreset (release) and logout: a success naming no command.
        pbx.reply = Response('<response result="success"/>', media_type=XML)
