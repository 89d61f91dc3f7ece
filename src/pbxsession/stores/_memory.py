"""The in-process store: the library's default, one per process."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from .._errors import InvalidArgumentError
from ._base import ContextRecord

__all__ = ["MemoryStore", "default_store"]


class MemoryStore:
    """A :class:`~pbxsession.stores.SessionStore` in memory, shared within one process.

    Sessions given the same ``MemoryStore`` behave like tabs of one browser.
    A context not recorded for ``context_ttl`` seconds (default 30 days) is
    forgotten, so that a long-running process's random sub-IDs do not pile up.
    """

    def __init__(self, *, context_ttl: float = 30 * 86400.0) -> None:
        if isinstance(context_ttl, bool) or not isinstance(context_ttl, int | float):
            raise InvalidArgumentError("context_ttl must be a number of seconds")
        if not context_ttl > 0:
            raise InvalidArgumentError("context_ttl must be positive")
        self._context_ttl = float(context_ttl)
        self._pruned_at = time.time()
        self._cookies: dict[str, str] = {}
        self._contexts: dict[tuple[str, str | None], ContextRecord] = {}
        self._locks: dict[str, trio.Lock] = {}

    async def get_cookie(self, host: str) -> str | None:
        """The session cookie for ``host``, or ``None``."""
        return self._cookies.get(host)

    async def set_cookie(self, host: str, cookie: str, *, replacing: str | None) -> str:
        """Store ``cookie`` for ``host`` if ``replacing`` is still stored; return the one kept."""
        current = self._cookies.get(host)
        if current is None or current == replacing:
            self._cookies[host] = current = cookie
        return current

    async def record_context(self, host: str, subid: str | None, login: str | None) -> None:
        """Note that context ``subid`` on ``host`` is logged in as ``login`` (or out)."""
        now = time.time()
        self._contexts[(host, subid)] = ContextRecord(login, now)
        # A sweep at most once per tenth of the TTL keeps writes O(1) on average.
        if now - self._pruned_at >= self._context_ttl / 10:
            self._pruned_at = now
            cutoff = now - self._context_ttl
            for key in [k for k, r in self._contexts.items() if r.seen_at < cutoff]:
                del self._contexts[key]

    async def get_context(self, host: str, subid: str | None) -> ContextRecord | None:
        """What was last recorded of context ``subid`` on ``host``."""
        return self._contexts.get((host, subid))

    async def contexts(self, host: str) -> dict[str | None, ContextRecord]:
        """Every context recorded for ``host``, by sub-ID (``None``: the default one)."""
        return {subid: record for (h, subid), record in self._contexts.items() if h == host}

    @asynccontextmanager
    async def lock(self, host: str) -> AsyncIterator[None]:
        """A lock per host shared by the sessions of this store (one trio run)."""
        lock = self._locks.setdefault(host, trio.Lock())
        async with lock:
            yield

    def __repr__(self) -> str:
        return f"<MemoryStore hosts={len(self._cookies)}>"


_default: MemoryStore | None = None


def default_store() -> MemoryStore:
    """The process-wide store used when a session is given none."""
    global _default
    if _default is None:
        _default = MemoryStore()
    return _default
