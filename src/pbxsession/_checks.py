"""Argument checks shared by every public constructor: one place, one wording.

Each returns the value it accepted (normalised), or raises
:class:`~pbxsession.InvalidArgumentError` naming the argument.
"""

from __future__ import annotations

import math

from ._errors import InvalidArgumentError

__all__ = ["boolean", "non_negative_int", "positive_seconds"]


def positive_seconds(name: str, value: object, *, finite: bool = True) -> float:
    """``value`` as a positive number of seconds (``bool`` refused, NaN refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentError(f"{name} must be a positive number of seconds")
    if math.isnan(value) or not value > 0 or (finite and math.isinf(value)):
        raise InvalidArgumentError(f"{name} must be a positive, finite number of seconds")
    return float(value)


def non_negative_int(name: str, value: object) -> int:
    """``value`` as an ``int`` of at least 0 (``bool`` refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgumentError(f"{name} must be a non-negative int")
    return value


def boolean(name: str, value: object) -> bool:
    """``value`` if it is a real ``bool``: ``"False"`` or ``0`` is refused, not guessed."""
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{name} must be True or False, not {type(value).__name__}")
    return value
