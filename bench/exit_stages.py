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
import logging
import shlex
import statistics
import sys
import time

import httpx
from _benchsim import SimProcess, run_with_simulator

import pbxsession
from pbxsession import Timeout
from pbxsession import _wire as wire
from pbxsession._tls import trust_context
from pbxsession._transport import CommandTransport, new_http_client
from pbxsession.stores import CookieSlot

CEILING = 120.0


async def set_up(session: pbxsession.Session, url: str, store: pbxsession.MemoryStore) -> None:
    """Log in, go online and hold a WebRTC password, so every exit step has work."""
    await session.login("alice", "alice-pass")
    cookie = await store.get_cookie(url, "alice")
    assert cookie is not None
    async with httpx.AsyncClient(trust_env=False) as client:
        await client.post(
            url + wire.COMMAND_PATH,
            data={"cmd": "status", "show": "online"},
            headers={"Cookie": wire.cookie_header(cookie)},
        )
    await session.rtc_reset(getnew=True)


async def staged(sim: SimProcess, delay: float) -> float:
    store = pbxsession.MemoryStore()
    async with pbxsession.open_session(sim.url, ws_host=sim.ws_url, store=store) as session:
        await set_up(session, sim.url, store)
        await sim.post("delay", {"seconds": delay, "cmd": None})
        try:
            start = time.perf_counter()
            report = await session.exit(logout=True)
            elapsed = time.perf_counter() - start
        finally:
            await sim.post("delay", {"seconds": 0, "cmd": None})
    outcomes = {name: r.outcome.value for name, r in report.steps.items()}
    if set(outcomes.values()) != {"ok"}:
        raise RuntimeError(f"staged exit did not run every step: {outcomes}")
    return elapsed


async def sequential(sim: SimProcess, delay: float) -> float:
    store = pbxsession.MemoryStore()
    async with pbxsession.open_session(
        sim.url, ws_host=sim.ws_url, store=store, keep_session=True
    ) as session:
        await set_up(session, sim.url, store)
        login = session._core.current_login()
        held = login.rtc_password
        history = list(login.history or ())
        assert held is not None
        login.rtc_password = None  # the benchmark releases it itself, below
        commands = [
            wire.status_command("offline"),
            wire.save_history_command(history),
            wire.rtc_reset_command(release=held),
            wire.logout_command(),
        ]
        async with new_http_client(trust_context(True)) as client:
            transport = CommandTransport(client=client, timeout=Timeout(10, 30), retries=2)
            cookies = CookieSlot(store, sim.url, "alice")
            await sim.post("delay", {"seconds": delay, "cmd": None})
            try:
                start = time.perf_counter()
                for command in commands:
                    await transport.send(sim.url, command, None, cookies)
                elapsed = time.perf_counter() - start
            finally:
                await sim.post("delay", {"seconds": 0, "cmd": None})
    return elapsed


async def run(sim: SimProcess, reps: int, delay: float) -> int:
    print(f"delay per command: {delay * 1000:.0f} ms (POST /_sim/delay), repetitions: {reps}")
    times: dict[str, list[float]] = {"staged": [], "sequential": []}
    for rep in range(reps):
        # Interleave, alternating which goes first.
        order = ["staged", "sequential"] if rep % 2 == 0 else ["sequential", "staged"]
        for name in order:
            runner = staged if name == "staged" else sequential
            times[name].append(await runner(sim, delay))

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
    print("benchmark:", shlex.join([sys.executable, *sys.argv]))
    return run_with_simulator(run, args.reps, args.delay, time_limit=CEILING)


if __name__ == "__main__":
    sys.exit(main())
