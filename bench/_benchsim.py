"""The simulator in a process of its own, for every benchmark in this folder.

``SimProcess`` starts ``python -m pbxsession.sim --port P --feed-port Q`` on
two free loopback ports, and stops the process (SIGTERM, then SIGKILL) when
its ``with`` block ends; ``await sim.ready()`` waits until ``/_sim/stats``
answers, and ``sim.post()``/``sim.get()`` drive its ``/_sim/`` controls. The
file descriptor soft limit is raised first, so the child inherits it.

``run_with_simulator(main, *args, time_limit=...)`` is the usual way in: it
prints the simulator's command line, starts it, and runs
``await main(sim, *args)`` under trio once it is ready, all within
``time_limit`` seconds.
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
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import httpx
import trio

HOST = "127.0.0.1"
SRC = Path(__file__).resolve().parents[1] / "src"
T = TypeVar("T")


def free_port() -> int:
    """A free TCP port on the loopback interface (bind to port 0, read it, let go)."""
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
        while self.feed_port == self.port:
            self.feed_port = free_port()
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
        self._stderr: IO[bytes] | None = None

    def __enter__(self) -> SimProcess:
        env = dict(os.environ, PYTHONPATH=str(SRC))
        # A file, not a pipe: nobody reads the pipe while the benchmark runs.
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=self._stderr, env=env
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._stderr is not None:
            self._stderr.close()

    def describe(self) -> str:
        return shlex.join(self.command)

    def stderr_text(self) -> str:
        """What the simulator has written to its stderr so far."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    async def ready(self, within: float = 15.0) -> None:
        assert self.process is not None
        async with httpx.AsyncClient(trust_env=False) as client:
            with trio.fail_after(within):
                while True:
                    if self.process.poll() is not None:
                        raise RuntimeError(
                            f"the simulator exited with {self.process.returncode}: "
                            + self.stderr_text()
                        )
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


def run_with_simulator(
    main: Callable[..., Awaitable[T]], *args: Any, time_limit: float, fd_limit: int = 8192
) -> T:
    """Start the simulator, print its command line, ``await main(sim, *args)`` once it is ready.

    Waiting for it and ``main`` together are bounded by ``time_limit`` seconds; the
    simulator is stopped on the way out, however ``main`` ends.
    """
    with SimProcess(fd_limit=fd_limit) as sim:
        print("simulator:", sim.describe(), flush=True)

        async def bounded() -> T:
            with trio.fail_after(time_limit):
                await sim.ready()
                return await main(sim, *args)

        return trio.run(bounded)
