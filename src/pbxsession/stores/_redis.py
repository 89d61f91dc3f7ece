"""A session store in Redis, shared by a fleet of processes on many machines.

redis-py's asyncio client needs asyncio, so this uses its blocking client
(thread-safe, with a connection pool) through ``trio.to_thread.run_sync``;
every call is one round trip or one atomic script, bounded by ``timeout``.
The ``redis`` package is imported only when a :class:`RedisStore` is made
(``pip install 'pbxsession[redis]'``).

Keys, under ``prefix`` (default ``pbxsession``), per host and user::

    {prefix}:{host}:{user}:cookie   string: the user's session cookie
    {prefix}:{host}:{user}:lock     string: the user's re-login lock's token (SET NX PX)
    {prefix}:{host}:contexts        hash: "{user}:{sub-ID}" ("" = default)
                                    -> {"logged_in", "seen_at"} JSON

``{user}`` is the user name percent-encoded with no safe character
(``urllib.parse.quote(user, safe="")``): it never holds a ``:``, so one
user's key can never be another's, whatever the names. The cookies and the
contexts expire ``ttl`` seconds after they were last used: every read of a
cookie and every write refreshes it and the host's contexts.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from .._errors import InvalidArgumentError, StoreError
from ._base import ContextRecord

if TYPE_CHECKING:
    import redis

__all__ = ["RedisStore"]

log = logging.getLogger("pbxsession")

T = TypeVar("T")

# KEYS: cookie, contexts. ARGV: cookie, replacing, has_replacing ("1"/"0"), ttl_ms,
# clear ("1": delete the cookie instead of setting ARGV[1]).
_SET_COOKIE = """
local current = redis.call('GET', KEYS[1])
if (not current) or (ARGV[3] == '1' and current == ARGV[2]) then
  if ARGV[5] == '1' then
    redis.call('DEL', KEYS[1])
    current = false
  else
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
    current = ARGV[1]
  end
else
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return current
"""

# KEYS: contexts, cookie. ARGV: field, value, ttl_ms, cutoff ("": no sweep).
# The sweep forgets the contexts last recorded before the cutoff (context_ttl).
_RECORD = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[4] ~= '' then
  local cutoff = tonumber(ARGV[4])
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local ok, data = pcall(cjson.decode, all[i + 1])
    local seen = ok and type(data) == 'table' and tonumber(data['seen_at'])
    if seen and seen < cutoff then
      redis.call('HDEL', KEYS[1], all[i])
    end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""

# KEYS: lock. ARGV: token. Deletes the lock only if this holder still has it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def redact_url(url: str) -> str:
    """``url`` with any user name and password replaced by ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{host}"))


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InvalidArgumentError(f"{name} must be a positive number of seconds")
    return float(value)


class RedisStore:
    """A :class:`~pbxsession.stores.SessionStore` in Redis, for a fleet of processes.

    Every session using the same server, database and ``prefix`` shares the
    cookie of its user per host, like the tabs of one browser profile per
    user; sessions of different users never share one. Keys expire ``ttl``
    seconds (default 24 h) after their last use, and a context not recorded
    for ``context_ttl`` seconds (default 30 days) is forgotten, as by the
    other stores. :meth:`lock` (per host and user) is ``SET NX PX`` with a
    random token: it expires by itself after ``lock_ttl`` if its holder dies,
    is released by a compare-and-delete script, and is waited for at most
    ``lock_timeout``. ``timeout`` bounds each Redis call. Close the store with
    :meth:`aclose` (or ``async with``). The URL's password never appears in
    messages or ``repr``.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "pbxsession",
        ttl: float = 24 * 3600,
        lock_ttl: float = 30.0,
        lock_timeout: float = 30.0,
        timeout: float = 5.0,
        context_ttl: float = 30 * 86400.0,
    ) -> None:
        try:
            import redis
        except ImportError as exc:
            raise StoreError(
                "RedisStore needs the redis package: pip install 'pbxsession[redis]'"
            ) from exc
        if not isinstance(prefix, str) or not prefix:
            raise InvalidArgumentError("prefix must be a non-empty string")
        self._ttl_ms = int(_positive("ttl", ttl) * 1000)
        self._lock_ttl_ms = int(_positive("lock_ttl", lock_ttl) * 1000)
        self._lock_timeout = _positive("lock_timeout", lock_timeout)
        self._context_ttl = _positive("context_ttl", context_ttl)
        self._swept_at: dict[str, float] = {}
        timeout = _positive("timeout", timeout)
        self._prefix = prefix
        self._where = redact_url(url)
        self._error: type[Exception] = redis.RedisError
        try:
            self._client: redis.Redis = redis.Redis.from_url(
                url, decode_responses=True, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        except (ValueError, redis.RedisError) as exc:
            raise StoreError(f"bad Redis URL {self._where}: {exc}") from None
        self._set_cookie = self._client.register_script(_SET_COOKIE)
        self._release = self._client.register_script(_RELEASE)
        self._record = self._client.register_script(_RECORD)
        self._local_locks: dict[tuple[str, str], trio.Lock] = {}

    def __repr__(self) -> str:
        return f"<RedisStore url={self._where!r} prefix={self._prefix!r}>"

    async def __aenter__(self) -> RedisStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections to Redis."""
        await trio.to_thread.run_sync(self._client.close)

    @property
    def prefix(self) -> str:
        """The first part of every key of this store."""
        return self._prefix

    def key(self, host: str, name: str, user: str | None = None) -> str:
        """Key ``name`` of ``host`` (``contexts``) or of ``user`` on it (``cookie``, ``lock``)."""
        if user is None:
            return f"{self._prefix}:{host}:{name}"
        return f"{self._prefix}:{host}:{_escape(user)}:{name}"

    # ----------------------------------------------------------- the interface

    async def get_cookie(self, host: str, user: str) -> str | None:
        """The session cookie of ``user`` for ``host``, or ``None``; refreshes its expiry."""
        key = self.key(host, "cookie", user)
        value = await self._run("read the cookie", lambda c: c.getex(key, px=self._ttl_ms))
        return None if value is None else str(value)

    async def set_cookie(
        self, host: str, user: str, cookie: str | None, *, replacing: str | None
    ) -> str | None:
        """Compare-and-set ``cookie`` (``None`` clears); return the cookie in effect."""
        keys = [self.key(host, "cookie", user), self.key(host, "contexts")]
        args = [
            cookie or "",
            replacing or "",
            "0" if replacing is None else "1",
            self._ttl_ms,
            "1" if cookie is None else "0",
        ]
        kept = await self._run("store the cookie", lambda c: self._set_cookie(keys, args, c))
        return None if kept is None else str(kept)

    async def record_context(
        self, host: str, user: str, subid: str | None, logged_in: bool
    ) -> None:
        """Note that ``user``'s context ``subid`` on ``host`` is logged in (or out), now."""
        now = time.time()
        value = json.dumps({"logged_in": bool(logged_in), "seen_at": now})
        keys = [self.key(host, "contexts"), self.key(host, "cookie", user)]
        # A sweep at most once per tenth of the TTL (per host) keeps writes O(1) on average.
        cutoff = ""
        if now - self._swept_at.setdefault(host, now) >= self._context_ttl / 10:
            self._swept_at[host] = now
            cutoff = repr(now - self._context_ttl)
        args: list[str | int] = [_field(user, subid), value, self._ttl_ms, cutoff]
        await self._run("record a context", lambda c: self._record(keys, args, c))

    async def get_context(self, host: str, user: str, subid: str | None) -> ContextRecord | None:
        """What was last recorded of ``user``'s context ``subid`` on ``host``."""
        key, field = self.key(host, "contexts"), _field(user, subid)
        raw = await self._run("read a context", lambda c: c.hget(key, field))
        return None if raw is None else self._decode(key, field, str(raw))

    async def contexts(self, host: str) -> dict[tuple[str, str | None], ContextRecord]:
        """Every context recorded for ``host``, by ``(user, subid)``."""
        key = self.key(host, "contexts")
        raw: dict[str, str] = await self._run("read the contexts", lambda c: c.hgetall(key))
        records = [self._decode(key, f, v) for f, v in sorted(raw.items())]
        return {(r.user, r.subid): r for r in records}

    async def latest_user(self, host: str) -> str | None:
        """The user most recently recorded logged in on ``host`` (and not out since)."""
        logged_in = [r for r in (await self.contexts(host)).values() if r.logged_in]
        if not logged_in:
            return None
        return max(logged_in, key=lambda r: r.seen_at).user

    @asynccontextmanager
    async def lock(self, host: str, user: str) -> AsyncIterator[None]:
        """A lock per (host, user) shared by every process using this Redis and prefix.

        Raises :class:`~pbxsession.StoreError` after waiting ``lock_timeout``.
        """
        key = self.key(host, "lock", user)
        token = secrets.token_hex(16)
        local = self._local_locks.setdefault((host, user), trio.Lock())
        async with local:
            deadline = trio.current_time() + self._lock_timeout
            delay = 0.002
            while not await self._run(
                "take the lock", lambda c: c.set(key, token, nx=True, px=self._lock_ttl_ms)
            ):
                if trio.current_time() >= deadline:
                    raise StoreError(
                        f"Redis store {self._where}: the lock {key} was held elsewhere "
                        f"for over {self._lock_timeout:g} s"
                    )
                await trio.sleep(delay)
                delay = min(delay * 2, 0.05)
            try:
                yield
            finally:
                with trio.CancelScope(shield=True):
                    try:
                        await self._run(
                            "release the lock", lambda c: self._release([key], [token], c)
                        )
                    except StoreError as exc:  # it expires by itself after lock_ttl
                        log.warning("%s", str(exc))

    # ------------------------------------------------------------- internals

    async def _run(self, what: str, fn: Callable[[redis.Redis], Any]) -> Any:
        def call() -> Any:
            try:
                return fn(self._client)
            except self._error as exc:
                raise StoreError(f"Redis store {self._where}: cannot {what}: {exc}") from exc

        return await trio.to_thread.run_sync(call)

    def _decode(self, key: str, field: str, raw: str) -> ContextRecord:
        try:
            escaped, sep, subid = field.partition(":")
            if not sep:
                raise ValueError("no user in the field")  # noqa: TRY301
            data = json.loads(raw)
            logged_in = data["logged_in"]
            seen_at = float(data["seen_at"])
            if not isinstance(logged_in, bool):
                raise TypeError("logged_in is not a boolean")  # noqa: TRY301
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(
                f"Redis store {self._where}: {key} holds a value pbxsession did not write"
            ) from exc
        user = urllib.parse.unquote(escaped, errors="surrogatepass")
        return ContextRecord(user, subid or None, logged_in, seen_at)


def _escape(user: str) -> str:
    """``user`` without ``:`` (percent-encoded, so that distinct names stay distinct)."""
    return urllib.parse.quote(user, safe="", errors="surrogatepass")


def _field(user: str, subid: str | None) -> str:
    # Sub-IDs are 1 to 64 characters, so "" can stand for the default context.
    return f"{_escape(user)}:{subid or ''}"
