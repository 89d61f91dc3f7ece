"""Every lifecycle rule of a PBX session, as data, with no I/O (sans-IO).

Two pieces of data say everything:

* :class:`SessionMachine`: the states and the events that move between them,
  declared once with python-statemachine. At import the declaration is
  compiled into a plain transition table (:data:`TRANSITIONS`), the way h11
  keeps its tables as dicts: a session's machine is then one small object.
* :data:`RULES`: for each thing that can happen to a session (the public
  operations, and the PBX ending the login), the states that allow it, the
  states that allow it under a :class:`Condition`, and the events it sends
  when it starts, succeeds, finds the login gone, and ends.

:class:`Lifecycle` is the only object that holds a session's state and
whether an operation is in progress. The session asks it for an operation's
:class:`Rule` before any I/O (:meth:`Lifecycle.begin`, :meth:`Lifecycle.check`)
and reports the outcome afterwards (:meth:`Lifecycle.succeeded`,
:meth:`Lifecycle.lost`, :meth:`Lifecycle.end`); the lifecycle sends the
rule's events, so no call site names an event. A transition is made whole
first and listeners are told afterwards; a listener that raises is logged
and changes nothing. The diagrams and the README's rules table are generated
from this module (:func:`rules_table`, :func:`transitions`).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from statemachine import State as _MachineState
from statemachine import StateMachine

from ._errors import InvalidStateError, SessionBusyError

__all__ = [
    "RULES",
    "TRANSITIONS",
    "Condition",
    "Event",
    "Lifecycle",
    "Operation",
    "Rule",
    "SessionMachine",
    "State",
    "TransitionListener",
    "rules_table",
    "transitions",
]

log = logging.getLogger("pbxsession")


class State(enum.Enum):
    """The states of a session; each value is the state's name."""

    UNCONFIGURED = "unconfigured"
    HOST_SET = "host_set"
    LOGGED_IN = "logged_in"
    COMPANY_SELECTED = "company_selected"
    EXITING = "exiting"
    CLOSED = "closed"

    @property
    def is_logged_in(self) -> bool:
        """Whether the session holds a login in this state."""
        return self in (State.LOGGED_IN, State.COMPANY_SELECTED)


class Event(enum.Enum):
    """What can happen to a session; each value is the machine event's name."""

    HOST_CONFIGURED = "host_configured"
    LOGIN_SUCCEEDED = "login_succeeded"
    COMPANY_CHOSEN = "company_chosen"
    LOGGED_OUT = "logged_out"
    SESSION_LOST = "session_lost"
    EXIT_STARTED = "exit_started"
    EXIT_FINISHED = "exit_finished"


class SessionMachine(StateMachine):
    """The session's states and the events between them: the one declaration.

    ``session_lost`` is the PBX saying ``notloggedin`` (or the feed's errno 2)
    while the session believes it is logged in.
    """

    unconfigured = _MachineState(initial=True)
    host_set = _MachineState()
    logged_in = _MachineState()
    company_selected = _MachineState()
    exiting = _MachineState()
    closed = _MachineState(final=True)

    host_configured = unconfigured.to(host_set) | host_set.to(host_set)
    login_succeeded = host_set.to(logged_in)
    company_chosen = logged_in.to(company_selected) | company_selected.to(company_selected)
    logged_out = logged_in.to(host_set) | company_selected.to(host_set)
    session_lost = logged_in.to(host_set) | company_selected.to(host_set)
    exit_started = (
        unconfigured.to(exiting)
        | host_set.to(exiting)
        | logged_in.to(exiting)
        | company_selected.to(exiting)
    )
    exit_finished = exiting.to(closed)


def transitions() -> Iterator[tuple[State, Event, State]]:
    """Every (source, event, target) transition declared by :class:`SessionMachine`."""
    for machine_state in SessionMachine.states:
        for transition in machine_state.transitions:
            for event in transition.events:
                yield State(transition.source.id), Event(str(event)), State(transition.target.id)


#: The declared machine compiled once: (state, event) -> next state.
TRANSITIONS: Mapping[tuple[State, Event], State] = MappingProxyType(
    {(source, event): target for source, event, target in transitions()}
)


class Operation(enum.Enum):
    """What can happen to a session: the public operations, named as in the API.

    ``SESSION_LOST`` is no call: it is the PBX ending the login (a
    ``notloggedin`` answer, the feed's errno 2 or a refused feed handshake).
    """

    SET_HOST = "set_host"
    SET_WS_HOST = "set_ws_host"
    GET_SUB_ID = "get_sub_id"
    LOGIN = "login"
    SELECT_COMPANY = "select_company"
    RTC_RESET = "rtc_reset"
    LOGOUT = "logout"
    EXIT = "exit"
    SESSION_LOST = "session_lost"


class Condition(enum.Enum):
    """A fact, beyond the state, that some rules depend on (computed from the login)."""

    SUB_ID_ACTIVE_AT_LOGIN = "a sub-ID was active at login"
    COMPANY_OTHER_THAN_HOME = "the PBX shows a company other than home"


_NO_CONDITIONS: Mapping[State, Condition] = MappingProxyType({})
_NO_FOLLOW_UPS: Mapping[Condition, Event] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Rule:
    """When an operation is allowed and which events its outcome sends.

    ``allowed_in`` lists the states that allow it; ``when`` the states that
    allow it only under a :class:`Condition`. ``on_start`` is sent as it
    begins, ``on_success`` when it succeeds, then each ``also_if`` event
    whose condition holds; ``on_lost`` when the PBX answered that the login
    is gone; ``on_end`` however it ended. ``None``: the state stays.
    """

    operation: Operation
    allowed_in: frozenset[State]
    when: Mapping[State, Condition] = field(default_factory=lambda: _NO_CONDITIONS)
    on_start: Event | None = None
    on_success: Event | None = None
    also_if: Mapping[Condition, Event] = field(default_factory=lambda: _NO_FOLLOW_UPS)
    on_lost: Event | None = None
    on_end: Event | None = None
    note: str = ""

    def allows(self, state: State, facts: frozenset[Condition] = frozenset()) -> bool:
        """Whether ``state`` (with the ``facts`` that hold) allows the operation."""
        if state in self.allowed_in:
            return True
        condition = self.when.get(state)
        return condition is not None and condition in facts

    def success_events(self, facts: frozenset[Condition] = frozenset()) -> tuple[Event, ...]:
        """The events a success sends, in order, given the ``facts`` after it."""
        if not self.also_if:  # most rules: nothing to look up (hot path)
            return () if self.on_success is None else (self.on_success,)
        events = [] if self.on_success is None else [self.on_success]
        events += [event for condition, event in self.also_if.items() if condition in facts]
        return tuple(events)


_SETUP = frozenset({State.UNCONFIGURED, State.HOST_SET})
_LOGGED_IN = frozenset({State.LOGGED_IN, State.COMPANY_SELECTED})
_OPEN = _SETUP | _LOGGED_IN
_IF_SUB_ID = MappingProxyType(
    {
        State.LOGGED_IN: Condition.SUB_ID_ACTIVE_AT_LOGIN,
        State.COMPANY_SELECTED: Condition.SUB_ID_ACTIVE_AT_LOGIN,
    }
)


#: The rules table: the one place that says what is allowed when, and what follows.
RULES: Mapping[Operation, Rule] = MappingProxyType(
    {
        rule.operation: rule
        for rule in (
            Rule(Operation.SET_HOST, _SETUP, on_success=Event.HOST_CONFIGURED),
            Rule(
                Operation.SET_WS_HOST, _SETUP, note="keeps the state: a feed host alone is no host"
            ),
            Rule(
                Operation.GET_SUB_ID,
                _SETUP,
                when=_IF_SUB_ID,
                note="when logged in, returns the sub-ID the login used",
            ),
            Rule(
                Operation.LOGIN,
                frozenset({State.HOST_SET}),
                on_success=Event.LOGIN_SUCCEEDED,
                also_if=MappingProxyType({Condition.COMPANY_OTHER_THAN_HOME: Event.COMPANY_CHOSEN}),
                note="a refused login leaves host_set; an adopted login in another company "
                "lands in company_selected",
            ),
            Rule(
                Operation.SELECT_COMPANY,
                _LOGGED_IN,
                on_success=Event.COMPANY_CHOSEN,
                on_lost=Event.SESSION_LOST,
            ),
            Rule(Operation.RTC_RESET, _LOGGED_IN, on_lost=Event.SESSION_LOST),
            Rule(
                Operation.LOGOUT,
                _LOGGED_IN,
                on_success=Event.LOGGED_OUT,
                on_lost=Event.SESSION_LOST,
                note="the feed stops first; notloggedin counts as done",
            ),
            Rule(
                Operation.EXIT,
                _OPEN | {State.EXITING, State.CLOSED},
                on_start=Event.EXIT_STARTED,
                on_end=Event.EXIT_FINISHED,
                note="enters exiting, then closed; in closed it returns the earlier report",
            ),
            Rule(
                Operation.SESSION_LOST,
                _LOGGED_IN,
                on_success=Event.SESSION_LOST,
                note="not a call: the PBX answered notloggedin, or the feed's errno 2 / HTTP "
                "403; ignored in other states",
            ),
        )
    }
)


TransitionListener = Callable[[State, State, Event], None]
"""Called synchronously after each state change with (source, target, event)."""


class Lifecycle:
    """The state of one session, guarded by :data:`RULES`, moved by :data:`TRANSITIONS`.

    Sans-IO: it never awaits and never touches the network. It also knows
    whether an asynchronous operation is in progress (:attr:`running`), so
    that a synchronous one made meanwhile is refused with
    :class:`~pbxsession.SessionBusyError`. Listeners are called after every
    transition, once it is complete; one that raises is logged at ERROR and
    changes nothing.
    """

    __slots__ = ("_listeners", "_running", "_state")

    def __init__(self) -> None:
        self._state = State.UNCONFIGURED
        self._running: Operation | None = None
        self._listeners: tuple[TransitionListener, ...] = ()

    @property
    def state(self) -> State:
        """The current state."""
        return self._state

    @property
    def running(self) -> Operation | None:
        """The asynchronous operation in progress, if any."""
        return self._running

    def check(self, operation: Operation, facts: frozenset[Condition] = frozenset()) -> Rule:
        """The rule for a synchronous ``operation`` allowed now; else raise.

        Raises :class:`InvalidStateError` when the state does not allow it and
        :class:`SessionBusyError` while another operation is in progress.
        """
        rule = self.allowed(operation, facts)
        if self._running is not None:
            raise SessionBusyError(operation.value)
        return rule

    def allowed(self, operation: Operation, facts: frozenset[Condition] = frozenset()) -> Rule:
        """The rule for ``operation`` if the state allows it; else :class:`InvalidStateError`."""
        rule = RULES[operation]
        if not rule.allows(self._state, facts):
            allowed = [s.value for s in State if s in rule.allowed_in]
            allowed += [f"{s.value} ({c.value})" for s, c in rule.when.items()]
            raise InvalidStateError(operation.value, self._state.value, allowed, rule.note)
        return rule

    def begin(self, operation: Operation, facts: frozenset[Condition] = frozenset()) -> Rule:
        """Start an asynchronous ``operation`` (the caller holds the session's lock).

        Checks the rule, marks the operation as running and sends its
        ``on_start`` event. Pair it with :meth:`end`.
        """
        rule = self.allowed(operation, facts)
        self._running = operation
        self._send(rule.on_start)
        return rule

    def succeeded(self, rule: Rule, facts: frozenset[Condition] = frozenset()) -> None:
        """``rule``'s operation succeeded: send its success events."""
        for event in rule.success_events(facts):
            self._send(event)

    def lost(self, rule: Rule) -> bool:
        """The PBX says the login is gone: send ``rule.on_lost`` if it applies now.

        Returns whether the state changed (``False`` when the rule has no
        such event or the session no longer holds a login).
        """
        if rule.on_lost is None or not self._state.is_logged_in:
            return False
        self._send(rule.on_lost)
        return True

    def end(self, rule: Rule) -> None:
        """``rule``'s operation is over, however it ended: send ``on_end``."""
        self._running = None
        self._send(rule.on_end)

    def can(self, event: Event) -> bool:
        """Whether ``event`` has a transition from the current state."""
        return (self._state, event) in TRANSITIONS

    def add_listener(self, listener: TransitionListener) -> Callable[[], None]:
        """Call ``listener`` after every transition; returns a function that removes it."""
        self._listeners = (*self._listeners, listener)

        def remove() -> None:
            self._listeners = tuple(x for x in self._listeners if x is not listener)

        return remove

    def _send(self, event: Event | None) -> None:
        if event is None:
            return
        source = self._state
        target = TRANSITIONS.get((source, event))
        if target is None:  # a bug in the caller: the rules never ask for it
            raise InvalidStateError(event.value, source.value, _sources(event))
        self._state = target
        for listener in self._listeners:
            try:
                listener(source, target, event)
            except Exception:  # a listener's bug must not undo a finished transition
                log.exception("on_transition callback %r failed", listener)

    def __repr__(self) -> str:
        return f"<Lifecycle state={self._state.value}>"


def _sources(event: Event) -> list[str]:
    return sorted({source.value for (source, ev) in TRANSITIONS if ev is event})


def target_of(state: State, event: Event) -> State | None:
    """The state ``event`` leads to from ``state``, or ``None`` if it has no transition."""
    return TRANSITIONS.get((state, event))


def _cell(rule: Rule, state: State) -> str:
    """Where ``rule`` leads from ``state``: the states passed through, arrows between."""
    path = [state]
    events = [rule.on_start, rule.on_success, rule.on_end]
    for event in events:
        step = target_of(path[-1], event) if event is not None else None
        if step is not None:
            path.append(step)
    cell = " → ".join(s.value for s in path[1:]) or state.value
    for condition, event in rule.also_if.items():
        extra = target_of(path[-1], event)
        if extra is not None and extra is not path[-1]:
            cell = f"{cell} ({extra.value} if {condition.value})"
    if state in rule.when:
        cell = f"{cell} (if {rule.when[state].value})"
    return cell


def rules_table() -> list[tuple[Operation, dict[State, str]]]:
    """The state x operation table: the state reached, or ``InvalidStateError``.

    A conditional cell reads ``"logged_in (if a sub-ID was active at login)"``;
    the ``session_lost`` row, which is no call, reads ``ignored`` where it
    does not apply.
    """
    table: list[tuple[Operation, dict[State, str]]] = []
    for operation, rule in RULES.items():
        refused = "ignored" if operation is Operation.SESSION_LOST else "InvalidStateError"
        row = {
            state: _cell(rule, state) if state in rule.allowed_in or state in rule.when else refused
            for state in State
        }
        table.append((operation, row))
    return table
