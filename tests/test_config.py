"""open_session's options: checked once, at the call, before anything is sent."""

from __future__ import annotations

import pytest

import pbxsession
from pbxsession import InvalidArgumentError, InvalidHostError
from pbxsession.sim import Simulator


@pytest.mark.parametrize(
    "options",
    [
        {"allow_insecure": "False"},
        {"keep_session": 1},
        {"exit_on_close": None},
        {"exit_timeout": "5"},
        {"store": "x"},
        {"timeout": 0},
        {"retries": -1},
        {"verify": 3},
        {"feed": {}},
    ],
)
async def test_bad_options_are_refused_at_the_call(
    sim: Simulator, options: dict[str, object]
) -> None:
    before = sim.command_count()
    with pytest.raises(InvalidArgumentError):
        async with pbxsession.open_session(sim.url, **options):  # type: ignore[arg-type]
            raise AssertionError("opened")  # pragma: no cover
    assert sim.command_count() == before


@pytest.mark.parametrize(
    "host",
    ["https://a..b", "https://" + "a" * 64 + ".example", "http://h:0", "http://evil.localhost"],
)
async def test_bad_hosts_are_refused_at_the_call(sim: Simulator, host: str) -> None:
    before = sim.command_count()
    with pytest.raises(InvalidHostError):
        async with pbxsession.open_session(host):
            raise AssertionError("opened")  # pragma: no cover
    assert sim.command_count() == before


async def test_a_number_is_a_timeout_and_an_exit_timeout() -> None:
    async with pbxsession.open_session(timeout=2, exit_timeout=4, feed=None) as session:
        assert session.state is pbxsession.State.UNCONFIGURED
    assert pbxsession.Timeout.coerce(2) == pbxsession.Timeout(command=2, operation=6)
    assert pbxsession.ExitTimeouts.coerce(4) == pbxsession.ExitTimeouts(step=4, total=4)
    with pytest.raises(InvalidArgumentError):
        pbxsession.Timeout.coerce(True)  # type: ignore[arg-type]
