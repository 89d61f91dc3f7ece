"""The simulator's wire format, apart from its rules: every byte it reads or writes.

Paths, the form a command arrives in, the XML reply, the session cookie and
its attributes, the feed's frames (start in; ready, event, error out), the
feed's errnos and the HTTP statuses. :mod:`._state` holds the rules and
builds :class:`Reply` values; the I/O layers render and parse with this.

This module does not import the client's ``pbxsession._wire`` on purpose:
a wire bug there must not be mirrored here.

Replies follow PROTOCOL.md to the letter: one element per line and nothing
after it on that line, every attribute value in double quotes and
XML-escaped (``&``, ``<``, ``>``, ``"`` and line breaks / tabs as character
references, so no value can break the one-element-per-line rule). Characters
that XML 1.0 cannot carry at all are replaced by U+FFFD.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qs, parse_qsl, urlsplit

__all__ = [
    "COMMANDS",
    "COMMAND_PATH",
    "CONTENT_TYPE",
    "COOKIE_ATTRIBUTES",
    "COOKIE_NAME",
    "ERRNO_BAD_START",
    "ERRNO_LOGGED_OUT",
    "EVENT_KINDS",
    "FEED_PATH",
    "FILTERABLE",
    "FORM_TYPE",
    "MAX_BODY",
    "MAX_HISTORY",
    "MESSAGES",
    "SHOWS",
    "STATUS",
    "BadForm",
    "BadStart",
    "Element",
    "Reply",
    "check_command",
    "cookie_from_headers",
    "decode_history",
    "encode_history",
    "error_frame",
    "escape_attr",
    "escape_text",
    "event_frame",
    "feed_subids",
    "form_flag",
    "parse_form",
    "parse_start",
    "ready_frame",
    "render_reply",
    "valid_subid",
]

# -- addresses and framing ---------------------------------------------------

COMMAND_PATH: Final = "/api/api.whtm"
"""Where commands are posted."""
FEED_PATH: Final = "/api/feed"
"""Where the feed's WebSocket handshake goes (on the command port and the feed port)."""
FORM_TYPE: Final = "application/x-www-form-urlencoded"
"""The only ``Content-Type`` a command may have."""
CONTENT_TYPE: Final = "text/xml; charset=utf-8"
"""The ``Content-Type`` of every command reply."""
MAX_BODY: Final = 1024 * 1024
"""The largest command body read; a larger one is answered ``badrequest``."""

STATUS: Final[Mapping[str, int]] = {
    "not_found": 404,  # another path, on either port
    "wrong_method": 405,
    "wrong_type": 415,  # a command that is not FORM_TYPE
    "failure": 500,  # an injected failure or a simulator bug
    "feed_forbidden": 403,  # handshake: not logged in, unknown cookie, bad sub-ID
    "feed_refused": 503,  # handshake: the refuse_handshakes fault
}
"""HTTP statuses the simulator answers with, by reason."""

# -- vocabulary --------------------------------------------------------------

COMMANDS: Final = frozenset({"login", "logout", "selcompany", "rtcreset", "status", "save", "load"})
"""Every command the simulator knows."""
EVENT_KINDS: Final = frozenset({"device", "presence", "mailbox", "queue", "chat", "call"})
"""Every kind of feed event."""
FILTERABLE: Final = ("device", "presence", "mailbox", "queue")
"""Event kinds a start frame can switch off."""
SHOWS: Final = frozenset({"online", "away", "xa", "dnd", "offline"})
"""The values ``status`` accepts for ``show``."""

MESSAGES: Final[Mapping[str, str]] = {
    "badauth": "Bad username or password",
    "locked": "Too many failed logins; try again later",
    "notloggedin": "Not logged in",
    "norole": "Permission denied",
    "badcompany": "Unknown company",
    "stale": "The WebRTC password has changed since",
}
"""The text of each failure code (``badrequest`` carries its own)."""

ERRNO_BAD_START: Final = 1
"""Feed errno for a start frame that cannot be read."""
ERRNO_LOGGED_OUT: Final = 2
"""Feed errno when the context stops being logged in."""

_SUBID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def valid_subid(subid: str) -> bool:
    """Tell whether ``subid`` is 1 to 64 characters of ``A-Z a-z 0-9 _ -``."""
    return _SUBID.fullmatch(subid) is not None


# -- the command form --------------------------------------------------------


class BadForm(ValueError):
    """A command body that is not a well-formed form."""


def parse_form(body: bytes) -> dict[str, str]:
    """Decode a form-urlencoded command; a field given twice is :class:`BadForm`."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
    except (UnicodeError, ValueError) as exc:
        raise BadForm("the form is not valid UTF-8 / percent-encoding") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise BadForm(f"field {name!r} given more than once")
        form[name] = value
    return form


def form_flag(form: Mapping[str, str], name: str) -> bool:
    """A ``0``/``1`` field (absent = 0); anything else is :class:`BadForm`."""
    value = form.get(name)
    if value is None or value == "0":
        return False
    if value == "1":
        return True
    raise BadForm(f"{name} must be 0 or 1")


def check_command(form: Mapping[str, str]) -> str:
    """Check ``cmd`` and ``subid``; return the sub-ID (``""`` when none)."""
    cmd = form.get("cmd", "")
    if cmd not in COMMANDS:
        raise BadForm("unknown command" if cmd else "no cmd")
    subid = form.get("subid", "")
    if "subid" in form and not valid_subid(subid):
        raise BadForm("subid must be 1 to 64 of A-Z a-z 0-9 _ -")
    return subid


MAX_HISTORY: Final = 50
"""The most call records a ``save type=history`` may carry."""


def decode_history(data: str) -> list[dict[str, object]]:
    """Read ``save``'s ``data``: strict base64 of a JSON list of at most 50 objects."""
    try:
        raw = base64.b64decode(data.encode("ascii"), validate=True)
        records = json.loads(raw.decode("utf-8"))
    except (UnicodeError, binascii.Error, ValueError) as exc:
        raise BadForm("data must be base64 of a JSON list") from exc
    if not isinstance(records, list):
        raise BadForm("data must be base64 of a JSON list")
    if len(records) > MAX_HISTORY:
        raise BadForm(f"at most {MAX_HISTORY} call records")
    if not all(isinstance(r, dict) for r in records):
        raise BadForm("every call record must be a JSON object")
    return records


def encode_history(records: Sequence[Mapping[str, object]]) -> str:
    """Render call records as ``load``'s ``data`` (base64 of compact JSON)."""
    text = json.dumps(list(records), separators=(",", ":"))
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


# -- the session cookie ------------------------------------------------------

COOKIE_NAME: Final = "Red60urne"
"""The session cookie's name."""
COOKIE_ATTRIBUTES: Final[Mapping[str, object]] = {
    "path": "/",
    "httponly": True,
    "samesite": "lax",
}
"""``Set-Cookie`` attributes (``Secure`` is added over https only)."""


def cookie_from_headers(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The session cookie's value in the ``Cookie`` headers, if any."""
    for name, value in headers:
        if name.lower() != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            key, sep, val = part.strip().partition("=")
            if sep and key == COOKIE_NAME:
                return val.strip().strip('"')
    return None


def feed_subids(target: str) -> tuple[str, list[str] | None]:
    """Split a handshake target into its path and its ``subid`` values (None if absent)."""
    parts = urlsplit(target)
    return parts.path, parse_qs(parts.query, keep_blank_values=True).get("subid")


# -- command replies ---------------------------------------------------------

_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_ATTR_TABLE = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "\n": "&#10;",
        "\r": "&#13;",
        "\t": "&#9;",
    }
)
_TEXT_TABLE = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\n": "&#10;", "\r": "&#13;"})


def _clean(value: str) -> str:
    return _INVALID_XML.sub("\ufffd", value)


def escape_attr(value: str) -> str:
    """Escape ``value`` for use inside a double-quoted XML attribute."""
    return _clean(value).translate(_ATTR_TABLE)


def escape_text(value: str) -> str:
    """Escape ``value`` for use as XML character data on a single line."""
    return _clean(value).translate(_TEXT_TABLE)


@dataclass(frozen=True)
class Element:
    """One child element of a reply: tag, ordered attributes and optional text."""

    tag: str
    attrs: tuple[tuple[str, str], ...] = ()
    text: str | None = None


@dataclass(frozen=True)
class Reply:
    """A command reply before rendering; ``code`` is None for success."""

    cmd: str
    code: str | None = None
    message: str = ""
    children: Sequence[Element] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """Tell whether this is a ``result="success"`` reply."""
        return self.code is None


def _attrs(pairs: Sequence[tuple[str, str]]) -> str:
    return "".join(f' {name}="{escape_attr(value)}"' for name, value in pairs)


def _element(el: Element) -> str:
    if el.text is None:
        return f"  <{el.tag}{_attrs(el.attrs)}/>"
    return f"  <{el.tag}{_attrs(el.attrs)}>{escape_text(el.text)}</{el.tag}>"


def render_reply(reply: Reply) -> str:
    """Render ``reply`` as the XML document of PROTOCOL.md (ends with a newline)."""
    if reply.code is not None:
        head = _attrs((("result", "fail"), ("cmd", reply.cmd), ("code", reply.code)))
        return f"<response{head}>{escape_text(reply.message)}</response>\n"
    head = _attrs((("result", "success"), ("cmd", reply.cmd)))
    lines = [f"<response{head}>", *(_element(el) for el in reply.children), "</response>"]
    return "\n".join(lines) + "\n"


# -- feed frames -------------------------------------------------------------


class BadStart(ValueError):
    """A start frame that cannot be read (answered with errno 1)."""


def parse_start(text: str | bytes) -> tuple[int | None, frozenset[str]]:
    """Read a start frame: ``since`` (None = live only) and the kinds switched off."""
    try:
        frame = json.loads(text)
    except ValueError as exc:
        raise BadStart("start frame is not JSON") from exc
    if not isinstance(frame, dict) or frame.get("type") != "start":
        raise BadStart("expected a start frame")
    return _since(frame.get("since")), _excluded(frame)


def _since(since: object) -> int | None:
    if since is not None and (not isinstance(since, int) or isinstance(since, bool) or since < 0):
        raise BadStart("since must be null or a non-negative integer")
    return since


def _excluded(frame: Mapping[str, object]) -> frozenset[str]:
    """The kinds a start frame switches off (each flag must be a boolean)."""
    excluded = set()
    for kind in FILTERABLE:
        flag = frame.get(kind, True)
        if not isinstance(flag, bool):
            raise BadStart(f"{kind} must be true or false")
        if not flag:
            excluded.add(kind)
    return frozenset(excluded)


def _dumps(obj: Mapping[str, object]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def event_frame(seq: int, kind: str, data: Mapping[str, object]) -> str:
    """Render a feed ``event`` frame."""
    return _dumps({"type": "event", "seq": seq, "kind": kind, "data": data})


def ready_frame(seq: int, resumed: bool) -> str:
    """Render a feed ``ready`` frame."""
    return _dumps({"type": "ready", "seq": seq, "resumed": resumed})


def error_frame(errno: int, message: str) -> str:
    """Render a feed ``error`` frame (the feed ends after it)."""
    return _dumps({"type": "error", "errno": errno, "message": message})
