"""The in-process store: the library's default, one per process."""

from __future__ import annotations

import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from .._errors import InvalidArgumentError
from ._base import ContextRecord

__all__ = ["MemoryStore", "default_store"]

_Key = tuple[str, str]  # (host, user)

# trio.Lock belongs to one trio run: each run gets its own locks, so a store
# used by two runs (one after the other, or at once in two threads) works.
_RUN_LOCKS: trio.lowlevel.RunVar[weakref.WeakKeyDictionary[MemoryStore, dict[_Key, trio.Lock]]]
_RUN_LOCKS = trio.lowlevel.RunVar("pbxsession_memory_store_locks")


class MemoryStore:
    """A :class:`~pbxsession.stores.SessionStore` in memory, shared within one process.

    Sessions given the same ``MemoryStore`` behave like the tabs of one
    browser profile per user: those of one user share a cookie, those of
    different users never do. A context not recorded for ``context_ttl``
    seconds (default 30 days) is forgotten, so that a long-running process's
    random sub-IDs do not pile up.
    """

    def __init__(self, *, context_ttl: float = 30 * 86400.0) -> None:
        if isinstance(context_ttl, bool) or not isinstance(context_ttl, int | float):
            raise InvalidArgumentError("context_ttl must be a number of seconds")
        if not context_ttl > 0:
            raise InvalidArgumentError("context_ttl must be positive")
        self._context_ttl = float(context_ttl)
        self._pruned_at = time.time()
        self._cookies: dict[_Key, str] = {}
        # Insertion order is record order: the last logged-in record is the latest.
        self._contexts: dict[tuple[str, str, str | None], ContextRecord] = {}

    async def get_cookie(self, host: str, user: str) -> str | None:
        """The session cookie of ``user`` for ``host``, or ``None``."""
        return self._cookies.get((host, user))

    async def set_cookie(
        self, host: str, user: str, cookie: str | None, *, replacing: str | None
    ) -> str | None:
        """Compare-and-set ``cookie`` (``None`` clears); return the cookie in effect."""
        key = (host, user)
        current = self._cookies.get(key)
        if current is None or current == replacing:
            current = cookie
            if cookie is None:
                self._cookies.pop(key, None)
            else:
                self._cookies[key] = cookie
        return current

    async def record_context(
        self, host: str, user: str, subid: str | None, logged_in: bool
    ) -> None:
        """Note that ``user``'s context ``subid`` on ``host`` is logged in (or out), now."""
        now = time.time()
        key = (host, user, subid)
        self._contexts.pop(key, None)  # re-inserted last: the newest record
        self._contexts[key] = ContextRecord(user, subid, bool(logged_in), now)
        # A sweep at most once per tenth of the TTL keeps writes O(1) on average.
        if now - self._pruned_at >= self._context_ttl / 10:
            self._pruned_at = now
            cutoff = now - self._context_ttl
            for old in [k for k, r in self._contexts.items() if r.seen_at < cutoff]:
                del self._contexts[old]

    async def get_context(self, host: str, user: str, subid: str | None) -> ContextRecord | None:
        """What was last recorded of ``user``'s context ``subid`` on ``host``."""
        return self._contexts.get((host, user, subid))

    async def contexts(self, host: str) -> dict[tuple[str, str | None], ContextRecord]:
        """Every context recorded for ``host``, by ``(user, subid)``."""
        return {(u, s): r for (h, u, s), r in self._contexts.items() if h == host}

    async def latest_user(self, host: str) -> str | None:
        """The user most recently recorded logged in on ``host`` (and not out since)."""
        latest: ContextRecord | None = None
        for (h, _, _), record in self._contexts.items():
            newer = latest is None or record.seen_at >= latest.seen_at  # a tie: the later record
            if h == host and record.logged_in and newer:
                latest = record
        return None if latest is None else latest.user

    @asynccontextmanager
    async def lock(self, host: str, user: str) -> AsyncIterator[None]:
        """A lock per (host, user) shared by the sessions of this store (one trio run)."""
        try:
            by_store = _RUN_LOCKS.get()
        except LookupError:
            by_store = weakref.WeakKeyDictionary()
            _RUN_LOCKS.set(by_store)
        lock = by_store.setdefault(self, {}).setdefault((host, user), trio.Lock())
        async with lock:
            yield

    def __repr__(self) -> str:
        return f"<MemoryStore cookies={len(self._cookies)}>"


_default: MemoryStore | None = None


def default_store() -> MemoryStore:
    """The process-wide store used when a session is given none."""
    global _default
    if _default is None:
        _default = MemoryStore()
    return _default
