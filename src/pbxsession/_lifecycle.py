"""Every lifecycle rule of a PBX session, as data, with no I/O (sans-IO).

Two pieces of data say everything:

* :class:`SessionMachine`: the states and the events that move between them,
  declared with python-statemachine. Only events change the state.
* :data:`RULES`: for each public operation, the states that allow it, the
  states that allow it under a condition, and the machine events its success
  and failure send.

:class:`Lifecycle` is the only object that holds a session's state. The
session asks it before doing any I/O (:meth:`Lifecycle.check`) and reports
what the PBX answered afterwards (:meth:`Lifecycle.apply`). Its callbacks are
synchronous: python-statemachine's async engine is asyncio-only, so no
callback here may await. The diagrams and the README's rules table are
generated from this module (:func:`rules_table`, :func:`transitions`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from statemachine import State as _MachineState
from statemachine import StateMachine
from statemachine.exceptions import TransitionNotAllowed

from ._errors import InvalidStateError

__all__ = [
    "RULES",
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
    """The session's states and the events between them.

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


class Operation(enum.Enum):
    """The public operations of a session, named as in the Python API."""

    SET_HOST = "set_host"
    SET_WS_HOST = "set_ws_host"
    GET_SUB_ID = "get_sub_id"
    LOGIN = "login"
    SELECT_COMPANY = "select_company"
    RTC_RESET = "rtc_reset"
    LOGOUT = "logout"
    EXIT = "exit"


class Condition(enum.Enum):
    """A fact, beyond the state, that some rules depend on."""

    SUB_ID_ACTIVE_AT_LOGIN = "a sub-ID was active at login"


@dataclass(frozen=True, slots=True)
class Rule:
    """When an operation is allowed and which events its outcome sends.

    ``then`` is the event that follows ``on_success`` once the operation's
    work is done (exit: ``exit_started``, its steps, then ``exit_finished``).
    ``on_success`` / ``on_failure`` are the events sent when the operation
    succeeds or fails (``None``: the state stays). ``when`` lists states that
    allow the operation only under a :class:`Condition`.
    """

    operation: Operation
    allowed_in: frozenset[State]
    on_success: Event | None = None
    on_failure: Event | None = None
    then: Event | None = None
    when: Mapping[State, Condition] = field(default_factory=dict)
    note: str = ""

    def allows(self, state: State, facts: frozenset[Condition] = frozenset()) -> bool:
        """Whether ``state`` (with the ``facts`` that hold) allows the operation."""
        if state in self.allowed_in:
            return True
        condition = self.when.get(state)
        return condition is not None and condition in facts


_SETUP = frozenset({State.UNCONFIGURED, State.HOST_SET})
_LOGGED_IN = frozenset({State.LOGGED_IN, State.COMPANY_SELECTED})
_OPEN = _SETUP | _LOGGED_IN

#: The rules table: the one place that says which operation is allowed when.
RULES: Mapping[Operation, Rule] = MappingProxyType(
    {
        Operation.SET_HOST: Rule(Operation.SET_HOST, _SETUP, on_success=Event.HOST_CONFIGURED),
        Operation.SET_WS_HOST: Rule(
            Operation.SET_WS_HOST, _SETUP, note="keeps the state: a feed host alone is no host"
        ),
        Operation.GET_SUB_ID: Rule(
            Operation.GET_SUB_ID,
            _SETUP,
            when=MappingProxyType(
                {
                    State.LOGGED_IN: Condition.SUB_ID_ACTIVE_AT_LOGIN,
                    State.COMPANY_SELECTED: Condition.SUB_ID_ACTIVE_AT_LOGIN,
                }
            ),
            note="when logged in, returns the sub-ID the login used",
        ),
        Operation.LOGIN: Rule(
            Operation.LOGIN,
            frozenset({State.HOST_SET}),
            on_success=Event.LOGIN_SUCCEEDED,
            note="a refused login leaves host_set",
        ),
        Operation.SELECT_COMPANY: Rule(
            Operation.SELECT_COMPANY, _LOGGED_IN, on_success=Event.COMPANY_CHOSEN
        ),
        Operation.RTC_RESET: Rule(Operation.RTC_RESET, _LOGGED_IN),
        Operation.LOGOUT: Rule(Operation.LOGOUT, _LOGGED_IN, on_success=Event.LOGGED_OUT),
        Operation.EXIT: Rule(
            Operation.EXIT,
            _OPEN | {State.EXITING, State.CLOSED},
            on_success=Event.EXIT_STARTED,
            then=Event.EXIT_FINISHED,
            note="enters exiting, then closed; in closed it returns the earlier report",
        ),
    }
)


TransitionListener = Callable[[State, State, Event], None]
"""Called synchronously after each state change with (source, target, event)."""


class Lifecycle:
    """The state of one session, guarded by :data:`RULES` and :class:`SessionMachine`.

    Sans-IO: it never awaits and never touches the network. Listeners are
    called synchronously after every transition; they must not raise and
    must not send events themselves (queue work for trio code instead).
    """

    def __init__(self) -> None:
        self._listeners: list[TransitionListener] = []
        self._machine = SessionMachine(listeners=[_MachineObserver(self)])

    @property
    def state(self) -> State:
        """The current state."""
        (value,) = self._machine.configuration_values
        return State(value)

    def check(self, operation: Operation, facts: frozenset[Condition] = frozenset()) -> Rule:
        """Raise :class:`InvalidStateError` unless the current state allows ``operation``."""
        rule = RULES[operation]
        state = self.state
        if not rule.allows(state, facts):
            allowed = [s.value for s in State if s in rule.allowed_in]
            allowed += [f"{s.value} ({c.value})" for s, c in rule.when.items()]
            raise InvalidStateError(operation.value, state.value, allowed, rule.note)
        return rule

    def can(self, event: Event) -> bool:
        """Whether ``event`` has a transition from the current state."""
        return event.value in {e.id for e in self._machine.allowed_events}

    def apply(self, event: Event) -> State:
        """Send ``event`` to the machine and return the new state.

        An event with no transition from the current state is a bug in the
        caller, reported as :class:`InvalidStateError` with the state unchanged.
        """
        try:
            self._machine.send(event.value)
        except TransitionNotAllowed as exc:
            raise InvalidStateError(event.value, self.state.value, _sources(event)) from exc
        return self.state

    def add_listener(self, listener: TransitionListener) -> Callable[[], None]:
        """Call ``listener`` after every transition; returns a function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def _notify(self, source: State, target: State, event: Event) -> None:
        for listener in tuple(self._listeners):
            listener(source, target, event)

    def __repr__(self) -> str:
        return f"<Lifecycle state={self.state.value}>"


class _MachineObserver:
    """Relays python-statemachine's synchronous callbacks to the Lifecycle."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self._lifecycle = lifecycle

    def after_transition(self, event: str, source: Any, target: Any) -> None:
        self._lifecycle._notify(State(source.id), State(target.id), Event(event))


def transitions() -> Iterator[tuple[State, Event, State]]:
    """Every (source, event, target) transition of :class:`SessionMachine`."""
    for machine_state in SessionMachine.states:
        for transition in machine_state.transitions:
            for event in transition.events:
                yield State(transition.source.id), Event(str(event)), State(transition.target.id)


def _sources(event: Event) -> list[str]:
    return sorted({src.value for src, ev, _ in transitions() if ev is event})


def target_of(state: State, event: Event) -> State | None:
    """The state ``event`` leads to from ``state``, or ``None`` if it has no transition."""
    for source, ev, target in transitions():
        if source is state and ev is event:
            return target
    return None


def rules_table() -> list[tuple[Operation, dict[State, str]]]:
    """The state x operation table: the target state, or ``InvalidStateError``.

    A conditional cell reads ``"logged_in (if a sub-ID was active at login)"``.
    The row for the PBX answering ``notloggedin`` is given by :func:`transitions`
    (event ``session_lost``).
    """
    table: list[tuple[Operation, dict[State, str]]] = []
    for operation, rule in RULES.items():
        row: dict[State, str] = {}
        for state in State:
            if state in rule.allowed_in or state in rule.when:
                path = [state]
                for event in (rule.on_success, rule.then):
                    step = target_of(path[-1], event) if event is not None else None
                    if step is not None:
                        path.append(step)
                cell = " → ".join(s.value for s in path[1:]) or state.value
                if state in rule.when:
                    cell = f"{cell} (if {rule.when[state].value})"
                row[state] = cell
            else:
                row[state] = "InvalidStateError"
        table.append((operation, row))
    return table
