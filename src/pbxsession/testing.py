"""A pytest plugin for applications built on pbxsession: the ``pbx_simulator`` fixture.

Installed with pbxsession (entry point ``pytest11``); it needs pytest-trio
and the ``sim`` extra. In a pytest-trio test::

    async def test_my_app(pbx_simulator):
        async with pbxsession.open_session(
            pbx_simulator.url, ws_host=pbx_simulator.ws_url
        ) as session:
            await session.login("alice", "alice-pass")

The fixture starts the embedded simulator on a free loopback port inside
the test's trio run and stops it afterwards. It is a
:class:`pbxsession.sim.Simulator`: its URLs, its built-in users, its views
(``user_view``, ``contexts``) and its fault controls (``set_delay``,
``fail_next``, ``expire``, ``restart``, ``drop_feeds``, ...).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pbxsession.sim import Simulator

__all__ = ["pbx_simulator"]


@pytest.fixture
async def pbx_simulator() -> AsyncIterator[Simulator]:
    """The embedded PBX simulator, serving on 127.0.0.1 for one test."""
    from pbxsession.sim import open_simulator

    async with open_simulator() as simulator:
        yield simulator
