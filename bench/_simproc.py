"""Shared by the feed benchmarks: the simulator in a child process, on loopback only."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

HOST = "127.0.0.1"


def free_port() -> int:
    """A free TCP port on the loopback interface (bind to port 0, read it, let go)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class SimProcess:
    url: str
    ws_url: str
    command: list[str]


@contextmanager
def simulator_process(*, startup_timeout: float = 15.0) -> Iterator[SimProcess]:
    """Run ``python -m pbxsession.sim`` on two free loopback ports; stop it on the way out."""
    port, feed_port = free_port(), free_port()
    while feed_port == port:
        feed_port = free_port()
    command = [
        sys.executable, "-m", "pbxsession.sim",
        "--host", HOST, "--port", str(port), "--feed-port", str(feed_port),
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ)
    )
    url, ws_url = f"http://{HOST}:{port}", f"ws://{HOST}:{feed_port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"simulator exited with {proc.returncode}: {err}")
            try:
                if httpx.get(url + "/_sim/stats", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("simulator did not start in time")
            time.sleep(0.05)
        yield SimProcess(url, ws_url, command)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc.stderr:
            proc.stderr.close()
