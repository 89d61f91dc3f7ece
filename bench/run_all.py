"""Run every benchmark and print one table (also written to bench/RESULTS.md).

Run: ``.venv/bin/python bench/run_all.py [--iterations N] [--sessions N]``

Each figure is measured side by side in one run, against the simulator in
a separate process on free loopback ports (each benchmark starts and stops
its own):

* operation overhead: ``op_overhead.measure()`` (imported);
* feed throughput: ``bench/feed_throughput.py`` (run as a subprocess, its
  ``throughput ratio ... = X`` line parsed; "missing" when the file is absent);
* staged exit: ``bench/exit_stages.py`` (same, its ``ratio staged/sequential``);
* scale: ``scale.measure()`` (imported);
* operation overhead over https: ``op_overhead.measure(tls=True)``;
* load and faults: ``load_faults.measure()`` (imported).

The exit status is 0 when every present figure meets its target.
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

import load_faults
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
    verdict: str  # "met", "MISSED", "missing", "error"


def run_script(name: str, args: list[str], label: str) -> tuple[float | None, str]:
    """Run ``bench/name``; return (the number after ``label = `` or ``label:``, status)."""
    path = HERE / name
    if not path.exists():
        return None, "missing"
    command = [sys.executable, str(path), *args]
    print(f"\n$ {shlex.join(command)}", flush=True)
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=SUBPROCESS_CEILING, check=False
        )
    except subprocess.TimeoutExpired:
        return None, f"error: timed out after {SUBPROCESS_CEILING} s"
    for line in done.stdout.splitlines():
        print("    " + line)
    if done.stderr.strip():
        for line in done.stderr.strip().splitlines()[-15:]:
            print("    [stderr] " + line)
    found = re.search(re.escape(label) + r"[^=:\n]*?" + NUMBER, done.stdout, re.IGNORECASE)
    if found is None:
        return None, f"error: exit status {done.returncode}, no {label!r} line in its output"
    return float(found.group(1)), f"exit status {done.returncode}"


def ratio_row(
    figure: str, how: str, ratio: float | None, status: str, target: float, at_most: bool
) -> Row:
    sign = "≤" if at_most else "≥"
    if ratio is None:
        verdict = "missing" if status == "missing" else "error"
        return Row(figure, how, status, f"{sign} {target:.2f}", verdict)
    met = ratio <= target if at_most else ratio >= target
    return Row(figure, how, f"{ratio:.3f}", f"{sign} {target:.2f}", "met" if met else "MISSED")


def markdown(rows: list[Row]) -> str:
    lines = [
        "| figure | how | measured | target | verdict |",
        "|---|---|---|---|---|",
        *(f"| {r.figure} | {r.how} | {r.measured} | {r.target} | {r.verdict} |" for r in rows),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iterations", type=int, default=3000, help="op_overhead iterations")
    parser.add_argument("--sessions", type=int, default=1000, help="scale and load sessions")
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
    rows: list[Row] = []

    print("\n== operation overhead (bench/op_overhead.py)", flush=True)
    overhead = op_overhead.measure(args.iterations)
    op_overhead.report(overhead)
    rows.append(
        ratio_row(
            "operation overhead",
            f"median `rtc_reset()` {overhead.session_median_us:.0f} µs / bare httpx "
            f"{overhead.bare_median_us:.0f} µs, {overhead.iterations} interleaved",
            overhead.ratio,
            "ok",
            op_overhead.TARGET,
            at_most=True,
        )
    )

    print("\n== operation overhead over https (bench/op_overhead.py --tls)", flush=True)
    secure = op_overhead.measure(args.iterations, tls=True)
    op_overhead.report(secure)
    rows.append(
        ratio_row(
            "operation overhead, https",
            f"median `rtc_reset()` {secure.session_median_us:.0f} µs / bare httpx "
            f"{secure.bare_median_us:.0f} µs over https, same CA context",
            secure.ratio,
            "ok",
            op_overhead.TARGET,
            at_most=True,
        )
    )

    print("\n== feed throughput (bench/feed_throughput.py)", flush=True)
    ratio, status = run_script("feed_throughput.py", [], "throughput ratio")
    rows.append(
        ratio_row(
            "feed throughput",
            "events/s `session.events()` / raw trio-websocket",
            ratio,
            status,
            0.85,
            at_most=False,
        )
    )

    print("\n== staged exit (bench/exit_stages.py)", flush=True)
    ratio, status = run_script("exit_stages.py", [], "ratio staged/sequential")
    rows.append(
        ratio_row(
            "staged exit",
            "`exit(logout=True)` / four steps in sequence, 200 ms each",
            ratio,
            status,
            0.55,
            at_most=True,
        )
    )

    print(f"\n== scale (bench/scale.py, {args.sessions} sessions)", flush=True)
    result = scale.measure(args.sessions)
    scale.report(result)
    rows.append(
        Row(
            "scale",
            f"{result.sessions} sub-ID sessions, each logged in with a live feed, then exited",
            f"{result.succeeded}/{result.sessions} succeeded; login p50 "
            f"{result.login_p50_ms:.0f} ms, p99 {result.login_p99_ms:.0f} ms; "
            f"{result.memory_per_session_kib:.0f} KiB client RSS/session; "
            f"{result.total_s:.1f} s total",
            "100% succeed",
            "met" if result.met else "MISSED",
        )
    )

    print(f"\n== load and faults (bench/load_faults.py, {args.sessions} sessions)", flush=True)
    load = load_faults.measure(args.sessions, args.fault_seconds)
    load_faults.report(load)
    rows.append(
        Row(
            "load and faults",
            f"{load.sessions} sessions, {load.seconds:g} s of seeded faults (500s, delays past "
            "the deadline, drops, errnos, refused handshakes, expiries), then exit",
            f"{sum(load.operations.values())} operations; stuck {len(load.stuck)}, outside "
            f"the tree {len(load.outside_tree)}, groups {load.groups}, fds "
            f"{load.fds_before}→{load.fds_after}, tasks {load.tasks_before}→{load.tasks_after}, "
            f"orphaned logins {load.orphans}, unexplained SessionLost {load.unexplained_losses}",
            "all zero, nothing leaked",
            "met" if load.met else "MISSED",
        )
    )

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
    return 0 if all(r.verdict in ("met", "missing") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
