"""The lifecycle rules, state by state and operation by operation (no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbxsession import InvalidStateError
from pbxsession._lifecycle import (
    RULES,
    Condition,
    Event,
    Lifecycle,
    Operation,
    State,
    rules_table,
    transitions,
)

S = State
O = Operation

PATHS: dict[State, list[Event]] = {
    S.UNCONFIGURED: [],
    S.HOST_SET: [Event.HOST_CONFIGURED],
    S.LOGGED_IN: [Event.HOST_CONFIGURED, Event.LOGIN_SUCCEEDED],
    S.COMPANY_SELECTED: [Event.HOST_CONFIGURED, Event.LOGIN_SUCCEEDED, Event.COMPANY_CHOSEN],
    S.EXITING: [Event.EXIT_STARTED],
    S.CLOSED: [Event.EXIT_STARTED, Event.EXIT_FINISHED],
}

# Written out by hand from the rules table, so that a change to RULES
# that breaks a rule fails here.
ALLOWED: dict[Operation, set[State]] = {
    O.SET_HOST: {S.UNCONFIGURED, S.HOST_SET},
    O.SET_WS_HOST: {S.UNCONFIGURED, S.HOST_SET},
    O.GET_SUB_ID: {S.UNCONFIGURED, S.HOST_SET},
    O.LOGIN: {S.HOST_SET},
    O.SELECT_COMPANY: {S.LOGGED_IN, S.COMPANY_SELECTED},
    O.RTC_RESET: {S.LOGGED_IN, S.COMPANY_SELECTED},
    O.LOGOUT: {S.LOGGED_IN, S.COMPANY_SELECTED},
    O.EXIT: set(State),
}
ALLOWED_IF_SUB_ID: dict[Operation, set[State]] = {
    O.GET_SUB_ID: {S.LOGGED_IN, S.COMPANY_SELECTED},
}
TARGET: dict[tuple[Operation, State], State] = {
    (O.SET_HOST, S.UNCONFIGURED): S.HOST_SET,
    (O.SET_HOST, S.HOST_SET): S.HOST_SET,
    (O.LOGIN, S.HOST_SET): S.LOGGED_IN,
    (O.SELECT_COMPANY, S.LOGGED_IN): S.COMPANY_SELECTED,
    (O.SELECT_COMPANY, S.COMPANY_SELECTED): S.COMPANY_SELECTED,
    (O.LOGOUT, S.LOGGED_IN): S.HOST_SET,
    (O.LOGOUT, S.COMPANY_SELECTED): S.HOST_SET,
}


def lifecycle_in(state: State) -> Lifecycle:
    lifecycle = Lifecycle()
    for event in PATHS[state]:
        lifecycle.apply(event)
    assert lifecycle.state is state
    return lifecycle


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("operation", list(Operation))
def test_every_state_and_operation(state: State, operation: Operation) -> None:
    lifecycle = lifecycle_in(state)
    for facts in (frozenset(), frozenset({Condition.SUB_ID_ACTIVE_AT_LOGIN})):
        allowed = state in ALLOWED[operation] or (
            bool(facts) and state in ALLOWED_IF_SUB_ID.get(operation, set())
        )
        if allowed:
            rule = lifecycle.check(operation, facts)
            if rule.on_success is not None and lifecycle.can(rule.on_success):
                probe = lifecycle_in(state)
                probe.apply(rule.on_success)
                if rule.then is not None:
                    probe.apply(rule.then)
                expected = TARGET.get((operation, state))
                if operation is O.EXIT:
                    expected = S.CLOSED
                assert probe.state is (expected or state)
        else:
            with pytest.raises(InvalidStateError) as caught:
                lifecycle.check(operation, facts)
            error = caught.value
            assert error.operation == operation.value
            assert error.state == state.value
            assert operation.value in str(error) and state.value in str(error)
            for allowed_state in ALLOWED[operation]:
                assert allowed_state.value in error.allowed_in
        assert lifecycle.state is state  # a check never changes the state


@pytest.mark.parametrize("state", [S.LOGGED_IN, S.COMPANY_SELECTED])
def test_session_lost_goes_back_to_host_set(state: State) -> None:
    lifecycle = lifecycle_in(state)
    assert lifecycle.apply(Event.SESSION_LOST) is S.HOST_SET


@pytest.mark.parametrize("state", [S.UNCONFIGURED, S.HOST_SET, S.EXITING, S.CLOSED])
def test_session_lost_outside_a_login_is_refused(state: State) -> None:
    lifecycle = lifecycle_in(state)
    with pytest.raises(InvalidStateError):
        lifecycle.apply(Event.SESSION_LOST)
    assert lifecycle.state is state


def test_closed_is_final() -> None:
    lifecycle = lifecycle_in(S.CLOSED)
    for event in Event:
        assert not lifecycle.can(event)
        with pytest.raises(InvalidStateError):
            lifecycle.apply(event)
        assert lifecycle.state is S.CLOSED


def test_listeners_see_every_transition_in_order() -> None:
    lifecycle = Lifecycle()
    seen: list[tuple[State, State, Event]] = []
    remove = lifecycle.add_listener(lambda *change: seen.append(change))
    lifecycle.apply(Event.HOST_CONFIGURED)
    lifecycle.apply(Event.LOGIN_SUCCEEDED)
    remove()
    lifecycle.apply(Event.LOGGED_OUT)
    assert seen == [
        (S.UNCONFIGURED, S.HOST_SET, Event.HOST_CONFIGURED),
        (S.HOST_SET, S.LOGGED_IN, Event.LOGIN_SUCCEEDED),
    ]


def test_refused_event_keeps_the_state_and_tells_no_listener() -> None:
    lifecycle = lifecycle_in(S.HOST_SET)
    seen: list[object] = []
    lifecycle.add_listener(lambda *change: seen.append(change))
    with pytest.raises(InvalidStateError):
        lifecycle.apply(Event.COMPANY_CHOSEN)
    assert lifecycle.state is S.HOST_SET
    assert seen == []


def test_rules_table_matches_the_hand_written_rules() -> None:
    table = dict(rules_table())
    assert set(table) == set(Operation) == set(RULES)
    for operation, row in table.items():
        for state, cell in row.items():
            if state in ALLOWED[operation]:
                assert cell != "InvalidStateError"
            elif state in ALLOWED_IF_SUB_ID.get(operation, set()):
                assert cell.endswith("(if a sub-ID was active at login)")
            else:
                assert cell == "InvalidStateError"
    assert table[O.EXIT][S.HOST_SET] == "exiting → closed"
    assert table[O.LOGIN][S.HOST_SET] == "logged_in"


def test_transitions_are_exactly_the_designed_ones() -> None:
    assert set(transitions()) == {
        (S.UNCONFIGURED, Event.HOST_CONFIGURED, S.HOST_SET),
        (S.HOST_SET, Event.HOST_CONFIGURED, S.HOST_SET),
        (S.HOST_SET, Event.LOGIN_SUCCEEDED, S.LOGGED_IN),
        (S.LOGGED_IN, Event.COMPANY_CHOSEN, S.COMPANY_SELECTED),
        (S.COMPANY_SELECTED, Event.COMPANY_CHOSEN, S.COMPANY_SELECTED),
        (S.LOGGED_IN, Event.LOGGED_OUT, S.HOST_SET),
        (S.COMPANY_SELECTED, Event.LOGGED_OUT, S.HOST_SET),
        (S.LOGGED_IN, Event.SESSION_LOST, S.HOST_SET),
        (S.COMPANY_SELECTED, Event.SESSION_LOST, S.HOST_SET),
        (S.UNCONFIGURED, Event.EXIT_STARTED, S.EXITING),
        (S.HOST_SET, Event.EXIT_STARTED, S.EXITING),
        (S.LOGGED_IN, Event.EXIT_STARTED, S.EXITING),
        (S.COMPANY_SELECTED, Event.EXIT_STARTED, S.EXITING),
        (S.EXITING, Event.EXIT_FINISHED, S.CLOSED),
    }


def test_lifecycle_module_does_no_io() -> None:
    import pbxsession._lifecycle as module

    source = Path(module.__file__).read_text(encoding="utf-8")
    for forbidden in ("import trio", "import httpx", "import socket", "async def", "await "):
        assert forbidden not in source
