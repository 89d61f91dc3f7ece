"""Session stores: sharing a login across tasks and processes, sub-ID isolation, safety.

Real loopback sockets throughout: the simulator runs in this process, other
programs are ``tests/store_worker.py`` started with ``trio.run_process``, and
Redis is a real ``redis-server`` started on a free loopback port.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import platformdirs
import pytest
import trio

import pbxsession
from pbxsession import (
    InvalidArgumentError,
    MemoryStore,
    RedisStore,
    SessionStore,
    SqliteStore,
    State,
    StoreError,
)
from pbxsession.sim import Simulator
from pbxsession.stores import ContextRecord, CookieSlot

WORKER = Path(__file__).with_name("store_worker.py")
PASSWORD = b"alice-pass"

# ------------------------------------------------------------------ fixtures


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("redis-server did not start")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisStore]:
    async with RedisStore(redis_url, prefix=f"test-{uuid.uuid4().hex[:8]}") as store:
        yield store


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SessionStore]:
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "sqlite":
        yield SqliteStore(tmp_path / "store.sqlite3")
    else:
        url = request.getfixturevalue("redis_url")
        async with RedisStore(url, prefix=f"test-{uuid.uuid4().hex[:8]}") as store:
            yield store


def sqlite_spec(path: Path) -> dict[str, Any]:
    return {"kind": "sqlite", "path": str(path)}


def redis_spec(store: RedisStore, url: str) -> dict[str, Any]:
    return {"kind": "redis", "url": url, "prefix": store.prefix}


Step = dict[str, Any]


async def run_worker(spec: dict[str, Any]) -> Any:
    done = await trio.run_process(
        [sys.executable, str(WORKER), json.dumps(spec)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


async def program(sim: Simulator, store: dict[str, Any], *steps: Step) -> list[dict[str, Any]]:
    """Log in in another process, one session per step; return each step's answer."""
    spec = {"store": store, "op": "steps", "url": sim.url, "ws_url": sim.ws_url}
    answers: list[dict[str, Any]] = await run_worker({**spec, "steps": list(steps)})
    return answers


def step(op: str, user: str, subid: str | None = None) -> Step:
    """``login`` (with the user's password), ``adopt`` (checkonly) or ``shared``."""
    return {"op": op, "user": user, "password": f"{user}-pass", "subid": subid}


@asynccontextmanager
async def session_on(
    sim: Simulator, store: SessionStore, **kwargs: Any
) -> AsyncIterator[pbxsession.Session]:
    kwargs.setdefault("ws_host", sim.ws_url)
    kwargs.setdefault("keep_session", True)
    async with pbxsession.open_session(sim.url, store=store, **kwargs) as session:
        yield session


def logged_in(sim: Simulator) -> dict[tuple[str, str], object]:
    return {(str(c["cookie"]), str(c["subid"])): c["login"] for c in sim.contexts() if c["login"]}


# ------------------------------------------------- the interface, every store

# The session keys its one cookie per host by "" until it logs in per user
# (the lead's Login object); the session-level tests below read it there.
COOKIE_USER = "alice"
# Names that would collide in a naively built key ("a:b" + ":cookie"...).
TRICKY_USERS = ["alice", "", "a:b", "a", "a%3Ab", "b:cookie", "é/ü 1", "a:b:cookie"]


async def test_cookie_compare_and_set(any_store: SessionStore) -> None:
    host = "http://127.0.0.1:1"
    assert await any_store.get_cookie(host, "alice") is None
    assert await any_store.set_cookie(host, "alice", "A", replacing=None) == "A"
    assert await any_store.set_cookie(host, "alice", "B", replacing=None) == "A"  # someone first
    assert await any_store.set_cookie(host, "alice", "B", replacing="A") == "B"  # a restart's
    assert await any_store.set_cookie(host, "alice", "C", replacing="A") == "B"  # stale: B stays
    assert await any_store.get_cookie(host, "alice") == "B"
    assert await any_store.get_cookie("http://127.0.0.1:2", "alice") is None


async def test_cookie_is_cleared_by_compare_and_set(any_store: SessionStore) -> None:
    host = "http://127.0.0.1:1"
    await any_store.set_cookie(host, "alice", "A", replacing=None)
    assert await any_store.set_cookie(host, "alice", None, replacing="X") == "A"  # stale: kept
    assert await any_store.get_cookie(host, "alice") == "A"
    assert await any_store.set_cookie(host, "alice", None, replacing="A") is None
    assert await any_store.get_cookie(host, "alice") is None
    assert await any_store.set_cookie(host, "alice", None, replacing="A") is None  # already
    # Cleared, the slot takes a fresh cookie whatever the request was sent with.
    assert await any_store.set_cookie(host, "alice", "B", replacing="A") == "B"


async def test_cookies_are_per_user(any_store: SessionStore) -> None:
    host = "http://127.0.0.1:1"
    for n, user in enumerate(TRICKY_USERS):
        assert await any_store.set_cookie(host, user, f"C{n}", replacing=None) == f"C{n}"
    # Every user kept their own: none replaced another's.
    for n, user in enumerate(TRICKY_USERS):
        assert await any_store.get_cookie(host, user) == f"C{n}", user
    assert await any_store.get_cookie(host, "bob") is None
    # One user's clear and compare-and-set touch nobody else's.
    assert await any_store.set_cookie(host, "a:b", None, replacing="C2") is None
    assert await any_store.set_cookie(host, "a", "new", replacing="C3") == "new"
    assert [await any_store.get_cookie(host, u) for u in TRICKY_USERS] == [
        "C0", "C1", None, "new", "C4", "C5", "C6", "C7"
    ]  # fmt: skip


async def test_cookie_slot(any_store: SessionStore) -> None:
    alice = CookieSlot(any_store, "http://127.0.0.1:1", "alice")
    also_alice = CookieSlot(any_store, "http://127.0.0.1:1", "alice")
    bob = CookieSlot(any_store, "http://127.0.0.1:1", "bob")
    assert await alice.get() is None
    assert await alice.put("A", replacing=None) == "A"
    assert await also_alice.get() == "A"  # the same user's sessions share it
    assert await bob.get() is None  # another user's never do
    assert await bob.put("B", replacing=None) == "B"
    assert await also_alice.put("A2", replacing="X") == "A"
    assert await also_alice.put(None, replacing="A") is None
    assert await alice.get() is None and await bob.get() == "B"
    assert await any_store.get_cookie("http://127.0.0.1:1", "bob") == "B"


async def test_contexts_by_user_and_subid(any_store: SessionStore) -> None:
    host = "http://127.0.0.1:1"
    before = time.time()
    await any_store.record_context(host, "alice", None, True)
    await any_store.record_context(host, "bob", "tab-1", True)
    await any_store.record_context(host, "alice", "tab-2", True)
    await any_store.record_context(host, "alice", "tab-2", False)
    await any_store.record_context(host, "bob", None, True)  # bob's default: not alice's
    await any_store.record_context(host, "a:b", None, True)
    await any_store.record_context("http://127.0.0.1:2", "bob", "other", True)
    record = await any_store.get_context(host, "alice", None)
    assert record == ContextRecord("alice", None, True, record.seen_at)
    assert record.seen_at >= before
    assert await any_store.get_context(host, "alice", "nope") is None
    assert await any_store.get_context(host, "carol", None) is None
    everything = await any_store.contexts(host)
    assert {k: v.logged_in for k, v in everything.items()} == {
        ("alice", None): True,
        ("bob", "tab-1"): True,
        ("alice", "tab-2"): False,
        ("bob", None): True,
        ("a:b", None): True,
    }
    assert all((r.user, r.subid) == k for k, r in everything.items())


async def test_latest_user(any_store: SessionStore) -> None:
    host = "http://127.0.0.1:1"
    assert await any_store.latest_user(host) is None
    await any_store.record_context(host, "alice", None, True)
    assert await any_store.latest_user(host) == "alice"
    await any_store.record_context(host, "bob", "tab-1", True)
    assert await any_store.latest_user(host) == "bob"
    await any_store.record_context(host, "alice", "tab-2", True)
    assert await any_store.latest_user(host) == "alice"
    await any_store.record_context(host, "alice", "tab-2", False)  # alice's default stands
    await any_store.record_context(host, "alice", None, True)
    assert await any_store.latest_user(host) == "alice"
    await any_store.record_context(host, "alice", None, False)  # alice is out everywhere
    assert await any_store.latest_user(host) == "bob"
    await any_store.record_context(host, "bob", "tab-1", False)
    assert await any_store.latest_user(host) is None
    assert await any_store.latest_user("http://127.0.0.1:2") is None


async def test_lock_excludes_and_is_released_on_cancellation(any_store: SessionStore) -> None:
    host = "http://127.0.0.1:1"
    inside = 0
    most = 0

    async def hold() -> None:
        nonlocal inside, most
        async with any_store.lock(host, "alice"):
            inside += 1
            most = max(most, inside)
            await trio.sleep(0.005)
            inside -= 1

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(hold)
    assert most == 1

    # A holder cancelled inside the block, and a waiter cancelled while waiting.
    with trio.move_on_after(0.05):
        async with any_store.lock(host, "alice"):
            await trio.sleep_forever()
    async with trio.open_nursery() as nursery:

        async def holder(task_status: trio.TaskStatus[None]) -> None:
            async with any_store.lock(host, "alice"):
                task_status.started()
                await trio.sleep_forever()

        await nursery.start(holder)
        with trio.move_on_after(0.05) as waiting:
            async with any_store.lock(host, "alice"):
                pytest.fail("two holders")  # pragma: no cover
        assert waiting.cancelled_caught
        nursery.cancel_scope.cancel()
    with trio.fail_after(2):
        async with any_store.lock(host, "alice"):
            pass


async def test_lock_is_per_user(any_store: SessionStore) -> None:
    host = "http://127.0.0.1:1"

    async def holder(task_status: trio.TaskStatus[None]) -> None:
        async with any_store.lock(host, "alice"):
            task_status.started()
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await nursery.start(holder)
        # Other users (and alice elsewhere) are not held up by alice's lock...
        with trio.fail_after(2):
            for user in ("bob", "", "a:b", "alice:"):
                async with any_store.lock(host, user):
                    pass
            async with any_store.lock("http://127.0.0.1:2", "alice"):
                pass
        # ...alice is.
        with trio.move_on_after(0.05) as waiting:
            async with any_store.lock(host, "alice"):
                pytest.fail("two holders")  # pragma: no cover
        assert waiting.cancelled_caught
        nursery.cancel_scope.cancel()


async def test_single_flight_relogin_of_20_sessions(
    sim: Simulator, any_store: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pbxsession")
    async with AsyncExitStack() as stack:
        sessions = [await stack.enter_async_context(session_on(sim, any_store)) for _ in range(20)]
        await sessions[0].login("alice", "alice-pass")
        async with trio.open_nursery() as nursery:
            for session in sessions[1:]:
                nursery.start_soon(session.login_shared, "alice", "alice-pass")
        assert len(logged_in(sim)) == 1  # all twenty share one context

        assert sim.expire() == 1  # the shared login is lost: every feed hears of it
        with trio.fail_after(5):
            for session in sessions:
                await session.wait_state(State.HOST_SET)

        before = sim.command_count("login")
        caplog.clear()
        async with trio.open_nursery() as nursery:
            for session in sessions:
                nursery.start_soon(session.login_shared, "alice", "alice-pass")
        # Twenty checkonly attempts, and one password login among them.
        assert sim.command_count("login") - before == 21
        sent = [r.getMessage() for r in caplog.records if r.getMessage().startswith("-> ")]
        assert sum("sessionPass=" in m for m in sent) == 1
        assert sum("checkonly" in m for m in sent if "login" in m) == 20
        assert all(s.state is State.LOGGED_IN and s.user is not None for s in sessions)
        assert list(logged_in(sim).values()) == ["alice"]


async def test_login_shared_refuses_a_bad_password_like_login(
    sim: Simulator, any_store: SessionStore
) -> None:
    async with session_on(sim, any_store, feed=None) as session:
        with pytest.raises(pbxsession.LoginError) as caught:
            await session.login_shared("alice", "wrong")
        assert caught.value.code == "badauth"
        assert session.state is State.HOST_SET
        with pytest.raises(pbxsession.InvalidArgumentError):
            await session.login_shared("alice", "")
    async with pbxsession.open_session(store=any_store) as unconfigured:
        with pytest.raises(pbxsession.InvalidStateError):
            await unconfigured.login_shared("alice", "alice-pass")


# ---------------------------------------------------- SQLite across processes


async def test_sqlite_two_processes_share_a_login(sim: Simulator, tmp_path: Path) -> None:
    spec = sqlite_spec(tmp_path / "store.sqlite3")
    [first] = await program(sim, spec, step("login", "alice"))
    assert first == {"login": "alice", "password_logins": 1}
    # Another process: checkonly adopts the login with no password at all.
    second, other_user = await program(sim, spec, step("adopt", "alice"), step("adopt", "bob"))
    assert second == {"login": "alice", "password_logins": 0}
    assert other_user == {"error": "notloggedin", "password_logins": 0}
    store = SqliteStore(spec["path"])
    cookie = await store.get_cookie(sim.url, COOKIE_USER)
    assert logged_in(sim) == {(cookie, ""): "alice"}
    record = await store.get_context(sim.url, "alice", None)
    assert record is not None and record.logged_in
    assert await store.latest_user(sim.url) == "alice"


async def test_sqlite_processes_relogin_single_flight(sim: Simulator, tmp_path: Path) -> None:
    spec = sqlite_spec(tmp_path / "store.sqlite3")
    await program(sim, spec, step("login", "alice"))
    assert sim.expire() == 1
    before = sim.command_count("login")
    answers: list[dict[str, Any]] = []

    async def one() -> None:
        answers.extend(await program(sim, spec, step("shared", "alice")))

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(one)
    assert [a["login"] for a in answers] == ["alice"] * 6
    assert sum(a["password_logins"] for a in answers) == 1
    assert sim.command_count("login") - before == 6 + 1
    assert list(logged_in(sim).values()) == ["alice"]


async def check_subids_isolate(sim: Simulator, spec: dict[str, Any], store: SessionStore) -> None:
    [alice] = await program(sim, spec, step("login", "alice", "tab-a"))
    assert alice["login"] == "alice"
    answers = await program(
        sim,
        spec,
        step("adopt", "alice", "tab-b"),  # same cookie, another sub-ID: nothing to adopt
        step("adopt", "alice"),  # nor in the default context
        step("login", "bob", "tab-b"),
        step("adopt", "alice", "tab-a"),  # the same sub-ID elsewhere is the same context
    )
    assert [a.get("error") or a["login"] for a in answers] == [
        "notloggedin",
        "notloggedin",
        "bob",
        "alice",
    ]
    alice_cookie = await store.get_cookie(sim.url, "alice")
    bob_cookie = await store.get_cookie(sim.url, "bob")  # a user of its own: a cookie of its own
    assert alice_cookie != bob_cookie
    assert logged_in(sim) == {(alice_cookie, "tab-a"): "alice", (bob_cookie, "tab-b"): "bob"}
    contexts = await store.contexts(sim.url)
    assert {k: v.logged_in for k, v in contexts.items()} == {
        ("alice", "tab-a"): True,
        ("bob", "tab-b"): True,
    }


async def test_sqlite_subids_isolate_across_processes(sim: Simulator, tmp_path: Path) -> None:
    spec = sqlite_spec(tmp_path / "store.sqlite3")
    await check_subids_isolate(sim, spec, SqliteStore(spec["path"]))


async def check_20_processes_lose_no_write(
    spec: dict[str, Any], store: SessionStore, tmp_path: Path
) -> None:
    counter = tmp_path / "counter"
    counter.write_text("0")
    host = "http://127.0.0.1:1"

    async with trio.open_nursery() as nursery:
        for i in range(20):
            job = {"store": spec, "op": "writes", "host": host, "user": "a:b"}
            nursery.start_soon(run_worker, {**job, "worker": i, "n": 5, "counter": str(counter)})
    contexts = await store.contexts(host)
    assert set(contexts) == {("a:b", f"w{i}-{j}") for i in range(20) for j in range(5)}
    assert counter.read_text() == "100"  # store.lock excluded every other process


async def test_sqlite_20_processes_lose_no_write(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    await check_20_processes_lose_no_write(sqlite_spec(path), SqliteStore(path), tmp_path)


async def test_redis_20_processes_lose_no_write(
    redis_store: RedisStore, redis_url: str, tmp_path: Path
) -> None:
    spec = redis_spec(redis_store, redis_url)
    await check_20_processes_lose_no_write(spec, redis_store, tmp_path)


async def test_20_tasks_lose_no_write(any_store: SessionStore, tmp_path: Path) -> None:
    host = "http://127.0.0.1:1"
    # SQLite: a store object per task, as separate programs would have.
    stores = [
        SqliteStore(tmp_path / "store.sqlite3") if isinstance(any_store, SqliteStore) else any_store
        for _ in range(20)
    ]
    kept: list[str | None] = []

    async def write(i: int) -> None:
        for j in range(10):
            await stores[i].record_context(host, ("bob", "a:b")[i % 2], f"t{i}-{j}", True)
        # Everyone's first cookie at once: one wins, and everyone adopts it.
        kept.append(await stores[i].set_cookie(host, "bob", f"C{i}", replacing=None))

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(write, i)
    assert len(await any_store.contexts(host)) == 200
    assert len(set(kept)) == 1
    assert kept[0] == await any_store.get_cookie(host, "bob")


# ------------------------------------------------------- SQLite file safety


@pytest.mark.parametrize("header", [b"", b"SQLite format 3\0"])
async def test_sqlite_corrupt_file_is_a_store_error(tmp_path: Path, header: bytes) -> None:
    path = tmp_path / "garbage.sqlite3"
    junk = header + os.urandom(4096)
    path.write_bytes(junk)
    with pytest.raises(StoreError, match="not a pbxsession session store") as caught:
        await SqliteStore(path).get_cookie("http://127.0.0.1:1", "alice")
    assert str(path) in str(caught.value)
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)
    assert path.read_bytes() == junk  # left as it was


async def test_sqlite_damaged_store_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    store = SqliteStore(path)
    for i in range(50):
        await store.record_context("http://127.0.0.1:1", "alice" * 40, f"s{i}", True)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(path.read_bytes())
    assert len(data) > 8192
    data[4096:] = os.urandom(len(data) - 4096)  # every page after the first
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError) as caught:
        await SqliteStore(path).contexts("http://127.0.0.1:1")
    assert str(path) in str(caught.value)


async def test_sqlite_foreign_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "foreign.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE cookie (x)")
        conn.execute("INSERT INTO cookie VALUES (1)")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="another program") as caught:
        await SqliteStore(path).record_context("http://127.0.0.1:1", "alice", None, True)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == before


async def test_sqlite_newer_schema_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    await SqliteStore(path).set_cookie("http://127.0.0.1:1", "alice", "A", replacing=None)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="schema version 99 by a newer") as caught:
        await SqliteStore(path).get_cookie("http://127.0.0.1:1", "alice")
    assert str(path) in str(caught.value)


async def test_sqlite_empty_database_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite3"
    sqlite3.connect(path).close()  # an empty file
    store = SqliteStore(path)
    assert await store.set_cookie("http://127.0.0.1:1", "alice", "A", replacing=None) == "A"
    assert await SqliteStore(path).get_cookie("http://127.0.0.1:1", "alice") == "A"


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
async def test_sqlite_files_are_private(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "a" / "b" / "c" / "store.sqlite3"
    old = os.umask(umask)
    try:
        store = SqliteStore(path)
        await store.set_cookie("http://127.0.0.1:1", "alice", "A", replacing=None)
        async with store.lock("http://127.0.0.1:1", "alice"):
            lock = store.lock_path("http://127.0.0.1:1", "alice")
            assert stat.S_IMODE(lock.stat().st_mode) == 0o600
        conn = sqlite3.connect(path)  # keep the -wal and -shm files in place
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            conn.execute("SELECT * FROM cookies").fetchall()
            for name in ("store.sqlite3", "store.sqlite3-wal", "store.sqlite3-shm"):
                if (path.parent / name).exists() or name == "store.sqlite3":
                    assert stat.S_IMODE((path.parent / name).stat().st_mode) == 0o600, name
        finally:
            conn.close()
        # Every folder the store made, nested ones too, and the lock folder.
        for folder in (tmp_path / "a", tmp_path / "a" / "b", path.parent, lock.parent):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        assert lock.parent.parent == path.parent
    finally:
        os.umask(old)


async def test_sqlite_leaves_existing_folders_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    await SqliteStore(shared / "store.sqlite3").get_cookie("h", "alice")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755


async def test_sqlite_lock_wait_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    holder, waiter = SqliteStore(path), SqliteStore(path, lock_timeout=0.1)
    async with holder.lock("h", "alice"):
        with pytest.raises(StoreError, match="lock") as caught:
            async with waiter.lock("h", "alice"):
                pytest.fail("two holders")  # pragma: no cover
        async with waiter.lock("h", "bob"):  # another user's lock is another file
            pass
    assert str(path) in str(caught.value)
    async with waiter.lock("h", "alice"):  # released
        pass


async def test_sqlite_store_holds_no_password(sim: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    store = SqliteStore(path)
    async with session_on(sim, store, feed=None) as first, session_on(sim, store) as second:
        await first.login("alice", "alice-pass")
        await second.login_shared("alice", "alice-pass", subid="tab-1")
        files = [p for p in tmp_path.rglob("*") if p.is_file()]  # lock files too
        assert {p.suffix for p in files} >= {".sqlite3", ".lock"}
        for file in files:
            assert PASSWORD not in await trio.Path(file).read_bytes(), file
    assert await store.get_cookie(sim.url, COOKIE_USER) is not None  # the scan saw real data


# ------------------------------------------------ SQLite schema 1 and Windows

_SCHEMA_1 = (
    "CREATE TABLE cookie ( host TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at REAL NOT NULL)",
    "CREATE TABLE context ("
    " host TEXT NOT NULL, subid TEXT NOT NULL, login TEXT, seen_at REAL NOT NULL,"
    " PRIMARY KEY (host, subid))",
)


def make_schema_1_store(path: Path) -> None:
    """A store as pbxsession 0.1 wrote it: one cookie per host."""
    conn = sqlite3.connect(path)
    try:
        for statement in _SCHEMA_1:
            conn.execute(statement)
        conn.execute("PRAGMA application_id = 0x50425853")
        conn.execute("PRAGMA user_version = 1")
        conn.execute("INSERT INTO cookie VALUES ('https://pbx', 'C1', 1.0)")
        conn.execute("INSERT INTO cookie VALUES ('https://nobody', 'C2', 1.0)")
        conn.executemany(
            "INSERT INTO context VALUES ('https://pbx', ?, ?, ?)",
            [("", "alice", 100.0), ("tab-1", "bob", 200.0), ("tab-2", None, 300.0)],
        )
        conn.commit()
    finally:
        conn.close()


async def test_sqlite_schema_1_store_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    make_schema_1_store(path)
    store = SqliteStore(path)
    # Each user seen logged in keeps the host's cookie: where their login lives.
    assert await store.get_cookie("https://pbx", "alice") == "C1"
    assert await store.get_cookie("https://pbx", "bob") == "C1"
    assert await store.get_cookie("https://pbx", "") is None
    assert await store.get_cookie("https://nobody", "") is None  # nobody to give it to
    contexts = await store.contexts("https://pbx")
    assert contexts == {
        ("alice", None): ContextRecord("alice", None, True, 100.0),
        ("bob", "tab-1"): ContextRecord("bob", "tab-1", True, 200.0),
    }
    assert await store.latest_user("https://pbx") == "bob"
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"cookies", "contexts"}
    finally:
        conn.close()
    # Opened again (another process, a restart): nothing migrates twice.
    assert await SqliteStore(path).get_cookie("https://pbx", "alice") == "C1"


async def test_sqlite_damaged_schema_1_store_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    make_schema_1_store(path)
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE context")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="schema version 1") as caught:
        await SqliteStore(path).get_cookie("https://pbx", "alice")
    assert str(path) in str(caught.value)
    assert path.read_bytes() == before


_NO_FCNTL = """
import sys
sys.modules["fcntl"] = None  # as on Windows: `import fcntl` raises ImportError
import warnings
warnings.simplefilter("ignore")  # filelock says it falls back to a soft lock
import trio
import pbxsession
from pbxsession import SqliteStore

async def main(path):
    store = SqliteStore(path)
    async with store.lock("https://pbx", "alice"):
        assert await store.set_cookie("https://pbx", "alice", "A", replacing=None) == "A"
    async with store.lock("https://pbx", "alice"):
        assert await store.get_cookie("https://pbx", "alice") == "A"
    assert sys.modules["fcntl"] is None
    print("ok")

trio.run(main, sys.argv[1])
"""


async def test_package_imports_and_locks_without_fcntl(tmp_path: Path) -> None:
    done = await trio.run_process(
        [sys.executable, "-c", _NO_FCNTL, str(tmp_path / "d" / "store.sqlite3")],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == "ok"


async def test_sqlite_works_where_posix_modes_do_not_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pbxsession.stores import _files

    def no_modes(*args: object) -> None:
        raise AssertionError("a POSIX mode call off POSIX")

    monkeypatch.setattr(_files, "POSIX", False)  # as on Windows
    monkeypatch.setattr(os, "chmod", no_modes)
    monkeypatch.setattr(os, "fchmod", no_modes)
    store = SqliteStore(tmp_path / "a" / "b" / "store.sqlite3")
    async with store.lock("https://pbx", "alice"):
        assert await store.set_cookie("https://pbx", "alice", "A", replacing=None) == "A"
    assert await store.get_cookie("https://pbx", "alice") == "A"


def test_default_store_path() -> None:
    path = pbxsession.default_store_path()
    assert path == platformdirs.user_state_path("pbxsession") / "sessions.sqlite3"


def test_bad_arguments() -> None:
    with pytest.raises(pbxsession.InvalidArgumentError):
        SqliteStore("x", busy_timeout=0)
    with pytest.raises(pbxsession.InvalidArgumentError):
        RedisStore("redis://127.0.0.1:1/0", ttl=-1)
    with pytest.raises(pbxsession.InvalidArgumentError):
        RedisStore("redis://127.0.0.1:1/0", prefix="")


# ------------------------------------------------------------------- Redis


async def test_redis_two_processes_share_a_login(
    sim: Simulator, redis_store: RedisStore, redis_url: str
) -> None:
    spec = redis_spec(redis_store, redis_url)
    assert await program(sim, spec, step("login", "alice")) == [
        {"login": "alice", "password_logins": 1}
    ]
    # Another process: login_shared adopts it with checkonly, no password sent.
    assert await program(sim, spec, step("shared", "alice")) == [
        {"login": "alice", "password_logins": 0}
    ]
    cookie = await redis_store.get_cookie(sim.url, COOKIE_USER)
    assert logged_in(sim) == {(cookie, ""): "alice"}


async def test_redis_subids_isolate_across_processes(
    sim: Simulator, redis_store: RedisStore, redis_url: str
) -> None:
    await check_subids_isolate(sim, redis_spec(redis_store, redis_url), redis_store)


async def test_redis_keys_are_namespaced_expiring_and_hold_no_password(
    sim: Simulator, redis_store: RedisStore, redis_url: str
) -> None:
    import redis

    async with session_on(sim, redis_store, feed=None) as session:
        await session.login_shared("alice", "alice-pass")
        await session.logout()
        await session.login("alice", "alice-pass", subid="tab-1")
    prefix = redis_store.prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = sorted(k.decode() for k in client.scan_iter(match=f"{prefix}:*"))
        assert keys == sorted(
            [redis_store.key(sim.url, "contexts"), redis_store.key(sim.url, "cookie", COOKIE_USER)]
        )
        assert redis_store.key(sim.url, "contexts") == f"{prefix}:{sim.url}:contexts"
        for key in keys:
            assert 0 < client.pttl(key) <= 24 * 3600 * 1000
        # Nothing anywhere in this Redis holds the password.
        for key in client.scan_iter():
            kind = client.type(key)
            if kind == b"string":
                values = [client.get(key)]
            elif kind == b"hash":
                values = [*client.hgetall(key).values()]
            else:  # pragma: no cover
                pytest.fail(f"unexpected key type {kind!r}")
            assert all(PASSWORD not in (v or b"") for v in values), key
    finally:
        client.close()


async def test_redis_lock_is_a_token_released_by_its_holder(
    redis_store: RedisStore, redis_url: str
) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    key = redis_store.key("h", "lock", "alice")
    assert key == f"{redis_store.prefix}:h:alice:lock"
    try:
        async with redis_store.lock("h", "alice"):
            token = client.get(key)
            assert token is not None and len(token) == 32
            assert 0 < client.pttl(key) <= 30_000
            client.set(key, b"someone-else")  # its lock expired and was taken over
        assert client.get(key) == b"someone-else"  # not deleted by the former holder
        client.delete(key)
        async with redis_store.lock("h", "alice"):
            pass
        assert client.get(key) is None
    finally:
        client.close()
    # A bounded wait: another holder's lock makes a waiter fail in time.
    other = RedisStore(redis_url, prefix=redis_store.prefix, lock_timeout=0.1)
    async with other, redis_store.lock("h", "alice"):
        with pytest.raises(StoreError, match="held elsewhere"):
            async with other.lock("h", "alice"):
                pytest.fail("two holders")  # pragma: no cover
        async with other.lock("h", "bob"):
            pass


async def test_redis_user_names_never_collide(redis_store: RedisStore, redis_url: str) -> None:
    import redis

    host = "http://127.0.0.1:1"
    for n, user in enumerate(TRICKY_USERS):
        await redis_store.set_cookie(host, user, f"C{n}", replacing=None)
        await redis_store.record_context(host, user, "tab-1", True)
    keys = [redis_store.key(host, "cookie", u) for u in TRICKY_USERS]
    assert len(set(keys)) == len(TRICKY_USERS)
    # No escaped name holds the separator, so a key splits back into one user.
    assert all(k.removeprefix(f"{redis_store.prefix}:{host}:").count(":") == 1 for k in keys)
    client = redis.Redis.from_url(redis_url)
    try:
        cookies = sorted(
            k.decode()
            for k in client.scan_iter(match=f"{redis_store.prefix}:*")
            if k.endswith(b":cookie")
        )
        assert cookies == sorted(keys)
    finally:
        client.close()
    contexts = await redis_store.contexts(host)
    assert set(contexts) == {(u, "tab-1") for u in TRICKY_USERS}


async def test_redis_unreachable_is_a_store_error_without_the_password() -> None:
    port = _free_port()
    async with RedisStore(f"redis://:s3cret@127.0.0.1:{port}/0", timeout=1) as store:
        assert "s3cret" not in repr(store)
        with pytest.raises(StoreError) as caught:
            await store.get_cookie("http://127.0.0.1:1", "alice")
    assert "s3cret" not in str(caught.value)
    assert f"127.0.0.1:{port}" in str(caught.value)


async def test_memory_store_forgets_contexts_past_their_ttl(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1_000_000.0]
    monkeypatch.setattr("pbxsession.stores._memory.time.time", lambda: now[0])
    store = MemoryStore(context_ttl=100)
    await store.record_context("https://pbx", "alice", "old", True)
    now[0] += 50
    await store.record_context("https://pbx", "bob", "recent", True)
    now[0] += 60  # "old" is 110 s old, "recent" 60 s
    await store.record_context("https://pbx", "carol", None, True)
    assert set(await store.contexts("https://pbx")) == {("bob", "recent"), ("carol", None)}
    with pytest.raises(InvalidArgumentError):
        MemoryStore(context_ttl=0)


async def test_sqlite_store_forgets_contexts_past_their_ttl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_000_000.0]
    monkeypatch.setattr("pbxsession.stores._sqlite.time.time", lambda: now[0])
    store = SqliteStore(tmp_path / "s.sqlite3", context_ttl=100)
    await store.record_context("https://pbx", "alice", "old", True)
    now[0] += 50
    await store.record_context("https://pbx", "bob", "recent", True)
    now[0] += 60
    await store.record_context("https://pbx", "carol", None, True)
    assert set(await store.contexts("https://pbx")) == {("bob", "recent"), ("carol", None)}
    assert await store.latest_user("https://pbx") == "carol"
    with pytest.raises(InvalidArgumentError):
        SqliteStore(tmp_path / "t.sqlite3", context_ttl=-1)


async def test_redis_store_forgets_contexts_past_their_ttl(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_000_000.0]
    monkeypatch.setattr("pbxsession.stores._redis.time.time", lambda: now[0])
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    async with RedisStore(redis_url, prefix=prefix, context_ttl=100) as store:
        await store.record_context("https://pbx", "alice", "old", True)
        now[0] += 50
        await store.record_context("https://pbx", "bob", "recent", True)
        now[0] += 60
        await store.record_context("https://pbx", "carol", None, True)
        assert set(await store.contexts("https://pbx")) == {("bob", "recent"), ("carol", None)}
        assert await store.latest_user("https://pbx") == "carol"
    with pytest.raises(InvalidArgumentError):
        RedisStore(redis_url, context_ttl=0)
