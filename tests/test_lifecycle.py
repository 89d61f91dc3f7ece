"""The lifecycle rules, state by state and operation by operation (no I/O)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from statemachine.exceptions import TransitionNotAllowed

from pbxsession import InvalidStateError, SessionBusyError
from pbxsession._lifecycle import (
    RULES,
    TRANSITIONS,
    Condition,
    Event,
    Lifecycle,
    Operation,
    SessionMachine,
    State,
    rules_table,
    transitions,
)

S = State
O = Operation

PATHS: dict[State, list[Operation]] = {
    S.UNCONFIGURED: [],
    S.HOST_SET: [O.SET_HOST],
    S.LOGGED_IN: [O.SET_HOST, O.LOGIN],
    S.COMPANY_SELECTED: [O.SET_HOST, O.LOGIN, O.SELECT_COMPANY],
    S.EXITING: [O.EXIT],
    S.CLOSED: [O.EXIT, O.EXIT],
}


def perform(lifecycle: Lifecycle, operation: Operation) -> None:
    """Run ``operation`` to success the way the session does."""
    if lifecycle.state is S.EXITING:  # the exit's second half
        lifecycle.end(RULES[O.EXIT])
        return
    rule = lifecycle.begin(operation)
    lifecycle.succeeded(rule)
    if operation is not O.EXIT:
        lifecycle.end(rule)


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
    O.SESSION_LOST: {S.LOGGED_IN, S.COMPANY_SELECTED},
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
    (O.SESSION_LOST, S.LOGGED_IN): S.HOST_SET,
    (O.SESSION_LOST, S.COMPANY_SELECTED): S.HOST_SET,
}


def lifecycle_in(state: State) -> Lifecycle:
    lifecycle = Lifecycle()
    for operation in PATHS[state]:
        perform(lifecycle, operation)
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
            rule = lifecycle.allowed(operation, facts)
            probe = lifecycle_in(state)
            if operation is O.EXIT and state in (S.EXITING, S.CLOSED):
                continue  # the session returns the exit's report; nothing is sent
            rule = probe.begin(operation, facts)
            probe.succeeded(rule, facts - {Condition.COMPANY_OTHER_THAN_HOME})
            probe.end(rule)
            expected = TARGET.get((operation, state))
            if operation is O.EXIT:
                expected = S.CLOSED
            assert probe.state is (expected or state)
        else:
            with pytest.raises(InvalidStateError) as caught:
                lifecycle.allowed(operation, facts)
            error = caught.value
            assert error.operation == operation.value
            assert error.state == state.value
            assert operation.value in str(error) and state.value in str(error)
            for allowed_state in ALLOWED[operation]:
                assert allowed_state.value in error.allowed_in
        assert lifecycle.state is state  # a check never changes the state


@pytest.mark.parametrize("state", [S.LOGGED_IN, S.COMPANY_SELECTED])
@pytest.mark.parametrize("operation", [O.SELECT_COMPANY, O.RTC_RESET, O.LOGOUT])
def test_a_notloggedin_answer_goes_back_to_host_set(state: State, operation: Operation) -> None:
    lifecycle = lifecycle_in(state)
    rule = lifecycle.begin(operation)
    assert lifecycle.lost(rule)
    lifecycle.end(rule)
    assert lifecycle.state is S.HOST_SET


def test_a_refused_login_sends_nothing() -> None:
    lifecycle = lifecycle_in(S.HOST_SET)
    rule = lifecycle.begin(O.LOGIN)
    assert not lifecycle.lost(rule)
    lifecycle.end(rule)
    assert lifecycle.state is S.HOST_SET


@pytest.mark.parametrize("state", [S.LOGGED_IN, S.COMPANY_SELECTED])
def test_the_session_lost_row_goes_back_to_host_set(state: State) -> None:
    lifecycle = lifecycle_in(state)
    perform(lifecycle, O.SESSION_LOST)
    assert lifecycle.state is S.HOST_SET


@pytest.mark.parametrize("state", [S.UNCONFIGURED, S.HOST_SET, S.EXITING, S.CLOSED])
def test_session_lost_outside_a_login_is_refused(state: State) -> None:
    lifecycle = lifecycle_in(state)
    with pytest.raises(InvalidStateError):
        lifecycle.begin(O.SESSION_LOST)
    assert lifecycle.state is state


def test_an_adopted_login_in_another_company_lands_in_company_selected() -> None:
    lifecycle = lifecycle_in(S.HOST_SET)
    rule = lifecycle.begin(O.LOGIN)
    lifecycle.succeeded(rule, frozenset({Condition.COMPANY_OTHER_THAN_HOME}))
    lifecycle.end(rule)
    assert lifecycle.state is S.COMPANY_SELECTED


def test_closed_is_final() -> None:
    lifecycle = lifecycle_in(S.CLOSED)
    for event in Event:
        assert not lifecycle.can(event)
    for operation in Operation:
        if operation is not O.EXIT:
            with pytest.raises(InvalidStateError):
                lifecycle.begin(operation)
        assert lifecycle.state is S.CLOSED


def test_listeners_see_every_transition_in_order() -> None:
    lifecycle = Lifecycle()
    seen: list[tuple[State, State, Event]] = []
    remove = lifecycle.add_listener(lambda *change: seen.append(change))
    perform(lifecycle, O.SET_HOST)
    perform(lifecycle, O.LOGIN)
    remove()
    perform(lifecycle, O.LOGOUT)
    assert seen == [
        (S.UNCONFIGURED, S.HOST_SET, Event.HOST_CONFIGURED),
        (S.HOST_SET, S.LOGGED_IN, Event.LOGIN_SUCCEEDED),
    ]


def test_a_listener_runs_after_the_transition_and_its_error_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lifecycle = lifecycle_in(S.HOST_SET)
    seen: list[State] = []

    def broken(source: State, target: State, event: Event) -> None:
        seen.append(lifecycle.state)  # the transition is complete already
        raise RuntimeError("a listener's bug")

    lifecycle.add_listener(broken)
    with caplog.at_level(logging.ERROR, logger="pbxsession"):
        perform(lifecycle, O.LOGIN)
    assert lifecycle.state is S.LOGGED_IN and seen == [S.LOGGED_IN]
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is not None


def test_a_synchronous_operation_during_an_async_one_is_busy() -> None:
    lifecycle = lifecycle_in(S.HOST_SET)
    rule = lifecycle.begin(O.LOGIN)
    assert lifecycle.running is O.LOGIN
    with pytest.raises(SessionBusyError):
        lifecycle.check(O.SET_HOST)
    lifecycle.end(rule)
    lifecycle.check(O.SET_HOST)


def test_compiled_table_agrees_with_the_declared_machine() -> None:
    """Every state x event: the runtime table and python-statemachine say the same."""
    for state in State:
        for event in Event:
            machine = SessionMachine(start_value=state.value)
            try:
                machine.send(event.value)
            except TransitionNotAllowed:
                assert (state, event) not in TRANSITIONS
            else:
                (reached,) = machine.configuration_values
                assert TRANSITIONS[(state, event)] is State(reached)


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
                assert cell == ("ignored" if operation is O.SESSION_LOST else "InvalidStateError")
    assert table[O.EXIT][S.HOST_SET] == "exiting → closed"
    assert table[O.LOGIN][S.HOST_SET] == (
        "logged_in (company_selected if the PBX shows a company other than home)"
    )


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


# One test named after each rule (the rules table links to them): the row,
# cell by cell, against the hand-written rules above.


def check_rule(operation: Operation) -> None:
    row = dict(rules_table())[operation]
    for state in State:
        probe = lifecycle_in(state)
        if state in ALLOWED[operation]:
            if operation is O.EXIT and state in (S.EXITING, S.CLOSED):
                assert row[state] == "closed"
                continue
            rule = probe.begin(operation)
            probe.succeeded(rule)
            probe.end(rule)
            expected = S.CLOSED if operation is O.EXIT else TARGET.get((operation, state), state)
            assert probe.state is expected
            assert row[state].split(" (")[0].endswith(expected.value)
        elif state in ALLOWED_IF_SUB_ID.get(operation, set()):
            probe.allowed(operation, frozenset({Condition.SUB_ID_ACTIVE_AT_LOGIN}))
            with pytest.raises(InvalidStateError):
                probe.allowed(operation)
        else:
            with pytest.raises(InvalidStateError):
                probe.allowed(operation)


def test_rule_set_host() -> None:
    check_rule(O.SET_HOST)


def test_rule_set_ws_host() -> None:
    check_rule(O.SET_WS_HOST)


def test_rule_get_sub_id() -> None:
    check_rule(O.GET_SUB_ID)


def test_rule_login() -> None:
    check_rule(O.LOGIN)


def test_rule_select_company() -> None:
    check_rule(O.SELECT_COMPANY)


def test_rule_rtc_reset() -> None:
    check_rule(O.RTC_RESET)


def test_rule_logout() -> None:
    check_rule(O.LOGOUT)


def test_rule_exit() -> None:
    check_rule(O.EXIT)


def test_rule_session_lost() -> None:
    check_rule(O.SESSION_LOST)


def test_every_rule_has_its_own_test() -> None:
    from pbxsession.diagrams import rule_test_name

    for operation in Operation:
        assert callable(globals()[rule_test_name(operation)])
