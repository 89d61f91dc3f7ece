"""Host rules (PROTOCOL.md "Hosts"): validation, normalisation, the feed host, sub-IDs."""

from __future__ import annotations

import ipaddress
import re
import secrets

import httpx

from .._errors import (
    InvalidArgumentError,
    InvalidHostError,
)
from ._basics import _SUB_ID

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
    url = _parse(uri)
    raw_host = url.raw_host.decode("ascii", "replace")
    secure, plain = ("wss", "ws") if websocket else ("https", "http")
    if url.scheme not in (secure, plain):
        raise InvalidHostError(f"host must start with {secure}:// or {plain}://")
    if url.raw_path != b"/" or url.userinfo:
        raise InvalidHostError("host must not carry a path or user information")
    _check_hostname(raw_host)
    _check_secure(url.scheme, plain, raw_host, allow_insecure)
    netloc = f"[{raw_host}]" if ":" in raw_host else raw_host
    if url.port is not None:
        netloc = f"{netloc}:{url.port}"
    return f"{url.scheme}://{netloc}"


def _check_secure(scheme: str, plain: str, host: str, allow_insecure: bool) -> None:
    if scheme == plain and not allow_insecure and not is_loopback(host):
        raise InvalidHostError(
            f"{plain}:// is only allowed for loopback hosts; pass allow_insecure=True"
        )


def _parse(uri: str) -> httpx.URL:
    """``uri`` as httpx reads it (lower-case scheme, default port dropped), port checked."""
    scheme, sep, rest = uri.partition("://")
    try:
        # httpx drops a default port only for a scheme written in lower case.
        url = httpx.URL(scheme.lower() + sep + rest)
        url.raw_host.decode("ascii")
        _ = url.host  # decodes any "xn--" label: httpx does so for the Host header
        port = url.port
    except (httpx.InvalidURL, ValueError) as exc:
        raise InvalidHostError(f"host is not a valid URI: {exc}") from None
    if port is not None and not 0 < port <= 65535:
        raise InvalidHostError("host port must be 1 to 65535")
    return url


def _check_raw_uri(uri: object) -> None:
    """The rules httpx would not enforce, or would not survive (size, user info)."""
    if not isinstance(uri, str) or not uri:
        raise InvalidHostError("host must be a non-empty string")
    if len(uri) > _MAX_URI:
        raise InvalidHostError(f"host is over {_MAX_URI} characters")
    if any(c.isspace() or not c.isprintable() for c in uri):
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
