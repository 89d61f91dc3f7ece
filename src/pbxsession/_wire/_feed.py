"""The live feed on the wire: its URL, frames, error numbers and handshake statuses."""

from __future__ import annotations

import enum
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import (
    ProtocolError,
)
from .._models import FeedEvent
from ._basics import FEED_PATH


def feed_url(ws_host: str, subid: str | None) -> str:
    """The feed's WebSocket URL on ``ws_host``, with the active sub-ID."""
    url = ws_host.rstrip("/") + FEED_PATH
    if subid is not None:
        url += "?" + urllib.parse.urlencode({"subid": subid})
    return url


def start_frame(
    since: int | None, *, device: bool, presence: bool, mailbox: bool, queue: bool
) -> str:
    """The client's one start frame, sent right after the handshake."""
    return json.dumps(
        {
            "type": "start",
            "since": since,
            "device": device,
            "presence": presence,
            "mailbox": mailbox,
            "queue": queue,
        }
    )


@dataclass(frozen=True, slots=True)
class ReadyFrame:
    """``ready``: the server's newest ``seq``; ``resumed`` false means a gap."""

    seq: int
    resumed: bool


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """``error``: the feed ends after it; ``errno`` is a 6.5 feed error number."""

    errno: int
    message: str


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"feed frame field {what} is not an integer")
    return value


#: Parses a frame that is one JSON value with nothing around it, the usual case.
_raw_decode = json.JSONDecoder().raw_decode


def parse_feed_frame(text: str) -> ReadyFrame | FeedEvent | ErrorFrame:
    """Parse one server text frame; anything off-protocol is :class:`ProtocolError`.

    The feed speaks JSON in text frames only: a binary frame (``bytes``) is
    off-protocol too (the client treats it as errno 92).
    """
    frame = _json_object(text)
    if frame.get("type") == "event":
        seq, event_kind, data = frame.get("seq"), frame.get("kind"), frame.get("data")
        if type(seq) is int and type(event_kind) is str and type(data) is dict:
            # JSON gives exactly these types; ``data`` is fresh, held by no one else.
            return FeedEvent._from_parsed(seq, event_kind, data)
        if not isinstance(data, dict) or not isinstance(event_kind, str):
            raise ProtocolError("event frame needs a kind and a data object")
        return FeedEvent(_int(seq, "seq"), event_kind, data)
    return _control_frame(frame)


def _json_object(text: str) -> dict[str, Any]:
    """One JSON object, with nothing around it; else :class:`ProtocolError`."""
    # Fast path for the feed's hot loop: ``raw_decode`` skips ``json.loads``'
    # whitespace scans. Anything it does not take whole (surrounding
    # whitespace, bad JSON) goes through ``json.loads``, which decides.
    if type(text) is not str:
        raise ProtocolError("binary feed frame: the feed sends JSON text frames only")
    try:
        frame, end = _raw_decode(text)
    except (ValueError, RecursionError):
        end = -1
    if end != len(text):
        try:
            frame = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError("feed frame is not JSON") from exc
    if not isinstance(frame, dict):
        raise ProtocolError("feed frame is not a JSON object")
    return frame


def _control_frame(frame: dict[str, Any]) -> ReadyFrame | ErrorFrame:
    kind = frame.get("type")
    if kind == "ready":
        resumed = frame.get("resumed")
        if not isinstance(resumed, bool):
            raise ProtocolError("ready frame needs a boolean resumed")
        return ReadyFrame(_int(frame.get("seq"), "seq"), resumed)
    if kind == "error":
        return ErrorFrame(_int(frame.get("errno"), "errno"), str(frame.get("message", "")))
    raise ProtocolError(f"unknown feed frame type {kind!r}")


class FeedReaction(enum.Enum):
    """What the client does about a feed error number (PROTOCOL.md's table).

    Every retry resumes from the last delivered sequence number, for errno
    3, 90 and 91 too: resuming is harmless and keeps delivery exactly-once.
    """

    RETRY = "retry"
    SESSION_LOST = "session_lost"
    FATAL = "fatal"


_REACTIONS: Mapping[int, FeedReaction] = {
    1: FeedReaction.RETRY,
    2: FeedReaction.SESSION_LOST,
    3: FeedReaction.RETRY,
    90: FeedReaction.RETRY,
    91: FeedReaction.RETRY,
    92: FeedReaction.RETRY,
    100: FeedReaction.FATAL,
}

#: errno the client assigns to a handshake that failed (not a 403).
ERRNO_OPEN_FAILED = 91
#: errno the client assigns to a feed cut off, closed without error, silent,
#: or sending a frame off-protocol (binary, malformed).
ERRNO_CONNECTION_FAILED = 92
#: errno of a feed the PBX logged out (an error frame, or a 403 handshake).
ERRNO_LOGGED_OUT = 2

#: Handshake statuses with their own errno; every other refusal (404: no feed
#: at that URL, a wrong port or path; 5xx) is an open failure, retried.
_HANDSHAKE_ERRNOS: Mapping[int, int] = {403: ERRNO_LOGGED_OUT}


def feed_reaction(errno: int) -> FeedReaction:
    """The reaction to ``errno``; unknown numbers are treated like 90 (retry)."""
    return _REACTIONS.get(errno, FeedReaction.RETRY)


def handshake_errno(status: int) -> int:
    """The feed errno of a handshake refused with HTTP ``status`` (403: 2, else 91)."""
    return _HANDSHAKE_ERRNOS.get(status, ERRNO_OPEN_FAILED)


def call_record(event: FeedEvent) -> Mapping[str, Any] | None:
    """The call record an ended-call event carries, else ``None``."""
    if event.kind == "call" and event.data.get("state") == "ended":
        return dict(event.data)
    return None
