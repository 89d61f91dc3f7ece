"""The :class:`Simulator` handle: addresses, fault controls and views."""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping

import trio

from ._eventgen import EventGenerator, burst_data
from ._feed import FeedServer
from ._state import EVENT_KINDS, SimState

__all__ = ["Simulator"]

_TICK = 0.01
"""Seconds between generator ticks at high event rates."""


def _check_kind(kind: str) -> None:
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r}; one of {sorted(EVENT_KINDS)}")


class Simulator:
    """A running simulated PBX, as yielded by :func:`open_simulator`.

    ``url`` is the command host (``http://127.0.0.1:PORT``), which serves the
    feed too, so ``open_session(sim.url)`` needs no ``ws_host``; ``ws_url``
    is the feed's separate host (``ws://127.0.0.1:FEEDPORT``), for tests of
    a ``ws_host`` of its own. Under TLS they are ``https``/``wss``,
    ``ca_path`` is the CA's PEM file, ``ssl_context`` a client context that
    trusts it (and presents the client certificate, if one is required), and
    ``client_cert_path`` the client certificate and key (PEM) when the
    simulator requires one; otherwise all three are None. ``state`` is the
    pure state machine. The methods are the fault-injection controls and
    test views; each has an HTTP mirror under ``/_sim/`` (see the package
    docstring).
    """

    def __init__(self, state: SimState, feed: FeedServer, *, event_rate: float = 0.0) -> None:
        self.state = state
        self.feed = feed
        self.url = ""
        self.ws_url = ""
        self.ca_path: str | None = None
        self.ssl_context: ssl.SSLContext | None = None
        self.client_cert_path: str | None = None
        self._event_rate = 0.0
        self._rate_changed = trio.Event()
        self.set_event_rate(event_rate)

    # -- command faults ------------------------------------------------------

    def set_delay(self, seconds: float, cmd: str | None = None) -> None:
        """Delay every command (``cmd=None``) or one command by ``seconds`` (0 = off)."""
        self.state.faults.set_delay(seconds, cmd)

    def fail_next(self, n: int, cmd: str | None = None) -> None:
        """Answer the next ``n`` commands (any, or only ``cmd``) with HTTP 500."""
        self.state.faults.fail_next(n, cmd)

    # -- sessions ------------------------------------------------------------

    def expire(
        self, login: str | None = None, *, cookie: str | None = None, subid: str = ""
    ) -> int:
        """Expire logged-in contexts: all, one user's, or ``(cookie, subid)``.

        Their feeds get errno 2. Returns how many contexts were expired.
        """
        return self.state.expire(login, cookie=cookie, subid=subid)

    def check_expiry(self) -> int:
        """Expire the contexts idle for ``idle_timeout`` now; return how many."""
        return self.state.expire_idle()

    def restart(self) -> None:
        """Forget every context and cookie and cut off every feed (no error frame)."""
        self.state.restart()
        self.feed.drop_all()

    # -- events --------------------------------------------------------------

    def emit(self, kind: str, data: Mapping[str, object], login: str | None = None) -> None:
        """Give one event to every logged-in context, or to those of ``login``."""
        _check_kind(kind)
        self.state.emit(kind, dict(data), login)

    async def emit_burst(self, n: int, kind: str = "device", login: str | None = None) -> None:
        """Emit ``n`` events as fast as the feeds can take them (for benchmarks).

        Events go out in chunks of half the ring size; before each chunk this
        waits until no feed is more than half a ring behind, so a reading
        client never falls off the ring buffer.
        """
        _check_kind(kind)
        chunk = max(1, self.state.ring_size // 2)
        done = 0
        while done < n:
            await self.feed.wait_backlog(chunk)
            count = min(chunk, n - done)
            self.state.emit_many(((kind, burst_data(kind, done + i)) for i in range(count)), login)
            done += count
            await trio.lowlevel.checkpoint()

    @property
    def event_rate(self) -> float:
        """Events per second the generator gives every logged-in context (0 = off)."""
        return self._event_rate

    def set_event_rate(self, rate: float) -> None:
        """Change the generator's rate (events/s to each logged-in context; 0 = off)."""
        if rate < 0:
            raise ValueError("an event rate cannot be negative")
        self._event_rate = float(rate)
        self._rate_changed.set()
        self._rate_changed = trio.Event()

    async def run_event_generator(self, seed: int | None = None) -> None:
        """Generate events at :attr:`event_rate` until cancelled."""
        users = self.state.users()
        gen = EventGenerator([u.id for u in users], [u.login for u in users], seed=seed)
        owed = 0.0
        while True:
            rate = self._event_rate
            if rate <= 0:
                await self._rate_changed.wait()
                owed = 0.0
                continue
            interval = max(1.0 / rate, _TICK)
            with trio.move_on_after(interval):
                await self._rate_changed.wait()
                continue
            owed += interval * rate
            count, owed = int(owed), owed - int(owed)
            now = time.time()
            if count:
                self.state.emit_many([gen.next_event(now) for _ in range(count)])

    # -- feed faults ---------------------------------------------------------

    def drop_feeds(self) -> int:
        """Cut off every feed connection abruptly (no error frame); return how many."""
        return self.feed.drop_all()

    def feed_error(self, errno: int, message: str = "") -> int:
        """Send every feed connection an ``error`` frame, then close it; return how many."""
        return self.feed.error_all(errno, message)

    def refuse_handshakes(self, n: int) -> None:
        """Refuse the next ``n`` feed handshakes with HTTP 503 (0 = stop refusing)."""
        if n < 0:
            raise ValueError("a count cannot be negative")
        self.feed.refuse_remaining = n

    def freeze_feeds(self) -> None:
        """Stop every feed from sending anything, pongs included, until unfrozen."""
        self.feed.switch.freeze()

    def unfreeze_feeds(self) -> None:
        """Let the feeds send again; what was held back goes out."""
        self.feed.switch.unfreeze()

    # -- views ---------------------------------------------------------------

    def user_view(self, login: str) -> dict[str, object]:
        """Presence, saved history and WebRTC password of ``login`` (KeyError if unknown)."""
        return self.state.user_view(login)

    def contexts(self) -> list[dict[str, object]]:
        """Every context: cookie, subid, login (None if not logged in), company, seq, feeds."""
        views = self.state.contexts()
        for view in views:
            key = (str(view["cookie"]), str(view["subid"]))
            view["feeds"] = self.feed.connection_count(key)
        return views

    def command_count(self, cmd: str | None = None) -> int:
        """How many commands were received (all, or of one ``cmd``)."""
        counts = self.state.command_counts
        return sum(counts.values()) if cmd is None else counts[cmd]

    def password_logins(self) -> list[dict[str, object]]:
        """Password logins carried out, per context and user: cookie, subid, login, count.

        Every password login the rules saw counts, whatever its outcome; a
        command answered by an injected HTTP 500 was not carried out.
        """
        return [
            {"cookie": cookie, "subid": subid, "login": login, "count": count}
            for (cookie, subid, login), count in self.state.password_logins.items()
        ]

    def stats(self) -> dict[str, object]:
        """Counters: commands, password logins, live logins, feed handshakes and faults.

        ``password_logins`` is :meth:`password_logins`; ``logins_alive`` how
        many contexts are logged in now (the details: :meth:`contexts`).
        """
        return {
            "commands": dict(self.state.command_counts),
            "password_logins": self.password_logins(),
            "logins_alive": self.state.logins_alive(),
            "feed_handshakes": self.feed.handshakes,
            "feed_connections": self.feed.connection_count(),
            "event_rate": self._event_rate,
            "faults": self.state.faults.snapshot(),
            "refusing_handshakes": self.feed.refuse_remaining,
            "frozen": self.feed.switch.frozen,
        }
