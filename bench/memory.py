"""Benchmark: Python heap per idle logged-in session with a feed, and the lifecycle's cost.

Run: ``.venv/bin/python bench/memory.py [--sessions N]`` (``bench/run_all.py``
imports :func:`measure`).

N sessions (default 1,000; one shared HTTP pool, each its own sub-ID as
``alice``) log in with a live feed against the simulator in its own process
and sit idle; the heap they hold is measured with ``tracemalloc`` (traced
bytes with all of them open, minus before the first, divided by N).
Separately, the lifecycle machine's memory and build time per session:
``tracemalloc`` over 10,000 ``Lifecycle()`` objects, and the mean of
100,000 builds.
"""

from __future__ import annotations

import argparse
import gc
import logging
import shlex
import sys
import time
import tracemalloc
from dataclasses import dataclass

import httpx
import trio
from _benchsim import SimProcess, machine, run_with_simulator

import pbxsession
from pbxsession._lifecycle import Lifecycle

HEAP_TARGET_KIB = 40.0
#: Memory, not latency, is measured: a loaded machine must not fail a login.
SLACK = pbxsession.Timeout(command=30, operation=90)
MACHINE_TARGET_BYTES = 4096
MACHINE_TARGET_US = 20.0


@dataclass
class MemoryResult:
    sessions: int
    heap_kib_per_session: float
    machine_bytes: float
    machine_build_us: float

    @property
    def met(self) -> bool:
        return (
            self.heap_kib_per_session <= HEAP_TARGET_KIB
            and self.machine_bytes <= MACHINE_TARGET_BYTES
            and self.machine_build_us <= MACHINE_TARGET_US
        )


def lifecycle_cost() -> tuple[float, float]:
    """(bytes, µs) per Lifecycle: traced memory of 10,000, mean build time of 100,000."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = [Lifecycle() for _ in range(10_000)]
    size = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    tracemalloc.stop()
    del kept
    started = time.perf_counter()
    for _ in range(100_000):
        Lifecycle()
    return size, (time.perf_counter() - started) / 100_000 * 1e6


async def _heap(sim: SimProcess, n: int) -> float:
    store = pbxsession.MemoryStore()
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    limiter = trio.CapacityLimiter(100)
    all_in, release = trio.Event(), trio.Event()
    logged_in = 0

    async def one(i: int, client: httpx.AsyncClient) -> None:
        nonlocal logged_in
        async with pbxsession.open_session(
            sim.url,
            ws_host=sim.ws_url,
            store=store,
            http_client=client,
            subid=f"m{i:05d}",
            timeout=SLACK,
        ) as session:
            async with limiter:
                await session.login("alice", "alice-pass")
            logged_in += 1
            if logged_in == n:
                all_in.set()
            await release.wait()

    async with httpx.AsyncClient(limits=limits, trust_env=False) as client:
        async with pbxsession.open_session(sim.url, store=store, http_client=client) as first:
            await first.login("alice", "alice-pass")  # settles the store's cookie
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(one, i, client)
            await all_in.wait()
            await trio.sleep(1.0)  # idle: every feed connected and quiet
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
            release.set()
    return held / n / 1024


def measure(n: int = 1000) -> MemoryResult:
    """Start a simulator process, hold ``n`` idle sessions, measure; and the lifecycle."""
    logging.getLogger("pbxsession").setLevel(logging.ERROR)
    machine_bytes, machine_us = lifecycle_cost()
    heap = run_with_simulator(_heap, n, time_limit=600, fd_limit=max(8192, 4 * n + 512))
    return MemoryResult(n, heap, machine_bytes, machine_us)


def report(result: MemoryResult) -> None:
    print(
        f"heap per idle logged-in session with a feed (N={result.sessions}): "
        f"{result.heap_kib_per_session:.1f} KiB (target <= {HEAP_TARGET_KIB:g})"
    )
    print(
        f"lifecycle machine per session: {result.machine_bytes:.0f} bytes, "
        f"{result.machine_build_us:.2f} us to build "
        f"(targets <= {MACHINE_TARGET_BYTES} bytes, <= {MACHINE_TARGET_US:g} us)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=1000, help="1 to 5000")
    args = parser.parse_args()
    if not 1 <= args.sessions <= 5000:
        parser.error("--sessions must be 1 to 5000")
    print("benchmark:", shlex.join([sys.executable, *sys.argv]))
    print("machine:", machine())
    result = measure(args.sessions)
    report(result)
    return 0 if result.met else 1


if __name__ == "__main__":
    raise SystemExit(main())
