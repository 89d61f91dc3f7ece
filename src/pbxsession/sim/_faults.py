"""Command fault settings as plain data: per-command delay and fail-next-N."""

from __future__ import annotations

from collections import Counter

__all__ = ["CommandFaults"]


class CommandFaults:
    """Delays and pending failures of commands, keyed by ``cmd`` (None = any).

    The HTTP layer asks :meth:`delay_for` and :meth:`take_failure` for each
    command; a command-specific setting wins over the one for every command.
    """

    def __init__(self) -> None:
        self._delays: dict[str | None, float] = {}
        self._failures: Counter[str | None] = Counter()

    def set_delay(self, seconds: float, cmd: str | None = None) -> None:
        """Delay every command (``cmd=None``) or one command by ``seconds`` (0 = none)."""
        if seconds < 0:
            raise ValueError("a delay cannot be negative")
        if seconds == 0:
            self._delays.pop(cmd, None)
        else:
            self._delays[cmd] = seconds

    def delay_for(self, cmd: str) -> float:
        """The delay to apply before answering ``cmd``."""
        if cmd in self._delays:
            return self._delays[cmd]
        return self._delays.get(None, 0.0)

    def fail_next(self, n: int, cmd: str | None = None) -> None:
        """Answer the next ``n`` commands (of one kind, or any) with HTTP 500."""
        if n < 0:
            raise ValueError("a failure count cannot be negative")
        if n == 0:
            self._failures.pop(cmd, None)
        else:
            self._failures[cmd] = n

    def take_failure(self, cmd: str) -> bool:
        """Consume one pending failure for ``cmd``; tell whether it must fail."""
        for key in (cmd, None):
            if self._failures.get(key, 0) > 0:
                self._failures[key] -= 1
                return True
        return False

    def clear(self) -> None:
        """Drop every delay and pending failure."""
        self._delays.clear()
        self._failures.clear()

    def snapshot(self) -> dict[str, object]:
        """The current settings as JSON-friendly data."""
        return {
            "delays": {("*" if k is None else k): v for k, v in self._delays.items()},
            "failures": {("*" if k is None else k): v for k, v in self._failures.items() if v},
        }
