"""Benchmark: the library's cost per operation, against a bare httpx POST of the same form.

Run it alone as ``.venv/bin/python bench/op_overhead.py [--iterations N]``
(``bench/run_all.py`` imports :func:`measure`).

The simulator runs in a separate process (``python -m pbxsession.sim``) on
free loopback ports. One session logs in as ``alice`` (no live feed: the
figure is about the command path), then, interleaved and alternating which
goes first, ``N`` times each:

* **session**: ``await session.rtc_reset()`` (lock, lifecycle check, store
  cookie, form encoding, httpx, size-capped read, hardened XML parse);
* **bare**: ``httpx.AsyncClient.post`` of the very same body
  (``cmd=rtcreset``) with the same ``Red60urne`` cookie, reading the reply.

The figure is median(session) / median(bare); the target is at most 1.10.
"""

from __future__ import annotations

import argparse
import gc
import logging
import shlex
import statistics
import sys
import time
from dataclasses import dataclass

import httpx
from _benchsim import SimProcess, machine, run_with_simulator

import pbxsession
from pbxsession import _wire as wire

TARGET = 1.10
CEILING = 300.0


@dataclass(frozen=True)
class OverheadResult:
    iterations: int
    session_median_us: float
    bare_median_us: float
    session_p90_us: float
    bare_p90_us: float

    @property
    def ratio(self) -> float:
        return self.session_median_us / self.bare_median_us

    @property
    def met(self) -> bool:
        return self.ratio <= TARGET


async def _run(sim: SimProcess, iterations: int, warmup: int) -> OverheadResult:
    store = pbxsession.MemoryStore()
    session_times: list[float] = []
    bare_times: list[float] = []
    async with pbxsession.open_session(sim.url, store=store, feed=None) as session:
        await session.login("alice", "alice-pass")
        cookie = await store.get_cookie(sim.url)
        assert cookie is not None
        body = wire.rtc_reset_command().encode(None)
        headers = {"Content-Type": wire.FORM_CONTENT_TYPE, "Cookie": wire.cookie_header(cookie)}
        target = sim.url + wire.COMMAND_PATH
        async with httpx.AsyncClient(trust_env=False) as bare:

            async def one_session() -> float:
                start = time.perf_counter()
                await session.rtc_reset()
                return time.perf_counter() - start

            async def one_bare() -> float:
                start = time.perf_counter()
                reply = await bare.post(target, content=body, headers=headers)
                elapsed = time.perf_counter() - start
                if reply.status_code != 200 or b'result="success"' not in reply.content:
                    raise RuntimeError(f"bare rtcreset failed: {reply.status_code} {reply.text}")
                return elapsed

            for _ in range(warmup):
                await one_session()
                await one_bare()
            gc.collect()
            for i in range(iterations):
                if i % 2 == 0:
                    session_times.append(await one_session())
                    bare_times.append(await one_bare())
                else:
                    bare_times.append(await one_bare())
                    session_times.append(await one_session())

    def p90(values: list[float]) -> float:
        return statistics.quantiles(values, n=10)[-1]

    return OverheadResult(
        iterations=iterations,
        session_median_us=statistics.median(session_times) * 1e6,
        bare_median_us=statistics.median(bare_times) * 1e6,
        session_p90_us=p90(session_times) * 1e6,
        bare_p90_us=p90(bare_times) * 1e6,
    )


def measure(iterations: int = 2000, warmup: int = 100) -> OverheadResult:
    """Start a simulator process, measure, stop it; bounded by a five-minute ceiling."""
    logging.getLogger("pbxsession").setLevel(logging.WARNING)
    return run_with_simulator(_run, iterations, warmup, time_limit=CEILING)


def report(result: OverheadResult) -> None:
    print(f"iterations: {result.iterations} each, interleaved")
    print(f"{'variant':<10} {'median us':>10} {'p90 us':>10}")
    print(f"{'session':<10} {result.session_median_us:>10.1f} {result.session_p90_us:>10.1f}")
    print(f"{'bare':<10} {result.bare_median_us:>10.1f} {result.bare_p90_us:>10.1f}")
    verdict = "meets" if result.met else "MISSES"
    print(f"ratio session/bare (medians): {result.ratio:.3f}  ({verdict} the target <= {TARGET})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iterations", type=int, default=2000, help="per variant (100 to 100000)")
    args = parser.parse_args()
    if not 100 <= args.iterations <= 100_000:
        parser.error("--iterations must be 100 to 100000")
    print("benchmark:", shlex.join([sys.executable, *sys.argv]))
    print("machine:", machine())
    result = measure(args.iterations)
    report(result)
    return 0 if result.met else 1


if __name__ == "__main__":
    sys.exit(main())
