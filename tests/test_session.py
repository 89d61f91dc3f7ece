"""Session operations against the embedded simulator, over real loopback sockets."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing
from _support import session_on

import pbxsession
from pbxsession import (
    InvalidArgumentError,
    InvalidHostError,
    InvalidStateError,
    LoginError,
    MemoryStore,
    PbxError,
    PbxUnavailableError,
    PermissionDeniedError,
    SessionLost,
    SessionLostError,
    State,
    UnknownCompanyError,
)
from pbxsession.sim import Simulator


def context_of(
    sim: Simulator, login: str | None = None, subid: str = ""
) -> list[dict[str, object]]:
    return [
        c for c in sim.contexts() if c["subid"] == subid and (login is None or c["login"] == login)
    ]


# ---------------------------------------------------------------- happy path


async def test_whole_lifecycle(sim: Simulator, store: MemoryStore) -> None:
    seen: list[tuple[str, str, str]] = []
    async with session_on(sim, store) as session:
        session.on_transition(lambda a, b, e: seen.append((a.value, b.value, e.value)))
        assert session.state is State.HOST_SET
        assert session.user is None
        user = await session.login("admin", "admin-pass")
        assert session.state is State.LOGGED_IN
        assert user == session.user
        assert (user.id, user.login, user.name, user.company, user.home) == (
            "100",
            "admin",
            "Ada Admin",
            "7",
            "7",
        )
        assert [c.id for c in user.companies] == ["7", "8", "9"]
        assert user.has_permission("chat") and user.has_permission("admin")
        assert [p.company_level for p in user.permissions] == [False, True]

        chosen = await session.select_company("8")
        assert session.state is State.COMPANY_SELECTED
        assert (chosen.company, chosen.home) == ("8", "7")
        assert chosen.companies == user.companies  # the login's list is kept
        assert context_of(sim, "admin")[0]["company"] == "8"

        password = await session.rtc_reset(getnew=True)
        assert password == sim.user_view("admin")["rtc_pass"]
        assert await session.rtc_reset() is None
        assert sim.user_view("admin")["rtc_pass"] != password

        await session.logout()
        assert session.state is State.HOST_SET
        assert session.user is None
        assert context_of(sim, "admin") == []
    assert session.state is State.CLOSED
    assert seen == [
        ("host_set", "logged_in", "login_succeeded"),
        ("logged_in", "company_selected", "company_chosen"),
        ("company_selected", "host_set", "logged_out"),
        ("host_set", "exiting", "exit_started"),
        ("exiting", "closed", "exit_finished"),
    ]


async def test_set_host_later_and_ws_host_alone(sim: Simulator, store: MemoryStore) -> None:
    async with pbxsession.open_session(store=store) as session:
        assert session.state is State.UNCONFIGURED
        session.set_ws_host(sim.ws_url)
        assert session.state is State.UNCONFIGURED  # a feed host alone is no host
        session.set_host(sim.url + "/")
        assert session.state is State.HOST_SET
        assert session.host == sim.url
        assert session.ws_host == sim.ws_url
        session.set_host(sim.url)  # host_set -> host_set
        await session.login("alice", "alice-pass")
        with pytest.raises(InvalidStateError):
            session.set_host(sim.url)
        with pytest.raises(InvalidStateError):
            session.set_ws_host(sim.ws_url)


async def test_ws_host_defaults_to_host() -> None:
    async with pbxsession.open_session("https://pbx.example.com:8443", feed=None) as session:
        assert session.ws_host == "wss://pbx.example.com:8443"
    async with pbxsession.open_session("http://127.0.0.1:9", feed=None) as session:
        assert session.ws_host == "ws://127.0.0.1:9"


async def test_callback_form(sim: Simulator, store: MemoryStore) -> None:
    results: list[tuple[bool, str]] = []
    async with session_on(sim, store) as session:
        with pytest.raises(LoginError):
            await session.login(
                "alice", "wrong", on_result=lambda ok, msg: results.append((ok, msg))
            )
        await session.login(
            "alice", "alice-pass", on_result=lambda ok, msg: results.append((ok, msg))
        )
    assert results[0][0] is False and "badauth" in results[0][1]
    assert results[1] == (True, "logged in as alice")


# ------------------------------------------------------------ state refusals

OPERATIONS = [
    "set_host",
    "set_ws_host",
    "get_sub_id",
    "login",
    "select_company",
    "rtc_reset",
    "logout",
]
ALLOWED = {
    State.UNCONFIGURED: {"set_host", "set_ws_host", "get_sub_id"},
    State.HOST_SET: {"set_host", "set_ws_host", "get_sub_id", "login"},
    State.LOGGED_IN: {"select_company", "rtc_reset", "logout"},
    State.COMPANY_SELECTED: {"select_company", "rtc_reset", "logout"},
    State.CLOSED: set(),
}


async def call(session: pbxsession.Session, sim: Simulator, operation: str) -> object:
    if operation == "set_host":
        return session.set_host(sim.url)
    if operation == "set_ws_host":
        return session.set_ws_host(sim.ws_url)
    if operation == "get_sub_id":
        return session.get_sub_id()
    if operation == "login":
        return await session.login("admin", "admin-pass")
    if operation == "select_company":
        return await session.select_company("8")
    if operation == "rtc_reset":
        return await session.rtc_reset()
    return await session.logout()


async def reach(session: pbxsession.Session, sim: Simulator, state: State) -> None:
    if state is State.UNCONFIGURED:
        return
    session.set_host(sim.url)
    session.set_ws_host(sim.ws_url)
    if state in (State.LOGGED_IN, State.COMPANY_SELECTED):
        await session.login("admin", "admin-pass")
    if state is State.COMPANY_SELECTED:
        await session.select_company("9")
    if state is State.CLOSED:
        await session.exit()
    assert session.state is state


@pytest.mark.parametrize("state", list(ALLOWED))
@pytest.mark.parametrize("operation", OPERATIONS)
async def test_session_refuses_what_the_state_does_not_allow(
    sim: Simulator, store: MemoryStore, state: State, operation: str
) -> None:
    async with pbxsession.open_session(store=store) as session:
        await reach(session, sim, state)
        before = sim.command_count()
        if operation in ALLOWED[state]:
            await call(session, sim, operation)
        else:
            with pytest.raises(InvalidStateError) as caught:
                await call(session, sim, operation)
            assert caught.value.operation == operation
            assert caught.value.state == state.value
            assert session.state is state
            assert sim.command_count() == before  # refused before anything was sent


async def test_exit_in_closed_returns_the_earlier_report(
    sim: Simulator, store: MemoryStore
) -> None:
    async with session_on(sim, store) as session:
        await session.login("alice", "alice-pass")
        report = await session.exit(logout=True)
        assert await session.exit() is report
        assert session.exit_report is report
    assert session.state is State.CLOSED


# -------------------------------------------------------------------- sub-IDs


async def test_get_sub_id_is_stable_and_isolates(sim: Simulator, store: MemoryStore) -> None:
    async with session_on(sim, store) as first, session_on(sim, store) as second:
        await first.login("alice", "alice-pass")
        subid = second.get_sub_id()
        assert subid == second.get_sub_id() == second.sub_id
        pbxsession._wire.validate_sub_id(subid)
        # The sub-ID's context is not the shared default one: no adoption.
        with pytest.raises(LoginError) as caught:
            await second.login("alice", checkonly=True)
        assert caught.value.code == "notloggedin"
        assert second.state is State.HOST_SET
        await second.login("bob", "bob-pass")
        assert second.get_sub_id() == subid  # allowed: a sub-ID was active at login
        assert first.user is not None and first.user.login == "alice"
        assert {(c["subid"], c["login"]) for c in sim.contexts() if c["login"]} == {
            ("", "alice"),
            (subid, "bob"),
        }


async def test_get_sub_id_when_logged_in_without_one_is_refused(
    sim: Simulator, store: MemoryStore
) -> None:
    async with session_on(sim, store) as session:
        await session.login("alice", "alice-pass")
        with pytest.raises(InvalidStateError, match="a sub-ID was active at login"):
            session.get_sub_id()
        assert session.sub_id is None


async def test_login_subid_option_and_open_session_subid(
    sim: Simulator, store: MemoryStore
) -> None:
    async with session_on(sim, store) as session:
        await session.login("alice", "alice-pass", subid="tab-1")
        assert session.sub_id == "tab-1"
        assert context_of(sim, "alice", "tab-1")
    async with session_on(sim, store, subid="tab-2") as session:
        await session.login("bob", "bob-pass")
        assert context_of(sim, "bob", "tab-2")


async def test_failed_login_restores_the_previous_sub_id(
    sim: Simulator, store: MemoryStore
) -> None:
    async with session_on(sim, store) as session:
        with pytest.raises(LoginError):
            await session.login("alice", "nope", subid="other")
        assert session.sub_id is None


# --------------------------------------------------- sharing like browser tabs


async def test_second_session_adopts_login_with_checkonly(
    sim: Simulator, store: MemoryStore
) -> None:
    async with session_on(sim, store, keep_session=True) as first:
        await first.login("admin", "admin-pass")
        await first.select_company("9")
    # keep_session: leaving did not log out; a new session adopts the login.
    async with session_on(sim, store) as second:
        before = sim.command_count("login")
        user = await second.login("admin", checkonly=True)
        assert sim.command_count("login") == before + 1
        assert user.login == "admin" and user.company == "9"
        # In another company than home: the adopted login is company_selected.
        assert second.state is State.COMPANY_SELECTED
    # That one did log out on leaving: nothing is left to adopt.
    async with session_on(sim, store) as third:
        with pytest.raises(LoginError) as caught:
            await third.login("", checkonly=True)
        assert caught.value.code == "notloggedin"


async def test_separate_stores_do_not_share(sim: Simulator) -> None:
    async with session_on(sim, MemoryStore()) as first, session_on(sim, MemoryStore()) as second:
        await first.login("alice", "alice-pass")
        with pytest.raises(LoginError):
            await second.login("alice", checkonly=True)


# ------------------------------------------------------------- company rules


async def test_select_company_refusals_send_nothing(sim: Simulator, store: MemoryStore) -> None:
    async with session_on(sim, store) as session:
        await session.login("alice", "alice-pass")
        with pytest.raises(PermissionDeniedError) as denied:
            await session.select_company("7")
        assert denied.value.code == "norole"
        await session.logout()
        await session.login("admin", "admin-pass")
        with pytest.raises(UnknownCompanyError) as unknown:
            await session.select_company("42")
        assert unknown.value.code == "badcompany"
        with pytest.raises(InvalidArgumentError):
            await session.select_company("")
        assert session.state is State.LOGGED_IN
        assert sim.command_count("selcompany") == 0


# -------------------------------------------------------- failures and loss


async def test_bad_password_and_lockout(
    sim: Simulator, store: MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    async with session_on(sim, store, feed=None) as session:
        for _ in range(5):
            with pytest.raises(LoginError) as caught:
                await session.login("alice", "wrong")
            assert caught.value.code == "badauth"
            assert session.state is State.HOST_SET
        with pytest.raises(LoginError) as locked:
            await session.login("alice", "alice-pass")
        assert locked.value.code == "locked"
        await trio.sleep(61)
        await session.login("alice", "alice-pass")
        assert session.state is State.LOGGED_IN


async def test_notloggedin_answer_means_session_lost(sim: Simulator, store: MemoryStore) -> None:
    async with session_on(sim, store, feed=None) as session:
        events = session.events()
        await session.login("admin", "admin-pass")
        await session.select_company("8")
        sim.expire("admin")
        with pytest.raises(SessionLostError):
            await session.rtc_reset()
        assert session.state is State.HOST_SET
        assert session.user is None
        assert isinstance(events.receive_nowait(), SessionLost)
        await session.login("admin", "admin-pass")  # the way back
        assert session.state is State.LOGGED_IN


async def test_logout_of_an_expired_session_succeeds(sim: Simulator, store: MemoryStore) -> None:
    async with session_on(sim, store, feed=None) as session:
        await session.login("alice", "alice-pass")
        sim.expire("alice")
        await session.logout()
        assert session.state is State.HOST_SET


async def test_logout_elsewhere_reaches_the_session_through_the_feed(
    sim: Simulator, store: MemoryStore
) -> None:
    async with session_on(sim, store) as first, session_on(sim, store) as second:
        events = first.events()
        await first.login("alice", "alice-pass")
        await second.login("alice", checkonly=True)
        await second.logout()  # the shared context is logged out
        with trio.fail_after(5):
            assert await first.wait_state(State.HOST_SET) is State.HOST_SET
            item = await events.receive()
        assert isinstance(item, SessionLost)
        assert first.user is None


async def test_retry_safe_commands_survive_a_500(sim: Simulator, store: MemoryStore) -> None:
    async with session_on(sim, store, feed=None) as session:
        await session.login("admin", "admin-pass")
        sim.fail_next(2, "selcompany")
        await session.select_company("8")
        assert sim.command_count("selcompany") == 3
        assert session.state is State.COMPANY_SELECTED


async def test_rtcreset_and_password_login_are_never_retried(
    sim: Simulator, store: MemoryStore
) -> None:
    async with session_on(sim, store, feed=None) as session:
        with pytest.raises(LoginError):  # gets the context's cookie...
            await session.login("admin", checkonly=True)
        # ...and the store has seen it logged in: the password login goes alone.
        await store.record_context(sim.url, "admin", None, True)
        before = sim.command_count("login")
        sim.fail_next(1, "login")
        with pytest.raises(PbxUnavailableError):
            await session.login("admin", "admin-pass")
        assert sim.command_count("login") == before + 1
        assert session.state is State.HOST_SET
        await session.login("admin", "admin-pass")
        sim.fail_next(1, "rtcreset")
        with pytest.raises(PbxUnavailableError):
            await session.rtc_reset(getnew=True)
        assert sim.command_count("rtcreset") == 1
        assert session.state is State.LOGGED_IN


async def test_retries_are_bounded(sim: Simulator, store: MemoryStore) -> None:
    async with session_on(sim, store, feed=None, retries=1) as session:
        await session.login("admin", "admin-pass")
        sim.fail_next(10, "selcompany")
        with pytest.raises(PbxUnavailableError, match="HTTP 500"):
            await session.select_company("8")
        assert sim.command_count("selcompany") == 2
        assert session.state is State.LOGGED_IN


async def test_closed_port_is_unavailable(store: MemoryStore) -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()  # nothing listens there now
    async with pbxsession.open_session(f"http://127.0.0.1:{port}", store=store, feed=None) as s:
        with pytest.raises(PbxUnavailableError) as caught:
            await s.login("alice", "alice-pass")
        assert caught.value.__cause__ is not None
        assert s.state is State.HOST_SET


async def test_command_timeout_is_unavailable(
    sim: Simulator, store: MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    sim.set_delay(30, "login")
    async with session_on(sim, store, feed=None, timeout=5) as session:
        with pytest.raises(PbxUnavailableError, match="5s"):
            await session.login("alice", "alice-pass")
        assert session.state is State.HOST_SET


# ----------------------------------------------------- concurrency and cancel


async def test_operations_are_serialized(
    sim: Simulator, store: MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    async with session_on(sim, store, feed=None) as session:
        await session.login("admin", "admin-pass")
        sim.set_delay(1.0, "rtcreset")
        finished: list[float] = []

        async def reset() -> None:
            await session.rtc_reset()
            finished.append(trio.current_time())

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reset)
            nursery.start_soon(reset)
        assert [round(t - start, 1) for t in sorted(finished)] == [1.0, 2.0]


async def test_sync_operation_during_a_call_is_refused(
    sim: Simulator, store: MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    sim.set_delay(1.0, "login")
    async with session_on(sim, store, feed=None) as session:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.login, "alice", "alice-pass")
            await trio.sleep(0.5)
            with pytest.raises(pbxsession.SessionBusyError, match="in progress"):
                session.set_host(sim.url)
        assert session.state is State.LOGGED_IN


@pytest.mark.parametrize("operation", ["login", "select_company", "logout"])
async def test_cancelled_call_leaves_the_state_it_found(
    sim: Simulator, store: MemoryStore, autojump_clock: trio.testing.MockClock, operation: str
) -> None:
    async with session_on(sim, store) as session:
        if operation != "login":
            await session.login("admin", "admin-pass")
        before = session.state
        sim.set_delay(5.0)
        with trio.move_on_after(1.0) as scope:
            await call(session, sim, operation)
        assert scope.cancelled_caught
        assert session.state is before
        sim.set_delay(0.0)
        # The session still works afterwards.
        assert await session.wait_state(before) is before


async def test_wait_state(sim: Simulator, store: MemoryStore) -> None:
    async with session_on(sim, store, feed=None) as session:
        reached: list[State] = []

        async def waiter() -> None:
            reached.append(await session.wait_state(State.COMPANY_SELECTED))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await session.login("admin", "admin-pass")
            await trio.testing.wait_all_tasks_blocked()
            assert reached == []
            await session.select_company("8")
        assert reached == [State.COMPANY_SELECTED]
        with pytest.raises(InvalidArgumentError):
            await session.wait_state()


# ------------------------------------------------------------ the block itself


async def test_leaving_the_block_logs_out(sim: Simulator, store: MemoryStore) -> None:
    async with session_on(sim, store) as session:
        await session.login("alice", "alice-pass")
        assert context_of(sim, "alice")
    assert context_of(sim, "alice") == []
    report = session.exit_report
    assert report is not None
    assert report.steps["logout"].outcome is pbxsession.StepOutcome.OK


async def test_keep_session_leaves_the_login(sim: Simulator, store: MemoryStore) -> None:
    async with session_on(sim, store, keep_session=True) as session:
        await session.login("alice", "alice-pass")
    assert context_of(sim, "alice")
    assert session.state is State.CLOSED


async def test_body_exception_escapes_alone(sim: Simulator, store: MemoryStore) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with session_on(sim, store) as session:
            await session.login("alice", "alice-pass")
            raise Boom
    assert session.state is State.CLOSED
    assert context_of(sim, "alice") == []


async def test_pbx_error_in_body_is_not_wrapped(sim: Simulator, store: MemoryStore) -> None:
    with pytest.raises(LoginError):
        async with session_on(sim, store) as session:
            await session.login("alice", "bad")


async def test_cancelling_the_block_still_exits(sim: Simulator, store: MemoryStore) -> None:
    with trio.move_on_after(0.5) as scope:
        async with session_on(sim, store) as session:
            await session.login("alice", "alice-pass")
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert session.state is State.CLOSED
    assert context_of(sim, "alice") == []


# --------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "host",
    [
        "ftp://x",
        "https://user:pw@x",
        "https://x/path?q",
        "https://x\r\nHost: evil",
        "https://x\n",
        "",
        "not a url",
        "http://pbx.example.com",  # plain http to a remote host
    ],
)
async def test_bad_hosts_are_refused(store: MemoryStore, host: str) -> None:
    async with pbxsession.open_session(store=store, feed=None) as session:
        with pytest.raises(InvalidHostError) as caught:
            session.set_host(host)
        assert isinstance(caught.value, ValueError)
        assert session.state is State.UNCONFIGURED
    with pytest.raises(InvalidHostError):
        async with pbxsession.open_session(host, store=store, feed=None):
            pass


async def test_plain_http_needs_consent_for_remote_hosts(store: MemoryStore) -> None:
    async with pbxsession.open_session(
        "http://pbx.example.com", allow_insecure=True, feed=None, store=store
    ) as session:
        assert session.host == "http://pbx.example.com"
        with pytest.raises(InvalidHostError):
            session.set_ws_host("ws pbx")


@pytest.mark.parametrize("subid", ["", "a b", "x" * 65, "ü", "a/b"])
async def test_bad_sub_ids_are_refused(sim: Simulator, store: MemoryStore, subid: str) -> None:
    with pytest.raises(InvalidArgumentError):
        async with session_on(sim, store, subid=subid):
            pass
    async with session_on(sim, store) as session:
        with pytest.raises(InvalidArgumentError):
            await session.login("alice", "alice-pass", subid=subid)
        assert session.state is State.HOST_SET
        assert sim.command_count("login") == 0


@pytest.mark.parametrize(
    ("username", "password", "checkonly"),
    [("", "pw", False), ("alice", None, False), ("alice", "", False), ("alice", "pw", True)],
)
async def test_bad_login_arguments(
    sim: Simulator, store: MemoryStore, username: str, password: str | None, checkonly: bool
) -> None:
    async with session_on(sim, store) as session:
        with pytest.raises(InvalidArgumentError):
            await session.login(username, password, checkonly=checkonly)
        assert session.state is State.HOST_SET
        assert sim.command_count("login") == 0


# -------------------------------------------------------------------- secrets


async def test_passwords_never_reach_logs_reprs_or_errors(
    sim: Simulator, store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    async with session_on(sim, store) as session:
        with pytest.raises(LoginError) as failed:
            await session.login("admin", "wrong-secret-1")
        texts += [str(failed.value), repr(failed.value)]
        await session.login("admin", "admin-pass")
        rtc = await session.rtc_reset(getnew=True)
        assert rtc
        texts += [repr(session), repr(session.user), repr(session.statistics())]
        texts += [repr(store)]
    texts += [r.getMessage() for r in caplog.records]
    texts += [repr(session.exit_report)]
    blob = "\n".join(texts)
    for secret in ("wrong-secret-1", "admin-pass", rtc):
        assert secret not in blob
    assert any("logged in" in r.getMessage() for r in caplog.records)


async def test_exception_tree_is_rooted_at_pbx_error() -> None:
    for name in pbxsession.__all__:
        obj = getattr(pbxsession, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, PbxError), name
    assert issubclass(InvalidHostError, ValueError)
    assert issubclass(InvalidArgumentError, ValueError)


async def test_simulator_block_lets_the_body_exception_out_alone() -> None:
    from pbxsession.sim import open_simulator

    with pytest.raises(KeyError):
        async with open_simulator():
            raise KeyError("body")


# ------------------------------------------------ the first hour (issue 10)


async def receive_soon(events: pbxsession.FeedSubscription) -> pbxsession.FeedItem:
    with trio.fail_after(5):
        return await events.receive()


async def test_a_late_consumer_after_a_lost_session_then_gets_the_next_login(
    sim: Simulator, store: MemoryStore
) -> None:
    async with session_on(sim, store) as session:
        await session.login("alice", "alice-pass")
        async with session.events() as events:
            sim.feed_error(2, "logged out elsewhere")
            assert isinstance(await receive_soon(events), SessionLost)
        async with session.events() as late:
            assert isinstance(late.receive_nowait(), SessionLost)
            await session.login("alice", "alice-pass")
            sim.emit("presence", {"back": True}, login="alice")
            assert isinstance(await receive_soon(late), pbxsession.FeedEvent)


async def test_an_outage_shows_as_feed_down_then_feed_up_in_order(
    sim: Simulator, store: MemoryStore
) -> None:
    async with session_on(sim, store) as session:
        await session.login("alice", "alice-pass")
        async with session.events() as events:
            sim.emit("presence", {"n": 1}, login="alice")
            assert isinstance(await receive_soon(events), pbxsession.FeedEvent)
            sim.drop_feeds()
            down = await receive_soon(events)
            assert isinstance(down, pbxsession.FeedDown) and down.errno == 92
            up = await receive_soon(events)
            assert isinstance(up, pbxsession.FeedUp) and up.resumed
            sim.emit("presence", {"n": 2}, login="alice")
            assert isinstance(await receive_soon(events), pbxsession.FeedEvent)
            assert session.statistics().feed is not None
            assert session.statistics().feed.reconnects == 1


async def test_a_raising_listener_is_logged_and_changes_nothing(
    sim: Simulator, store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    # Fails on main: login raised while the session stayed logged_in with its feed.
    def broken(*_: object) -> None:
        raise RuntimeError("listener bug")

    async with session_on(sim, store) as session:
        session.on_transition(broken)
        with caplog.at_level(logging.ERROR, logger="pbxsession"):
            user = await session.login("alice", "alice-pass")
        assert user.login == "alice" and session.state is State.LOGGED_IN
        failures = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert failures and failures[0].exc_info is not None
        await session.logout()
        assert session.state is State.HOST_SET


async def test_logout_stops_the_feed_before_the_pbx_logs_out(
    sim: Simulator, store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    # Fails on main: the feed was still connected when the PBX processed the
    # logout, so the PBX's errno 2 for our own logout raced the reply.
    async with session_on(sim, store) as session:
        await session.login("alice", "alice-pass")
        handshakes = sim.stats()["feed_handshakes"]
        sim.set_delay(0.5, "logout")  # held before the PBX processes it
        feeds_while_logging_out: list[int] = []
        async with session.events() as events, trio.open_nursery() as nursery:
            with caplog.at_level(logging.INFO, logger="pbxsession"):
                nursery.start_soon(session.logout)
                await trio.sleep(0.25)
                feeds_while_logging_out.append(sim.stats()["feed_connections"])
            await session.wait_state(State.HOST_SET)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.WouldBlock):
                events.receive_nowait()  # no SessionLost, no FeedDown
        assert feeds_while_logging_out == [0]
        assert sim.stats()["feed_handshakes"] == handshakes  # no reconnect attempt
        assert not [r for r in caplog.records if r.name == "pbxsession.feed"]


async def test_exit_timeout_takes_a_number_or_exit_timeouts(
    sim: Simulator, store: MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    async with session_on(sim, store, feed=None) as session:
        await session.login("alice", "alice-pass")
        sim.set_delay(60)
        started = trio.current_time()
        report = await session.exit(logout=True, timeout=2)
        assert trio.current_time() - started < 4  # bounded by 2 s (+1 s to close)
        assert report.steps["logout"].outcome is not pbxsession.StepOutcome.OK
    with pytest.raises(InvalidArgumentError):
        pbxsession.ExitTimeouts.coerce(-1)
    assert pbxsession.ExitTimeouts.coerce(3).total == 3


async def test_a_hung_pbx_is_a_timeout_that_says_so(
    sim: Simulator, store: MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    sim.set_delay(600, "login")
    async with session_on(sim, store, feed=None, timeout=2) as session:
        with pytest.raises(pbxsession.PbxTimeoutError) as caught:
            await session.login("alice", "alice-pass")
        assert isinstance(caught.value, TimeoutError)
        assert isinstance(caught.value, PbxUnavailableError)
        assert "attempt" in str(caught.value)
        assert session.state is State.HOST_SET


async def test_an_adopted_login_in_another_company_is_company_selected(
    sim: Simulator, store: MemoryStore
) -> None:
    async with session_on(sim, store, keep_session=True) as first:
        await first.login("admin", "admin-pass")
        await first.select_company("8")
    async with session_on(sim, store, keep_session=True) as second:
        user = await second.login("admin", checkonly=True)
        assert user.company == "8"
        assert second.state is State.COMPANY_SELECTED


async def test_sessions_have_no_public_constructor() -> None:
    with pytest.raises(TypeError, match="open_session"):
        pbxsession.Session()  # type: ignore[call-arg]


async def test_statistics_say_what_runs(sim: Simulator, store: MemoryStore) -> None:
    async with session_on(sim, store) as session:
        stats = session.statistics()
        assert (stats.subscribers, stats.tasks, stats.http_client_open) == (0, 0, True)
        await session.login("alice", "alice-pass")
        async with session.events():
            stats = session.statistics()
            assert (stats.subscribers, stats.tasks) == (1, 1)
        await session.exit()
        stats = session.statistics()
        assert (stats.state, stats.tasks, stats.http_client_open) == (State.CLOSED, 0, False)
