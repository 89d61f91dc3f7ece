"""A context's event numbering and ring buffer of recent feed events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ._wire import event_frame

__all__ = ["EventRing", "FeedEvent"]


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One numbered feed event and its pre-rendered JSON frame."""

    seq: int
    kind: str
    data: Mapping[str, object]
    frame: str


class EventRing:
    """Numbered events of one context; keeps exactly the last ``size`` of them.

    ``seq`` rises by exactly 1 per event and never goes back (``clear`` drops
    the kept events but keeps the numbering). Storage is trimmed lazily, so
    appending and reading a tail are amortised O(1) per event.
    """

    __slots__ = ("_events", "_newest", "_size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("ring size must be at least 1")
        self._size = size
        self._events: list[FeedEvent] = []
        self._newest = 0

    @property
    def newest(self) -> int:
        """The newest sequence number given out (0 before the first event)."""
        return self._newest

    @property
    def oldest_kept(self) -> int:
        """The oldest kept sequence number (``newest + 1`` when none is kept)."""
        kept = min(len(self._events), self._size)
        return self._newest - kept + 1

    def append(self, kind: str, data: Mapping[str, object]) -> FeedEvent:
        """Number and keep one event; return it."""
        self._newest += 1
        event = FeedEvent(self._newest, kind, data, event_frame(self._newest, kind, data))
        self._events.append(event)
        if len(self._events) > 2 * self._size:
            del self._events[: len(self._events) - self._size]
        return event

    def clear(self) -> None:
        """Forget the kept events, keeping the numbering."""
        self._events.clear()

    def complete_after(self, since: int) -> bool:
        """Tell whether every event numbered above ``since`` is still kept."""
        return since >= self.oldest_kept - 1

    def after(self, since: int) -> list[FeedEvent]:
        """The kept events numbered above ``since``, oldest first."""
        count = self._newest - max(since, self.oldest_kept - 1)
        if count <= 0:
            return []
        return self._events[len(self._events) - count :]
