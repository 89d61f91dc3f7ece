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
  client's jar (what a plain httpx user writes);
* **h11**: a raw trio + h11 client on one kept-alive connection, the same
  body and cookie (the floor: no HTTP library above the protocol).

The figure is median(session) / median(bare); the target is at most 1.00
(issue 12); the ratios to bare+jar and to h11 are printed beside it. The
order of the variants rotates every iteration.

The library's own CPU per operation is measured in situ, by difference:
the session's client CPU per operation minus that of **calls**, a variant
that makes only the httpx calls the session makes for one command (an
``httpx.Request`` with the same headers and body, the pool's
``handle_async_request``, ``aiter_raw`` to the end, ``aclose``), on a pool
of its own, interleaved with the others. What is left is the library's
work above httpx: lock, lifecycle, deadlines, cookie slot, capped read,
reply parsing, and the trace extension's cost inside httpcore (so the
figure errs high, not low).
"""

from __future__ import annotations

import argparse
import gc
import logging
import shlex
import ssl
import statistics
import sys
import time
from dataclasses import dataclass, field

import h11
import httpx
import trio
from _benchsim import HOST, SimProcess, machine, run_with_simulator

import pbxsession
from pbxsession import _wire as wire
from pbxsession._tls import trust_context
from pbxsession._transport import CommandTransport, new_http_client

TARGET = 1.00
OWN_CPU_TARGET_US = 40.0
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
    h11_median_us: float = 0.0
    own_cpu_us: float = 0.0  # the library's CPU per operation outside its httpx calls
    cpu_us: dict[str, float] = field(default_factory=dict)  # client CPU per operation
    tls: bool = False

    @property
    def ratio(self) -> float:
        return self.session_median_us / self.bare_median_us

    @property
    def ratio_jar(self) -> float:
        return self.session_median_us / self.jar_median_us

    @property
    def ratio_h11(self) -> float:
        return self.session_median_us / self.h11_median_us

    @property
    def own_cpu_met(self) -> bool:
        return self.own_cpu_us <= OWN_CPU_TARGET_US

    @property
    def met(self) -> bool:
        return self.ratio <= TARGET


class RawH11:
    """The floor: trio + h11 on one kept-alive connection, nothing else."""

    def __init__(self, port: int, context: ssl.SSLContext | None) -> None:
        self.port = port
        self.context = context
        self.host = f"{HOST}:{port}".encode()
        self.stream: trio.abc.Stream | None = None
        self.conn = h11.Connection(h11.CLIENT)
        self.reconnects = -1  # the first connection is not a reconnect

    async def _connect(self) -> trio.abc.Stream:
        self.reconnects += 1
        self.conn = h11.Connection(h11.CLIENT)
        if self.context is None:
            self.stream = await trio.open_tcp_stream(HOST, self.port)
        else:
            self.stream = await trio.open_ssl_over_tcp_stream(
                HOST, self.port, ssl_context=self.context, https_compatible=True
            )
        return self.stream

    async def post(self, path: str, body: bytes, cookie_header: bytes) -> tuple[int, bytes]:
        stream = self.stream or await self._connect()
        conn = self.conn
        headers = [
            (b"Host", self.host),
            (b"Content-Type", wire.FORM_CONTENT_TYPE.encode()),
            (b"Cookie", cookie_header),
            (b"Content-Length", str(len(body)).encode()),
        ]
        data = conn.send(h11.Request(method="POST", target=path, headers=headers)) or b""
        data += (conn.send(h11.Data(data=body)) or b"") + (conn.send(h11.EndOfMessage()) or b"")
        await stream.send_all(data)
        status, chunks = 0, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise RuntimeError(f"h11: unexpected {event!r}")
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:  # the server closes now and then: connect again next time (counted)
            await stream.aclose()
            self.stream = None
        return status, b"".join(chunks)

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()


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
    names = ("session", "transport", "bare", "jar", "h11", "calls")
    times: dict[str, list[float]] = {name: [] for name in names}
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
            new_http_client(trust_context(verify)) as alone,
        ):
            transport = CommandTransport(client=own, retries=0)
            pool = alone._transport  # what the transport's pool_for() gives
            url = httpx.URL(target)
            call_headers = [
                ("Accept", "*/*"),
                ("Accept-Encoding", "gzip, deflate"),
                ("Content-Type", wire.FORM_CONTENT_TYPE),
                ("Cookie", wire.cookie_header(cookie)),
            ]
            context = verify if isinstance(verify, ssl.SSLContext) else None
            raw = RawH11(sim.port, context)
            cookie_header = wire.cookie_header(cookie).encode()

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

            async def one_calls() -> None:
                # Only the httpx calls the session makes for one command, in order.
                limits = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}
                request = httpx.Request(
                    "POST", url, headers=call_headers, content=body, extensions={"timeout": limits}
                )
                response = await pool.handle_async_request(request)
                content = b"".join([chunk async for chunk in response.aiter_raw()])
                await response.aclose()
                if response.status_code != 200 or b'result="success"' not in content:
                    raise RuntimeError(f"httpx calls: rtcreset failed: {response.status_code}")

            async def one_h11() -> None:
                status, content = await raw.post(wire.COMMAND_PATH, body, cookie_header)
                if status != 200 or b'result="success"' not in content:
                    raise RuntimeError(f"h11 rtcreset failed: {status}")

            variants = [
                ("session", one_session),
                ("transport", one_transport),
                ("bare", one_bare),
                ("jar", one_jar),
                ("h11", one_h11),
                ("calls", one_calls),
            ]
            try:
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
            finally:
                await raw.aclose()
            print(f"h11 client: connected again {raw.reconnects} times (server closed)")

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
        h11_median_us=statistics.median(times["h11"]) * 1e6,
        own_cpu_us=(cpu["session"] - cpu["calls"]) / iterations * 1e6,
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
    print(f"{'h11':<10} {result.h11_median_us:>10.1f}")
    print(f"ratio session/bare+jar (medians): {result.ratio_jar:.3f}")
    print(f"ratio session/h11 (medians): {result.ratio_h11:.3f}")
    verdict = "meets" if result.own_cpu_met else "MISSES"
    print(
        f"library's own CPU per operation, in situ: {result.own_cpu_us:.1f} us "
        f"({verdict} the target <= {OWN_CPU_TARGET_US:g})"
    )
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
