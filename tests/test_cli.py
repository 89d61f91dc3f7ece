"""The command line, driven as a subprocess against the simulator over loopback."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import trio
import trio_websocket

from pbxsession.sim import Simulator, open_simulator

PASSWORD = "admin-pass"
ROOT = Path(__file__).resolve().parent.parent


def env_for(state_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBXSESSION_")}
    env["PBXSESSION_STATE_DIR"] = str(state_dir)
    env["COLUMNS"] = "200"  # rich: keep table rows on one line
    env.update(extra)
    return env


async def run_cli(
    *args: str, env: dict[str, str], stdin: bytes = b"", timeout: float = 20
) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(timeout):
        return await trio.run_process(
            [sys.executable, "-m", "pbxsession.cli", *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
        )


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data


def one_line_error(result: subprocess.CompletedProcess[bytes]) -> str:
    err = result.stderr.decode()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("pbxsession: ")
    return lines[0]


async def login(sim: Simulator, state_dir: Path, user: str = "admin", pw: str = PASSWORD) -> None:
    result = await run_cli(
        "login", "--host", sim.url, "--ws-host", sim.ws_url, "--user", user,
        env=env_for(state_dir, PBXSESSION_PASSWORD=pw),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()


async def test_demo_runs_a_whole_lifecycle() -> None:
    started = trio.current_time()
    result = await run_cli("demo", "--seconds", "1", env=env_for(Path("/nonexistent")))
    elapsed = trio.current_time() - started
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    for transition in (
        "unconfigured → host_set",
        "host_set → logged_in",
        "logged_in → company_selected",
        "company_selected → exiting",
        "exiting → closed",
    ):
        assert transition in out
    assert "feed #" in out
    # A forced outage, and the gap it leaves (more events than the PBX keeps).
    assert "forced outage" in out
    assert "FeedGap(reason='server'" in out
    assert "the feed is back" in out
    for step in ("chat_offline", "history_save", "rtc_release", "logout"):
        assert step in out
    assert "admin-pass" not in out
    assert elapsed < 10


async def test_login_whoami_feed_exit_across_invocations(sim: Simulator, tmp_path: Path) -> None:
    await login(sim, tmp_path)
    env = env_for(tmp_path)

    who = await run_cli("--json", "whoami", env=env)
    assert who.returncode == 0, who.stderr.decode()
    data = json.loads(who.stdout)
    assert data["login"] == "admin"
    assert data["state"] == "logged_in"

    chosen = await run_cli("--json", "select-company", "9", env=env)
    assert chosen.returncode == 0
    assert json.loads(chosen.stdout)["company"] == "9"

    # The feed, until Ctrl-C.
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "pbxsession.cli", "--json", "feed"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        with trio.fail_after(15):
            buffer = b""
            while not any(c["feeds"] for c in sim.contexts() if c["login"] == "admin"):
                await trio.sleep(0.05)
            sim.emit("presence", {"user": "alice", "show": "away"}, login="admin")
            while b"\n" not in buffer:
                buffer += await process.stdout.receive_some()
            event = json.loads(buffer.split(b"\n", 1)[0])
            assert event["type"] == "event"
            assert event["kind"] == "presence"
            assert event["data"] == {"user": "alice", "show": "away"}
            interrupted_at = trio.current_time()
            process.send_signal(signal.SIGINT)
            status = await process.wait()
            assert trio.current_time() - interrupted_at < 5
        err = await read_all(process.stderr)
        assert status == 130
        assert b"Traceback" not in err
    finally:
        process.kill()
        await process.wait()

    # The login survived the feed command; exit with logout ends it.
    done = await run_cli("--json", "exit", "--logout", env=env)
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)
    assert report["steps"]["logout"]["outcome"] == "ok"
    assert report["steps"]["chat_offline"]["outcome"] == "ok"
    assert sim.user_view("admin")["presence"]["show"] == "offline"
    after = await run_cli("whoami", env=env)
    assert after.returncode == 5
    assert "not logged in" in one_line_error(after)


async def test_feed_prints_an_event_that_comes_with_the_feeds_first_frame(
    sim: Simulator, tmp_path: Path
) -> None:
    # A feed server that sends ``ready`` and an event in one burst: the event
    # reaches the command as the feed starts, before its login check returns.
    # The command must be listening by then (trio runs the tasks it wakes in
    # either order, so a few rounds catch a command that subscribes late).
    async def ready_and_an_event(request: trio_websocket.WebSocketRequest) -> None:
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            ws = await request.accept()
            await ws.get_message()  # the start frame
            await ws.send_message(json.dumps({"type": "ready", "seq": 7, "resumed": False}))
            event = {"type": "event", "seq": 8, "kind": "presence", "data": {"user": "bob"}}
            await ws.send_message(json.dumps(event))
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(trio_websocket.serve_websocket, ready_and_an_event, "127.0.0.1", 0,
                    ssl_context=None)
        )  # fmt: skip
        result = await run_cli(
            "login", "--host", sim.url, "--ws-host", f"ws://127.0.0.1:{server.port}",
            "--user", "admin", env=env_for(tmp_path, PBXSESSION_PASSWORD=PASSWORD),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr.decode()
        for _ in range(4):
            first = await first_feed_line(env_for(tmp_path))
            assert first == {"type": "event", "seq": 8, "kind": "presence", "data": {"user": "bob"}}
        nursery.cancel_scope.cancel()


async def first_feed_line(env: dict[str, str]) -> object:
    """The first line ``pbxsession --json feed`` prints; then Ctrl-C."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "pbxsession.cli", "--json", "feed"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert process.stdout is not None
    try:
        with trio.fail_after(15):
            buffer = b""
            while b"\n" not in buffer:
                buffer += await process.stdout.receive_some()
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 130
        return json.loads(buffer.split(b"\n", 1)[0])
    finally:
        process.kill()
        await process.wait()
        await process.stdout.aclose()


async def test_password_from_stdin_and_nowhere_on_disk(sim: Simulator, tmp_path: Path) -> None:
    result = await run_cli(
        "login", "--host", sim.url, "--ws-host", sim.ws_url, "--user", "alice",
        "--password-stdin", env=env_for(tmp_path), stdin=b"alice-pass\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert b"alice-pass" not in result.stdout + result.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert b"alice-pass" not in path.read_bytes()
        assert path.stat().st_mode & 0o077 == 0, path


async def test_no_password_source_is_bad_input(sim: Simulator, tmp_path: Path) -> None:
    result = await run_cli(
        "login", "--host", sim.url, "--user", "alice", env=env_for(tmp_path), stdin=b""
    )
    assert result.returncode == 2
    assert "PBXSESSION_PASSWORD" in one_line_error(result)


@pytest.mark.parametrize(
    ("case", "status", "words"),
    [
        ("bad password", 3, "badauth"),
        ("bad host", 2, "bad input"),
        ("unreachable", 4, "unreachable"),
        ("not logged in", 5, "not logged in"),
        ("unknown company", 2, "badcompany"),
        ("not allowed", 1, "norole"),
        ("corrupt store", 6, "sessions.sqlite3"),
        ("usage", 2, ""),
    ],
)
async def test_error_paths(
    sim: Simulator, tmp_path: Path, case: str, status: int, words: str
) -> None:
    env = env_for(tmp_path, PBXSESSION_PASSWORD="wrong")
    if case == "bad password":
        result = await run_cli("login", "--host", sim.url, "--user", "alice", env=env)
    elif case == "bad host":
        result = await run_cli("login", "--host", "ftp://x", "--user", "alice", env=env)
    elif case == "unreachable":
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        port = listener.socket.getsockname()[1]
        await listener.aclose()
        url = f"http://127.0.0.1:{port}"
        result = await run_cli("login", "--host", url, "--user", "alice", env=env)
    elif case == "not logged in":
        result = await run_cli("whoami", env=env)
    elif case == "unknown company":
        await login(sim, tmp_path)
        result = await run_cli("select-company", "42", env=env)
    elif case == "not allowed":
        await login(sim, tmp_path, user="alice", pw="alice-pass")
        result = await run_cli("select-company", "7", env=env)
    elif case == "corrupt store":
        await login(sim, tmp_path)
        store_file = tmp_path / "sessions.sqlite3"
        store_file.write_bytes(b"this is not a database" * 100)
        result = await run_cli("whoami", env=env)
    else:
        result = await run_cli("login", "--no-such-flag", env=env)
    assert result.returncode == status
    if case == "usage":
        assert b"Traceback" not in result.stderr
    else:
        assert words in one_line_error(result)


@pytest.mark.parametrize("command", ["login", "exit"])
async def test_ctrl_c_during_a_slow_call_exits_cleanly(
    sim: Simulator, tmp_path: Path, command: str
) -> None:
    if command == "exit":
        await login(sim, tmp_path)
        args = ["exit", "--logout"]
        cmd = "status"
    else:
        args = ["login", "--host", sim.url, "--user", "admin"]
        cmd = "login"
    sim.set_delay(30, cmd)
    before = sim.command_count(cmd)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "pbxsession.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env_for(tmp_path, PBXSESSION_PASSWORD=PASSWORD),
    )
    assert process.stderr is not None
    try:
        with trio.fail_after(20):
            while sim.command_count(cmd) == before:
                await trio.sleep(0.05)
            interrupted_at = trio.current_time()
            process.send_signal(signal.SIGINT)
            status = await process.wait()
            elapsed = trio.current_time() - interrupted_at
        err = await read_all(process.stderr)
    finally:
        process.kill()
        await process.wait()
    assert status == 130, (status, err.decode())
    assert b"Traceback" not in err
    assert b"interrupted" in err
    assert elapsed < 15  # the exit is bounded (10 s) even when interrupted


SPINNER = "Logging in…"


@pytest.mark.parametrize("terminal", [True, False])
async def test_spinner_on_a_terminal_not_when_piped(
    sim: Simulator, tmp_path: Path, terminal: bool
) -> None:
    import pty

    sim.set_delay(1.0, "login")
    args = ["login", "--host", sim.url, "--ws-host", sim.ws_url, "--user", "alice"]
    env = env_for(tmp_path, PBXSESSION_PASSWORD="alice-pass", TERM="xterm")
    if not terminal:
        result = await run_cli(*args, env=env)
        assert result.returncode == 0
        assert SPINNER not in (result.stdout + result.stderr).decode()
        return
    controller, terminal_fd = pty.openpty()
    try:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "pbxsession.cli", *args],
            stdin=terminal_fd,
            stdout=terminal_fd,
            stderr=terminal_fd,
            env=env,
        )
        os.close(terminal_fd)
        with trio.fail_after(20):
            status = await process.wait()
        seen = b""
        os.set_blocking(controller, False)
        while True:
            try:
                chunk = os.read(controller, 65536)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(controller)
    assert status == 0
    assert SPINNER in seen.decode(errors="replace")


async def test_sim_command_serves_until_ctrl_c(tmp_path: Path) -> None:
    import httpx

    ports = []
    for _ in range(2):
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        ports.append(listener.socket.getsockname()[1])
        await listener.aclose()
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "pbxsession.cli", "sim", "--port", str(ports[0]),
         "--feed-port", str(ports[1])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env_for(tmp_path),
    )  # fmt: skip
    assert process.stderr is not None
    try:
        with trio.fail_after(15):
            async with httpx.AsyncClient(trust_env=False) as client:
                while True:
                    try:
                        reply = await client.post(
                            f"http://127.0.0.1:{ports[0]}/api/api.whtm",
                            data={
                                "cmd": "login",
                                "sessionUser": "alice",
                                "sessionPass": "alice-pass",
                            },
                        )
                        break
                    except httpx.TransportError:
                        await trio.sleep(0.05)  # not listening yet
            assert 'result="success"' in reply.text
            process.send_signal(signal.SIGINT)
            status = await process.wait()
        err = await read_all(process.stderr)
    finally:
        process.kill()
        await process.wait()
    assert status == 0
    assert b"Traceback" not in err


# ------------------------------------------------------------ scripts can trust it


def json_error(result: subprocess.CompletedProcess[bytes]) -> dict[str, object]:
    err = result.stderr.decode()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    record = json.loads(lines[0])
    assert set(record) == {"error", "kind", "exit_status"}
    assert record["exit_status"] == result.returncode
    return record


@pytest.mark.parametrize("where", ["before", "after"])
async def test_json_before_or_after_the_command(sim: Simulator, tmp_path: Path, where: str) -> None:
    await login(sim, tmp_path)
    args = ["--json", "whoami"] if where == "before" else ["whoami", "--json"]
    result = await run_cli(*args, env=env_for(tmp_path))
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["login"] == "admin"


@pytest.mark.parametrize(
    ("args", "status", "kind"),
    [
        (["--json", "whoami"], 5, "not_logged_in"),
        (["whoami", "--json"], 5, "not_logged_in"),
        (["login", "--json", "--host", "ftp://x", "--user", "alice"], 2, "bad_input"),
        (["--json", "login", "--no-such-flag"], 2, "usage"),
        (["select-company", "--json"], 2, "usage"),
    ],
)
async def test_json_errors_are_json_on_stderr(
    tmp_path: Path, args: list[str], status: int, kind: str
) -> None:
    result = await run_cli(*args, env=env_for(tmp_path, PBXSESSION_PASSWORD="x"))
    assert result.returncode == status
    assert result.stdout == b""
    record = json_error(result)
    assert record["kind"] == kind
    assert isinstance(record["error"], str) and record["error"]


async def test_timeout_reports_a_pbx_that_never_answers(tmp_path: Path) -> None:
    async def hold(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()  # accepts, reads nothing, answers nothing

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, hold, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        started = trio.current_time()
        result = await run_cli(
            "--json", "login", "--host", f"http://127.0.0.1:{port}", "--user", "alice",
            "--timeout", "1", env=env_for(tmp_path, PBXSESSION_PASSWORD="x"),
        )  # fmt: skip
        elapsed = trio.current_time() - started
        nursery.cancel_scope.cancel()
    assert result.returncode == 4
    record = json_error(result)
    assert record["kind"] == "timeout"
    assert elapsed < 8  # 1 s asked, plus the interpreter's start-up


async def test_the_default_timeout_is_15_seconds(tmp_path: Path) -> None:
    from pbxsession._cli.commands import DEFAULT_TIMEOUT

    assert DEFAULT_TIMEOUT == 15
    result = await run_cli("whoami", "--help", env=env_for(tmp_path))
    assert result.returncode == 0
    words = " ".join(result.stdout.decode().split())
    assert "--timeout SECONDS" in words
    assert "(default 15)" in words


EVENT_LINE = re.compile(r"feed #\d+ \S+ (\{.*\})$")


@pytest.mark.parametrize("as_json", [True, False])
async def test_piped_output_is_never_wrapped(tmp_path: Path, as_json: bool) -> None:
    env = env_for(tmp_path, COLUMNS="40")  # a narrow terminal size must not matter in a pipe
    args = ["--json", "demo", "--seconds", "1"] if as_json else ["demo", "--seconds", "1"]
    result = await run_cli(*args, env=env)
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    events = 0
    for line in lines:
        if as_json:
            record = json.loads(line)  # every line is one whole JSON object
            events += record["type"] == "event"
        elif match := EVENT_LINE.search(line):
            json.loads(match.group(1))
            events += 1
    assert events > 0
    if not as_json:
        assert "exit(logout=True)" in result.stdout.decode()


async def test_the_exit_table_says_what_was_asked(sim: Simulator, tmp_path: Path) -> None:
    await login(sim, tmp_path)
    result = await run_cli("exit", env=env_for(tmp_path))
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert "exit(logout=False)" in out
    assert "exit(logout=True)" not in out
    # Without --logout the login survives.
    assert (await run_cli("whoami", env=env_for(tmp_path))).returncode == 0


async def test_messages_name_the_command_line_options(tmp_path: Path) -> None:
    result = await run_cli(
        "login", "--host", "http://pbx.example.com", "--user", "alice",
        env=env_for(tmp_path, PBXSESSION_PASSWORD="x"),
    )  # fmt: skip
    assert result.returncode == 2
    line = one_line_error(result)
    assert "--insecure" in line
    assert "allow_insecure" not in line


async def test_session_lost_is_said_once(sim: Simulator, tmp_path: Path) -> None:
    await login(sim, tmp_path)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "pbxsession.cli", "feed"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env_for(tmp_path),
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        with trio.fail_after(15):
            while not any(c["feeds"] for c in sim.contexts() if c["login"] == "admin"):
                await trio.sleep(0.05)
            sim.expire("admin")
            async with trio.open_nursery() as nursery:
                out: list[bytes] = []

                async def collect(stream: trio.abc.ReceiveStream) -> None:
                    out.append(await read_all(stream))

                nursery.start_soon(collect, process.stdout)
                nursery.start_soon(collect, process.stderr)
            status = await process.wait()
    finally:
        process.kill()
        await process.wait()
    seen = b"".join(out).decode()
    assert status == 5, seen
    assert "Traceback" not in seen
    assert seen.lower().count("session lost") == 1, seen


async def test_sim_help_names_pbxsession_sim(tmp_path: Path) -> None:
    result = await run_cli("sim", "--help", env=env_for(tmp_path))
    assert result.returncode == 0
    assert "pbxsession sim" in result.stdout.decode()
    assert "pbxsession.sim" not in result.stdout.decode()


# ------------------------------------------------------------ how it is started


async def run_python(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(20):
        return await trio.run_process(
            [sys.executable, *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
        )


async def test_python_m_pbxsession_works_like_the_command(tmp_path: Path) -> None:
    import pbxsession

    version = await run_python("-m", "pbxsession", "--version", env=env_for(tmp_path))
    assert version.returncode == 0, version.stderr.decode()
    assert version.stdout.decode().strip() == f"pbxsession {pbxsession.__version__}"
    who = await run_python("-m", "pbxsession", "--json", "whoami", env=env_for(tmp_path))
    assert who.returncode == 5
    assert json_error(who)["kind"] == "not_logged_in"


@pytest.mark.parametrize("missing", ["click", "rich"])
@pytest.mark.parametrize("how", ["module", "entry point"])
async def test_without_the_cli_extra_one_line_names_it(
    tmp_path: Path, missing: str, how: str
) -> None:
    # The package made unimportable, as it is when the extra is not installed.
    start = (
        "import runpy; runpy.run_module('pbxsession', run_name='__main__')"
        if how == "module"
        else "import sys; from pbxsession.cli import main; sys.exit(main())"
    )
    code = f"import sys; sys.modules[{missing!r}] = None; {start}"
    result = await run_python("-c", code, "whoami", env=env_for(tmp_path))
    assert result.returncode == 2
    err = result.stderr.decode()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert "pip install 'pbxsession[cli]'" in err


def test_feed_items_are_described_for_people_and_scripts() -> None:
    from pbxsession import FeedDown, FeedUp
    from pbxsession._cli.output import describe

    data, text = describe(FeedDown(errno=92, reason="connection closed [x]"))
    assert data == {"type": "down", "errno": 92, "reason": "connection closed [x]"}
    assert "92" in text and "\\[x]" in text  # user text never read as markup
    data, text = describe(FeedUp(resumed=True, downtime=1.5))
    assert data == {"type": "up", "resumed": True, "downtime": 1.5}
    assert "resumed" in text


def test_the_documented_help_texts_are_fresh() -> None:
    from pbxsession._cli import helptext

    committed = (ROOT / helptext.DEFAULT_PATH).read_text(encoding="utf-8")
    assert committed == helptext.help_markdown(), "stale: run python -m pbxsession._cli.helptext"
    assert "### `pbxsession login --help`" in committed
    assert "### `pbxsession sim --help`" in committed


def test_the_help_generator_checks_and_writes(tmp_path: Path) -> None:
    from pbxsession._cli import helptext

    path = tmp_path / "help.md"
    assert helptext.main([str(path), "--check"]) == 1
    assert helptext.main([str(path)]) == 0
    assert helptext.main([str(path), "--check"]) == 0
    path.write_text("edited by hand\n", encoding="utf-8")
    assert helptext.main([str(path), "--check"]) == 1


def test_the_documented_kinds_are_the_ones_used() -> None:
    from pbxsession._cli.errors import KINDS

    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for status, kind in KINDS.items():
        if status:
            assert f"| {status} | `{kind}`" in page


async def test_whoami_after_select_company_shows_company_selected(
    sim: Simulator, tmp_path: Path
) -> None:
    await login(sim, tmp_path)
    env = env_for(tmp_path)
    chosen = await run_cli("--json", "select-company", "8", env=env)
    assert chosen.returncode == 0, chosen.stderr.decode()
    assert json.loads(chosen.stdout)["state"] == "company_selected"
    who = await run_cli("--json", "whoami", env=env)
    assert who.returncode == 0, who.stderr.decode()
    assert json.loads(who.stdout)["company"] == "8"
    assert json.loads(who.stdout)["state"] == "company_selected"


async def test_nested_state_dirs_are_private_under_umask_000(
    sim: Simulator, tmp_path: Path
) -> None:
    # Fails on main: Path.mkdir(mode=0o700) leaves the parents at 0777 under umask 000.
    state = tmp_path / "a" / "b" / "state"
    old = os.umask(0)
    try:
        await login(sim, state)
    finally:
        os.umask(old)
    for folder in (tmp_path / "a", tmp_path / "a" / "b", state):
        assert folder.stat().st_mode & 0o777 == 0o700, folder


def without_env_trust(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}


async def test_cacert_against_a_tls_simulator_is_kept_for_later_commands(tmp_path: Path) -> None:
    async with open_simulator(tls=True) as sim:
        assert sim.ca_path is not None
        login_args = ("login", "--host", sim.url, "--user", "admin")
        env = without_env_trust(env_for(tmp_path, PBXSESSION_PASSWORD=PASSWORD))

        refused = await run_cli(*login_args, env=env)
        assert refused.returncode == 4
        assert one_line_error(refused) == (
            "pbxsession: TLS: certificate verify failed: unable to get local issuer "
            f"certificate ({sim.url}); trust its CA with --cacert"
        )

        done = await run_cli(*login_args, "--cacert", sim.ca_path, env=env)
        assert done.returncode == 0, done.stderr.decode()
        # whoami adopts the login with the CA it was made with: no --cacert again
        who = await run_cli("--json", "whoami", env=without_env_trust(env_for(tmp_path)))
        assert who.returncode == 0, who.stderr.decode()
        assert json.loads(who.stdout)["login"] == "admin"
        out = await run_cli("--json", "logout", env=without_env_trust(env_for(tmp_path)))
        assert out.returncode == 0, out.stderr.decode()
        assert not [c for c in sim.contexts() if c["login"] == "admin"]

        # PBXSESSION_CACERT is --cacert from the environment
        by_env = env | {"PBXSESSION_CACERT": sim.ca_path}
        again = await run_cli(*login_args, env=by_env)
        assert again.returncode == 0, again.stderr.decode()


async def test_cacert_must_exist(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-ca.pem")
    result = await run_cli(
        "login", "--host", "https://127.0.0.1:1", "--user", "admin", "--cacert", missing,
        env=env_for(tmp_path, PBXSESSION_PASSWORD=PASSWORD),
    )  # fmt: skip
    assert result.returncode == 2
    assert "--cacert" in result.stderr.decode()
