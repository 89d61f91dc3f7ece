"""Benchmark: many sessions under seeded faults for a bounded time; nothing stuck or leaked.

Run: ``.venv/bin/python bench/load_faults.py [--sessions N] [--seconds S] [--seed K]``
(``bench/run_all.py`` imports :func:`measure`).

N sessions (default 1,000; one process, one shared HTTP pool, each its own
sub-ID as ``alice``) run against the simulator in its own process for S
seconds (default 60): each logs in, resets its WebRTC password, logs out
and in again, with short random pauses, while a seeded injector makes
about 5 % of commands fail (HTTP 500), delays commands past the command
deadline, drops the feeds, sends feed errnos 1/3/90/92, refuses feed
handshakes and expires random sessions' contexts. Then the faults stop and
every session leaves its block (``exit(logout=True)``).

Printed: operations done; stuck operations (longer than their deadline
allows: the operation's deadline plus the feed's handshake bound for a
login, plus one second); sessions that made no progress; exceptions
outside the documented tree (not a ``PbxError``); ``ExceptionGroup``\\ s
escaping ``open_session``; file descriptors and trio tasks before and
after; logins left on the simulator after every session has exited (every
context the clients know of must be logged out, and no other may exist);
``SessionLost`` items in sessions no fault could have ended. Exit status 0
when every one of those is zero.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shlex
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import trio
from _benchsim import SimProcess, machine, run_with_simulator

import pbxsession
from pbxsession import FeedOptions, State, Timeout

COMMAND_DEADLINE = 2.0
TIMEOUT = Timeout(command=COMMAND_DEADLINE, operation=3 * COMMAND_DEADLINE)
HANDSHAKE = 2.0
GRACE = 1.0
RETRYABLE_ERRNOS = (1, 3, 90, 92)


@dataclass
class LoadResult:
    sessions: int
    seconds: float
    operations: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    stuck: list[str] = field(default_factory=list)
    late: list[tuple[float, float]] = field(default_factory=list)  # (over the bound, lag then)
    max_lag: float = 0.0
    outside_tree: list[str] = field(default_factory=list)
    groups: int = 0
    no_progress: int = 0
    fds_before: int = 0
    fds_after: int = 0
    tasks_before: int = 0
    tasks_after: int = 0
    orphans: int = 0
    known_still_logged_in: int = 0
    unexplained_losses: int = 0
    explained_losses: int = 0

    @property
    def met(self) -> bool:
        return not (
            self.stuck
            or self.outside_tree
            or self.groups
            or self.no_progress
            or self.fds_after > self.fds_before
            or self.tasks_after > self.tasks_before
            or self.orphans
            or self.known_still_logged_in
            or self.unexplained_losses
        )


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def trio_tasks() -> int:
    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(child) for n in task.child_nurseries for child in n.child_tasks)

    return count(trio.lowlevel.current_root_task())


class Load:
    """One run: the sessions, the injector, and what they saw."""

    def __init__(self, sim: SimProcess, n: int, seconds: float, seed: int) -> None:
        self.sim = sim
        self.n = n
        self.seconds = seconds
        self.random = random.Random(seed)
        self.result = LoadResult(sessions=n, seconds=seconds)
        self.store = pbxsession.MemoryStore()
        self.expired: set[str] = set()  # sub-IDs whose context a fault may have ended
        self.calm = trio.Event()
        self.exits = trio.CapacityLimiter(50)
        self.lag = 0.0  # how late trio wakes a sleeper now (the process is shared by N sessions)
        self.lost_in: Counter[str] = Counter()
        self.lost_why: defaultdict[str, list[str]] = defaultdict(list)
        self.progress: Counter[str] = Counter()

    async def timed(
        self, subid: str, name: str, bound: float, fn: Callable[[], Awaitable[object]]
    ) -> None:
        """Run one operation; note its outcome, and whether it outlasted ``bound``."""
        started = trio.current_time()
        try:
            await fn()
        except pbxsession.PbxError as exc:
            self.result.errors[type(exc).__name__] += 1
            if name == "logout" and isinstance(exc, pbxsession.PbxUnavailableError):
                # A logout delayed past its deadline may still be carried out
                # by the PBX: the loss seen next is that fault's doing.
                self.expired.add(subid)
        except Exception as exc:  # the point: nothing but PbxError may come out
            self.result.outside_tree.append(f"{name}: {exc!r}")
        else:
            self.result.operations[name] += 1
            self.progress[subid] += 1
        took = trio.current_time() - started
        if took > COMMAND_DEADLINE:
            # An attempt ran out of time and was retried: the PBX may still carry
            # out the late one (a logout landing on the next login, say).
            self.expired.add(subid)
        if took > bound:
            # Late by more than trio's own scheduling lag at the time: stuck.
            lag = self.lag
            if took > bound + lag:
                self.result.stuck.append(f"{name} took {took:.1f}s > {bound:.1f}s + lag {lag:.1f}s")
            else:
                self.result.late.append((took - bound, lag))

    async def session(self, i: int, client: httpx.AsyncClient, end: float) -> None:
        subid = f"lf{i:05d}"
        rng = random.Random(self.random.random())
        feed = FeedOptions(handshake_timeout=HANDSHAKE)
        try:
            async with trio.open_nursery() as nursery, pbxsession.open_session(
                self.sim.url, ws_host=self.sim.ws_url, store=self.store, subid=subid,
                timeout=TIMEOUT,
                feed=feed, http_client=client, exit_timeout=10,
            ) as session:  # fmt: skip
                nursery.start_soon(self.consume, subid, session.events())
                # Spread out so that the simulator (one process) is loaded, not
                # swamped: about 100 sessions' worth of operations a second.
                pace = max(1.0, self.n / 100)
                await trio.sleep(rng.uniform(0, 2 * pace))
                while trio.current_time() < end:
                    await self.step(session, subid, rng)
                    await trio.sleep(rng.uniform(0.2, 1.0) * pace)
                await self.wait_for_calm()
                async with self.exits:  # fifty at a time: the simulator is one process
                    await session.exit(logout=True)
        except BaseExceptionGroup as group:
            self.result.groups += 1
            self.result.outside_tree.append(f"group: {group!r}")
        except Exception as exc:
            self.result.outside_tree.append(f"open_session: {exc!r}")

    async def step(self, session: pbxsession.Session, subid: str, rng: random.Random) -> None:
        op_bound = TIMEOUT.operation + GRACE
        if session.state is State.HOST_SET:
            await self.timed(
                subid, "login", op_bound + HANDSHAKE, lambda: session.login("alice", "alice-pass")
            )
            return
        choice = rng.random()
        if choice < 0.6:
            await self.timed(subid, "rtc_reset", op_bound, lambda: session.rtc_reset(getnew=True))
        elif choice < 0.8:  # a logout the PBX cannot be told of starts the feed again
            await self.timed(subid, "logout", op_bound + HANDSHAKE, session.logout)
        else:
            await self.timed(subid, "select_company", op_bound, lambda: session.select_company("7"))

    async def wait_for_calm(self) -> None:
        await self.calm.wait()

    async def consume(self, subid: str, events: pbxsession.FeedSubscription) -> None:
        async with events:
            async for item in events:
                if isinstance(item, pbxsession.SessionLost):
                    self.lost_in[subid] += 1
                    self.lost_why[subid].append(item.reason)

    async def watch_lag(self) -> None:
        """How late a 0.1 s sleep wakes: deadlines fire that much late too, under load."""
        while True:
            asked = trio.current_time()
            await trio.sleep(0.1)
            lag = trio.current_time() - asked - 0.1
            self.lag = max(lag, self.lag * 0.9)  # decays, so one spike does not stick
            self.result.max_lag = max(self.result.max_lag, lag)

    async def inject(self, end: float) -> None:
        """Seeded faults until ``end``; then every fault is cleared."""
        rng = self.random
        try:
            while trio.current_time() < end:
                await trio.sleep(rng.uniform(0.2, 0.6))
                await self.one_fault(rng)
        finally:
            with trio.CancelScope(shield=True):
                await self.sim.post("delay", {"seconds": 0})
                await self.sim.post("fail", {"n": 0})
                await self.sim.post("feed/refuse", {"n": 0})
                self.calm.set()

    async def one_fault(self, rng: random.Random) -> None:
        kind = rng.choice(["fail", "fail", "fail", "delay", "drop", "errno", "refuse", "expire"])
        self.result.faults[kind] += 1
        if kind == "fail":  # about 5 % of the commands the sessions send meanwhile
            await self.sim.post("fail", {"n": max(1, self.n // 40)})
        elif kind == "delay":
            cmd = rng.choice(["rtcreset", "logout", "selcompany", "load"])
            await self.sim.post("delay", {"seconds": COMMAND_DEADLINE * 1.5, "cmd": cmd})
            await trio.sleep(0.3)
            await self.sim.post("delay", {"seconds": 0, "cmd": cmd})
        elif kind == "drop":
            await self.sim.post("feed/drop")
        elif kind == "errno":
            await self.sim.post("feed/error", {"errno": rng.choice(RETRYABLE_ERRNOS)})
        elif kind == "refuse":
            await self.sim.post("feed/refuse", {"n": max(1, self.n // 20)})
        else:
            subid = f"lf{rng.randrange(self.n):05d}"
            cookie = await self.store.get_cookie(self.sim.url, "alice")
            self.expired.add(subid)  # before: its loss may be seen at once
            await self.sim.post("expire", {"cookie": cookie, "subid": subid})

    async def run(self) -> LoadResult:
        result = self.result
        result.fds_before, result.tasks_before = open_fds(), trio_tasks()
        end = trio.current_time() + self.seconds
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(limits=limits, trust_env=False) as client:
            # One session settles the store's cookie; the others then share it.
            async with pbxsession.open_session(
                self.sim.url, store=self.store, feed=None, http_client=client
            ) as first:
                await first.login("alice", "alice-pass")
            async with trio.open_nursery() as watcher:
                watcher.start_soon(self.watch_lag)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.inject, end)
                    for i in range(self.n):
                        nursery.start_soon(self.session, i, client, end)
                watcher.cancel_scope.cancel()
        await trio.sleep(0.5)  # let the simulator finish closing connections
        result.fds_after, result.tasks_after = open_fds(), trio_tasks()
        await self.count_leftovers()
        return result

    async def count_leftovers(self) -> None:
        result = self.result
        cookie = await self.store.get_cookie(self.sim.url, "alice")
        known = {(cookie, f"lf{i:05d}") for i in range(self.n)} | {(cookie, "")}
        counts = await self.sim.logins()
        result.orphans = len(counts.orphans(known))
        result.known_still_logged_in = len(counts.logged_in) - result.orphans
        result.no_progress = sum(1 for i in range(self.n) if not self.progress[f"lf{i:05d}"])
        unexplained = [s for s in self.lost_in if s not in self.expired]
        result.unexplained_losses = sum(self.lost_in[s] for s in unexplained)
        result.explained_losses = sum(self.lost_in.values()) - result.unexplained_losses
        for subid in unexplained[:3]:
            print(f"  unexplained loss in {subid}: {self.lost_why[subid]}")


def measure(n: int = 1000, seconds: float = 60.0, seed: int = 7) -> LoadResult:
    """Start a simulator process, run the load, stop it."""
    logging.getLogger("pbxsession").setLevel(logging.CRITICAL)

    async def go(sim: SimProcess) -> LoadResult:
        return await Load(sim, n, seconds, seed).run()

    return run_with_simulator(go, time_limit=seconds + 300, fd_limit=max(8192, 4 * n + 512))


def report(result: LoadResult) -> None:
    total = sum(result.operations.values())
    print(f"sessions: {result.sessions}, {result.seconds:g} s of faults")
    print(f"operations done: {total} {dict(result.operations)}")
    print(f"errors (all in the documented tree): {dict(result.errors)}")
    print(f"faults injected: {dict(result.faults)}")
    print(
        f"stuck operations: {len(result.stuck)} (past their bound by more than the scheduling "
        f"lag: {len(result.late)} were late within it; largest lag {result.max_lag:.2f}s)"
    )
    print(f"sessions without progress: {result.no_progress}")
    print(f"exceptions outside the tree: {len(result.outside_tree)}")
    print(f"ExceptionGroups escaping open_session: {result.groups}")
    print(f"file descriptors before/after: {result.fds_before}/{result.fds_after}")
    print(f"trio tasks before/after: {result.tasks_before}/{result.tasks_after}")
    print(f"logins left on the simulator: {result.orphans} orphaned, "
          f"{result.known_still_logged_in} known and still logged in")  # fmt: skip
    print(
        f"SessionLost not caused by a fault: {result.unexplained_losses} "
        f"(caused by one: {result.explained_losses})"
    )
    for line in (result.stuck + result.outside_tree)[:10]:
        print("  ", line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=1000, help="1 to 3000")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long faults run")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if not 1 <= args.sessions <= 3000 or not 1 <= args.seconds <= 600:
        parser.error("--sessions must be 1 to 3000 and --seconds 1 to 600")
    print("benchmark:", shlex.join([sys.executable, *sys.argv]))
    print("machine:", machine())
    started = time.perf_counter()
    result = measure(args.sessions, args.seconds, args.seed)
    report(result)
    print(f"total time: {time.perf_counter() - started:.1f} s")
    return 0 if result.met else 1


if __name__ == "__main__":
    raise SystemExit(main())
