"""The PBX wire protocol (PROTOCOL.md v1): the only module that knows it.

Pure functions, no I/O: host rules, command forms, reply parsing, the session
cookie, and the live feed's URL and frames. Adapting pbxsession to another
PBX dialect is a change to this file alone.
"""

from __future__ import annotations

import base64
import binascii
import enum
import ipaddress
import json
import re
import secrets
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeXML
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
    "COMMAND_PATH",
    "FEED_PATH",
    "FORM_CONTENT_TYPE",
    "MAX_HISTORY",
    "MAX_REPLY_BYTES",
    "SESSION_COOKIE",
    "Command",
    "ErrorFrame",
    "FeedReaction",
    "ReadyFrame",
    "Reply",
    "call_record",
    "cookie_header",
    "feed_reaction",
    "feed_url",
    "is_loopback",
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

_SUB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SHOWS = frozenset({"online", "away", "xa", "dnd", "offline"})
#: RFC 6265 cookie-octets: what a cookie value may hold and be presented back.
_COOKIE_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]+")


# --------------------------------------------------------------------- hosts


def is_loopback(hostname: str) -> bool:
    """Whether ``hostname`` names this machine (localhost, 127.0.0.0/8, ::1)."""
    name = hostname.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def validate_host(uri: str, *, websocket: bool = False, allow_insecure: bool = False) -> str:
    """Check ``uri`` against PROTOCOL.md's host rules; return it as ``scheme://host[:port]``.

    Plain ``http``/``ws`` is accepted for loopback hosts, and for others only
    with ``allow_insecure``. Raises :class:`InvalidHostError`.
    """
    if not isinstance(uri, str):
        raise InvalidHostError("host must be a string")
    if not uri:
        raise InvalidHostError("host is empty")
    if any(c in uri for c in "\r\n\t ") or any(ord(c) < 32 or ord(c) == 127 for c in uri):
        raise InvalidHostError("host contains whitespace or control characters")
    secure, plain = ("wss", "ws") if websocket else ("https", "http")
    try:
        parts = urllib.parse.urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise InvalidHostError(f"host is not a valid URI: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in (secure, plain):
        raise InvalidHostError(f"host must start with {secure}:// or {plain}://")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InvalidHostError("host must not carry user information")
    if parts.query or parts.fragment or "?" in uri or "#" in uri:
        raise InvalidHostError("host must not carry a query or fragment")
    if parts.path not in ("", "/"):
        raise InvalidHostError("host must not carry a path")
    hostname = parts.hostname
    if not hostname or not re.fullmatch(r"[A-Za-z0-9._:\-\[\]]+", parts.netloc):
        raise InvalidHostError("host has no valid hostname")
    if scheme == plain and not allow_insecure and not is_loopback(hostname):
        raise InvalidHostError(
            f"{plain}:// is only allowed for loopback hosts; pass allow_insecure=True"
        )
    netloc = f"[{hostname}]" if ":" in hostname else hostname
    if port is not None:
        netloc = f"{netloc}:{port}"
    return f"{scheme}://{netloc}"


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


# ------------------------------------------------------------------ commands


@dataclass(frozen=True, slots=True)
class Command:
    """One command, ready to encode; its ``repr`` hides secret fields.

    ``retry_safe`` says whether repeating it after an HTTP 5xx is harmless
    (PROTOCOL.md: never ``rtcreset`` nor a password login).
    """

    cmd: str
    fields: tuple[tuple[str, str], ...] = ()
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


def login_command(username: str, password: str | None, *, checkonly: bool = False) -> Command:
    """``login``: with a password, or ``checkonly`` (adopt an existing login, no password)."""
    if not isinstance(username, str) or any(ord(c) < 32 for c in username):
        raise InvalidArgumentError("username must be a string without control characters")
    if checkonly:
        if password is not None:
            raise InvalidArgumentError("a checkonly login takes no password")
        return Command("login", (("sessionUser", username), ("checkonly", "1")), retry_safe=True)
    if not username:
        raise InvalidArgumentError("username is empty")
    if not isinstance(password, str) or not password:
        raise InvalidArgumentError("a password is required unless checkonly=True")
    return Command(
        "login",
        (("sessionUser", username), ("sessionPass", password)),
        secret_fields=frozenset({"sessionPass"}),
    )


def logout_command() -> Command:
    """``logout``."""
    return Command("logout", retry_safe=True)


def select_company_command(company_id: str) -> Command:
    """``selcompany``."""
    return Command("selcompany", (("company", company_id),), retry_safe=True)


def rtc_reset_command(*, release: str | None = None, getnew: bool = False) -> Command:
    """``rtcreset``: ``release`` is the password being given up (stale-checked)."""
    fields: list[tuple[str, str]] = []
    if release is not None:
        fields.append(("pass", release))
    if getnew:
        fields.append(("getnew", "1"))
    return Command("rtcreset", tuple(fields), secret_fields=frozenset({"pass"}))


def status_command(show: str, text: str | None = None) -> Command:
    """``status``: chat presence ``show`` with an optional status text."""
    if show not in _SHOWS:
        raise InvalidArgumentError(f"show must be one of {sorted(_SHOWS)}")
    fields = [("show", show)]
    if text is not None:
        fields.append(("status", text))
    return Command("status", tuple(fields), retry_safe=True)


def save_history_command(records: Sequence[Mapping[str, Any]]) -> Command:
    """``save type=history``: the newest :data:`MAX_HISTORY` records, oldest first."""
    kept = list(records)[-MAX_HISTORY:]
    data = base64.b64encode(json.dumps(kept, separators=(",", ":")).encode()).decode("ascii")
    return Command("save", (("type", "history"), ("data", data)), retry_safe=True)


def load_history_command() -> Command:
    """``load type=history``."""
    return Command("load", (("type", "history"),), retry_safe=True)


# ------------------------------------------------------------------- replies


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful reply; only the parts its command carries are set."""

    cmd: str
    user: User | None = None
    rtc_password: str | None = field(default=None, repr=False)
    history: tuple[Mapping[str, Any], ...] | None = None


_FAILURES: Mapping[str, type[CommandError]] = {
    "norole": PermissionDeniedError,
    "badcompany": UnknownCompanyError,
    "stale": StaleCredentialError,
    "notloggedin": SessionLostError,
}


def command_error(cmd: str, code: str, message: str = "") -> CommandError:
    """The exception for a ``result="fail"`` reply to ``cmd`` with ``code``."""
    if cmd == "login" and code in ("badauth", "locked", "notloggedin"):
        return LoginError(cmd, code, message)
    return _FAILURES.get(code, CommandError)(cmd, code, message)


def parse_reply(cmd: str, status: int, content_type: str | None, body: bytes) -> Reply:
    """Parse the HTTP reply to ``cmd``; raise the documented error for a failure.

    HTTP 5xx is :class:`PbxUnavailableError`; any other non-200, a wrong
    content type, more than :data:`MAX_REPLY_BYTES`, XML that is malformed or
    declares entities, or a reply missing what ``cmd`` must carry is
    :class:`ProtocolError`; ``result="fail"`` is a :class:`CommandError`.
    """
    if status >= 500:
        raise PbxUnavailableError(f"the PBX failed: HTTP {status}")
    if status != 200:
        raise ProtocolError(f"unexpected HTTP {status} to {cmd}")
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in ("text/xml", "application/xml"):
        raise ProtocolError(f"reply to {cmd} is {media or 'untyped'}, not XML")
    if len(body) > MAX_REPLY_BYTES:
        raise ProtocolError(f"reply to {cmd} is over {MAX_REPLY_BYTES} bytes")
    try:
        root: Element = SafeXML.fromstring(body, forbid_dtd=True)
    except (DefusedXmlException, SafeXML.ParseError, ValueError) as exc:
        raise ProtocolError(f"reply to {cmd} is not well-formed, safe XML: {exc}") from exc
    if root.tag != "response":
        raise ProtocolError(f"reply to {cmd} has root <{root.tag}>, not <response>")
    result = root.get("result")
    if root.get("cmd") not in (None, cmd):
        raise ProtocolError(f"reply is for {root.get('cmd')!r}, not {cmd!r}")
    if result == "fail":
        code = root.get("code")
        if not code:
            raise ProtocolError(f"failure reply to {cmd} carries no code")
        raise command_error(cmd, code, (root.text or "").strip())
    if result != "success":
        raise ProtocolError(f"reply to {cmd} has result {result!r}")
    return _success(cmd, root)


def _success(cmd: str, root: Element) -> Reply:
    if cmd in ("login", "selcompany"):
        return Reply(cmd, user=_user(cmd, root))
    if cmd == "rtcreset":
        rtc = root.find("rtc")
        password = None if rtc is None else rtc.get("pass")
        return Reply(cmd, rtc_password=password)
    if cmd == "load":
        return Reply(cmd, history=_history(root))
    return Reply(cmd)


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
    permissions = []
    for action in root.iter("action"):
        action_name = action.get("name")
        if not action_name:
            raise ProtocolError(f"<action> in the reply to {cmd} has no name")
        permissions.append(Permission(action_name, action.get("company") == "true"))
    companies = []
    for company in root.iter("company"):
        company_id = company.get("id")
        if not company_id:
            raise ProtocolError(f"<company> in the reply to {cmd} has no id")
        companies.append(Company(company_id, company.get("name") or company_id))
    return User(
        id=values["id"],
        login=values["login"],
        name=values["name"],
        company=values["company"],
        home=values["home"],
        permissions=tuple(permissions),
        companies=tuple(companies),
    )


def _history(root: Element) -> tuple[Mapping[str, Any], ...]:
    data = root.find("data")
    if data is None:
        raise ProtocolError("reply to load has no <data> element")
    try:
        decoded = json.loads(base64.b64decode((data.text or "").strip(), validate=True))
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise ProtocolError("saved history is not base64 JSON") from exc
    if not isinstance(decoded, list) or not all(isinstance(r, dict) for r in decoded):
        raise ProtocolError("saved history is not a list of records")
    return tuple(decoded[-MAX_HISTORY:])


# -------------------------------------------------------------------- cookie


def session_cookie(set_cookie_headers: Iterable[str]) -> str | None:
    """The session cookie's value from a reply's ``Set-Cookie`` headers, if set."""
    # RFC 6265 section 5.2: the first ``name=value`` pair is the cookie and
    # everything after the first ``;`` is attributes, unknown ones ignored.
    # (``SimpleCookie`` drops the whole cookie on an attribute it does not
    # know, such as ``Partitioned``, and reads attributes as more cookies.)
    for header in set_cookie_headers:
        name, sep, value = header.split(";", 1)[0].partition("=")
        if not sep or name.strip() != SESSION_COOKIE:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if _COOKIE_VALUE.fullmatch(value):
            return value
    return None


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
