"""Time bounds, httpx-style: a plain number or a rich object.

:class:`Timeout` bounds commands (one attempt, and one operation with its
retries); :class:`ExitTimeouts` the staged exit. Both are frozen and checked
when made; ``coerce`` turns a number into one.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._checks import positive_seconds
from ._errors import InvalidArgumentError

__all__ = ["ExitTimeouts", "Timeout"]


@dataclass(frozen=True, slots=True)
class Timeout:
    """Deadlines in the httpx style, but on whole replies rather than on each read.

    ``command`` bounds one attempt, from sending the request to the parsed
    reply (connect, TLS, write, read, parse): a reply trickled byte by byte
    cannot outlast it. ``operation`` bounds one operation, retries included.
    """

    command: float = 5.0
    operation: float = 15.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "command", positive_seconds("Timeout.command", self.command))
        object.__setattr__(self, "operation", positive_seconds("Timeout.operation", self.operation))

    @classmethod
    def coerce(cls, value: float | Timeout) -> Timeout:
        """``value`` as a :class:`Timeout`: a number sets ``command``, ``operation`` is 3x it."""
        if isinstance(value, Timeout):
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidArgumentError("timeout must be a number of seconds or a Timeout")
        command = positive_seconds("timeout", value)
        return cls(command=command, operation=3 * command)


_DEFAULT_STEP = 5.0


@dataclass(frozen=True, slots=True)
class ExitTimeouts:
    """Bounds of the staged exit: ``step`` seconds per step, ``total`` for all of it."""

    step: float = _DEFAULT_STEP
    total: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "step", positive_seconds("ExitTimeouts.step", self.step))
        object.__setattr__(self, "total", positive_seconds("ExitTimeouts.total", self.total))

    @classmethod
    def coerce(cls, value: float | ExitTimeouts) -> ExitTimeouts:
        """``value`` as ExitTimeouts; a number is the whole exit's bound (steps up to 5 s)."""
        if isinstance(value, ExitTimeouts):
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidArgumentError("exit timeout must be a number of seconds or ExitTimeouts")
        total = positive_seconds("exit timeout", value)
        return cls(step=min(_DEFAULT_STEP, total), total=total)
