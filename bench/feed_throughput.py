"""Feed throughput and client CPU: ``session.events()`` vs a raw trio-websocket client.

Run: ``.venv/bin/python bench/feed_throughput.py [--events N] [--rounds R]``

The simulator runs in a child process (``python -m pbxsession.sim`` on two
free loopback ports) and is driven over its ``/_sim/`` HTTP controls, so the
client does not share its CPU with the server's event loop. Each round runs
three clients one after the other, rotating which goes first: the raw client
(nothing but httpx and trio-websocket), the library with one consumer of
``session.events()``, and the library with ten consumers (ten tasks, each
iterating its own ``session.events()`` on one session; every one must
receive every event, no gaps). Each run logs in, opens the feed, asks the
simulator for a burst of N events (``POST /_sim/burst``) and times the N
events from that request to the last one received, on the wall clock and in
client CPU (the whole client process, per feed event).

Printed, each with its target and ``OK`` or ``BELOW TARGET``, from the
medians over the rounds (library divided by raw; CPU: lower is better)::

    throughput ratio library/raw = X   (target >= 0.95)
    CPU ratio library/raw = Y          (target <= 1.05)
    ten consumers CPU us/event = Z     (target <= 40)

``measure(events, rounds)`` gives a :class:`FeedResult` (``.met`` when all
three are met) and ``report(result)`` prints it, for ``run_all.py``.
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
from pbxsession import FeedEvent, FeedGap, FeedOptions, FeedSubscription, MemoryStore

API = "/api/api.whtm"
FORM = {"content-type": "application/x-www-form-urlencoded"}
USER, PASSWORD = "alice", "alice-pass"


THROUGHPUT_TARGET = 0.95  # library events/s over raw, at least
CPU_TARGET = 1.05  # library CPU per event over raw, at most
TEN_TARGET_US = 40.0  # CPU us per event with ten consumers, at most
TEN = 10
CEILING = 300.0


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
    """One consumer of ``session.events()``."""
    return await run_consumers(sim, n, 1)


async def run_ten(sim: SimProcess, n: int) -> Run:
    """Ten consumers on one session, each with its own ``session.events()``."""
    return await run_consumers(sim, n, TEN)


async def consume(events: FeedSubscription, n: int) -> int:
    """Read events 1..n from ``events``; the problems (gaps, numbers out of step)."""
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


async def run_consumers(sim: SimProcess, n: int, consumers: int) -> Run:
    async with pbxsession.open_session(
        sim.url, ws_host=sim.ws_url, store=MemoryStore(), feed=FeedOptions()
    ) as session:
        subscriptions = [session.events() for _ in range(consumers)]
        await session.login(USER, PASSWORD)

        async def read(n: int) -> int:
            if consumers == 1:
                return await consume(subscriptions[0], n)
            problems = [0] * consumers

            async def one(index: int) -> None:
                problems[index] = await consume(subscriptions[index], n)

            async with trio.open_nursery() as nursery:
                for index in range(consumers):
                    nursery.start_soon(one, index)
            return sum(problems)

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


@dataclass(frozen=True)
class FeedResult:
    """Medians over the rounds: raw client, one library consumer, ten library consumers."""

    events: int
    rounds: int
    raw: Run
    library: Run
    ten: Run
    problems: int  # gaps or events out of step over every run (must be 0)

    @property
    def throughput_ratio(self) -> float:
        return self.library.rate / self.raw.rate

    @property
    def cpu_ratio(self) -> float:
        return self.library.cpu_us / self.raw.cpu_us

    @property
    def met(self) -> bool:
        return (
            self.problems == 0
            and self.throughput_ratio >= THROUGHPUT_TARGET
            and self.cpu_ratio <= CPU_TARGET
            and self.ten.cpu_us <= TEN_TARGET_US
        )


def median_run(runs: list[Run]) -> Run:
    return Run(
        statistics.median(r.rate for r in runs),
        statistics.median(r.cpu_us for r in runs),
        sum(r.problems for r in runs),
    )


CLIENTS: dict[str, Callable[[SimProcess, int], Awaitable[Run]]] = {
    "raw": run_raw,
    "library": run_library,
    "ten": run_ten,
}


async def _run(sim: SimProcess, n: int, rounds: int) -> FeedResult:
    print(f"{n} events per run, {rounds} rounds, raw, library and ten consumers interleaved")
    for client in CLIENTS.values():  # warm up every path (imports, first connections)
        await client(sim, min(n, 2000))
    runs: dict[str, list[Run]] = {name: [] for name in CLIENTS}
    names = list(CLIENTS)
    for r in range(rounds):
        for name in names[r % 3 :] + names[: r % 3]:  # each goes first in turn
            result = await CLIENTS[name](sim, n)
            runs[name].append(result)
            print(
                f"  round {r + 1}/{rounds} {name:>7}: {result.rate:9.0f} ev/s  "
                f"{result.cpu_us:6.1f} us CPU/ev  problems {result.problems}",
                flush=True,
            )
    medians = {name: median_run(found) for name, found in runs.items()}
    problems = sum(r.problems for found in runs.values() for r in found)
    return FeedResult(n, rounds, medians["raw"], medians["library"], medians["ten"], problems)


def _verdict(ok: bool) -> str:
    return "OK" if ok else "BELOW TARGET"


def report(result: FeedResult) -> None:
    print()
    print(table([
        ("client", "median events/s", "median client CPU us/event", "problems"),
        ("raw trio-websocket", f"{result.raw.rate:.0f}", f"{result.raw.cpu_us:.1f}",
         str(result.raw.problems)),
        ("session.events()", f"{result.library.rate:.0f}", f"{result.library.cpu_us:.1f}",
         str(result.library.problems)),
        (f"{TEN} x session.events()", f"{result.ten.rate:.0f}", f"{result.ten.cpu_us:.1f}",
         str(result.ten.problems)),
    ]))  # fmt: skip
    print()
    ratio, cpu, ten = result.throughput_ratio, result.cpu_ratio, result.ten.cpu_us
    least = THROUGHPUT_TARGET
    lines = [
        ("throughput ratio library/raw", ratio, ">=", least, ratio >= least),
        ("CPU ratio library/raw", cpu, "<=", CPU_TARGET, cpu <= CPU_TARGET),
        ("ten consumers CPU us/event", ten, "<=", TEN_TARGET_US, ten <= TEN_TARGET_US),
    ]
    for name, value, sign, target, ok in lines:
        shown = f"{value:.1f}" if name.endswith("us/event") else f"{value:.3f}"
        print(f"{name} = {shown} (target {sign} {target:g}: {_verdict(ok)})")
    if result.problems:
        print(f"problems (gaps or events out of step): {result.problems}")


def measure(events: int = 20_000, rounds: int = 5, time_limit: float = CEILING) -> FeedResult:
    """Start a simulator process, measure, stop it; bounded by ``time_limit`` seconds."""
    logging.getLogger("pbxsession").setLevel(logging.ERROR)  # the feed logs each forced outage
    return run_with_simulator(_run, events, rounds, time_limit=time_limit)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per run (20000)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    parser.add_argument("--time-limit", type=float, default=CEILING, help="seconds (300)")
    args = parser.parse_args()
    if args.events < 1 or args.rounds < 1:
        parser.error("--events and --rounds must be at least 1")
    print("command:", " ".join([sys.executable, *sys.argv]))
    result = measure(args.events, args.rounds, args.time_limit)
    report(result)
    return 0 if result.problems == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
