"""Immutable values that cross the public API: users, feed events, exit reports.

Nothing here does I/O or knows the wire format; ``_wire`` builds these from
replies and frames.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from ._errors import InvalidArgumentError

__all__ = [
    "Company",
    "ExitReport",
    "FeedDown",
    "FeedEvent",
    "FeedGap",
    "FeedItem",
    "FeedOptions",
    "FeedStopped",
    "FeedUp",
    "Permission",
    "SessionLost",
    "StepOutcome",
    "StepResult",
    "User",
]


@dataclass(frozen=True, slots=True)
class Company:
    """A company the user may administer: its ``id`` and display ``name``."""

    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Permission:
    """One ``action`` of the login reply; ``company_level`` for company-wide ones."""

    name: str
    company_level: bool = False


@dataclass(frozen=True, slots=True)
class User:
    """The logged-in user as the PBX describes it.

    ``company`` is the currently selected company's id, ``home`` the user's
    home company; ``companies`` lists the companies a multi-company
    administrator may select (fewer than two: ``select_company`` is refused).
    """

    id: str
    login: str
    name: str
    company: str
    home: str
    permissions: tuple[Permission, ...] = ()
    companies: tuple[Company, ...] = ()

    def has_permission(self, name: str) -> bool:
        """Whether the login granted the permission (``action``) ``name``."""
        return any(p.name == name for p in self.permissions)

    @property
    def is_multi_company(self) -> bool:
        """Whether this user may select among two or more companies."""
        return len(self.companies) >= 2


FeedKind = Literal["device", "presence", "mailbox", "queue", "chat", "call"]


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One change from the live feed; ``seq`` rises by one per event on the PBX."""

    seq: int
    kind: str
    data: Mapping[str, Any]

    def __post_init__(self) -> None:
        # Freeze the payload view so that consumers sharing the event cannot
        # change it for each other.
        if not isinstance(self.data, MappingProxyType):
            object.__setattr__(self, "data", MappingProxyType(dict(self.data)))

    @classmethod
    def _from_parsed(cls, seq: int, kind: str, data: dict[str, Any]) -> FeedEvent:
        """The event for a freshly parsed frame (the feed's hot path).

        ``data`` must be a dict that nobody else holds (just parsed from the
        wire): it is wrapped read-only without the copy ``__init__`` makes.
        Keep in step with the fields above.
        """
        event = _new_object(cls)
        _set_seq(event, seq)
        _set_kind(event, kind)
        _set_data(event, MappingProxyType(data))
        return event


# The slot setters of FeedEvent, past the frozen ``__setattr__``: for ``_from_parsed``.
_new_object = object.__new__
_set_seq = FeedEvent.__dict__["seq"].__set__
_set_kind = FeedEvent.__dict__["kind"].__set__
_set_data = FeedEvent.__dict__["data"].__set__


@dataclass(frozen=True, slots=True)
class FeedGap:
    """Events were lost before the next one.

    ``reason`` is ``"server"`` when the PBX no longer had them (resume failed;
    ``after_seq`` is the last seen, ``resumed_at`` the PBX's newest number) or
    ``"slow_consumer"`` when this subscriber's buffer overflowed and
    ``missed`` items were dropped for it alone.
    """

    reason: Literal["server", "slow_consumer"]
    after_seq: int | None = None
    resumed_at: int | None = None
    missed: int | None = None


@dataclass(frozen=True, slots=True)
class FeedStopped:
    """The feed stopped for good: ``reason`` says why, ``errno`` the 6.5 number.

    A consumer that subscribes after it (until the next login's feed starts)
    receives it first.
    """

    reason: str
    errno: int | None = None


@dataclass(frozen=True, slots=True)
class SessionLost:
    """The PBX logged this session out; it is back in ``host_set``.

    Published after the transition: a consumer seeing it already reads
    ``host_set``. A consumer that subscribes after it (until the next login's
    feed starts) receives it first.
    """

    reason: str


@dataclass(frozen=True, slots=True)
class FeedDown:
    """The feed's connection is down and it is reconnecting (an outage began).

    ``errno`` is the 6.5 number of what ended the connection (PROTOCOL.md),
    ``reason`` the text. One each time the feed goes down: failed reconnect
    attempts add none. The next status item after it is :class:`FeedUp`,
    :class:`FeedStopped` or :class:`SessionLost`. A feed that flaps (comes up
    and drops again before it has stayed up ``reset_after`` seconds) shows
    each drop, but counts as one outage for the backoff and for
    ``max_ws_retry_time``. A consumer that subscribes during the outage
    receives it first.
    """

    errno: int
    reason: str


@dataclass(frozen=True, slots=True)
class FeedUp:
    """The feed is back after a :class:`FeedDown` (the outage ended).

    ``resumed`` says whether the PBX still had every event missed meanwhile;
    when it is ``False`` a ``FeedGap(reason="server")`` precedes this item.
    ``downtime`` is the outage's length in seconds.
    """

    resumed: bool
    downtime: float


FeedItem = FeedEvent | FeedGap | FeedDown | FeedUp | FeedStopped | SessionLost


def _check_seconds(name: str, value: float | None, *, low: float, high: float) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentError(f"{name} must be a number of seconds")
    if math.isnan(value) or not low <= value <= high:
        raise InvalidArgumentError(f"{name} must be between {low} and {high} seconds")


@dataclass(frozen=True, slots=True)
class FeedOptions:
    """What the live feed subscribes to and how it keeps itself alive.

    Mirrors the 6.5 API's ``startFeed`` options. ``pingtime`` is the
    keep-alive period (10 to 999 s); a pong later than ``pong_timeout`` counts
    as errno 92; ``max_ws_retry_time`` bounds reconnecting (0: never retry,
    ``None``: forever). ``buffer_size`` is each subscriber's queue length.
    ``handshake_timeout`` bounds one connection attempt, from the TCP connect
    through TLS and the WebSocket handshake to the ``ready`` frame (it is
    also the longest ``login`` waits for the feed).
    """

    device: bool = True
    presence: bool = True
    mailbox: bool = True
    queue: bool = True
    pingtime: float = 540.0
    pong_timeout: float = 30.0
    max_ws_retry_time: float | None = None
    buffer_size: int = 1000
    handshake_timeout: float = 10.0

    def __post_init__(self) -> None:
        _check_seconds("pingtime", self.pingtime, low=10, high=999)
        _check_seconds("pong_timeout", self.pong_timeout, low=0.001, high=3600)
        _check_seconds("max_ws_retry_time", self.max_ws_retry_time, low=0, high=math.inf)
        _check_seconds("handshake_timeout", self.handshake_timeout, low=0.001, high=3600)
        if isinstance(self.buffer_size, bool) or not isinstance(self.buffer_size, int):
            raise InvalidArgumentError("buffer_size must be an int")
        if self.buffer_size < 1:
            raise InvalidArgumentError("buffer_size must be at least 1")


class StepOutcome(enum.Enum):
    """How one step of the staged exit ended."""

    OK = "ok"
    SKIPPED = "skipped"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


@dataclass(frozen=True, slots=True)
class StepResult:
    """One exit step's result: ``error`` when failed, ``reason`` when skipped."""

    outcome: StepOutcome
    duration: float = 0.0
    error: BaseException | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ExitReport:
    """What ``Session.exit`` did: one :class:`StepResult` per step name.

    Step names: ``chat_offline``, ``history_save``, ``rtc_release``,
    ``logout``. ``duration`` is the whole exit's wall time in seconds.
    """

    steps: Mapping[str, StepResult] = field(default_factory=dict)
    duration: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.steps, MappingProxyType):
            object.__setattr__(self, "steps", MappingProxyType(dict(self.steps)))

    @property
    def ok(self) -> bool:
        """Whether no step failed or timed out."""
        return all(r.outcome in (StepOutcome.OK, StepOutcome.SKIPPED) for r in self.steps.values())
