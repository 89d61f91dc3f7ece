"""The session store interface: what sessions logging in as one user share.

A store is to sessions what a browser profile is to its tabs, with one
profile per user: sessions logging in as the same user on a host share one
session cookie (and so the default context's login), while sessions of
different users never share a cookie, so that one user's login never
replaces another's on the PBX (the PBX isolates discrete users, and a
password login replaces the user of the context it is sent in).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["ContextRecord", "CookieSlot", "SessionStore"]


@dataclass(frozen=True, slots=True)
class ContextRecord:
    """What a store knows of one login context: whose, whether logged in, when last seen.

    ``user`` and ``subid`` (``None``: the default context) say which context
    it is; ``logged_in`` is ``False`` once it was seen logged out; ``seen_at``
    is wall-clock time (seconds since the epoch) of the last record.
    """

    user: str
    subid: str | None
    logged_in: bool
    seen_at: float


@runtime_checkable
class SessionStore(Protocol):
    """Where sessions keep what a browser profile would: cookies and contexts.

    Per host and per user, a store keeps the session cookie and, per context
    (sub-ID), whether it was last seen logged in and when; per host, which
    user was most recently seen logged in. A store never holds a password.
    Methods are async so that stores backed by files or servers can run
    their blocking I/O in a thread.
    """

    async def get_cookie(self, host: str, user: str) -> str | None:
        """The session cookie of ``user`` for ``host``, or ``None``."""
        ...

    async def set_cookie(
        self, host: str, user: str, cookie: str | None, *, replacing: str | None
    ) -> str | None:
        """Store ``cookie`` (``None`` clears it) if ``replacing`` is still stored.

        ``replacing`` is the cookie the request was sent with (``None`` for
        none). The new value is stored only if the store still holds
        ``replacing`` (or nothing): when several programs get a fresh cookie
        at once, the first to store it wins and the others adopt it. The
        check and the write are one atomic step. Returns the cookie in
        effect afterwards.
        """
        ...

    async def record_context(
        self, host: str, user: str, subid: str | None, logged_in: bool
    ) -> None:
        """Note that ``user``'s context ``subid`` on ``host`` is logged in (or out), now."""
        ...

    async def get_context(self, host: str, user: str, subid: str | None) -> ContextRecord | None:
        """What was last recorded of ``user``'s context ``subid`` on ``host``."""
        ...

    async def contexts(self, host: str) -> dict[tuple[str, str | None], ContextRecord]:
        """Every context recorded for ``host``, by ``(user, subid)``."""
        ...

    async def latest_user(self, host: str) -> str | None:
        """The user most recently recorded logged in on ``host`` (and not out since).

        Any sub-ID counts. ``None`` when no context of ``host`` is recorded
        logged in.
        """
        ...

    def lock(self, host: str, user: str) -> AbstractAsyncContextManager[None]:
        """A lock per (host, user) shared by everything using this store.

        Held by one task at a time among all the sessions (and, for stores
        shared between processes, all the processes) using the store for
        that user; other users' locks are independent. Released when the
        block is left, by cancellation too.
        """
        ...


@dataclass(frozen=True, slots=True)
class CookieSlot:
    """One user's session cookie for one host in a store: what a request sends and updates."""

    store: SessionStore
    host: str
    user: str

    async def get(self) -> str | None:
        """The cookie in the slot, or ``None``."""
        return await self.store.get_cookie(self.host, self.user)

    async def put(self, cookie: str | None, *, replacing: str | None) -> str | None:
        """Compare-and-set the slot (``None`` clears it); return the cookie in effect."""
        return await self.store.set_cookie(self.host, self.user, cookie, replacing=replacing)
