"""How long a command may take: one attempt, and one operation with its retries."""

from __future__ import annotations

from dataclasses import dataclass

from ._checks import positive_seconds
from ._errors import InvalidArgumentError

__all__ = ["Timeout"]


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
