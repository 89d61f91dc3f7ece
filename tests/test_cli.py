"""The command line, driven as a subprocess against the simulator over loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from pbxsession.sim import Simulator

PASSWORD = "admin-pass"


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
