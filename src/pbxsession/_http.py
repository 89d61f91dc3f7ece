"""httpx plumbing for the transport: the client, its pool, request bodies, capped reads.

What the transport needs from httpx and nothing of the protocol: a client
whose cookie jar takes nothing, the pool a request goes to (skipping the
jar's work on every reply), a request body with nothing to finalise, a
trace of whether a connection was made, and a body read under the
decoded-size cap.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx

from ._decode import CappedDecoder
from ._errors import ProtocolError
from ._redact import install_httpcore_redaction

__all__ = ["Body", "Progress", "ReplyHead", "new_http_client", "pool_for", "read_capped"]


def new_http_client(
    verify_context: ssl.SSLContext, *, limits: httpx.Limits | None = None
) -> httpx.AsyncClient:
    """The session's own HTTP client: the given trust, no redirects, no environment proxies.

    Its cookie jar accepts nothing; the transport does not use it anyway.
    """
    install_httpcore_redaction()
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    return httpx.AsyncClient(
        verify=verify_context,
        cookies=jar,
        follow_redirects=False,
        trust_env=False,
        limits=limits if limits is not None else httpx.Limits(),
    )


def pool_for(client: httpx.AsyncClient, url: httpx.URL) -> httpx.AsyncBaseTransport:
    # The pool (or the mounted proxy) AsyncClient.send would use, minus its
    # cookie-jar work. A private httpx method, stable since 0.18.
    return client._transport_for_url(url)


class Body(httpx.AsyncByteStream):
    """A request body that is a plain iterator: nothing to finalise if left half-read."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __aiter__(self) -> Body:
        return Body(self._data)

    async def __anext__(self) -> bytes:
        data, self._data = self._data, b""
        if not data:
            raise StopAsyncIteration
        return data


class Progress:
    """Whether the attempt got a connection: the timeout message says which wait it was.

    It traces ``request`` (httpcore's ``trace`` extension) until the request
    starts going out on a connection, then takes itself off: httpcore calls
    a trace at every step, and only the first steps tell anything here.
    """

    __slots__ = ("_extensions", "connected")

    def __init__(self, request: httpx.Request) -> None:
        self.connected = False
        self._extensions = request.extensions
        self._extensions["trace"] = self._trace

    async def _trace(self, name: str, info: Mapping[str, Any]) -> None:
        if name == "http11.send_request_headers.started" or name.startswith("http2.send_"):
            self.connected = True
            self._extensions.pop("trace", None)


@dataclass(frozen=True, slots=True)
class ReplyHead:
    """The reply headers the transport reads, found in one pass over the raw headers."""

    content_length: str = ""
    content_type: str | None = None
    content_encodings: tuple[str, ...] = ()
    set_cookies: tuple[str, ...] = ()

    @classmethod
    def of(cls, response: httpx.Response) -> ReplyHead:
        length, media = "", None
        encodings: list[str] = []
        cookies: list[str] = []
        for name, value in response.headers.raw:
            name = name.lower()
            if name == b"content-length":
                length = value.decode("latin-1")
            elif name == b"content-type":
                media = value.decode("latin-1")
            elif name == b"content-encoding":
                encodings.append(value.decode("latin-1"))
            elif name == b"set-cookie":
                cookies.append(value.decode("latin-1"))
        return cls(length, media, tuple(encodings), tuple(cookies))


async def read_capped(response: httpx.Response, head: ReplyHead, cmd: str, limit: int) -> bytes:
    """The decoded body, refused as soon as the wire bytes or decoded bytes pass the cap."""
    declared = head.content_length
    if declared.isdigit() and int(declared) > limit:
        raise ProtocolError(f"reply to {cmd} is over {limit} bytes")
    raw = response.aiter_raw()
    try:
        if not head.content_encodings:  # as sent: only the wire bytes to count
            return await _read_plain(raw, limit)
        decoder = CappedDecoder(head.content_encodings, limit)
        async for chunk in raw:
            decoder.feed(chunk)
        decoder.finish()
    except ProtocolError as exc:
        await _abandon(response, raw)
        raise ProtocolError(f"reply to {cmd}: {exc}") from None
    return decoder.body()


async def _read_plain(raw: AsyncIterator[bytes], limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in raw:
        size += len(chunk)
        if size > limit:
            raise ProtocolError(f"over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _abandon(response: httpx.Response, body: AsyncIterator[bytes]) -> None:
    """Stop reading a body midway without leaving httpx's generators half-run.

    httpx streams bodies through nested async generators that ``aclose`` on
    the outer one does not reach (encode/httpx#3686), and trio warns about
    each. Closing the response first makes the next read fail, which runs
    every one of them to its end.
    """
    await response.aclose()
    with contextlib.suppress(Exception, StopAsyncIteration):
        await body.__anext__()
