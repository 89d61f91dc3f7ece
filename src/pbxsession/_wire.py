"""The PBX wire protocol (PROTOCOL.md v1): the only module that knows it.

Pure functions, no I/O: host rules, typed commands and their replies, the
failure codes, the session cookie, and the live feed's URL and frames.
Adapting pbxsession to another PBX dialect is a change to this file alone.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import ipaddress
import json
import re
import secrets
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import cookiejar
from typing import Any, Generic, TypeVar
from xml.etree.ElementTree import Element

import httpx

from . import _safexml
from ._errors import (
    CommandError,
    InvalidArgumentError,
    InvalidHostError,
    LoginError,
    PbxUnavailableError,
    PermissionDeniedError,
    ProtocolError,
    SessionLostError,
    StaleCredentialError,
    UnknownCompanyError,
)
from ._models import Company, FeedEvent, Permission, User

__all__ = [
    "CHAT_PERMISSION",
    "CODE_BAD_AUTH",
    "CODE_BAD_COMPANY",
    "CODE_LOCKED",
    "CODE_NOT_LOGGED_IN",
    "CODE_NO_ROLE",
    "CODE_STALE",
    "COMMAND_PATH",
    "FEED_PATH",
    "FORM_CONTENT_TYPE",
    "MAX_COOKIE_BYTES",
    "MAX_FAILURE_TEXT",
    "MAX_HISTORY",
    "MAX_REPLY_BYTES",
    "SESSION_COOKIE",
    "Ack",
    "Command",
    "CookieUpdate",
    "ErrorFrame",
    "FeedReaction",
    "HistoryReply",
    "ReadyFrame",
    "RtcPassword",
    "UserReply",
    "call_record",
    "check_company",
    "clip",
    "command_error",
    "cookie_header",
    "feed_reaction",
    "feed_url",
    "handshake_errno",
    "is_loopback",
    "is_not_logged_in",
    "load_history_command",
    "login_command",
    "logout_command",
    "new_sub_id",
    "parse_feed_frame",
    "parse_reply",
    "rtc_new_password_command",
    "rtc_reset_command",
    "save_history_command",
    "select_company_command",
    "session_cookie",
    "start_frame",
    "status_command",
    "validate_host",
    "validate_sub_id",
    "ws_host_for",
]

COMMAND_PATH = "/api/api.whtm"
FEED_PATH = "/api/feed"
SESSION_COOKIE = "Red60urne"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
MAX_REPLY_BYTES = 1 << 20
MAX_HISTORY = 50
#: A failure reply's text is kept (and so logged) up to this many UTF-8 bytes.
MAX_FAILURE_TEXT = 1024
#: RFC 6265 6.1's minimum a client must hold; a longer session cookie is ignored.
MAX_COOKIE_BYTES = 4096

#: Failure codes (PROTOCOL.md "Failure codes").
CODE_NOT_LOGGED_IN = "notloggedin"
CODE_BAD_AUTH = "badauth"
CODE_LOCKED = "locked"
CODE_NO_ROLE = "norole"
CODE_BAD_COMPANY = "badcompany"
CODE_STALE = "stale"
#: The permission (``action``) that lets a user set chat presence.
CHAT_PERMISSION = "chat"

_SUB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SHOWS = frozenset({"online", "away", "xa", "dnd", "offline"})
#: RFC 6265 cookie-octets: what a cookie value may hold and be presented back.
_COOKIE_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]+")
#: Control characters and line breaks: never in a user name, sent or received.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: The standard library's ``Set-Cookie`` parser (what ``CookieJar`` uses; not in typeshed).
_parse_set_cookie: Callable[[list[str]], list[list[tuple[str, Any]]]] = cookiejar.parse_ns_headers  # type: ignore[attr-defined]
#: Longest quoted piece of a reply an error message carries.
_QUOTED = 64


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8, ending in "…" when cut."""
    if len(text) * 4 <= limit:  # fast path: cannot be over, whatever it holds
        return text
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return text
    return encoded[: max(limit - 3, 0)].decode("utf-8", "ignore") + "\u2026"


# --------------------------------------------------------------------- hosts

#: Longest URI looked at: a 253-character name, a scheme, brackets and a port fit.
_MAX_URI = 300
_MAX_HOSTNAME = 253
#: One DNS label (RFC 1123), lower case after httpx; "_" is tolerated as in the wild.
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
#: A last label that makes the name an IPv4 address (WHATWG "ends in a number").
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


def is_loopback(hostname: str) -> bool:
    """Whether ``hostname`` names this machine: ``localhost``, 127.0.0.0/8 or ``::1``.

    ``*.localhost`` does not count: nothing guarantees that the resolver in
    use sends it to this machine.
    """
    name = hostname.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def validate_host(uri: str, *, websocket: bool = False, allow_insecure: bool = False) -> str:
    """Check ``uri`` against PROTOCOL.md's host rules; return it as ``scheme://host[:port]``.

    Normalised by :class:`httpx.URL` first: lower case, IDNA (``xn--``) form,
    default port and trailing ``/`` dropped, so one PBX has one spelling.
    Plain ``http``/``ws`` is accepted for loopback hosts, and for others only
    with ``allow_insecure``. Raises :class:`InvalidHostError`.
    """
    if type(websocket) is not bool or type(allow_insecure) is not bool:
        raise InvalidArgumentError("websocket and allow_insecure must be booleans")
    _check_raw_uri(uri)
    scheme, sep, rest = uri.partition("://")
    try:
        # httpx drops a default port only for a scheme written in lower case.
        url = httpx.URL(scheme.lower() + sep + rest)
        raw_host = url.raw_host.decode("ascii", "replace")
        port = url.port
    except (httpx.InvalidURL, ValueError) as exc:
        raise InvalidHostError(f"host is not a valid URI: {exc}") from None
    secure, plain = ("wss", "ws") if websocket else ("https", "http")
    if url.scheme not in (secure, plain):
        raise InvalidHostError(f"host must start with {secure}:// or {plain}://")
    if url.raw_path != b"/" or url.userinfo:
        raise InvalidHostError("host must not carry a path or user information")
    _check_hostname(raw_host)
    if port is not None and not 0 < port <= 65535:
        raise InvalidHostError("host port must be 1 to 65535")
    if url.scheme == plain and not allow_insecure and not is_loopback(raw_host):
        raise InvalidHostError(
            f"{plain}:// is only allowed for loopback hosts; pass allow_insecure=True"
        )
    netloc = f"[{raw_host}]" if ":" in raw_host else raw_host
    if port is not None:
        netloc = f"{netloc}:{port}"
    return f"{url.scheme}://{netloc}"


def _check_raw_uri(uri: object) -> None:
    """The rules httpx would not enforce, or would not survive (size, user info)."""
    if not isinstance(uri, str):
        raise InvalidHostError("host must be a string")
    if not uri:
        raise InvalidHostError("host is empty")
    if len(uri) > _MAX_URI:
        raise InvalidHostError(f"host is over {_MAX_URI} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in uri):
        raise InvalidHostError("host contains whitespace or control characters")
    # Checked here, before parsing, so no password in user info reaches a message.
    if "@" in uri:
        raise InvalidHostError("host must not carry user information")
    if any(c in uri for c in "?#\\"):
        raise InvalidHostError("host must not carry a query or fragment")


def _check_hostname(host: str) -> None:
    """An IP address, or a DNS name of at most 253 characters in 1-63-character labels."""
    if not host:
        raise InvalidHostError("host has no hostname")
    if ":" in host:  # httpx only lets an IPv6 literal through with a colon
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidHostError("host is not a valid IPv6 address") from None
        return
    if len(host) > _MAX_HOSTNAME:
        raise InvalidHostError(f"hostname is over {_MAX_HOSTNAME} characters")
    labels = host.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise InvalidHostError(
            "hostname labels are 1 to 63 letters, digits, '-' or '_', and no '-' at an end"
        )
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise InvalidHostError("host is not a valid IPv4 address") from None


def ws_host_for(host: str) -> str:
    """The default feed host for a validated ``host``: http → ws, https → wss."""
    scheme, rest = host.split("://", 1)
    return ("wss" if scheme == "https" else "ws") + "://" + rest


def validate_sub_id(subid: str) -> str:
    """Return ``subid`` if it is 1 to 64 of ``A-Z a-z 0-9 _ -``, else raise."""
    if not isinstance(subid, str) or not _SUB_ID.fullmatch(subid):
        raise InvalidArgumentError("a sub-ID is 1 to 64 characters of A-Z a-z 0-9 _ -")
    return subid


def new_sub_id() -> str:
    """A fresh random sub-ID (22 URL-safe characters, 128 bits)."""
    return secrets.token_urlsafe(16)


# ------------------------------------------------------------------- replies

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class UserReply:
    """The reply to ``login`` and ``selcompany``: the user, as the PBX sees it now."""

    user: User


@dataclass(frozen=True, slots=True)
class RtcPassword:
    """The reply to ``rtcreset getnew=1``: the new WebRTC password (``repr`` hides it)."""

    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class HistoryReply:
    """The reply to ``load type=history``: the newest saved call records, oldest first."""

    records: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Ack:
    """The reply to a command that carries nothing back but success."""

    cmd: str


def _ack(cmd: str) -> Callable[[Element], Ack]:
    reply = Ack(cmd)
    return lambda _root: reply


def _user_parser(cmd: str, username: str = "") -> Callable[[Element], UserReply]:
    """The parser of a reply carrying the user; ``username``: the one it must be."""

    def parse(root: Element) -> UserReply:
        user = _user(cmd, root)
        if username and user.login != username:
            # Exact, as the PBX compares: a reply about someone else is no login of ours.
            raise ProtocolError(f"reply to {cmd} is for another user than {username!r}")
        return UserReply(user)

    return parse


def _rtc_password(root: Element) -> RtcPassword:
    rtc = root.find("rtc")
    password = None if rtc is None else rtc.get("pass")
    if not password:
        raise ProtocolError("reply to rtcreset getnew=1 carries no password")
    return RtcPassword(password)


def _history(root: Element) -> HistoryReply:
    data = root.find("data")
    if data is None:
        raise ProtocolError("reply to load has no <data> element")
    try:
        decoded = json.loads(base64.b64decode((data.text or "").strip(), validate=True))
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise ProtocolError("saved history is not base64 JSON") from exc
    if not isinstance(decoded, list) or not all(isinstance(r, dict) for r in decoded):
        raise ProtocolError("saved history is not a list of records")
    return HistoryReply(tuple(decoded[-MAX_HISTORY:]))


def _user(cmd: str, root: Element) -> User:
    element = root.find("user")
    if element is None:
        raise ProtocolError(f"reply to {cmd} has no <user> element")
    values = {}
    for name in ("id", "login", "name", "company", "home"):
        value = element.get(name)
        if value is None:
            raise ProtocolError(f"<user> in the reply to {cmd} has no {name!r}")
        values[name] = value
    if not values["login"] or _CONTROL.search(values["login"]):
        raise ProtocolError(f"<user> in the reply to {cmd} has an empty or unprintable login")
    return User(
        id=values["id"],
        login=values["login"],
        name=values["name"],
        company=values["company"],
        home=values["home"],
        permissions=_permissions(cmd, root),
        companies=_companies(cmd, root),
    )


def _permissions(cmd: str, root: Element) -> tuple[Permission, ...]:
    permissions = []
    for action in root.iter("action"):
        action_name = action.get("name")
        if not action_name:
            raise ProtocolError(f"<action> in the reply to {cmd} has no name")
        permissions.append(Permission(action_name, action.get("company") == "true"))
    return tuple(permissions)


def _companies(cmd: str, root: Element) -> tuple[Company, ...]:
    companies = []
    for company in root.iter("company"):
        company_id = company.get("id")
        if not company_id:
            raise ProtocolError(f"<company> in the reply to {cmd} has no id")
        companies.append(Company(company_id, company.get("name") or company_id))
    return tuple(companies)


# ------------------------------------------------------------------ commands


@dataclass(frozen=True, slots=True)
class Command(Generic[R]):
    """One command, ready to encode, with the parser of its success reply.

    ``retry_safe`` says whether repeating it after an HTTP 5xx is harmless
    (PROTOCOL.md: never ``rtcreset`` nor a password login). Its ``repr``
    hides secret fields. Every field must be encodable as UTF-8.
    """

    cmd: str
    fields: tuple[tuple[str, str], ...]
    parse: Callable[[Element], R] = field(compare=False)
    retry_safe: bool = False
    secret_fields: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name, value in self.fields:
            if not isinstance(value, str) or not _utf8(value):
                # Named, never quoted: the value may be a password.
                raise InvalidArgumentError(f"{name} must be text that can be sent as UTF-8")

    def encode(self, subid: str | None) -> bytes:
        """The percent-encoded form body, with ``subid`` when one is active."""
        pairs = [("cmd", self.cmd), *self.fields]
        if subid is not None:
            pairs.append(("subid", subid))
        return urllib.parse.urlencode(pairs).encode("ascii")

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{k}={'***' if k in self.secret_fields else v!r}" for k, v in self.fields
        )
        return f"Command({self.cmd}{': ' if shown else ''}{shown})"


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def login_command(
    username: str, password: str | None, *, checkonly: bool = False
) -> Command[UserReply]:
    """``login``: with a password, or ``checkonly`` (adopt an existing login, no password).

    The reply must be about ``username`` (any user for a ``checkonly`` with
    an empty name).
    """
    if type(checkonly) is not bool:
        raise InvalidArgumentError("checkonly must be a boolean")
    if not isinstance(username, str) or _CONTROL.search(username):
        raise InvalidArgumentError("username must be a string without control characters")
    parse = _user_parser("login", username)
    if checkonly:
        if password is not None:
            raise InvalidArgumentError("a checkonly login takes no password")
        fields = (("sessionUser", username), ("checkonly", "1"))
        return Command("login", fields, parse, retry_safe=True)
    if not username:
        raise InvalidArgumentError("username is empty")
    if not isinstance(password, str) or not password:
        raise InvalidArgumentError("a password is required unless checkonly=True")
    fields = (("sessionUser", username), ("sessionPass", password))
    return Command("login", fields, parse, secret_fields=frozenset({"sessionPass"}))


def logout_command() -> Command[Ack]:
    """``logout``."""
    return Command("logout", (), _ack("logout"), retry_safe=True)


def select_company_command(company_id: str) -> Command[UserReply]:
    """``selcompany``."""
    fields = (("company", company_id),)
    return Command("selcompany", fields, _user_parser("selcompany"), retry_safe=True)


def rtc_reset_command(*, release: str | None = None) -> Command[Ack]:
    """``rtcreset``: ``release`` is the password being given up (stale-checked)."""
    fields = () if release is None else (("pass", release),)
    return Command("rtcreset", fields, _ack("rtcreset"), secret_fields=frozenset({"pass"}))


def rtc_new_password_command() -> Command[RtcPassword]:
    """``rtcreset getnew=1``: randomise the WebRTC password and return the new one."""
    return Command("rtcreset", (("getnew", "1"),), _rtc_password)


def status_command(show: str, text: str | None = None) -> Command[Ack]:
    """``status``: chat presence ``show`` with an optional status text."""
    if show not in _SHOWS:
        raise InvalidArgumentError(f"show must be one of {sorted(_SHOWS)}")
    fields = [("show", show)]
    if text is not None:
        fields.append(("status", text))
    return Command("status", tuple(fields), _ack("status"), retry_safe=True)


def save_history_command(records: Sequence[Mapping[str, Any]]) -> Command[Ack]:
    """``save type=history``: the newest :data:`MAX_HISTORY` records, oldest first."""
    kept = list(records)[-MAX_HISTORY:]
    data = base64.b64encode(json.dumps(kept, separators=(",", ":")).encode()).decode("ascii")
    fields = (("type", "history"), ("data", data))
    return Command("save", fields, _ack("save"), retry_safe=True)


def load_history_command() -> Command[HistoryReply]:
    """``load type=history``."""
    return Command("load", (("type", "history"),), _history, retry_safe=True)


# ----------------------------------------------------------- reply envelope

_FAILURES: Mapping[str, type[CommandError]] = {
    CODE_NO_ROLE: PermissionDeniedError,
    CODE_BAD_COMPANY: UnknownCompanyError,
    CODE_STALE: StaleCredentialError,
    CODE_NOT_LOGGED_IN: SessionLostError,
}
#: To ``login``, these say the login itself failed (not that a session was lost).
_LOGIN_FAILURES = frozenset({CODE_BAD_AUTH, CODE_LOCKED, CODE_NOT_LOGGED_IN})


def command_error(cmd: str, code: str, message: str = "") -> CommandError:
    """The exception for a ``result="fail"`` reply to ``cmd`` with ``code``."""
    if cmd == "login" and code in _LOGIN_FAILURES:
        return LoginError(cmd, code, message)
    return _FAILURES.get(code, CommandError)(cmd, code, message)


def is_not_logged_in(error: CommandError) -> bool:
    """Whether ``error`` is the PBX saying the context is not logged in."""
    return error.code == CODE_NOT_LOGGED_IN


def check_company(user: User, company_id: str) -> None:
    """Refuse, before any I/O, what the PBX would refuse of ``selcompany``.

    ``norole`` for a user with fewer than two companies, ``badcompany`` for
    an id not among them (PROTOCOL.md).
    """
    if not isinstance(company_id, str) or not company_id:
        raise InvalidArgumentError("company_id must be a non-empty string")
    if not user.is_multi_company:
        raise command_error(
            "selcompany", CODE_NO_ROLE, f"{user.login} does not administer several companies"
        )
    if company_id not in {c.id for c in user.companies}:
        raise command_error(
            "selcompany",
            CODE_BAD_COMPANY,
            f"{clip(company_id, _QUOTED)!r} is not one of the login's companies",
        )


def parse_reply(command: Command[R], status: int, content_type: str | None, body: bytes) -> R:
    """Parse the HTTP reply to ``command``; raise the documented error for a failure.

    HTTP 5xx is :class:`PbxUnavailableError`; any other non-200, a wrong
    content type, more than :data:`MAX_REPLY_BYTES`, XML that is malformed or
    declares a DTD or entities, or a reply missing what ``command`` must
    carry is :class:`ProtocolError`; ``result="fail"`` is a
    :class:`CommandError` (its text cut to :data:`MAX_FAILURE_TEXT` bytes).
    """
    cmd = command.cmd
    _check_envelope(cmd, status, content_type, body)
    try:
        root = _safexml.parse(body)
    except _safexml.UnsafeXmlError as exc:
        raise ProtocolError(f"reply to {cmd} is not well-formed, safe XML: {exc}") from None
    if root.tag != "response":
        raise ProtocolError(f"reply to {cmd} has root <{clip(root.tag, _QUOTED)}>, not <response>")
    if root.get("cmd") not in (None, cmd):
        raise ProtocolError(f"reply is for {clip(root.get('cmd', ''), _QUOTED)!r}, not {cmd!r}")
    result = root.get("result")
    if result == "fail":
        code = root.get("code")
        if not code:
            raise ProtocolError(f"failure reply to {cmd} carries no code")
        message = clip((root.text or "").strip(), MAX_FAILURE_TEXT)
        raise command_error(cmd, clip(code, _QUOTED), message)
    if result != "success":
        raise ProtocolError(f"reply to {cmd} has result {clip(result or '', _QUOTED)!r}")
    return command.parse(root)


def _check_envelope(cmd: str, status: int, content_type: str | None, body: bytes) -> None:
    """The HTTP status, media type and size rules, before any XML is read."""
    if status >= 500:
        raise PbxUnavailableError(f"the PBX failed: HTTP {status}")
    if status != 200:
        raise ProtocolError(f"unexpected HTTP {status} to {cmd}")
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in ("text/xml", "application/xml"):
        raise ProtocolError(f"reply to {cmd} is {clip(media, _QUOTED) or 'untyped'}, not XML")
    if len(body) > MAX_REPLY_BYTES:
        raise ProtocolError(f"reply to {cmd} is over {MAX_REPLY_BYTES} bytes")


# -------------------------------------------------------------------- cookie


@dataclass(frozen=True, slots=True)
class CookieUpdate:
    """What a reply did to the session cookie: set ``value``, or clear it (``None``)."""

    value: str | None

    def __repr__(self) -> str:
        # The cookie is a credential: never shown.
        return "CookieUpdate(clear)" if self.value is None else "CookieUpdate(set)"


def session_cookie(
    set_cookie_headers: Iterable[str], request_host: str, *, now: float | None = None
) -> CookieUpdate | None:
    """What a reply's ``Set-Cookie`` headers do to the session cookie, if anything.

    Parsed as :mod:`http.cookiejar` parses them (unknown attributes such as
    ``Partitioned`` are ignored, not fatal). ``CookieUpdate(None)`` when the
    PBX deleted or expired it (``Max-Age`` <= 0, or ``Expires`` not after
    ``now``); ``None`` when no header sets it for ``request_host`` (a bare
    host name or a URL): one with a ``Domain`` that does not domain-match,
    a value that is not RFC 6265 cookie-octets, or one over
    :data:`MAX_COOKIE_BYTES` is ignored. The last header that applies wins.
    """
    moment = time.time() if now is None else now
    found = None
    for header in set_cookie_headers:
        update = _one_cookie(header, request_host, moment)
        if update is not None:
            found = update
    return found


def _one_cookie(header: str, request_host: str, now: float) -> CookieUpdate | None:
    if not header.lstrip().startswith(SESSION_COOKIE):  # the usual other cookie, not parsed
        return None
    parsed = _parse_set_cookie([header])
    if not parsed:
        return None
    (name, value), *attributes = parsed[0]
    if name != SESSION_COOKIE or value is None:
        return None
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if len(name) + 1 + len(value) > MAX_COOKIE_BYTES:
        return None
    attrs: dict[str, Any] = {key.lower(): attr for key, attr in attributes}
    domain = attrs.get("domain")
    if isinstance(domain, str) and not _domain_match(_cookie_host(request_host), domain):
        return None
    if _expired(attrs, now):
        return CookieUpdate(None)
    if not _COOKIE_VALUE.fullmatch(value):
        return None
    return CookieUpdate(value)


@functools.lru_cache(maxsize=256)  # the same few hosts, reply after reply
def _cookie_host(request_host: str) -> str:
    if "://" in request_host:
        return httpx.URL(request_host).raw_host.decode("ascii", "replace")
    return request_host.strip("[]").lower()


def _domain_match(host: str, domain: str) -> bool:
    """RFC 6265 5.1.3; an empty ``Domain`` is ignored (5.2.3)."""
    domain = domain.strip().lstrip(".").lower()
    if not domain or host == domain:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host.endswith("." + domain)
    return False  # an IP address matches itself only


def _expired(attrs: Mapping[str, Any], now: float) -> bool:
    """RFC 6265 5.2.1-2: ``Max-Age`` wins over ``Expires``; invalid ones are ignored."""
    max_age = attrs.get("max-age")
    if isinstance(max_age, str) and re.fullmatch(r"-?[0-9]+", max_age.strip()):
        return int(max_age) <= 0
    expires = attrs.get("expires")  # the parser made it seconds, or None
    return isinstance(expires, (int, float)) and expires <= now


def cookie_header(cookie: str) -> str:
    """The ``Cookie`` request header value that presents the session cookie."""
    return f"{SESSION_COOKIE}={cookie}"


# ---------------------------------------------------------------------- feed


def feed_url(ws_host: str, subid: str | None) -> str:
    """The feed's WebSocket URL on ``ws_host``, with the active sub-ID."""
    url = ws_host.rstrip("/") + FEED_PATH
    if subid is not None:
        url += "?" + urllib.parse.urlencode({"subid": subid})
    return url


def start_frame(
    since: int | None, *, device: bool, presence: bool, mailbox: bool, queue: bool
) -> str:
    """The client's one start frame, sent right after the handshake."""
    return json.dumps(
        {
            "type": "start",
            "since": since,
            "device": device,
            "presence": presence,
            "mailbox": mailbox,
            "queue": queue,
        }
    )


@dataclass(frozen=True, slots=True)
class ReadyFrame:
    """``ready``: the server's newest ``seq``; ``resumed`` false means a gap."""

    seq: int
    resumed: bool


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """``error``: the feed ends after it; ``errno`` is a 6.5 feed error number."""

    errno: int
    message: str


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"feed frame field {what} is not an integer")
    return value


#: Parses a frame that is one JSON value with nothing around it, the usual case.
_raw_decode = json.JSONDecoder().raw_decode


def parse_feed_frame(text: str) -> ReadyFrame | FeedEvent | ErrorFrame:
    """Parse one server text frame; anything off-protocol is :class:`ProtocolError`.

    The feed speaks JSON in text frames only: a binary frame (``bytes``) is
    off-protocol too (the client treats it as errno 92).
    """
    # Fast path for the feed's hot loop: ``raw_decode`` skips ``json.loads``'
    # whitespace scans. Anything it does not take whole (surrounding
    # whitespace, bad JSON) goes through ``json.loads``, which decides.
    if type(text) is not str:
        raise ProtocolError("binary feed frame: the feed sends JSON text frames only")
    frame: Any = None
    parsed = False
    try:
        frame, end = _raw_decode(text)
    except (ValueError, RecursionError):
        pass
    else:
        parsed = end == len(text)
    if not parsed:
        try:
            frame = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError("feed frame is not JSON") from exc
    if not isinstance(frame, dict):
        raise ProtocolError("feed frame is not a JSON object")
    kind = frame.get("type")
    if kind == "event":
        seq, event_kind, data = frame.get("seq"), frame.get("kind"), frame.get("data")
        if type(seq) is int and type(event_kind) is str and type(data) is dict:
            # JSON gives exactly these types; ``data`` is fresh, held by no one else.
            return FeedEvent._from_parsed(seq, event_kind, data)
        if not isinstance(data, dict) or not isinstance(event_kind, str):
            raise ProtocolError("event frame needs a kind and a data object")
        return FeedEvent(_int(seq, "seq"), event_kind, data)
    if kind == "ready":
        resumed = frame.get("resumed")
        if not isinstance(resumed, bool):
            raise ProtocolError("ready frame needs a boolean resumed")
        return ReadyFrame(_int(frame.get("seq"), "seq"), resumed)
    if kind == "error":
        return ErrorFrame(_int(frame.get("errno"), "errno"), str(frame.get("message", "")))
    raise ProtocolError(f"unknown feed frame type {kind!r}")


class FeedReaction(enum.Enum):
    """What the client does about a feed error number (PROTOCOL.md's table).

    Every retry resumes from the last delivered sequence number, for errno
    3, 90 and 91 too: resuming is harmless and keeps delivery exactly-once.
    """

    RETRY = "retry"
    SESSION_LOST = "session_lost"
    FATAL = "fatal"


_REACTIONS: Mapping[int, FeedReaction] = {
    1: FeedReaction.RETRY,
    2: FeedReaction.SESSION_LOST,
    3: FeedReaction.RETRY,
    90: FeedReaction.RETRY,
    91: FeedReaction.RETRY,
    92: FeedReaction.RETRY,
    100: FeedReaction.FATAL,
}

#: errno the client assigns to a handshake that failed (not a 403).
ERRNO_OPEN_FAILED = 91
#: errno the client assigns to a feed cut off, closed without error, silent,
#: or sending a frame off-protocol (binary, malformed).
ERRNO_CONNECTION_FAILED = 92
#: errno of a feed the PBX logged out (an error frame, or a 403 handshake).
ERRNO_LOGGED_OUT = 2

#: Handshake statuses with their own errno; every other refusal (404: no feed
#: at that URL, a wrong port or path; 5xx) is an open failure, retried.
_HANDSHAKE_ERRNOS: Mapping[int, int] = {403: ERRNO_LOGGED_OUT}


def feed_reaction(errno: int) -> FeedReaction:
    """The reaction to ``errno``; unknown numbers are treated like 90 (retry)."""
    return _REACTIONS.get(errno, FeedReaction.RETRY)


def handshake_errno(status: int) -> int:
    """The feed errno of a handshake refused with HTTP ``status`` (403: 2, else 91)."""
    return _HANDSHAKE_ERRNOS.get(status, ERRNO_OPEN_FAILED)


def call_record(event: FeedEvent) -> Mapping[str, Any] | None:
    """The call record an ended-call event carries, else ``None``."""
    if event.kind == "call" and event.data.get("state") == "ended":
        return dict(event.data)
    return None
