"""Feed throughput: events/s through ``session.events()`` vs a raw trio-websocket client.

Run: ``.venv/bin/python bench/feed_throughput.py [--events N] [--rounds R]``

The simulator runs in a child process (``python -m pbxsession.sim`` on two
free loopback ports) and is driven over its ``/_sim/`` HTTP controls, so the
client does not share its CPU with the server's event loop. Each round runs
the raw client and the library once, alternating which goes first; each run
logs in, opens the feed, asks the simulator for a burst of N events
(``POST /_sim/burst``) and times the N events from that request to the last
one received. Printed: the median events/s of each, their ratio (target
>= 0.85), and the client CPU per event (the figure the server cannot mask).
Everything talks to 127.0.0.1 only and stops by itself (bounded by
``--time-limit`` seconds).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
import trio
import trio_websocket
from _benchsim import SimProcess, run_with_simulator

import pbxsession
from pbxsession import FeedEvent, FeedGap, FeedOptions, MemoryStore

API = "/api/api.whtm"
FORM = {"content-type": "application/x-www-form-urlencoded"}
USER, PASSWORD = "alice", "alice-pass"


@dataclass(frozen=True)
class Run:
    rate: float  # events per second, wall clock
    cpu_us: float  # client CPU microseconds per event
    problems: int  # gaps or missing events (must be 0)


async def burst(sim: SimProcess, n: int) -> None:
    async with httpx.AsyncClient(base_url=sim.url, timeout=60) as client:
        response = await client.post("/_sim/burst", json={"n": n, "kind": "device", "login": USER})
        response.raise_for_status()


async def timed(n: int, sim: SimProcess, read: Callable[[int], Awaitable[int]]) -> Run:
    """Ask for the burst and run ``read(n)``; time it on the wall clock and in client CPU."""
    wall, cpu = time.perf_counter(), time.process_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(burst, sim, n)
        problems = await read(n)
    # the burst request returns once the server has sent everything: not timed
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Run(n / wall, cpu / n * 1e6, problems)


async def run_library(sim: SimProcess, n: int) -> Run:
    async with pbxsession.open_session(
        sim.url, ws_host=sim.ws_url, store=MemoryStore(), feed=FeedOptions()
    ) as session:
        events = session.events()
        await session.login(USER, PASSWORD)

        async def read(n: int) -> int:
            problems = expected = 0
            async for item in events:
                if isinstance(item, FeedEvent):
                    expected += 1
                    problems += item.seq != expected
                    if expected == n:
                        break
                elif isinstance(item, FeedGap):
                    problems += 1
            return problems

        return await timed(n, sim, read)


async def run_raw(sim: SimProcess, n: int) -> Run:
    """The same work with nothing but httpx and trio-websocket."""
    async with httpx.AsyncClient(base_url=sim.url) as client:
        body = urlencode({"cmd": "login", "sessionUser": USER, "sessionPass": PASSWORD})
        reply = await client.post(API, content=body, headers=FORM)
        assert 'result="success"' in reply.text, reply.text
        cookie = client.cookies["Red60urne"]
        headers = [(b"Cookie", f"Red60urne={cookie}".encode())]
        try:
            async with trio_websocket.open_websocket_url(
                sim.ws_url + "/api/feed", extra_headers=headers
            ) as ws:
                start = {"type": "start", "since": None, "device": True, "presence": True,
                         "mailbox": True, "queue": True}  # fmt: skip
                await ws.send_message(json.dumps(start))
                ready = json.loads(await ws.get_message())
                assert ready["type"] == "ready", ready

                async def read(n: int) -> int:
                    problems = 0
                    for expected in range(1, n + 1):
                        frame = json.loads(await ws.get_message())
                        problems += frame["type"] != "event" or frame["seq"] != expected
                    return problems

                return await timed(n, sim, read)
        finally:
            await client.post(API, content=urlencode({"cmd": "logout"}), headers=FORM)


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                       enumerate(zip(row, widths, strict=True))) for row in rows]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


async def bench(sim: SimProcess, n: int, rounds: int) -> int:
    print(f"{n} events per run, {rounds} rounds, raw and library interleaved")
    await run_raw(sim, min(n, 2000))  # warm up both paths (imports, first connections)
    await run_library(sim, min(n, 2000))
    raw: list[Run] = []
    lib: list[Run] = []
    for r in range(rounds):
        order = [("raw", run_raw), ("lib", run_library)]
        if r % 2:
            order.reverse()
        for name, func in order:
            result = await func(sim, n)
            (raw if name == "raw" else lib).append(result)
            print(
                f"  round {r + 1}/{rounds} {name}: {result.rate:9.0f} ev/s  "
                f"{result.cpu_us:6.1f} us CPU/ev  problems {result.problems}",
                flush=True,
            )
    raw_rate = statistics.median(x.rate for x in raw)
    lib_rate = statistics.median(x.rate for x in lib)
    raw_cpu = statistics.median(x.cpu_us for x in raw)
    lib_cpu = statistics.median(x.cpu_us for x in lib)
    ratio = lib_rate / raw_rate
    print()
    raw_problems, lib_problems = sum(x.problems for x in raw), sum(x.problems for x in lib)
    print(table([
        ("client", "median events/s", "median client CPU us/event", "problems"),
        ("raw trio-websocket", f"{raw_rate:.0f}", f"{raw_cpu:.1f}", str(raw_problems)),
        ("session.events()", f"{lib_rate:.0f}", f"{lib_cpu:.1f}", str(lib_problems)),
    ]))  # fmt: skip
    print()
    verdict = "OK" if ratio >= 0.85 else "BELOW TARGET"
    print(f"throughput ratio library/raw = {ratio:.3f} (target >= 0.85: {verdict}); "
          f"CPU ratio raw/library = {raw_cpu / lib_cpu:.3f}")  # fmt: skip
    problems = sum(x.problems for x in raw + lib)
    return 0 if problems == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per run (20000)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds (300)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the feed logs each forced outage
    print("command:", " ".join([sys.executable, *sys.argv]))
    return run_with_simulator(bench, args.events, args.rounds, time_limit=args.time_limit)


if __name__ == "__main__":
    sys.exit(main())
