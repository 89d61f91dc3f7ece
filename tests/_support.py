"""Helpers shared by the test modules (imported, not a fixture)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pbxsession
from pbxsession.sim import Simulator


@asynccontextmanager
async def session_on(
    sim: Simulator, store: pbxsession.SessionStore, **kwargs: Any
) -> AsyncIterator[pbxsession.Session]:
    """A session on the simulator's command and feed hosts, with ``store``."""
    kwargs.setdefault("ws_host", sim.ws_url)
    async with pbxsession.open_session(sim.url, store=store, **kwargs) as session:
        yield session
