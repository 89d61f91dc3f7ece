"""What every part of the wire module shares: paths, limits, failure codes, text rules."""

from __future__ import annotations

import re
from collections.abc import Callable
from http import cookiejar
from typing import Any

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
    if limit < 3:  # no room for the 3-byte ellipsis
        return encoded[:limit].decode("utf-8", "ignore")
    return encoded[: limit - 3].decode("utf-8", "ignore") + "\u2026"
