"""Benchmark: many sessions in one process, each logged in with a live feed, then exited.

Run it alone as ``.venv/bin/python bench/scale.py [--sessions N] [--concurrency C]``
(``bench/run_all.py`` imports :func:`measure`).

The simulator runs in a separate process (``python -m pbxsession.sim``) on
free loopback ports; both processes get a raised file-descriptor soft limit
(each session holds an HTTP connection and a WebSocket). All sessions share
one :class:`~pbxsession.MemoryStore` (one cookie, like tabs of one browser)
and each has its own sub-ID (``open_session(..., subid=...)``), so each is
its own login context as ``alice``. The store's cookie is obtained first by
one session (it then stays open like the others), so the concurrent logins
all run in contexts under that cookie.

Each session is a task holding ``async with open_session(...)``: it logs in
(at most ``C`` logins at once, a :class:`trio.CapacityLimiter`), and waits.
Once every login has returned, ``/_sim/contexts`` must show each sub-ID
logged in with its feed connected; then every session runs
``exit(logout=True)`` (again at most ``C`` at once) and leaves its block.
Success for a session: it logged in, its feed was seen connected, and every
exit step ended ``ok`` (``rtc_release`` is ``skipped``: no WebRTC password is
held). Printed: succeeded/N, login p50/p99 (ms), client
memory per session (RSS growth from before the first session to when all
were open, divided by N), total time. Everything goes to 127.0.0.1 and the
run is bounded (``--timeout``, default 300 s).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import statistics
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import trio
from _benchsim import SimProcess, machine, run_with_simulator

import pbxsession
from pbxsession import StepOutcome

PAGE = 4096


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


@dataclass
class ScaleResult:
    sessions: int
    succeeded: int
    login_p50_ms: float
    login_p99_ms: float
    memory_per_session_kib: float
    total_s: float
    feeds_seen: int
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def met(self) -> bool:
        return self.succeeded == self.sessions


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def _run(sim: SimProcess, n: int, concurrency: int) -> ScaleResult:
    store = pbxsession.MemoryStore()
    limiter = trio.CapacityLimiter(concurrency)
    login_ms: dict[int, float] = {}
    logged_in: set[int] = set()
    exited_ok: set[int] = set()
    failures: dict[str, int] = {}
    all_in = trio.Event()
    go_exit = trio.Event()
    done_count = 0

    def fail(reason: str) -> None:
        failures[reason] = failures.get(reason, 0) + 1

    def finished_login() -> None:
        nonlocal done_count
        done_count += 1
        if done_count == n:
            all_in.set()

    async def one(i: int, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        subid = f"s{i:05d}"
        async with AsyncExitStack() as stack:
            try:
                async with limiter:
                    session = await stack.enter_async_context(
                        pbxsession.open_session(
                            sim.url, ws_host=sim.ws_url, store=store, subid=subid
                        )
                    )
                    start = time.perf_counter()
                    await session.login("alice", "alice-pass")
                    login_ms[i] = (time.perf_counter() - start) * 1000
                    logged_in.add(i)
            except pbxsession.PbxError as exc:
                fail(f"login: {type(exc).__name__}: {exc}")
                return
            finally:
                task_status.started()
                finished_login()
            await go_exit.wait()
            async with limiter:
                report = await session.exit(logout=True)
            # No WebRTC password is taken, so rtc_release is rightly skipped.
            bad = {
                name: result.outcome.value
                for name, result in report.steps.items()
                if result.outcome is not StepOutcome.OK
                and not (name == "rtc_release" and result.outcome is StepOutcome.SKIPPED)
            }
            if bad:
                fail(f"exit steps not ok: {sorted(bad.items())}")
            else:
                exited_ok.add(i)

    started = time.perf_counter()
    rss_before = rss_bytes()
    async with trio.open_nursery() as nursery:
        # The first session obtains the store's cookie; the others then share it.
        await nursery.start(one, 0)
        for i in range(1, n):
            nursery.start_soon(one, i)
        await all_in.wait()
        rss_peak = rss_bytes()
        wanted = {f"s{i:05d}" for i in logged_in}
        seen: set[str] = set()
        with trio.move_on_after(60):
            while True:
                contexts = await sim.get("contexts")
                seen = {
                    c["subid"]
                    for c in contexts
                    if c["subid"] in wanted and c["login"] == "alice" and c["feeds"] >= 1
                }
                if seen == wanted:
                    break
                await trio.sleep(0.2)
        for i in list(logged_in):
            if f"s{i:05d}" not in seen:
                fail("feed not connected at the simulator")
                exited_ok.discard(i)
                logged_in.discard(i)
        go_exit.set()
    total = time.perf_counter() - started

    contexts = await sim.get("contexts")
    leftover = [c for c in contexts if c["subid"].startswith("s") and (c["login"] or c["feeds"])]
    if leftover:
        fail(f"contexts still logged in or with a feed after exit: {len(leftover)}")
    succeeded = len(exited_ok & logged_in) if not leftover else 0
    values = list(login_ms.values())
    return ScaleResult(
        sessions=n,
        succeeded=succeeded,
        login_p50_ms=statistics.median(values) if values else float("nan"),
        login_p99_ms=_percentile(values, 0.99),
        memory_per_session_kib=(rss_peak - rss_before) / n / 1024,
        total_s=total,
        feeds_seen=len(seen),
        failures=failures,
    )


def measure(n: int = 1000, concurrency: int = 100, timeout: float = 300.0) -> ScaleResult:
    """Start a simulator process, open ``n`` sessions, exit them, stop it."""
    logging.getLogger("pbxsession").setLevel(logging.ERROR)
    fd_limit = max(8192, 4 * n + 256)
    return run_with_simulator(_run, n, concurrency, time_limit=timeout, fd_limit=fd_limit)


def report(result: ScaleResult) -> None:
    print(f"succeeded: {result.succeeded}/{result.sessions}")
    print(f"feeds seen connected at the simulator: {result.feeds_seen}")
    print(f"login p50 / p99: {result.login_p50_ms:.1f} / {result.login_p99_ms:.1f} ms")
    print(f"client memory per session (RSS delta / N): {result.memory_per_session_kib:.1f} KiB")
    print(f"total time: {result.total_s:.1f} s")
    for reason, count in sorted(result.failures.items()):
        print(f"  failure x{count}: {reason}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=1000, help="1 to 5000")
    parser.add_argument("--concurrency", type=int, default=100, help="logins/exits at once")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for the whole run")
    args = parser.parse_args()
    if not 1 <= args.sessions <= 5000 or not 1 <= args.concurrency <= 1000:
        parser.error("--sessions must be 1 to 5000 and --concurrency 1 to 1000")
    print("benchmark:", shlex.join([sys.executable, *sys.argv]))
    print("machine:", machine())
    result = measure(args.sessions, args.concurrency, args.timeout)
    report(result)
    return 0 if result.met else 1


if __name__ == "__main__":
    sys.exit(main())
