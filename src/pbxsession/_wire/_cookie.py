"""The session cookie: what a reply's ``Set-Cookie`` does to it, and how it is sent back."""

from __future__ import annotations

import functools
import ipaddress
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ._basics import _COOKIE_VALUE, MAX_COOKIE_BYTES, SESSION_COOKIE, _parse_set_cookie


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
    return _update(
        _unquoted(value), {key.lower(): attr for key, attr in attributes}, request_host, now
    )


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _update(
    value: str, attrs: dict[str, Any], request_host: str, now: float
) -> CookieUpdate | None:
    """What a session cookie with ``attrs`` does, sent in a reply from ``request_host``."""
    if len(SESSION_COOKIE) + 1 + len(value) > MAX_COOKIE_BYTES:
        return None
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
