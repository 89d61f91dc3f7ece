"""The session store interface: what sessions sharing a "browser" share."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["ContextRecord", "SessionStore"]


@dataclass(frozen=True, slots=True)
class ContextRecord:
    """What a store knows of one login context: who, and when last seen logged in.

    ``login`` is ``None`` once the context was seen logged out. ``seen_at``
    is wall-clock time (seconds since the epoch).
    """

    login: str | None
    seen_at: float


@runtime_checkable
class SessionStore(Protocol):
    """Where sessions keep what a browser would: the cookie and the contexts.

    Everything using one store shares one session cookie per host, the way
    browser tabs share one, and so shares the login of the default context;
    a sub-ID gives a session a context of its own under that cookie. Per
    host a store keeps the cookie and, per context (sub-ID), who it was last
    seen logged in as and when. A store never holds a password. Methods are
    async so that stores backed by files or servers can run their blocking
    I/O in a thread.
    """

    async def get_cookie(self, host: str) -> str | None:
        """The session cookie for ``host``, or ``None``."""
        ...

    async def set_cookie(self, host: str, cookie: str, *, replacing: str | None) -> str:
        """Remember the session cookie the PBX at ``host`` set; return the one in effect.

        ``replacing`` is the cookie the request was sent with (``None`` for
        none). The new cookie is stored only if the store still holds
        ``replacing``: when several programs get a fresh cookie at once, the
        first to store it wins and the others adopt it (their request ran in
        a new, empty context that nobody shares). The check and the write are
        one atomic step.
        """
        ...

    async def record_context(self, host: str, subid: str | None, login: str | None) -> None:
        """Note that context ``subid`` on ``host`` is logged in as ``login`` (or out)."""
        ...

    async def get_context(self, host: str, subid: str | None) -> ContextRecord | None:
        """What was last recorded of context ``subid`` on ``host``."""
        ...

    async def contexts(self, host: str) -> dict[str | None, ContextRecord]:
        """Every context recorded for ``host``, by sub-ID (``None``: the default one)."""
        ...

    def lock(self, host: str) -> AbstractAsyncContextManager[None]:
        """A lock shared by everything using this store, for single-flight re-login.

        Held by one task at a time among all the sessions (and, for stores
        shared between processes, all the processes) using the store; it is
        released when the block is left, by cancellation too.
        """
        ...
