"""A pytest plugin for applications built on pbxsession: the simulator as fixtures.

Installed with pbxsession (entry point ``pytest11``); it needs pytest-trio
(with ``trio_mode = true`` in your pytest configuration, or the
``@pytest.mark.trio`` marker on each test) and the ``sim`` extra
(``pip install 'pbxsession[sim]'``). Three fixtures, each a
:class:`pbxsession.sim.Simulator` on a free loopback port inside the test's
trio run, stopped afterwards:

``pbx_simulator``
    The simulator with its built-in users (alice, admin, bob)::

        import pbxsession

        async def test_my_app(pbx_simulator):
            async with pbxsession.open_session(pbx_simulator.url) as session:
                await session.login("alice", "alice-pass")

``pbx_simulator_factory``
    For your own users, event rate or any other option of
    :func:`pbxsession.sim.open_simulator`: call it with those options and
    use the result as an async context manager (several at once if you
    like)::

        from pbxsession.sim import SimCompany, SimUser

        CAROL = SimUser(id="103", login="carol", password="carol-pass", name="Carol",
                        home="7", companies=(SimCompany("7", "Acme Ltd"),))

        async def test_busy_pbx(pbx_simulator_factory):
            async with pbx_simulator_factory(users=[CAROL], event_rate=50) as sim:
                ...

``pbx_simulator_tls``
    The simulator over https and wss, with a certificate from a throw-away
    CA: trust it with ``pbx_simulator_tls.ca_path`` (a PEM file) or
    ``pbx_simulator_tls.ssl_context``.

Each is a real server: its URLs (``url`` serves commands and the feed;
``ws_url`` is the feed alone), its views (``user_view``, ``contexts``,
``stats``) and its fault controls (``set_delay``, ``fail_next``,
``expire``, ``restart``, ``drop_feeds``, ...). Without the ``sim`` extra,
each fixture raises an ``ImportError`` naming ``pip install
'pbxsession[sim]'``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pbxsession.sim import Simulator

__all__ = ["pbx_simulator", "pbx_simulator_factory", "pbx_simulator_tls"]

SimulatorFactory = Callable[..., AbstractAsyncContextManager["Simulator"]]
"""``open_simulator``'s signature: keyword options in, ``async with`` out."""


def _open_simulator() -> SimulatorFactory:
    # Imported here, not at the top: the plugin loads in every pytest run, and
    # only a test that uses a fixture needs the sim extra (its ImportError says so).
    __tracebackhide__ = True
    from pbxsession.sim import open_simulator

    return open_simulator


# The async fixtures take the factory, a plain fixture, so that a missing sim
# extra fails at set-up, outside the trio run (no ExceptionGroup around it).


@pytest.fixture
def pbx_simulator_factory() -> SimulatorFactory:
    """Give ``open_simulator`` itself: call it with options, use it in ``async with``."""
    __tracebackhide__ = True  # a missing extra: pytest shows the message, not our frames
    return _open_simulator()


@pytest.fixture
async def pbx_simulator(pbx_simulator_factory: SimulatorFactory) -> AsyncIterator[Simulator]:
    """The embedded PBX simulator with its built-in users, on 127.0.0.1 for one test."""
    async with pbx_simulator_factory() as simulator:
        yield simulator


@pytest.fixture
async def pbx_simulator_tls(pbx_simulator_factory: SimulatorFactory) -> AsyncIterator[Simulator]:
    """The simulator over https/wss; trust ``.ca_path`` or ``.ssl_context``."""
    async with pbx_simulator_factory(tls=True) as simulator:
        yield simulator
