"""The PBX wire protocol (PROTOCOL.md v1): the only module that knows it.

Pure functions, no I/O: host rules, command forms and their typed replies,
failure codes, the session cookie, and the live feed's URL, frames, error
numbers and handshake statuses. Adapting pbxsession to another PBX dialect
is a change to this file alone.
"""

from __future__ import annotations

import base64
import binascii
import email.message
import enum
import ipaddress
import json
import re
import secrets
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.cookiejar import Cookie, CookieJar, DefaultCookiePolicy
from typing import Any, Generic, Literal, TypeVar, overload
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeXML
import httpx
from defusedxml import DefusedXmlException

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
    "MAX_HISTORY",
    "MAX_MESSAGE_CHARS",
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
    "is_loopback",
    "is_not_logged_in",
    "load_history_command",
    "login_command",
    "logout_command",
    "new_sub_id",
    "parse_feed_frame",
    "parse_reply",
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
#: RFC 6265 section 6.1: the least a client must keep; a larger cookie is ignored.
MAX_COOKIE_BYTES = 4096
#: A failure reply's human text is cut here (it ends up in messages and logs).
MAX_MESSAGE_CHARS = 1024

CODE_BAD_AUTH = "badauth"
CODE_LOCKED = "locked"
CODE_NOT_LOGGED_IN = "notloggedin"
CODE_NO_ROLE = "norole"
CODE_BAD_COMPANY = "badcompany"
CODE_STALE = "stale"
#: The permission (``action``) that lets a user set chat presence.
CHAT_PERMISSION = "chat"

_SUB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SHOWS = frozenset({"online", "away", "xa", "dnd", "offline"})
#: RFC 6265 cookie-octets: what a cookie value may hold and be presented back.
_COOKIE_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]+")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_MAX_URI_CHARS = 2048
_MAX_HOSTNAME_CHARS = 253


def clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


# --------------------------------------------------------------------- hosts


def is_loopback(hostname: str) -> bool:
    """Whether ``hostname`` names this machine: ``localhost``, 127.0.0.0/8 or ``::1``.

    ``*.localhost`` names are not counted: nothing guarantees a resolver
    keeps them on this machine.
    """
    name = hostname.strip("[]").lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def validate_host(uri: str, *, websocket: bool = False, allow_insecure: bool = False) -> str:
    """Check ``uri`` against PROTOCOL.md's host rules; return it as ``scheme://host[:port]``.

    The URI is normalised with ``httpx.URL`` first (scheme and host in lower
    case, the scheme's default port and a trailing ``/`` dropped, an
    internationalised name in its IDNA form), so that one PBX is one key.
    Plain ``http``/``ws`` is accepted for loopback hosts, and for others only
    with ``allow_insecure``. Raises :class:`InvalidHostError`.
    """
    _check_as_written(uri, websocket)
    url = _url(uri)
    hostname = url.raw_host.decode("ascii").lower()
    _check_hostname(hostname)
    port = url.port
    if port is not None and not 1 <= port <= 65535:
        raise InvalidHostError("host port must be 1 to 65535")
    scheme = url.scheme
    secure = "wss" if websocket else "https"
    if scheme != secure and not allow_insecure and not is_loopback(hostname):
        raise InvalidHostError(
            f"{scheme}:// is only allowed for loopback hosts; pass allow_insecure=True"
        )
    netloc = f"[{hostname}]" if ":" in hostname else hostname
    if port is not None:
        netloc = f"{netloc}:{port}"
    return f"{scheme}://{netloc}"


def _check_as_written(uri: object, websocket: bool) -> None:
    """The checks that need the text as written (before normalising)."""
    if not isinstance(uri, str):
        raise InvalidHostError("host must be a string")
    if not uri:
        raise InvalidHostError("host is empty")
    if len(uri) > _MAX_URI_CHARS:
        raise InvalidHostError(f"host is longer than {_MAX_URI_CHARS} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in uri):
        raise InvalidHostError("host contains whitespace or control characters")
    secure, plain = ("wss", "ws") if websocket else ("https", "http")
    try:
        parts = urllib.parse.urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise InvalidHostError(f"host is not a valid URI: {exc}") from None
    if parts.scheme.lower() not in (secure, plain):
        raise InvalidHostError(f"host must start with {secure}:// or {plain}://")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InvalidHostError("host must not carry user information")
    if parts.query or parts.fragment or "?" in uri or "#" in uri:
        raise InvalidHostError("host must not carry a query or fragment")
    if parts.path not in ("", "/"):
        raise InvalidHostError("host must not carry a path")
    if not parts.hostname:
        raise InvalidHostError("host has no valid hostname")


def _url(uri: str) -> httpx.URL:
    try:
        url = httpx.URL(uri)
        url.raw_host.decode("ascii")
    except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
        raise InvalidHostError(f"host is not a valid host name: {clip(str(exc), 200)}") from None
    return url


def _check_hostname(hostname: str) -> None:
    """A DNS name of 1-63 character labels, at most 253 in all, or an IP literal."""
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        pass
    else:
        return
    if len(hostname) > _MAX_HOSTNAME_CHARS:
        raise InvalidHostError(f"host name is longer than {_MAX_HOSTNAME_CHARS} characters")
    labels = hostname.removesuffix(".").split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise InvalidHostError(
            "host name labels must be 1 to 63 letters, digits or hyphens, not empty"
        )


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
    """A reply that describes the user: ``login`` and ``selcompany``."""

    user: User


@dataclass(frozen=True, slots=True)
class RtcPassword:
    """The reply to ``rtcreset getnew=1``: the new WebRTC password."""

    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class HistoryReply:
    """The reply to ``load type=history``: the saved call records, oldest first."""

    records: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Ack:
    """A success that carries nothing: ``logout``, ``status``, ``save``, ``rtcreset``."""

    cmd: str


# ------------------------------------------------------------------ commands


@dataclass(frozen=True, slots=True)
class Command(Generic[R]):
    """One command, ready to encode, and how to read its success reply.

    ``parse`` turns the ``<response result="success">`` root into the typed
    reply. ``retry_safe`` says whether repeating it after an HTTP 5xx is
    harmless (PROTOCOL.md: never ``rtcreset`` nor a password login). Its
    ``repr`` hides the secret fields.
    """

    cmd: str
    fields: tuple[tuple[str, str], ...]
    parse: Callable[[Element], R] = field(repr=False)
    retry_safe: bool = False
    secret_fields: frozenset[str] = field(default_factory=frozenset)

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


def _text_argument(name: str, value: object, *, empty_ok: bool = False) -> str:
    """A form value: a string of encodable text without control characters."""
    if not isinstance(value, str) or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidArgumentError(f"{name} must be a string without control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgumentError(f"{name} is not valid text (a lone surrogate?)") from None
    if not value and not empty_ok:
        raise InvalidArgumentError(f"{name} is empty")
    return value


def _ack(cmd: str) -> Callable[[Element], Ack]:
    return lambda _root: Ack(cmd)


def login_command(
    username: str, password: str | None, *, checkonly: bool = False
) -> Command[UserReply]:
    """``login``: with a password, or ``checkonly`` (adopt an existing login, no password).

    The reply must describe the user asked for (when a name was given).
    """
    username = _text_argument("username", username, empty_ok=checkonly is True)
    if not isinstance(checkonly, bool):
        raise InvalidArgumentError("checkonly must be True or False")
    parse = _login_parser(username)
    if checkonly:
        if password is not None:
            raise InvalidArgumentError("a checkonly login takes no password")
        fields = (("sessionUser", username), ("checkonly", "1"))
        return Command("login", fields, parse, retry_safe=True)
    if password is None or password == "":
        raise InvalidArgumentError("a password is required unless checkonly=True")
    password = _text_argument("password", password)
    fields = (("sessionUser", username), ("sessionPass", password))
    return Command("login", fields, parse, secret_fields=frozenset({"sessionPass"}))


def _login_parser(username: str) -> Callable[[Element], UserReply]:
    def parse(root: Element) -> UserReply:
        user = _user("login", root)
        if username and user.login != username:
            raise ProtocolError(f"the login reply is for another user than {username!r}")
        return UserReply(user)

    return parse


def logout_command() -> Command[Ack]:
    """``logout``."""
    return Command("logout", (), _ack("logout"), retry_safe=True)


def check_company(user: User, company_id: str) -> None:
    """Refuse, before any I/O, what the PBX would refuse of ``selcompany``.

    ``norole`` for a user with fewer than two companies, ``badcompany`` for
    an id not among them (PROTOCOL.md).
    """
    _text_argument("company_id", company_id)
    if not user.is_multi_company:
        raise command_error(
            "selcompany", CODE_NO_ROLE, f"{user.login} does not administer several companies"
        )
    if company_id not in {c.id for c in user.companies}:
        raise command_error(
            "selcompany", CODE_BAD_COMPANY, f"{company_id!r} is not one of the login's companies"
        )


def select_company_command(company_id: str) -> Command[UserReply]:
    """``selcompany``."""
    company_id = _text_argument("company_id", company_id)
    return Command("selcompany", (("company", company_id),), _company_reply, retry_safe=True)


def _company_reply(root: Element) -> UserReply:
    return UserReply(_user("selcompany", root))


@overload
def rtc_reset_command(
    *, release: str | None = None, getnew: Literal[False] = False
) -> Command[Ack]: ...
@overload
def rtc_reset_command(
    *, release: str | None = None, getnew: Literal[True]
) -> Command[RtcPassword]: ...
def rtc_reset_command(
    *, release: str | None = None, getnew: bool = False
) -> Command[Ack] | Command[RtcPassword]:
    """``rtcreset``: ``release`` is the password being given up (stale-checked).

    With ``getnew`` the reply carries the new password (:class:`RtcPassword`).
    """
    fields: list[tuple[str, str]] = []
    if release is not None:
        fields.append(("pass", _text_argument("release", release)))
    secret = frozenset({"pass"})
    if getnew:
        fields.append(("getnew", "1"))
        return Command("rtcreset", tuple(fields), _rtc_password, secret_fields=secret)
    return Command("rtcreset", tuple(fields), _ack("rtcreset"), secret_fields=secret)


def _rtc_password(root: Element) -> RtcPassword:
    rtc = root.find("rtc")
    password = None if rtc is None else rtc.get("pass")
    if not password:
        raise ProtocolError("rtcreset getnew=1 reply carries no password")
    return RtcPassword(password)


def status_command(show: str, text: str | None = None) -> Command[Ack]:
    """``status``: chat presence ``show`` with an optional status text."""
    if show not in _SHOWS:
        raise InvalidArgumentError(f"show must be one of {sorted(_SHOWS)}")
    fields = [("show", show)]
    if text is not None:
        fields.append(("status", _text_argument("text", text, empty_ok=True)))
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


# ------------------------------------------------------------------ parsing


_FAILURES: Mapping[str, type[CommandError]] = {
    CODE_NO_ROLE: PermissionDeniedError,
    CODE_BAD_COMPANY: UnknownCompanyError,
    CODE_STALE: StaleCredentialError,
    CODE_NOT_LOGGED_IN: SessionLostError,
}
_LOGIN_FAILURES = frozenset({CODE_BAD_AUTH, CODE_LOCKED, CODE_NOT_LOGGED_IN})


def command_error(cmd: str, code: str, message: str = "") -> CommandError:
    """The exception for a ``result="fail"`` reply to ``cmd`` with ``code``."""
    message = clip(message)
    if cmd == "login" and code in _LOGIN_FAILURES:
        return LoginError(cmd, code, message)
    return _FAILURES.get(code, CommandError)(cmd, code, message)


def is_not_logged_in(error: CommandError) -> bool:
    """Whether ``error`` is the PBX saying the context is not logged in."""
    return error.code == CODE_NOT_LOGGED_IN


def parse_reply(command: Command[R], status: int, content_type: str | None, body: bytes) -> R:
    """Parse the HTTP reply to ``command``; raise the documented error for a failure.

    HTTP 5xx is :class:`PbxUnavailableError`; any other non-200, a wrong
    content type, more than :data:`MAX_REPLY_BYTES`, XML that is malformed or
    declares entities, or a reply missing what the command must carry is
    :class:`ProtocolError`; ``result="fail"`` is a :class:`CommandError`.
    """
    cmd = command.cmd
    root = _response_root(cmd, status, content_type, body)
    result = root.get("result")
    if result == "fail":
        code = root.get("code")
        if not code:
            raise ProtocolError(f"failure reply to {cmd} carries no code")
        raise command_error(cmd, code, (root.text or "").strip())
    if result != "success":
        raise ProtocolError(f"reply to {cmd} has result {clip(repr(result), 80)}")
    return command.parse(root)


def _response_root(cmd: str, status: int, content_type: str | None, body: bytes) -> Element:
    if status >= 500:
        raise PbxUnavailableError(f"the PBX failed: HTTP {status}")
    if status != 200:
        raise ProtocolError(f"unexpected HTTP {status} to {cmd}")
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in ("text/xml", "application/xml"):
        raise ProtocolError(f"reply to {cmd} is {clip(media, 80) or 'untyped'}, not XML")
    if len(body) > MAX_REPLY_BYTES:
        raise ProtocolError(f"reply to {cmd} is over {MAX_REPLY_BYTES} bytes")
    try:
        root: Element = SafeXML.fromstring(body, forbid_dtd=True)
    except (DefusedXmlException, SafeXML.ParseError, ValueError) as exc:
        raise ProtocolError(f"reply to {cmd} is not well-formed, safe XML: {exc}") from exc
    if root.tag != "response":
        raise ProtocolError(f"reply to {cmd} has root <{clip(root.tag, 80)}>, not <response>")
    if root.get("cmd") not in (None, cmd):
        raise ProtocolError(f"reply is for {clip(repr(root.get('cmd')), 80)}, not {cmd!r}")
    return root


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
    login = values["login"]
    if not login or any(ord(c) < 32 or ord(c) == 127 for c in login):
        raise ProtocolError(f"<user> in the reply to {cmd} has an empty or broken login")
    return User(
        id=values["id"],
        login=login,
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


# -------------------------------------------------------------------- cookie


@dataclass(frozen=True, slots=True)
class CookieUpdate:
    """What a reply's ``Set-Cookie`` did to the session cookie.

    ``value`` is the new cookie, or ``None`` when the PBX deleted it
    (expired, ``Max-Age=0``): the stored one is to be cleared.
    """

    value: str | None = field(repr=False)


_EXPIRY = re.compile(r";\s*(expires|max-age)\s*=[^;]*", re.IGNORECASE)


def session_cookie(set_cookie_headers: Iterable[str], request_host: str) -> CookieUpdate | None:
    """The change a reply to ``request_host`` makes to the session cookie, if any.

    Parsed by the standard library's ``http.cookiejar`` (RFC 6265 rules:
    expiry, ``Domain`` matching); only the value is kept. ``None``: no
    change (no session cookie, one for another domain, or one over
    :data:`MAX_COOKIE_BYTES` or with a value that cannot be sent back).
    """
    headers = [h for h in set_cookie_headers if _cookie_name(h) == SESSION_COOKIE]
    if not headers:
        return None
    request = urllib.request.Request(request_host.rstrip("/") + COMMAND_PATH)
    kept = _session_cookie_of(headers, request)
    if kept is not None:
        return _value_update(kept.value or "")
    # The stdlib drops an expired cookie: it was a deletion if, expiry aside,
    # the cookie would have been accepted for this host.
    unexpired = [_EXPIRY.sub("", h) for h in headers]
    return CookieUpdate(None) if _session_cookie_of(unexpired, request) is not None else None


def _cookie_name(header: str) -> str:
    return header.split(";", 1)[0].partition("=")[0].strip()


def _session_cookie_of(headers: list[str], request: urllib.request.Request) -> Cookie | None:
    jar = CookieJar(DefaultCookiePolicy())
    message = email.message.Message()
    for header in headers:
        if len(header) > 2 * MAX_COOKIE_BYTES:
            continue
        message["Set-Cookie"] = header
    jar.extract_cookies(_Response(message), request)  # type: ignore[arg-type]
    return next((c for c in jar if c.name == SESSION_COOKIE), None)


def _value_update(value: str) -> CookieUpdate | None:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if len(value) > MAX_COOKIE_BYTES or not _COOKIE_VALUE.fullmatch(value):
        return None
    return CookieUpdate(value)


class _Response:
    """The one method ``CookieJar.extract_cookies`` asks of a response."""

    def __init__(self, message: email.message.Message) -> None:
        self._message = message

    def info(self) -> email.message.Message:
        return self._message


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
