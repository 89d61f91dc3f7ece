"""Made-up PBX activity for the event generator: device, presence and call events."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["EventGenerator", "burst_data"]

_DEVICE_STATES = ("idle", "ringing", "inuse", "unavailable")
_SHOWS = ("online", "away", "xa", "dnd", "offline")


@dataclass
class _Call:
    id: str
    caller: str
    callee: str
    start: float
    state: str = "ringing"


class EventGenerator:
    """Produces a plausible mix of events; calls go ringing → connected → ended.

    Pure: the caller passes the wall-clock time, and randomness comes from a
    seedable :class:`random.Random`.
    """

    def __init__(self, extensions: Sequence[str], logins: Sequence[str], seed: int | None = None):
        self._rng = random.Random(seed)
        self._extensions = list(extensions) or ["100"]
        self._logins = list(logins) or ["nobody"]
        self._calls: list[_Call] = []
        self._next_call = 1

    def next_event(self, now: float) -> tuple[str, dict[str, object]]:
        """Make up the next event as ``(kind, data)``; ``now`` is epoch seconds."""
        roll = self._rng.random()
        if self._calls and roll < 0.4:
            return "call", self._advance(self._rng.choice(self._calls), now)
        if roll < 0.6:
            return "call", self._new_call(now)
        if roll < 0.85:
            ext = self._rng.choice(self._extensions)
            return "device", {"device": f"SIP/{ext}", "state": self._rng.choice(_DEVICE_STATES)}
        login = self._rng.choice(self._logins)
        return "presence", {"login": login, "show": self._rng.choice(_SHOWS), "status": ""}

    def _new_call(self, now: float) -> dict[str, object]:
        caller, callee = self._rng.choice(self._extensions), self._rng.choice(self._extensions)
        call = _Call(f"call-{self._next_call}", caller, callee, round(now, 3))
        self._next_call += 1
        self._calls.append(call)
        return {
            "id": call.id,
            "state": call.state,
            "from": caller,
            "to": callee,
            "start": call.start,
        }

    def _advance(self, call: _Call, now: float) -> dict[str, object]:
        if call.state == "ringing":
            call.state = "connected"
            return {
                "id": call.id,
                "state": call.state,
                "from": call.caller,
                "to": call.callee,
                "start": call.start,
            }
        self._calls.remove(call)
        return {
            "id": call.id,
            "state": "ended",
            "from": call.caller,
            "to": call.callee,
            "start": call.start,
            "duration": max(0, round(now - call.start)),
        }


def burst_data(kind: str, index: int) -> dict[str, object]:
    """The data of the ``index``-th event of a benchmark burst of ``kind``."""
    if kind == "device":
        return {"device": f"SIP/{100 + index % 100}", "state": _DEVICE_STATES[index % 4]}
    if kind == "presence":
        return {"login": f"user{index % 100}", "show": _SHOWS[index % 5], "status": ""}
    if kind == "call":
        return {"id": f"burst-{index}", "state": "ringing", "from": "100", "to": "101", "start": 0}
    return {"n": index}
