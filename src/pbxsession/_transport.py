"""Sending one command over HTTP: cookie, size limit, bounded retries, error mapping.

It knows httpx and the session store, and leaves every byte of the wire
format to ``_wire``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import ssl
from collections.abc import AsyncIterator
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TypeVar

import httpx
import trio

from . import _wire as wire
from ._errors import LoginError, PbxUnavailableError, ProtocolError, SessionLostError
from .stores import SessionStore

__all__ = ["CommandTransport", "new_http_client", "tls_context"]

R = TypeVar("R")
log = logging.getLogger("pbxsession")


def new_http_client(*, timeout: float, verify: bool) -> httpx.AsyncClient:
    """An HTTP client that keeps no cookies of its own: the session store does."""
    # The store is the one cookie jar (shared like a browser's), so httpx's
    # own jar is told to accept nothing.
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    return httpx.AsyncClient(
        timeout=timeout,
        verify=tls_context(verify),
        cookies=jar,
        follow_redirects=False,
        trust_env=False,
    )


def tls_context(verify: bool) -> ssl.SSLContext:
    """The process's TLS context for commands and feed: verifying (CA bundle) or not."""
    return _tls_context(bool(verify))


@functools.cache
def _tls_context(verify: bool) -> ssl.SSLContext:
    # One per process, shared by every session: building a verifying context
    # loads the whole CA bundle (about 14 ms and 0.5-0.8 MiB each), which
    # dominated opening many sessions. A context is safe to share.
    return httpx.create_ssl_context(verify=verify, trust_env=False)


class CommandTransport:
    """Posts commands to ``{host}/api/api.whtm`` and returns parsed replies.

    Commands whose repetition is harmless are retried after HTTP 5xx or a
    connection failure, ``retries`` times at most, with jittered backoff.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        store: SessionStore,
        *,
        retries: int = 2,
        retry_backoff: float = 0.1,
    ) -> None:
        self._client = client
        self._store = store
        self._retries = retries
        self._retry_backoff = retry_backoff
        self.commands_sent = 0

    async def send(self, host: str, command: wire.Command[R], subid: str | None) -> R:
        """Send ``command`` to the PBX at ``host``; raise the documented error on failure."""
        attempts = 1 + (self._retries if command.retry_safe else 0)
        for attempt in range(attempts):
            try:
                try:
                    return await self._send_once(host, command, subid)
                except _CookieRaceLost:
                    # Sent again, once, in the context everyone else uses.
                    return await self._send_once(host, command, subid)
            except PbxUnavailableError as exc:
                if attempt + 1 >= attempts:
                    raise
                delay = random.uniform(0, self._retry_backoff * 2**attempt)
                log.debug("retrying %s in %.2fs after: %s", command.cmd, delay, str(exc))
                await trio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send_once(self, host: str, command: wire.Command[R], subid: str | None) -> R:
        headers = {"Content-Type": wire.FORM_CONTENT_TYPE}
        cookie = await self._store.get_cookie(host)
        if cookie is not None:
            headers["Cookie"] = wire.cookie_header(cookie)
        if log.isEnabledFor(logging.DEBUG):
            # A string, not the command: a record's args must not carry a password.
            log.debug("-> %s %s subid=%s", host, repr(command), subid)
        self.commands_sent += 1
        request = self._client.build_request(
            "POST", host + wire.COMMAND_PATH, content=command.encode(subid), headers=headers
        )
        try:
            response = await self._client.send(request, stream=True)
            try:
                body = await _read_capped(response)
            finally:
                await response.aclose()
        except httpx.TimeoutException as exc:
            raise PbxUnavailableError(f"{command.cmd}: the PBX did not answer in time") from exc
        except httpx.TransportError as exc:
            raise PbxUnavailableError(f"{command.cmd}: cannot reach the PBX: {exc}") from exc
        update = wire.session_cookie(response.headers.get_list("set-cookie"), host)
        # A deletion (update.value None) is left to the store's rewrite: today's stores hold str.
        new_cookie = None if update is None else update.value
        race_lost = False
        if new_cookie is not None and new_cookie != cookie:
            # Compare-and-set: if another program stored a fresh cookie first,
            # its cookie stays and this request ran in an empty context nobody
            # will use again.
            kept = await self._store.set_cookie(host, new_cookie, replacing=cookie)
            race_lost = kept != new_cookie
        try:
            reply = wire.parse_reply(
                command, response.status_code, response.headers.get("content-type"), body
            )
        except (SessionLostError, LoginError) as exc:
            # In an empty context only "not logged in" depends on the context;
            # a refused password (badauth, locked) stands wherever it was sent.
            if race_lost and exc.code == wire.CODE_NOT_LOGGED_IN:
                raise _CookieRaceLost from exc
            raise
        if race_lost:
            # It worked, but where nobody will look (a fresh context can only
            # have been logged in by this very command): do it where they do.
            raise _CookieRaceLost

        log.debug("<- %s %s ok", host, command.cmd)
        return reply


class _CookieRaceLost(Exception):
    """The command ran under a cookie that lost the store's compare-and-set."""


async def _read_capped(response: httpx.Response) -> bytes:
    """The body, refused as soon as it passes the protocol's size limit."""
    too_big = ProtocolError(f"reply is over {wire.MAX_REPLY_BYTES} bytes")
    declared = response.headers.get("content-length", "")
    if declared.isdigit():
        if int(declared) > wire.MAX_REPLY_BYTES:
            raise too_big
        # httpx stops at the declared length: one read, no chunk loop.
        return await response.aread()
    chunks: list[bytes] = []
    size = 0
    body = response.aiter_bytes()
    async for chunk in body:
        size += len(chunk)
        if size > wire.MAX_REPLY_BYTES:
            await _abandon(response, body)
            raise too_big
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
