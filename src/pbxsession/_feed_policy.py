"""What the live feed decides, without I/O: resume, gaps, duplicates, retries, outages.

A :class:`FeedPolicy` is the feed's state machine in the h11 style: the
socket loop (``_feed.py``) tells it what happened (a ``ready`` frame, an
event's number, a failure) with the time as a number, and does what it
answers. Nothing here touches trio, sockets or clocks.

The rules:

- **Resume.** ``since`` is the newest number delivered or, before any event,
  the PBX's newest at the first ``ready``; an event at or below it is a
  duplicate from a resume and is dropped. Delivery is exactly-once.
- **Gap.** A ``ready`` with ``resumed: false`` (the PBX no longer had the
  events), or whose number is below ours (its numbering restarted), is a
  ``FeedGap(reason="server")``; after a restart the PBX's numbers are used.
- **Failure.** The errno's reaction (``_wire.feed_reaction``) decides:
  session lost (:class:`SessionLost`), stop for good (:class:`FeedStopped`),
  or retry after the backoff's delay. A TLS failure stops: retrying cannot
  fix a certificate.
- **Outage and budget.** An outage starts at a failure and lasts until a
  connection has stayed up ``backoff.reset_after`` seconds, so a feed that
  answers ``ready`` and drops again and again is one outage: its backoff
  attempts go on counting and ``max_ws_retry_time`` bounds the time it
  spends down, summed over its flaps (0: never retry, ``None``: forever;
  reaching the limit exactly stops). Time up between flaps is not counted.
- **Status items.** :class:`FeedDown` when the connection is lost (or the
  first attempt fails), :class:`FeedUp` at the next ``ready``; reconnect
  attempts that fail in between add nothing. An ending is never preceded
  by a FeedDown of its own: it says it all.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from . import _wire as wire
from ._errors import InvalidArgumentError
from ._models import FeedDown, FeedGap, FeedStopped, FeedUp, SessionLost

__all__ = [
    "BackoffPolicy",
    "Failure",
    "FeedEnding",
    "FeedPolicy",
    "FullJitterBackoff",
    "Retry",
    "Started",
    "Stop",
]

FeedEnding = FeedStopped | SessionLost


class BackoffPolicy(Protocol):
    """How long to wait before reconnect attempt number ``attempt`` (0-based)."""

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt`` of the current outage."""
        ...

    @property
    def reset_after(self) -> float:
        """Seconds a connection must stay up before the attempt count resets."""
        ...


@dataclass(frozen=True, slots=True)
class FullJitterBackoff:
    """Full-jitter exponential backoff: uniform(0, min(cap, base * 2**attempt)).

    The attempt count starts again once a connection stayed up ``reset_after``
    seconds.
    """

    base: float = 0.5
    cap: float = 30.0
    reset_after: float = 60.0

    def __post_init__(self) -> None:
        for name in ("base", "cap", "reset_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidArgumentError(f"{name} must be a number of seconds")
            if not value > 0 or math.isinf(value):
                raise InvalidArgumentError(f"{name} must be a positive, finite number of seconds")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt``."""
        return random.uniform(0, min(self.cap, self.base * 2 ** min(attempt, 30)))


@dataclass(frozen=True, slots=True)
class Failure:
    """How one connection (or attempt) ended: a 6.5 feed ``errno`` and the text why.

    ``tls`` marks a TLS failure (certificate, hostname, TLS on a plain port):
    it stops the feed whatever the errno.
    """

    errno: int
    message: str
    tls: bool = False

    @classmethod
    def handshake_refused(cls, status: int, url: str) -> Failure:
        """The handshake answered HTTP ``status`` instead of switching protocols."""
        errno = wire.handshake_errno(status)
        if errno == wire.ERRNO_LOGGED_OUT:
            return cls(errno, f"the PBX refused the feed: not logged in (HTTP {status})")
        if status == 404:
            # Not the PBX's feed at all: say where we looked, the likely mistake.
            return cls(errno, f"no feed at {url} (HTTP 404): wrong host, port or path?")
        return cls(errno, f"feed handshake refused: HTTP {status}")

    @classmethod
    def off_protocol(cls, why: str) -> Failure:
        """A frame off-protocol (binary, not JSON, unknown type): errno 92."""
        return cls(wire.ERRNO_CONNECTION_FAILED, why)


#: Failures the socket loop names without an error frame.
CLOSED = Failure(wire.ERRNO_CONNECTION_FAILED, "feed closed without error")
NO_PONG = Failure(wire.ERRNO_CONNECTION_FAILED, "no pong in time")
NO_READY = Failure(wire.ERRNO_OPEN_FAILED, "no ready frame in time")
HANDSHAKE_TIMEOUT = Failure(wire.ERRNO_OPEN_FAILED, "feed handshake timed out")
NOT_READY_FIRST = Failure(wire.ERRNO_CONNECTION_FAILED, "feed did not start with ready")
UNEXPECTED_READY = Failure(wire.ERRNO_CONNECTION_FAILED, "unexpected ready frame")


@dataclass(frozen=True, slots=True)
class Retry:
    """Reconnect after ``delay`` seconds; publish ``down`` first when it is set."""

    delay: float
    down: FeedDown | None


@dataclass(frozen=True, slots=True)
class Stop:
    """The feed is over: ``ending`` is what the session publishes after its transition."""

    ending: FeedEnding


Decision = Retry | Stop


@dataclass(frozen=True, slots=True)
class Started:
    """A ``ready`` was taken: publish ``gap`` then ``up`` (each when set), in that order."""

    gap: FeedGap | None
    up: FeedUp | None


# The endings by reaction (the errno -> reaction table itself is ``_wire``'s).
_ENDINGS: Mapping[wire.FeedReaction, Callable[[Failure], FeedEnding]] = {
    wire.FeedReaction.SESSION_LOST: lambda f: SessionLost(
        f.message or "the PBX logged this session out"
    ),
    wire.FeedReaction.FATAL: lambda f: FeedStopped(f.message or "PBX version changed", f.errno),
}


class FeedPolicy:
    """The decisions of one login's feed; ``now`` is any monotonic clock in seconds.

    ``position``, ``last_seq`` and ``events`` are read and advanced by the
    socket loop's hot path directly (:meth:`accept` inlined there).
    """

    __slots__ = (
        "_attempt",
        "_backoff",
        "_down_since",
        "_ever_up",
        "_limit",
        "_spent",
        "events",
        "gaps",
        "last_seq",
        "position",
        "reconnects",
        "up_since",
    )

    def __init__(self, *, max_retry_time: float | None, backoff: BackoffPolicy) -> None:
        self._limit = max_retry_time
        self._backoff = backoff
        #: Where the feed stands: resume from here; events at or below it are seen.
        self.position: int | None = None
        #: The newest delivered event's number.
        self.last_seq: int | None = None
        #: Events delivered (duplicates dropped are not counted).
        self.events = 0
        #: ``FeedGap(reason="server")`` published.
        self.gaps = 0
        #: Connections made again after the first one.
        self.reconnects = 0
        #: When the current connection got its ``ready``; ``None`` while down.
        self.up_since: float | None = None
        self._ever_up = False
        self._attempt = 0
        # The outage (flaps merged) spends the retry budget while down: the down
        # periods before the current one, and when the current one began (a
        # FeedDown was published for it, no FeedUp yet).
        self._spent = 0.0
        self._down_since: float | None = None

    def since(self) -> int | None:
        """The ``since`` of the next start frame."""
        return self.position

    def accept(self, seq: int) -> bool:
        """Whether event ``seq`` is delivered (True) or dropped as already seen."""
        position = self.position
        if position is not None and seq <= position:
            return False
        self.position = self.last_seq = seq
        self.events += 1
        return True

    def on_ready(self, seq: int, resumed: bool, now: float) -> Started:
        """A ``ready`` frame arrived: the connection is up."""
        gap: FeedGap | None = None
        position = self.position
        if position is None:
            # A fresh start: only what comes after the PBX's newest event; later
            # reconnects resume from here even before any event arrived.
            self.position = seq
        elif not resumed or seq < position:
            self.gaps += 1
            gap = FeedGap("server", after_seq=position, resumed_at=seq)
            if seq < position:
                self.position = seq  # the numbering restarted: go on with the PBX's
        if self._ever_up:
            self.reconnects += 1
        self._ever_up = True
        self.up_since = now
        up: FeedUp | None = None
        down_since = self._down_since
        if down_since is not None:
            self._down_since = None
            self._spent += now - down_since
            up = FeedUp(resumed=gap is None, downtime=now - down_since)
        return Started(gap, up)

    def on_failure(self, failure: Failure, now: float) -> Decision:
        """A connection or an attempt ended with ``failure``: what next."""
        reaction = wire.FeedReaction.FATAL if failure.tls else wire.feed_reaction(failure.errno)
        ending = _ENDINGS.get(reaction)
        if ending is not None:
            self.up_since = None
            return Stop(ending(failure))
        down_since, down = self._note_down(failure, now)
        elapsed = self._spent + (now - down_since)
        limit = self._limit
        if limit is not None and elapsed >= limit:
            return Stop(FeedStopped(f"gave up reconnecting after {elapsed:.1f}s", failure.errno))
        delay = self._backoff.delay(self._attempt)
        self._attempt += 1
        if limit is not None:
            delay = min(delay, limit - elapsed)
        return Retry(delay, down)

    def _note_down(self, failure: Failure, now: float) -> tuple[float, FeedDown | None]:
        """When this down period began, and its FeedDown if it begins now."""
        up_since = self.up_since
        if up_since is not None:
            self.up_since = None
            if now - up_since >= self._backoff.reset_after:
                # It stayed up long enough: the outage is over, the next one is new.
                self._spent = 0.0
                self._attempt = 0
        if self._down_since is not None:
            return self._down_since, None  # one more failed attempt of this down period
        self._down_since = now
        return now, FeedDown(failure.errno, failure.message)
