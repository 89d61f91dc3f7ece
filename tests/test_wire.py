"""Unit tests of ``pbxsession._wire`` against /work/shared/PROTOCOL.md (v1).

Pure functions only: no network, no trio.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import json
import re
import urllib.parse
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbxsession import _wire as wire
from pbxsession._errors import (
    CommandError,
    InvalidArgumentError,
    InvalidHostError,
    LoginError,
    PbxError,
    PbxUnavailableError,
    PermissionDeniedError,
    ProtocolError,
    SessionLostError,
    StaleCredentialError,
    UnknownCompanyError,
)
from pbxsession._models import Company, FeedEvent, Permission, User

XML = "text/xml; charset=utf-8"
SECRET = "S3cr3t-Pa55"


def form(cmd: wire.Command[Any], subid: str | None = None) -> list[tuple[str, str]]:
    """The decoded form fields of ``cmd``, in order (blank values kept)."""
    body = cmd.encode(subid)
    assert isinstance(body, bytes)
    body.decode("ascii")  # percent-encoded: pure ASCII
    return urllib.parse.parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=True)


def b64json(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode("utf-8")).decode("ascii")


#: A command of each kind, by name; "login" adopts any user (its replies name many).
COMMANDS: dict[str, wire.Command[Any]] = {
    "login": wire.login_command("", None, checkonly=True),
    "logout": wire.logout_command(),
    "selcompany": wire.select_company_command("7"),
    "rtcreset": wire.rtc_reset_command(),
    "rtcreset-getnew": wire.rtc_new_password_command(),
    "status": wire.status_command("online"),
    "save": wire.save_history_command([]),
    "load": wire.load_history_command(),
}
HOST = "pbx.example.com"


def reply(cmd: str, body: str | bytes, status: int = 200, ctype: str | None = XML) -> Any:
    """The parsed reply to the command named ``cmd`` (a key of :data:`COMMANDS`)."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    return wire.parse_reply(COMMANDS[cmd], status, ctype, raw)


def fail_body(cmd: str, code: str, message: str = "Nope") -> str:
    return f'<response result="fail" cmd="{cmd}" code="{code}">{message}</response>\n'


LOGIN_OK = """<response result="success" cmd="login">
  <user id="101" login="admin" name="Ada Admin" company="7" home="default"/>
  <action name="chat"/>
  <action name="admin" company="true"/>
  <company id="7" name="Acme Ltd"/>
  <company id="8" name="Bolt plc"/>
</response>
"""


XML_PIECES = [
    b"<response",
    b' result="success"',
    b' result="fail"',
    b' code="x"',
    b' cmd="login"',
    b">",
    b"/>",
    b"</response>",
    b'<user id="1" login="u" name="n" company="7" home="7"/>',
    b'<rtc pass="p"/>',
    b"<data>W10=</data>",
    b"<!DOCTYPE r>",
    b"&amp;",
    b"&x;",
    b'<?xml version="1.0" encoding="utf-16"?>',
    b'<?xml version="1.0" encoding="bogus"?>',
    b"\xff",
    b"\x00",
    b"<!--c-->",
    b"<![CDATA[x]]>",
    b"<?pi x?>",
    b' xmlns="urn:x"',
    b'<action name="a"/>',
    b'<company id="1"/>',
]


# ===================================================================== hosts


class TestValidateHost:
    @pytest.mark.parametrize(
        ("uri", "expected"),
        [
            ("https://pbx.example.com", "https://pbx.example.com"),
            ("https://pbx.example.com/", "https://pbx.example.com"),
            ("https://pbx.example.com:8443", "https://pbx.example.com:8443"),
            ("https://pbx.example.com:8443/", "https://pbx.example.com:8443"),
            ("HTTPS://PBX.Example.COM", "https://pbx.example.com"),
            ("https://10.0.0.5", "https://10.0.0.5"),
            # Issue 14 "Hosts": the default port is dropped (was kept as ":443").
            ("https://[2001:db8::1]:443", "https://[2001:db8::1]"),
            ("https://[2001:db8::1]:8443", "https://[2001:db8::1]:8443"),
            ("http://localhost", "http://localhost"),
            ("http://localhost/", "http://localhost"),
            ("http://localhost:8080", "http://localhost:8080"),
            ("http://LOCALHOST:8080/", "http://localhost:8080"),
            ("http://127.0.0.1", "http://127.0.0.1"),
            ("http://127.0.0.1:5000/", "http://127.0.0.1:5000"),
            ("http://127.1.2.3:80", "http://127.1.2.3"),  # issue 14: was kept with ":80"
            ("http://127.255.255.254", "http://127.255.255.254"),
            ("http://[::1]", "http://[::1]"),
            ("http://[::1]:9000/", "http://[::1]:9000"),
            ("https://localhost:65535", "https://localhost:65535"),
            # Issue 14 "Hosts": an internationalised name is taken in its IDNA
            # form (was refused); "http://pbx.localhost:1" left this list for
            # issue 15.4 (not loopback: TestHostNormalisation).
            ("https://bücher.example", "https://xn--bcher-kva.example"),
        ],
    )
    def test_accepted(self, uri: str, expected: str) -> None:
        assert wire.validate_host(uri) == expected

    @pytest.mark.parametrize(
        "uri",
        [
            "ftp://x",
            "ftp://localhost",
            "ws://localhost",
            "wss://pbx.example.com",
            "file:///etc/passwd",
            "https://user:pw@x",
            "https://user@x",
            "https://user:pw@localhost:8443/",
            "https://@x",
            "https://x/path?q",
            "https://x/path",
            "https://x/api/api.whtm",
            "https://x//",
            "https://x?q",
            "https://x/?q=1",
            "https://x?",
            "https://x#f",
            "https://x/#f",
            "https://x#",
            "https://pb\rx",
            "https://pb\nx",
            "https://pb\tx",
            "https://x\r\n",
            "\nhttps://x",
            "https://x\x00",
            "https://x\x7f",
            "https://x /",
            " https://x",
            "",
            "not a url",
            "x",
            "pbx.example.com",
            "pbx.example.com:443",
            "//pbx.example.com",
            "https://",
            "https:///",
            "https://:443",
            "https:x",
            "https://x:99999",
            "https://x:port",
            "https://x:-80",
            "https://x:80:90",
            "https://::1",
            "https://[::1",
            "https://x;y",
            "https://x%41",
            "https://x\\y",
        ],
    )
    def test_refused(self, uri: str) -> None:
        with pytest.raises(InvalidHostError):
            wire.validate_host(uri)

    @pytest.mark.parametrize("uri", [None, 42, b"https://x", ["https://x"]])
    def test_non_str_refused(self, uri: Any) -> None:
        with pytest.raises(InvalidHostError):
            wire.validate_host(uri)

    def test_error_is_value_error_and_pbx_error(self) -> None:
        with pytest.raises(ValueError, match=r".") as info:
            wire.validate_host("ftp://x")
        assert isinstance(info.value, InvalidHostError)
        assert isinstance(info.value, InvalidArgumentError)
        assert isinstance(info.value, PbxError)

    def test_user_info_password_not_in_message(self) -> None:
        with pytest.raises(InvalidHostError) as info:
            wire.validate_host(f"https://admin:{SECRET}@pbx.example.com")
        assert SECRET not in str(info.value)
        assert SECRET not in repr(info.value)

    @pytest.mark.parametrize(
        "uri",
        [
            "http://pbx.example.com",
            "http://pbx.example.com:8080/",
            "http://10.0.0.1",
            "http://0.0.0.0",
            "http://[::2]",
            "http://128.0.0.1",
            "http://localhost.evil.com",
            "http://127.0.0.1.nip.io",
            "http://mylocalhost",
        ],
    )
    def test_plain_http_non_loopback(self, uri: str) -> None:
        with pytest.raises(InvalidHostError, match="allow_insecure"):
            wire.validate_host(uri)
        assert wire.validate_host(uri, allow_insecure=True) == uri.rstrip("/")

    def test_allow_insecure_does_not_relax_other_rules(self) -> None:
        for uri in ("ftp://x", "http://u:p@x", "http://x/p", "http://x?q", "http://x#f"):
            with pytest.raises(InvalidHostError):
                wire.validate_host(uri, allow_insecure=True)

    @pytest.mark.parametrize(
        ("uri", "expected"),
        [
            ("wss://pbx.example.com", "wss://pbx.example.com"),
            ("wss://pbx.example.com:8443/", "wss://pbx.example.com:8443"),
            ("WSS://Feed.Example.com", "wss://feed.example.com"),
            ("ws://localhost:8080", "ws://localhost:8080"),
            ("ws://127.0.0.1/", "ws://127.0.0.1"),
            ("ws://127.9.9.9:1", "ws://127.9.9.9:1"),
            ("ws://[::1]:81", "ws://[::1]:81"),
        ],
    )
    def test_websocket_accepted(self, uri: str, expected: str) -> None:
        assert wire.validate_host(uri, websocket=True) == expected

    @pytest.mark.parametrize(
        "uri",
        [
            "https://pbx.example.com",
            "http://localhost",
            "ftp://x",
            "wss://user:pw@x",
            "wss://x/api/feed",
            "wss://x?subid=a",
            "wss://x#f",
            "wss://x\n",
            "",
        ],
    )
    def test_websocket_refused(self, uri: str) -> None:
        with pytest.raises(InvalidHostError):
            wire.validate_host(uri, websocket=True)

    def test_websocket_plain_non_loopback(self) -> None:
        with pytest.raises(InvalidHostError):
            wire.validate_host("ws://feed.example.com", websocket=True)
        assert (
            wire.validate_host("ws://feed.example.com", websocket=True, allow_insecure=True)
            == "ws://feed.example.com"
        )


class TestHostNormalisation:
    """Issue 14 "Hosts" and issue 15.4: one spelling per host, every bad host refused."""

    @pytest.mark.parametrize(
        ("uri", "expected"),
        [
            ("https://pbx:443", "https://pbx"),
            ("https://PBX", "https://pbx"),
            ("https://pbx/", "https://pbx"),
            ("https://pbx:443/", "https://pbx"),
            ("http://localhost:80", "http://localhost"),
            ("https://[2001:db8::1]:443", "https://[2001:db8::1]"),
            ("https://pbx.bücher.example", "https://pbx.xn--bcher-kva.example"),
            ("https://PBX.Bücher.Example:8443/", "https://pbx.xn--bcher-kva.example:8443"),
            ("http://[::1]:8080", "http://[::1]:8080"),
            ("https://pbx_1.example", "https://pbx_1.example"),
            ("https://" + "a" * 63 + ".example", "https://" + "a" * 63 + ".example"),
        ],
    )
    def test_normalised(self, uri: str, expected: str) -> None:
        assert wire.validate_host(uri) == expected
        assert wire.validate_host(expected) == expected

    def test_plain_default_port_dropped(self) -> None:
        assert wire.validate_host("http://h:80", allow_insecure=True) == "http://h"

    @pytest.mark.parametrize(
        ("uri", "expected"),
        [("wss://pbx:443/", "wss://pbx"), ("ws://localhost:80", "ws://localhost")],
    )
    def test_websocket_normalised(self, uri: str, expected: str) -> None:
        assert wire.validate_host(uri, websocket=True) == expected

    @pytest.mark.parametrize(
        "uri",
        [
            "https://a..b",
            "https://.pbx",
            "https://pbx.",
            "https://" + "a" * 64 + ".example",
            "https://" + "a" * 64,
            "https://" + ".".join(["abcdefghi"] * 30),  # 299 characters, labels fine
            "https://" + "a" * 1_000_000,
            "https://" + "a." * 500_000 + "b",
            "https://x:0",
            "https://x:65536",
            "https://x:99999",
            "https://-pbx.example",
            "https://pbx-.example",
            "https://1.2.3",
            "https://999.1.1.1",
            "https://pbx.bü cher.example",
            "https://[::g]",
            "https://[1.2.3.4]",
        ],
    )
    def test_refused_at_the_call(self, uri: str) -> None:
        with pytest.raises(InvalidHostError):
            wire.validate_host(uri)

    @pytest.mark.parametrize("host", ["https://" + ".".join(["abcdefghi"] * 25) + ".abc"])
    def test_253_characters_accepted(self, host: str) -> None:
        assert len(host) - len("https://") == 253
        assert wire.validate_host(host) == host

    @pytest.mark.parametrize(
        "uri", ["http://evil.localhost", "http://pbx.localhost:1", "http://localhost.evil.com"]
    )
    def test_localhost_subdomain_is_not_loopback(self, uri: str) -> None:
        with pytest.raises(InvalidHostError, match="allow_insecure"):
            wire.validate_host(uri)

    @pytest.mark.parametrize("flag", ["False", 0, 1, None])
    def test_allow_insecure_must_be_a_bool(self, flag: Any) -> None:
        with pytest.raises(InvalidArgumentError):
            wire.validate_host("http://pbx.example.com", allow_insecure=flag)

    @given(st.text(max_size=80))
    @settings(max_examples=400, derandomize=True, deadline=None)
    def test_any_text_refused_or_normalised(self, text: str) -> None:
        for uri in (text, "https://" + text, "http://localhost:" + text):
            try:
                host = wire.validate_host(uri)
            except InvalidHostError:
                continue
            assert wire.validate_host(host) == host
            assert str(httpx.URL(host)).rstrip("/") == host
            # What the transport will do with it must not raise either.
            httpx.Request("POST", host + wire.COMMAND_PATH)


class TestBadHostsOfIssue15:
    """Issue 15.4, case by case: each refused at the call with InvalidHostError."""

    @pytest.mark.parametrize(
        "uri",
        [
            "https://a..b",  # was a UnicodeError inside login
            "https://" + "a" * 64,  # a 64-character label: same
            "https://" + "a" * 64 + ".pbx.example",
            "https://" + "a" * (1 << 20),  # a 1 MB host: was httpx.InvalidURL
            "https://" + ".".join(["abcdefghi"] * 30) + "x",  # 300 characters: was ssl.SSLError
            "https://pbx.example:0",  # port 0: was accepted, then port 80
            "https://pbx.example:0000",
            "http://localhost:0",
            "https://pbx.example/" + "p" * 2048,  # a URI over 2048 characters
            # Not valid punycode: httpx raised IDNAError (a UnicodeError) building the request.
            "https://xn--zz.example",
            "https://xn--a.example",
            "https://XN--ZZ.example:8443",
        ],
    )
    def test_refused(self, uri: str) -> None:
        with pytest.raises(InvalidHostError):
            wire.validate_host(uri)
        with pytest.raises(InvalidHostError):
            wire.validate_host(uri, allow_insecure=True)

    @pytest.mark.parametrize("uri", ["https://pbx.xn--zz", "https://a.xn--a.b", "https://xn--zz"])
    def test_bad_a_label_anywhere_never_escapes(self, uri: str) -> None:
        # Refused, or sent as it is: never a raw UnicodeError from httpx later.
        with contextlib.suppress(InvalidHostError):
            httpx.Request("POST", wire.validate_host(uri) + wire.COMMAND_PATH)

    def test_300_character_host_is_300_characters(self) -> None:
        assert len(".".join(["abcdefghi"] * 30) + "x") == 300

    @pytest.mark.parametrize(
        ("uri", "websocket"),
        [
            ("http://evil.localhost", False),
            ("http://evil.localhost:80/", False),
            ("http://EVIL.LOCALHOST", False),
            ("ws://evil.localhost", True),
            ("ws://a.b.localhost:9000", True),
        ],
    )
    def test_localhost_subdomain_over_plain_text_refused(self, uri: str, websocket: bool) -> None:
        with pytest.raises(InvalidHostError):
            wire.validate_host(uri, websocket=websocket)

    def test_localhost_subdomain_allowed_as_any_remote_host(self) -> None:
        # Not loopback, so like any remote host: https, or http with allow_insecure.
        assert wire.validate_host("https://evil.localhost") == "https://evil.localhost"
        assert wire.validate_host("http://evil.localhost", allow_insecure=True) == (
            "http://evil.localhost"
        )

    def test_one_spelling_per_pbx(self) -> None:
        """Issue 14 "Hosts": these were separate store keys, hence separate logins."""
        spellings = ["https://pbx:443", "https://PBX", "https://pbx/", "HTTPS://Pbx:443/"]
        assert {wire.validate_host(uri) for uri in spellings} == {"https://pbx"}
        assert {
            wire.validate_host(uri, allow_insecure=True)
            for uri in ["http://h:80", "http://H", "http://h/"]
        } == {"http://h"}

    @pytest.mark.parametrize(
        ("uri", "expected"),
        [
            ("https://pbx.bücher.example", "https://pbx.xn--bcher-kva.example"),
            ("https://pbx.xn--bcher-kva.example", "https://pbx.xn--bcher-kva.example"),
            ("https://東京.example:8443", "https://xn--1lqs71d.example:8443"),
        ],
    )
    def test_idna(self, uri: str, expected: str) -> None:
        assert wire.validate_host(uri) == expected
        assert httpx.Request("POST", expected + wire.COMMAND_PATH).headers["host"]
        assert wire.ws_host_for(expected) == expected.replace("https://", "wss://")


class TestIsLoopback:
    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("localhost", True),
            ("LocalHost", True),
            ("a.localhost", False),  # issue 15.4: was True
            ("evil.localhost", False),
            ("127.0.0.1", True),
            ("127.200.0.9", True),
            ("::1", True),
            ("[::1]", True),
            ("::2", False),
            ("128.0.0.1", False),
            ("example.com", False),
            ("localhost.example.com", False),
            ("", False),
        ],
    )
    def test_is_loopback(self, name: str, expected: bool) -> None:
        assert wire.is_loopback(name) is expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("https://pbx.example.com", "wss://pbx.example.com"),
        ("https://pbx.example.com:8443", "wss://pbx.example.com:8443"),
        ("http://localhost:8080", "ws://localhost:8080"),
        ("http://[::1]:81", "ws://[::1]:81"),
        ("http://127.0.0.1", "ws://127.0.0.1"),
    ],
)
def test_ws_host_for(host: str, expected: str) -> None:
    assert wire.ws_host_for(host) == expected
    # The result is itself a valid feed host.
    assert wire.validate_host(expected, websocket=True) == expected


# ==================================================================== sub-IDs


class TestSubId:
    @pytest.mark.parametrize(
        "subid",
        ["a", "Z", "0", "_", "-", "abc-DEF_123", "x" * 64, "A" * 63, "-_-", "tab1", "0123456789"],
    )
    def test_accepted(self, subid: str) -> None:
        assert wire.validate_sub_id(subid) == subid

    @pytest.mark.parametrize(
        "subid",
        [
            "",
            "x" * 65,
            "a b",
            " a",
            "a ",
            "a\n",
            "a\t",
            "é",
            "tab\u00e91",
            "\u0661",  # ARABIC-INDIC DIGIT ONE: a unicode digit, not 0-9
            "\uff46\uff55\uff4c\uff4c",  # fullwidth "full"
            "a.b",
            "a/b",
            "a&b",
            "a=b",
            "a+b",
            "a%20",
            "a:b",
        ],
    )
    def test_refused(self, subid: str) -> None:
        with pytest.raises(InvalidArgumentError):
            wire.validate_sub_id(subid)

    @pytest.mark.parametrize("subid", [None, 1, b"abc", ["a"]])
    def test_non_str_refused(self, subid: Any) -> None:
        with pytest.raises(InvalidArgumentError):
            wire.validate_sub_id(subid)

    def test_new_sub_id_valid_and_random(self) -> None:
        ids = {wire.new_sub_id() for _ in range(200)}
        assert len(ids) == 200
        for subid in ids:
            assert wire.validate_sub_id(subid) == subid
            assert re.fullmatch(r"[A-Za-z0-9_-]{16,64}", subid)


# =================================================================== commands


ALL_COMMANDS: list[tuple[str, wire.Command[Any]]] = [
    ("login", wire.login_command("admin", "pw")),
    ("login-checkonly", wire.login_command("admin", None, checkonly=True)),
    ("logout", wire.logout_command()),
    ("selcompany", wire.select_company_command("8")),
    ("rtcreset", wire.rtc_reset_command()),
    ("rtcreset-getnew", wire.rtc_new_password_command()),
    ("status", wire.status_command("online")),
    ("save", wire.save_history_command([])),
    ("load", wire.load_history_command()),
]


class TestCommandForms:
    def test_login(self) -> None:
        cmd = wire.login_command("admin", "pw")
        assert cmd.cmd == "login"
        assert form(cmd) == [("cmd", "login"), ("sessionUser", "admin"), ("sessionPass", "pw")]

    def test_login_checkonly(self) -> None:
        cmd = wire.login_command("admin", None, checkonly=True)
        assert form(cmd) == [("cmd", "login"), ("sessionUser", "admin"), ("checkonly", "1")]
        assert "sessionPass" not in dict(form(cmd))

    def test_login_checkonly_any_user(self) -> None:
        cmd = wire.login_command("", None, checkonly=True)
        assert form(cmd) == [("cmd", "login"), ("sessionUser", ""), ("checkonly", "1")]

    def test_logout(self) -> None:
        assert form(wire.logout_command()) == [("cmd", "logout")]

    def test_selcompany(self) -> None:
        assert form(wire.select_company_command("8")) == [("cmd", "selcompany"), ("company", "8")]

    @pytest.mark.parametrize(("release", "fields"), [(None, []), ("old-pw", [("pass", "old-pw")])])
    def test_rtcreset(self, release: str | None, fields: list[Any]) -> None:
        cmd = wire.rtc_reset_command(release=release)
        assert form(cmd) == [("cmd", "rtcreset"), *fields]

    def test_rtcreset_getnew(self) -> None:
        cmd = wire.rtc_new_password_command()
        assert form(cmd) == [("cmd", "rtcreset"), ("getnew", "1")]

    @pytest.mark.parametrize("show", ["online", "away", "xa", "dnd", "offline"])
    def test_status_show(self, show: str) -> None:
        assert form(wire.status_command(show)) == [("cmd", "status"), ("show", show)]

    def test_status_text(self) -> None:
        cmd = wire.status_command("away", "At lunch & back at 2 = soon")
        assert form(cmd) == [
            ("cmd", "status"),
            ("show", "away"),
            ("status", "At lunch & back at 2 = soon"),
        ]

    def test_status_empty_text_is_sent(self) -> None:
        assert form(wire.status_command("dnd", "")) == [
            ("cmd", "status"),
            ("show", "dnd"),
            ("status", ""),
        ]

    @pytest.mark.parametrize("show", ["", "Online", "busy", "invisible", "online "])
    def test_status_bad_show(self, show: str) -> None:
        with pytest.raises(InvalidArgumentError):
            wire.status_command(show)

    def test_save(self) -> None:
        records = [{"id": 1, "state": "ended"}]
        fields = form(wire.save_history_command(records))
        assert fields[:2] == [("cmd", "save"), ("type", "history")]
        assert [k for k, _ in fields] == ["cmd", "type", "data"]
        assert json.loads(base64.b64decode(fields[2][1], validate=True)) == records

    def test_load(self) -> None:
        assert form(wire.load_history_command()) == [("cmd", "load"), ("type", "history")]

    @pytest.mark.parametrize(("name", "cmd"), ALL_COMMANDS)
    def test_subid_appended_only_when_given(self, name: str, cmd: wire.Command[Any]) -> None:
        without = form(cmd)
        assert "subid" not in dict(without)
        with_subid = form(cmd, "my-Sub_1")
        assert with_subid == [*without, ("subid", "my-Sub_1")]
        assert without[0] == ("cmd", cmd.cmd)

    @pytest.mark.parametrize(
        "value",
        [
            "a&b=c",
            "x=y&cmd=logout",
            "with space",
            "plus+sign",
            "per%cent",
            "semi;colon",
            "new\nline",
            "hash#?slash/",
            "Zoë Müller",
            "東京",
            "emoji \U0001f600",
            '"quoted" <tag>',
        ],
    )
    def test_percent_encoding(self, value: str) -> None:
        cmds: list[wire.Command[Any]] = [
            wire.login_command(value.replace("\n", " "), value),
            wire.select_company_command(value),
            wire.rtc_reset_command(release=value),
            wire.status_command("online", value),
        ]
        for cmd in cmds:
            body = cmd.encode("sub")
            text = body.decode("ascii")
            # Nothing of the value leaks unescaped into the framing.
            assert text.count("&") == len(cmd.fields) + 1
            assert text.count("=") == len(cmd.fields) + 2
            assert " " not in text
            assert "\n" not in text
            assert form(cmd, "sub") == [("cmd", cmd.cmd), *cmd.fields, ("subid", "sub")]
            assert value in dict(form(cmd, "sub")).values()

    def test_unicode_is_utf8_percent_encoded(self) -> None:
        body = wire.select_company_command("é").encode(None)
        assert body == b"cmd=selcompany&company=%C3%A9"

    def test_space_and_reserved_encoding_exact(self) -> None:
        body = wire.status_command("away", "a b&c=d").encode(None)
        assert body in (
            b"cmd=status&show=away&status=a+b%26c%3Dd",
            b"cmd=status&show=away&status=a%20b%26c%3Dd",
        )

    def test_encode_is_bytes(self) -> None:
        assert wire.logout_command().encode(None) == b"cmd=logout"
        assert wire.logout_command().encode("s1") == b"cmd=logout&subid=s1"

    def test_command_constants(self) -> None:
        assert wire.COMMAND_PATH == "/api/api.whtm"
        assert wire.FEED_PATH == "/api/feed"
        assert wire.SESSION_COOKIE == "Red60urne"
        assert wire.FORM_CONTENT_TYPE == "application/x-www-form-urlencoded"
        assert wire.MAX_REPLY_BYTES == 1024 * 1024
        assert wire.MAX_HISTORY == 50


class TestRetrySafe:
    @pytest.mark.parametrize(
        ("cmd", "safe"),
        [
            (wire.login_command("admin", "pw"), False),
            (wire.login_command("admin", None, checkonly=True), True),
            (wire.login_command("", None, checkonly=True), True),
            (wire.logout_command(), True),
            (wire.select_company_command("7"), True),
            (wire.rtc_reset_command(), False),
            (wire.rtc_new_password_command(), False),
            (wire.rtc_reset_command(release="x"), False),
            (wire.status_command("offline"), True),
            (wire.status_command("online", "hi"), True),
            (wire.save_history_command([{"a": 1}]), True),
            (wire.load_history_command(), True),
        ],
    )
    def test_retry_safe(self, cmd: wire.Command[Any], safe: bool) -> None:
        assert cmd.retry_safe is safe

    def test_default_command_is_not_retry_safe(self) -> None:
        assert wire.Command("anything", (), lambda _root: None).retry_safe is False


class TestCommandRepr:
    def test_login_repr_hides_password(self) -> None:
        cmd = wire.login_command("admin", SECRET)
        text = repr(cmd)
        assert SECRET not in text
        assert SECRET not in str(cmd)
        assert "admin" in text
        assert "sessionPass='***'" in text

    def test_rtcreset_repr_hides_pass(self) -> None:
        cmd = wire.rtc_reset_command(release=SECRET)
        text = repr(cmd)
        assert SECRET not in text
        assert SECRET not in str(cmd)
        assert "pass='***'" in text
        assert "getnew" in repr(wire.rtc_new_password_command())

    def test_repr_shows_non_secret_fields(self) -> None:
        assert repr(wire.logout_command()) == "Command(logout)"
        assert repr(wire.select_company_command("8")) == "Command(selcompany: company='8')"

    def test_repr_hides_password_in_containers(self) -> None:
        cmds = [wire.login_command("admin", SECRET), wire.rtc_reset_command(release=SECRET)]
        assert SECRET not in repr(cmds)
        assert SECRET not in f"{cmds}"

    def test_encode_still_carries_secret(self) -> None:
        assert dict(form(wire.login_command("admin", SECRET)))["sessionPass"] == SECRET
        assert dict(form(wire.rtc_reset_command(release=SECRET)))["pass"] == SECRET


class TestLoginCommandRules:
    def test_empty_username_refused_without_checkonly(self) -> None:
        with pytest.raises(InvalidArgumentError):
            wire.login_command("", "pw")

    @pytest.mark.parametrize("password", [None, ""])
    def test_password_required(self, password: str | None) -> None:
        with pytest.raises(InvalidArgumentError):
            wire.login_command("admin", password)

    @pytest.mark.parametrize("password", [SECRET, ""])
    def test_password_with_checkonly_refused(self, password: str) -> None:
        with pytest.raises(InvalidArgumentError) as info:
            wire.login_command("admin", password, checkonly=True)
        assert SECRET not in str(info.value)

    def test_both_empty_refused(self) -> None:
        # The historical "login check" is expressed with checkonly=True instead.
        with pytest.raises(InvalidArgumentError):
            wire.login_command("", "")

    # Issue 15.6: also the Unicode line breaks (NEL, LS, PS) and DEL.
    @pytest.mark.parametrize(
        "username", ["ad\nmin", "ad\rmin", "a\x00", "\t", "a\x85", "a\u2028b", "a\u2029", "a\x7f"]
    )
    def test_control_characters_in_username_refused(self, username: str) -> None:
        with pytest.raises(InvalidArgumentError):
            wire.login_command(username, "pw")
        with pytest.raises(InvalidArgumentError):
            wire.login_command(username, None, checkonly=True)

    @pytest.mark.parametrize("username", [None, 5, b"admin"])
    def test_non_str_username_refused(self, username: Any) -> None:
        with pytest.raises(InvalidArgumentError):
            wire.login_command(username, "pw")

    def test_errors_never_hold_password(self) -> None:
        for call in (
            lambda: wire.login_command("", SECRET),
            lambda: wire.login_command("a\n", SECRET),
            lambda: wire.login_command("admin", SECRET, checkonly=True),
        ):
            with pytest.raises(InvalidArgumentError) as info:
                call()
            assert SECRET not in str(info.value)
            assert SECRET not in repr(info.value)


class TestLoginCommandInputs:
    """Issue 15.4: text that cannot be sent, and flags that are not booleans."""

    @pytest.mark.parametrize(
        ("username", "password"),
        [("ali\ud800ce", "pw"), ("alice", "p\udfffw"), ("\udc80", "pw")],
    )
    def test_lone_surrogate_refused(self, username: str, password: str) -> None:
        with pytest.raises(InvalidArgumentError) as info:
            wire.login_command(username, password)
        assert password not in str(info.value)

    def test_lone_surrogate_refused_for_checkonly(self) -> None:
        with pytest.raises(InvalidArgumentError):
            wire.login_command("a\ud800", None, checkonly=True)

    @pytest.mark.parametrize("flag", ["False", "", 1, 0, None])
    def test_checkonly_must_be_a_bool(self, flag: Any) -> None:
        with pytest.raises(InvalidArgumentError):
            wire.login_command("alice", None, checkonly=flag)

    def test_other_text_fields_refused(self) -> None:
        with pytest.raises(InvalidArgumentError):
            wire.status_command("away", "\ud800")
        with pytest.raises(InvalidArgumentError):
            wire.select_company_command("\ud800")


class TestLoginReplyUser:
    """Issue 15.6: a login reply must be for a real user, the one asked for."""

    @staticmethod
    def body(login: str) -> str:
        return (
            '<response result="success" cmd="login">\n'
            f'<user id="1" login="{login}" name="A" company="7" home="7"/>\n'
            "</response>\n"
        )

    @pytest.mark.parametrize(
        "login",
        [
            "",
            "bob",
            "Alice",
            "alice ",
            "alice&#10;",
            "ali&#13;ce",
            "alice&#9;",
            "al&#x85;",
            "a&#x2028;",
            "&#127;",
        ],
    )
    def test_refused(self, login: str) -> None:
        with pytest.raises(ProtocolError):
            wire.parse_reply(wire.login_command("alice", "pw"), 200, XML, self.body(login).encode())

    def test_checkonly_for_a_user_checks_it(self) -> None:
        command = wire.login_command("alice", None, checkonly=True)
        with pytest.raises(ProtocolError):
            wire.parse_reply(command, 200, XML, self.body("bob").encode())
        assert wire.parse_reply(command, 200, XML, self.body("alice").encode()).user.login == (
            "alice"
        )

    def test_checkonly_for_anyone_takes_any_real_user(self) -> None:
        command = wire.login_command("", None, checkonly=True)
        assert wire.parse_reply(command, 200, XML, self.body("bob").encode()).user.login == "bob"
        for login in ("", "b&#10;ob"):
            with pytest.raises(ProtocolError):
                wire.parse_reply(command, 200, XML, self.body(login).encode())

    @pytest.mark.parametrize("login", ["", "a&#10;b"])
    def test_selcompany_reply_needs_a_real_user(self, login: str) -> None:
        body = self.body(login).replace('cmd="login"', 'cmd="selcompany"')
        with pytest.raises(ProtocolError):
            wire.parse_reply(wire.select_company_command("7"), 200, XML, body.encode())


class TestFailureText:
    """Issue 15.6: a 900 KB error text is not carried (nor logged) whole."""

    def test_long_failure_text_clipped(self) -> None:
        text = "x" * 900_000
        body = fail_body("status", "badrequest", text)
        with pytest.raises(CommandError) as info:
            reply("status", body)
        assert len(info.value.message.encode()) <= wire.MAX_FAILURE_TEXT
        assert info.value.message.startswith("x" * 1000)
        assert len(str(info.value)) < 2 * wire.MAX_FAILURE_TEXT

    def test_cap_is_one_kib(self) -> None:
        assert wire.MAX_FAILURE_TEXT == 1024

    @pytest.mark.parametrize("unit", ["x", "é", "東", "\U0001f600"])
    def test_900_kb_text_cut_to_about_one_kib(self, unit: str) -> None:
        text = unit * (900_000 // len(unit.encode()))
        with pytest.raises(CommandError) as info:
            reply("status", fail_body("status", "badrequest", text))
        kept = info.value.message.encode("utf-8")  # still valid UTF-8: no character cut
        assert wire.MAX_FAILURE_TEXT - 8 <= len(kept) <= wire.MAX_FAILURE_TEXT
        assert info.value.message.endswith("\u2026")
        assert info.value.message[:-1] == unit * (len(info.value.message) - 1)

    def test_clipped_for_every_command_and_exception_kind(self) -> None:
        text = "y" * 900_000
        for cmd, code in [("login", "badauth"), ("logout", "notloggedin"), ("rtcreset", "stale")]:
            with pytest.raises(CommandError) as info:
                reply(cmd, fail_body(cmd, code, text))
            assert len(info.value.message.encode()) <= wire.MAX_FAILURE_TEXT
            assert len(str(info.value)) < 2 * wire.MAX_FAILURE_TEXT

    def test_text_at_the_cap_kept_whole(self) -> None:
        text = "z" * wire.MAX_FAILURE_TEXT
        with pytest.raises(CommandError) as info:
            reply("status", fail_body("status", "badrequest", text))
        assert info.value.message == text

    def test_long_code_clipped(self) -> None:
        with pytest.raises(CommandError) as info:
            reply("status", fail_body("status", "c" * 100_000))
        assert len(info.value.code) <= 64

    def test_long_foreign_fields_clipped_in_protocol_errors(self) -> None:
        for body in (
            f'<response result="success" cmd="{"c" * 100_000}"/>',
            f'<response result="{"r" * 100_000}" cmd="logout"/>',
            f"<{'t' * 100_000}/>",
        ):
            with pytest.raises(ProtocolError) as info:
                reply("logout", body)
            assert len(str(info.value)) < 500

    @pytest.mark.parametrize(
        ("text", "limit", "expected"),
        [
            ("", 10, ""),
            ("short", 10, "short"),
            ("exactly10!", 10, "exactly10!"),
            ("eleven char", 10, "eleven \u2026"),
            ("ééééé", 8, "éé\u2026"),
            ("東京東京", 9, "東京東京"[:2] + "\u2026"),
        ],
    )
    def test_clip(self, text: str, limit: int, expected: str) -> None:
        assert wire.clip(text, limit) == expected
        assert len(wire.clip(text, limit).encode()) <= limit

    @given(st.text(max_size=40), st.integers(min_value=0, max_value=50))
    @settings(max_examples=500, derandomize=True, deadline=None)
    def test_clip_never_over_the_limit(self, text: str, limit: int) -> None:
        clipped = wire.clip(text, limit)
        assert len(clipped.encode("utf-8", "replace")) <= limit
        if len(text.encode("utf-8", "replace")) <= limit:
            assert clipped == text
        else:
            assert text.startswith(clipped.removesuffix("\u2026"))

    def test_command_error_clips_any_message(self) -> None:
        # Not only parse_reply's: every CommandError the wire module makes.
        error = wire.command_error("status", "badrequest", "y" * 900_000)
        assert len(error.message.encode()) <= wire.MAX_FAILURE_TEXT
        assert len(str(error)) < 2 * wire.MAX_FAILURE_TEXT

    def test_check_company_error_with_a_huge_login_clipped(self) -> None:
        # The login comes from the PBX's reply (up to MAX_REPLY_BYTES), and the
        # norole message names it.
        user = User("1", "a" * 900_000, "A", "7", "7")
        with pytest.raises(PermissionDeniedError) as info:
            wire.check_company(user, "7")
        assert len(str(info.value)) < 2 * wire.MAX_FAILURE_TEXT


class TestSaveHistory:
    def test_round_trip(self) -> None:
        records = [
            {"id": "c1", "state": "ended", "party": "Zoë", "n": 3, "x": None},
            {"id": "c2", "state": "ended", "nested": {"a": [1, 2]}, "ok": True},
        ]
        data = dict(form(wire.save_history_command(records)))["data"]
        assert json.loads(base64.b64decode(data, validate=True).decode("utf-8")) == records

    def test_keeps_newest_50_oldest_first(self) -> None:
        records = [{"n": i} for i in range(120)]
        data = dict(form(wire.save_history_command(records)))["data"]
        kept = json.loads(base64.b64decode(data, validate=True))
        assert kept == [{"n": i} for i in range(70, 120)]
        assert len(kept) == wire.MAX_HISTORY

    @pytest.mark.parametrize("count", [0, 1, 49, 50, 51])
    def test_counts(self, count: int) -> None:
        records = [{"n": i} for i in range(count)]
        data = dict(form(wire.save_history_command(records)))["data"]
        kept = json.loads(base64.b64decode(data, validate=True))
        assert kept == records[-50:] if count else kept == []

    def test_accepts_any_sequence(self) -> None:
        records = tuple({"n": i} for i in range(3))
        data = dict(form(wire.save_history_command(records)))["data"]
        assert json.loads(base64.b64decode(data)) == list(records)

    def test_save_then_load_round_trip(self) -> None:
        records = [{"n": i, "who": "Zoë & <Ada>"} for i in range(60)]
        data = dict(form(wire.save_history_command(records)))["data"]
        body = (
            '<response result="success" cmd="load">\n'
            f'<data name="history">{data}</data>\n'
            "</response>\n"
        )
        result = reply("load", body)
        assert result.records == tuple(records[-50:])


# ==================================================================== replies


class TestParseReplySuccess:
    def test_protocol_login_example(self) -> None:
        result = reply("login", LOGIN_OK)
        assert result == wire.UserReply(
            user=User(
                id="101",
                login="admin",
                name="Ada Admin",
                company="7",
                home="default",
                permissions=(Permission("chat", False), Permission("admin", True)),
                companies=(Company("7", "Acme Ltd"), Company("8", "Bolt plc")),
            ),
        )
        assert result.user is not None
        assert result.user.is_multi_company
        assert result.user.has_permission("admin")
        assert not result.user.has_permission("root")

    def test_protocol_fail_example(self) -> None:
        body = (
            '<response result="fail" cmd="login" code="badauth">Bad username or password</response>'
        )
        with pytest.raises(LoginError) as info:
            reply("login", body)
        assert info.value.cmd == "login"
        assert info.value.code == "badauth"
        assert info.value.message == "Bad username or password"
        assert str(info.value) == "login failed: badauth: Bad username or password"

    def test_one_line_framing(self) -> None:
        body = (
            '<response result="success" cmd="login"><user id="1" login="u" name="U" '
            'company="c" home="h"/><action name="chat"/></response>'
        )
        user = reply("login", body).user
        assert user == User("1", "u", "U", "c", "h", (Permission("chat"),), ())

    def test_multi_line_framing_with_declaration(self) -> None:
        body = (
            '<?xml version="1.0" encoding="utf-8"?>\r\n'
            '<response result="success" cmd="selcompany">\r\n'
            '  <user id="101" login="admin" name="Ada Admin" company="8" home="7"/>\r\n'
            "</response>\r\n"
        )
        result = reply("selcompany", body)
        # Was `result.cmd == "selcompany"`: the reply's type now says which command it answers.
        assert type(result) is wire.UserReply
        assert (result.user.company, result.user.home) == ("8", "7")
        assert result.user.permissions == ()
        assert result.user.companies == ()

    def test_attribute_escaping(self) -> None:
        body = (
            '<response result="success" cmd="login">\n'
            '<user id="1" login="o&apos;neil" name="Ada &quot;The Admin&quot; &amp; Co &lt;HQ&gt;"'
            ' company="7" home="&#233;t&#xE9;"/>\n'
            '<company id="7" name="Tom &amp; Jerry &quot;Ltd&quot;"/>\n'
            "</response>\n"
        )
        user = reply("login", body).user
        assert user is not None
        assert user.name == 'Ada "The Admin" & Co <HQ>'
        assert user.login == "o'neil"
        assert user.home == "été"
        assert user.companies == (Company("7", 'Tom & Jerry "Ltd"'),)

    def test_utf8_body(self) -> None:
        body = (
            '<response result="success" cmd="login">\n'
            '<user id="1" login="zoe" name="Zoë Müller 東京" company="7" home="7"/>\n'
            "</response>\n"
        ).encode()
        user = reply("login", body).user
        assert user is not None
        assert user.name == "Zoë Müller 東京"

    @pytest.mark.parametrize(
        ("attrs", "expected"),
        [
            ('name="chat"', Permission("chat", False)),
            ('name="admin" company="true"', Permission("admin", True)),
            ('name="admin" company="false"', Permission("admin", False)),
            ('name="admin" company="1"', Permission("admin", False)),
            ('name="admin" company="TRUE"', Permission("admin", False)),
        ],
    )
    def test_permissions(self, attrs: str, expected: Permission) -> None:
        body = (
            '<response result="success" cmd="login">\n'
            '<user id="1" login="u" name="U" company="7" home="7"/>\n'
            f"<action {attrs}/>\n"
            "</response>\n"
        )
        user = reply("login", body).user
        assert user is not None
        assert user.permissions == (expected,)

    def test_companies_single_and_without_name(self) -> None:
        body = (
            '<response result="success" cmd="login">\n'
            '<user id="1" login="u" name="U" company="7" home="7"/>\n'
            '<company id="7"/>\n'
            "</response>\n"
        )
        user = reply("login", body).user
        assert user is not None
        assert user.companies == (Company("7", "7"),)
        assert not user.is_multi_company

    @pytest.mark.parametrize(
        "child",
        [
            '<action company="true"/>',
            '<action name=""/>',
            '<company name="x"/>',
            '<company id=""/>',
        ],
    )
    def test_nameless_action_or_idless_company(self, child: str) -> None:
        body = (
            '<response result="success" cmd="login">\n'
            '<user id="1" login="u" name="U" company="7" home="7"/>\n'
            f"{child}\n"
            "</response>\n"
        )
        with pytest.raises(ProtocolError):
            reply("login", body)

    def test_user_empty_attributes_are_kept(self) -> None:
        body = (
            '<response result="success" cmd="login">\n'
            '<user id="1" login="u" name="" company="7" home="7"/>\n'
            "</response>\n"
        )
        user = reply("login", body).user
        assert user is not None
        assert user.name == ""

    @pytest.mark.parametrize("cmd", ["logout", "status", "save"])
    def test_commands_without_payload(self, cmd: str) -> None:
        assert reply(cmd, f'<response result="success" cmd="{cmd}"/>\n') == wire.Ack(cmd)

    def test_cmd_attribute_may_be_absent(self) -> None:
        assert reply("logout", '<response result="success"/>') == wire.Ack("logout")

    def test_cmd_attribute_mismatch(self) -> None:
        with pytest.raises(ProtocolError):
            reply("logout", '<response result="success" cmd="login"/>')

    @pytest.mark.parametrize("result", [None, "", "ok", "SUCCESS", "failure"])
    def test_bad_result(self, result: str | None) -> None:
        attr = "" if result is None else f' result="{result}"'
        with pytest.raises(ProtocolError):
            reply("logout", f'<response{attr} cmd="logout"/>')

    @pytest.mark.parametrize(
        "ctype",
        [
            "text/xml; charset=utf-8",
            "text/xml",
            "TEXT/XML; charset=UTF-8",
            "text/xml;charset=utf-8",
            "application/xml",
        ],
    )
    def test_xml_content_types(self, ctype: str) -> None:
        assert reply("logout", '<response result="success" cmd="logout"/>', ctype=ctype).cmd == (
            "logout"
        )

    def test_body_exactly_1_mib_is_accepted(self) -> None:
        head = b'<response result="success" cmd="logout">'
        tail = b"</response>"
        body = head + b" " * (wire.MAX_REPLY_BYTES - len(head) - len(tail)) + tail
        assert len(body) == wire.MAX_REPLY_BYTES
        assert reply("logout", body) == wire.Ack("logout")


class TestParseReplyHttp:
    @pytest.mark.parametrize("status", [500, 502, 503, 504, 599])
    def test_5xx_unavailable(self, status: int) -> None:
        with pytest.raises(PbxUnavailableError, match=str(status)):
            reply("login", "oops", status=status, ctype="text/html")

    def test_5xx_with_xml_body_still_unavailable(self) -> None:
        with pytest.raises(PbxUnavailableError):
            reply("logout", '<response result="success" cmd="logout"/>', status=503)

    @pytest.mark.parametrize("status", [100, 201, 204, 301, 302, 304, 400, 403, 404, 405, 415, 499])
    def test_other_non_200_protocol_error(self, status: int) -> None:
        with pytest.raises(ProtocolError) as info:
            reply("logout", '<response result="success" cmd="logout"/>', status=status)
        assert not isinstance(info.value, PbxUnavailableError)

    @pytest.mark.parametrize(
        "ctype",
        [
            None,
            "",
            "text/html",
            "text/plain; charset=utf-8",
            "application/json",
            "text/xmlx",
            "xml",
        ],
    )
    def test_wrong_content_type(self, ctype: str | None) -> None:
        with pytest.raises(ProtocolError):
            reply("logout", '<response result="success" cmd="logout"/>', ctype=ctype)

    def test_body_over_1_mib(self) -> None:
        head = b'<response result="success" cmd="logout">'
        tail = b"</response>"
        body = head + b" " * (wire.MAX_REPLY_BYTES - len(head) - len(tail) + 1) + tail
        assert len(body) == wire.MAX_REPLY_BYTES + 1
        with pytest.raises(ProtocolError):
            reply("logout", body)

    def test_large_garbage_refused_before_parsing(self) -> None:
        with pytest.raises(ProtocolError, match="bytes"):
            reply("logout", b"<" * (2 * wire.MAX_REPLY_BYTES))


class TestParseReplyMalformed:
    @pytest.mark.parametrize(
        "body",
        [
            "",
            "   ",
            "not xml",
            "<response",
            '<response result="success" cmd="logout">',
            '<response result="success" cmd="logout"></respons>',
            '<response result="success" cmd="logout"/><response result="success"/>',
            '<response result=success cmd="logout"/>',
            '<response result="success" result="success"/>',
            '<response result="success" cmd="logout">&nbsp;</response>',
            '<response result="success" cmd="logout">&undefined;</response>',
            b'<response result="success" cmd="logout">\xff\xfe</response>',
            '<?xml version="1.0" encoding="b"?><response result="success"/>',
            '<?xml version="1.0" encoding="no-such-codec"?><response result="success"/>',
            '<?xml version="1.0" encoding="utf-7"?><response result="success"/>',
        ],
    )
    def test_malformed(self, body: str | bytes) -> None:
        with pytest.raises(ProtocolError):
            reply("logout", body)

    def test_billion_laughs_not_expanded(self) -> None:
        body = (
            '<?xml version="1.0"?>\n'
            "<!DOCTYPE lolz [\n"
            ' <!ENTITY lol "lol">\n'
            ' <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">\n'
            ' <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">\n'
            ' <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">\n'
            ' <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">\n'
            ' <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">\n'
            ' <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">\n'
            ' <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">\n'
            ' <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">\n'
            ' <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">\n'
            "]>\n"
            '<response result="fail" cmd="login" code="badauth">&lol9;</response>\n'
        )
        with pytest.raises(ProtocolError) as info:
            reply("login", body)
        assert not isinstance(info.value, CommandError)
        assert "lollol" not in str(info.value)

    def test_entity_in_attribute_not_expanded(self) -> None:
        body = (
            '<!DOCTYPE response [<!ENTITY who "Mallory">]>\n'
            '<response result="success" cmd="login">\n'
            '<user id="1" login="u" name="&who;" company="7" home="7"/>\n'
            "</response>\n"
        )
        with pytest.raises(ProtocolError):
            reply("login", body)

    @pytest.mark.parametrize(
        "doctype",
        [
            '<!DOCTYPE response SYSTEM "http://evil.example/r.dtd">',
            '<!DOCTYPE response PUBLIC "-//X//Y" "file:///etc/passwd">',
            '<!DOCTYPE response [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
            '<!DOCTYPE response [<!ENTITY % p SYSTEM "http://evil.example/p">%p;]>',
            "<!DOCTYPE response>",
            "<!DOCTYPE response []>",
        ],
    )
    def test_any_dtd_refused(self, doctype: str) -> None:
        body = f'{doctype}\n<response result="success" cmd="logout"/>\n'
        with pytest.raises(ProtocolError):
            reply("logout", body)

    def test_external_entity_reference_refused(self) -> None:
        body = (
            '<!DOCTYPE response [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
            '<response result="fail" cmd="login" code="badauth">&xxe;</response>\n'
        )
        with pytest.raises(ProtocolError) as info:
            reply("login", body)
        assert "root:" not in str(info.value)

    @pytest.mark.parametrize(
        "body",
        [
            '<reply result="success" cmd="logout"/>',
            '<Response result="success" cmd="logout"/>',
            '<html><body result="success"/></html>',
            '<x:response xmlns:x="urn:x" result="success" cmd="logout"/>',
        ],
    )
    def test_wrong_root(self, body: str) -> None:
        with pytest.raises(ProtocolError):
            reply("logout", body)

    @pytest.mark.parametrize("cmd", ["login", "selcompany"])
    def test_missing_user(self, cmd: str) -> None:
        body = f'<response result="success" cmd="{cmd}">\n<action name="chat"/>\n</response>\n'
        with pytest.raises(ProtocolError):
            reply(cmd, body)

    @pytest.mark.parametrize("missing", ["id", "login", "name", "company", "home"])
    @pytest.mark.parametrize("cmd", ["login", "selcompany"])
    def test_user_missing_attribute(self, cmd: str, missing: str) -> None:
        attrs = {"id": "1", "login": "u", "name": "U", "company": "7", "home": "7"}
        del attrs[missing]
        text = " ".join(f'{k}="{v}"' for k, v in attrs.items())
        body = f'<response result="success" cmd="{cmd}">\n<user {text}/>\n</response>\n'
        with pytest.raises(ProtocolError, match=missing):
            reply(cmd, body)

    @given(
        st.one_of(
            st.binary(max_size=80),
            st.lists(st.sampled_from(XML_PIECES), max_size=12).map(b"".join),
        ),
        st.sampled_from(sorted(COMMANDS)),
    )
    @settings(max_examples=500, derandomize=True, deadline=None)
    def test_any_body_stays_in_the_error_tree(self, body: bytes, name: str) -> None:
        with contextlib.suppress(PbxError):
            wire.parse_reply(COMMANDS[name], 200, XML, body)


class TestParseReplyFailures:
    @pytest.mark.parametrize(
        ("cmd", "code", "exc"),
        [
            ("login", "badauth", LoginError),
            ("login", "locked", LoginError),
            ("login", "notloggedin", LoginError),
            ("login", "badrequest", CommandError),
            ("logout", "notloggedin", SessionLostError),
            ("selcompany", "notloggedin", SessionLostError),
            ("selcompany", "norole", PermissionDeniedError),
            ("selcompany", "badcompany", UnknownCompanyError),
            ("rtcreset", "notloggedin", SessionLostError),
            ("rtcreset", "stale", StaleCredentialError),
            ("status", "notloggedin", SessionLostError),
            ("status", "norole", PermissionDeniedError),
            ("status", "badrequest", CommandError),
            ("save", "notloggedin", SessionLostError),
            ("save", "badrequest", CommandError),
            ("load", "notloggedin", SessionLostError),
            ("load", "somethingnew", CommandError),
            ("logout", "locked", CommandError),
            ("rtcreset", "badauth", CommandError),
        ],
    )
    def test_failure_codes(self, cmd: str, code: str, exc: type[CommandError]) -> None:
        with pytest.raises(CommandError) as info:
            reply(cmd, fail_body(cmd, code, "Human text"))
        assert type(info.value) is exc
        assert info.value.cmd == cmd
        assert info.value.code == code
        assert info.value.message == "Human text"
        assert isinstance(info.value, PbxError)

    def test_login_notloggedin_is_not_session_lost(self) -> None:
        with pytest.raises(LoginError) as info:
            reply("login", fail_body("login", "notloggedin"))
        assert not isinstance(info.value, SessionLostError)

    def test_failure_message_multi_line_is_stripped(self) -> None:
        body = '<response result="fail" cmd="status" code="badrequest">\n  bad show\n</response>\n'
        with pytest.raises(CommandError) as info:
            reply("status", body)
        assert info.value.message == "bad show"

    def test_failure_message_escaped(self) -> None:
        body = (
            '<response result="fail" cmd="status" code="badrequest">a &lt;b&gt; &amp; c</response>'
        )
        with pytest.raises(CommandError) as info:
            reply("status", body)
        assert info.value.message == "a <b> & c"

    def test_failure_without_message(self) -> None:
        with pytest.raises(LoginError) as info:
            reply("login", '<response result="fail" cmd="login" code="locked"/>')
        assert info.value.message == ""
        assert str(info.value) == "login failed: locked"

    @pytest.mark.parametrize("code_attr", ["", ' code=""'])
    def test_failure_without_code(self, code_attr: str) -> None:
        body = f'<response result="fail" cmd="login"{code_attr}>Bad</response>'
        with pytest.raises(ProtocolError):
            reply("login", body)

    def test_exception_str_never_holds_password(self) -> None:
        # The client never puts the password it sent into an error.
        cmd = wire.login_command("admin", SECRET)
        assert SECRET not in repr(cmd)
        with pytest.raises(LoginError) as info:
            reply("login", fail_body("login", "badauth", "Bad username or password"))
        assert SECRET not in str(info.value)
        assert SECRET not in repr(info.value)
        assert SECRET not in repr(info.value.args)


class TestRtcReset:
    def test_getnew_reply(self) -> None:
        body = f'<response result="success" cmd="rtcreset">\n<rtc pass="{SECRET}"/>\n</response>\n'
        result = reply("rtcreset-getnew", body)
        assert result == wire.RtcPassword(SECRET)
        assert result.password == SECRET
        assert SECRET not in repr(result)
        assert SECRET not in str(result)
        assert SECRET not in repr([result])

    def test_escaped_password(self) -> None:
        body = (
            '<response result="success" cmd="rtcreset">\n'
            '<rtc pass="a&quot;b&amp;c&lt;d"/>\n'
            "</response>\n"
        )
        assert reply("rtcreset-getnew", body).password == 'a"b&c<d'

    @pytest.mark.parametrize("inner", ["", "<rtc/>", '<rtc pass=""/>', '<other pass="x"/>'])
    def test_getnew_reply_without_password(self, inner: str) -> None:
        body = f'<response result="success" cmd="rtcreset">{inner}</response>'
        with pytest.raises(ProtocolError):
            reply("rtcreset-getnew", body)

    def test_release_reply_is_an_ack(self) -> None:
        result = reply("rtcreset", '<response result="success" cmd="rtcreset"/>\n')
        assert result == wire.Ack("rtcreset")

    def test_stale(self) -> None:
        with pytest.raises(StaleCredentialError) as info:
            reply("rtcreset", fail_body("rtcreset", "stale", "Password already reset"))
        assert info.value.code == "stale"

    def test_reply_repr_hides_password_even_when_built_directly(self) -> None:
        assert SECRET not in repr(wire.RtcPassword(SECRET))


class TestLoadHistory:
    @staticmethod
    def body(text: str) -> str:
        return (
            '<response result="success" cmd="load">\n'
            f'<data name="history">{text}</data>\n'
            "</response>\n"
        )

    def test_empty_list(self) -> None:
        assert reply("load", self.body(b64json([]))).records == ()

    def test_records(self) -> None:
        records = [{"id": "c1", "state": "ended"}, {"id": "c2", "who": "Zoë"}]
        assert reply("load", self.body(b64json(records))).records == tuple(records)

    def test_surrounding_whitespace_tolerated(self) -> None:
        text = f"\n  {b64json([{'a': 1}])}  \n"
        assert reply("load", self.body(text)).records == ({"a": 1},)

    def test_more_than_50_keeps_newest(self) -> None:
        records = [{"n": i} for i in range(55)]
        assert reply("load", self.body(b64json(records))).records == tuple(records[5:])

    @pytest.mark.parametrize(
        "text",
        [
            "not base64!",
            "W10",  # bad padding
            "W1 0=",
            "====",
            base64.b64encode(b"not json").decode(),
            base64.b64encode(b"\xff\xfe[]").decode(),
            base64.b64encode(b"[" * 100_000).decode(),  # nesting bomb
            "",
        ],
    )
    def test_bad_data(self, text: str) -> None:
        with pytest.raises(ProtocolError):
            reply("load", self.body(text))

    @pytest.mark.parametrize(
        "value", [{}, {"a": 1}, "text", 3, None, True, [1, 2], [{"a": 1}, "x"], [[]]]
    )
    def test_not_a_list_of_records(self, value: Any) -> None:
        with pytest.raises(ProtocolError):
            reply("load", self.body(b64json(value)))

    def test_missing_data_element(self) -> None:
        with pytest.raises(ProtocolError):
            reply("load", '<response result="success" cmd="load"/>\n')


class TestTypedReplies:
    """Issue 13.4: one reply type per command, and what it must carry is there."""

    USER = '<user id="1" login="alice" name="A" company="7" home="7"/>'
    PAYLOADS: ClassVar[dict[str, str]] = {
        "login": USER,
        "selcompany": USER,
        "rtcreset": "",
        "rtcreset-getnew": f'<rtc pass="{SECRET}"/>',
        "logout": "",
        "status": "",
        "save": "",
        "load": f"<data>{b64json([{'id': 'c1'}])}</data>",
    }

    @pytest.mark.parametrize(
        ("name", "command", "expected"),
        [
            ("login", wire.login_command("alice", "pw"), wire.UserReply),
            ("login", wire.login_command("alice", None, checkonly=True), wire.UserReply),
            ("selcompany", wire.select_company_command("7"), wire.UserReply),
            ("rtcreset", wire.rtc_reset_command(), wire.Ack),
            ("rtcreset", wire.rtc_reset_command(release="old"), wire.Ack),
            ("rtcreset-getnew", wire.rtc_new_password_command(), wire.RtcPassword),
            ("logout", wire.logout_command(), wire.Ack),
            ("status", wire.status_command("away", "hi"), wire.Ack),
            ("save", wire.save_history_command([{"a": 1}]), wire.Ack),
            ("load", wire.load_history_command(), wire.HistoryReply),
        ],
    )
    def test_one_type_per_command(
        self, name: str, command: wire.Command[Any], expected: type
    ) -> None:
        body = f'<response result="success" cmd="{command.cmd}">{self.PAYLOADS[name]}</response>'
        result = wire.parse_reply(command, 200, XML, body.encode())
        assert type(result) is expected
        if expected is wire.Ack:
            assert result == wire.Ack(command.cmd)

    def test_payloads_carried(self) -> None:
        def parsed(name: str) -> Any:
            cmd = COMMANDS[name].cmd
            body = f'<response result="success" cmd="{cmd}">{self.PAYLOADS[name]}</response>'
            return reply(name, body)

        assert parsed("login").user.login == "alice"
        assert parsed("selcompany").user.login == "alice"
        assert parsed("rtcreset-getnew").password == SECRET
        assert parsed("load").records == ({"id": "c1"},)

    @pytest.mark.parametrize(
        "command",
        [
            wire.login_command("alice", "pw"),
            wire.login_command("alice", None, checkonly=True),
            wire.login_command("", None, checkonly=True),
            wire.select_company_command("7"),
            wire.rtc_new_password_command(),
            wire.load_history_command(),
        ],
        ids=repr,
    )
    @pytest.mark.parametrize("inner", ["", "<other/>", "<rtc/>", "<data/>", '<user id="1"/>'])
    def test_success_without_its_payload_is_a_protocol_error(
        self, command: wire.Command[Any], inner: str
    ) -> None:
        # Never a reply with a missing field: the session has nothing to assert.
        body = f'<response result="success" cmd="{command.cmd}">{inner}</response>'
        with pytest.raises(ProtocolError):
            wire.parse_reply(command, 200, XML, body.encode())

    def test_reply_for_another_command_refused(self) -> None:
        body = f'<response result="success" cmd="login">{self.USER}</response>'
        for name in ("selcompany", "rtcreset", "rtcreset-getnew", "logout", "load"):
            with pytest.raises(ProtocolError):
                reply(name, body)

    def test_replies_are_frozen(self) -> None:
        result = reply(
            "rtcreset-getnew",
            f'<response result="success">{self.PAYLOADS["rtcreset-getnew"]}</response>',
        )
        with pytest.raises(AttributeError):
            result.password = "other"


#: The modules a reply goes through, from the bytes to the session's state.
REPLY_PATH = [
    *sorted(Path(wire.__file__).parent.glob("*.py")),
    *(
        Path(wire.__file__).parent.parent / f"{name}.py"
        for name in ("_safexml", "_transport", "_core", "_login", "_session", "_exit")
    ),
]


@pytest.mark.parametrize("path", REPLY_PATH, ids=lambda p: p.name)
def test_no_assert_on_the_reply_path(path: Path) -> None:
    """Issue 13.4: no ``assert`` on the reply path (``python -O`` would drop it)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    asserts = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Assert)]
    assert asserts == [], f"{path.name}: assert at lines {asserts}"


class TestFailureCodes:
    """Issue 13.4: every failure code is a named constant of the wire module."""

    def test_constants_are_the_protocol_codes(self) -> None:
        codes = {
            wire.CODE_NOT_LOGGED_IN: "notloggedin",
            wire.CODE_BAD_AUTH: "badauth",
            wire.CODE_LOCKED: "locked",
            wire.CODE_NO_ROLE: "norole",
            wire.CODE_BAD_COMPANY: "badcompany",
            wire.CODE_STALE: "stale",
        }
        assert all(constant == text for constant, text in codes.items())
        assert len(codes) == 6

    @pytest.mark.parametrize(
        ("cmd", "code", "exc"),
        [
            ("login", wire.CODE_BAD_AUTH, LoginError),
            ("login", wire.CODE_LOCKED, LoginError),
            ("login", wire.CODE_NOT_LOGGED_IN, LoginError),
            ("status", wire.CODE_NOT_LOGGED_IN, SessionLostError),
            ("selcompany", wire.CODE_NO_ROLE, PermissionDeniedError),
            ("selcompany", wire.CODE_BAD_COMPANY, UnknownCompanyError),
            ("rtcreset", wire.CODE_STALE, StaleCredentialError),
            ("logout", "anything-else", CommandError),
        ],
    )
    def test_command_error(self, cmd: str, code: str, exc: type[CommandError]) -> None:
        error = wire.command_error(cmd, code, "text")
        assert type(error) is exc
        assert (error.cmd, error.code, error.message) == (cmd, code, "text")

    @pytest.mark.parametrize(
        ("cmd", "code", "expected"),
        [
            ("status", wire.CODE_NOT_LOGGED_IN, True),
            ("login", wire.CODE_NOT_LOGGED_IN, True),
            ("selcompany", wire.CODE_NOT_LOGGED_IN, True),
            ("login", wire.CODE_BAD_AUTH, False),
            ("status", "badrequest", False),
            ("rtcreset", wire.CODE_STALE, False),
            ("status", "NotLoggedIn", False),
        ],
    )
    def test_is_not_logged_in(self, cmd: str, code: str, expected: bool) -> None:
        with pytest.raises(CommandError) as info:
            reply(cmd, fail_body(cmd, code))
        assert wire.is_not_logged_in(info.value) is expected


class TestCheckCompany:
    """Issue 13.4: ``selcompany``'s refusals, decided before any I/O."""

    MULTI = User("1", "ada", "Ada", "7", "7", (), (Company("7", "Home"), Company("8", "Branch")))

    @pytest.mark.parametrize("company_id", ["7", "8"])
    def test_known_company_passes(self, company_id: str) -> None:
        wire.check_company(self.MULTI, company_id)  # no error: selcompany may be sent

    @pytest.mark.parametrize(
        "companies", [(), (Company("7", "Home"),)], ids=["no companies", "one company"]
    )
    @pytest.mark.parametrize("company_id", ["7", "8", "99"])
    def test_single_company_user_is_norole(
        self, companies: tuple[Company, ...], company_id: str
    ) -> None:
        user = User("1", "bob", "Bob", "7", "7", (), companies)
        with pytest.raises(PermissionDeniedError) as info:
            wire.check_company(user, company_id)
        assert (info.value.cmd, info.value.code) == ("selcompany", wire.CODE_NO_ROLE)

    @pytest.mark.parametrize("company_id", ["9", "07", "7 ", "Home", "x" * 100_000])
    def test_unknown_company_is_badcompany(self, company_id: str) -> None:
        with pytest.raises(UnknownCompanyError) as info:
            wire.check_company(self.MULTI, company_id)
        assert (info.value.cmd, info.value.code) == ("selcompany", wire.CODE_BAD_COMPANY)
        assert len(str(info.value)) < 300  # a huge id is quoted clipped

    @pytest.mark.parametrize("company_id", ["", None, 8, b"8"])
    def test_not_a_company_id(self, company_id: Any) -> None:
        with pytest.raises(InvalidArgumentError):
            wire.check_company(self.MULTI, company_id)

    @pytest.mark.parametrize(
        ("company_id", "code"), [("8", wire.CODE_NO_ROLE), ("9", wire.CODE_BAD_COMPANY)]
    )
    def test_same_errors_as_the_pbx_reply(self, company_id: str, code: str) -> None:
        user = self.MULTI if code == wire.CODE_BAD_COMPANY else User("1", "b", "B", "7", "7")
        with pytest.raises(CommandError) as local:
            wire.check_company(user, company_id)
        with pytest.raises(CommandError) as remote:
            reply("selcompany", fail_body("selcompany", code))
        assert type(local.value) is type(remote.value)
        assert local.value.code == remote.value.code


# ===================================================================== cookie


class TestSessionCookie:
    @pytest.mark.parametrize(
        "header",
        [
            "Red60urne=abc123",
            "Red60urne=abc123; Path=/",
            "Red60urne=abc123; HttpOnly",
            "Red60urne=abc123; Path=/; HttpOnly",
            "Red60urne=abc123; Path=/; HttpOnly; Secure",
            "Red60urne=abc123; HttpOnly; Path=/; SameSite=lax; Secure",
            "Red60urne=abc123; path=/; httponly; secure; samesite=Strict",
            "Red60urne=abc123; Max-Age=3600; Path=/",
            "Red60urne=abc123; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Path=/",
            "Red60urne=abc123; Domain=pbx.example.com; Path=/",
            "Red60urne=abc123; Path=/; HttpOnly; Partitioned",
            "Red60urne=abc123; Priority=High; Secure",
            "Red60urne=abc123;Path=/;HttpOnly",
            'Red60urne="abc123"; Path=/',
        ],
    )
    def test_with_attributes(self, header: str) -> None:
        assert wire.session_cookie([header], HOST) == wire.CookieUpdate("abc123")

    def test_url_safe_token_value(self) -> None:
        value = "kq3-_Zx9AbCdEfGhIjKlMn"
        assert wire.session_cookie([f"Red60urne={value}; HttpOnly; Path=/"], HOST) == (
            wire.CookieUpdate(value)
        )

    def test_value_with_equals(self) -> None:
        assert wire.session_cookie(["Red60urne=YWJj==; Path=/"], HOST) == wire.CookieUpdate(
            "YWJj=="
        )

    def test_other_cookies_ignored(self) -> None:
        headers = [
            "other=1; Path=/",
            "Red60urneX=zzz; Path=/",
            "red60urne=lower; Path=/",
            "Red60urne=found; HttpOnly; Path=/",
        ]
        assert wire.session_cookie(headers, HOST) == wire.CookieUpdate("found")

    def test_only_other_cookies(self) -> None:
        assert wire.session_cookie(["other=1; Path=/", "x=y"], HOST) is None

    def test_attribute_named_like_cookie_is_not_the_cookie(self) -> None:
        # After the first pair everything is an attribute (RFC 6265 5.2).
        assert wire.session_cookie(["other=1; Red60urne=evil; Path=/"], HOST) is None

    @pytest.mark.parametrize(
        "headers",
        [
            [],
            [""],
            ["Red60urne"],
            ["Red60urne="],
            ["Red60urne=; Path=/"],
            ['Red60urne=""; Path=/'],
            ["Path=/; HttpOnly"],
        ],
    )
    def test_absent(self, headers: list[str]) -> None:
        assert wire.session_cookie(headers, HOST) is None

    def test_accepts_any_iterable(self) -> None:
        assert wire.session_cookie(iter(["Red60urne=v1; Path=/"]), HOST) == wire.CookieUpdate("v1")

    def test_cookie_header(self) -> None:
        assert wire.cookie_header("abc123") == "Red60urne=abc123"

    def test_round_trip(self) -> None:
        update = wire.session_cookie(["Red60urne=tok_en-1; HttpOnly; Secure; Path=/"], HOST)
        assert update is not None
        value = update.value
        assert value is not None
        assert wire.cookie_header(value) == "Red60urne=tok_en-1"


class TestSessionCookieLifetime:
    """Issue 14 "Less hand-written parsing" and 15.6: deletion, domain, size."""

    HOST = "pbx.example.com"

    @pytest.mark.parametrize(
        "header",
        [
            "Red60urne=deleted; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
            "Red60urne=deleted; expires=Thu, 01-Jan-1970 00:00:01 GMT; Path=/",
            "Red60urne=abc; Max-Age=0",
            "Red60urne=abc; Max-Age=-1; Path=/",
            "Red60urne=; Max-Age=0",
            "Red60urne=abc; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Max-Age=0",
            "Red60urne=abc; Domain=example.com; Max-Age=0",
        ],
    )
    def test_deleted_or_expired_clears(self, header: str) -> None:
        assert wire.session_cookie([header], self.HOST) == wire.CookieUpdate(None)

    def test_max_age_wins_over_a_past_expires(self) -> None:
        header = "Red60urne=abc; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=60"
        assert wire.session_cookie([header], self.HOST) == wire.CookieUpdate("abc")

    def test_bad_expiry_attributes_are_ignored(self) -> None:
        for header in ("Red60urne=abc; Expires=someday", "Red60urne=abc; Max-Age=soon"):
            assert wire.session_cookie([header], self.HOST) == wire.CookieUpdate("abc")

    def test_expiry_against_the_given_clock(self) -> None:
        header = "Red60urne=abc; Expires=Wed, 21 Oct 2037 07:28:00 GMT"
        assert wire.session_cookie([header], self.HOST, now=0) == wire.CookieUpdate("abc")
        assert wire.session_cookie([header], self.HOST, now=3e9) == wire.CookieUpdate(None)

    @pytest.mark.parametrize(
        ("domain", "host", "kept"),
        [
            ("pbx.example.com", "pbx.example.com", True),
            (".pbx.example.com", "pbx.example.com", True),
            ("example.com", "pbx.example.com", True),
            ("EXAMPLE.com", "pbx.example.com", True),
            ("evil.example", "pbx.example.com", False),
            ("ample.com", "pbx.example.com", False),
            ("sub.pbx.example.com", "pbx.example.com", False),
            ("0.0.1", "127.0.0.1", False),
            ("127.0.0.1", "127.0.0.1", True),
            ("example.com", "https://pbx.example.com:8443", True),
            ("evil.example", "https://pbx.example.com", False),
        ],
    )
    def test_domain(self, domain: str, host: str, kept: bool) -> None:
        header = f"Red60urne=abc; Domain={domain}; Path=/"
        expected = wire.CookieUpdate("abc") if kept else None
        assert wire.session_cookie([header], host) == expected

    def test_foreign_domain_deletion_ignored(self) -> None:
        header = "Red60urne=x; Domain=evil.example; Max-Age=0"
        assert wire.session_cookie([header], self.HOST) is None

    def test_size_cap(self) -> None:
        room = wire.MAX_COOKIE_BYTES - len("Red60urne=")
        at_cap = "a" * room
        assert wire.session_cookie([f"Red60urne={at_cap}"], self.HOST) == wire.CookieUpdate(at_cap)
        assert wire.session_cookie([f"Red60urne={at_cap}b"], self.HOST) is None
        assert wire.session_cookie(["Red60urne=" + "a" * 1_000_000], self.HOST) is None

    @pytest.mark.parametrize(
        "header",
        [
            "Red60urne=abc; Partitioned",
            "Red60urne=abc; Path=/; Secure; HttpOnly; Partitioned",
            "Red60urne=abc; Partitioned; SameSite=None; Secure",
            "Red60urne=abc; Priority=High; Unknown=1; flag",
        ],
    )
    def test_unknown_attributes_keep_the_cookie(self, header: str) -> None:
        assert wire.session_cookie([header], self.HOST) == wire.CookieUpdate("abc")

    def test_last_header_wins(self) -> None:
        headers = ["Red60urne=one; Path=/", "Red60urne=deleted; Max-Age=0"]
        assert wire.session_cookie(headers, self.HOST) == wire.CookieUpdate(None)
        assert wire.session_cookie(headers[::-1], self.HOST) == wire.CookieUpdate("one")

    def test_cap_is_rfc_6265_minimum(self) -> None:
        assert wire.MAX_COOKIE_BYTES == 4096

    @pytest.mark.parametrize(
        "header",
        [
            "Red60urne=deleted; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Domain=pbx.example.com",
            "Red60urne=deleted; Max-Age=0; Domain=.example.com; Path=/",
            "Red60urne=abc; Max-Age=0; Partitioned; Secure",
            "Red60urne=abc; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Partitioned",
        ],
    )
    def test_deletion_with_other_attributes_clears(self, header: str) -> None:
        assert wire.session_cookie([header], self.HOST) == wire.CookieUpdate(None)

    def test_expires_now_is_expired(self) -> None:
        header = "Red60urne=abc; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
        assert wire.session_cookie([header], self.HOST, now=0) == wire.CookieUpdate(None)
        assert wire.session_cookie([header], self.HOST, now=-1) == wire.CookieUpdate("abc")

    def test_oversize_cookie_does_not_clear_the_stored_one(self) -> None:
        # Ignored, not a deletion: what was stored stays.
        headers = ["Red60urne=one; Path=/", "Red60urne=" + "a" * wire.MAX_COOKIE_BYTES]
        assert wire.session_cookie(headers, self.HOST) == wire.CookieUpdate("one")
        assert wire.session_cookie(headers[1:], self.HOST) is None

    def test_foreign_domain_does_not_replace_the_cookie(self) -> None:
        headers = ["Red60urne=mine; Path=/", "Red60urne=theirs; Domain=evil.example; Path=/"]
        assert wire.session_cookie(headers, self.HOST) == wire.CookieUpdate("mine")

    def test_repr_hides_the_value(self) -> None:
        assert SECRET not in repr(wire.CookieUpdate(SECRET))
        assert SECRET not in repr([wire.CookieUpdate(SECRET)])


# ======================================================================= feed


class TestFeedUrl:
    @pytest.mark.parametrize(
        ("ws_host", "subid", "expected"),
        [
            ("wss://pbx.example.com", None, "wss://pbx.example.com/api/feed"),
            ("wss://pbx.example.com/", None, "wss://pbx.example.com/api/feed"),
            ("ws://localhost:8080", None, "ws://localhost:8080/api/feed"),
            ("wss://pbx.example.com", "abc", "wss://pbx.example.com/api/feed?subid=abc"),
            ("ws://[::1]:81", "A-b_9", "ws://[::1]:81/api/feed?subid=A-b_9"),
        ],
    )
    def test_feed_url(self, ws_host: str, subid: str | None, expected: str) -> None:
        assert wire.feed_url(ws_host, subid) == expected

    def test_subid_round_trips_through_query(self) -> None:
        subid = wire.new_sub_id()
        url = wire.feed_url("wss://x", subid)
        parts = urllib.parse.urlsplit(url)
        assert parts.path == "/api/feed"
        assert urllib.parse.parse_qs(parts.query) == {"subid": [subid]}


class TestStartFrame:
    def test_protocol_example_exact(self) -> None:
        frame = wire.start_frame(41, device=True, presence=True, mailbox=False, queue=False)
        assert frame == (
            '{"type": "start", "since": 41, "device": true, "presence": true, '
            '"mailbox": false, "queue": false}'
        )

    def test_fresh_start_is_null(self) -> None:
        frame = wire.start_frame(None, device=False, presence=True, mailbox=True, queue=False)
        assert json.loads(frame) == {
            "type": "start",
            "since": None,
            "device": False,
            "presence": True,
            "mailbox": True,
            "queue": False,
        }
        assert '"since": null' in frame

    def test_since_zero_is_not_null(self) -> None:
        frame = json.loads(
            wire.start_frame(0, device=True, presence=True, mailbox=True, queue=True)
        )
        assert frame["since"] == 0


class TestParseFeedFrame:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ('{"type": "ready", "seq": 41, "resumed": true}', wire.ReadyFrame(41, True)),
            ('{"type": "ready", "seq": 0, "resumed": false}', wire.ReadyFrame(0, False)),
            (
                '{"type": "error", "errno": 2, "message": "logged out"}',
                wire.ErrorFrame(2, "logged out"),
            ),
            ('{"type": "error", "errno": 100}', wire.ErrorFrame(100, "")),
            ('{"type": "error", "errno": 1, "message": "x", "extra": 1}', wire.ErrorFrame(1, "x")),
        ],
    )
    def test_ready_and_error(self, text: str | bytes, expected: object) -> None:
        assert wire.parse_feed_frame(text) == expected

    @pytest.mark.parametrize("kind", ["device", "presence", "mailbox", "queue", "chat", "call"])
    def test_event(self, kind: str) -> None:
        text = json.dumps({"type": "event", "seq": 42, "kind": kind, "data": {"a": [1, "é"]}})
        event = wire.parse_feed_frame(text)
        assert isinstance(event, FeedEvent)
        assert event.seq == 42
        assert event.kind == kind
        assert dict(event.data) == {"a": [1, "é"]}

    def test_event_data_is_read_only(self) -> None:
        event = wire.parse_feed_frame('{"type": "event", "seq": 1, "kind": "chat", "data": {}}')
        assert isinstance(event, FeedEvent)
        with pytest.raises(TypeError):
            event.data["x"] = 1  # type: ignore[index]

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "not json",
            "{",
            "{'type': 'ready'}",
            b"\xff\xfe",
            # a binary frame, even one holding valid JSON (errno 92 in the feed)
            b'{"type": "ready", "seq": 7, "resumed": true}',
            "[" * 100_000,  # nesting bomb
            "[]",
            '[{"type": "ready", "seq": 1, "resumed": true}]',
            '"ready"',
            "null",
            "42",
            "true",
            "{}",
            '{"type": "start", "since": null}',
            '{"type": "READY", "seq": 1, "resumed": true}',
            '{"type": null}',
            '{"type": 1}',
            '{"seq": 1, "resumed": true}',
            # ready
            '{"type": "ready", "resumed": true}',
            '{"type": "ready", "seq": "41", "resumed": true}',
            '{"type": "ready", "seq": 41.0, "resumed": true}',
            '{"type": "ready", "seq": true, "resumed": true}',
            '{"type": "ready", "seq": null, "resumed": true}',
            '{"type": "ready", "seq": 41}',
            '{"type": "ready", "seq": 41, "resumed": 1}',
            '{"type": "ready", "seq": 41, "resumed": "true"}',
            # event
            '{"type": "event", "kind": "chat", "data": {}}',
            '{"type": "event", "seq": "1", "kind": "chat", "data": {}}',
            '{"type": "event", "seq": 1.5, "kind": "chat", "data": {}}',
            '{"type": "event", "seq": false, "kind": "chat", "data": {}}',
            '{"type": "event", "seq": 1, "kind": "chat"}',
            '{"type": "event", "seq": 1, "kind": "chat", "data": null}',
            '{"type": "event", "seq": 1, "kind": "chat", "data": [1]}',
            '{"type": "event", "seq": 1, "kind": "chat", "data": "x"}',
            '{"type": "event", "seq": 1, "data": {}}',
            '{"type": "event", "seq": 1, "kind": 5, "data": {}}',
            # error
            '{"type": "error", "message": "x"}',
            '{"type": "error", "errno": "2", "message": "x"}',
            '{"type": "error", "errno": true, "message": "x"}',
            '{"type": "error", "errno": 2.0, "message": "x"}',
        ],
    )
    def test_bad_frames(self, text: str | bytes) -> None:
        with pytest.raises(ProtocolError):
            wire.parse_feed_frame(text)


class TestFeedReaction:
    @pytest.mark.parametrize(
        ("errno", "reaction"),
        [
            (1, wire.FeedReaction.RETRY),
            (2, wire.FeedReaction.SESSION_LOST),
            (3, wire.FeedReaction.RETRY),
            (90, wire.FeedReaction.RETRY),
            (91, wire.FeedReaction.RETRY),
            (92, wire.FeedReaction.RETRY),
            (100, wire.FeedReaction.FATAL),
            (0, wire.FeedReaction.RETRY),
            (4, wire.FeedReaction.RETRY),
            (99, wire.FeedReaction.RETRY),
            (101, wire.FeedReaction.RETRY),
            (-1, wire.FeedReaction.RETRY),
            (12345, wire.FeedReaction.RETRY),
        ],
    )
    def test_reaction(self, errno: int, reaction: wire.FeedReaction) -> None:
        assert wire.feed_reaction(errno) is reaction

    def test_client_side_errnos(self) -> None:
        assert wire.ERRNO_OPEN_FAILED == 91
        assert wire.ERRNO_CONNECTION_FAILED == 92


class TestCallRecord:
    def test_ended_call(self) -> None:
        data = {"state": "ended", "id": "c1", "party": "101", "duration": 12}
        record = wire.call_record(FeedEvent(5, "call", data))
        assert record == data
        assert isinstance(record, dict)

    def test_record_is_a_copy(self) -> None:
        event = FeedEvent(5, "call", {"state": "ended", "id": "c1"})
        record = wire.call_record(event)
        assert isinstance(record, dict)
        record["id"] = "changed"
        assert event.data["id"] == "c1"

    @pytest.mark.parametrize(
        ("kind", "data"),
        [
            ("call", {"state": "ringing", "id": "c1"}),
            ("call", {"state": "up"}),
            ("call", {"id": "c1"}),
            ("call", {"state": "ENDED"}),
            ("chat", {"state": "ended"}),
            ("device", {"state": "ended"}),
        ],
    )
    def test_not_an_ended_call(self, kind: str, data: dict[str, Any]) -> None:
        assert wire.call_record(FeedEvent(1, kind, data)) is None

    def test_feed_record_can_be_saved(self) -> None:
        event = wire.parse_feed_frame(
            json.dumps(
                {"type": "event", "seq": 9, "kind": "call", "data": {"state": "ended", "id": "c9"}}
            )
        )
        assert isinstance(event, FeedEvent)
        record = wire.call_record(event)
        assert record is not None
        data = dict(form(wire.save_history_command([record])))["data"]
        assert json.loads(base64.b64decode(data)) == [{"state": "ended", "id": "c9"}]


@pytest.mark.parametrize("uri", ["HTTPS://PBX:443", "Https://pbx:443/", "https://PBX"])
def test_an_upper_case_scheme_is_one_key_too(uri: str) -> None:
    # Found by a second review: httpx keeps the port of "HTTPS://PBX:443".
    assert wire.validate_host(uri) == "https://pbx"


# Pieces near the edges of the simple subset that ``_safexml`` reads without
# expat: quotes, entities, controls, non-ASCII, CDATA ends, declarations.
SIMPLE_PIECES = [
    b"<response", b"<r", b"</response>", b"</r>", b"/>", b">", b" ", b"\t", b"\n", b"\r",
    b' result="success"', b" cmd='x'", b' a="1"', b' a="2"', b' b = "x y"', b' c="&amp;"',
    b' d="\tx"', b' e="<"', b' x:y="1"', b"text", b"&amp;", b"&#65;", b"]]>", b"]", b"\xc3\xa9",
    b"\x00", b"\x01", b"\x7f", b"<!-- c -->", b"<?pi x?>", b"<![CDATA[z]]>", b"<child/>",
    b'<?xml version="1.0"?>', b'<?xml version="1.0" encoding="utf-8"?>',
    b'<?xml version="1.0" encoding="latin-1"?>', b"\xef\xbb\xbf", b"<!DOCTYPE r>",
]  # fmt: skip


def _expat_only(document: bytes) -> Any:
    """``_safexml.parse`` without its fast path: the element expat builds, or the error."""
    from pbxsession import _safexml

    saved = _safexml._simple
    _safexml._simple = lambda _document: None  # type: ignore[assignment]
    try:
        return _safexml.parse(document)
    except _safexml.UnsafeXmlError as exc:
        return exc
    finally:
        _safexml._simple = saved  # type: ignore[assignment]


class TestSimpleReplies:
    """The fast path for one-element replies builds exactly what expat builds, or declines."""

    @given(
        st.one_of(
            st.lists(st.sampled_from(SIMPLE_PIECES), max_size=10).map(b"".join),
            st.tuples(
                st.sampled_from([b"", b'<?xml version="1.0"?>\n']),
                st.lists(st.sampled_from(SIMPLE_PIECES[10:18]), max_size=4).map(b"".join),
                st.binary(max_size=12),
            ).map(lambda t: t[0] + b"<response" + t[1] + b">" + t[2] + b"</response>\n"),
        )
    )
    @settings(max_examples=3000, derandomize=True, deadline=None)
    def test_the_fast_path_agrees_with_expat(self, document: bytes) -> None:
        from pbxsession import _safexml

        fast = _safexml._simple(document)
        if fast is None:
            return
        slow = _expat_only(document)
        assert not isinstance(slow, Exception), (document, slow)
        assert (fast.tag, fast.attrib, fast.text, fast.tail, len(fast)) == (
            slow.tag, slow.attrib, slow.text, slow.tail, len(slow),
        )  # fmt: skip

    @pytest.mark.parametrize(
        "document",
        [
            b'<response result="success" cmd="rtcreset">\n</response>\n',
            b'<?xml version="1.0" encoding="utf-8"?>\n'
            b'<response result="fail" code="x">t</response>',
            b"<response/>",
        ],
    )
    def test_replies_as_the_pbx_sends_them_take_the_fast_path(self, document: bytes) -> None:
        from pbxsession import _safexml

        assert _safexml._simple(document) is not None

    @pytest.mark.parametrize(
        "document",
        [
            b'<response a="1" a="2"/>',
            b'<response a="&amp;"/>',
            b"<response>&amp;</response>",
            b"<response>a\r\nb</response>",
            b'<response a="x\ty"/>',
            b"<response><user/></response>",
            b'<?xml version="1.0" encoding="latin-1"?><response/>',
            b"<!DOCTYPE r><response/>",
            b"<response>\xc3\xa9</response>",
        ],
    )
    def test_anything_else_goes_to_expat(self, document: bytes) -> None:
        from pbxsession import _safexml

        assert _safexml._simple(document) is None
