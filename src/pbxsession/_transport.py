"""Sending one command over HTTP: deadlines, cookie, decoded-size cap, retries, error mapping.

It knows httpx and the cookie slot, and leaves every byte of the wire format
to ``_wire``. Requests go straight to the client's connection pool (not
``AsyncClient.send``): the client's cookie jar is never read nor filled
(cookies live in the session store), which also saves its per-reply work.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx
import trio

from . import _wire as wire
from ._errors import (
    CommandError,
    PbxError,
    PbxTimeoutError,
    PbxUnavailableError,
    TlsError,
)
from ._http import Body, Progress, ReplyHead, new_http_client, pool_for, read_capped
from ._redact import install_httpcore_redaction
from ._timeouts import Timeout
from ._tls import speaks_tls, tls_failure

__all__ = ["CommandTransport", "CookieSlotLike", "SanitisedCause", "new_http_client"]

log = logging.getLogger("pbxsession")
R = TypeVar("R")

_STORE_SECONDS = 5.0
"""How long storing a new session cookie may take once the reply is in."""

# gzip and deflate only: both are decoded here under the size cap.
_ACCEPT_ENCODING = "gzip, deflate"


class CookieSlotLike(Protocol):
    """Where the transport reads and compare-and-sets the session cookie."""

    async def get(self) -> str | None: ...

    async def put(self, cookie: str | None, *, replacing: str | None) -> str | None: ...


class SanitisedCause(Exception):
    """What an HTTP library's exception said, without its request (body, cookie header).

    Chained (``from``) to the documented errors instead of the original, whose
    attributes would keep the password form and the session cookie reachable.
    """

    def __init__(self, kind: str, text: str) -> None:
        self.kind = kind
        super().__init__(f"{kind}: {text}" if text else kind)


@dataclass(slots=True)
class _Reply:
    status: int
    head: ReplyHead
    body: bytes


class _RaceLost:
    """The command ran under a cookie that lost the store's compare-and-set."""


class _TimedOut:
    def __init__(self, connected: bool) -> None:
        self.connected = connected


_Failure = PbxError | _RaceLost | _TimedOut


class CommandTransport:
    """Posts commands to ``{host}/api/api.whtm`` and returns parsed replies.

    Each attempt is bounded by ``timeout.command`` from send to parsed reply;
    the whole call by ``deadline`` (default: ``timeout.operation`` from now).
    Commands whose repetition is harmless are retried after HTTP 5xx, a
    connection failure or an attempt's timeout, ``retries`` times at most,
    with jittered backoff. TLS failures are never retried. ``client`` may be
    shared and owned by the caller: it is never closed here.
    """

    __slots__ = (
        "_client",
        "_retries",
        "_retry_backoff",
        "_timeout",
        "_urls",
        "commands_sent",
    )

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        timeout: Timeout = Timeout(),  # noqa: B008 - immutable
        retries: int = 2,
        retry_backoff: float = 0.1,
    ) -> None:
        install_httpcore_redaction()
        self._client = client
        self._timeout = timeout
        self._retries = retries
        self._retry_backoff = retry_backoff
        self._urls: dict[str, httpx.URL] = {}
        self.commands_sent = 0

    async def send(
        self,
        host: str,
        command: wire.Command[R],
        subid: str | None,
        cookies: CookieSlotLike,
        *,
        deadline: float | None = None,
    ) -> R:
        """Send ``command`` to the PBX at ``host``; raise the documented error on failure."""
        started = now = trio.current_time()
        if deadline is None:
            deadline = started + self._timeout.operation
        allowed = 1 + (self._retries if command.retry_safe else 0)
        attempts = 0
        race_retried = False
        while True:
            attempts += 1
            attempt_deadline = min(deadline, now + self._timeout.command)
            outcome = await self._attempt(host, command, subid, cookies, attempt_deadline)
            if not isinstance(outcome, PbxError | _RaceLost | _TimedOut):
                return outcome
            if isinstance(outcome, _RaceLost) and not race_retried:
                # Sent again, once, in the context everyone else uses.
                race_retried, attempts = True, attempts - 1
                now = trio.current_time()
                continue
            failure = self._final(command, outcome, attempts, started)
            delay = self._retry_delay(failure, attempts, allowed, deadline)
            if delay is None:
                try:
                    raise failure
                finally:
                    del failure, outcome  # their traceback holds this frame: no cycle
            log.debug("retrying %s in %.2fs after: %s", command.cmd, delay, str(failure))
            await trio.sleep(delay)
            now = trio.current_time()

    def _retry_delay(
        self, failure: PbxError, attempts: int, allowed: int, deadline: float
    ) -> float | None:
        """How long to wait before trying again, or ``None``: give up now.

        Only an unavailable PBX is retried (a TLS failure never is), within
        the attempts allowed and the operation's deadline.
        """
        unavailable = isinstance(failure, PbxUnavailableError)
        if attempts >= allowed or not unavailable or isinstance(failure, TlsError):
            return None
        delay = random.uniform(0, self._retry_backoff * 2 ** (attempts - 1))
        return None if trio.current_time() + delay >= deadline else delay

    def _final(
        self, command: wire.Command[Any], outcome: _Failure, attempts: int, started: float
    ) -> PbxError:
        if isinstance(outcome, PbxError):
            return outcome
        if isinstance(outcome, _RaceLost):
            return PbxUnavailableError(
                f"{command.cmd}: the session cookie kept changing under this command"
            )
        return _timeout_error(
            command.cmd,
            outcome.connected,
            self._timeout.command,
            attempts,
            trio.current_time() - started,
        )

    async def _attempt(
        self,
        host: str,
        command: wire.Command[R],
        subid: str | None,
        cookies: CookieSlotLike,
        attempt_deadline: float,
    ) -> R | PbxError | _RaceLost | _TimedOut:
        cookie = await cookies.get()
        if log.isEnabledFor(logging.DEBUG):
            # A string, not the command: a record's args must not carry a password.
            log.debug("-> %s %s subid=%s", host, repr(command), subid)
        request = self._request(host, command.encode(subid), cookie, attempt_deadline)
        progress = Progress(request)
        self.commands_sent += 1
        with trio.move_on_at(attempt_deadline):
            exchanged = await self._exchange(request, command.cmd, host)
            if isinstance(exchanged, PbxError):
                return exchanged
            cookies_set = exchanged.head.set_cookies
            update = wire.session_cookie(cookies_set, host) if cookies_set else None
            race_lost = False
            if update is not None and update.value != cookie:
                # Shielded: a login the PBX made must not lose its cookie to the deadline.
                with trio.CancelScope(shield=True, deadline=trio.current_time() + _STORE_SECONDS):
                    race_lost = await _store_cookie(update.value, cookie, cookies)
            return _parse(command, exchanged, race_lost)
        return _TimedOut(progress.connected)

    def _request(
        self, host: str, content: bytes, cookie: str | None, attempt_deadline: float
    ) -> httpx.Request:
        url = self._urls.get(host)
        if url is None:
            if len(self._urls) > 16:  # one host per session, as a rule
                self._urls.clear()
            url = self._urls[host] = httpx.URL(host + wire.COMMAND_PATH)
        headers = [
            ("Accept", "*/*"),
            ("Accept-Encoding", _ACCEPT_ENCODING),
            ("Content-Type", wire.FORM_CONTENT_TYPE),
        ]
        if cookie is not None:
            headers.append(("Cookie", wire.cookie_header(cookie)))
        # httpx's own timeouts are per read; the cancel scope around the
        # attempt is the real bound. These only keep httpcore from waiting
        # longer than the attempt in a place a scope cannot reach.
        budget = max(attempt_deadline - trio.current_time(), 0.001)
        limits = {"connect": budget, "read": budget, "write": budget, "pool": budget}
        request = httpx.Request(
            "POST", url, headers=headers, content=content, extensions={"timeout": limits}
        )
        # httpx's body is an async generator; left half-read by a failed write
        # it is finalised by the garbage collector, which trio warns about.
        request.stream = Body(content)
        return request

    async def _exchange(self, request: httpx.Request, cmd: str, host: str) -> _Reply | PbxError:
        """One request and its capped body; failures returned, not raised (see ``_failure``)."""
        transport = pool_for(self._client, request.url)
        try:
            response = await transport.handle_async_request(request)
            head = ReplyHead.of(response)
            try:
                body = await read_capped(response, head, cmd, wire.MAX_REPLY_BYTES)
            finally:
                await response.aclose()
        except httpx.TransportError as exc:
            # Returned, so that it is raised outside this handler: raised here,
            # the new error's __context__ would keep ``exc`` and its request.
            failure = _failure(exc, cmd, host)
        else:
            return _Reply(response.status_code, head, body)
        if _hung_up_on_plain_http(failure, host) and await speaks_tls(
            request.url.host, request.url.port or 80
        ):
            tls = TlsError(f"{host} speaks TLS: use https://")
            tls.__cause__ = failure.__cause__
            return tls
        return failure


def _hung_up_on_plain_http(failure: PbxError, host: str) -> bool:
    cause = failure.__cause__
    return (
        host.startswith("http:")
        and isinstance(cause, SanitisedCause)
        and cause.kind == "RemoteProtocolError"
    )


def _timeout_error(
    cmd: str, connected: bool, limit: float, attempts: int, elapsed: float
) -> PbxTimeoutError:
    what = (
        "it accepted the connection but sent no whole reply"
        if connected
        else "no connection was made"
    )
    tally = "1 attempt" if attempts == 1 else f"{attempts} attempts, {elapsed:.1f}s in all"
    error = PbxTimeoutError(
        f"{cmd}: the PBX did not answer in time: {what} within {limit:g}s ({tally})"
    )
    error.__cause__ = None
    return error


def _failure(exc: httpx.TransportError, cmd: str, host: str) -> PbxError:
    tls = tls_failure(exc, host)
    if tls is not None:
        error: PbxError = tls
    elif isinstance(exc, httpx.TimeoutException):
        error = PbxTimeoutError(f"{cmd}: the PBX did not answer in time")
    else:
        error = PbxUnavailableError(f"{cmd}: cannot reach the PBX: {_reason(exc)}")
    error.__cause__ = SanitisedCause(type(exc).__name__, _reason(exc))
    return error


def _reason(exc: BaseException) -> str:
    """The first non-empty text down the chain (httpx's and httpcore's are often empty)."""
    link: BaseException | None = exc
    for _ in range(6):
        if link is None:
            break
        if str(link):
            return str(link)[:500]
        link = link.__cause__ or link.__context__
    return f"the connection broke with no reason given ({type(exc).__name__})"


async def _store_cookie(value: str | None, sent: str | None, cookies: CookieSlotLike) -> bool:
    """Store the PBX's new session cookie ``value`` (compare-and-set); True if another's won."""
    if value is None:  # the PBX deleted it: forget ours
        await cookies.put(None, replacing=sent)
        return False
    # If another program stored a fresh cookie first, its cookie stays and
    # this request ran in an empty context nobody will use again.
    kept = await cookies.put(value, replacing=sent)
    return kept != value


def _parse(command: wire.Command[R], reply: _Reply, race_lost: bool) -> R | _RaceLost | PbxError:
    """The parsed reply; a lost cookie race is returned as ``_RaceLost``."""
    try:
        parsed = wire.parse_reply(command, reply.status, reply.head.content_type, reply.body)
    except CommandError as exc:
        # In an empty context only "not logged in" depends on the context; a
        # refused password (badauth, locked) stands wherever it was sent.
        if race_lost and wire.is_not_logged_in(exc):
            return _RaceLost()
        raise
    except PbxUnavailableError as exc:  # HTTP 5xx: retried by the caller if safe
        return exc
    if race_lost:
        # It worked, but where nobody will look (a fresh context can only
        # have been logged in by this very command): do it where they do.
        return _RaceLost()
    log.debug("<- %s ok", command.cmd)
    return parsed
