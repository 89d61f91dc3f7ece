"""Feed drop storm: 100 forced drops during a 10,000-event stream; count loss and duplicates.

Run: ``.venv/bin/python bench/feed_drop_storm.py [--events N] [--drops D]``

The simulator runs in a child process (``python -m pbxsession.sim``) on
loopback ports. The stream is sent as D bursts (``POST /_sim/burst``); right
after each burst is requested, every feed connection is cut off
(``POST /_sim/feed/drop``, no error frame), so the client is cut mid-stream
and must resume. Before the next burst the script waits until the client is
connected again, so that the simulator's 1,000-event ring is never outrun
(falling off the ring would be an honest, reported gap, not what this
measures). The session uses a fast full-jitter backoff (base 5 ms, cap
50 ms): the default one slows down on purpose when a feed keeps flapping.
Printed: events lost, duplicated, reordered and gaps reported (targets 0).
Loopback only; bounded by ``--time-limit`` seconds.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import time
from collections import Counter

import httpx
import trio
from _benchsim import SimProcess, run_with_simulator

import pbxsession
from pbxsession import FeedEvent, FeedGap, FeedOptions, FullJitterBackoff, MemoryStore

USER, PASSWORD = "alice", "alice-pass"


async def storm(sim: SimProcess, n: int, drops: int) -> int:
    backoff = FullJitterBackoff(base=0.005, cap=0.05)
    received: list[int] = []
    gaps: list[FeedGap] = []
    seen_at_drop: list[int] = []
    async with (
        httpx.AsyncClient(base_url=sim.url, timeout=30) as control,
        pbxsession.open_session(
            sim.url, ws_host=sim.ws_url, store=MemoryStore(), feed=FeedOptions(), backoff=backoff
        ) as session,
    ):
        events = session.events()
        await session.login(USER, PASSWORD)
        done = trio.Event()

        async def consume() -> None:
            async for item in events:
                if isinstance(item, FeedEvent):
                    received.append(item.seq)
                    if item.seq >= n:
                        done.set()
                elif isinstance(item, FeedGap):
                    gaps.append(item)
                else:
                    print("unexpected:", item)

        def feed() -> pbxsession.FeedStatistics:
            stats = session.statistics().feed
            assert stats is not None
            return stats

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            per_burst = [n // drops + (i < n % drops) for i in range(drops)]
            for i, size in enumerate(per_burst):
                while feed().reconnects < i or not feed().connected:  # noqa: ASYNC110
                    await trio.sleep(0.001)  # the previous drop's reconnect
                await control.post("/_sim/burst", json={"n": size, "login": USER})
                seen_at_drop.append(len(received))
                (await control.post("/_sim/feed/drop")).raise_for_status()
            with trio.move_on_after(30):
                await done.wait()
            nursery.cancel_scope.cancel()
        elapsed = time.perf_counter() - started
        stats = feed()
    counts = Counter(received)
    lost = sorted(set(range(1, n + 1)) - counts.keys())
    duplicated = sum(c - 1 for c in counts.values() if c > 1)
    reordered = sum(1 for a, b in itertools.pairwise(received) if b <= a)
    mid_stream = sum(1 for i, seen in enumerate(seen_at_drop) if seen < sum(per_burst[: i + 1]))
    rows = [
        ("events sent", str(n)),
        ("forced drops", str(drops)),
        ("drops that cut the stream mid-burst", str(mid_stream)),
        ("reconnects (client statistics)", str(stats.reconnects)),
        ("events received", str(len(received))),
        ("events lost (target 0)", str(len(lost))),
        ("events duplicated (target 0)", str(duplicated)),
        ("events out of order (target 0)", str(reordered)),
        ("gaps reported", str(len(gaps))),
        ("wall time", f"{elapsed:.2f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"{key.ljust(width)}  {value.rjust(8)}")
    if lost:
        print("first lost:", lost[:20])
    ok = not lost and not duplicated and not reordered and not gaps
    print("\nresult:", "OK" if ok else "FAILED")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000, help="events in the stream")
    parser.add_argument("--drops", type=int, default=100, help="forced drops")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds (120)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the feed logs each forced outage
    print("command:", " ".join([sys.executable, *sys.argv]))
    return run_with_simulator(storm, args.events, args.drops, time_limit=args.time_limit)


if __name__ == "__main__":
    sys.exit(main())
