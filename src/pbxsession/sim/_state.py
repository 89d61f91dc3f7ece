"""The simulated PBX's whole state machine: pure, no I/O, no trio.

Users, login contexts keyed by ``(cookie, subid)`` (``subid`` is ``""`` when
none is sent), known cookies, lockout counters, the per-user presence, saved
call history and WebRTC password, the per-context selected company and event
ring buffer, and the command fault settings. Time comes from an injected
clock. Layers that do I/O call the plain methods here and learn about changes
through :class:`StateListener` callbacks, which are called synchronously.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ._faults import CommandFaults
from ._ring import EventRing, FeedEvent
from ._users import DEFAULT_USERS, SimUser, by_login
from ._wire import (
    COMMANDS,
    EVENT_KINDS,
    MAX_HISTORY,
    MESSAGES,
    SHOWS,
    BadForm,
    Element,
    Reply,
    check_command,
    decode_history,
    encode_history,
    form_flag,
    valid_subid,
)

__all__ = [
    "COMMANDS",
    "EVENT_KINDS",
    "MAX_HISTORY",
    "ContextKey",
    "SimState",
    "StateListener",
    "valid_subid",
]

ContextKey = tuple[str, str]
"""A login context's key: ``(cookie, subid)``, ``subid`` empty when none."""


class StateListener(Protocol):
    """What the state tells the I/O layers, synchronously, as it changes."""

    def context_event(self, key: ContextKey) -> None:
        """A context got a new event."""

    def context_ended(self, key: ContextKey, reason: str) -> None:
        """A context stopped being logged in (logout, expiry, replaced)."""

    def contexts_forgotten(self) -> None:
        """Every context and cookie was forgotten (restart)."""


@dataclass
class _UserState:
    show: str = "offline"
    status: str = ""
    history: list[dict[str, object]] = field(default_factory=list)
    rtc_pass: str = ""


@dataclass
class _Context:
    key: ContextKey
    ring: EventRing
    last_used: float
    login: str | None = None
    company: str = ""


@dataclass
class _Lock:
    failures: int = 0
    until: float | None = None


def _fail(cmd: str, code: str, message: str | None = None) -> Reply:
    return Reply(cmd=cmd, code=code, message=message or MESSAGES.get(code, code))


class SimState:
    """The simulated PBX: every rule of PROTOCOL.md that is not I/O."""

    def __init__(
        self,
        users: Sequence[SimUser] = DEFAULT_USERS,
        *,
        clock: Callable[[], float],
        lock_threshold: int = 5,
        lock_period: float = 60.0,
        idle_timeout: float = 1800.0,
        ring_size: int = 1000,
        token: Callable[[], str] | None = None,
    ) -> None:
        if ring_size < 1:
            raise ValueError("ring_size must be at least 1")
        self._users = by_login(users)
        self._clock = clock
        self._token = token or (lambda: secrets.token_urlsafe(16))
        self.lock_threshold = lock_threshold
        self.lock_period = lock_period
        self.idle_timeout = idle_timeout
        self.ring_size = ring_size
        self.faults = CommandFaults()
        """Per-command delays and pending failures (applied by the HTTP layer)."""
        self.command_counts: Counter[str] = Counter()
        """Commands received, by ``cmd`` (``""`` when none was sent)."""
        self.password_logins: Counter[tuple[str, str, str]] = Counter()
        """Password logins carried out (any outcome), by ``(cookie, subid, user)``."""
        self._user_states = {login: _UserState(rtc_pass=self._token()) for login in self._users}
        self._locks: dict[str, _Lock] = {}
        self._cookies: set[str] = set()
        self._contexts: dict[ContextKey, _Context] = {}
        self._listeners: list[StateListener] = []

    # -- listeners -----------------------------------------------------------

    def add_listener(self, listener: StateListener) -> None:
        """Have ``listener`` told about events and ended contexts."""
        self._listeners.append(listener)

    def remove_listener(self, listener: StateListener) -> None:
        """Stop telling ``listener``."""
        self._listeners.remove(listener)

    # -- cookies -------------------------------------------------------------

    def is_known_cookie(self, cookie: str | None) -> bool:
        """Tell whether the server gave out ``cookie`` (and has not forgotten it)."""
        return cookie is not None and cookie in self._cookies

    def issue_cookie(self) -> str:
        """Make up a new session cookie value and remember it."""
        cookie = self._token()
        self._cookies.add(cookie)
        return cookie

    # -- commands ------------------------------------------------------------

    def count_command(self, cmd: str) -> None:
        """Count one received command (before faults are applied)."""
        self.command_counts[cmd] += 1

    def handle_command(self, cookie: str, form: Mapping[str, str]) -> Reply:
        """Carry out one command for the browser ``cookie``; return its reply."""
        cmd = form.get("cmd", "")
        try:
            subid = check_command(form)
            self._cookies.add(cookie)
            key = (cookie, subid)
            ctx = self._contexts.get(key)
            if ctx is not None:
                self._expire_if_idle(ctx)
                ctx.last_used = self._clock()
            if cmd == "login":
                return self._login(key, ctx, form)
            if ctx is None or ctx.login is None:
                return _fail(cmd, "notloggedin")
            return self._dispatch(cmd, ctx, self._users[ctx.login], form)
        except BadForm as exc:
            return _fail(cmd, "badrequest", str(exc))

    def _dispatch(self, cmd: str, ctx: _Context, user: SimUser, form: Mapping[str, str]) -> Reply:
        if cmd == "logout":
            self._end(ctx, "logged out")
            return Reply(cmd)
        if cmd == "selcompany":
            return self._selcompany(ctx, user, form)
        if cmd == "rtcreset":
            return self._rtcreset(user, form)
        if cmd == "status":
            return self._status(user, form)
        if cmd == "save":
            return self._save(user, form)
        return self._load(user, form)

    def _login_reply(self, ctx: _Context, user: SimUser) -> Reply:
        children = [self._user_element(ctx, user)]
        children += [
            Element("action", (("name", a.name), ("company", "true")))
            if a.company
            else Element("action", (("name", a.name),))
            for a in user.actions
        ]
        children += [Element("company", (("id", c.id), ("name", c.name))) for c in user.companies]
        return Reply("login", children=tuple(children))

    @staticmethod
    def _user_element(ctx: _Context, user: SimUser) -> Element:
        return Element(
            "user",
            (
                ("id", user.id),
                ("login", user.login),
                ("name", user.name),
                ("company", ctx.company),
                ("home", user.home),
            ),
        )

    def _login(self, key: ContextKey, ctx: _Context | None, form: Mapping[str, str]) -> Reply:
        checkonly = form_flag(form, "checkonly")
        name = form.get("sessionUser")
        password = form.get("sessionPass")
        if checkonly or (not name and not password):  # the latter: the historical "login check"
            return self._login_check(ctx, name)
        if not name or password is None:
            raise BadForm("sessionUser and sessionPass are required")
        self.password_logins[(*key, name)] += 1
        user = self._users.get(name)
        if user is None:
            return _fail("login", "badauth")
        refusal = self._check_password(user, password)
        if refusal is not None:
            return refusal
        return self._login_reply(self._bind(key, ctx, user), user)

    def _login_check(self, ctx: _Context | None, name: str | None) -> Reply:
        """``checkonly``: succeed only if the context is logged in (as ``name``, if given)."""
        if ctx is None or ctx.login is None or (name and name != ctx.login):
            return _fail("login", "notloggedin")
        return self._login_reply(ctx, self._users[ctx.login])

    def _bind(self, key: ContextKey, ctx: _Context | None, user: SimUser) -> _Context:
        """The context ``key``, now logged in as ``user`` (replacing any other user)."""
        if ctx is None:
            ctx = _Context(key=key, ring=EventRing(self.ring_size), last_used=self._clock())
            self._contexts[key] = ctx
        if ctx.login != user.login:
            if ctx.login is not None:
                self._end(ctx, "replaced by another login")
            ctx.login = user.login
            ctx.company = user.home
        return ctx

    def _check_password(self, user: SimUser, password: str) -> Reply | None:
        """Apply the lockout rules; the failure reply, or None when the password is right."""
        now = self._clock()
        lock = self._locks.setdefault(user.login, _Lock())
        if lock.until is not None:
            if now < lock.until:
                return _fail("login", "locked")
            lock.failures, lock.until = 0, None
        if not secrets.compare_digest(password.encode(), user.password.encode()):
            lock.failures += 1
            if lock.failures >= self.lock_threshold:
                lock.until = now + self.lock_period
            return _fail("login", "badauth")
        lock.failures = 0
        return None

    def _selcompany(self, ctx: _Context, user: SimUser, form: Mapping[str, str]) -> Reply:
        company = form.get("company")
        if not company:
            raise BadForm("company is required")
        if len(user.companies) < 2:
            return _fail("selcompany", "norole")
        if company not in {c.id for c in user.companies}:
            return _fail("selcompany", "badcompany")
        ctx.company = company
        return Reply("selcompany", children=(self._user_element(ctx, user),))

    def _rtcreset(self, user: SimUser, form: Mapping[str, str]) -> Reply:
        getnew = form_flag(form, "getnew")
        state = self._user_states[user.login]
        held = form.get("pass")
        if held is not None and not secrets.compare_digest(held.encode(), state.rtc_pass.encode()):
            return _fail("rtcreset", "stale")
        state.rtc_pass = self._token()
        if getnew:
            return Reply("rtcreset", children=(Element("rtc", (("pass", state.rtc_pass),)),))
        return Reply("rtcreset")

    def _status(self, user: SimUser, form: Mapping[str, str]) -> Reply:
        show = form.get("show")
        if show not in SHOWS:
            raise BadForm("show must be one of online, away, xa, dnd, offline")
        if not user.may("chat"):
            return _fail("status", "norole")
        state = self._user_states[user.login]
        state.show = show
        state.status = form.get("status", "")
        return Reply("status")

    def _save(self, user: SimUser, form: Mapping[str, str]) -> Reply:
        if form.get("type") != "history":
            raise BadForm("type must be history")
        data = form.get("data")
        if data is None:
            raise BadForm("data is required")
        self._user_states[user.login].history = decode_history(data)
        return Reply("save")

    def _load(self, user: SimUser, form: Mapping[str, str]) -> Reply:
        if form.get("type") != "history":
            raise BadForm("type must be history")
        encoded = encode_history(self._user_states[user.login].history)
        return Reply("load", children=(Element("data", (("name", "history"),), encoded),))

    # -- expiry and ending ---------------------------------------------------

    def _end(self, ctx: _Context, reason: str) -> None:
        ctx.login = None
        ctx.company = ""
        ctx.ring.clear()
        for listener in list(self._listeners):
            listener.context_ended(ctx.key, reason)

    def _expire_if_idle(self, ctx: _Context) -> bool:
        if ctx.login is not None and self._clock() - ctx.last_used >= self.idle_timeout:
            self._end(ctx, "session expired")
            return True
        return False

    def expire_idle(self) -> int:
        """Log out every context idle for ``idle_timeout``; return how many."""
        return sum(self._expire_if_idle(ctx) for ctx in list(self._contexts.values()))

    def next_expiry(self) -> float | None:
        """The clock time at which the next logged-in context goes idle, if any."""
        times = [c.last_used for c in self._contexts.values() if c.login is not None]
        return min(times) + self.idle_timeout if times else None

    def expire(
        self, login: str | None = None, *, cookie: str | None = None, subid: str = ""
    ) -> int:
        """Log out contexts now: all, one user's, or the one ``(cookie, subid)``.

        Returns how many contexts stopped being logged in.
        """
        count = 0
        for ctx in list(self._contexts.values()):
            if ctx.login is None:
                continue
            if cookie is not None and ctx.key != (cookie, subid):
                continue
            if login is not None and ctx.login != login:
                continue
            self._end(ctx, "session expired")
            count += 1
        return count

    def restart(self) -> None:
        """Forget every context and cookie (numbering restarts); drop all feeds."""
        self._contexts.clear()
        self._cookies.clear()
        self._locks.clear()
        for listener in list(self._listeners):
            listener.contexts_forgotten()

    # -- feed ----------------------------------------------------------------

    def feed_context(self, cookie: str | None, subid: str) -> ContextKey | None:
        """The logged-in context a feed handshake names, or None if there is none."""
        if cookie is None or (subid and not valid_subid(subid)):
            return None
        ctx = self._contexts.get((cookie, subid))
        if ctx is None or ctx.login is None or self._expire_if_idle(ctx):
            return None
        return ctx.key

    def is_logged_in(self, key: ContextKey) -> bool:
        """Tell whether the context ``key`` is logged in."""
        ctx = self._contexts.get(key)
        return ctx is not None and ctx.login is not None

    def newest_seq(self, key: ContextKey) -> int:
        """The newest sequence number of context ``key`` (0 if unknown)."""
        ctx = self._contexts.get(key)
        return 0 if ctx is None else ctx.ring.newest

    def events_after(self, key: ContextKey, since: int) -> tuple[list[FeedEvent], bool]:
        """The kept events of ``key`` numbered above ``since``, and whether that is all."""
        ctx = self._contexts.get(key)
        if ctx is None:
            return [], False
        return ctx.ring.after(since), ctx.ring.complete_after(since)

    def logged_in_keys(self, login: str | None = None) -> list[ContextKey]:
        """Keys of the logged-in contexts (of one user when ``login`` is given)."""
        return [
            c.key
            for c in self._contexts.values()
            if c.login is not None and (login is None or c.login == login)
        ]

    def emit(self, kind: str, data: Mapping[str, object], login: str | None = None) -> int:
        """Give one event to every logged-in context (of one user); return how many."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        self.expire_idle()
        keys = self.logged_in_keys(login)
        for key in keys:
            self._contexts[key].ring.append(kind, data)
            for listener in self._listeners:
                listener.context_event(key)
        return len(keys)

    def emit_many(
        self, events: Iterable[tuple[str, Mapping[str, object]]], login: str | None = None
    ) -> int:
        """Give several events to every logged-in context, waking listeners once each."""
        self.expire_idle()
        keys = self.logged_in_keys(login)
        batch = list(events)
        for kind, _ in batch:
            if kind not in EVENT_KINDS:
                raise ValueError(f"unknown event kind {kind!r}")
        for key in keys:
            ring = self._contexts[key].ring
            for kind, data in batch:
                ring.append(kind, data)
            for listener in self._listeners:
                listener.context_event(key)
        return len(batch) * len(keys)

    # -- views ---------------------------------------------------------------

    def user_logins(self) -> list[str]:
        """Every user's login name."""
        return list(self._users)

    def users(self) -> list[SimUser]:
        """Every user the PBX knows."""
        return list(self._users.values())

    def user_view(self, login: str) -> dict[str, object]:
        """What the PBX holds for user ``login``; raises KeyError if unknown."""
        state = self._user_states[login]
        lock = self._locks.get(login, _Lock())
        return {
            "login": login,
            "presence": {"show": state.show, "status": state.status},
            "history": [dict(r) for r in state.history],
            "rtc_pass": state.rtc_pass,
            "failed_logins": lock.failures,
            "locked": lock.until is not None and self._clock() < lock.until,
        }

    def logins_alive(self) -> int:
        """How many contexts are logged in now (idle ones past their time excluded)."""
        now = self._clock()
        return sum(
            1
            for c in self._contexts.values()
            if c.login is not None and now - c.last_used < self.idle_timeout
        )

    def contexts(self) -> list[dict[str, object]]:
        """Every known context: cookie, subid, login (or None), company, newest seq."""
        return [
            {
                "cookie": c.key[0],
                "subid": c.key[1],
                "login": c.login,
                "company": c.company or None,
                "seq": c.ring.newest,
            }
            for c in self._contexts.values()
        ]
