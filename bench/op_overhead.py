"""Benchmark: the library's cost per operation, against a bare httpx POST of the same form.

Run it alone as ``.venv/bin/python bench/op_overhead.py [--iterations N]``
(``bench/run_all.py`` imports :func:`measure`).

The simulator runs in a separate process (``python -m pbxsession.sim``) on
free loopback ports. One session logs in as ``alice`` (no live feed: the
figure is about the command path), then, interleaved and alternating which
goes first, ``N`` times each:

* **session**: ``await session.rtc_reset()`` (lock, lifecycle check, store
  cookie, form encoding, httpx, size-capped read, hardened XML parse);
* **transport**: ``CommandTransport.send`` of the same command on its own
  client (deadline scope, cookie slot, capped decoding, hardened parse): the
  command path without the session's lock and lifecycle;
* **bare**: ``httpx.AsyncClient.post`` of the very same body
  (``cmd=rtcreset``) with the same ``Red60urne`` cookie, reading the reply;
* **bare+jar**: ``httpx.AsyncClient.post(data=...)`` with the cookie in the
  client's jar (what a plain httpx user writes).

The figure is median(session) / median(bare); the target is at most 1.10.
The order of the variants rotates every iteration.

``--tls`` runs the same comparison over https (``pbxsession sim --tls``):
every variant trusts the simulator's throw-away CA through one and the same
``ssl.SSLContext`` and keeps its connection alive, so the figure is the
library's overhead per operation on an established TLS connection.
"""

from __future__ import annotations

import argparse
import gc
import logging
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field

import httpx
from _benchsim import SimProcess, machine, run_with_simulator

import pbxsession
from pbxsession import _wire as wire
from pbxsession._tls import trust_context
from pbxsession._transport import CommandTransport, new_http_client

TARGET = 1.10
CEILING = 300.0


@dataclass(frozen=True)
class OverheadResult:
    iterations: int
    session_median_us: float
    bare_median_us: float
    session_p90_us: float
    bare_p90_us: float
    transport_median_us: float = 0.0
    jar_median_us: float = 0.0
    cpu_us: dict[str, float] = field(default_factory=dict)  # client CPU per operation
    tls: bool = False

    @property
    def ratio(self) -> float:
        return self.session_median_us / self.bare_median_us

    @property
    def met(self) -> bool:
        return self.ratio <= TARGET


class _Slot:
    """The cookie, held in memory (the transport's view of a store)."""

    def __init__(self, cookie: str) -> None:
        self.cookie: str | None = cookie

    async def get(self) -> str | None:
        return self.cookie

    async def put(self, cookie: str | None, *, replacing: str | None) -> str | None:
        if self.cookie == replacing:
            self.cookie = cookie
        return self.cookie


async def _run(sim: SimProcess, iterations: int, warmup: int) -> OverheadResult:
    store = pbxsession.MemoryStore()
    times: dict[str, list[float]] = {"session": [], "transport": [], "bare": [], "jar": []}
    cpu: dict[str, float] = dict.fromkeys(times, 0.0)
    verify = sim.verify()  # one trust for every variant: True, or a context trusting the CA
    async with pbxsession.open_session(sim.url, store=store, feed=None, verify=verify) as session:
        await session.login("alice", "alice-pass")
        cookie = await store.get_cookie(sim.url, "alice")
        assert cookie is not None
        command = wire.rtc_reset_command()
        body = command.encode(None)
        headers = {"Content-Type": wire.FORM_CONTENT_TYPE, "Cookie": wire.cookie_header(cookie)}
        target = sim.url + wire.COMMAND_PATH
        slot = _Slot(cookie)
        async with (
            httpx.AsyncClient(trust_env=False, verify=verify) as bare,
            httpx.AsyncClient(
                trust_env=False, verify=verify, cookies={wire.SESSION_COOKIE: cookie}
            ) as jar,
            new_http_client(trust_context(verify)) as own,
        ):
            transport = CommandTransport(client=own, retries=0)

            async def one_session() -> None:
                await session.rtc_reset()

            async def one_transport() -> None:
                await transport.send(sim.url, command, None, slot)

            async def one_bare() -> None:
                reply = await bare.post(target, content=body, headers=headers)
                if reply.status_code != 200 or b'result="success"' not in reply.content:
                    raise RuntimeError(f"bare rtcreset failed: {reply.status_code} {reply.text}")

            async def one_jar() -> None:
                reply = await jar.post(target, data={"cmd": "rtcreset"})
                if reply.status_code != 200 or b'result="success"' not in reply.content:
                    raise RuntimeError(f"bare+jar rtcreset failed: {reply.status_code}")

            variants = [
                ("session", one_session),
                ("transport", one_transport),
                ("bare", one_bare),
                ("jar", one_jar),
            ]
            for _ in range(warmup):
                for _name, one in variants:
                    await one()
            gc.collect()
            for i in range(iterations):
                for k in range(len(variants)):
                    name, one = variants[(i + k) % len(variants)]
                    start, start_cpu = time.perf_counter(), time.process_time()
                    await one()
                    times[name].append(time.perf_counter() - start)
                    cpu[name] += time.process_time() - start_cpu

    def p90(values: list[float]) -> float:
        return statistics.quantiles(values, n=10)[-1]

    return OverheadResult(
        iterations=iterations,
        session_median_us=statistics.median(times["session"]) * 1e6,
        bare_median_us=statistics.median(times["bare"]) * 1e6,
        session_p90_us=p90(times["session"]) * 1e6,
        bare_p90_us=p90(times["bare"]) * 1e6,
        transport_median_us=statistics.median(times["transport"]) * 1e6,
        jar_median_us=statistics.median(times["jar"]) * 1e6,
        cpu_us={name: total / iterations * 1e6 for name, total in cpu.items()},
        tls=sim.tls,
    )


def measure(iterations: int = 2000, warmup: int = 100, *, tls: bool = False) -> OverheadResult:
    """Start a simulator process (https with ``tls``), measure, stop it; at most five minutes."""
    logging.getLogger("pbxsession").setLevel(logging.WARNING)
    return run_with_simulator(_run, iterations, warmup, time_limit=CEILING, tls=tls)


def report(result: OverheadResult) -> None:
    scheme = "https (one SSLContext trusting the CA)" if result.tls else "http"
    print(f"iterations: {result.iterations} each, interleaved, over {scheme}")
    print(f"{'variant':<10} {'median us':>10} {'p90 us':>10}")
    print(f"{'session':<10} {result.session_median_us:>10.1f} {result.session_p90_us:>10.1f}")
    print(f"{'bare':<10} {result.bare_median_us:>10.1f} {result.bare_p90_us:>10.1f}")
    print(f"{'transport':<10} {result.transport_median_us:>10.1f}")
    print(f"{'bare+jar':<10} {result.jar_median_us:>10.1f}")
    transport_ratio = result.transport_median_us / result.bare_median_us
    print(f"ratio transport/bare (medians): {transport_ratio:.3f}")
    if result.cpu_us:
        shown = ", ".join(f"{name} {us:.0f}" for name, us in result.cpu_us.items())
        print(f"client CPU us per operation: {shown}")
    verdict = "meets" if result.met else "MISSES"
    print(f"ratio session/bare (medians): {result.ratio:.3f}  ({verdict} the target <= {TARGET})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iterations", type=int, default=2000, help="per variant (100 to 100000)")
    parser.add_argument("--tls", action="store_true", help="over https (sim --tls), same trust")
    args = parser.parse_args()
    if not 100 <= args.iterations <= 100_000:
        parser.error("--iterations must be 100 to 100000")
    print("benchmark:", shlex.join([sys.executable, *sys.argv]))
    print("machine:", machine())
    result = measure(args.iterations, tls=args.tls)
    report(result)
    return 0 if result.met else 1


if __name__ == "__main__":
    sys.exit(main())
