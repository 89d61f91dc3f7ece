"""Shared fixtures: the embedded simulator on a loopback port, a fresh store."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import pbxsession
from pbxsession.sim import Simulator, open_simulator


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with open_simulator() as simulator:
        yield simulator


@pytest.fixture
def store() -> pbxsession.MemoryStore:
    return pbxsession.MemoryStore()
