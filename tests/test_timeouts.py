"""Timeout: httpx-style coercion, every bad value refused with InvalidArgumentError."""

from __future__ import annotations

import math

import pytest

from pbxsession import InvalidArgumentError
from pbxsession._timeouts import Timeout


def test_defaults() -> None:
    assert Timeout() == Timeout(command=5.0, operation=15.0)


@pytest.mark.parametrize(("value", "command", "operation"), [(3, 3.0, 9.0), (0.5, 0.5, 1.5)])
def test_a_number_sets_command_and_three_times_it_for_the_operation(
    value: float, command: float, operation: float
) -> None:
    assert Timeout.coerce(value) == Timeout(command=command, operation=operation)


def test_a_timeout_is_kept() -> None:
    timeout = Timeout(command=1, operation=2)
    assert Timeout.coerce(timeout) is timeout


@pytest.mark.parametrize("value", [True, False, 0, -1, math.nan, math.inf, "5", None])
def test_bad_values_are_refused(value: object) -> None:
    with pytest.raises(InvalidArgumentError):
        Timeout.coerce(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["command", "operation"])
def test_bad_fields_are_refused(field: str) -> None:
    with pytest.raises(InvalidArgumentError):
        Timeout(**{field: 0})
