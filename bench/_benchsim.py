"""The simulator in a process of its own, for op_overhead.py, scale.py and run_all.py.

``SimProcess`` starts ``python -m pbxsession.sim --port P --feed-port Q`` on
two free loopback ports, waits until ``/_sim/stats`` answers, and stops the
process (SIGTERM, then SIGKILL) when its ``with`` block ends. The file
descriptor soft limit is raised first, so the child inherits it.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import trio

HOST = "127.0.0.1"
SRC = Path(__file__).resolve().parents[1] / "src"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted``; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpu": cpu,
    }


class SimProcess:
    """``with SimProcess() as sim:`` gives ``sim.url``/``sim.ws_url``; ``await sim.ready()``."""

    def __init__(self, *, fd_limit: int = 8192) -> None:
        raise_fd_limit(fd_limit)
        self.port, self.feed_port = free_port(), free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.ws_url = f"ws://{HOST}:{self.feed_port}"
        self.command = [
            sys.executable,
            "-m",
            "pbxsession.sim",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--feed-port",
            str(self.feed_port),
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SimProcess:
        env = dict(os.environ, PYTHONPATH=str(SRC))
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        process = self.process
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def describe(self) -> str:
        return shlex.join(self.command)

    async def ready(self, within: float = 15.0) -> None:
        assert self.process is not None
        async with httpx.AsyncClient(trust_env=False) as client:
            with trio.fail_after(within):
                while True:
                    if self.process.poll() is not None:
                        raise RuntimeError(f"the simulator exited with {self.process.returncode}")
                    try:
                        if (await client.get(self.url + "/_sim/stats")).status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.05)

    async def post(self, path: str, body: dict[str, object] | None = None) -> Any:
        async with httpx.AsyncClient(trust_env=False, timeout=60) as client:
            reply = await client.post(self.url + "/_sim/" + path, content=json.dumps(body or {}))
            reply.raise_for_status()
            return reply.json()

    async def get(self, path: str) -> Any:
        async with httpx.AsyncClient(trust_env=False, timeout=60) as client:
            reply = await client.get(self.url + "/_sim/" + path)
            reply.raise_for_status()
            return reply.json()
