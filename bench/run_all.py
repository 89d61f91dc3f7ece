"""Run every benchmark and print one table (also written to bench/RESULTS.md).

Run: ``.venv/bin/python bench/run_all.py [--iterations N] [--scale 100,1000,...]``

Every figure of issue 12, and the staged exit and load-and-faults rows, each
measured side by side in one run against the simulator in a process of its
own on free loopback ports (each benchmark starts and stops its own):

* operation overhead, over http and https: ``op_overhead.measure()``: the
  ratio to bare httpx (target), to httpx with ``data=`` and its jar and to a
  raw trio + h11 client (printed), and the library's own CPU per operation;
* feed: ``feed_throughput.measure()``: one consumer against a raw
  trio-websocket client (CPU per event and events/s), ten consumers;
* scale: ``scale.measure()`` per N (100, 1,000, 3,000, 10,000);
* memory: ``memory.measure()`` (heap per idle session; the lifecycle);
* staged exit: ``bench/exit_stages.py`` as a subprocess (its ``ratio
  staged/sequential`` line);
* load and faults: ``load_faults.measure()``.

The exit status is 0 when every figure meets its target.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import feed_throughput
import load_faults
import memory
import op_overhead
import scale
from _benchsim import machine

HERE = Path(__file__).resolve().parent
NUMBER = r"\s*[=:]\s*([0-9]+(?:\.[0-9]+)?)"
SUBPROCESS_CEILING = 600


@dataclass
class Row:
    figure: str
    how: str
    measured: str
    target: str
    verdict: str  # "met", "MISSED", "printed", "error"


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def checked(
    figure: str,
    how: str,
    value: float,
    target: float,
    *,
    at_most: bool,
    unit: str = "",
    digits: int = 3,
) -> Row:
    """A row for ``value`` against ``target`` (at most, or at least)."""
    met = value <= target if at_most else value >= target
    sign = "≤" if at_most else "≥"
    return Row(figure, how, f"{value:.{digits}f}{unit}", f"{sign} {target:g}{unit}", verdict(met))


def run_script(name: str, args: list[str], label: str) -> tuple[float | None, str]:
    """Run ``bench/name``; return (the number after ``label = `` or ``label:``, status)."""
    command = [sys.executable, str(HERE / name), *args]
    print(f"\n$ {shlex.join(command)}", flush=True)
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=SUBPROCESS_CEILING, check=False
        )
    except subprocess.TimeoutExpired:
        return None, f"timed out after {SUBPROCESS_CEILING} s"
    for line in done.stdout.splitlines():
        print("    " + line)
    for line in done.stderr.strip().splitlines()[-15:]:
        print("    [stderr] " + line)
    found = re.search(re.escape(label) + r"[^=:\n]*?" + NUMBER, done.stdout, re.IGNORECASE)
    if found is None:
        return None, f"exit status {done.returncode}, no {label!r} line in its output"
    return float(found.group(1)), f"exit status {done.returncode}"


def overhead_rows(iterations: int) -> list[Row]:
    print("\n== operation overhead (bench/op_overhead.py)", flush=True)
    plain = op_overhead.measure(iterations)
    op_overhead.report(plain)
    print("\n== operation overhead over https (bench/op_overhead.py --tls)", flush=True)
    secure = op_overhead.measure(iterations, tls=True)
    op_overhead.report(secure)
    rows = []
    for result, scheme in ((plain, "http"), (secure, "https")):
        rows.append(
            checked(
                f"operation overhead, {scheme}",
                f"median `rtc_reset()` {result.session_median_us:.0f} µs / bare httpx "
                f"`post(content=...)` {result.bare_median_us:.0f} µs, {result.iterations} "
                "interleaved, order rotated",
                result.ratio,
                op_overhead.TARGET,
                at_most=True,
            )
        )
        rows.append(
            Row(
                f"operation overhead vs httpx `data=` + jar, and vs raw trio + h11, {scheme}",
                f"same run: httpx with `data=` and its jar {result.jar_median_us:.0f} µs; "
                f"trio + h11 on one kept-alive connection {result.h11_median_us:.0f} µs",
                f"{result.ratio_jar:.3f}; h11 {result.ratio_h11:.3f}",
                "print",
                "printed",
            )
        )
    rows.append(
        checked(
            "library's own CPU per operation",
            "in situ (http run): session client CPU per operation minus that of a variant "
            f"making only its httpx calls ({plain.cpu_us['session']:.0f} - "
            f"{plain.cpu_us['calls']:.0f} µs)",
            plain.own_cpu_us,
            op_overhead.OWN_CPU_TARGET_US,
            at_most=True,
            unit=" µs",
            digits=1,
        )
    )
    return rows


def feed_rows(events: int, rounds: int) -> list[Row]:
    print("\n== feed (bench/feed_throughput.py)", flush=True)
    result = feed_throughput.measure(events, rounds)
    feed_throughput.report(result)
    how = f"{result.events:,} events a run, {result.rounds} rounds interleaved, medians"
    problems = f"; problems {result.problems}" if result.problems else ""
    rows = [
        checked(
            "feed, one consumer: CPU per event",
            f"`session.events()` {result.library.cpu_us:.1f} µs / raw trio-websocket "
            f"{result.raw.cpu_us:.1f} µs; {how}{problems}",
            result.cpu_ratio,
            feed_throughput.CPU_TARGET,
            at_most=True,
        ),
        checked(
            "feed, one consumer: events/s",
            f"`session.events()` {result.library.rate:,.0f} / raw {result.raw.rate:,.0f}; {how}",
            result.throughput_ratio,
            feed_throughput.THROUGHPUT_TARGET,
            at_most=False,
        ),
        checked(
            "feed, 10 consumers on one session",
            f"client CPU per event, each event to all 10 ({result.ten.rate:,.0f} ev/s); {how}",
            result.ten.cpu_us,
            feed_throughput.TEN_TARGET_US,
            at_most=True,
            unit=" µs",
            digits=1,
        ),
    ]
    if result.problems:  # an event lost or out of step fails the feed whatever its speed
        rows[0].verdict = "MISSED"
    return rows


def scale_rows(sizes: list[int]) -> list[Row]:
    print(f"\n== scale (bench/scale.py, N = {sizes})", flush=True)
    results = scale.measure(sizes)
    scale.report(results)
    return [
        Row(
            f"scale, N = {r.sessions:,}",
            "one process, one shared `http_client`, concurrency 100; each logged in with a "
            "live feed (seen at the simulator), then `exit(logout=True)`",
            f"{r.succeeded:,}/{r.sessions:,} ok, feeds {r.feeds_seen:,}; login p50/p99 "
            f"{r.login_p50_ms:.0f}/{r.login_p99_ms:.0f} ms; exit p50/p99 "
            f"{r.exit_p50_ms:.0f}/{r.exit_p99_ms:.0f} ms; {r.memory_per_session_kib:.0f} KiB RSS, "
            f"{r.cpu_ms_per_session:.1f} ms CPU per session",
            "all succeed; p99 ≤ 1500 ms",
            verdict(r.met),
        )
        for r in results
    ]


def memory_rows(sessions: int) -> list[Row]:
    print(f"\n== memory (bench/memory.py, N = {sessions})", flush=True)
    result = memory.measure(sessions)
    memory.report(result)
    machine_met = (
        result.machine_bytes <= memory.MACHINE_TARGET_BYTES
        and result.machine_build_us <= memory.MACHINE_TARGET_US
    )
    return [
        checked(
            "memory",
            f"Python heap per idle logged-in session with a feed (tracemalloc, N = {sessions:,})",
            result.heap_kib_per_session,
            memory.HEAP_TARGET_KIB,
            at_most=True,
            unit=" KiB",
            digits=1,
        ),
        Row(
            "lifecycle machine",
            "per session: traced bytes of 10,000; mean build time of 100,000",
            f"{result.machine_bytes:.0f} B, {result.machine_build_us:.2f} µs",
            f"≤ {memory.MACHINE_TARGET_BYTES} B, ≤ {memory.MACHINE_TARGET_US:g} µs",
            verdict(machine_met),
        ),
    ]


def exit_row() -> Row:
    print("\n== staged exit (bench/exit_stages.py)", flush=True)
    ratio, status = run_script("exit_stages.py", [], "ratio staged/sequential")
    how = "`exit(logout=True)` / the four steps in sequence, 200 ms each"
    if ratio is None:
        return Row("staged exit", how, status, "≤ 0.55", "error")
    return checked("staged exit", how, ratio, 0.55, at_most=True)


def load_row(sessions: int, seconds: float) -> Row:
    print(f"\n== load and faults (bench/load_faults.py, {sessions} sessions)", flush=True)
    load = load_faults.measure(sessions, seconds)
    load_faults.report(load)
    return Row(
        "load and faults",
        f"{load.sessions:,} sessions, {load.seconds:g} s of seeded faults (500s, delays past "
        "the deadline, drops, errnos, refused handshakes, expiries), then exit",
        f"{sum(load.operations.values()):,} operations; stuck {len(load.stuck)}, outside "
        f"the tree {len(load.outside_tree)}, groups {load.groups}, fds "
        f"{load.fds_before}→{load.fds_after}, tasks {load.tasks_before}→{load.tasks_after}, "
        f"orphaned logins {load.orphans}, unexplained SessionLost {load.unexplained_losses}",
        "all zero, nothing leaked",
        verdict(load.met),
    )


def markdown(rows: list[Row]) -> str:
    lines = [
        "| figure | how | measured | target | verdict |",
        "|---|---|---|---|---|",
        *(f"| {r.figure} | {r.how} | {r.measured} | {r.target} | {r.verdict} |" for r in rows),
    ]
    return "\n".join(lines)


def sizes(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(not 1 <= v <= 10_000 for v in values):
        raise argparse.ArgumentTypeError("sizes from 1 to 10000, separated by commas")
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iterations", type=int, default=2000, help="op_overhead iterations")
    parser.add_argument("--events", type=int, default=20_000, help="feed events per run")
    parser.add_argument("--rounds", type=int, default=5, help="feed rounds")
    parser.add_argument("--scale", type=sizes, default=[100, 1000, 3000, 10_000], help="N list")
    parser.add_argument("--sessions", type=int, default=1000, help="memory and load sessions")
    parser.add_argument("--fault-seconds", type=float, default=60.0, help="load_faults time")
    args = parser.parse_args()
    command_line = shlex.join([sys.executable, *sys.argv])
    facts = machine()
    header = [
        f"command: {command_line}",
        f"machine: nproc={facts['nproc']}, {facts['python']}, CPU {facts['cpu']}",
        f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
    ]
    print("\n".join(header), flush=True)
    rows = [
        *overhead_rows(args.iterations),
        *feed_rows(args.events, args.rounds),
        *scale_rows(args.scale),
        *memory_rows(args.sessions),
        exit_row(),
        load_row(args.sessions, args.fault_seconds),
    ]
    table = markdown(rows)
    print("\n" + "\n".join(header))
    print(table)
    results = HERE / "RESULTS.md"
    results.write_text(
        "# Benchmark results\n\nWritten by `bench/run_all.py`.\n\n"
        + "\n".join(f"- {line}" for line in header)
        + "\n\n"
        + table
        + "\n"
    )
    print(f"\nwritten to {results}")
    return 0 if all(r.verdict in ("met", "printed") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
