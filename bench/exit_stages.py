"""Benchmark: the staged exit against the same four steps run one after another.

Run it as ``.venv/bin/python bench/exit_stages.py [--reps N] [--delay S]``.

It starts the simulator in a separate process on two free loopback ports
(``python -m pbxsession.sim --port P --feed-port Q``), and for each
repetition, interleaved:

* **staged**: a session logs in as ``alice``, goes online, takes a WebRTC
  password (``rtc_reset(getnew=True)``); then the simulator is told to delay
  every command by ``--delay`` s (``POST /_sim/delay``) and
  ``session.exit(logout=True)`` is timed.
* **sequential**: the same set-up, then the same four commands the exit's
  steps send (``status show=offline``, ``save type=history``, ``rtcreset
  pass=...``, ``logout``) are sent one after another through the library's
  own command transport (the one ``exit`` uses: same httpx client type, same
  server, same retry policy), and timed.

It prints the medians and their ratio (the target is at most 0.55: stage 1
runs its three steps at once, so the exit takes about two delays, not four).
Everything goes to 127.0.0.1; the run is bounded (``--reps`` at most 50, a
two-minute ceiling) and stops the simulator process when done.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import trio

import pbxsession
from pbxsession import _wire as wire
from pbxsession._transport import CommandTransport, new_http_client

HOST = "127.0.0.1"
CEILING = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


async def control(url: str, path: str, body: dict[str, object]) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        reply = await client.post(url + path, content=json.dumps(body))
        reply.raise_for_status()


async def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        with trio.fail_after(15):
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the simulator exited with {process.returncode}")
                try:
                    if (await client.get(url + "/_sim/stats")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.05)


async def set_up(session: pbxsession.Session, url: str, store: pbxsession.MemoryStore) -> None:
    """Log in, go online and hold a WebRTC password, so every exit step has work."""
    await session.login("alice", "alice-pass")
    cookie = await store.get_cookie(url)
    assert cookie is not None
    async with httpx.AsyncClient(trust_env=False) as client:
        await client.post(
            url + wire.COMMAND_PATH,
            data={"cmd": "status", "show": "online"},
            headers={"Cookie": wire.cookie_header(cookie)},
        )
    await session.rtc_reset(getnew=True)


async def staged(url: str, ws_url: str, delay: float) -> float:
    store = pbxsession.MemoryStore()
    async with pbxsession.open_session(url, ws_host=ws_url, store=store) as session:
        await set_up(session, url, store)
        await control(url, "/_sim/delay", {"seconds": delay, "cmd": None})
        try:
            start = time.perf_counter()
            report = await session.exit(logout=True)
            elapsed = time.perf_counter() - start
        finally:
            await control(url, "/_sim/delay", {"seconds": 0, "cmd": None})
    outcomes = {name: r.outcome.value for name, r in report.steps.items()}
    if set(outcomes.values()) != {"ok"}:
        raise RuntimeError(f"staged exit did not run every step: {outcomes}")
    return elapsed


async def sequential(url: str, ws_url: str, delay: float) -> float:
    store = pbxsession.MemoryStore()
    async with pbxsession.open_session(
        url, ws_host=ws_url, store=store, keep_session=True
    ) as session:
        await set_up(session, url, store)
        held = session._rtc_password
        history = list(session._history)
        assert held is not None
        session._rtc_password = None  # the benchmark releases it itself, below
        commands = [
            wire.status_command("offline"),
            wire.save_history_command(history),
            wire.rtc_reset_command(release=held),
            wire.logout_command(),
        ]
        async with new_http_client(timeout=10.0, verify=True) as client:
            transport = CommandTransport(client, store)
            await control(url, "/_sim/delay", {"seconds": delay, "cmd": None})
            try:
                start = time.perf_counter()
                for command in commands:
                    await transport.send(url, command, None)
                elapsed = time.perf_counter() - start
            finally:
                await control(url, "/_sim/delay", {"seconds": 0, "cmd": None})
    return elapsed


def start_simulator(port: int, feed_port: int) -> subprocess.Popen[bytes]:
    """The simulator in a process of its own, on loopback ports."""
    sim_cmd = [
        sys.executable,
        "-m",
        "pbxsession.sim",
        "--host",
        HOST,
        "--port",
        str(port),
        "--feed-port",
        str(feed_port),
    ]
    print("simulator:", shlex.join(sim_cmd))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    return subprocess.Popen(sim_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


async def run(
    process: subprocess.Popen[bytes], url: str, ws_url: str, reps: int, delay: float
) -> int:
    print(f"delay per command: {delay * 1000:.0f} ms (POST /_sim/delay), repetitions: {reps}")
    times: dict[str, list[float]] = {"staged": [], "sequential": []}
    with trio.fail_after(CEILING):
        await wait_ready(url, process)
        for rep in range(reps):
            # Interleave, alternating which goes first.
            order = ["staged", "sequential"] if rep % 2 == 0 else ["sequential", "staged"]
            for name in order:
                runner = staged if name == "staged" else sequential
                times[name].append(await runner(url, ws_url, delay))

    print()
    print(f"{'variant':<12} {'median s':>9} {'min s':>7} {'max s':>7}  runs")
    for name, values in times.items():
        runs = " ".join(f"{v:.3f}" for v in values)
        print(
            f"{name:<12} {statistics.median(values):>9.3f} {min(values):>7.3f} "
            f"{max(values):>7.3f}  {runs}"
        )
    ratio = statistics.median(times["staged"]) / statistics.median(times["sequential"])
    verdict = "meets" if ratio <= 0.55 else "MISSES"
    print(f"\nratio staged/sequential (medians): {ratio:.3f}  ({verdict} the target <= 0.55)")
    return 0 if ratio <= 0.55 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each (1 to 50)")
    parser.add_argument("--delay", type=float, default=0.2, help="seconds per command")
    args = parser.parse_args()
    # The sequential variant logs out behind its session's back; its feed's
    # "session lost" warning is expected, so only errors are shown.
    logging.getLogger("pbxsession").setLevel(logging.ERROR)
    if not 1 <= args.reps <= 50 or not 0 < args.delay <= 2:
        parser.error("--reps must be 1 to 50 and --delay in (0, 2]")
    port, feed_port = free_port(), free_port()
    print("benchmark:", shlex.join([sys.executable, *sys.argv]))
    process = start_simulator(port, feed_port)
    try:
        return trio.run(
            run, process, f"http://{HOST}:{port}", f"ws://{HOST}:{feed_port}", args.reps, args.delay
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


if __name__ == "__main__":
    sys.exit(main())
